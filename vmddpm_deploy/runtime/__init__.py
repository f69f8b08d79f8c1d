"""Runtimes: everything that can answer ``Denoiser(x, t) -> eps`` (docs/design.md section 4)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """x: (batch, C, H, W) float, t: (batch,) int64 -> eps: (batch, C, H, W), same device as x."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


__all__ = ["Denoiser"]
