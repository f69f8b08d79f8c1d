"""`bench` on an export directory: onnxruntime rows beside the torch ones, and the checkpoint rule."""

from __future__ import annotations

import importlib.util
import json

import pytest

from typer.testing import CliRunner

from tests.runtime.conftest import corrupted_copy, orphaned_copy
from vmddpm_deploy.cli import app
from vmddpm_deploy.errors import ArtifactError, BackendUnavailableError, InvalidArgumentError

FAST = ["--batch-sizes", "1,2", "--iters", "2", "--warmup", "0", "--steps", "3"]


def test_bench_export_dir_times_onnxruntime_beside_torch(exported, tmp_path):
    _, export_dir = exported
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(export_dir), "--backends", "torch,onnxruntime", *FAST,
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["baseline"] == "torch"
    rows = payload["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", 1), ("onnxruntime", 1), ("torch", 2),
                                                          ("onnxruntime", 2)]
    for row in rows:
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["speedup_vs_torch"] > 0


def test_bench_export_dir_without_its_checkpoint(exported, tmp_path):
    moved = orphaned_copy(exported, tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(moved), "--backends", "torch,onnxruntime", *FAST])
    assert result.exit_code == InvalidArgumentError.exit_code
    assert "needs the checkpoint" in result.output and "--backends onnxruntime" in result.output
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(moved), *FAST, "--json", str(out)])  # default rows: what can run
    assert result.exit_code == 0, result.output
    assert {row["backend"] for row in json.loads(out.read_text())["rows"]} == {"onnxruntime"}


def test_bench_refuses_onnxruntime_on_a_checkpoint_and_a_corrupt_export(exported, tmp_path):
    ckpt, export_dir = exported
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(ckpt), "--backends", "onnxruntime", *FAST])
    assert result.exit_code == InvalidArgumentError.exit_code and "vmddpm-deploy export" in result.output
    broken = corrupted_copy(export_dir, tmp_path, "denoiser.portable.onnx", lambda data: b"truncated")
    result = runner.invoke(app, ["bench", str(broken), "--backends", "onnxruntime", *FAST])
    assert result.exit_code == ArtifactError.exit_code and "sha256" in result.output


def test_bench_tensorrt_rows_need_tensorrt(exported):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: tests/tensorrt/test_tensorrt_gpu.py times these rows")
    _, export_dir = exported
    result = CliRunner().invoke(app, ["bench", str(export_dir), "--backends", "torch,tensorrt-fp16-enqueue", *FAST])
    assert result.exit_code == BackendUnavailableError.exit_code, result.output
    assert "TensorRT" in result.output and "Traceback" not in result.output
