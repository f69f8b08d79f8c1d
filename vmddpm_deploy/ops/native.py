"""ctypes binding of the native kernels: ``libvmddpm_ops`` behind ``plugins/ops/include/vmddpm/ops.h``.

The functions here have the signatures of :mod:`vmddpm_deploy.ops.reference` and run the
op contract on CPU tensors (C++/OpenMP kernels) and, when the library was compiled with CUDA,
on CUDA tensors. The library is located and loaded on first use, once per process:

1. ``VMDDPM_OPS_LIB`` (a path to the library): only that file is tried.
2. ``vmddpm_deploy/_native/`` in each directory of the package's ``__path__``: where wheels and
   editable installs (whose ``__path__`` also lists the CMake install tree) put it.
3. ``build/`` at the repository root: a standalone ``cmake -S plugins -B build`` build.

``VMDDPM_CPU_ISA`` (``auto``, ``avx512``, ``avx2``, ``baseline``) picks the CPU instruction set
the selective scan runs with; by default the widest the CPU has.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import vmddpm_deploy
from vmddpm_deploy.errors import NativeOpsError
from vmddpm_deploy.ops.reference import selective_scan_bwd_ref
from vmddpm_deploy.ops.scan_orders import scan_table

#: The ``VMDDPM_ABI_VERSION`` this binding is written against.
ABI_VERSION = 2

#: io dtypes the kernels take, with their ``vmddpm_dtype`` codes.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

if sys.platform == "win32":
    LIBRARY_FILENAME = "vmddpm_ops.dll"
elif sys.platform == "darwin":
    LIBRARY_FILENAME = "libvmddpm_ops.dylib"
else:
    LIBRARY_FILENAME = "libvmddpm_ops.so"

_i64 = ctypes.c_int64
_int = ctypes.c_int
_ptr = ctypes.c_void_p
# Argument types of each ABI function, so ctypes converts and checks every call.
_SIGNATURES = {
    "vmddpm_abi_version": (_int, []),
    "vmddpm_last_error": (ctypes.c_char_p, []),
    "vmddpm_has_cuda": (_int, []),
    "vmddpm_build_info": (ctypes.c_char_p, []),
    "vmddpm_cpu_isa": (ctypes.c_char_p, []),
    "vmddpm_select_cpu_isa": (_int, [ctypes.c_char_p]),
    "vmddpm_selective_scan_cpu": (_int, [_ptr] * 8 + [_i64] * 5 + [_int, _int]),
    "vmddpm_selective_scan_bwd_cpu": (_int, [_ptr] * 15 + [_i64] * 5 + [_int]),
    "vmddpm_cross_scan_cpu": (_int, [_ptr] * 3 + [_i64] * 5 + [_int]),
    "vmddpm_cross_merge_cpu": (_int, [_ptr] * 3 + [_i64] * 5 + [_int]),
    "vmddpm_selective_scan_cuda": (_int, [_ptr] * 8 + [_i64] * 5 + [_int, _int, _ptr]),
    "vmddpm_cross_scan_cuda": (_int, [_ptr] * 3 + [_i64] * 5 + [_int, _ptr]),
    "vmddpm_cross_merge_cuda_workspace_bytes": (_i64, [_i64, _i64]),
    "vmddpm_cross_merge_cuda": (_int, [_ptr] * 4 + [_i64] * 5 + [_int, _ptr]),
}


@dataclass(frozen=True)
class _Loaded:
    """Outcome of the one load attempt: the library, or why there is none."""

    library: ctypes.CDLL | None
    path: Path | None
    error: str | None


def library_candidates() -> list[Path]:
    """Where the library is looked for, in order (see the module docstring)."""
    explicit = os.environ.get("VMDDPM_OPS_LIB", "").strip()
    if explicit:
        return [Path(explicit)]
    package_dirs = [Path(entry) for entry in vmddpm_deploy.__path__]
    candidates = [directory / "_native" / LIBRARY_FILENAME for directory in package_dirs]
    candidates.append(
        Path(vmddpm_deploy.__file__).resolve().parents[1] / "build" / LIBRARY_FILENAME
    )
    return candidates


def _open(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    missing = [name for name in _SIGNATURES if not hasattr(library, name)]
    if missing:
        raise NativeOpsError(f"{path} lacks {', '.join(missing)}: not a vmddpm_ops library")
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    version = library.vmddpm_abi_version()
    if version != ABI_VERSION:
        raise NativeOpsError(
            f"{path} has ABI version {version}, this vmddpm_deploy needs {ABI_VERSION}; "
            "rebuild it (pip install -e .)"
        )
    isa = os.environ.get("VMDDPM_CPU_ISA", "").strip()
    if isa and library.vmddpm_select_cpu_isa(isa.encode()) != 0:
        raise NativeOpsError(f"VMDDPM_CPU_ISA={isa}: {library.vmddpm_last_error().decode()}")
    return library


@functools.lru_cache(maxsize=1)
def _load() -> _Loaded:
    tried = []
    for path in library_candidates():
        if not path.is_file():
            tried.append(str(path))
            continue
        try:
            return _Loaded(_open(path), path, None)
        except (OSError, NativeOpsError) as error:
            return _Loaded(None, path, f"{path} could not be loaded: {error}")
    return _Loaded(
        None,
        None,
        "the native kernel library is not built (looked for "
        + ", ".join(tried)
        + "); build it with `pip install -e .` or set VMDDPM_OPS_LIB",
    )


def reset() -> None:
    """Forget the loaded library so the next call looks again (after changing the env vars)."""
    _load.cache_clear()
    _device_table.cache_clear()


def library() -> ctypes.CDLL:
    """The loaded library with typed ABI functions; raises NativeOpsError when unavailable."""
    loaded = _load()
    if loaded.library is None:
        raise NativeOpsError(loaded.error)
    return loaded.library


def available() -> bool:
    """Whether the library is built and loads."""
    return _load().library is not None


def cuda_available() -> bool:
    """Whether CUDA tensors can run natively: a CUDA build of the library and a visible GPU."""
    return available() and bool(library().vmddpm_has_cuda()) and torch.cuda.is_available()


def unsupported_reason(tensor: torch.Tensor) -> str | None:
    """Why the native kernels cannot take ``tensor`` (``None`` when they can)."""
    loaded = _load()
    if loaded.library is None:
        return loaded.error
    if tensor.dtype not in DTYPE_CODES:
        return f"native kernels take float32/float16/bfloat16 tensors, not {tensor.dtype}"
    if tensor.device.type == "cpu":
        return None
    if tensor.device.type == "cuda":
        if not loaded.library.vmddpm_has_cuda():
            return f"{loaded.path} was built without CUDA kernels (no nvcc at build time)"
        return None
    return f"native kernels run on cpu and cuda tensors, not {tensor.device.type}"


def select_cpu_isa(name: str) -> None:
    """Run the CPU selective scan with ``name`` (``auto``, ``avx512``, ``avx2``, ``baseline``)."""
    _check(library().vmddpm_select_cpu_isa(name.encode()))


def describe() -> dict:
    """What is built and loaded, for diagnostics (``vmddpm-deploy doctor``)."""
    loaded = _load()
    report: dict = {
        "library": str(loaded.path) if loaded.path else None,
        "loaded": loaded.library is not None,
        "error": loaded.error,
        "abi_version_expected": ABI_VERSION,
    }
    if loaded.library is None:
        return report
    build = dict(
        item.split("=", 1) for item in loaded.library.vmddpm_build_info().decode().split(";")
    )
    report.update(
        abi_version=loaded.library.vmddpm_abi_version(),
        cpu_isas_built=build["cpu_isas"].split(","),
        cpu_isa=loaded.library.vmddpm_cpu_isa().decode(),
        openmp=build["openmp"] == "1",
        cuda_built=build["cuda"] == "1",
        cuda_archs=[arch for arch in build["cuda_archs"].split(",") if arch],
        cuda_device_visible=torch.cuda.is_available(),
        devices=["cpu", "cuda"] if cuda_available() else ["cpu"],
    )
    return report


def _check(status: int) -> None:
    if status != 0:
        raise NativeOpsError(library().vmddpm_last_error().decode() or f"status {status}")


def _io_dtype_code(op: str, tensors: dict[str, torch.Tensor]) -> int:
    dtypes = {tensor.dtype for tensor in tensors.values()}
    if len(dtypes) != 1:
        listed = ", ".join(f"{name}={tensor.dtype}" for name, tensor in tensors.items())
        raise NativeOpsError(f"{op}: io tensors must share one dtype, got {listed}")
    dtype = dtypes.pop()
    if dtype not in DTYPE_CODES:
        raise NativeOpsError(f"{op}: native kernels take float32/float16/bfloat16, not {dtype}")
    return DTYPE_CODES[dtype]


def _common_device(op: str, tensors: dict[str, torch.Tensor]) -> torch.device:
    devices = {tensor.device for tensor in tensors.values()}
    if len(devices) != 1:
        listed = ", ".join(f"{name} on {tensor.device}" for name, tensor in tensors.items())
        raise NativeOpsError(f"{op}: tensors must be on one device, got {listed}")
    device = devices.pop()
    if device.type not in ("cpu", "cuda"):
        raise NativeOpsError(f"{op}: native kernels run on cpu and cuda, not {device.type}")
    if device.type == "cuda" and not library().vmddpm_has_cuda():
        raise NativeOpsError(f"{op}: {_load().path} was built without CUDA kernels")
    return device


def _expect_shape(op: str, name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise NativeOpsError(f"{op}: {name} has shape {tuple(tensor.shape)}, expected {shape}")


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


@functools.lru_cache(maxsize=64)
def _device_table(order: str, height: int, width: int, device: torch.device) -> torch.Tensor:
    table = scan_table(order, height, width)
    # The CUDA cross_merge inverts each row, which is only right for permutations.
    expected = torch.arange(height * width, dtype=table.dtype).expand_as(table)
    if not torch.equal(table.sort(dim=1).values, expected):
        raise NativeOpsError(f"scan order {order!r} has a row that is not a permutation")
    return table.to(device)


def _scan_sizes(op: str, u, delta, A, B, C, D, delta_bias) -> tuple[int, int, int, int, int]:
    """``(batch, channels, routes, state, length)`` of selective-scan inputs, checked against each other."""
    if u.dim() != 3 or B.dim() != 4:
        raise NativeOpsError(f"{op}: u must be (batch, K*D, L) and B (batch, K, N, L)")
    batch, channels, length = u.shape
    routes, state = B.shape[1], B.shape[2]
    _expect_shape(op, "delta", delta, (batch, channels, length))
    _expect_shape(op, "A", A, (channels, state))
    _expect_shape(op, "B", B, (batch, routes, state, length))
    _expect_shape(op, "C", C, (batch, routes, state, length))
    _expect_shape(op, "D", D, (channels,))
    _expect_shape(op, "delta_bias", delta_bias, (channels,))
    if routes == 0 or channels % routes:
        raise NativeOpsError(f"{op}: K*D={channels} is not a multiple of K={routes}")
    return batch, channels, routes, state, length


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    delta_softplus: bool = True,
) -> torch.Tensor:
    """Native S6 selective scan; same contract as ``selective_scan_ref``."""
    op = "selective_scan"
    io = {"u": u, "delta": delta, "B": B, "C": C}
    dtype_code = _io_dtype_code(op, io)
    device = _common_device(op, {**io, "A": A, "D": D, "delta_bias": delta_bias})
    batch, channels, routes, state, length = _scan_sizes(op, u, delta, A, B, C, D, delta_bias)
    if u.numel() == 0:
        return torch.empty_like(u, memory_format=torch.contiguous_format)
    if state == 0:  # no state: the sum over it is empty and y is the skip term alone
        return (D.float()[None, :, None] * u.float()).to(u.dtype)

    # Kernels read dense row-major buffers; A, D, delta_bias are fp32 by contract.
    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    A, D, delta_bias = (t.to(torch.float32).contiguous() for t in (A, D, delta_bias))
    y = torch.empty_like(u)
    pointers = [t.data_ptr() for t in (u, delta, A, B, C, D, delta_bias, y)]
    sizes = (batch, channels, routes, state, length)
    lib = library()
    if device.type == "cpu":
        status = lib.vmddpm_selective_scan_cpu(*pointers, *sizes, dtype_code, int(delta_softplus))
    else:
        with torch.cuda.device(device):
            status = lib.vmddpm_selective_scan_cuda(
                *pointers, *sizes, dtype_code, int(delta_softplus), _stream(device)
            )
    _check(status)
    return y


def selective_scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    dy: torch.Tensor,
    delta_softplus: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Native CPU gradients of the selective scan; same contract as ``selective_scan_bwd_ref``.

    dy: (batch, K*D, L) -> ``(du, ddelta, dA, dB, dC, dD, ddelta_bias)``, each shaped and typed
    like the input it differentiates. The kernel works in fp32: fp16/bf16 io is widened here and
    the gradients rounded back. CUDA tensors are refused (no native backward there yet).
    """
    op = "selective_scan_bwd"
    inputs = (u, delta, A, B, C, D, delta_bias)
    device = _common_device(op, {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D,
                                 "delta_bias": delta_bias, "dy": dy})
    if device.type != "cpu":
        raise NativeOpsError(f"{op}: the native backward runs on cpu tensors only, not {device.type}")
    batch, channels, routes, state, length = _scan_sizes(op, *inputs)
    _expect_shape(op, "dy", dy, (batch, channels, length))
    if u.numel() == 0 or state == 0:  # shapes the kernel does not take; trivial for the reference
        return selective_scan_bwd_ref(*inputs, dy, delta_softplus)

    fp32 = [t.to(torch.float32).contiguous() for t in (*inputs, dy)]
    grads = [torch.empty_like(t) for t in fp32[:7]]
    pointers = [t.data_ptr() for t in (*fp32, *grads)]
    _check(library().vmddpm_selective_scan_bwd_cpu(
        *pointers, batch, channels, routes, state, length, int(delta_softplus)
    ))
    return tuple(g.to(t.dtype) for g, t in zip(grads, inputs, strict=True))


