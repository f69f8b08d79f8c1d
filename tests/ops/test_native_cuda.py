"""The native CUDA kernels: compiled wherever nvcc exists, compared with the reference where a
GPU exists, and failing cleanly (a status and a message, no crash) where none does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from vmddpm_deploy.ops import dispatch, native, native_library
from vmddpm_deploy.ops.reference import cross_merge_ref, cross_scan_ref, selective_scan_ref
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES, SCAN_ORDERS

from .test_native import GRIDS, IO_DTYPES, TOLERANCES, scan_inputs

OPS_SOURCES = Path(__file__).resolve().parents[2] / "plugins" / "ops"

needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs an NVIDIA GPU; none on this machine"
)


@pytest.fixture
def cuda_kernels():
    """The native library, which must have been built with its CUDA kernels."""
    if not native_library.library().vmddpm_has_cuda():
        pytest.fail(
            f"{native_library.describe()['library']} has no CUDA kernels although a GPU is present: "
            "rebuild where nvcc is found (VMDDPM_CUDA=ON pip install -e .)"
        )
    return native


def on_gpu(tensors):
    return [t.cuda() for t in tensors]


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", IO_DTYPES, ids=str)
@pytest.mark.parametrize("delta_softplus", [True, False], ids=["softplus", "raw_dt"])
@pytest.mark.parametrize("length", [1, 7, 64, 1000])
@pytest.mark.parametrize("state", [1, 16, 40])
@pytest.mark.parametrize("channels", [4, 96])
@pytest.mark.parametrize("batch", [1, 3])
def test_selective_scan_cuda_matches_reference(
    cuda_kernels, batch, channels, state, length, delta_softplus, dtype
):
    inputs = scan_inputs(batch, channels, state, length, dtype, delta_softplus)
    actual = cuda_kernels.selective_scan(*on_gpu(inputs), delta_softplus=delta_softplus)
    expected = selective_scan_ref(*inputs, delta_softplus=delta_softplus)
    assert actual.is_cuda
    torch.testing.assert_close(actual.cpu(), expected, **TOLERANCES[dtype])


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", IO_DTYPES, ids=str)
@pytest.mark.parametrize("order", SCAN_ORDERS)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_cross_ops_cuda_match_reference(cuda_kernels, grid, order, dtype):
    height, width = grid
    x = torch.randn(3, 24, height, width).to(dtype)
    assert torch.equal(cuda_kernels.cross_scan(x.cuda(), order).cpu(), cross_scan_ref(x, order))
    ys = torch.randn(3, NUM_ROUTES, 24, height * width).to(dtype)
    torch.testing.assert_close(
        cuda_kernels.cross_merge(ys.cuda(), height, width, order).cpu(),
        cross_merge_ref(ys, height, width, order),
        **TOLERANCES[dtype],
    )


@needs_gpu
@pytest.mark.cuda
def test_cuda_kernels_run_on_the_current_stream(cuda_kernels):
    inputs = scan_inputs(2, 96, 16, 300, torch.float16, True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        actual = cuda_kernels.selective_scan(*on_gpu(inputs))
    stream.synchronize()
    torch.testing.assert_close(
        actual.cpu(), selective_scan_ref(*inputs), **TOLERANCES[torch.float16]
    )


@needs_gpu
@pytest.mark.cuda
def test_auto_dispatch_runs_native_on_cuda_tensors(cuda_kernels, monkeypatch):
    monkeypatch.delenv("VMDDPM_OPS", raising=False)
    assert dispatch.kernels_for(torch.zeros(1, device="cuda")) is dispatch.NATIVE


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_cuda_entry_points_fail_cleanly_without_a_gpu():
    lib = native_library.library()
    fake = 256  # non-null, aligned: never dereferenced because no kernel can launch
    status = lib.vmddpm_selective_scan_cuda(*[fake] * 8, 1, 4, 4, 16, 10, 0, 1, None)
    assert status != 0
    message = lib.vmddpm_last_error().decode()
    if lib.vmddpm_has_cuda():
        assert status == 3 and "selective_scan_cuda: CUDA error" in message
    else:
        assert status == 2 and "built without CUDA kernels" in message
    status = lib.vmddpm_cross_merge_cuda(fake, fake, fake, fake, 1, 4, 3, 3, 4, 1, None)
    assert status != 0 and lib.vmddpm_last_error().decode().startswith("cross_merge_cuda")


def test_cuda_argument_checks_run_before_any_launch():
    lib = native_library.library()
    if not lib.vmddpm_has_cuda():
        pytest.skip("this library was built without CUDA kernels")
    assert lib.vmddpm_selective_scan_cuda(None, *[256] * 7, 1, 4, 4, 16, 10, 0, 1, None) == 1
    assert "u is a null pointer" in lib.vmddpm_last_error().decode()
    assert lib.vmddpm_cross_scan_cuda(256, 256, 256, 1, 4, 3, 3, 4, 5, None) == 1
    assert "unknown dtype 5" in lib.vmddpm_last_error().decode()
    assert lib.vmddpm_cross_merge_cuda_workspace_bytes(4, 9) == 4 * 9 * 4
    assert lib.vmddpm_cross_merge_cuda_workspace_bytes(0, 9) == -1
    assert "must be positive" in lib.vmddpm_last_error().decode()


def test_cuda_sources_compile_with_nvcc(tmp_path):
    """A broken kernel fails CI even though CI has no GPU: compile every .cu for one arch."""
    nvcc = shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH; the CUDA kernels cannot be compile-checked here")
    arch = os.environ.get("VMDDPM_TEST_CUDA_ARCH", "80")
    sources = sorted((OPS_SOURCES / "cuda").glob("*.cu"))
    assert sources, "no CUDA sources found"

    def compile_one(source: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                nvcc,
                "-std=c++17",
                f"-arch=sm_{arch}",
                "-Werror",
                "all-warnings",
                "-I",
                str(OPS_SOURCES / "include"),
                "-c",
                str(source),
                "-o",
                str(tmp_path / f"{source.stem}.o"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        results = list(pool.map(compile_one, sources))
    failures = [
        f"{source.name}:\n{result.stderr}"
        for source, result in zip(sources, results, strict=True)
        if result.returncode
    ]
    assert not failures, "\n".join(failures)



@pytest.mark.slow
def test_a_build_tree_configured_without_nvcc_finds_it_later(tmp_path):
    """CMake's check_language caches a missing nvcc; the ops library forgets that answer, so a
    build tree first configured where nvcc was not found gets the CUDA kernels once it is."""
    nvcc = shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")
    if nvcc is None or shutil.which("cmake") is None:
        pytest.skip("needs cmake and nvcc")
    cmake = shutil.which("cmake")
    configure = ["cmake", "-S", str(OPS_SOURCES.parent), "-B", str(tmp_path / "build"), "-DCMAKE_CUDA_ARCHITECTURES=90"]
    without_nvcc = {key: value for key, value in os.environ.items() if key != "CUDACXX"}
    without_nvcc["PATH"] = str(Path(cmake).parent)
    first = subprocess.run(configure, env=without_nvcc, capture_output=True, text=True, timeout=300)
    if "no CUDA compiler found" not in first.stdout:
        pytest.skip(f"CMake finds a CUDA compiler even without nvcc on PATH here: {first.stdout[-300:]}")
    with_nvcc = {**without_nvcc, "PATH": f"{Path(nvcc).parent}:{os.environ['PATH']}"}
    again = subprocess.run(configure, env=with_nvcc, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "vmddpm_ops: CUDA kernels for architectures 90" in again.stdout, again.stdout[-3000:]
