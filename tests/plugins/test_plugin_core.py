"""The TensorRT plugins' TensorRT-free core (plugins/tensorrt/core) through a ctypes shim.

The core is C++ written apart from the Python package; these tests hold it to the Python
definitions it must agree with: scan tables against ``vmddpm_deploy.ops.scan_orders``, output
shapes against the shapes the reference ops actually return, the type table against the op
contract of docs/design.md section 2. Field types are TensorRT's ``PluginFieldType`` codes
(NvInferPluginBase.h), as the ONNX parser and a deserialised engine hand them to a creator.
"""

from __future__ import annotations

import ctypes
import itertools
from pathlib import Path

import pytest
import torch

from tests.plugins.cmake_build import REPO_ROOT, cmake_build, require_tools
from tests.plugins.plugin_fields import (
    FLOAT32,
    INT32,
    INT64,
    ONNX_ATTRIBUTE_TYPES,
    field_arrays,
    int_field,
    read_field,
    str_field,
)
from vmddpm_deploy.export.manifest import CUSTOM_OP_ATTRIBUTES
from vmddpm_deploy.ops.reference import (
    cross_merge_ref,
    cross_scan_ref,
    selective_scan_ref,
)
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES, SCAN_ORDERS, scan_table

OP_NAMES = ("VmddpmSelectiveScan", "VmddpmCrossScan", "VmddpmCrossMerge")
# core TensorType codes: vmddpm_dtype values for the io types, then "anything else".
TORCH_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
OTHER_TYPE = 3
ORDER_CODES = {"cross": 0, "regen": 1}
DYNAMIC = -1


class Attributes(ctypes.Structure):
    _fields_ = [("delta_softplus", ctypes.c_int32), ("scan_order", ctypes.c_int32), ("height", ctypes.c_int64), ("width", ctypes.c_int64)]

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.delta_softplus, self.scan_order, self.height, self.width)


class CoreError(Exception):
    pass


