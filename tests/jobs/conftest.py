"""A micro denoiser and a noisy sampler: jobs of a few images that run in a fraction of a second."""

from __future__ import annotations

import pytest

from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.model import ModelConfig
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser

#: (C, H, W) of the micro model's images.
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def denoiser():
    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return TorchDenoiser(init_checkpoint(config, NoiseSchedule(), seed=0))


@pytest.fixture(scope="module")
def sampler():
    return make_sampler("ddim", NoiseSchedule(), 4, eta=0.5)  # eta > 0: every step draws noise
