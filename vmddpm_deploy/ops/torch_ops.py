"""The op contract as ``torch.library`` custom ops: ``vmddpm::selective_scan``,
``vmddpm::cross_scan`` and ``vmddpm::cross_merge``.

Each op has a fake (meta) kernel, so the model traces, compiles and exports with each op as
one node, and an autograd formula, so the model trains through them. The real kernel is picked
per call by :mod:`vmddpm_deploy.ops.dispatch`.
"""

from __future__ import annotations

import torch

from vmddpm_deploy.ops import dispatch
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES


@torch.library.custom_op("vmddpm::selective_scan", mutates_args=())
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
    """S6 selective scan (see :func:`~vmddpm_deploy.ops.reference.selective_scan_ref`).

    u, delta: (batch, K*D, L) T; A: (K*D, N) fp32; B, C: (batch, K, N, L) T;
    D, delta_bias: (K*D,) fp32 -> y: (batch, K*D, L) T.
    """
    return dispatch.kernels_for(u).selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus)


@selective_scan.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    return torch.empty_like(u)


def _selective_scan_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7])
    ctx.delta_softplus = inputs[7]


@torch.library.custom_op("vmddpm::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    dy: torch.Tensor,
    delta_softplus: bool,
) -> list[torch.Tensor]:
    """Native CPU gradients ``[du, ddelta, dA, dB, dC, dD, ddelta_bias]`` of :func:`selective_scan`.

    Its own op (not a ctypes call inside the backward) so that traced and compiled training
    graphs see it as one opaque node, as they see the forward.
    """
    return list(dispatch.NATIVE.selective_scan_bwd(u, delta, A, B, C, D, delta_bias, dy, delta_softplus))


@selective_scan_bwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, dy, delta_softplus):
    return [torch.empty_like(t) for t in (u, delta, A, B, C, D, delta_bias)]


def _selective_scan_backward(ctx, grad_y):
    inputs = ctx.saved_tensors
    kernels = dispatch.backward_kernels_for(inputs[0])
    if kernels is dispatch.NATIVE:  # through its op, so traced graphs see the backward as one node
        grads = selective_scan_bwd(*inputs, grad_y.contiguous(), ctx.delta_softplus)
    else:
        grads = kernels.selective_scan_bwd(*inputs, grad_y, ctx.delta_softplus)
    return (*grads, None)


selective_scan.register_autograd(_selective_scan_backward, setup_context=_selective_scan_setup)


@torch.library.custom_op("vmddpm::cross_scan", mutates_args=())
def cross_scan(x: torch.Tensor, order: str) -> torch.Tensor:
    """x: (batch, D, H, W) -> (batch, K, D, H*W), routes per the ``order`` table."""
    return dispatch.kernels_for(x).cross_scan(x, order)


@cross_scan.register_fake
def _(x, order):
    batch, dim, height, width = x.shape
    return x.new_empty(batch, NUM_ROUTES, dim, height * width)


@torch.library.custom_op("vmddpm::cross_merge", mutates_args=())
def cross_merge(ys: torch.Tensor, height: int, width: int, order: str) -> torch.Tensor:
    """ys: (batch, K, D, H*W) -> (batch, D, H, W), the adjoint of :func:`cross_scan`."""
    return dispatch.kernels_for(ys).cross_merge(ys, height, width, order)


@cross_merge.register_fake
def _(ys, height, width, order):
    batch, _, dim, _ = ys.shape
    return ys.new_empty(batch, dim, height, width)


# cross_scan and cross_merge are each other's adjoint, so each one's gradient is the other.
def _cross_scan_setup(ctx, inputs, output):
    x, order = inputs
    ctx.hw = x.shape[-2:]
    ctx.order = order


def _cross_scan_backward(ctx, grad):
    return cross_merge(grad.contiguous(), ctx.hw[0], ctx.hw[1], ctx.order), None


def _cross_merge_setup(ctx, inputs, output):
    ctx.order = inputs[3]


def _cross_merge_backward(ctx, grad):
    return cross_scan(grad.contiguous(), ctx.order), None, None, None


cross_scan.register_autograd(_cross_scan_backward, setup_context=_cross_scan_setup)
cross_merge.register_autograd(_cross_merge_backward, setup_context=_cross_merge_setup)
