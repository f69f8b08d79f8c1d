"""Shared fixtures: a micro model config small enough for the reference scan to be quick, and a
checkpoint of it."""

from __future__ import annotations

import pytest

from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.model import ModelConfig


@pytest.fixture
def micro_config() -> ModelConfig:
    return ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)


@pytest.fixture
def micro_ckpt(tmp_path, micro_config):
    return save_checkpoint(init_checkpoint(micro_config, NoiseSchedule(), seed=0), tmp_path / "micro.pt")
