"""ONNX translations of the ``vmddpm::`` custom ops, for ``torch.onnx.export(dynamo=True,
custom_translation_table=...)``.

Two tables, one per kind of graph:

* ``plugin``: each op becomes one node of domain ``vmddpm`` (``VmddpmSelectiveScan``,
  ``VmddpmCrossScan``, ``VmddpmCrossMerge``) carrying ``plugin_version`` / ``plugin_namespace``
  and its own attributes: exactly what the TensorRT ``IPluginCreatorV3One`` of each op reads
  (listed in ``manifest.CUSTOM_OP_ATTRIBUTES``). The schemas below are the op contract (docs/design.md section 2) in ONNX terms.
* ``portable``: standard ONNX ops only, so ONNX Runtime (or any runtime) runs the graph with no
  custom library. ``cross_scan`` is a ``Gather`` with the order's constant ``(K, L)`` index table,
  ``cross_merge`` its adjoint (a ``Gather`` with the inverse permutations, then a sum over the K
  routes) and ``selective_scan`` an ONNX ``Scan`` over the L tokens.

Why ``Scan`` and not a chunked closed form (MzeroMiko/mamba-mini's ``selective_scan_easy``): on
the scan calls of one tiny-preset denoiser call, ONNX Runtime runs the ``Scan`` 1.47x faster than
the best chunk size (``benchmarks/bench_portable_scan.py``), and the closed form divides by
``exp(A * cumsum(dt))``, which underflows once ``|A| * sum(dt)`` over a chunk passes about 87:
with 64-token chunks the tiny model's own (randomly initialised) scan inputs already give NaN.
The ``Scan`` runs the reference recurrence step by step, so it is exact for every ``dt``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx.defs import OpSchema
from onnxscript import FLOAT, ir, script
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

from vmddpm_deploy.choices import EXPORT_OPS
from vmddpm_deploy.errors import ExportError
from vmddpm_deploy.export.manifest import (
    CUSTOM_DOMAIN,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from vmddpm_deploy.ops.scan_orders import SCAN_ORDERS, scan_table


# ---------------------------------------------------------------------------------------------
# Custom nodes (domain "vmddpm")
# ---------------------------------------------------------------------------------------------

_IO_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_Param = OpSchema.FormalParameter
_Attr = OpSchema.Attribute
_STRING, _INT = OpSchema.AttrType.STRING, OpSchema.AttrType.INT
_PLUGIN_ATTRIBUTES = [
    _Attr("plugin_version", _STRING, "TensorRT plugin version, always '1'.", required=True),
    _Attr("plugin_namespace", _STRING, "TensorRT plugin namespace, always 'vmddpm'.", required=True),
]
_SCAN_ORDER_ATTRIBUTE = _Attr(
    "scan_order", _STRING, " or ".join(f"'{order}'" for order in SCAN_ORDERS) + ".", required=True
)

SCHEMAS: dict[str, OpSchema] = {
    "VmddpmSelectiveScan": OpSchema(
        "VmddpmSelectiveScan",
        CUSTOM_DOMAIN,
        1,
        "S6 selective scan, math in fp32: dt = softplus(delta + delta_bias); "
        "h = exp(dt*A)*h + dt*B*u; y = C.h + D*u.",
        inputs=[
            _Param("u", "T", "(batch, K*D, L)"),
            _Param("delta", "T", "(batch, K*D, L)"),
            _Param("A", "tensor(float)", "(K*D, N)"),
            _Param("B", "T", "(batch, K, N, L)"),
            _Param("C", "T", "(batch, K, N, L)"),
            _Param("D", "tensor(float)", "(K*D,)"),
            _Param("delta_bias", "tensor(float)", "(K*D,)"),
        ],
        outputs=[_Param("y", "T", "(batch, K*D, L)")],
        type_constraints=[("T", _IO_TYPES, "io dtype")],
        attributes=[_Attr("delta_softplus", _INT, "1: dt = softplus(delta + delta_bias).", required=True)]
        + _PLUGIN_ATTRIBUTES,
    ),
    "VmddpmCrossScan": OpSchema(
        "VmddpmCrossScan",
        CUSTOM_DOMAIN,
        1,
        "Gather (batch, D, H, W) into K=4 routes (batch, K, D, H*W) along the scan order's table.",
        inputs=[_Param("x", "T", "(batch, D, H, W)")],
        outputs=[_Param("ys", "T", "(batch, K, D, H*W)")],
        type_constraints=[("T", _IO_TYPES, "io dtype")],
        attributes=[_SCAN_ORDER_ATTRIBUTE] + _PLUGIN_ATTRIBUTES,
    ),
    "VmddpmCrossMerge": OpSchema(
        "VmddpmCrossMerge",
        CUSTOM_DOMAIN,
        1,
        "Scatter-add K routes (batch, K, D, H*W) back onto (batch, D, H, W); the adjoint of VmddpmCrossScan.",
        inputs=[_Param("ys", "T", "(batch, K, D, H*W)")],
        outputs=[_Param("x", "T", "(batch, D, H, W)")],
        type_constraints=[("T", _IO_TYPES, "io dtype")],
        attributes=[
            _SCAN_ORDER_ATTRIBUTE,
            _Attr("height", _INT, "H of the grid.", required=True),
            _Attr("width", _INT, "W of the grid.", required=True),
        ]
        + _PLUGIN_ATTRIBUTES,
    ),
}

_vmddpm = Opset(CUSTOM_DOMAIN, 1)
_selective_scan_node = Op(_vmddpm, "VmddpmSelectiveScan", SCHEMAS["VmddpmSelectiveScan"])
_cross_scan_node = Op(_vmddpm, "VmddpmCrossScan", SCHEMAS["VmddpmCrossScan"])
_cross_merge_node = Op(_vmddpm, "VmddpmCrossMerge", SCHEMAS["VmddpmCrossMerge"])
_PLUGIN = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}


def register_schemas() -> None:
    """Make ``onnx.checker`` validate our nodes' inputs, types and attributes (idempotent)."""
    for name, schema in SCHEMAS.items():
        if not onnx.defs.has(name, CUSTOM_DOMAIN):
            onnx.defs.register_schema(schema)


