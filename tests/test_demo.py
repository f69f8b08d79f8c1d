"""`vmddpm-deploy demo` end to end on a micro checkpoint: samples, contact sheet, FID, timings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.evaluation.conftest import requires_extractor
from vmddpm_deploy import demo as demo_module
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_feature_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("VMDDPM_CACHE_DIR", str(tmp_path_factory.mktemp("fid-feature-cache")))


@pytest.fixture
def micro_checkpoint(tmp_path, micro_config):
    return save_checkpoint(init_checkpoint(micro_config, NoiseSchedule(), seed=0), tmp_path / "micro.pt")


@requires_extractor
def test_demo_on_a_micro_checkpoint(tmp_path, micro_checkpoint):
    out = tmp_path / "demo"
    args = ["demo", "--checkpoint", micro_checkpoint, "--out", out, "--n", 3, "--n-real", 4, "--steps", 2]
    result = runner.invoke(app, [str(a) for a in [*args, "--no-export"]])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "FID" in text and "contact sheet" in text and "export to ONNX" not in text
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape == (3, 1, 8, 8) and npz["images"].dtype == np.uint16
        np.testing.assert_array_equal(npz["indices"], [0, 1, 2])
    summary = json.loads((out / "demo.json").read_text())
    evaluation = summary["evaluation"]
    assert (evaluation["n_generated"], evaluation["n_real"], evaluation["real"]) == (3, 4, "bundled:heldout")
    assert math.isfinite(evaluation["fid"]) and evaluation["fid"] > 0 and math.isfinite(evaluation["kid"])
    assert summary["denoiser_calls"] == 2 and summary["backend"] == "torch"
    assert set(summary["seconds"]) == {"checkpoint", "sampling", "evaluation"}
    with Image.open(out / "contact_sheet.png") as sheet:
        # two panels of 2 x 2 tiles (3 generated, 3 of the 4 real shown), each tile 8 px scaled 16x
        assert sheet.mode == "RGB" and sheet.width > 2 * 2 * 128 and sheet.height > 2 * 128
        pixels = np.asarray(sheet)
    assert pixels.std() > 10  # images and text, not a blank canvas


@requires_extractor
def test_without_a_bundled_checkpoint_it_says_so_and_runs_untrained(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "DEMO_CHECKPOINT", tmp_path / "absent.pt")
    out = tmp_path / "demo"
    result = runner.invoke(
        app, ["demo", "--out", str(out), "--n", "2", "--n-real", "2", "--steps", "1", "--no-export"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no trained checkpoint is bundled" in text and "absent.pt is missing" in text
    assert (out / "untrained-tiny.safetensors").is_file()
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape == (2, 1, 32, 32)


def test_bad_arguments_are_one_line(tmp_path, micro_checkpoint):
    result = runner.invoke(app, ["demo", "--checkpoint", str(micro_checkpoint), "--out", str(tmp_path), "--n", "1"])
    assert result.exit_code == 2 and "--n must be at least 2" in result.output
    result = runner.invoke(app, ["demo", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 4 and "checkpoint not found" in result.output
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["demo", "--checkpoint", str(micro_checkpoint), "--out", str(tmp_path / "file")])
    assert result.exit_code == 5 and "not a directory" in result.output
