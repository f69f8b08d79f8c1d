"""The native kernel library ``libvmddpm_ops`` (the ABI of ``plugins/include/vmddpm/ops.h``):
where it is, loading it once, its ABI check, and what it can run.

The op wrappers over it are :mod:`vmddpm_deploy.ops.native`. The library is located and loaded
on first use, once per process:

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


def library() -> ctypes.CDLL:
    """The loaded library with typed ABI functions; raises NativeOpsError when unavailable."""
    loaded = _load()
    if loaded.library is None:
        raise NativeOpsError(loaded.error)
    return loaded.library


def library_path() -> Path | None:
    """The library file found (loaded or not), ``None`` when none was found."""
    return _load().path


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
    check_status(library().vmddpm_select_cpu_isa(name.encode()))


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


def check_status(status: int) -> None:
    """Raise the library's last error when an ABI call returned a non-zero ``status``."""
    if status != 0:
        raise NativeOpsError(library().vmddpm_last_error().decode() or f"status {status}")