def selective_scan_plugin(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True):
    return _selective_scan_node(u, delta, A, B, C, D, delta_bias, delta_softplus=int(delta_softplus), **_PLUGIN)


def cross_scan_plugin(x, order: str):
    return _cross_scan_node(x, scan_order=order, **_PLUGIN)


def cross_merge_plugin(ys, height: int, width: int, order: str):
    return _cross_merge_node(ys, scan_order=order, height=height, width=width, **_PLUGIN)


# ---------------------------------------------------------------------------------------------
# Portable (standard ONNX ops)
# ---------------------------------------------------------------------------------------------


def _ints(values) -> ir.Value:
    return op.Constant(value_ints=[int(v) for v in values])


def _int64_table(array: np.ndarray) -> ir.Value:
    return op.Constant(value=ir.tensor(np.ascontiguousarray(array, dtype=np.int64)))


def _permutation_table(order: str, height: int, width: int) -> np.ndarray:
    table = scan_table(order, height, width).numpy()
    length = height * width
    if any(np.bincount(row, minlength=length).max() != 1 for row in table):
        # cross_merge below is a Gather with the inverse permutation; a route that visits a
        # token twice (or skips one) would need a ScatterElements(reduction="add") instead.
        raise ExportError(f"scan order {order!r} is not a permutation of the {height}x{width} tokens")
    return table


def cross_scan_portable(x, order: str):
    """x: (batch, D, H, W) -> (batch, K, D, H*W): ``out[b, k, d, l] = x[b, d, table[k, l]]``."""
    _, dim, height, width = x.shape
    table = _permutation_table(order, height, width)
    flat = op.Reshape(x, _ints([0, dim, height * width]))
    routes = op.Gather(flat, _int64_table(table), axis=2)  # (batch, D, K, L)
    return op.Transpose(routes, perm=[0, 2, 1, 3])


def cross_merge_portable(ys, height: int, width: int, order: str):
    """ys: (batch, K, D, H*W) -> (batch, D, H, W), the scatter-add adjoint of cross_scan.

    Every route is a permutation, so ``out[p] = sum_k ys[k, inverse[k, p]]``: one Gather over
    the K*L axis with ``k*L + inverse[k, p]`` and a sum over k.
    """
    table = _permutation_table(order, height, width)
    _, routes, dim, length = ys.shape
    inverse = np.argsort(table, axis=1) + length * np.arange(routes)[:, None]  # (K, L)
    flat = op.Reshape(op.Transpose(ys, perm=[0, 2, 1, 3]), _ints([0, dim, routes * length]))
    gathered = op.Gather(flat, _int64_table(inverse), axis=2)  # (batch, D, K, L)
    merged = op.ReduceSum(gathered, _ints([2]), keepdims=0)
    return op.Reshape(merged, _ints([0, dim, height, width]))


