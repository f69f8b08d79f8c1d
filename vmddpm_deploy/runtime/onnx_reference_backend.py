"""The ``reference-onnx`` backend: the custom-node graph (``denoiser.onnx`` or
``denoiser.fp16.onnx``, the graphs TensorRT parses) executed on CPU by
``onnx.reference.ReferenceEvaluator`` with our three ops registered.

Slow, but it runs exactly the nodes and attributes our TensorRT plugins will see, so ``check``
validates the plugin graph numerically without TensorRT. The ops read their attributes the way
the plugin creators do and refuse a plugin version or namespace they do not implement.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from vmddpm_deploy.errors import ArtifactError
from vmddpm_deploy.export.manifest import CUSTOM_DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION
from vmddpm_deploy.ops import cross_merge, cross_scan, selective_scan


def _plugin_identity(op: str, plugin_version, plugin_namespace) -> None:
    version = plugin_version.decode() if isinstance(plugin_version, bytes) else plugin_version
    namespace = plugin_namespace.decode() if isinstance(plugin_namespace, bytes) else plugin_namespace
    if (version, namespace) != (PLUGIN_VERSION, PLUGIN_NAMESPACE):
        raise ArtifactError(
            f"{op} node has plugin_version={version!r} plugin_namespace={namespace!r}; this build implements "
            f"version {PLUGIN_VERSION!r} in namespace {PLUGIN_NAMESPACE!r}: re-export the model"
        )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))  # copies only read-only views


class VmddpmSelectiveScan(OpRun):
    op_domain = CUSTOM_DOMAIN

    def _run(self, u, delta, A, B, C, D, delta_bias, delta_softplus=None, plugin_version=None,
             plugin_namespace=None):
        _plugin_identity("VmddpmSelectiveScan", plugin_version, plugin_namespace)
        args = [_torch(a) for a in (u, delta, A, B, C, D, delta_bias)]
        return (selective_scan(*args, bool(delta_softplus)).numpy(),)


class VmddpmCrossScan(OpRun):
    op_domain = CUSTOM_DOMAIN

    def _run(self, x, scan_order=None, plugin_version=None, plugin_namespace=None):
        _plugin_identity("VmddpmCrossScan", plugin_version, plugin_namespace)
        return (cross_scan(_torch(x), _text(scan_order)).numpy(),)


class VmddpmCrossMerge(OpRun):
    op_domain = CUSTOM_DOMAIN

    def _run(self, ys, scan_order=None, height=None, width=None, plugin_version=None, plugin_namespace=None):
        _plugin_identity("VmddpmCrossMerge", plugin_version, plugin_namespace)
        return (cross_merge(_torch(ys), int(height), int(width), _text(scan_order)).numpy(),)


CUSTOM_OPS = [VmddpmSelectiveScan, VmddpmCrossScan, VmddpmCrossMerge]


class OnnxReferenceDenoiser:
    """``Denoiser`` over a custom-node graph: x (batch, C, H, W) float, t (batch,) int64 -> eps."""

    def __init__(self, graph: str | os.PathLike):
        self.graph = Path(graph)
        self.evaluator = ReferenceEvaluator(str(self.graph), new_ops=CUSTOM_OPS)
        x_type = self.evaluator.proto_.graph.input[0].type.tensor_type.elem_type
        self.io_dtype = np.float16 if x_type == 10 else np.float32  # 10: TensorProto.FLOAT16

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        feeds = {"x": x.detach().cpu().numpy().astype(self.io_dtype), "t": t.detach().cpu().numpy().astype(np.int64)}
        (eps,) = self.evaluator.run(["eps"], feeds)
        return torch.from_numpy(np.asarray(eps)).to(device=x.device, dtype=x.dtype)
