"""Which kernels run an op call: native when built for the tensor's device, else reference.

The one place that chooses between :mod:`vmddpm_deploy.ops.native` and
:mod:`vmddpm_deploy.ops.reference`. ``VMDDPM_OPS=reference`` or ``VMDDPM_OPS=native`` forces
one implementation (forcing native where it is not available is an error, not a silent
fallback); ``auto`` (the default) takes native where it can run the tensor (see
:func:`vmddpm_deploy.ops.native_library.unsupported_reason`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import torch

from vmddpm_deploy.errors import ConfigError, NativeOpsError
from vmddpm_deploy.ops import native, native_library
from vmddpm_deploy.ops.reference import (
    cross_merge_ref,
    cross_scan_ref,
    selective_scan_bwd_ref,
    selective_scan_ref,
)

#: The pure-PyTorch oracle, always available.
REFERENCE = SimpleNamespace(
    name="reference",
    selective_scan=selective_scan_ref,
    selective_scan_bwd=selective_scan_bwd_ref,
    cross_scan=cross_scan_ref,
    cross_merge=cross_merge_ref,
)

#: The C++/OpenMP and CUDA kernels of ``libvmddpm_ops`` (each call runs on its tensors' device).
NATIVE = SimpleNamespace(
    name="native",
    selective_scan=native.selective_scan,
    selective_scan_bwd=native.selective_scan_bwd,
    cross_scan=native.cross_scan,
    cross_merge=native.cross_merge,
)

_CHOICES = ("auto", "reference", "native")

_override: SimpleNamespace | None = None


@contextmanager
def using(kernels: SimpleNamespace) -> Iterator[None]:
    """Run every op with ``kernels`` inside the block (benchmarks compare implementations)."""
    global _override
    previous, _override = _override, kernels
    try:
        yield
    finally:
        _override = previous


def requested() -> str:
    """The implementation asked for through ``VMDDPM_OPS`` (``auto`` when unset)."""
    choice = os.environ.get("VMDDPM_OPS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"VMDDPM_OPS={choice!r} is not one of {', '.join(_CHOICES)}")
    return choice


def kernels_for(tensor: torch.Tensor) -> SimpleNamespace:
    """The kernel set that runs ops on ``tensor``'s device and dtype."""
    if _override is not None:
        return _override
    choice = requested()
    if choice == "reference":
        return REFERENCE
    reason = native_library.unsupported_reason(tensor)
    if reason is None:
        return NATIVE
    if choice == "native":
        raise NativeOpsError(f"VMDDPM_OPS=native but {reason}; unset VMDDPM_OPS to fall back")
    return REFERENCE


def backward_kernels_for(tensor: torch.Tensor) -> SimpleNamespace:
    """The kernel set whose ``selective_scan_bwd`` differentiates a scan on ``tensor``: native
    where the forward runs native on the CPU; else the reference, by autograd (also on CUDA,
    which has no native backward yet)."""
    if kernels_for(tensor).name == "native" and tensor.device.type == "cpu":
        return NATIVE
    return REFERENCE


def kernels_when_built() -> SimpleNamespace:
    """The native kernels when the library loads, else the reference: for kernel sets that run
    beside :func:`using` overrides (benchmarks), where the tensors are not at hand."""
    return NATIVE if native_library.available() else REFERENCE
