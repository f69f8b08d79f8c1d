"""The reverse process: what every sampler offers, the loop that drives one from x_T to x_0, and
the registry of samplers by name.

A sampler is immutable: it holds the timesteps and per-step coefficients it derived from the
schedule, nothing about a run. What a multistep method must remember between steps (DPM-Solver++
2M's previous data prediction, multistep DDIM's previous eps) is the ``history`` value :func:`run_sampler` threads from one
``step`` to the next, so one sampler object can drive any number of runs, concurrently too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from vmddpm_deploy.diffusion.ddim import DDIMSampler
from vmddpm_deploy.diffusion.ddim_multistep import MultistepDDIMSampler
from vmddpm_deploy.diffusion.ddpm import DDPMSampler
from vmddpm_deploy.diffusion.denoiser import Denoiser
from vmddpm_deploy.diffusion.dpm_solver import DPMSolverPP2MSampler
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.choices import DEFAULT_SAMPLER, DEFAULT_SPACINGS, DEFAULT_STEPS
from vmddpm_deploy.errors import InvalidArgumentError

#: Every sampler by its CLI / config name, one per name of ``choices.SAMPLERS``.
#: Each value builds the sampler from ``(schedule, steps, **options)``.
SAMPLERS: dict[str, Callable[..., object]] = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "ddim-ab2": functools.partial(MultistepDDIMSampler, order=2),
    "ddim-ab3": functools.partial(MultistepDDIMSampler, order=3),
    "dpm-solver++": DPMSolverPP2MSampler,
}



@runtime_checkable
class Sampler(Protocol):
    """A reverse-process discretisation over a fixed list of timesteps."""

    @property
    def timesteps(self) -> tuple[int, ...]:
        """The training timestep the denoiser sees at each step, in sampling order (descending)."""
        ...

    def needs_noise(self, k: int) -> bool:
        """Whether step ``k`` adds fresh Gaussian noise (so the loop must fetch it)."""
        ...

    def step(
        self,
        k: int,
        x: torch.Tensor,
        eps: torch.Tensor,
        noise: torch.Tensor | None,
        history: Any,
    ) -> tuple[torch.Tensor, Any]:
        """``x`` at ``timesteps[k]`` and the denoiser's ``eps`` there -> (next ``x``, next ``history``).

        ``noise`` is standard normal like ``x`` when ``needs_noise(k)``, else ``None``;
        ``history`` is ``None`` at ``k = 0`` and otherwise what step ``k - 1`` returned. Inputs
        are not modified. The arithmetic runs in ``x``'s dtype on ``x``'s device.
        """
        ...


def run_sampler(
    sampler: Sampler,
    denoiser: Denoiser,
    x_T: torch.Tensor,
    step_noise: Callable[[int], torch.Tensor],
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``x_T`` (batch, C, H, W) into ``x_0`` with ``len(sampler.timesteps)`` denoiser calls.

    ``step_noise(k)`` supplies step ``k``'s noise, shaped like ``x_T``; it is called only for
    steps that use noise, so a deterministic sampler never asks. ``callback(k, total)`` runs
    after step ``k`` (0-based) of ``total``. ``x_T`` is left untouched.
    """
    timesteps = sampler.timesteps
    total = len(timesteps)
    batch = x_T.shape[0]
    # One (steps, batch) table per run: each row is a contiguous (batch,) int64 view, so no
    # step allocates or copies its t to the device.
    t_table = torch.tensor(timesteps, dtype=torch.int64, device=x_T.device).repeat_interleave(batch).view(total, batch)
    x, history = x_T, None
    with torch.no_grad():
        for k in range(total):
            eps = denoiser(x, t_table[k])
            noise = step_noise(k).to(device=x.device, dtype=x.dtype) if sampler.needs_noise(k) else None
            x, history = sampler.step(k, x, eps, noise, history)
            if callback is not None:
                callback(k, total)
    return x


def make_sampler(
    name: str,
    schedule: NoiseSchedule,
    steps: int,
    eta: float = 0.0,
    spacing: str | None = None,
    timesteps: Sequence[int] | None = None,
) -> Sampler:
    """The sampler called ``name`` (a key of :data:`SAMPLERS`) over ``steps`` timesteps.

    ``spacing`` (one of ``TIMESTEP_SPACINGS``) picks the timesteps; ``None`` takes the sampler's
    entry in :data:`~vmddpm_deploy.choices.DEFAULT_SPACINGS`. ``eta`` is DDIM's stochasticity and must stay 0 for the
    others: DDPM's noise is fixed by its posterior, multistep DDIM and DPM-Solver++ 2M are
    deterministic ODE solvers. ``timesteps`` (e.g. a ``tune-schedule`` file's, ``steps`` of them)
    replaces the placement, so it excludes ``spacing``.
    Raises InvalidArgumentError on anything out of range.
    """
    if name not in SAMPLERS:
        raise InvalidArgumentError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or math.isnan(eta):
        raise InvalidArgumentError(f"eta must be a number, got {eta!r}")
    if name != "ddim" and eta != 0.0:
        raise InvalidArgumentError(f"eta applies to ddim only; drop it for {name}")
    if timesteps is not None and spacing is not None:
        raise InvalidArgumentError("give either a spacing or explicit timesteps, not both: each places the timesteps")
    options: dict[str, Any] = {}
    if timesteps is not None:
        options["timesteps"] = tuple(timesteps)
    else:
        options["spacing"] = DEFAULT_SPACINGS[name] if spacing is None else spacing
    if name == "ddim":
        options["eta"] = float(eta)
    return SAMPLERS[name](schedule, steps, **options)
