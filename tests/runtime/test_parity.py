"""`check`: the custom-node graphs (run by onnx's ReferenceEvaluator with our ops) and the portable
graph against torch fp32, and a failing row when the graphs come from other weights."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from tests.runtime.conftest import MICRO, corrupted_copy, orphaned_copy
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError, ParityError
from vmddpm_deploy.export.manifest import read_manifest
from vmddpm_deploy.runtime.onnx_reference_backend import OnnxReferenceDenoiser
from vmddpm_deploy.runtime.source import load_denoiser, open_source


def test_custom_node_graphs_match_torch(exported):
    ckpt, export_dir = exported
    manifest = read_manifest(export_dir)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 400, 998])
    expected = load_denoiser(open_source(ckpt), "torch")(x, t)
    fp32 = OnnxReferenceDenoiser(manifest.graph_path("fp32"))(x, t)
    torch.testing.assert_close(fp32, expected, rtol=0, atol=1e-4)
    fp16 = OnnxReferenceDenoiser(manifest.graph_path("fp16"))(x, t)
    torch.testing.assert_close(fp16, expected, rtol=3e-3, atol=5e-3)
    assert (fp16 - expected).abs().max() > 0  # really ran in fp16


def test_check_passes_and_writes_json(exported, tmp_path):
    _, export_dir = exported
    result = CliRunner().invoke(app, ["check", str(export_dir), "--json", str(tmp_path / "check.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "check.json").read_text())["rows"]
    assert [row["backend"] for row in rows] == ["onnxruntime", "reference-onnx", "reference-onnx-fp16"]
    assert all(row["passed"] for row in rows)
    assert rows[0]["max_abs"] < 1e-4
    # The verdict's own figure: each row's worst error in units of what its element allows (<= 1 passes),
    # shown in the table beside max rel, which can be large where eps is near 0 and the row still passes.
    assert all(0 < row["max_error_over_allowed"] <= 1 for row in rows)
    fp16 = rows[2]
    assert f"{fp16['max_error_over_allowed']:.2f}" in result.output and "max error / allowed" in result.output
    on_stdout = CliRunner().invoke(app, ["check", str(export_dir), "--backends", "onnxruntime", "--json", "-"])
    assert on_stdout.exit_code == 0 and json.loads(on_stdout.output)["rows"][0]["backend"] == "onnxruntime"


def test_check_fails_against_other_weights(exported, tmp_path):
    _, export_dir = exported
    other = save_checkpoint(init_checkpoint(MICRO, NoiseSchedule(), seed=99), tmp_path / "other.pt")
    result = CliRunner().invoke(app, ["check", str(export_dir), "--backends", "onnxruntime",
                                      "--checkpoint", str(other)])
    assert result.exit_code == ParityError.exit_code
    assert "disagree with torch fp32" in result.output and "Traceback" not in result.output


def test_plugin_version_mismatch_is_refused(exported, tmp_path):
    import onnx

    _, export_dir = exported
    model = onnx.load(read_manifest(export_dir).graph_path("fp32"))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "plugin_version":
                attribute.s = b"2"
    path = tmp_path / "v2.onnx"
    onnx.save(model, path)
    with pytest.raises(ArtifactError, match="plugin_version='2'"):
        OnnxReferenceDenoiser(path)(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long))


def test_check_names_the_torch_row_as_the_reference(exported, tmp_path):
    _, export_dir = exported
    result = CliRunner().invoke(app, ["check", str(export_dir), "--backends", "torch,reference-onnx", "--batch", "1",
                                      "--json", str(tmp_path / "check.json")])
    assert result.exit_code == 0, result.output
    assert "reference" in result.output
    torch_row, graph_row = json.loads((tmp_path / "check.json").read_text())["rows"]
    assert torch_row["backend"] == "torch" and torch_row["max_abs"] == 0
    assert graph_row["backend"] == "reference-onnx" and 0 < graph_row["max_abs"] < 1e-4


def test_check_needs_the_checkpoint_once_it_is_gone(exported, tmp_path):
    ckpt, _ = exported
    moved = orphaned_copy(exported, tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(moved), "--backends", "onnxruntime"])
    assert result.exit_code == InvalidArgumentError.exit_code
    assert "--checkpoint" in result.output and "gone.pt" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["check", str(moved), "--backends", "onnxruntime", "--checkpoint", str(ckpt)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args,code,phrase",
    [
        (["--backends", "onnxruntime,warp"], InvalidArgumentError.exit_code, "unknown backend 'warp'"),
        (["--batch", "0"], InvalidArgumentError.exit_code, "--batch must be at least 1"),
        (["--checkpoint", "{other_config}"], InvalidArgumentError.exit_code, "different model"),
    ],
)
def test_check_bad_arguments(exported, tmp_path, args, code, phrase):
    _, export_dir = exported
    other = save_checkpoint(init_checkpoint(replace(MICRO, base_channels=4), NoiseSchedule()), tmp_path / "o.pt")
    args = [arg.format(other_config=other) for arg in args]
    result = CliRunner().invoke(app, ["check", str(export_dir), *args])
    assert result.exit_code == code, result.output
    assert phrase in result.output and "Traceback" not in result.output


def test_check_refuses_a_corrupt_export(exported, tmp_path):
    _, export_dir = exported
    broken = corrupted_copy(export_dir, tmp_path, "denoiser.onnx", lambda data: data[:-4] + b"\x00\x00\x00\x00")
    result = CliRunner().invoke(app, ["check", str(broken)])
    assert result.exit_code == ArtifactError.exit_code
    assert "denoiser.onnx does not match its sha256" in result.output
