"""The VM-DDPM network: shapes, batch independence, export structure, configs and presets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vmddpm_deploy.errors import ConfigError
from vmddpm_deploy.model import PRESETS, VMDDPM, ModelConfig, preset
from vmddpm_deploy.model.vmddpm import SS2D


def make(config: ModelConfig, seed: int = 0) -> VMDDPM:
    torch.manual_seed(seed)
    return VMDDPM(config).eval()


def test_forward_shape_and_finite(micro_config):
    model = make(dataclasses.replace(micro_config, in_channels=2))
    x, t = torch.randn(3, 2, 8, 8), torch.tensor([0, 500, 999])
    with torch.no_grad():
        eps = model(x, t)
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_each_sample_is_independent_of_its_batch(micro_config):
    model = make(micro_config)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 400, 900])
    with torch.no_grad():
        batched = model(x, t)
        single = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_output_depends_on_time_and_scan_order(micro_config):
    model = make(micro_config)
    other = make(dataclasses.replace(micro_config, scan_order="cross"))
    other.load_state_dict(model.state_dict())  # same weights, only the route tables differ
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        a, b = model(x, torch.tensor([10])), model(x, torch.tensor([900]))
        c = other(x, torch.tensor([10]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, c)


def test_model_exports_with_one_node_per_op(micro_config):
    model = make(micro_config)
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8), torch.tensor([1, 2])))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    n_ss2d = sum(isinstance(m, SS2D) for m in model.modules())
    assert n_ss2d > 0
    assert targets.count("vmddpm.selective_scan.default") == n_ss2d
    assert targets.count("vmddpm.cross_scan.default") == n_ss2d
    assert targets.count("vmddpm.cross_merge.default") == n_ss2d


def test_gradients_reach_every_parameter(micro_config):
    model = make(dataclasses.replace(micro_config, mlp_ratio=2.0)).train()
    loss = model(torch.randn(2, 1, 8, 8), torch.tensor([3, 700])).square().mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


# Parameter ranges are the specification of each preset: a change to a preset must be deliberate.
@pytest.mark.parametrize(
    "name,low,high", [("tiny", 2e6, 5e6), ("small", 10e6, 20e6), ("base", 30e6, 60e6), ("large", 60e6, 120e6)]
)
def test_preset_parameter_counts(name, low, high):
    with torch.device("meta"):
        model = VMDDPM(preset(name))
    assert low <= sum(p.numel() for p in model.parameters()) <= high


def test_preset_resolutions():
    assert {name: cfg.image_size for name, cfg in PRESETS.items()} == {"tiny": 32, "small": 64, "base": 128, "large": 256}


def test_config_round_trips_through_json_data():
    config = preset("small", scan_order="cross", mlp_ratio=4.0)
    import json

    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "data,message",
    [
        ({"colour": 3}, "unknown model config field"),
        ({"scan_order": "diagonal"}, "scan_order must be one of"),
        ({"image_size": 30, "channel_mult": [1, 2, 2]}, "not divisible"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_invalid_configs_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")