class Core:
    """Typed calls into libvmddpm_trt_core_shim (plugins/tensorrt/tests/core_shim.cpp)."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.error = ctypes.create_string_buffer(1024)

    def _check(self, status: int) -> None:
        if status != 0:
            raise CoreError(self.error.value.decode())

    def op(self, name: str) -> int:
        code = ctypes.c_int32()
        self._check(self.lib.vmddpm_core_op_code(name.encode(), ctypes.byref(code), self.error, 1024))
        return code.value

    def scan_table(self, order: str, h: int, w: int) -> torch.Tensor:
        # Grids the core must reject get a token buffer: it fails before writing.
        out = (ctypes.c_int64 * (NUM_ROUTES * h * w if 0 < h * w <= 2**20 else 1))()
        self._check(
            self.lib.vmddpm_core_scan_table(order.encode(), ctypes.c_int64(h), ctypes.c_int64(w), out, ctypes.c_int64(len(out)), self.error, 1024)
        )
        return torch.tensor(list(out), dtype=torch.int64).view(NUM_ROUTES, h * w)

    def field_specs(self, op: int) -> dict[str, int]:
        names = (ctypes.c_char_p * 8)()
        types = (ctypes.c_int32 * 8)()
        count = self.lib.vmddpm_core_field_specs(op, names, types, 8)
        return {names[i].decode(): types[i] for i in range(count)}

    def parse(self, op: int, fields: list[tuple[str, int, bytes, int]]) -> Attributes:
        """``fields``: (name, PluginFieldType, raw bytes, element count) as TensorRT passes them."""
        names, data, types, lengths, _buffers = field_arrays(fields)
        out = Attributes()
        self._check(self.lib.vmddpm_core_parse(op, len(fields), names, data, types, lengths, ctypes.byref(out), self.error, 1024))
        return out

    def serialize(self, op: int, attributes: Attributes) -> list[tuple[str, int, bytes, int]]:
        """The fields getFieldsToSerialize hands TensorRT, copied out as (name, type, bytes, length)."""
        self.lib.vmddpm_core_serialize.restype = ctypes.c_void_p
        handle = self.lib.vmddpm_core_serialize(op, ctypes.byref(attributes), self.error, 1024)
        if not handle:
            raise CoreError(self.error.value.decode())
        handle = ctypes.c_void_p(handle)
        try:
            fields = []
            for index in range(self.lib.vmddpm_core_serialized_count(handle)):
                name, data = ctypes.c_char_p(), ctypes.c_void_p()
                kind, length = ctypes.c_int32(), ctypes.c_int32()
                self.lib.vmddpm_core_serialized_field(handle, index, ctypes.byref(name), ctypes.byref(data), ctypes.byref(kind), ctypes.byref(length))
                fields.append(read_field(name.value, data.value, kind.value, length.value))
            return fields
        finally:
            self.lib.vmddpm_core_serialized_free(handle)

    @staticmethod
    def _shapes(shapes: list[tuple[int, ...]]):
        ranks = (ctypes.c_int32 * len(shapes))(*[len(s) for s in shapes])
        flat = [d for s in shapes for d in s]
        dims = (ctypes.c_int64 * max(len(flat), 1))(*flat)
        return ranks, dims

    def output_shape(self, op: int, attributes: Attributes, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        ranks, dims = self._shapes(shapes)
        out, rank = (ctypes.c_int64 * 8)(), ctypes.c_int32()
        self._check(self.lib.vmddpm_core_output_shape(op, ctypes.byref(attributes), len(shapes), ranks, dims, out, ctypes.byref(rank), self.error, 1024))
        return tuple(out[: rank.value])

    def output_rule(self, op: int, attributes: Attributes) -> list[tuple[int, list[tuple[int, int]]]]:
        """Per output axis: (constant, [(input, axis), ...]) meaning constant * prod(inputs[input][axis])."""
        max_factors = 4
        constants, counts = (ctypes.c_int64 * 8)(), (ctypes.c_int32 * 8)()
        factors, rank = (ctypes.c_int32 * (8 * max_factors * 2))(), ctypes.c_int32()
        self._check(self.lib.vmddpm_core_output_rule(op, ctypes.byref(attributes), max_factors, constants, counts, factors, ctypes.byref(rank), self.error, 1024))
        return [
            (constants[a], [(factors[(a * max_factors + j) * 2], factors[(a * max_factors + j) * 2 + 1]) for j in range(counts[a])])
            for a in range(rank.value)
        ]

    def io_type(self, op: int, types: list[int]) -> int:
        array = (ctypes.c_int32 * len(types))(*types)
        out = ctypes.c_int32()
        self._check(self.lib.vmddpm_core_io_type(op, len(types), array, ctypes.byref(out), self.error, 1024))
        return out.value

    def type_slots(self, op: int) -> list[int]:
        slots = (ctypes.c_int32 * 16)()
        return list(slots[: self.lib.vmddpm_core_type_slots(op, slots, 16)])

    def supports(self, op: int, position: int, types: list[int], linear: bool = True) -> bool:
        array = (ctypes.c_int32 * len(types))(*types)
        return bool(self.lib.vmddpm_core_supports(op, position, array, int(linear)))

    def selective_scan_sizes(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        ranks, dims = self._shapes(shapes)
        out = (ctypes.c_int64 * 5)()
        self._check(self.lib.vmddpm_core_selective_scan_sizes(ranks, dims, out, self.error, 1024))
        return tuple(out)

    def cross_sizes(self, op: int, attributes: Attributes, shape: tuple[int, ...]) -> tuple[int, ...]:
        _, dims = self._shapes([shape])
        out = (ctypes.c_int64 * 5)()
        self._check(self.lib.vmddpm_core_cross_sizes(op, ctypes.byref(attributes), len(shape), dims, out, self.error, 1024))
        return tuple(out)

    def cross_workspace_bytes(self, op: int, routes: int, length: int, kernel_bytes: int) -> int:
        out = ctypes.c_uint64()
        self._check(
            self.lib.vmddpm_core_cross_workspace_bytes(op, ctypes.c_int64(routes), ctypes.c_int64(length), ctypes.c_int64(kernel_bytes), ctypes.byref(out), self.error, 1024)
        )
        return out.value


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> Core:
    require_tools("cmake")
    build = tmp_path_factory.mktemp("trt-core")
    cmake_build(REPO_ROOT / "plugins" / "tensorrt" / "core", build, {"VMDDPM_TRT_CORE_SHIM": "ON"})
    return Core(build / "libvmddpm_trt_core_shim.so")


@pytest.fixture(scope="module")
def ops(core) -> dict[str, int]:
    return {name: core.op(name) for name in OP_NAMES}


def attrs(delta_softplus=1, order="cross", height=0, width=0) -> Attributes:
    return Attributes(delta_softplus, ORDER_CODES[order], height, width)


# --- scan tables -------------------------------------------------------------------------------

GRIDS = [(1, 1), (1, 6), (6, 1), (3, 3), (3, 5), (5, 3), (7, 4), (4, 7), (9, 5), (5, 9), (11, 13), (32, 32)]


@pytest.mark.parametrize("order", SCAN_ORDERS)
@pytest.mark.parametrize("height,width", GRIDS)
def test_scan_table_equals_python_scan_table(core, order, height, width):
    assert torch.equal(core.scan_table(order, height, width), scan_table(order, height, width))


def test_scan_orders_are_the_python_registry(core):
    # The test above covers every Python order; this one, that the C++ twin knows no order more.
    with pytest.raises(CoreError, match="choose one of ") as error:
        core.scan_table("no-such-order", 3, 3)
    accepted = str(error.value).split("choose one of ", 1)[1].split(", ")
    assert sorted(accepted) == sorted(SCAN_ORDERS)
    assert sorted(ORDER_CODES) == sorted(SCAN_ORDERS)


@pytest.mark.parametrize(
    "order,height,width,message",
    [("diagonal", 4, 4, "unknown scan order 'diagonal'; choose one of cross, regen"), ("cross", 0, 4, "at least 1x1"), ("regen", 65536, 65536, "2^31-1")],
)
def test_scan_table_rejects_bad_order_and_grid(core, order, height, width, message):
    with pytest.raises(CoreError, match=message.replace("^", r"\^")):
        core.scan_table(order, height, width)


# --- attributes ----------------------------------------------------------------------------------


def test_op_names_and_advertised_fields(core, ops):
    assert sorted(ops.values()) == [0, 1, 2]
    # The ONNX parser hands a creator exactly the attributes it advertises: those of docs/design.md section 2,
    # which the exporter's manifest lists per op.
    for name, attributes in CUSTOM_OP_ATTRIBUTES.items():
        assert core.field_specs(ops[name]) == {attribute: ONNX_ATTRIBUTE_TYPES[attribute] for attribute in attributes}
    with pytest.raises(CoreError, match="unknown vmddpm plugin 'VmddpmScan'"):
        core.op("VmddpmScan")


def test_selective_scan_attributes(core, ops):
    op = ops["VmddpmSelectiveScan"]
    assert core.parse(op, [int_field("delta_softplus", 0)]).delta_softplus == 0
    assert core.parse(op, [int_field("delta_softplus", 1, INT64)]).delta_softplus == 1
    assert core.parse(op, []).delta_softplus == 1, "the contract's default is delta_softplus=True"
    # What an ONNX node carries besides its own attributes is accepted when it names this library.
    assert core.parse(op, [str_field("plugin_version", "1", nul=True), str_field("plugin_namespace", "vmddpm")]).delta_softplus == 1


def test_cross_attributes(core, ops):
    scan, merge = ops["VmddpmCrossScan"], ops["VmddpmCrossMerge"]
    # Strings arrive with and without a terminating NUL.
    assert core.parse(scan, [str_field("scan_order", "regen", nul=True)]).as_tuple() == (1, ORDER_CODES["regen"], 0, 0)
    assert core.parse(scan, [str_field("scan_order", "cross")]).scan_order == ORDER_CODES["cross"]
    parsed = core.parse(merge, [str_field("scan_order", "cross"), int_field("height", 5), int_field("width", 7)])
    assert (parsed.scan_order, parsed.height, parsed.width) == (ORDER_CODES["cross"], 5, 7)


@pytest.mark.parametrize(
    "op_name,fields,message",
    [
        ("VmddpmSelectiveScan", [int_field("delta_softplus", 2)], "'delta_softplus' must be 0 or 1, got 2"),
        ("VmddpmSelectiveScan", [("delta_softplus", FLOAT32, bytes(ctypes.c_float(1.0)), 1)], "must be an integer \\(kINT32\\), got kFLOAT32"),
        ("VmddpmSelectiveScan", [("delta_softplus", INT32, bytes(8), 2)], "must hold one integer, got 2 values"),
        ("VmddpmSelectiveScan", [int_field("scan_order", 0)], "unknown attribute 'scan_order'; known: delta_softplus"),
        ("VmddpmSelectiveScan", [int_field("delta_softplus", 1), int_field("delta_softplus", 0)], "'delta_softplus' is given twice"),
        ("VmddpmCrossScan", [], "'scan_order' is required \\(one of cross, regen\\)"),
        ("VmddpmCrossScan", [str_field("scan_order", "zigzag")], "unknown scan order 'zigzag'; choose one of cross, regen"),
        ("VmddpmCrossScan", [int_field("scan_order", 1)], "'scan_order' must be a string \\(kCHAR\\), got kINT32"),
        # The scan reads its grid off its input (docs/design.md section 2 gives it scan_order only).
        ("VmddpmCrossScan", [str_field("scan_order", "cross"), int_field("height", 4)], "unknown attribute 'height'; known: scan_order$"),
        ("VmddpmCrossMerge", [str_field("scan_order", "cross"), int_field("height", -3), int_field("width", 4)], "'height' must be a positive int32, got -3"),
        ("VmddpmCrossMerge", [str_field("scan_order", "cross"), int_field("height", 4), int_field("width", 2**31, INT64)], "'width' must be a positive int32, got 2147483648"),
        ("VmddpmCrossMerge", [str_field("scan_order", "cross"), int_field("depth", 4)], "unknown attribute 'depth'; known: scan_order, height, width"),
        ("VmddpmCrossScan", [str_field("scan_order", "cr\0oss")], "contains a NUL character"),
        ("VmddpmCrossMerge", [str_field("scan_order", "cross")], "'height' and 'width' are required"),
        ("VmddpmCrossMerge", [str_field("scan_order", "cross"), int_field("width", 4)], "'height' and 'width' are required"),
        ("VmddpmCrossMerge", [str_field("plugin_version", "2")], "implements plugin_version '1', the node asks for '2'"),
        ("VmddpmCrossMerge", [str_field("plugin_namespace", "other")], "implements plugin_namespace 'vmddpm'"),
    ],
)
def test_attribute_errors_say_what_is_wrong(core, ops, op_name, fields, message):
    with pytest.raises(CoreError, match=message) as error:
        core.parse(ops[op_name], fields)
    text = str(error.value)
    assert text.startswith(op_name + ": ") and "\n" not in text


@pytest.mark.parametrize(
    "op_name,attributes",
    [
        ("VmddpmSelectiveScan", attrs(delta_softplus=1)),
        ("VmddpmSelectiveScan", attrs(delta_softplus=0)),
        ("VmddpmCrossScan", attrs(order="regen")),
        ("VmddpmCrossScan", attrs(order="cross")),
        ("VmddpmCrossMerge", attrs(order="regen", height=32, width=32)),
        ("VmddpmCrossMerge", attrs(order="cross", height=1, width=7)),
    ],
)
def test_serialized_fields_round_trip(core, ops, op_name, attributes):
    op = ops[op_name]
    fields = core.serialize(op, attributes)
    specs = core.field_specs(op)
    # Serialized in the types the creator advertises, so the same parser reads both sources.
    assert all(specs[name] == kind for name, kind, _, _ in fields)
    parsed = core.parse(op, fields)
    assert core.serialize(op, parsed) == fields, "serializing what was read gives the same fields"
    if op_name == "VmddpmSelectiveScan":
        assert parsed.delta_softplus == attributes.delta_softplus
    else:
        assert (parsed.scan_order, parsed.height, parsed.width) == (attributes.scan_order, attributes.height, attributes.width)
        order_field = next(data for name, _, data, _ in fields if name == "scan_order")
        assert order_field.rstrip(b"\0").decode() in SCAN_ORDERS


# --- shapes ----------------------------------------------------------------------------------------

BATCHES = [1, 2, 5, 32]


def selective_scan_shapes(batch: int, dim: int = 3, state: int = 5, length: int = 6) -> list[tuple[int, ...]]:
    channels = NUM_ROUTES * dim
    return [(batch, channels, length), (batch, channels, length), (channels, state), (batch, NUM_ROUTES, state, length),
            (batch, NUM_ROUTES, state, length), (channels,), (channels,)]  # fmt: skip


def evaluate_rule(rule, shapes) -> tuple[int, ...]:
    """A rule as TensorRT evaluates its IExprBuilder form: a dynamic factor makes the extent dynamic."""
    out = []
    for constant, factors in rule:
        values = [shapes[i][a] for i, a in factors]
        out.append(DYNAMIC if DYNAMIC in values else constant * (torch.tensor(values).prod().item() if values else 1))
    return tuple(out)


@pytest.mark.parametrize("batch", BATCHES)
def test_selective_scan_output_shape_is_the_reference_ops(core, ops, batch):
    op = ops["VmddpmSelectiveScan"]
    shapes = selective_scan_shapes(batch)
    tensors = [torch.rand(s) for s in shapes]
    tensors[2] = -tensors[2]  # A < 0, as A = -exp(A_log)
    expected = tuple(selective_scan_ref(*tensors, delta_softplus=True).shape)
    assert core.output_shape(op, attrs(), shapes) == expected
    assert evaluate_rule(core.output_rule(op, attrs()), shapes) == expected
    assert core.selective_scan_sizes(shapes) == (batch, NUM_ROUTES * 3, NUM_ROUTES, 5, 6)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("order", SCAN_ORDERS)
def test_cross_output_shapes_are_the_reference_ops(core, ops, batch, order):
    height, width, dim = 5, 7, 3
    x = torch.rand(batch, dim, height, width)
    scanned = cross_scan_ref(x, order)
    merged = cross_merge_ref(scanned, height, width, order)
    scan_attrs = attrs(order=order)
    merge_attrs = attrs(order=order, height=height, width=width)
    for op, attributes, inputs, expected in [
        (ops["VmddpmCrossScan"], scan_attrs, [tuple(x.shape)], tuple(scanned.shape)),
        (ops["VmddpmCrossMerge"], merge_attrs, [tuple(scanned.shape)], tuple(merged.shape)),
    ]:
        assert core.output_shape(op, attributes, inputs) == expected
        assert evaluate_rule(core.output_rule(op, attributes), inputs) == expected
    assert core.cross_sizes(ops["VmddpmCrossScan"], scan_attrs, tuple(x.shape)) == (batch, dim, height, width, NUM_ROUTES)
    assert core.cross_sizes(ops["VmddpmCrossMerge"], merge_attrs, tuple(scanned.shape)) == (batch, dim, height, width, NUM_ROUTES)


def test_dynamic_batch_stays_symbolic(core, ops):
    """At build time the batch is unknown: checks pass and only the batch axis stays dynamic."""
    shapes = selective_scan_shapes(DYNAMIC)
    assert core.output_shape(ops["VmddpmSelectiveScan"], attrs(), shapes) == (DYNAMIC, 12, 6)
    assert core.output_shape(ops["VmddpmCrossScan"], attrs(), [(DYNAMIC, 3, 5, 7)]) == (DYNAMIC, NUM_ROUTES, 3, 35)
    merge = attrs(height=5, width=7)
    assert core.output_shape(ops["VmddpmCrossMerge"], merge, [(DYNAMIC, NUM_ROUTES, 3, 35)]) == (DYNAMIC, 3, 5, 7)
    # The symbolic rule never reads the batch into a non-batch axis.
    for op, attributes, inputs in [
        (ops["VmddpmSelectiveScan"], attrs(), shapes),
        (ops["VmddpmCrossScan"], attrs(), [(DYNAMIC, 3, 5, 7)]),
        (ops["VmddpmCrossMerge"], merge, [(DYNAMIC, NUM_ROUTES, 3, 35)]),
    ]:
        rule = core.output_rule(op, attributes)
        assert rule[0] == (1, [(0, 0)])
        assert all((0, 0) not in factors for _, factors in rule[1:])


def replace(shapes, index, shape):
    return [shape if i == index else s for i, s in enumerate(shapes)]


@pytest.mark.parametrize(
    "op_name,attributes,shapes,message",
    [
        ("VmddpmSelectiveScan", attrs(), selective_scan_shapes(2)[:6], "expects 7 inputs, got 6"),
        ("VmddpmSelectiveScan", attrs(), replace(selective_scan_shapes(2), 1, (2, 12, 7)), "delta \\(batch, channels, length\\) axis 2 is 7 but u"),
        ("VmddpmSelectiveScan", attrs(), replace(selective_scan_shapes(2), 2, (12,)), "input A must be \\(channels, state\\) \\(rank 2\\), got rank 1"),
        ("VmddpmSelectiveScan", attrs(), replace(selective_scan_shapes(2), 3, (2, 4, 6, 6)), "B .* axis 2 is 6 but A \\(channels, state\\) axis 1 is 5"),
        ("VmddpmSelectiveScan", attrs(), replace(selective_scan_shapes(2), 6, (11,)), "delta_bias \\(channels,\\) axis 0 is 11"),
        ("VmddpmSelectiveScan", attrs(), selective_scan_shapes(2, state=300), "state \\(300, A axis 1\\) exceeds the kernels' maximum of 256"),
        ("VmddpmSelectiveScan", attrs(), [(2, 10, 6), (2, 10, 6), (10, 5), (2, 4, 5, 6), (2, 4, 5, 6), (10,), (10,)], "channels \\(10, u axis 1\\) is not a multiple of routes \\(4"),
        ("VmddpmCrossScan", attrs(), [(2, 3, 0, 8)], "x \\(batch, dim, height, width\\) axis 2 must be at least 1, got 0"),
        ("VmddpmCrossScan", attrs(), [(2, 3, 65536, 65536)], "height\\*width \\(65536x65536\\) exceeds 2\\^31-1 positions"),
        ("VmddpmCrossScan", attrs(), [(2, 3, 8)], "input x must be \\(batch, dim, height, width\\) \\(rank 4\\), got rank 3"),
        ("VmddpmCrossMerge", attrs(height=5, width=7), [(2, 4, 3, 36)], "axis 3 must be 35 \\(attributes height\\*width\\), got 36"),
        ("VmddpmCrossMerge", attrs(height=5, width=7), [(2, 2, 3, 35)], "axis 1 must be 4 \\(the scan orders' route count\\), got 2"),
    ],
)
def test_shape_errors_say_what_is_wrong(core, ops, op_name, attributes, shapes, message):
    with pytest.raises(CoreError, match=message) as error:
        core.output_shape(ops[op_name], attributes, shapes)
    assert str(error.value).startswith(op_name + ": ")


# --- types and workspace ---------------------------------------------------------------------------

# The op contract: A, D and delta_bias are fp32; every other tensor of an op shares its io type T.
FP32_ONLY_POSITIONS = {"VmddpmSelectiveScan": {2, 5, 6}, "VmddpmCrossScan": set(), "VmddpmCrossMerge": set()}
TENSOR_COUNTS = {"VmddpmSelectiveScan": 8, "VmddpmCrossScan": 2, "VmddpmCrossMerge": 2}


def contract_allows(op_name: str, types: tuple[int, ...]) -> bool:
    fp32_only = FP32_ONLY_POSITIONS[op_name]
    io = [t for i, t in enumerate(types) if i not in fp32_only]
    return all(types[i] == TORCH_TYPES[torch.float32] for i in fp32_only) and io[0] in TORCH_TYPES.values() and len(set(io)) == 1


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_type_table_is_the_contract(core, ops, op_name):
    op = ops[op_name]
    count = TENSOR_COUNTS[op_name]
    assert len(core.type_slots(op)) == count
    candidates = [*TORCH_TYPES.values(), OTHER_TYPE]
    # TensorRT asks position by position; a combination is accepted when every position is.
    # Positions whose type the contract pins to fp32 are fixed so the product stays small.
    free = [i for i in range(count) if i not in FP32_ONLY_POSITIONS[op_name]]
    for pinned in itertools.product(candidates, repeat=len(FP32_ONLY_POSITIONS[op_name])):
        for chosen in itertools.product(candidates, repeat=len(free)):
            types = [0] * count
            for i, t in zip(free, chosen):
                types[i] = t
            for i, t in zip(sorted(FP32_ONLY_POSITIONS[op_name]), pinned):
                types[i] = t
            accepted = all(core.supports(op, position, types) for position in range(count))
            assert accepted == contract_allows(op_name, tuple(types)), types
    assert not core.supports(op, 0, [TORCH_TYPES[torch.float32]], linear=False), "only linear layouts"


@pytest.mark.parametrize("op_name", OP_NAMES)
@pytest.mark.parametrize("io", [torch.float32, torch.float16, torch.bfloat16])
def test_io_type_is_the_output_type(core, ops, op_name, io):
    """getOutputDataTypes: the output has the io type T, which every accepted combination fixes."""
    inputs = [TORCH_TYPES[torch.float32 if i in FP32_ONLY_POSITIONS[op_name] else io] for i in range(TENSOR_COUNTS[op_name] - 1)]
    assert core.io_type(ops[op_name], inputs) == TORCH_TYPES[io]


@pytest.mark.parametrize(
    "op_name,types,message",
    [
        ("VmddpmCrossScan", [OTHER_TYPE], "input x is a type other than float32, float16 and bfloat16; the kernels take"),
        ("VmddpmCrossMerge", [0, 0], "expects 1 input types, got 2"),
        ("VmddpmSelectiveScan", [1, 1, 1, 1, 1, 0, 0], "input A is float16 but must be float32 whatever the io type"),
        ("VmddpmSelectiveScan", [2, 2, 0, 1, 2, 0, 0], "input B is float16 but must be bfloat16 like u"),
        ("VmddpmSelectiveScan", [0, 0, 0, 0, 0, 0, 2], "input delta_bias is bfloat16 but must be float32"),
    ],
)
def test_io_type_errors_name_the_input(core, ops, op_name, types, message):
    with pytest.raises(CoreError, match=message) as error:
        core.io_type(ops[op_name], types)
    assert str(error.value).startswith(op_name + ": ")


def test_kernel_sizes_need_concrete_shapes(core, ops):
    """onShapeChange sizes the kernels: a dynamic extent left there is refused, not passed on as -1."""
    with pytest.raises(CoreError, match="input u axis 0 is still dynamic"):
        core.selective_scan_sizes(selective_scan_shapes(DYNAMIC))
    with pytest.raises(CoreError, match="input ys axis 0 is still dynamic"):
        core.cross_sizes(ops["VmddpmCrossMerge"], attrs(height=5, width=7), (DYNAMIC, NUM_ROUTES, 3, 35))


@pytest.mark.parametrize("height,width", [(1, 1), (5, 7), (32, 32), (128, 128)])
def test_cross_workspace_is_the_merge_kernels_own(core, ops, height, width):
    """The scan table lives in device memory the plugin keeps per shape, not in the workspace:
    cross_scan needs none, cross_merge only what its kernel asks for (the inverted table)."""
    length = height * width
    merge_kernel_bytes = NUM_ROUTES * length * 4
    assert core.cross_workspace_bytes(ops["VmddpmCrossScan"], NUM_ROUTES, length, 0) == 0
    assert core.cross_workspace_bytes(ops["VmddpmCrossMerge"], NUM_ROUTES, length, merge_kernel_bytes) == merge_kernel_bytes
    with pytest.raises(CoreError, match="rejected routes"):
        core.cross_workspace_bytes(ops["VmddpmCrossMerge"], NUM_ROUTES, length, -1)
    with pytest.raises(CoreError, match="both must be positive"):
        core.cross_workspace_bytes(ops["VmddpmCrossScan"], NUM_ROUTES, 0, 0)
