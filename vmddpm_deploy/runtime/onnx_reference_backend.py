"""The ``reference-onnx`` backend: the custom-node graph (``denoiser.onnx`` or
``denoiser.fp16.onnx``, the graphs TensorRT parses) executed on CPU by
``onnx.reference.ReferenceEvaluator`` with our three ops registered.

Slow, but it runs exactly the nodes and attributes our TensorRT plugins will see, so ``check``
validates the plugin graph numerically without TensorRT. Each node's attributes are read when the
graph is loaded, by the rules the plugin creators apply (``plugins/tensorrt/core/attributes.cpp``):
``plugin_version`` / ``plugin_namespace`` must name what this build implements, an unknown
attribute is an error, ``scan_order`` (and ``height`` / ``width`` for the merge) are required,
``delta_softplus`` is 0 or 1 and defaults to 1. The ops then call the torch custom ops
(``vmddpm::``), so they run the native kernels when built and the reference ones otherwise.

Example::

    denoiser = OnnxReferenceDenoiser("exports/tiny/denoiser.fp16.onnx")
    eps = denoiser(x, t)          # x: (batch, C, H, W), t: (batch,) int64
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from vmddpm_deploy.errors import ArtifactError
from vmddpm_deploy.export.manifest import (
    CUSTOM_DOMAIN,
    CUSTOM_OP_ATTRIBUTES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from vmddpm_deploy.ops import SCAN_ORDERS, cross_merge, cross_scan, selective_scan
from vmddpm_deploy.runtime.batching import check_batch

_IDENTITY = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}
_REEXPORT = "re-export it with this version of vmddpm-deploy (`vmddpm-deploy export CHECKPOINT --force`)"


def plugin_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The attributes a plugin node asks for, checked as the TensorRT plugin creators check them.

    Returns ``{"delta_softplus": bool}`` for VmddpmSelectiveScan, ``{"scan_order": str}`` for
    VmddpmCrossScan and ``{"scan_order": str, "height": int, "width": int}`` for VmddpmCrossMerge;
    raises ArtifactError naming the node otherwise.
    """
    where = f"{node.op_type} node {node.name or '(unnamed)'}"
    known = CUSTOM_OP_ATTRIBUTES[node.op_type]
    found: dict[str, Any] = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name in _IDENTITY:
            if attribute.type != onnx.AttributeProto.STRING:
                raise ArtifactError(f"{where}: attribute {attribute.name!r} must be a string; {_REEXPORT}")
            found[attribute.name] = value.decode()
        elif attribute.name in known:
            expected = onnx.AttributeProto.STRING if attribute.name == "scan_order" else onnx.AttributeProto.INT
            if attribute.type != expected:
                kind = "a string" if expected == onnx.AttributeProto.STRING else "an int"
                raise ArtifactError(f"{where}: attribute {attribute.name!r} must be {kind}; {_REEXPORT}")
            found[attribute.name] = value.decode() if isinstance(value, bytes) else value
        else:
            names = ", ".join([*known, *_IDENTITY])
            raise ArtifactError(f"{where}: unknown attribute {attribute.name!r} (known: {names}); {_REEXPORT}")

    for name, implemented in _IDENTITY.items():
        if found.get(name) != implemented:
            raise ArtifactError(
                f"{where} asks for {name}={found.get(name)!r}; this build implements plugin_version "
                f"{PLUGIN_VERSION!r} in namespace {PLUGIN_NAMESPACE!r}: {_REEXPORT}"
            )
    if node.op_type == "VmddpmSelectiveScan":
        delta_softplus = found.get("delta_softplus", 1)  # the op contract's default
        if delta_softplus not in (0, 1):
            raise ArtifactError(f"{where}: attribute 'delta_softplus' must be 0 or 1, got {delta_softplus}")
        return {"delta_softplus": bool(delta_softplus)}

    # No default order: a wrong one would silently scramble the image (as in the plugins).
    if found.get("scan_order") not in SCAN_ORDERS:
        raise ArtifactError(
            f"{where}: attribute 'scan_order' is {found.get('scan_order')!r}, expected one of "
            f"{', '.join(SCAN_ORDERS)}; {_REEXPORT}"
        )
    parsed = {"scan_order": found["scan_order"]}
    if node.op_type == "VmddpmCrossMerge":
        for name in ("height", "width"):
            if found.get(name, 0) < 1:
                raise ArtifactError(
                    f"{where}: attribute {name!r} is required and positive (the output grid), "
                    f"got {found.get(name)!r}; {_REEXPORT}"
                )
            parsed[name] = found[name]
    return parsed


