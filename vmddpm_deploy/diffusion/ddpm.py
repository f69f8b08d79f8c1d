"""DDPM ancestral sampling (Ho, Jain & Abbeel 2020, Algorithm 2), as diffusers' DDPMScheduler.

Step ``k`` goes from ``t = timesteps[k]`` to ``t' = timesteps[k + 1]`` (``t' = -1``, i.e.
``alpha_bar = 1``, after the last step). With fewer steps than ``T`` the step spans several
training steps, so ``alpha_t`` below is the span's ``alpha_bar_t / alpha_bar_t'`` (as diffusers
does; Nichol & Dhariwal 2021, section 4, respace the schedule the same way).

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)           (Ho eq. 4 solved for x_0)
             clipped to [-1, 1] when ``clip_sample``
    mu     = sqrt(alpha_bar_t') beta_t / (1 - alpha_bar_t) x0_hat
             + sqrt(alpha_t) (1 - alpha_bar_t') / (1 - alpha_bar_t) x_t           (Ho eq. 7)
    x_t'   = mu + sigma_t z,   sigma_t^2 = beta_tilde_t
                             = (1 - alpha_bar_t') / (1 - alpha_bar_t) beta_t      (Ho eq. 7, "fixed_small")

Without clipping ``mu`` equals Ho eq. 11, ``(x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)``;
the eq. 7 form lets the clipped ``x0_hat`` in, which keeps early, low-SNR steps in range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from vmddpm_deploy.diffusion.schedule import NoiseSchedule, predict_x0, sampler_timesteps


class _DDPMStep(NamedTuple):
    eps_scale: float  # sqrt(1 - alpha_bar_t)
    inv_sqrt_alpha_bar: float  # 1 / sqrt(alpha_bar_t)
    x0_coeff: float
    x_coeff: float
    sigma: float


@dataclass(frozen=True)
class DDPMSampler:
    """Ancestral DDPM over ``steps`` timesteps (``steps = T`` is the paper's sampler)."""

    schedule: NoiseSchedule
    steps: int
    spacing: str = "leading"
    clip_sample: bool = True
    #: None: placed by ``spacing``; else these timesteps (``schedule.check_timesteps``), ``steps`` of them.
    timesteps: tuple[int, ...] | None = None
    _coefficients: tuple[_DDPMStep, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        timesteps = sampler_timesteps(self.schedule, self.steps, self.spacing, self.timesteps)
        coefficients = []
        for ab_t, ab_prev in self.schedule.step_alpha_bars(timesteps):
            alpha_t = ab_t / ab_prev
            beta_t = 1.0 - alpha_t
            coefficients.append(
                _DDPMStep(
                    eps_scale=math.sqrt(1.0 - ab_t),
                    inv_sqrt_alpha_bar=1.0 / math.sqrt(ab_t),
                    x0_coeff=math.sqrt(ab_prev) * beta_t / (1.0 - ab_t),
                    x_coeff=math.sqrt(alpha_t) * (1.0 - ab_prev) / (1.0 - ab_t),
                    # Zero on a last step that lands on alpha_bar = 1: nothing to add, so no
                    # noise is drawn (diffusers draws it and scales it by sqrt(1e-20)).
                    sigma=math.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * beta_t),
                )
            )
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "_coefficients", tuple(coefficients))

    def needs_noise(self, k: int) -> bool:
        return self._coefficients[k].sigma > 0.0

    def step(
        self,
        k: int,
        x: torch.Tensor,
        eps: torch.Tensor,
        noise: torch.Tensor | None,
        history: torch.Tensor | None,
    ) -> tuple[torch.Tensor, None]:
        c = self._coefficients[k]
        x0 = predict_x0(x, eps, c.eps_scale, c.inv_sqrt_alpha_bar, self.clip_sample)
        x_prev = x0.mul_(c.x0_coeff).add_(x, alpha=c.x_coeff)  # reuses x0's buffer: one allocation per step
        if c.sigma > 0.0:
            x_prev.add_(noise, alpha=c.sigma)
        return x_prev, None
