"""Builds vmddpm_host (plugins/host) once per test session and runs it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.plugins.cmake_build import REPO_ROOT, cmake_build, require_tools

HOST_SOURCE = REPO_ROOT / "plugins" / "host"


class Host:
    """The built programs: ``run("sample", "--n", 4, ...)`` -> CompletedProcess (text)."""

    def __init__(self, build: Path):
        self.build = build
        self.binary = build / "vmddpm_host"
        self.json_roundtrip = build / "json_roundtrip"

    def run(self, *args, program: Path | None = None) -> subprocess.CompletedProcess:
        command = [str(program or self.binary), *(str(arg) for arg in args)]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> Host:
    require_tools("cmake")
    build = tmp_path_factory.mktemp("vmddpm_host_build")
    cmake_build(HOST_SOURCE, build, {"VMDDPM_HOST_TESTS": "ON", "CMAKE_BUILD_TYPE": "Release"})
    return Host(build)


def tensorrt_include_dir() -> Path | None:
    """TensorRT's headers: $VMDDPM_TENSORRT_INCLUDE_DIR, else build/tensorrt-headers/ (where `make
    test` unpacks the kernel-lens wheel's copy, plugins/tensorrt/CMakeLists.txt), else kernel_lens."""
    explicit = os.environ.get("VMDDPM_TENSORRT_INCLUDE_DIR", "").strip()
    candidates = [Path(explicit)] if explicit else []
    unpacked = REPO_ROOT / "build" / "tensorrt-headers"
    candidates += [unpacked, unpacked / "kernel_lens" / "include" / "tensorrt"]
    spec = importlib.util.find_spec("kernel_lens")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location) / "include" / "tensorrt" for location in spec.submodule_search_locations]
    return next((path for path in candidates if (path / "NvInferRuntime.h").is_file()), None)


def cuda_toolkit_found() -> bool:
    """Whether CMake's FindCUDAToolkit will find the CUDA headers (nvcc on PATH or /usr/local/cuda)."""
    return shutil.which("nvcc") is not None or Path("/usr/local/cuda/include/cuda_runtime_api.h").is_file()
