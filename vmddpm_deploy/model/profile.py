"""Size and cost of a model config: parameters and FLOPs per denoiser call."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from vmddpm_deploy.model.config import ModelConfig
from vmddpm_deploy.model.vmddpm import VMDDPM


@register_flop_formula(torch.ops.vmddpm.selective_scan)
def _selective_scan_flops(u_shape, *args, **kwargs) -> int:
    # mamba-ssm's count: 9 flops per state update (exp(dt*A), dt*B*u, h update, C.h) plus D*u.
    batch, channels, length = u_shape
    n = args[1][1]  # A: (K*D, N)
    return 9 * batch * channels * length * n + batch * channels * length


def count_parameters(config: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in VMDDPM(config).parameters())


def denoiser_flops(config: ModelConfig, batch: int = 1) -> int:
    """FLOPs of one ``model(x, t)`` call (multiply-add = 2), counted on the meta device."""
    with torch.device("meta"):
        model = VMDDPM(config)
        x = torch.empty(batch, config.in_channels, config.image_size, config.image_size)
        t = torch.zeros(batch, dtype=torch.int64)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, t)
    return counter.get_total_flops()
