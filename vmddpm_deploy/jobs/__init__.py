"""Sampling jobs: many images from one SRC, written to a directory that survives kills, split into
shards for job arrays or Ray (docs/design.md section 4).

:func:`run_sample_job` is what ``sample`` and ``demo`` call: the job is planned once
(:mod:`.prepare`), then runs in this process or as Ray workers, with one progress callback and
one summary schema. Every image is made by :func:`.sampling.sample_shard` into an
:class:`.output_dir.OutputDir`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmddpm_deploy.choices import HOST_SAMPLERS
from vmddpm_deploy.errors import InvalidArgumentError, OutputError
from vmddpm_deploy.jobs import sampling
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.prepare import JobPlan, plan_job, prepare_job
from vmddpm_deploy.jobs.spec import JobSettings, Shard

__all__ = ["JobPlan", "JobSettings", "OutputDir", "Shard", "plan_job", "prepare_job", "run_sample_job"]


def run_sample_job(
    plan: JobPlan,
    out: Path,
    *,
    backend: str,
    device: str,
    resume: bool,
    force: bool = False,
    record_eps: Path | None = None,
    ray: str | None = None,
    workers: int | None = None,
    on_progress: Callable[[float, int], None] | None = None,
) -> dict[str, Any]:
    """Make every image of ``plan`` that ``out`` lacks; returns the run's summary.

    ``ray`` None samples here; else it is the Ray address (``local``, ``auto``, ``HOST:PORT``) and
    ``workers`` Ray workers make the shards. ``on_progress(images_done, images_total)`` follows
    the run (fractional while a batch is being denoised). ``force`` replaces the samples ``out``
    holds (with Ray: all of them, before the workers start) instead of refusing them.
    ``record_eps`` writes every denoiser call to that file for the C++ host's ``--replay``
    (:mod:`vmddpm_deploy.runtime.eps_recording`): a whole DDIM job of one process only.
    """
    if force and resume:
        raise InvalidArgumentError("--force starts the samples afresh and --resume continues them; pass one")
    report = on_progress or (lambda done, total: None)
    if ray is None:
        if workers is not None:
            raise InvalidArgumentError("--workers applies to --ray only")
        if record_eps is not None:
            _check_recordable(plan, record_eps, resume)
        output, denoiser, backend = prepare_job(
            plan, out, backend=backend, device=device, resume=resume, force=force
        )
        recorder = None
        if record_eps is not None:
            from vmddpm_deploy.runtime.eps_recording import EpsRecorder

            denoiser = recorder = EpsRecorder(denoiser, record_eps, plan.image_shape)
        total = len(plan.settings.shard.indices(plan.settings.n))
        done = float(total - len(output.todo))
        report(done, total)

        def on_step(images: float) -> None:
            nonlocal done
            done += images
            report(done, total)

        try:
            summary = sampling.sample_shard(output, denoiser, plan.make_sampler(), plan.image_shape, device, on_step)
        except BaseException:
            if recorder is not None:
                recorder.discard()
            raise
        summary |= {"backend": backend, "precision": output.settings.precision}
        if recorder is not None:
            summary["eps_recording"] = {"path": str(recorder.close()), "calls": recorder.calls,
                                        "micro_batch": output.settings.arithmetic.micro_batch}
    else:
        if record_eps is not None:
            raise InvalidArgumentError("--record-eps records one process's calls; run without --ray")
        from vmddpm_deploy.jobs.output_dir import remove_samples
        from vmddpm_deploy.jobs.ray_workers import RayJob

        total = plan.settings.n
        if force:
            remove_samples(out, Shard())
        ray_job = RayJob(
            plan.source.path, plan.settings, out, backend=backend, device=device, resume=resume, address=ray,
            workers=workers,
        )
        with ray_job:
            report(ray_job.already_done, total)
            summary = ray_job.run(on_progress=lambda done: report(done, total))
    s = plan.settings
    # Ray workers resolve the precision each on its node; their shards' progress files record it.
    return {"precision": s.precision} | summary | {"out": str(out), "sampler": s.sampler, "steps": s.steps,
                                                   "spacing": s.spacing,
                                                   "timesteps": None if s.timesteps is None else list(s.timesteps)}


def _check_recordable(plan: JobPlan, path: Path, resume: bool) -> None:
    """A recording the host can replay is a whole job's DDIM calls, in order, in one process."""
    settings = plan.settings
    if settings.sampler not in HOST_SAMPLERS:
        raise InvalidArgumentError(
            f"--record-eps is for vmddpm_host's --replay, which runs {', '.join(HOST_SAMPLERS)}, not {settings.sampler}"
        )
    if resume or settings.shard.count != 1:
        raise InvalidArgumentError("--record-eps records a whole job from its start: drop --resume and --shard")
    if not Path(path).parent.is_dir():
        raise OutputError(f"cannot write --record-eps {path}: {Path(path).parent} is not a directory")
