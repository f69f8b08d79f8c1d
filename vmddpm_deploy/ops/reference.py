"""Reference implementations of the op contract, in plain PyTorch.

These are the oracle every other implementation (native CPU/CUDA kernels, ONNX graphs,
TensorRT plugins) is tested against. They favour clarity over speed: the selective scan is the
step-by-step recurrence of mamba-ssm's ``selective_scan_ref``.

Shapes (see docs/design.md section 2)::

    u, delta      (batch, K*D, L)   io dtype T in {fp32, fp16, bf16}
    A             (K*D, N)          fp32
    B, C          (batch, K, N, L)  T   (grouped per route: route k drives channels k*D..k*D+D-1)
    D, delta_bias (K*D,)            fp32
    y             (batch, K*D, L)   T
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vmddpm_deploy.ops.scan_orders import scan_table


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    delta_softplus: bool = True,
) -> torch.Tensor:
    """S6 selective scan; math in fp32, result in ``u.dtype``.

    ``dt = softplus(delta + delta_bias)`` (or without softplus), then per step ``l``::

        h_l = exp(dt_l * A) * h_{l-1} + dt_l * B_l * u_l      h: (batch, K*D, N), h_{-1} = 0
        y_l = sum_n C_l[n] * h_l[n] + D * u_l
    """
    io_dtype = u.dtype
    batch, channels = u.shape[:2]
    routes = B.shape[1]
    per_route = channels // routes

    u32 = u.float()
    dt = delta.float() + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # Expand the route-grouped B and C to one row per channel: (batch, K*D, N, L).
    B32 = B.float().repeat_interleave(per_route, dim=1)
    C32 = C.float().repeat_interleave(per_route, dim=1)
    A32 = A.float()

    h = u32.new_zeros(batch, channels, A.shape[1])
    ys = []
    # Per-step slices via unbind: under autograd its backward stacks the slices' gradients once,
    # where indexing [..., step] would build a full-size zero gradient at every step.
    steps = zip(dt.unbind(-1), u32.unbind(-1), B32.unbind(-1), C32.unbind(-1), strict=True)
    for dt_l, u_l, B_l, C_l in steps:  # dt_l, u_l: (batch, K*D); B_l, C_l: (batch, K*D, N)
        dt_l = dt_l[..., None]
        h = torch.exp(dt_l * A32) * h + dt_l * B_l * u_l[..., None]
        ys.append((h * C_l).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u32.new_zeros(batch, channels, 0)
    y = y + D.float()[None, :, None] * u32
    return y.to(io_dtype)


def selective_scan_bwd_ref(
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
    """Gradients of :func:`selective_scan_ref` for ``dy: (batch, K*D, L)``, by autograd through it.

    Returns ``(du, ddelta, dA, dB, dC, dD, ddelta_bias)`` shaped like the inputs.
    """
    inputs = [t.detach().requires_grad_(True) for t in (u, delta, A, B, C, D, delta_bias)]
    with torch.enable_grad():
        y = selective_scan_ref(*inputs, delta_softplus=delta_softplus)
    # An input the graph never reaches (any but u and D when L = 0) gets zeros, not None.
    return torch.autograd.grad(y, inputs, dy, allow_unused=True, materialize_grads=True)


def cross_scan_ref(x: torch.Tensor, order: str) -> torch.Tensor:
    """Gather ``x: (batch, D, H, W)`` into K routes: ``(batch, K, D, H*W)``.

    ``out[b, k, d, l] = x.flatten(2)[b, d, table[k, l]]``.
    """
    batch, dim, height, width = x.shape
    table = scan_table(order, height, width).to(x.device)
    routes = table.shape[0]
    flat = x.reshape(batch, dim, height * width)
    gathered = flat.index_select(2, table.reshape(-1))  # (batch, D, K*L)
    return gathered.view(batch, dim, routes, height * width).transpose(1, 2).contiguous()


def cross_merge_ref(ys: torch.Tensor, height: int, width: int, order: str) -> torch.Tensor:
    """Scatter-add K routes ``ys: (batch, K, D, H*W)`` back onto the grid: ``(batch, D, H, W)``.

    The exact adjoint of :func:`cross_scan_ref`: ``<cross_scan(x), y> == <x, cross_merge(y)>``.
    Sums in at least fp32 so fp16/bf16 io rounds once, like the native kernels.
    """
    batch, routes, dim, length = ys.shape
    table = scan_table(order, height, width).to(ys.device)
    src = ys.to(torch.promote_types(ys.dtype, torch.float32)).transpose(1, 2).reshape(batch, dim, routes * length)
    out = src.new_zeros(batch, dim, height * width)
    out.index_add_(2, table.reshape(-1), src)
    return out.view(batch, dim, height, width).to(ys.dtype)