def cross_scan(x: torch.Tensor, order: str) -> torch.Tensor:
    """Native gather into K routes; same contract as ``cross_scan_ref``."""
    op = "cross_scan"
    dtype_code = _io_dtype_code(op, {"x": x})
    device = _common_device(op, {"x": x})
    if x.dim() != 4:
        raise NativeOpsError(f"{op}: x must be (batch, D, H, W), got shape {tuple(x.shape)}")
    batch, dim, height, width = x.shape
    table = scan_table(order, height, width)
    routes = table.shape[0]
    out = x.new_empty(batch, routes, dim, height * width)
    if out.numel() == 0:
        return out
    x = x.contiguous()
    sizes = (batch, dim, height, width, routes)
    lib = library()
    if device.type == "cpu":
        status = lib.vmddpm_cross_scan_cpu(
            x.data_ptr(), table.data_ptr(), out.data_ptr(), *sizes, dtype_code
        )
    else:
        table = _device_table(order, height, width, device)
        with torch.cuda.device(device):
            status = lib.vmddpm_cross_scan_cuda(
                x.data_ptr(), table.data_ptr(), out.data_ptr(), *sizes, dtype_code, _stream(device)
            )
    _check(status)
    return out


def cross_merge(ys: torch.Tensor, height: int, width: int, order: str) -> torch.Tensor:
    """Native scatter-add of K routes onto the grid; same contract as ``cross_merge_ref``."""
    op = "cross_merge"
    dtype_code = _io_dtype_code(op, {"ys": ys})
    device = _common_device(op, {"ys": ys})
    table = scan_table(order, height, width)
    routes = table.shape[0]
    if ys.dim() != 4:
        raise NativeOpsError(f"{op}: ys must be (batch, K, D, H*W), got shape {tuple(ys.shape)}")
    batch, _, dim, _ = ys.shape
    _expect_shape(op, "ys", ys, (batch, routes, dim, height * width))
    out = ys.new_empty(batch, dim, height, width)
    if out.numel() == 0:
        return out
    ys = ys.contiguous()
    sizes = (batch, dim, height, width, routes)
    lib = library()
    if device.type == "cpu":
        status = lib.vmddpm_cross_merge_cpu(
            ys.data_ptr(), table.data_ptr(), out.data_ptr(), *sizes, dtype_code
        )
    else:
        table = _device_table(order, height, width, device)
        workspace_bytes = lib.vmddpm_cross_merge_cuda_workspace_bytes(routes, height * width)
        if workspace_bytes < 0:
            raise NativeOpsError(lib.vmddpm_last_error().decode())
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device)
        with torch.cuda.device(device):
            status = lib.vmddpm_cross_merge_cuda(
                ys.data_ptr(),
                table.data_ptr(),
                out.data_ptr(),
                workspace.data_ptr(),
                *sizes,
                dtype_code,
                _stream(device),
            )
    _check(status)
    return out
