"""The TensorRT plugin library compiles against the TensorRT 10 headers and exports what
IPluginRegistry::loadLibrary looks for (checked with ``nm -D`` / ``readelf -d``). The build itself
is the session fixture ``trt_plugin_build`` (warnings are errors); how the plugins behave is
tests/plugins/test_trt_adapter.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.plugins.cmake_build import REPO_ROOT, require_tools
from tests.plugins.conftest import require_nvcc, tensorrt_include_dir

# The session fixture compiles the plugins (about half a minute on two cores).
pytestmark = pytest.mark.slow

# IPluginRegistry::loadLibrary's entry points (TensorRT's plugin-shared-library convention).
LOAD_LIBRARY_ENTRY_POINTS = {"getCreators", "getPluginCreators", "setLoggerFinder"}


def dynamic_symbols(library: Path, which: str) -> dict[str, str]:
    """``nm -D --defined-only`` (which="defined") or ``--undefined-only``: {name: nm type letter}."""
    require_tools("nm")
    output = subprocess.run(["nm", "-D", f"--{which}-only", str(library)], check=True, capture_output=True, text=True).stdout
    symbols = {}
    for line in output.splitlines():
        *_, kind, name = line.split()
        symbols[name.split("@")[0]] = kind
    return symbols


def needed_libraries(library: Path) -> list[str]:
    require_tools("readelf")
    output = subprocess.run(["readelf", "-d", str(library)], check=True, capture_output=True, text=True).stdout
    return [line.split("[")[1].rstrip("]") for line in output.splitlines() if "(NEEDED)" in line]


def test_plugin_library_exports_exactly_the_load_library_entry_points(trt_plugin_build):
    defined = dynamic_symbols(trt_plugin_build.plugins, "defined")
    # Text symbols: functions. Nothing else escapes (the kernels' C ABI, cudart stay private).
    assert defined == {name: "T" for name in LOAD_LIBRARY_ENTRY_POINTS}


def test_plugin_library_needs_neither_tensorrt_nor_cuda_libraries(trt_plugin_build):
    """TensorRT loads it into any process (or beside a plan, alone): no libnvinfer, cudart linked
    statically, the kernels compiled in rather than taken from libvmddpm_ops."""
    needed = needed_libraries(trt_plugin_build.plugins)
    assert not [name for name in needed if any(part in name for part in ("nvinfer", "cudart", "vmddpm"))], needed
    undefined = dynamic_symbols(trt_plugin_build.plugins, "undefined")
    assert not {"getPluginRegistry", "getLogger", "createInferRuntime_INTERNAL"} & undefined.keys()


def test_plugin_library_builds_for_a100_and_h100_by_default(tmp_path):
    """Without CMAKE_CUDA_ARCHITECTURES the plugins carry sm_80 and sm_90 code (the session
    fixture builds one architecture only, to keep CI short); configure only."""
    require_tools("cmake")
    include_dir = tensorrt_include_dir()
    require_nvcc()
    command = ["cmake", "-S", str(REPO_ROOT / "plugins"), "-B", str(tmp_path), "-DVMDDPM_TENSORRT=ON", f"-DVMDDPM_TENSORRT_INCLUDE_DIR={include_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vmddpm TensorRT plugins: CUDA architectures 80;90" in result.stdout, result.stdout[-3000:]
