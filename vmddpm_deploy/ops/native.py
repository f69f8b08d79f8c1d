"""The op contract on the native kernels of ``libvmddpm_ops``, through ctypes.

The functions here have the signatures of :mod:`vmddpm_deploy.ops.reference` and run the
op contract on CPU tensors (C++/OpenMP kernels) and, when the library was compiled with CUDA,
on CUDA tensors. They check their arguments and call the library
(:mod:`vmddpm_deploy.ops.native_library`); whether an op runs here or in the reference is
decided by :mod:`vmddpm_deploy.ops.dispatch`.
"""

from __future__ import annotations

import functools

import torch

from vmddpm_deploy.errors import NativeOpsError
from vmddpm_deploy.ops.native_library import DTYPE_CODES, check_status, library, library_path
from vmddpm_deploy.ops.scan_orders import scan_table


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
        raise NativeOpsError(f"{op}: {library_path()} was built without CUDA kernels")
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
    check_status(status)
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
    the gradients rounded back; the shapes it does not take (no elements, or N = 0) get their
    closed-form gradients here. CUDA tensors are refused (no native backward there yet).
    """
    op = "selective_scan_bwd"
    inputs = (u, delta, A, B, C, D, delta_bias)
    device = _common_device(op, {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D,
                                 "delta_bias": delta_bias, "dy": dy})
    if device.type != "cpu":
        raise NativeOpsError(f"{op}: the native backward runs on cpu tensors only, not {device.type}")
    batch, channels, routes, state, length = _scan_sizes(op, *inputs)
    _expect_shape(op, "dy", dy, (batch, channels, length))
    if u.numel() == 0 or state == 0:
        return _closed_form_scan_gradients(inputs, dy)

    fp32 = [t.to(torch.float32).contiguous() for t in (*inputs, dy)]
    grads = [torch.empty_like(t) for t in fp32[:7]]
    pointers = [t.data_ptr() for t in (*fp32, *grads)]
    check_status(library().vmddpm_selective_scan_bwd_cpu(
        *pointers, batch, channels, routes, state, length, int(delta_softplus)
    ))
    return tuple(g.to(t.dtype) for g, t in zip(grads, inputs, strict=True))


def _closed_form_scan_gradients(inputs: tuple[torch.Tensor, ...], dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients where the recurrence is empty: no elements (nothing flows), or N = 0 (y = D u)."""
    u, D = inputs[0], inputs[5]
    grads = [torch.zeros_like(t) for t in inputs]
    if u.numel() != 0:  # N = 0: du = D dy, dD = sum of dy u over batch and steps, in fp32 like the scan
        dy32, u32 = dy.float(), u.float()
        grads[0] = (D.float()[None, :, None] * dy32).to(u.dtype)
        grads[5] = (dy32 * u32).sum(dim=(0, 2)).to(D.dtype)
    return tuple(grads)


def cross_scan(x: torch.Tensor, order: str) -> torch.Tensor:
    """Native gather into K routes; same contract as ``cross_scan_ref``."""
    op = "cross_scan"
    dtype_code = _io_dtype_code(op, {"x": x})
    _common_device(op, {"x": x})  # one device for every tensor, or a clear error
    if x.dim() != 4:
        raise NativeOpsError(f"{op}: x must be (batch, D, H, W), got shape {tuple(x.shape)}")
    batch, dim, height, width = x.shape
    table = scan_table(order, height, width)
    routes = table.shape[0]
    out = x.new_empty(batch, routes, dim, height * width)
    if out.numel() == 0:
        return out
    return _run_route_kernel("cross_scan", x, out, order, (batch, dim, height, width, routes), dtype_code)


def cross_merge(ys: torch.Tensor, height: int, width: int, order: str) -> torch.Tensor:
    """Native scatter-add of K routes onto the grid; same contract as ``cross_merge_ref``."""
    op = "cross_merge"
    dtype_code = _io_dtype_code(op, {"ys": ys})
    _common_device(op, {"ys": ys})  # one device for every tensor, or a clear error
    table = scan_table(order, height, width)
    routes = table.shape[0]
    if ys.dim() != 4:
        raise NativeOpsError(f"{op}: ys must be (batch, K, D, H*W), got shape {tuple(ys.shape)}")
    batch, _, dim, _ = ys.shape
    _expect_shape(op, "ys", ys, (batch, routes, dim, height * width))
    out = ys.new_empty(batch, dim, height, width)
    if out.numel() == 0:
        return out
    return _run_route_kernel("cross_merge", ys, out, order, (batch, dim, height, width, routes), dtype_code)


def _run_route_kernel(
    op: str, source: torch.Tensor, out: torch.Tensor, order: str, sizes: tuple[int, ...], dtype_code: int
) -> torch.Tensor:
    """Run ``vmddpm_<op>_cpu`` or ``vmddpm_<op>_cuda`` (``source``'s device) from ``source`` into
    ``out`` through ``order``'s table; ``sizes`` is ``(batch, D, H, W, K)``."""
    _, _, height, width, routes = sizes
    source = source.contiguous()
    device = source.device
    lib = library()
    if device.type == "cpu":
        table = scan_table(order, height, width)
        kernel = getattr(lib, f"vmddpm_{op}_cpu")
        check_status(kernel(source.data_ptr(), table.data_ptr(), out.data_ptr(), *sizes, dtype_code))
        return out
    table = _device_table(order, height, width, device)
    buffers = [source.data_ptr(), table.data_ptr(), out.data_ptr()]
    if op == "cross_merge":  # the CUDA merge needs scratch memory of a size the library says
        workspace_bytes = lib.vmddpm_cross_merge_cuda_workspace_bytes(routes, height * width)
        if workspace_bytes < 0:
            raise NativeOpsError(lib.vmddpm_last_error().decode())
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device)
        buffers.append(workspace.data_ptr())
    with torch.cuda.device(device):
        status = getattr(lib, f"vmddpm_{op}_cuda")(*buffers, *sizes, dtype_code, _stream(device))
    check_status(status)
    return out
