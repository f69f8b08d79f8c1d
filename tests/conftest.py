"""Shared fixtures: a micro model config small enough for the reference scan to be quick."""

from __future__ import annotations

import pytest

from vmddpm_deploy.model import ModelConfig


@pytest.fixture
def micro_config() -> ModelConfig:
    return ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
