"""The torch-free name lists (vmddpm_deploy/choices.py) against the registries that act on them."""

from __future__ import annotations

import dataclasses

import pytest

from vmddpm_deploy import choices
from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.diffusion.schedule import GRID_SPACINGS, NOISE_LEVEL_SPACINGS, inference_timesteps
from vmddpm_deploy.diffusion.reverse_process import SAMPLERS, make_sampler
from vmddpm_deploy.errors import ConfigError, InvalidArgumentError
from vmddpm_deploy.model.config import PRESETS, ModelConfig
from vmddpm_deploy.ops.scan_orders import SCAN_ORDERS, scan_table
from vmddpm_deploy.runtime.source import BACKENDS
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser


def test_presets_scan_orders_samplers_and_backends_match_their_registries():
    assert tuple(PRESETS) == choices.PRESET_NAMES and choices.DEFAULT_PRESET in PRESETS
    assert SCAN_ORDERS == choices.SCAN_ORDERS
    assert ModelConfig().scan_order == choices.DEFAULT_SCAN_ORDER
    assert tuple(SAMPLERS) == choices.SAMPLERS and choices.DEFAULT_SAMPLER in SAMPLERS
    assert tuple(BACKENDS) == choices.BACKENDS
    assert choices.CHECK_ONLY_BACKENDS < set(BACKENDS)
    assert choices.SAMPLING_BACKENDS == ("auto", "torch", "onnxruntime", "tensorrt")


@pytest.mark.parametrize("order", choices.SCAN_ORDERS)
def test_every_scan_order_has_a_table(order):
    assert scan_table(order, 2, 3).shape == (4, 6)


def test_every_schedule_kind_builds_and_no_other():
    assert NoiseSchedule().kind == choices.DEFAULT_SCHEDULE_KIND
    for kind in choices.SCHEDULE_KINDS:
        assert NoiseSchedule(kind=kind, num_train_timesteps=10).alphas_cumprod.shape == (10,)
    with pytest.raises(ConfigError):
        NoiseSchedule(kind="quadratic")


def test_every_spacing_spaces_and_no_other():
    assert GRID_SPACINGS + NOISE_LEVEL_SPACINGS == choices.TIMESTEP_SPACINGS
    schedule = NoiseSchedule(num_train_timesteps=100)
    for spacing in choices.TIMESTEP_SPACINGS:
        assert len(inference_timesteps(schedule, 5, spacing)) == 5
    with pytest.raises((ConfigError, InvalidArgumentError)):
        inference_timesteps(schedule, 5, "cubic")


def test_default_steps_make_a_sampler():
    sampler = make_sampler(choices.DEFAULT_SAMPLER, NoiseSchedule(), choices.DEFAULT_STEPS)
    assert len(sampler.timesteps) == choices.DEFAULT_STEPS


def test_precisions_are_what_the_torch_backend_takes(micro_config):
    checkpoint = init_checkpoint(micro_config, NoiseSchedule())
    assert set(choices.SAMPLING_PRECISIONS) - {"auto"} <= set(choices.TORCH_PRECISIONS)
    for precision in choices.TORCH_PRECISIONS:
        assert TorchDenoiser(checkpoint, precision=precision).precision == precision
    with pytest.raises(InvalidArgumentError):
        TorchDenoiser(checkpoint, precision="int8")


def test_image_formats_are_plain_data():
    for name, layout in choices.IMAGE_FORMATS.items():
        assert dataclasses.is_dataclass(layout) and layout.suffix.startswith(".") and layout.description
