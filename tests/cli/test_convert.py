"""`vmddpm-deploy convert`: .pt -> safetensors -> diffusers directory -> back, and one line per bad input."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.cli.runner import error_line, invoke
from vmddpm_deploy.checkpoint import Checkpoint, init_checkpoint, is_safetensors_file, load_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule


@pytest.fixture
def pt_checkpoint(tmp_path, micro_config):
    base = init_checkpoint(micro_config, NoiseSchedule(kind="cosine"), seed=2)
    ema = {k: v + 0.5 for k, v in base.model.items()}
    return save_checkpoint(Checkpoint(base.config, base.schedule, base.model, ema), tmp_path / "old.pt")


def test_pt_to_safetensors_keeps_everything(tmp_path, pt_checkpoint):
    result = invoke("convert", pt_checkpoint, tmp_path / "new.safetensors")
    assert result.exit_code == 0, result.output
    assert is_safetensors_file(tmp_path / "new.safetensors")
    old, new = load_checkpoint(pt_checkpoint), load_checkpoint(tmp_path / "new.safetensors")
    assert (new.config, new.schedule) == (old.config, old.schedule)
    for group in ("model", "ema"):
        for key, value in getattr(old, group).items():
            assert torch.equal(getattr(new, group)[key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.safetensors", "old.pt"]


def test_to_diffusers_and_back(tmp_path, pt_checkpoint):
    pytest.importorskip("diffusers", reason="diffusers is the optional [diffusers] extra")
    result = invoke("convert", pt_checkpoint, tmp_path / "hf", "--to", "diffusers")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    back = invoke("convert", tmp_path / "hf", tmp_path / "back.safetensors")
    assert back.exit_code == 0, back.output
    old, new = load_checkpoint(pt_checkpoint), load_checkpoint(tmp_path / "back.safetensors")
    assert (new.config, new.schedule) == (old.config, old.schedule)
    assert new.ema is None and torch.equal(new.model["stem.weight"], old.ema["stem.weight"])  # the EMA weights


def test_existing_out_is_kept_without_force(tmp_path, pt_checkpoint):
    (tmp_path / "new.safetensors").write_bytes(b"keep me")
    result = invoke("convert", pt_checkpoint, tmp_path / "new.safetensors")
    assert result.exit_code == 5 and "already exists; pass --force" in error_line(result)
    assert (tmp_path / "new.safetensors").read_bytes() == b"keep me"
    forced = invoke("convert", pt_checkpoint, tmp_path / "new.safetensors", "--force")
    assert forced.exit_code == 0, forced.output
    assert load_checkpoint(tmp_path / "new.safetensors").config == load_checkpoint(pt_checkpoint).config


def test_a_bad_source_writes_nothing(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint" * 20)
    result = invoke("convert", tmp_path / "bad.pt", tmp_path / "out.safetensors")
    assert result.exit_code == 4 and "not a readable checkpoint" in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_a_pt_name_for_safetensors_is_refused(tmp_path, pt_checkpoint):
    result = invoke("convert", pt_checkpoint, tmp_path / "out.pt")
    assert result.exit_code == 2 and "give OUT a .safetensors name" in error_line(result)


def test_to_diffusers_without_diffusers_says_so(tmp_path, pt_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    result = invoke("convert", pt_checkpoint, tmp_path / "hf", "--to", "diffusers")
    assert result.exit_code == 9
    assert "convert --to diffusers needs diffusers, which is not installed" in error_line(result)
    assert not (tmp_path / "hf").exists()
