"""The hyperparameters of a training run, and which of them a resumed run may change."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from vmddpm_deploy.diffusion.reverse_process import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from vmddpm_deploy.errors import InvalidArgumentError


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters; all but :data:`RESUME_FREE` (steps, checkpoints, sample grids) must match
    when a run is resumed (they shape the loss curve)."""

    steps: int
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500  # linear learning-rate warm-up from 0
    ema_decay: float = 0.999
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    hflip: bool = True
    amp: bool = False  # bfloat16 autocast for the forward pass
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 0  # 0: no sample grids
    sample_sampler: str = DEFAULT_SAMPLER  # the grids' sampler and steps: sampling's defaults
    sample_steps: int = DEFAULT_STEPS

    def __post_init__(self) -> None:
        checks = {
            "--steps must be at least 1": self.steps >= 1,
            "--batch-size must be at least 1": self.batch_size >= 1,
            "--lr must be positive": self.lr > 0 and math.isfinite(self.lr),
            "--weight-decay must be >= 0": self.weight_decay >= 0,
            "--warmup-steps must be >= 0": self.warmup_steps >= 0,
            "--ema must be in [0, 1)": 0.0 <= self.ema_decay < 1.0,
            "--grad-clip must be >= 0": self.grad_clip >= 0,
            "--seed must be in [0, 2^63)": 0 <= self.seed < 2**63,
            "--checkpoint-every must be at least 1": self.checkpoint_every >= 1,
            "--sample-every must be >= 0": self.sample_every >= 0,
            f"--sample-sampler must be one of {', '.join(SAMPLERS)}": self.sample_sampler in SAMPLERS,
            "--sample-steps must be at least 1": self.sample_steps >= 1,
        }
        problems = [message for message, ok in checks.items() if not ok]
        if problems:
            raise InvalidArgumentError("; ".join(problems))

    def lr_at(self, step: int) -> float:
        return self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr

    def ema_decay_at(self, step: int) -> float:
        # diffusers' EMAModel warm-up: early weights are averaged over few steps, not 1/(1-decay).
        return min(self.ema_decay, (1 + step) / (10 + step))




#: Settings a resumed run may change; the others shape the loss curve and must stay the run's.
RESUME_FREE = ("steps", "checkpoint_every", "sample_every", "sample_sampler", "sample_steps")
_OPTION_NAMES = {"ema_decay": "--ema", "hflip": "--hflip/--no-hflip", "amp": "--amp/--no-amp"}


def resume_changes(saved: dict[str, Any], settings: TrainSettings) -> list[str]:
    """The settings outside :data:`RESUME_FREE` that differ from a run's ``saved`` ones, as
    ``--option old -> new``."""
    return [
        f"{_OPTION_NAMES.get(name, '--' + name.replace('_', '-'))} {saved.get(name)} -> {getattr(settings, name)}"
        for name in (f.name for f in fields(TrainSettings))
        if name not in RESUME_FREE and saved.get(name) != getattr(settings, name)
    ]