def _torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))  # copies only read-only/strided views


class _PluginOp(OpRun):
    """An op of our domain whose attributes are validated once, when the evaluator loads the graph."""

    op_domain = CUSTOM_DOMAIN

    def __init__(self, onnx_node: onnx.NodeProto, run_params: dict[str, Any], schema: Any = None):
        super().__init__(onnx_node, run_params, schema)
        self.plugin = plugin_attributes(onnx_node)

    def _run(self, *inputs: np.ndarray, **node_attributes: Any) -> tuple[np.ndarray]:
        # The evaluator passes the raw node attributes too; self.plugin holds them validated.
        with torch.inference_mode():
            return (self.compute(*(_torch(array) for array in inputs)).numpy(),)

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class VmddpmSelectiveScan(_PluginOp):
    """(u, delta, A, B, C, D, delta_bias) -> y, shapes and dtypes of the op contract."""

    def compute(self, u, delta, A, B, C, D, delta_bias):
        return selective_scan(u, delta, A, B, C, D, delta_bias, self.plugin["delta_softplus"])


class VmddpmCrossScan(_PluginOp):
    """x (batch, D, H, W) -> ys (batch, 4, D, H*W)."""

    def compute(self, x):
        return cross_scan(x, self.plugin["scan_order"])


class VmddpmCrossMerge(_PluginOp):
    """ys (batch, 4, D, H*W) -> x (batch, D, height, width)."""

    def compute(self, ys):
        return cross_merge(ys, self.plugin["height"], self.plugin["width"], self.plugin["scan_order"])


CUSTOM_OPS = [VmddpmSelectiveScan, VmddpmCrossScan, VmddpmCrossMerge]


class OnnxReferenceDenoiser:
    """``Denoiser`` over a custom-node graph: x (batch, C, H, W) float, t (batch,) int64 -> eps.

    The graph's io dtype (float32 or float16) decides what x is cast to; eps comes back in x's
    dtype and device.
    """

    name = "reference-onnx"

    def __init__(self, graph: str | os.PathLike):
        self.graph = Path(graph)
        try:
            model = onnx.load(str(self.graph))
        except (OSError, DecodeError) as exc:
            raise ArtifactError(f"cannot read ONNX graph {self.graph}: {exc}; {_REEXPORT}") from None
        names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
        if names != (["x", "t"], ["eps"]):
            raise ArtifactError(f"{self.graph} has io {names}, expected (x, t) -> eps (a vmddpm-deploy export)")
        unknown = sorted({n.op_type for n in model.graph.node if n.domain == CUSTOM_DOMAIN} - set(CUSTOM_OP_ATTRIBUTES))
        if unknown:
            raise ArtifactError(f"{self.graph} has custom ops this build does not implement: {', '.join(unknown)}")
        for node in model.graph.node:
            if node.domain == CUSTOM_DOMAIN:
                plugin_attributes(node)  # fail with the node's name before building the evaluator
        self.evaluator = ReferenceEvaluator(model, new_ops=CUSTOM_OPS)
        x_type = model.graph.input[0].type.tensor_type
        self.io_dtype = np.float16 if x_type.elem_type == onnx.TensorProto.FLOAT16 else np.float32
        fixed = x_type.shape.dim[0]  # dim_value for a graph exported with --batch-dim K
        self.batch_range = (fixed.dim_value, fixed.dim_value) if fixed.HasField("dim_value") else None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_batch(self.graph.name, self.batch_range, x.shape[0])
        feeds = {"x": x.detach().cpu().numpy().astype(self.io_dtype), "t": t.detach().cpu().numpy().astype(np.int64)}
        (eps,) = self.evaluator.run(["eps"], feeds)
        return torch.from_numpy(np.asarray(eps)).to(device=x.device, dtype=x.dtype)