@script()
def _scan_recurrence(
    h0: FLOAT[...], A: FLOAT[...], dt: FLOAT[...], dtu: FLOAT[...], B: FLOAT[...], C: FLOAT[...]
) -> FLOAT[...]:
    # One Scan iteration per token l; all routes, channels and states at once:
    #   h_l = exp(dt_l * A) * h_{l-1} + (dt_l * u_l) * B_l        (mamba-ssm selective_scan_ref)
    #   y_l = sum_n C_l[n] * h_l[n]
    # dA and dt*u*B are formed inside the step so no (L, batch, K*D, N) tensor is materialised.
    def step(h: FLOAT[...], dt_l: FLOAT[...], dtu_l: FLOAT[...], B_l: FLOAT[...], C_l: FLOAT[...]):
        h_next = op.Exp(dt_l * A) * h + dtu_l * B_l
        h_carry = op.Identity(h_next)
        y_l = op.ReduceSum(h_next * C_l, op.Constant(value_ints=[-1]), keepdims=0)
        return h_carry, y_l

    _h_last, ys = op.Scan(h0, dt, dtu, B, C, body=step, num_scan_inputs=4)
    return ys


def selective_scan_portable(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True):
    """The op contract with standard ops; math in fp32 whatever the io dtype T.

    u, delta: (batch, K*D, L) T; A: (K*D, N); B, C: (batch, K, N, L) T; D, delta_bias: (K*D,)
    -> y: (batch, K*D, L) T. Internally tokens lead, (L, batch, K, D, ...), so each Scan step
    reads contiguous slices.
    """
    io_dtype = u.dtype
    _, channels, length = u.shape
    _, routes, state, _ = B.shape
    dim = channels // routes
    if io_dtype != ir.DataType.FLOAT:
        u, delta, B, C = (op.Cast(v, to=ir.DataType.FLOAT) for v in (u, delta, B, C))

    dt = op.Add(delta, op.Reshape(delta_bias, _ints([channels, 1])))
    if delta_softplus:
        dt = op.Softplus(dt)
    token_major = [3, 0, 1, 2]
    per_route = _ints([0, routes, dim, length])
    dt = op.Transpose(op.Reshape(dt, per_route), perm=token_major)  # (L, batch, K, D)
    u = op.Transpose(op.Reshape(u, per_route), perm=token_major)
    last = _ints([-1])
    B = op.Unsqueeze(op.Transpose(B, perm=token_major), _ints([3]))  # (L, batch, K, 1, N)
    C = op.Unsqueeze(op.Transpose(C, perm=token_major), _ints([3]))
    batch = op.Shape(u, start=1, end=2)
    h0 = op.Expand(op.Constant(value_float=0.0), op.Concat(batch, _ints([routes, dim, state]), axis=0))
    A = op.Reshape(A, _ints([routes, dim, state]))
    ys = _scan_recurrence(h0, A, op.Unsqueeze(dt, last), op.Unsqueeze(op.Mul(dt, u), last), B, C)
    ys = op.Add(ys, op.Mul(u, op.Reshape(D, _ints([routes, dim]))))  # + D * u
    y = op.Reshape(op.Transpose(ys, perm=[1, 2, 3, 0]), _ints([0, channels, length]))
    return y if io_dtype == ir.DataType.FLOAT else op.Cast(y, to=io_dtype)


def translation_table(ops: str) -> dict[torch._ops.OpOverload, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export`` producing ``ops`` graphs."""
    import vmddpm_deploy.ops  # noqa: F401  (registers torch.ops.vmddpm)

    vmddpm = torch.ops.vmddpm
    if ops == "plugin":
        functions = (selective_scan_plugin, cross_scan_plugin, cross_merge_plugin)
    elif ops == "portable":
        functions = (selective_scan_portable, cross_scan_portable, cross_merge_portable)
    else:
        raise ValueError(f"ops must be one of {EXPORT_OPS}, got {ops!r}")
    overloads = (vmddpm.selective_scan.default, vmddpm.cross_scan.default, vmddpm.cross_merge.default)
    return dict(zip(overloads, functions, strict=True))
