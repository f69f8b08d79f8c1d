"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), as diffusers'
DPMSolverMultistepScheduler with ``algorithm_type="dpmsolver++"``, ``solver_order=2``,
``solver_type="midpoint"``, ``lower_order_final=True``, ``final_sigmas_type="zero"``.

With ``alpha_t = sqrt(alpha_bar_t)``, ``sigma_t = sqrt(1 - alpha_bar_t)`` and the half
log-SNR ``lambda_t = log(alpha_t / sigma_t)``, step ``k`` goes from ``s = timesteps[k]`` to
``t = timesteps[k + 1]``, or to the clean end (``alpha = 1``, ``sigma = 0``, ``lambda = inf``)
after the last listed timestep:

    x0_k = (x_s - sigma_s eps) / alpha_s                         the data-prediction model x_theta
    h_k  = lambda_t - lambda_s
    first order (k = 0; Algorithm 2 line 4, which is DDIM's update):
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h_k) - 1) x0_k
    second order multistep (k >= 1; Algorithm 2 lines 7-9), r_k = h_{k-1} / h_k:
        D_k = (1 + 1 / (2 r_k)) x0_k - 1 / (2 r_k) x0_{k-1}
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h_k) - 1) D_k
    last step (to sigma = 0, h = inf): x_0 = x0_k  (first order, as diffusers' lower-order final)

``x0_{k-1}`` is the history :func:`~vmddpm_deploy.diffusion.reverse_process.run_sampler` carries. No noise
is used. With ``clip_sample`` (the default) every ``x0_k`` is clipped to the data range [-1, 1]
before it enters the update and the history, as our DDIM does and as diffusers does with
``thresholding=True, sample_max_value=1.0`` (its dynamic threshold ``s`` is then clamped to 1, which
is plain clipping). ``clip_sample=False`` is diffusers' default ``thresholding=False``.

Why clipping is the default: on the bundled model it scores a clearly better FID at 20 steps than
no clipping (``benchmarks/bench_quality.py``; the numbers are in the README's "Fast sampling at
equal quality").

Timesteps follow diffusers' ``set_timesteps`` for this scheduler (default ``linspace``), which
spaces ``steps + 1`` points and drops the final 0 because the last step ends at the clean end:

* ``linspace``: ``round(linspace(0, T - 1, steps + 1))`` reversed, without the trailing 0
* ``leading``: ``k * (T // (steps + 1))`` for ``k = steps .. 1``
* ``trailing``: as DDIM's, ``round(T - k * T / steps) - 1``
* ``quadratic``, ``logsnr``, ``karras``: DDIM's list (``noise_level_timesteps``), last timestep 0,
  as diffusers' ``use_karras_sigmas`` / ``use_lu_lambdas`` place them
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from vmddpm_deploy.diffusion.schedule import (
    GRID_SPACINGS,
    NOISE_LEVEL_SPACINGS,
    TIMESTEP_SPACINGS,
    NoiseSchedule,
    check_steps,
    noise_level_timesteps,
    predict_x0,
    sampler_timesteps,
)
from vmddpm_deploy.errors import InvalidArgumentError


class _DPMStep(NamedTuple):
    eps_scale: float  # sigma_s
    inv_alpha: float  # 1 / alpha_s
    x_coeff: float  # sigma_t / sigma_s
    first_order_coeff: float  # -alpha_t (exp(-h) - 1)
    x0_coeff: float  # -alpha_t (exp(-h) - 1) (1 + 1 / (2 r))
    previous_x0_coeff: float  # alpha_t (exp(-h) - 1) / (2 r)
    to_clean: bool


def dpm_solver_timesteps(schedule: NoiseSchedule, steps: int, spacing: str) -> list[int]:
    """The ``steps`` timesteps diffusers' DPMSolverMultistepScheduler picks, descending."""
    num_train_timesteps = schedule.num_train_timesteps
    check_steps(num_train_timesteps, steps)
    if spacing in NOISE_LEVEL_SPACINGS:
        return noise_level_timesteps(schedule, steps, spacing)
    if spacing not in GRID_SPACINGS:
        raise InvalidArgumentError(
            f"unknown timestep spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    timesteps = _candidate_timesteps(num_train_timesteps, steps, spacing)
    # With steps close to T, rounding (linspace) or a zero stride (leading) repeats a timestep,
    # and a zero log-SNR step h would divide by zero in r = h_{k-1} / h_k.
    if np.any(np.diff(timesteps) >= 0):
        most = next(
            n
            for n in range(steps - 1, 0, -1)
            if np.all(np.diff(_candidate_timesteps(num_train_timesteps, n, spacing)) < 0)
        )
        raise InvalidArgumentError(
            f"dpm-solver++ with {spacing} spacing repeats timesteps at {steps} steps; use at most {most}"
        )
    return [int(t) for t in timesteps]


def _candidate_timesteps(T: int, steps: int, spacing: str) -> np.ndarray:
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        return np.arange(1, steps + 1)[::-1] * (T // (steps + 1))
    return np.round(np.arange(T, 0, -T / steps))[:steps].astype(np.int64) - 1  # trailing


@dataclass(frozen=True)
class DPMSolverPP2MSampler:
    """Deterministic multistep DPM-Solver++ of order 2 over ``steps`` timesteps."""

    schedule: NoiseSchedule
    steps: int
    spacing: str = "linspace"
    clip_sample: bool = True
    #: None: placed by ``spacing``; else these timesteps (``schedule.check_timesteps``), ``steps`` of them.
    timesteps: tuple[int, ...] | None = None
    _coefficients: tuple[_DPMStep, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timesteps is None:
            timesteps = tuple(dpm_solver_timesteps(self.schedule, self.steps, self.spacing))
        else:
            timesteps = sampler_timesteps(self.schedule, self.steps, self.spacing, self.timesteps)
        alpha_bar = self.schedule.alphas_cumprod.tolist()
        coefficients = []
        previous_h = math.nan  # r_0 is never used: step 0 is first order
        for k, s in enumerate(timesteps):
            alpha_s, sigma_s = math.sqrt(alpha_bar[s]), math.sqrt(1.0 - alpha_bar[s])
            if k + 1 == len(timesteps):
                coefficients.append(
                    _DPMStep(
                        eps_scale=sigma_s,
                        inv_alpha=1.0 / alpha_s,
                        x_coeff=0.0,
                        first_order_coeff=1.0,
                        x0_coeff=1.0,
                        previous_x0_coeff=0.0,
                        to_clean=True,
                    )
                )
                break
            t = timesteps[k + 1]
            alpha_t, sigma_t = math.sqrt(alpha_bar[t]), math.sqrt(1.0 - alpha_bar[t])
            h = math.log(alpha_t / sigma_t) - math.log(alpha_s / sigma_s)
            first_order = -alpha_t * math.expm1(-h)  # expm1: exp(-h) - 1 without cancellation
            half_inv_r = 0.5 * h / previous_h  # 1 / (2 r_k)
            coefficients.append(
                _DPMStep(
                    eps_scale=sigma_s,
                    inv_alpha=1.0 / alpha_s,
                    x_coeff=sigma_t / sigma_s,
                    first_order_coeff=first_order,
                    x0_coeff=first_order * (1.0 + half_inv_r),
                    previous_x0_coeff=-first_order * half_inv_r,
                    to_clean=False,
                )
            )
            previous_h = h
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "_coefficients", tuple(coefficients))

    def needs_noise(self, k: int) -> bool:
        return False

    def step(
        self,
        k: int,
        x: torch.Tensor,
        eps: torch.Tensor,
        noise: torch.Tensor | None,
        history: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self._coefficients[k]
        x0 = predict_x0(x, eps, c.eps_scale, c.inv_alpha, self.clip_sample)
        if c.to_clean:
            return x0, x0
        x_next = torch.mul(x, c.x_coeff)
        if k == 0:
            x_next.add_(x0, alpha=c.first_order_coeff)
        else:
            x_next.add_(x0, alpha=c.x0_coeff).add_(history, alpha=c.previous_x0_coeff)
        return x_next, x0
