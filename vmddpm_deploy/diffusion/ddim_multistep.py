"""Multistep DDIM: DDIM's update driven by an Adams-Bashforth combination of the last eps
(Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models", PLMS; Zhang & Chen 2023,
"Fast Sampling of Diffusion Models with Exponential Integrator", iPNDM's lower-order start).

Step ``k`` goes from ``t = timesteps[k]`` to ``t' = timesteps[k + 1]`` (``alpha_bar_t' = 1`` after
the last step) with the eps of the last ``q = min(order, k + 1)`` steps, ``e_k`` the newest:

    q = 1:  e'_k = e_k                                                   (DDIM)
    q = 2:  e'_k = (3 e_k - e_{k-1}) / 2                                  (Liu eq. 12, AB2)
    q = 3:  e'_k = (23 e_k - 16 e_{k-1} + 5 e_{k-2}) / 12                 (Liu eq. 12, AB3)

The Adams-Bashforth weights are those of equal steps whatever the placement, as in PLMS and
iPNDM. ``e'_k`` then drives deterministic DDIM (``eta = 0``) with DDIM's clipping rule:

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) e'_k) / sqrt(alpha_bar_t), clipped to [-1, 1]
    x_t'   = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t') e'_k      (Song eq. 12)

Unclipped, this is Liu et al.'s transfer function (their eq. 9 equals DDIM's update) applied to
the PLMS eps, i.e. diffusers' PNDMScheduler(skip_prk_steps=True) from its third call on; diffusers
starts with a pseudo improved Euler step that costs one extra denoiser call instead of the lower
orders. Clipping x0 predicted from the combined eps and keeping the combined eps in the direction
term is DDIM's rule (``use_clipped_model_output=False`` in diffusers), kept so that order 1 is
exactly our DDIM; recomputing eps from the clipped x0 is what thresholded DPM-Solver++ does instead.

The previous eps travel in the ``history`` :func:`~vmddpm_deploy.diffusion.reverse_process.run_sampler`
threads through the steps (oldest first), so one sampler object serves concurrent runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vmddpm_deploy.diffusion.ddim import DDIMSampler
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.errors import InvalidArgumentError

#: Adams-Bashforth weights on (e_k, e_{k-1}, e_{k-2}) by order (Liu et al. 2022, eq. 12).
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3.0 / 2.0, -1.0 / 2.0),
    3: (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
}


@dataclass(frozen=True)
class MultistepDDIMSampler:
    """Deterministic DDIM on an Adams-Bashforth eps of order 2 or 3 over ``steps`` timesteps."""

    schedule: NoiseSchedule
    steps: int
    order: int = 2
    spacing: str = "leading"
    clip_sample: bool = True
    #: None: placed by ``spacing``; else these timesteps (``schedule.check_timesteps``), ``steps`` of them.
    timesteps: tuple[int, ...] | None = None
    _ddim: DDIMSampler = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.order not in (2, 3):
            raise InvalidArgumentError(f"multistep DDIM order must be 2 or 3, got {self.order!r}")
        ddim = DDIMSampler(
            self.schedule, self.steps, eta=0.0, spacing=self.spacing, clip_sample=self.clip_sample,
            timesteps=self.timesteps,
        )
        object.__setattr__(self, "_ddim", ddim)
        object.__setattr__(self, "timesteps", ddim.timesteps)

    def needs_noise(self, k: int) -> bool:
        return False

    def step(
        self,
        k: int,
        x: torch.Tensor,
        eps: torch.Tensor,
        noise: torch.Tensor | None,
        history: tuple[torch.Tensor, ...] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        previous = history or ()
        weights = ADAMS_BASHFORTH[min(self.order, len(previous) + 1)]
        if len(weights) == 1:
            combined = eps
        else:
            combined = torch.mul(eps, weights[0])
            for weight, older in zip(weights[1:], reversed(previous), strict=False):
                combined.add_(older, alpha=weight)
        x_next, _ = self._ddim.step(k, x, combined, None, None)
        return x_next, (*previous, eps)[-(self.order - 1) :]
