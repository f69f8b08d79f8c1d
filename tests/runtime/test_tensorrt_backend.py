"""The tensorrt backend's checks that need no TensorRT: what it accepts and the one-line errors.

Running engines is tested in tests/tensorrt/test_tensorrt_gpu.py (needs TensorRT and a GPU).
"""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from tests.host.artifacts import write_export_dir
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import BackendUnavailableError, InvalidArgumentError
from vmddpm_deploy.runtime.tensorrt_backend import load_tensorrt_denoiser


def test_a_checkpoint_is_not_a_tensorrt_source(tmp_path, micro_config):
    checkpoint = save_checkpoint(init_checkpoint(micro_config, NoiseSchedule()), tmp_path / "micro.pt")
    with pytest.raises(InvalidArgumentError, match="runs an export directory or a .plan file") as info:
        load_tensorrt_denoiser(checkpoint)
    assert "vmddpm-deploy export" in str(info.value) and "vmddpm-deploy build-engine" in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
@pytest.mark.parametrize("target", ["export", "export/denoiser.fp32.b1-32.trt10.14.sm90.plan"])
def test_without_tensorrt_the_error_says_how_to_install_it(tmp_path, micro_config, target):
    write_export_dir(tmp_path / "export", init_checkpoint(micro_config, NoiseSchedule()))
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed .*vmddpm-deploy\[tensorrt\]"):
        load_tensorrt_denoiser(tmp_path / target)


def _sample(*args):
    return CliRunner().invoke(app, ["sample", *(str(a) for a in args), "--n", "2", "--steps", "2"])


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.output!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_sample_with_the_tensorrt_backend_without_tensorrt(tmp_path, micro_config):
    export_dir = write_export_dir(tmp_path / "export", init_checkpoint(micro_config, NoiseSchedule()))
    result = _sample(export_dir, "--backend", "tensorrt", "--out", tmp_path / "out")
    assert result.exit_code == 9
    assert "TensorRT is not installed" in _error_line(result)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.png"))


def test_sample_with_the_tensorrt_backend_from_a_checkpoint(tmp_path, micro_config):
    checkpoint = save_checkpoint(init_checkpoint(micro_config, NoiseSchedule()), tmp_path / "micro.pt")
    result = _sample(checkpoint, "--backend", "tensorrt", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "the tensorrt backend runs an export directory" in _error_line(result)
