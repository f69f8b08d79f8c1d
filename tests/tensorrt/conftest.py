"""Fixtures for the TensorRT tests: a hand-made export directory (no exporter needed) and, for
``@pytest.mark.tensorrt`` tests, a check that TensorRT, a GPU and the plugin library are here."""

from __future__ import annotations

import importlib.util

import pytest

from tests.host.artifacts import write_export_dir
from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import BackendUnavailableError


@pytest.fixture
def export_dir(tmp_path, micro_config):
    """An export directory listing an fp32 graph (placeholder bytes: the TensorRT-free checks never parse it)."""
    checkpoint = init_checkpoint(micro_config, NoiseSchedule(), seed=0)
    return write_export_dir(tmp_path / "export", checkpoint, fp32_graph=b"placeholder graph")


def tensorrt_missing_reason() -> str | None:
    """Why the TensorRT tests cannot run here, or None when they can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'vmddpm-deploy[tensorrt]' on a machine with an NVIDIA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and PyTorch sees none"
    from vmddpm_deploy.tensorrt.plugin_library import find_plugin_library

    try:
        find_plugin_library()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def tensorrt_ready() -> None:
    reason = tensorrt_missing_reason()
    if reason is not None:
        pytest.skip(reason)
