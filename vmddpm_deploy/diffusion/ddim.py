"""DDIM sampling (Song, Meng & Ermon 2021), as diffusers' DDIMScheduler.

Step ``k`` goes from ``t = timesteps[k]`` to ``t' = timesteps[k + 1]``; after the last step
``alpha_bar_t' = 1`` (diffusers' default ``set_alpha_to_one=True``), so the last step returns
the predicted ``x_0`` itself.

    x0_hat  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)         (Song eq. 9)
              clipped to [-1, 1] when ``clip_sample``
    sigma_t = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_t')
                                                                              (Song eq. 16)
    x_t'    = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma_t^2) eps + sigma_t z
                                                                              (Song eq. 12)

``eta = 0`` is the deterministic DDIM; ``eta = 1`` has DDPM's posterior variance. As in diffusers
(``use_clipped_model_output=False``) the direction term uses the model's ``eps`` even when
``x0_hat`` was clipped.

One deliberate difference from diffusers 0.42: diffusers steps to ``t - T // steps`` whatever
the spacing (huggingface/diffusers#12633), which is the next listed timestep only for
``leading`` (and for ``trailing`` when ``steps`` divides ``T``); with ``linspace`` it lands
between grid points and the next step evaluates the model at a noise level the sample is not at.
This sampler always steps to the next listed timestep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from vmddpm_deploy.diffusion.schedule import NoiseSchedule, predict_x0, sampler_timesteps
from vmddpm_deploy.errors import InvalidArgumentError


class _DDIMStep(NamedTuple):
    eps_scale: float  # sqrt(1 - alpha_bar_t)
    inv_sqrt_alpha_bar: float  # 1 / sqrt(alpha_bar_t)
    x0_coeff: float  # sqrt(alpha_bar_t')
    eps_coeff: float  # sqrt(1 - alpha_bar_t' - sigma_t^2)
    sigma: float


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM with stochasticity ``eta`` in [0, 1] over ``steps`` timesteps."""

    schedule: NoiseSchedule
    steps: int
    eta: float = 0.0
    spacing: str = "leading"
    clip_sample: bool = True
    #: None: placed by ``spacing``; else these timesteps (``schedule.check_timesteps``), ``steps`` of them.
    timesteps: tuple[int, ...] | None = None
    _coefficients: tuple[_DDIMStep, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Above 1 the direction term's variance 1 - alpha_bar_t' - sigma_t^2 can go negative.
        if not 0.0 <= self.eta <= 1.0:
            raise InvalidArgumentError(f"eta must be in [0, 1], got {self.eta}")
        timesteps = sampler_timesteps(self.schedule, self.steps, self.spacing, self.timesteps)
        coefficients = []
        for ab_t, ab_prev in self.schedule.step_alpha_bars(timesteps):
            variance = (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)
            sigma = self.eta * math.sqrt(variance)
            coefficients.append(
                _DDIMStep(
                    eps_scale=math.sqrt(1.0 - ab_t),
                    inv_sqrt_alpha_bar=1.0 / math.sqrt(ab_t),
                    x0_coeff=math.sqrt(ab_prev),
                    # max(): rounding can leave -1e-17 where the exact value is 0 (eta = 1 and
                    # alpha_bar_t' = 1 on the last step).
                    eps_coeff=math.sqrt(max(0.0, 1.0 - ab_prev - sigma * sigma)),
                    sigma=sigma,
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
        x_prev = x0.mul_(c.x0_coeff).add_(eps, alpha=c.eps_coeff)  # reuses x0's buffer
        if c.sigma > 0.0:
            x_prev.add_(noise, alpha=c.sigma)
        return x_prev, None
