"""The ONNX translations of the vmddpm:: ops, one op at a time: portable graphs in ONNX Runtime
against the PyTorch reference, and custom nodes carrying exactly the contract's attributes."""

from __future__ import annotations

import warnings

import onnx
import onnxruntime as ort
import pytest
import torch

from vmddpm_deploy.errors import ExportError
from vmddpm_deploy.export import onnx_functions
from vmddpm_deploy.export.exporter import check_graph
from vmddpm_deploy.export.onnx_functions import translation_table
from vmddpm_deploy.ops import (
    NUM_ROUTES,
    cross_merge,
    cross_merge_ref,
    cross_scan,
    cross_scan_ref,
    selective_scan,
    selective_scan_ref,
)

HEIGHT, WIDTH, DIM, STATE = 4, 6, 3, 5  # a non-square grid catches height/width mix-ups


class AllOps(torch.nn.Module):
    def __init__(self, order: str):
        super().__init__()
        self.order = order

    def forward(self, x, ys, u, delta, A, B, C, D, delta_bias):
        return (
            cross_scan(x, self.order),
            cross_merge(ys, HEIGHT, WIDTH, self.order),
            selective_scan(u, delta, A, B, C, D, delta_bias, True),
        )


def op_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(0)
    channels, length = NUM_ROUTES * DIM, HEIGHT * WIDTH
    # delta spans softplus values from ~0.01 to ~8 and A reaches -exp(log 5): |A| * sum(dt) over
    # a few tokens passes 87, where closed-form chunked scans divide by an underflowed exp.
    delta = torch.randn(batch, channels, length, generator=g) * 3
    A = -torch.arange(1, STATE + 1, dtype=torch.float32).repeat(channels, 1)
    return (
        torch.randn(batch, DIM, HEIGHT, WIDTH, generator=g),
        torch.randn(batch, NUM_ROUTES, DIM, length, generator=g),
        torch.randn(batch, channels, length, generator=g),
        delta,
        A,
        torch.randn(batch, NUM_ROUTES, STATE, length, generator=g),
        torch.randn(batch, NUM_ROUTES, STATE, length, generator=g),
        torch.randn(channels, generator=g),
        torch.randn(channels, generator=g),
    )


def export_ops(order: str, ops: str, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            AllOps(order), op_inputs(), dynamo=True, custom_translation_table=translation_table(ops), verbose=False
        )
    program.save(str(path))
    return onnx.load(str(path))


@pytest.mark.parametrize("order", ["cross", "regen"])
def test_portable_ops_match_the_reference_in_onnxruntime(tmp_path, order):
    model = export_ops(order, "portable", tmp_path / "ops.onnx")
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(str(tmp_path / "ops.onnx"), providers=["CPUExecutionProvider"])
    inputs = op_inputs()
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    scanned, merged, y = (torch.from_numpy(a) for a in session.run(None, feeds))

    x, ys, *scan_args = inputs
    assert torch.equal(scanned, cross_scan_ref(x, order))  # a gather: exact
    torch.testing.assert_close(merged, cross_merge_ref(ys, HEIGHT, WIDTH, order), rtol=1e-6, atol=1e-6)
    expected = selective_scan_ref(*scan_args)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def plugin_ops(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "ops.onnx"
    return path, export_ops("regen", "plugin", path)


def test_plugin_nodes_carry_the_contract_attributes(plugin_ops):
    path, model = plugin_ops
    custom = {node.op_type: node for node in model.graph.node if node.domain == "vmddpm"}
    assert sorted(custom) == ["VmddpmCrossMerge", "VmddpmCrossScan", "VmddpmSelectiveScan"]

    def attributes(node):
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    plugin = {"plugin_version": b"1", "plugin_namespace": b"vmddpm"}
    assert attributes(custom["VmddpmSelectiveScan"]) == {**plugin, "delta_softplus": 1}
    assert attributes(custom["VmddpmCrossScan"]) == {**plugin, "scan_order": b"regen"}
    assert attributes(custom["VmddpmCrossMerge"]) == {**plugin, "scan_order": b"regen", "height": 4, "width": 6}
    assert len(custom["VmddpmSelectiveScan"].input) == 7
    assert {(o.domain, o.version) for o in model.opset_import} >= {("vmddpm", 1)}
    check_graph(path)


@pytest.mark.parametrize(
    "break_node",
    [
        pytest.param(lambda node: node.attribute.remove(next(a for a in node.attribute if a.name == "scan_order")),
                     id="missing-scan_order"),
        pytest.param(lambda node: node.attribute.append(onnx.helper.make_attribute("stride", 2)), id="unknown-attr"),
    ],
)
def test_checker_rejects_custom_nodes_that_break_the_contract(tmp_path, plugin_ops, break_node):
    model = onnx.ModelProto()
    model.CopyFrom(plugin_ops[1])
    break_node(next(node for node in model.graph.node if node.op_type == "VmddpmCrossScan"))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    with pytest.raises(ExportError, match="broken.onnx failed onnx.checker"):
        check_graph(tmp_path / "broken.onnx")


def test_order_that_is_not_a_permutation_is_refused(monkeypatch):
    # cross_merge's portable form inverts each route; a route visiting a token twice has no inverse.
    monkeypatch.setattr(onnx_functions, "scan_table", lambda order, h, w: torch.zeros(NUM_ROUTES, h * w, dtype=torch.int64))
    with pytest.raises(ExportError, match="not a permutation"):
        onnx_functions.cross_merge_portable(None, 2, 2, "cross")
