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
        raise InvalidArgumentError(
            f"unknown timestep spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    return [int(t) for t in timesteps]


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
