"""`vmddpm-deploy build-engine` through CliRunner: every failure is one line and its exit code.

The build itself needs TensorRT and a GPU (tests/tensorrt/test_tensorrt_gpu.py); here the
export directory is hand-made and the TensorRT-free checks run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from tests.cli import runner as cli
from tests.cli.runner import error_line
from tests.host.artifacts import write_export_dir
from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export.manifest import read_manifest, write_manifest

no_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")


@pytest.fixture
def export_dir(tmp_path, micro_config):
    return write_export_dir(tmp_path / "export", init_checkpoint(micro_config, NoiseSchedule()), fp32_graph=b"graph")


def invoke(*args):
    return cli.invoke("build-engine", *args)


def test_help_reads_like_documentation():
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Example:" in text and "strongly typed" in text and "--timing-cache" in text


def test_missing_export_dir(tmp_path):
    result = invoke(tmp_path / "nope")
    assert result.exit_code == 8
    assert "export directory not found" in error_line(result)


def test_fp16_without_an_fp16_graph(export_dir):
    result = invoke(export_dir, "--fp16")
    assert result.exit_code == 8
    assert "has no fp16 graph (exported: fp32)" in error_line(result)


def test_corrupt_graph_is_caught_before_tensorrt(export_dir):
    (export_dir / "denoiser.onnx").write_bytes(b"truncated")
    result = invoke(export_dir)
    assert result.exit_code == 8
    assert "does not match its sha256" in error_line(result)


@pytest.mark.parametrize(
    "args,phrase",
    [(("--min-batch", 8, "--max-batch", 4), "need --min-batch <= --opt-batch <= --max-batch"),
     (("--min-batch", 0), "--min-batch must be a positive integer"),
     (("--workspace", 0), "--workspace must be a positive number of MiB")],
)
def test_bad_options(export_dir, args, phrase):
    result = invoke(export_dir, *args)
    assert result.exit_code == 2
    assert phrase in error_line(result)


def test_timing_cache_in_a_missing_directory(export_dir, tmp_path):
    result = invoke(export_dir, "--timing-cache", tmp_path / "nowhere" / "cache.bin")
    assert result.exit_code == 5
    assert "must be a file in an existing directory" in error_line(result)


def test_static_batch_graph(export_dir):
    manifest = read_manifest(export_dir)
    fixed = [dataclasses.replace(spec, shape=(4, *spec.shape[1:])) for spec in manifest.inputs + manifest.outputs]
    write_manifest(dataclasses.replace(manifest, inputs=tuple(fixed[:2]), outputs=tuple(fixed[2:])))
    result = invoke(export_dir)
    assert result.exit_code == 2
    assert "exported with a fixed batch of 4" in error_line(result)


@no_tensorrt
def test_without_tensorrt_one_line_says_how_to_install_it(export_dir):
    result = invoke(export_dir, "--max-batch", 16)
    assert result.exit_code == 9
    line = error_line(result)
    assert "TensorRT is not installed" in line and "vmddpm-deploy[tensorrt]" in line
    assert json.loads((export_dir / "manifest.json").read_text())["engines"] == {}  # nothing recorded
    assert sorted(p.name for p in export_dir.iterdir()) == ["denoiser.onnx", "manifest.json"]
