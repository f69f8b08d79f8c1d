"""The one thing samplers need from a network: ``Denoiser(x, t) -> eps`` (docs/design.md section 4).

Every backend in :mod:`vmddpm_deploy.runtime` implements it; the samplers, batched generation
and the benchmarks only ever call it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """x: (batch, C, H, W) float, t: (batch,) int64 -> eps: (batch, C, H, W), same device as x."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...
