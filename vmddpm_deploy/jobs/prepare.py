"""Building a sampling job, once: SRC -> backend -> sampler -> image shape -> denoiser -> batch size.

:func:`plan_job` is what a driver does before anything runs or is written (open and verify SRC,
check the sampler settings); :func:`prepare_job` is what the process that samples does (load the
denoiser, resolve the batch size, open the shard's output directory), before it hands both to
:func:`vmddpm_deploy.jobs.sampling.sample_shard`. ``sample`` and ``demo`` run both in one
process; under Ray the driver plans and each worker prepares its own shard.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmddpm_deploy.choices import SAMPLING_PRECISIONS
from vmddpm_deploy.diffusion import Denoiser, Sampler, make_sampler
from vmddpm_deploy.diffusion.schedule import check_steps
from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.jobs.output_dir import OutputDir, remove_samples
from vmddpm_deploy.jobs.spec import JobSettings, Shard
from vmddpm_deploy.runtime.arithmetic import Arithmetic
from vmddpm_deploy.runtime.batching import plan_calls, resolve_batch_size
from vmddpm_deploy.runtime.source import (
    DenoiserSource,
    load_denoiser,
    open_source,
    resolve_backend,
    resolve_sampling_precision,
)


@dataclass(frozen=True)
class JobPlan:
    """A verified SRC and the settings of the images it will make (nothing loaded or written yet)."""

    source: DenoiserSource
    settings: JobSettings

    @property
    def image_shape(self) -> tuple[int, int, int]:
        config = self.source.config
        return (config.in_channels, config.image_size, config.image_size)

    def make_sampler(self) -> Sampler:
        s = self.settings
        if s.scheduler is not None:
            from vmddpm_deploy.diffusers import require_diffusers

            require_diffusers(f"--scheduler {s.sampler}")
            from vmddpm_deploy.diffusers.scheduler import DiffusersScheduler

            return DiffusersScheduler.from_spec(s.scheduler, s.steps)
        return make_sampler(s.sampler, self.source.schedule, s.steps, eta=s.eta, spacing=s.spacing, timesteps=s.timesteps)


def plan_job(
    source: str | os.PathLike | DenoiserSource, *, n: int, sampler: str, steps: int, eta: float, seed: int,
    image_format: str, shard: Shard = Shard(), batch_size: int | None = None,
    scheduler: tuple[str, dict[str, Any]] | None = None, spacing: str | None = None, precision: str = "auto",
    timesteps: Sequence[int] | None = None,
) -> JobPlan:
    """Open ``source`` (checksums verified; an already opened one is taken as it is) and check the
    sampler settings: every error a job can find without loading the model arrives here, before
    any file is written. ``batch_size`` None: the backend's largest, resolved by :func:`prepare_job`.
    ``scheduler``: a diffusers scheduler's class name and config, which replaces ``sampler``.
    ``spacing`` None: the sampler's default, resolved here, unless ``timesteps`` (``steps`` of them)
    replace the placement; ``precision`` is resolved by :func:`prepare_job`."""
    if precision not in SAMPLING_PRECISIONS:
        raise InvalidArgumentError(f"unknown precision {precision!r}; choose one of {', '.join(SAMPLING_PRECISIONS)}")
    opened = source if isinstance(source, DenoiserSource) else open_source(source)
    spec = None
    if scheduler is not None:
        from vmddpm_deploy.diffusers import require_diffusers

        class_name, config = scheduler
        require_diffusers(f"--scheduler diffusers:{class_name}")
        from vmddpm_deploy.diffusers.scheduler import diffusers_sampler

        if eta != 0.0:
            raise InvalidArgumentError("--eta applies to --sampler ddim; a diffusers scheduler takes it in --scheduler-config")
        if spacing is not None or timesteps is not None:
            option = "--spacing" if spacing is not None else "--timesteps"
            raise InvalidArgumentError(
                f"{option} applies to our samplers; a diffusers scheduler takes timestep_spacing in --scheduler-config"
            )
        check_steps(opened.schedule.num_train_timesteps, steps)
        spec = diffusers_sampler(class_name, opened.schedule, steps, config).spec
        sampler = f"diffusers:{class_name}"
    settings = JobSettings(
        opened.sha256, n, sampler, steps, eta, seed, image_format, shard, batch_size, spec, spacing=spacing,
        precision=precision, timesteps=None if timesteps is None else tuple(int(t) for t in timesteps),
    )
    plan = JobPlan(opened, settings)
    made = plan.make_sampler()  # InvalidArgumentError on steps / eta / spacing the schedule cannot take
    # A diffusers scheduler places its own timesteps (its config, recorded in ``scheduler``).
    spacing = made.spacing if spec is None and timesteps is None else None
    return dataclasses.replace(plan, settings=dataclasses.replace(settings, spacing=spacing))


def prepare_job(
    plan: JobPlan, out: Path, *, backend: str, device: str, resume: bool, force: bool = False,
) -> tuple[OutputDir, Denoiser, str]:
    """Load ``plan``'s denoiser on ``backend`` (``auto`` resolved here, where it runs) and open the
    output directory of ``plan.settings.shard``; returns the directory, the denoiser and the
    backend's name.

    The precision (``auto``: see :func:`resolve_sampling_precision`), the batch size, how the calls
    run (:func:`plan_calls`: on the CPU fixed micro-batches on one intra-op thread each) and the
    arithmetic are resolved here, once, and recorded in the directory's settings; a size the
    backend refuses fails before the output directory is touched (``force``: then this shard's
    earlier samples are removed). A Ray worker builds its plan from the SRC it opened on its own
    node and the driver's settings, so the sha256 check below catches a node that sees another file.
    """
    source = plan.source
    if source.sha256 != plan.settings.source_sha256:
        raise ArtifactError(
            f"{source.path} on node {os.uname().nodename} is not the driver's (sha256 {source.sha256[:12]}..., "
            f"driver {plan.settings.source_sha256[:12]}...); every node must see the same SRC"
        )
    backend = resolve_backend(backend, source)
    precision = resolve_sampling_precision(plan.settings.precision, backend, device)
    denoiser = load_denoiser(source, backend, device, precision, single_threaded_calls=True)
    batch_size = resolve_batch_size(denoiser, plan.settings.batch_size, plan.settings.n, device)
    arithmetic = resolve_arithmetic(denoiser, backend, device, batch_size)
    settings = dataclasses.replace(plan.settings, batch_size=batch_size, precision=precision, arithmetic=arithmetic)
    if force:
        remove_samples(Path(out), settings.shard)
    return OutputDir(Path(out), settings, resume), denoiser, backend


def resolve_arithmetic(denoiser: Denoiser, backend: str, device: str, batch_size: int) -> Arithmetic:
    """The arithmetic ``denoiser`` computes a job's images in: its runtime, device and precision,
    and the rows per call :func:`plan_calls` gives it (on the CPU fixed, on a GPU ``batch_size``)."""
    micro_batch = plan_calls(denoiser, device, batch_size).micro_batch
    return Arithmetic(backend=backend, **denoiser.arithmetic(), micro_batch=micro_batch)
