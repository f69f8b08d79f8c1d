"""Any deterministic diffusers scheduler behind our ``Sampler`` protocol.

diffusers' schedulers are stateful (a step index, a multistep method's previous outputs), ours are
immutable. :class:`DiffusersScheduler` keeps an unused template and, at step 0 of every run,
copies it and calls ``set_timesteps``; the copy is the ``history`` that :func:`run_sampler`
threads from step to step, so one adapter drives any number of runs, concurrently too, like our
own samplers.

Accepted: schedulers that take a DDPM beta schedule (set from SRC's, never from the user's
config), evaluate the model on the sample itself (``init_noise_sigma`` 1 and an identity
``scale_model_input``; the sigma-space Euler / Heun family scale it) at integer timesteps, and
draw no noise. Our per-sample noise (sample ``i``'s noise depends on ``(seed, i)`` only) cannot be
handed to a scheduler that draws its own, so a stochastic one (DDPM, DDIM with ``eta > 0``,
SDE variants) is refused: it would make images that depend on the batch they share.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import diffusers
import torch

from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.errors import InvalidArgumentError

#: Config keys the SRC's noise schedule decides; a --scheduler-config may not set them.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")


def schedule_config(schedule: NoiseSchedule) -> dict[str, Any]:
    """diffusers' config for ``schedule``: its own linear betas for a linear schedule (float32, as
    diffusers makes them), else our table as ``trained_betas``."""
    if schedule.kind == "linear":
        return {
            "num_train_timesteps": schedule.num_train_timesteps,
            "beta_start": schedule.beta_start,
            "beta_end": schedule.beta_end,
            "beta_schedule": "linear",
        }
    return {"num_train_timesteps": schedule.num_train_timesteps, "trained_betas": schedule.betas.tolist()}


def scheduler_class(name: str) -> type:
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise InvalidArgumentError(
            f"diffusers {diffusers.__version__} has no scheduler {name!r}; e.g. UniPCMultistepScheduler, "
            "DEISMultistepScheduler, DPMSolverMultistepScheduler, DDIMScheduler"
        )
    return cls


@contextmanager
def _diffusers_warnings_off() -> Iterator[None]:
    """diffusers logs, at every ``set_timesteps``, how it adjusted a config (e.g. forcing
    ``lower_order_final``); the adjusted config is what :attr:`DiffusersScheduler.spec` records,
    and a command's output stays its own lines."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class DiffusersScheduler:
    """``scheduler`` (a diffusers scheduler, used as a template) over ``steps`` inference steps."""

    def __init__(self, scheduler: Any, steps: int):
        self.scheduler, self.steps = scheduler, steps
        name = type(scheduler).__name__
        probe = self._fresh(torch.device("cpu"))
        timesteps = [float(t) for t in probe.timesteps]
        if not timesteps:
            raise InvalidArgumentError(f"{name} makes no timesteps at --steps {steps}")
        train_steps = scheduler.config.num_train_timesteps
        if any(not t.is_integer() or not 0 <= t < train_steps for t in timesteps):
            raise InvalidArgumentError(f"{name} evaluates the model between training timesteps; it is not supported")
        self.timesteps = tuple(int(t) for t in timesteps)
        x = torch.linspace(-1.5, 1.5, 16).view(1, 1, 4, 4)
        if float(probe.init_noise_sigma) != 1.0 or any(
            not torch.equal(probe.scale_model_input(x, t), x) for t in probe.timesteps
        ):
            raise InvalidArgumentError(
                f"{name} scales the model input (a sigma-space scheduler); only schedulers that feed the "
                "sample itself to the model are supported"
            )
        if not torch.equal(self._probe_run(x, seed=0), self._probe_run(x, seed=1)):
            raise InvalidArgumentError(
                f"{name} with this config draws noise of its own, which would tie each image to its batch; "
                "choose a deterministic scheduler or config (e.g. eta 0, no SDE variant)"
            )

    @classmethod
    def from_spec(cls, spec: dict[str, Any], steps: int) -> DiffusersScheduler:
        """The adapter a job's settings record (:attr:`spec`); refuses another diffusers version,
        whose scheduler could compute other images from the same config."""
        if spec.get("diffusers") != diffusers.__version__:
            raise InvalidArgumentError(
                f"the job's scheduler was recorded with diffusers {spec.get('diffusers')}, this is "
                f"{diffusers.__version__}; install that version or start another --out"
            )
        return cls(scheduler_class(spec["class"]).from_config(spec["config"]), steps)

    @property
    def spec(self) -> dict[str, Any]:
        """Class, diffusers version and full config: plain JSON data for a job's settings."""
        config = {key: value for key, value in dict(self.scheduler.config).items() if not key.startswith("_")}
        return {
            "class": type(self.scheduler).__name__,
            "diffusers": diffusers.__version__,
            "config": json.loads(json.dumps(config)),  # tuples become lists, as a resumed run reads them
        }

    def _fresh(self, device: torch.device) -> Any:
        scheduler = copy.deepcopy(self.scheduler)
        with _diffusers_warnings_off():
            scheduler.set_timesteps(self.steps, device=device)
        return scheduler

    def _probe_run(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            history = None
            for k in range(len(self.timesteps)):
                x, history = self.step(k, x, 0.5 * x + 0.1, None, history)
        return x

    def needs_noise(self, k: int) -> bool:
        return False

    def step(
        self, k: int, x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor | None, history: Any
    ) -> tuple[torch.Tensor, Any]:
        """``history``: this run's copy of the scheduler (None at step 0, which makes it)."""
        scheduler = self._fresh(x.device) if k == 0 else history
        return scheduler.step(eps, scheduler.timesteps[k], x).prev_sample, scheduler


def diffusers_sampler(
    class_name: str, schedule: NoiseSchedule, steps: int, config: dict[str, Any] | None = None
) -> DiffusersScheduler:
    """diffusers' ``class_name`` with ``config`` over SRC's ``schedule``, as our Sampler."""
    cls = scheduler_class(class_name)
    config = dict(config or {})
    owned = sorted(set(config) & set(SCHEDULE_KEYS))
    if owned:
        raise InvalidArgumentError(f"--scheduler-config may not set {', '.join(owned)}: SRC's noise schedule sets them")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if not {"num_train_timesteps", "beta_schedule", "trained_betas"} <= accepted:
        raise InvalidArgumentError(f"{class_name} does not take a DDPM beta schedule; it cannot run this model")
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise InvalidArgumentError(f"{class_name} has no config key {unknown[0]!r}")
    try:
        with _diffusers_warnings_off():
            scheduler = cls(**schedule_config(schedule), **config)
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise InvalidArgumentError(f"{class_name} refused the config: {str(exc).splitlines()[0][:200]}") from None
    try:
        return DiffusersScheduler(scheduler, steps)
    except (ValueError, NotImplementedError, IndexError) as exc:
        raise InvalidArgumentError(f"{class_name} at --steps {steps}: {str(exc).splitlines()[0][:200]}") from None
