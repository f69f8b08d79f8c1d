"""vmddpm_host's TensorRT denoiser: compiled against TensorRT's headers wherever they are (the
kernel-lens wheel ships them), and run end to end where TensorRT, its library and a GPU are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.host.conftest import (
    HOST_SOURCE,
    Host,
    cuda_toolkit_found,
    tensorrt_include_dir,
)
from tests.plugins.cmake_build import cmake_build, require_tools
from tests.tensorrt.conftest import tensorrt_missing_reason


def _configure_with_tensorrt(build: Path, include_dir: Path, lib_dir: Path | None = None) -> None:
    definitions = {"VMDDPM_HOST_TENSORRT_INCLUDE_DIR": str(include_dir)}
    if lib_dir is not None:
        definitions["VMDDPM_HOST_TENSORRT_LIB_DIR"] = str(lib_dir)
    cmake_build(HOST_SOURCE, build, definitions)


def test_tensorrt_denoiser_compiles_against_the_tensorrt_headers(tmp_path):
    require_tools("cmake")
    include_dir = tensorrt_include_dir()
    if include_dir is None:
        pytest.skip("TensorRT headers not found (set VMDDPM_TENSORRT_INCLUDE_DIR or install kernel-lens==2.0.1)")
    if not cuda_toolkit_found():
        pytest.skip("the CUDA toolkit's headers are not found (the TensorRT headers include cuda_runtime_api.h)")
    _configure_with_tensorrt(tmp_path, include_dir)
    objects = list(tmp_path.rglob("tensorrt_denoiser.cpp.o"))
    assert objects and objects[0].stat().st_size > 0


def _tensorrt_lib_dir() -> Path | None:
    explicit = os.environ.get("VMDDPM_TENSORRT_LIB_DIR", "").strip()
    if explicit:
        return Path(explicit)
    try:
        import tensorrt_libs  # the pip wheel's libnvinfer
    except ImportError:
        return None
    return Path(tensorrt_libs.__file__).parent


@pytest.mark.tensorrt
def test_host_samples_with_an_engine_like_python(tmp_path):
    reason = tensorrt_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
    from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
    from vmddpm_deploy.export import export_checkpoint
    from vmddpm_deploy.model import preset
    from vmddpm_deploy.runtime.tensorrt_backend import load_tensorrt_denoiser
    from vmddpm_deploy.generation import generate
    from vmddpm_deploy.tensorrt import BatchRange, EngineBuilder, EngineSettings

    include_dir, lib_dir = tensorrt_include_dir(), _tensorrt_lib_dir()
    if include_dir is None or lib_dir is None:
        pytest.skip("TensorRT headers or libnvinfer not found (VMDDPM_TENSORRT_INCLUDE_DIR / VMDDPM_TENSORRT_LIB_DIR)")
    build = tmp_path / "build"
    _configure_with_tensorrt(build, include_dir, lib_dir)

    checkpoint = init_checkpoint(preset("tiny"), NoiseSchedule(), seed=0)
    export_dir = tmp_path / "export"
    export_checkpoint(save_checkpoint(checkpoint, tmp_path / "tiny.pt"), export_dir, dtypes=("fp32",), ops=("plugin",))
    plan = EngineBuilder(export_dir, EngineSettings("fp32", BatchRange(1, 4, 4))).build().path

    result = Host(build).run("sample", "--export-dir", export_dir, "--engine", plan.name, "--n", 6, "--batch-size", 4,
                             "--steps", 8, "--seed", 3, "--out", tmp_path / "out", "--npy", tmp_path / "x0.npy")
    assert result.returncode == 0, result.stderr
    sampler = make_sampler("ddim", checkpoint.schedule, 8)
    expected = torch.cat([x0 for _, x0 in generate(load_tensorrt_denoiser(plan), sampler, 3, range(6), (1, 32, 32), 4, "cuda")])
    # Same engine, same noise; the loops differ only in where the DDIM arithmetic runs (CPU vs GPU).
    np.testing.assert_allclose(np.load(tmp_path / "x0.npy"), expected.cpu().numpy(), rtol=1e-4, atol=1e-4)
    assert len(list((tmp_path / "out").glob("*.png"))) == 6
