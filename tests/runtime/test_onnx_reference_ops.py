"""Our three custom nodes in onnx's ReferenceEvaluator against the pure-PyTorch oracle.

Each graph here is one node built with onnx.helper exactly as docs/design.md section 2 specifies it (domain,
attributes, dtypes), so these tests pin the node format the TensorRT plugins parse, independent of
the exporter. The evaluator's ops run the torch custom ops (native kernels when built); the
expected values come from ``*_ref``, the readable PyTorch implementation.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from vmddpm_deploy.errors import ArtifactError
from vmddpm_deploy.ops import cross_merge_ref, cross_scan_ref, selective_scan_ref
from vmddpm_deploy.runtime.onnx_reference_backend import (
    CUSTOM_OPS,
    OnnxReferenceDenoiser,
)

IDENTITY = {"plugin_version": "1", "plugin_namespace": "vmddpm"}
ELEMENT = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}
TOLERANCE = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float16: {"rtol": 3e-3, "atol": 5e-3}}


def one_node_model(op_type: str, inputs: dict[str, torch.dtype], output_dtype: torch.dtype, **attributes):
    node = helper.make_node(op_type, list(inputs), ["out"], domain="vmddpm", **attributes)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(name, ELEMENT[dtype], None) for name, dtype in inputs.items()],
        [helper.make_tensor_value_info("out", ELEMENT[output_dtype], None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vmddpm", 1)])


def evaluate(model: onnx.ModelProto, **feeds: torch.Tensor) -> torch.Tensor:
    (out,) = ReferenceEvaluator(model, new_ops=CUSTOM_OPS).run(None, {k: v.numpy() for k, v in feeds.items()})
    return torch.from_numpy(out)


def scan_inputs(dtype, batch=2, routes=4, dim=3, d_state=5, length=35, seed=0):
    g = torch.Generator().manual_seed(seed)
    kd = routes * dim
    return {
        "u": torch.randn(batch, kd, length, generator=g).to(dtype),
        "delta": (0.5 * torch.randn(batch, kd, length, generator=g)).to(dtype),
        "A": -torch.rand(kd, d_state, generator=g) - 0.5,
        "B": torch.randn(batch, routes, d_state, length, generator=g).to(dtype),
        "C": torch.randn(batch, routes, d_state, length, generator=g).to(dtype),
        "D": torch.randn(kd, generator=g),
        "delta_bias": torch.rand(kd, generator=g) - 2.0,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("delta_softplus", [1, 0])
def test_selective_scan_node(dtype, delta_softplus):
    inputs = scan_inputs(dtype)
    if not delta_softplus:  # without softplus dt must stay positive for a stable scan
        inputs["delta"] = inputs["delta"].abs()
        inputs["delta_bias"] = inputs["delta_bias"].abs()
    model = one_node_model("VmddpmSelectiveScan", {k: v.dtype for k, v in inputs.items()}, dtype,
                           delta_softplus=delta_softplus, **IDENTITY)
    y = evaluate(model, **inputs)
    expected = selective_scan_ref(*inputs.values(), delta_softplus=bool(delta_softplus))
    assert y.dtype == dtype and y.shape == inputs["u"].shape
    torch.testing.assert_close(y, expected, **TOLERANCE[dtype])


def test_selective_scan_without_delta_softplus_defaults_to_softplus_as_the_plugin_does():
    inputs = scan_inputs(torch.float32, seed=1)
    model = one_node_model("VmddpmSelectiveScan", {k: v.dtype for k, v in inputs.items()}, torch.float32, **IDENTITY)
    y = evaluate(model, **inputs)
    torch.testing.assert_close(y, selective_scan_ref(*inputs.values(), delta_softplus=True), **TOLERANCE[torch.float32])
    assert not torch.allclose(y, selective_scan_ref(*inputs.values(), delta_softplus=False), atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("order", ["cross", "regen"])
@pytest.mark.parametrize("height,width", [(3, 5), (7, 4), (6, 6)])
def test_cross_scan_and_merge_nodes(dtype, order, height, width):
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width)).to(dtype)
    scan = one_node_model("VmddpmCrossScan", {"x": dtype}, dtype, scan_order=order, **IDENTITY)
    ys = evaluate(scan, x=x)
    torch.testing.assert_close(ys, cross_scan_ref(x, order), rtol=0, atol=0)  # a gather: exact

    routes = torch.randn(2, 4, 3, height * width, generator=torch.Generator().manual_seed(1)).to(dtype)
    merge = one_node_model("VmddpmCrossMerge", {"ys": dtype}, dtype, scan_order=order, height=height, width=width,
                           **IDENTITY)
    merged = evaluate(merge, ys=routes)
    assert merged.shape == (2, 3, height, width)
    torch.testing.assert_close(merged, cross_merge_ref(routes, height, width, order), **TOLERANCE[dtype])


SCAN_NODE = ("VmddpmCrossScan", {"scan_order": "regen", **IDENTITY})
MERGE_NODE = ("VmddpmCrossMerge", {"scan_order": "cross", "height": 3, "width": 5, **IDENTITY})


@pytest.mark.parametrize(
    "op_type,attributes,phrase",
    [
        (SCAN_NODE[0], {**SCAN_NODE[1], "plugin_version": "2"}, "plugin_version='2'"),
        (SCAN_NODE[0], {**SCAN_NODE[1], "plugin_namespace": "other"}, "plugin_namespace='other'"),
        (SCAN_NODE[0], {"scan_order": "regen", "plugin_version": "1"}, "plugin_namespace=None"),
        (SCAN_NODE[0], {**SCAN_NODE[1], "scan_order": "zigzag"}, "'scan_order' is 'zigzag'"),
        (SCAN_NODE[0], dict(IDENTITY), "'scan_order' is None"),
        (SCAN_NODE[0], {**SCAN_NODE[1], "reverse": 1}, "unknown attribute 'reverse'"),
        (SCAN_NODE[0], {**SCAN_NODE[1], "plugin_version": 1}, "'plugin_version' must be a string"),
        (MERGE_NODE[0], {k: v for k, v in MERGE_NODE[1].items() if k != "width"}, "'width' is required"),
        (MERGE_NODE[0], {**MERGE_NODE[1], "height": "3"}, "'height' must be an int"),
        ("VmddpmSelectiveScan", {"delta_softplus": 2, **IDENTITY}, "'delta_softplus' must be 0 or 1"),
    ],
)
def test_nodes_breaking_the_plugin_contract_are_refused_when_loaded(op_type, attributes, phrase):
    model = one_node_model(op_type, {"x": torch.float32}, torch.float32, **attributes)
    with pytest.raises(ArtifactError, match=phrase.replace("(", r"\(")) as caught:
        ReferenceEvaluator(model, new_ops=CUSTOM_OPS)
    assert str(caught.value).startswith(f"{op_type} node")


def test_denoiser_refuses_a_graph_that_is_not_an_export(tmp_path):
    path = tmp_path / "scan.onnx"
    onnx.save(one_node_model(*SCAN_NODE[:1], {"x": torch.float32}, torch.float32, **SCAN_NODE[1]), path)
    with pytest.raises(ArtifactError, match="expected \\(x, t\\) -> eps"):
        OnnxReferenceDenoiser(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\xff not a protobuf")
    with pytest.raises(ArtifactError, match="cannot read ONNX graph"):
        OnnxReferenceDenoiser(tmp_path / "junk.onnx")

