"""The forward-process noise schedule and the inference timestep grids drawn from it.

Notation (Ho et al. 2020): ``beta_t`` is the variance added at training step ``t`` (0-based here,
``t = 0 .. T-1`` like diffusers), ``alpha_t = 1 - beta_t`` and
``alpha_bar_t = prod_{s <= t} alpha_s`` (``alphas_cumprod``), so that

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)            (Ho et al., eq. 4)

Kinds:

* ``linear``: ``beta_t`` evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. section 4;
  diffusers ``beta_schedule="linear"``).
* ``cosine``: Nichol & Dhariwal 2021, eq. 17: ``alpha_bar(t) = f(t) / f(0)`` with
  ``f(t) = cos(((t / T + s) / (1 + s)) * pi / 2) ** 2``, discretised as
  ``beta_t = min(1 - alpha_bar(t + 1) / alpha_bar(t), max_beta)`` (diffusers
  ``beta_schedule="squaredcos_cap_v2"``). The cap keeps ``beta`` below 1 near ``t = T`` where
  ``f`` reaches 0.

Tables are float64 (diffusers keeps them in float32); samplers cast the per-step coefficients
they derive from them to the sample's dtype.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch

from vmddpm_deploy.choices import DEFAULT_SCHEDULE_KIND, SCHEDULE_KINDS, TIMESTEP_SPACINGS
from vmddpm_deploy.errors import ConfigError, InvalidArgumentError

__all__ = ["SCHEDULE_KINDS", "TIMESTEP_SPACINGS", "NoiseSchedule", "spaced_timesteps"]

#: Placements that depend on T only, as diffusers' ``timestep_spacing`` (:func:`spaced_timesteps`).
GRID_SPACINGS = ("leading", "trailing", "linspace")
#: Placements by noise level, from the schedule's alpha_bar (:func:`noise_level_timesteps`).
NOISE_LEVEL_SPACINGS = ("quadratic", "logsnr", "karras")
# choices.TIMESTEP_SPACINGS is these two families, in this order (tests/test_choices.py).
#: Karras et al. 2022's rho (their eq. 5 and table 1), as diffusers' ``use_karras_sigmas``.
KARRAS_RHO = 7.0
#: The DDIM paper's quadratic placement stops at 4/5 of T (Song et al. 2021, appendix D.2).
QUADRATIC_END = (4, 5)


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM forward-process schedule; plain data (``to_dict`` / ``from_dict``) plus its tables.

    ``beta_start`` / ``beta_end`` shape the ``linear`` kind, ``cosine_s`` / ``max_beta`` the
    ``cosine`` kind; every field is stored whatever the kind, so a dict round-trips exactly.
    """

    kind: Literal["linear", "cosine"] = DEFAULT_SCHEDULE_KIND
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(f"unknown noise schedule kind {self.kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
        if isinstance(self.num_train_timesteps, bool) or not isinstance(self.num_train_timesteps, int):
            raise ConfigError(f"num_train_timesteps must be an integer, got {self.num_train_timesteps!r}")
        if self.num_train_timesteps < 1:
            raise ConfigError(f"num_train_timesteps must be at least 1, got {self.num_train_timesteps}")
        for name in ("beta_start", "beta_end", "cosine_s", "max_beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        # Every beta must lie in (0, 1): 0 would make two timesteps indistinguishable, 1 would
        # zero alpha_bar and make x_0 unrecoverable.
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={self.beta_start}, beta_end={self.beta_end}"
            )
        if not 0.0 < self.max_beta < 1.0:
            raise ConfigError(f"max_beta must be in (0, 1), got {self.max_beta}")
        if self.cosine_s < 0.0:
            raise ConfigError(f"cosine_s must be non-negative, got {self.cosine_s}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data; ``from_dict(to_dict())`` gives an equal schedule."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> NoiseSchedule:
        """Validate ``data`` (e.g. from a checkpoint); missing fields take their defaults."""
        if not isinstance(data, dict):
            raise ConfigError(f"a noise schedule must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(f"unknown noise schedule field(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values = dict(data)
        # JSON writes 1.0 as 1 in some encoders; accept integers where a float is expected so
        # the result compares equal to the schedule that was saved.
        for name in ("beta_start", "beta_end", "cosine_s", "max_beta"):
            value = values.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                values[name] = float(value)
        return cls(**values)

    @property
    def betas(self) -> torch.Tensor:
        """``beta_t`` for ``t = 0 .. T-1``, float64 (a fresh copy: the cache stays intact)."""
        return torch.from_numpy(self._betas.copy())

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``alpha_bar_t = prod_{s <= t} (1 - beta_s)``, float64 (a fresh copy)."""
        return torch.from_numpy(self._alphas_cumprod.copy())

    def step_alpha_bars(self, timesteps: Sequence[int]) -> list[tuple[float, float]]:
        """``(alpha_bar_t, alpha_bar_t')`` for each step ``t -> t'`` along ``timesteps``; after the
        last step ``alpha_bar_t' = 1``, the clean image (diffusers' ``set_alpha_to_one=True``)."""
        alpha_bar = self._alphas_cumprod.tolist()
        return [
            (alpha_bar[t], alpha_bar[timesteps[k + 1]] if k + 1 < len(timesteps) else 1.0)
            for k, t in enumerate(timesteps)
        ]

    @cached_property
    def _betas(self) -> np.ndarray:
        T = self.num_train_timesteps
        if self.kind == "linear":
            return np.linspace(self.beta_start, self.beta_end, T, dtype=np.float64)
        s = self.cosine_s

        def f(t: np.ndarray) -> np.ndarray:  # Nichol & Dhariwal eq. 17, before dividing by f(0)
            return np.cos((t / T + s) / (1.0 + s) * (math.pi / 2.0)) ** 2

        steps = np.arange(T, dtype=np.float64)
        return np.minimum(1.0 - f(steps + 1.0) / f(steps), self.max_beta)

    @cached_property
    def _alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self._betas)


def predict_x0(
    x: torch.Tensor, eps: torch.Tensor, eps_scale: float, inv_sqrt_alpha_bar: float, clip: bool
) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), Ho eq. 4 solved for x_0, as a
    new tensor; clipped to [-1, 1] when ``clip``. ``eps_scale`` = sqrt(1 - alpha_bar_t)."""
    x0 = torch.add(x, eps, alpha=-eps_scale).mul_(inv_sqrt_alpha_bar)
    return x0.clamp_(-1.0, 1.0) if clip else x0


def spaced_timesteps(num_train_timesteps: int, steps: int, spacing: str) -> list[int]:
    """``steps`` training timesteps, descending, as diffusers' DDPM/DDIM ``set_timesteps`` picks them.

    With ``T = num_train_timesteps`` and ``steps_offset = 0``:

    * ``leading``:  ``k * (T // steps)`` for ``k = steps-1 .. 0``     (e.g. 900, 800, .., 0)
    * ``trailing``: ``round(T - k * T / steps) - 1`` for ``k = 0 .. steps-1`` (999, 899, .., 99)
    * ``linspace``: ``round(linspace(0, T - 1, steps))`` reversed     (999, 888, .., 0)

    Lin et al. 2024 ("Common diffusion noise schedules and sample steps are flawed", table 2)
    compare them; ``trailing`` and ``linspace`` start at ``T - 1``, ``leading`` does not.
    diffusers' ``trailing`` can yield ``steps + 1`` values (float ``arange`` overshoots, e.g.
    ``steps=61`` gives a last timestep of -1); here the list is cut at ``steps``.
    """
    T = num_train_timesteps
    check_steps(T, steps)
    if spacing == "leading":
        timesteps = np.arange(steps)[::-1] * (T // steps)
    elif spacing == "trailing":
        timesteps = np.round(np.arange(T, 0, -T / steps))[:steps].astype(np.int64) - 1
    elif spacing == "linspace":
        timesteps = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    else:
        raise InvalidArgumentError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(GRID_SPACINGS)}")
    return [int(t) for t in timesteps]


def inference_timesteps(schedule: NoiseSchedule, steps: int, spacing: str) -> list[int]:
    """``steps`` timesteps, descending, for any of :data:`TIMESTEP_SPACINGS` (DDPM's and DDIM's list)."""
    if spacing in NOISE_LEVEL_SPACINGS:
        return noise_level_timesteps(schedule, steps, spacing)
    if spacing not in GRID_SPACINGS:
        raise InvalidArgumentError(
            f"unknown timestep spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    return spaced_timesteps(schedule.num_train_timesteps, steps, spacing)


def noise_level_timesteps(schedule: NoiseSchedule, steps: int, spacing: str) -> list[int]:
    """``steps`` distinct timesteps, descending, placed by noise level; the last is always 0.

    With ``T = num_train_timesteps``, ``S = steps``, ``a_t = alpha_bar_t`` and the noise-to-signal
    ratio ``s_t = sqrt((1 - a_t) / a_t)`` (Karras et al.'s sigma; ``log s_t`` is minus half the
    log-SNR, increasing in t):

    * ``quadratic`` (Song et al. 2021, DDIM, appendix D.2, their CIFAR10 placement):
      ``t_i = floor((i * sqrt(0.8 T) / (S - 1)) ** 2) = floor(4 T i^2 / (5 (S - 1)^2))`` for
      ``i = S-1 .. 0``: dense at low noise, the first step at 0.8 T. Computed in integers, so it
      is exact where the DDIM code's ``int(linspace(0, sqrt(0.8 T), S) ** 2)`` rounds an exact
      integer down (511 for 512 at T = 1000, S = 16).
    * ``logsnr``: ``log s`` evenly spaced from ``log s_{T-1}`` to ``log s_0`` (Lu et al. 2022,
      DPM-Solver, section 3.3's uniform logSNR steps; diffusers' ``use_lu_lambdas``).
    * ``karras`` (Karras et al. 2022, eq. 5, rho = 7): ``s_i = (s_max^(1/rho) + i / (S - 1)
      (s_min^(1/rho) - s_max^(1/rho)))^rho`` for ``i = 0 .. S-1`` with ``s_max = s_{T-1}``,
      ``s_min = s_0`` (diffusers' ``use_karras_sigmas``).

    ``logsnr`` and ``karras`` give continuous noise levels; each becomes the nearest training
    timestep by linear interpolation of ``log s`` between neighbouring integers (diffusers'
    ``_sigma_to_t``): with ``j`` such that ``log s_j <= log s < log s_{j+1}`` (``j`` clamped to
    ``[0, T-2]``), ``t = round(j + (log s - log s_j) / (log s_{j+1} - log s_j))``, halves to even.
    The host (plugins/host/src/ddim.cpp) computes the same in the same order.

    A placement that repeats a timestep at this many steps (each repeat would be a wasted call,
    and a zero log-SNR step for DPM-Solver) is refused with the largest step count that does not.
    """
    check_steps(schedule.num_train_timesteps, steps)
    timesteps = _noise_level_candidates(schedule, steps, spacing)
    if np.any(np.diff(timesteps) >= 0):
        most = next(
            n for n in range(steps - 1, 0, -1) if np.all(np.diff(_noise_level_candidates(schedule, n, spacing)) < 0)
        )
        raise InvalidArgumentError(f"{spacing} spacing repeats timesteps at {steps} steps; use at most {most}, or another spacing")
    return [int(t) for t in timesteps]


def _noise_level_candidates(schedule: NoiseSchedule, steps: int, spacing: str) -> np.ndarray:
    T = schedule.num_train_timesteps
    if spacing == "quadratic":
        numerator, denominator = QUADRATIC_END
        i = np.arange(steps - 1, -1, -1, dtype=np.int64)
        return numerator * T * i * i // max(denominator * (steps - 1) ** 2, 1)
    alpha_bar = schedule._alphas_cumprod
    sigma = np.sqrt((1.0 - alpha_bar) / alpha_bar)
    log_sigma = np.log(sigma)
    ramp = np.linspace(0.0, 1.0, steps)
    if spacing == "logsnr":
        targets = log_sigma[-1] + ramp * (log_sigma[0] - log_sigma[-1])
    elif spacing == "karras":
        high, low = sigma[-1] ** (1.0 / KARRAS_RHO), sigma[0] ** (1.0 / KARRAS_RHO)
        targets = np.log((high + ramp * (low - high)) ** KARRAS_RHO)
    else:
        raise InvalidArgumentError(
            f"unknown timestep spacing {spacing!r}; choose one of {', '.join(NOISE_LEVEL_SPACINGS)}"
        )
    if T == 1:
        return np.zeros(steps, dtype=np.int64)
    below = np.clip(np.searchsorted(log_sigma, targets, side="right") - 1, 0, T - 2)
    fraction = (targets - log_sigma[below]) / (log_sigma[below + 1] - log_sigma[below])
    return np.round(below + np.clip(fraction, 0.0, 1.0)).astype(np.int64)


def sampler_timesteps(
    schedule: NoiseSchedule, steps: int, spacing: str, timesteps: Sequence[int] | None
) -> tuple[int, ...]:
    """A sampler's timesteps: placed by ``spacing`` when ``timesteps`` is None, else ``timesteps``
    itself (e.g. a ``tune-schedule`` file's), checked by :func:`check_timesteps` and of length ``steps``."""
    if timesteps is None:
        return tuple(inference_timesteps(schedule, steps, spacing))
    checked = check_timesteps(schedule.num_train_timesteps, timesteps)
    if len(checked) != steps:
        raise InvalidArgumentError(f"{len(checked)} timesteps given for {steps} steps")
    return checked


def check_timesteps(num_train_timesteps: int, timesteps: Sequence[int]) -> tuple[int, ...]:
    """``timesteps`` as a tuple, or InvalidArgumentError unless they are distinct integers in
    ``[0, T - 1]`` in descending order (the order a sampler visits them in), at least one."""
    values = tuple(timesteps)
    if not values:
        raise InvalidArgumentError("timesteps must list at least one timestep")
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in values):
        raise InvalidArgumentError(f"timesteps must be integers, got {list(values)!r}")
    values = tuple(int(t) for t in values)
    outside = [t for t in values if not 0 <= t < num_train_timesteps]
    if outside:
        raise InvalidArgumentError(
            f"timesteps must lie in [0, {num_train_timesteps - 1}] (the schedule's training timesteps), got {outside[0]}"
        )
    if any(later >= earlier for earlier, later in zip(values, values[1:])):
        raise InvalidArgumentError(f"timesteps must be distinct and descending, got {list(values)}")
    return values


def check_steps(num_train_timesteps: int, steps: int) -> None:
    """Raise InvalidArgumentError unless ``1 <= steps <= num_train_timesteps``."""
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise InvalidArgumentError(f"steps must be an integer, got {steps!r}")
    if steps < 1:
        raise InvalidArgumentError(f"steps must be at least 1, got {steps}")
    if steps > num_train_timesteps:
        raise InvalidArgumentError(
            f"steps must be at most the schedule's {num_train_timesteps} training timesteps, got {steps}"
        )
