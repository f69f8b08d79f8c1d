"""The TensorRT plugin library built once per session against the TensorRT 10 headers.

No TensorRT runtime installs without a GPU, so these tests build against headers only: the
``kernel-lens`` wheel ships them, and ``make test`` unpacks it into build/tensorrt-headers/
(``VMDDPM_TENSORRT_INCLUDE_DIR`` points elsewhere). Without headers the tests skip and say so.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins.cmake_build import REPO_ROOT, cmake_build, require_tools

HEADERS_ENV_VAR = "VMDDPM_TENSORRT_INCLUDE_DIR"
FETCHED_HEADERS = REPO_ROOT / "build" / "tensorrt-headers" / "kernel_lens" / "include" / "tensorrt"


def tensorrt_include_dir() -> Path:
    """The TensorRT headers to build against; skips the calling test when there are none."""
    configured = os.environ.get(HEADERS_ENV_VAR, "").strip()
    directory = Path(configured) if configured else FETCHED_HEADERS
    if not (directory / "NvInferRuntime.h").is_file():
        source = f"{HEADERS_ENV_VAR}={configured}" if configured else str(directory)
        pytest.skip(
            f"TensorRT headers not found ({source} has no NvInferRuntime.h); `make test` fetches them "
            "(pip download --no-deps kernel-lens==2.0.1 into build/tensorrt-headers/)"
        )
    return directory


def require_nvcc() -> None:
    """The plugins carry CUDA kernels: skip unless CMake can find nvcc (PATH or CUDA's default home)."""
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("nvcc not found (PATH, /usr/local/cuda/bin): the TensorRT plugins cannot be compiled here")


@dataclass(frozen=True)
class PluginBuild:
    directory: Path

    @property
    def plugins(self) -> Path:
        """libvmddpm_trt_plugins.so: for IPluginRegistry::loadLibrary."""
        return self.directory / "tensorrt" / "libvmddpm_trt_plugins.so"

    @property
    def adapter_shim(self) -> Path:
        return self.directory / "tensorrt" / "libvmddpm_trt_adapter_shim.so"

    @property
    def failing_new(self) -> Path:
        """An operator new that fails on request (plugins/tensorrt/tests/failing_new.cpp), for LD_PRELOAD."""
        return self.directory / "tensorrt" / "libvmddpm_failing_new.so"


@pytest.fixture(scope="session")
def trt_plugin_build(tmp_path_factory) -> PluginBuild:
    """Configure plugins/ as a user does (``-DVMDDPM_TENSORRT=ON``), warnings as errors, and build
    only the TensorRT targets (the ops library is the package build's business)."""
    require_tools("cmake")
    include_dir = tensorrt_include_dir()
    require_nvcc()
    build = tmp_path_factory.mktemp("trt-plugins")
    cmake_build(
        REPO_ROOT / "plugins",
        build,
        {
            "VMDDPM_TENSORRT": "ON",
            "VMDDPM_TENSORRT_INCLUDE_DIR": str(include_dir),
            "VMDDPM_TRT_WERROR": "ON",
            "VMDDPM_TRT_ADAPTER_SHIM": "ON",
            # One architecture is enough to compile-check (the default builds two).
            "CMAKE_CUDA_ARCHITECTURES": "90",
        },
        targets=["vmddpm_trt_plugins", "vmddpm_trt_adapter_shim", "vmddpm_failing_new"],
    )
    return PluginBuild(build)
