"""Checkpoints: round trip, EMA preference, and one clear error per kind of bad file."""

from __future__ import annotations


import pytest
import torch

from vmddpm_deploy.checkpoint import FORMAT, Checkpoint, build_model, init_checkpoint, load_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import CheckpointError, OutputError


@pytest.fixture
def checkpoint(micro_config) -> Checkpoint:
    return init_checkpoint(micro_config, NoiseSchedule(kind="cosine"), seed=3)


def test_round_trip(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
    loaded = load_checkpoint(path)
    assert loaded.config == checkpoint.config
    assert loaded.schedule == checkpoint.schedule
    assert loaded.ema is None
    for key, value in checkpoint.model.items():
        assert torch.equal(loaded.model[key], value)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_init_is_seeded_and_leaves_global_rng_alone(micro_config):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = init_checkpoint(micro_config, NoiseSchedule(), seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = init_checkpoint(micro_config, NoiseSchedule(), seed=1)
    c = init_checkpoint(micro_config, NoiseSchedule(), seed=2)
    key = "stem.weight"
    assert torch.equal(a.model[key], b.model[key]) and not torch.equal(a.model[key], c.model[key])


def test_ema_weights_are_used_for_inference(tmp_path, checkpoint, micro_config):
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in checkpoint.model.items()}
    path = save_checkpoint(Checkpoint(checkpoint.config, checkpoint.schedule, checkpoint.model, ema), tmp_path / "c.pt")
    model = build_model(load_checkpoint(path))
    assert torch.equal(model.state_dict()["stem.weight"], ema["stem.weight"])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_garbage_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_plain_state_dict_is_not_a_checkpoint(tmp_path, checkpoint):
    path = tmp_path / "weights.pt"
    torch.save(checkpoint.model, path)
    with pytest.raises(CheckpointError, match="no 'format' entry"):
        load_checkpoint(path)


def test_unknown_format_version(tmp_path, checkpoint):
    payload = checkpoint.to_payload() | {"format": "vmddpm-deploy/9"}
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="format 'vmddpm-deploy/9'"):
        load_checkpoint(tmp_path / "c.pt")


def test_weights_for_another_config_name_the_first_offending_key(tmp_path, checkpoint):
    weights = dict(checkpoint.model)
    weights["stem.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(checkpoint.to_payload() | {"model": weights}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"stem\.weight has shape \(3, 3, 3, 3\)"):
        load_checkpoint(tmp_path / "c.pt")
    del weights["stem.weight"]
    torch.save(checkpoint.to_payload() | {"model": weights}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"missing stem\.weight"):
        load_checkpoint(tmp_path / "c.pt")


def test_bad_config_inside_checkpoint(tmp_path, checkpoint):
    payload = checkpoint.to_payload()
    payload["config"] = payload["config"] | {"scan_order": "spiral"}
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="scan_order must be one of"):
        load_checkpoint(tmp_path / "c.pt")


def test_save_into_a_directory_path_fails_cleanly(tmp_path, checkpoint):
    with pytest.raises(OutputError, match="is a directory"):
        save_checkpoint(checkpoint, tmp_path)
