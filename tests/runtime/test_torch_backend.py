"""The torch backend in fp32 and under the fp16 policy of the fp16 graph."""

from __future__ import annotations

import pytest
import torch

from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
from tests.runtime.conftest import MICRO


def test_fp16_policy_tracks_fp32_within_the_fp16_tolerance():
    checkpoint = init_checkpoint(MICRO, NoiseSchedule(), seed=1)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 400, 999])
    fp32 = TorchDenoiser(checkpoint)(x, t)
    half = TorchDenoiser(checkpoint, precision="fp16")
    eps = half(x, t)
    assert eps.dtype == torch.float32 and eps.shape == x.shape  # eps in x's dtype
    assert half.model.time_embed.module[0].weight.dtype == torch.float32  # an fp32 island of the policy
    assert half.model.stem.weight.dtype == torch.float16
    torch.testing.assert_close(eps, fp32, rtol=3e-3, atol=5e-3)
    assert not torch.equal(eps, fp32)  # it really ran in fp16
    with pytest.raises(InvalidArgumentError, match="torch precision must be one of fp32, fp16"):
        TorchDenoiser(checkpoint, precision="bf16")
