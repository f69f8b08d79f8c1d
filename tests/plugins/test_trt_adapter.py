"""The IPluginV3 adapters of libvmddpm_trt_plugins.so, driven through TensorRT's own interfaces.

There is no TensorRT runtime without a GPU, so plugins/tensorrt/tests/adapter_shim.cpp plays its
part: it dlopens the built library, enters through getCreators / setLoggerFinder as
IPluginRegistry::loadLibrary does, and calls the creators and plugins as the ONNX parser, the
builder and the runtime would, with stand-ins for TensorRT's logger and expression builder.
Expected values come from outside the plugin code: the attribute names from the exporter's
manifest (docs/design.md section 3), output shapes from the reference ops, dtypes from the op contract.
Engines built and run by a real TensorRT on a GPU are tests/tensorrt/.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.plugins.cmake_build import REPO_ROOT
from tests.plugins.plugin_fields import (
    CHAR,
    ONNX_ATTRIBUTE_TYPES,
    Field,
    field_arrays,
    int_field,
    read_field,
    str_field,
)
from vmddpm_deploy.export.manifest import (
    CUSTOM_OP_ATTRIBUTES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from vmddpm_deploy.ops.reference import (
    cross_merge_ref,
    cross_scan_ref,
    selective_scan_ref,
)
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES

# The session fixture compiles the plugins (about half a minute on two cores).
pytestmark = pytest.mark.slow

# nvinfer1::DataType and TensorFormat codes (NvInferRuntimeBase.h, NvInferRuntime.h).
TRT_FLOAT, TRT_HALF, TRT_INT32, TRT_BF16 = 0, 1, 3, 7
TRT_TYPES = {torch.float32: TRT_FLOAT, torch.float16: TRT_HALF, torch.bfloat16: TRT_BF16}
LINEAR, CHW2 = 0, 1
BUILD, RUNTIME = 0, 1  # nvinfer1::TensorRTPhase

Shape = tuple[int, ...]


class PluginCallError(Exception):
    """A plugin method returned failure; the message is what it logged."""


class Shim:
    """Typed calls into libvmddpm_trt_adapter_shim (one plugin library per process)."""

    def __init__(self, shim_path, plugins_path):
        self.lib = ctypes.CDLL(str(shim_path))
        self.lib.shim_create.restype = ctypes.c_void_p
        self.lib.shim_clone.restype = ctypes.c_void_p
        self.lib.shim_attach.restype = ctypes.c_void_p
        self.lib.shim_fields_to_serialize.restype = ctypes.c_void_p
        self.lib.shim_workspace.restype = ctypes.c_int64
        error = ctypes.create_string_buffer(2048)
        if self.lib.shim_open(str(plugins_path).encode(), error, len(error)) != 0:
            raise RuntimeError(error.value.decode())
        self.creators = {}
        for index in range(self.lib.shim_creator_count()):
            kind, name, version, namespace = (ctypes.c_char_p() for _ in range(4))
            major = ctypes.c_int32()
            status = self.lib.shim_creator(index, *map(ctypes.byref, (kind, major, name, version, namespace)))
            assert (status, kind.value, major.value) == (0, b"PLUGIN CREATOR_V3ONE", 1)
            self.creators[name.value.decode()] = (index, version.value.decode(), namespace.value.decode())

    def take_log(self) -> str:
        buffer = ctypes.create_string_buffer(65536)
        self.lib.shim_take_log(buffer, len(buffer))
        return buffer.value.decode()

    def _check(self, status: int) -> None:
        if status != 0:
            raise PluginCallError(self.take_log())

    def field_names(self, op: str) -> dict[str, int]:
        names, types = (ctypes.c_char_p * 16)(), (ctypes.c_int32 * 16)()
        count = self.lib.shim_creator_fields(self.creators[op][0], names, types, 16)
        return {names[i].decode(): types[i] for i in range(count)}

    def create(self, op: str, fields: list[Field], layer: str = "node", phase: int = BUILD) -> Plugin:
        names, data, types, lengths, _buffers = field_arrays(fields)
        handle = self.lib.shim_create(self.creators[op][0], layer.encode(), phase, len(fields), names, data, types, lengths)
        if not handle:
            raise PluginCallError(self.take_log())
        return Plugin(self, handle, op)


def _shapes(shapes: list[Shape]):
    ranks = (ctypes.c_int32 * len(shapes))(*[len(s) for s in shapes])
    flat = [d for s in shapes for d in s]
    return ranks, (ctypes.c_int64 * len(flat))(*flat)


class Plugin:
    """One IPluginV3 made by a creator; deleted with the Python object."""

    def __init__(self, shim: Shim, handle: int, op: str):
        self.shim, self.lib, self.handle, self.op = shim, shim.lib, ctypes.c_void_p(handle), op

    def __del__(self):
        self.lib.shim_destroy(self.handle)

    def identity(self) -> tuple[str, str, str, str, int]:
        name, version, namespace, core_kind = (ctypes.c_char_p() for _ in range(4))
        capabilities = self.lib.shim_identity(self.handle, *map(ctypes.byref, (name, version, namespace, core_kind)))
        return name.value.decode(), version.value.decode(), namespace.value.decode(), core_kind.value.decode(), capabilities

    def output_shape(self, shapes: list[Shape]) -> tuple[Shape, list[str]]:
        """Output extents (-1 where symbolic) and their spelling; -1 inputs are dynamic extents."""
        ranks, dims = _shapes(shapes)
        out, rank, text = (ctypes.c_int64 * 8)(), ctypes.c_int32(), ctypes.create_string_buffer(1024)
        self.shim._check(self.lib.shim_output_shapes(self.handle, len(shapes), ranks, dims, out, ctypes.byref(rank), text, len(text)))
        return tuple(out[: rank.value]), text.value.decode().split(";")

    def output_type(self, types: list[int]) -> int:
        out = ctypes.c_int32()
        self.shim._check(self.lib.shim_output_type(self.handle, len(types), (ctypes.c_int32 * len(types))(*types), ctypes.byref(out)))
        return out.value

    def supports(self, position: int, types: list[int], formats: list[int] | None = None) -> bool:
        formats = formats or [LINEAR] * len(types)
        array = (ctypes.c_int32 * len(types))
        return bool(self.lib.shim_supports(self.handle, position, len(types), array(*types), array(*formats)))

    def configure(self, shapes: list[Shape], types: list[int]) -> None:
        ranks, dims = _shapes(shapes)
        self.shim._check(self.lib.shim_configure(self.handle, len(shapes), ranks, dims, (ctypes.c_int32 * len(types))(*types)))

    def workspace(self, max_shapes: list[Shape], types: list[int]) -> int:
        ranks, dims = _shapes(max_shapes)
        return self.lib.shim_workspace(self.handle, len(max_shapes), ranks, dims, (ctypes.c_int32 * len(types))(*types))

    def fields_to_serialize(self) -> list[Field]:
        count = ctypes.c_int32()
        fields = self.lib.shim_fields_to_serialize(self.handle, ctypes.byref(count))
        if not fields:
            raise PluginCallError(self.shim.take_log())
        result = []
        for index in range(count.value):
            name, data, kind, length = ctypes.c_char_p(), ctypes.c_void_p(), ctypes.c_int32(), ctypes.c_int32()
            self.lib.shim_field(ctypes.c_void_p(fields), index, *map(ctypes.byref, (name, data, kind, length)))
            result.append(read_field(name.value, data.value, kind.value, length.value))
        return result

    def clone(self) -> Plugin:
        return Plugin(self.shim, self.lib.shim_clone(self.handle), self.op)

    def attach_to_context(self) -> Plugin:
        return Plugin(self.shim, self.lib.shim_attach(self.handle), self.op)

    def on_shape_change(self, shapes: list[Shape], types: list[int]) -> None:
        ranks, dims = _shapes(shapes)
        self.shim._check(self.lib.shim_on_shape_change(self.handle, len(shapes), ranks, dims, (ctypes.c_int32 * len(types))(*types)))

    def enqueue_without_data(self, shapes: list[Shape], types: list[int]) -> None:
        ranks, dims = _shapes(shapes)
        self.shim._check(self.lib.shim_enqueue(self.handle, len(shapes), ranks, dims, (ctypes.c_int32 * len(types))(*types)))


@pytest.fixture(scope="module")
def shim(trt_plugin_build) -> Shim:
    return Shim(trt_plugin_build.adapter_shim, trt_plugin_build.plugins)


# ONNX nodes' attributes as the parser hands them over (ints as kINT32, strings as kCHAR).
def onnx_fields(op: str, order: str = "cross", height: int = 5, width: int = 7, delta_softplus: int = 1) -> list[Field]:
    values = {"delta_softplus": delta_softplus, "scan_order": order, "height": height, "width": width}
    return [str_field(name, values[name]) if ONNX_ATTRIBUTE_TYPES[name] == CHAR else int_field(name, values[name]) for name in CUSTOM_OP_ATTRIBUTES[op]]


def selective_scan_shapes(batch: int, dim: int = 3, state: int = 5, length: int = 6) -> list[Shape]:
    channels = NUM_ROUTES * dim
    return [(batch, channels, length), (batch, channels, length), (channels, state), (batch, NUM_ROUTES, state, length),
            (batch, NUM_ROUTES, state, length), (channels,), (channels,)]  # fmt: skip


def selective_scan_types(io: int) -> list[int]:
    return [io, io, TRT_FLOAT, io, io, TRT_FLOAT, TRT_FLOAT]  # A, D, delta_bias: always float32


# --- registration ----------------------------------------------------------------------------------


def test_creators_are_the_contracts_ops(shim):
    assert sorted(shim.creators) == sorted(CUSTOM_OP_ATTRIBUTES)
    assert {version for _, version, _ in shim.creators.values()} == {PLUGIN_VERSION}
    assert {namespace for *_, namespace in shim.creators.values()} == {PLUGIN_NAMESPACE}
    assert shim.lib.shim_plugin_creator_count() == 0, "no IPluginCreator (V2) creators: the plugins are IPluginV3"


@pytest.mark.parametrize("op", sorted(CUSTOM_OP_ATTRIBUTES))
def test_creators_advertise_the_onnx_attributes(shim, op):
    """The ONNX parser passes a creator exactly the attributes it advertises, in the advertised types."""
    assert shim.field_names(op) == {name: ONNX_ATTRIBUTE_TYPES[name] for name in CUSTOM_OP_ATTRIBUTES[op]}


@pytest.mark.parametrize("op", sorted(CUSTOM_OP_ATTRIBUTES))
@pytest.mark.parametrize("phase", [BUILD, RUNTIME])
def test_created_plugins_are_complete_iplugin_v3(shim, op, phase):
    plugin = shim.create(op, onnx_fields(op), phase=phase)
    # Core, build and runtime capabilities, each answering with its own interface.
    assert plugin.identity() == (op, PLUGIN_VERSION, PLUGIN_NAMESPACE, "PLUGIN_V3ONE_CORE", 0b111)
    assert shim.take_log() == ""


def test_bad_attributes_fail_creation_with_a_message(shim):
    with pytest.raises(PluginCallError, match="cannot create layer 'merge_3': VmddpmCrossMerge: attribute 'scan_order': unknown scan order 'spiral'"):
        shim.create("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", order="spiral"), layer="merge_3")
    with pytest.raises(PluginCallError, match="'height' and 'width' are required"):
        shim.create("VmddpmCrossMerge", [str_field("scan_order", "cross")])


@pytest.mark.parametrize("major", [11, 0], ids=["tensorrt-11", "not-tensorrt"])
def test_messages_reach_the_logger_of_whichever_tensorrt_loaded_the_plugins(shim, major, capfd):
    """TensorRT 11's ILoggerFinder and ILogger are IVersionedInterfaces: findLogger and log sit two
    virtual slots later than in TensorRT 10, whose headers the library is built with. The plugins
    ask the library that defines the finder for its major version (getInferLibMajorVersion) and
    call it in that layout; a finder from anything else is called as these headers lay it out. Had
    they called TensorRT 11's finder in 10's layout, the message would have gone to standard error
    (or worse) and not to the logger."""
    capfd.readouterr()
    shim.lib.shim_play_tensorrt(major)
    try:
        with pytest.raises(PluginCallError, match="ERROR: vmddpm plugins: cannot create layer 'scan_9': VmddpmCrossScan: attribute 'scan_order': unknown scan order 'spiral'"):
            shim.create("VmddpmCrossScan", onnx_fields("VmddpmCrossScan", order="spiral"), layer="scan_9")
    finally:
        shim.lib.shim_play_tensorrt(10)
    assert "vmddpm" not in capfd.readouterr().err, "the message went to standard error, not to TensorRT's logger"


# --- build phase -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes_are_the_reference_ops(shim, batch):
    tensors = [torch.rand(s) for s in selective_scan_shapes(batch)]
    tensors[2] = -tensors[2]  # A < 0
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"))
    expected = tuple(selective_scan_ref(*tensors, delta_softplus=True).shape)
    assert plugin.output_shape([tuple(t.shape) for t in tensors])[0] == expected

    for order in ("cross", "regen"):
        x = torch.rand(batch, 3, 5, 7)
        scanned = cross_scan_ref(x, order)
        merged = cross_merge_ref(scanned, 5, 7, order)
        scan = shim.create("VmddpmCrossScan", onnx_fields("VmddpmCrossScan", order=order))
        merge = shim.create("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", order=order, height=5, width=7))
        assert scan.output_shape([tuple(x.shape)])[0] == tuple(scanned.shape)
        assert merge.output_shape([tuple(scanned.shape)])[0] == tuple(merged.shape)


def test_dynamic_batch_stays_symbolic(shim):
    """At build time the batch is an expression: the output's batch is the input's, the rest constants."""
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"))
    assert plugin.output_shape(selective_scan_shapes(-1)) == ((-1, 12, 6), ["in0.d0", "12", "6"])
    scan = shim.create("VmddpmCrossScan", onnx_fields("VmddpmCrossScan"))
    assert scan.output_shape([(-1, 3, 5, 7)]) == ((-1, NUM_ROUTES, 3, 35), ["in0.d0", str(NUM_ROUTES), "3", "35"])
    # A grid that is dynamic too stays a product of the input's extents.
    assert scan.output_shape([(-1, 3, -1, -1)]) == ((-1, NUM_ROUTES, 3, -1), ["in0.d0", str(NUM_ROUTES), "3", "in0.d2*in0.d3"])
    merge = shim.create("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", height=5, width=7))
    assert merge.output_shape([(-1, NUM_ROUTES, 3, 35)]) == ((-1, 3, 5, 7), ["in0.d0", "3", "5", "7"])


def test_bad_shapes_fail_the_build_with_a_message(shim):
    merge = shim.create("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", height=5, width=7), layer="merge_9")
    with pytest.raises(PluginCallError, match=r"VmddpmCrossMerge 'merge_9' getOutputShapes: ys .* axis 3 must be 35 \(attributes height\*width\), got 36"):
        merge.output_shape([(-1, NUM_ROUTES, 3, 36)])
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"))
    with pytest.raises(PluginCallError, match="expects 7 inputs and 1 output, got 6 and 1"):
        plugin.output_shape(selective_scan_shapes(2)[:6])
    with pytest.raises(PluginCallError, match=r"configurePlugin: state \(300, A axis 1\) exceeds the kernels' maximum"):
        plugin.configure(selective_scan_shapes(-1, state=300), selective_scan_types(TRT_FLOAT))


@pytest.mark.parametrize("io", [torch.float32, torch.float16, torch.bfloat16])
def test_output_type_is_the_io_type(shim, io):
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"))
    assert plugin.output_type(selective_scan_types(TRT_TYPES[io])) == TRT_TYPES[io]
    for op in ("VmddpmCrossScan", "VmddpmCrossMerge"):
        assert shim.create(op, onnx_fields(op)).output_type([TRT_TYPES[io]]) == TRT_TYPES[io]


def test_output_type_refuses_what_the_kernels_cannot_take(shim):
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"), layer="ss_1")
    with pytest.raises(PluginCallError, match="VmddpmSelectiveScan 'ss_1' getOutputDataTypes: input A is float16 but must be float32"):
        plugin.output_type([TRT_HALF] * 7)
    with pytest.raises(PluginCallError, match="input x is a type other than float32, float16 and bfloat16"):
        shim.create("VmddpmCrossScan", onnx_fields("VmddpmCrossScan")).output_type([TRT_INT32])


@pytest.mark.parametrize("io", [torch.float32, torch.float16, torch.bfloat16])
def test_format_combinations_follow_the_contract(shim, io):
    """TensorRT asks position by position; linear layout only, A/D/delta_bias float32, the rest T."""
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"))
    t = TRT_TYPES[io]
    types = [*selective_scan_types(t), t]
    assert all(plugin.supports(position, types) for position in range(8))
    assert not plugin.supports(2, [t, t, TRT_HALF if t != TRT_HALF else TRT_BF16, t, t, 0, 0, t]), "A in another type than float32"
    mixed = TRT_FLOAT if t != TRT_FLOAT else TRT_HALF
    assert not plugin.supports(7, [*selective_scan_types(t), mixed]), "y in another type than u"
    assert not plugin.supports(0, types, [CHW2] + [LINEAR] * 7), "a vectorised layout"
    assert not plugin.supports(8, types), "a position past the tensors"
    for op in ("VmddpmCrossScan", "VmddpmCrossMerge"):
        cross = shim.create(op, onnx_fields(op))
        assert cross.supports(0, [t, t]) and cross.supports(1, [t, t])
        assert not cross.supports(1, [t, mixed])
        assert not cross.supports(0, [TRT_INT32, TRT_INT32])


@pytest.mark.parametrize("height,width", [(5, 7), (32, 32), (128, 128)])
def test_workspace_holds_only_the_merge_inverse(shim, height, width):
    """The scan table stays in device memory per shape (uploaded in onShapeChange), so no enqueue
    copies it: the workspace holds only the merge kernel's own inverted table."""
    length = height * width
    inverse_bytes = NUM_ROUTES * length * 4  # the merge kernel's int32 inverted table
    scan = shim.create("VmddpmCrossScan", onnx_fields("VmddpmCrossScan"))
    # Sized for the largest shapes TensorRT will run: the profile's max (batch is irrelevant).
    assert scan.workspace([(32, 3, height, width)], [TRT_HALF]) == 0
    merge = shim.create("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", height=height, width=width))
    assert merge.workspace([(32, NUM_ROUTES, 3, length)], [TRT_HALF]) == inverse_bytes
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"))
    assert plugin.workspace(selective_scan_shapes(32), selective_scan_types(TRT_HALF)) == 0


# --- serialisation and cloning -------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,fields",
    [
        ("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan", delta_softplus=0)),
        ("VmddpmCrossScan", onnx_fields("VmddpmCrossScan", order="regen")),
        ("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", order="regen", height=32, width=16)),
    ],
)
def test_serialised_fields_rebuild_the_plugin(shim, op, fields):
    """What an engine stores (getFieldsToSerialize) makes the same plugin at runtime, as do clones."""
    built = shim.create(op, fields)
    stored = built.fields_to_serialize()
    assert {name: kind for name, kind, _, _ in stored} == shim.field_names(op)
    for name, kind, data, _ in stored:  # the ONNX node's values, read back
        original = next(value for field, _, value, _ in fields if field == name)
        assert (data.rstrip(b"\0") if kind == CHAR else data) == original
    runtime = shim.create(op, stored, phase=RUNTIME)
    assert runtime.fields_to_serialize() == stored
    assert built.clone().fields_to_serialize() == stored
    assert built.attach_to_context().fields_to_serialize() == stored
    assert shim.take_log() == ""


# Run under LD_PRELOAD of the failing operator new: clone a plugin that has seen shapes while the
# k-th allocation of the call fails, for k = 0, 1, ...; print [returned a plugin, what it logged].
CLONE_UNDER_FAILING_NEW = """
import ctypes, json, sys
from tests.plugins.test_trt_adapter import TRT_HALF, Shim, onnx_fields, selective_scan_shapes, selective_scan_types
shim = Shim(sys.argv[1], sys.argv[2])
# A layer name too long for the short-string buffer, so that copying it allocates.
plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"), layer="encoder.levels.0.blocks.1.scan")
plugin.on_shape_change(selective_scan_shapes(2), selective_scan_types(TRT_HALF))
fail_after = ctypes.CDLL(None).failing_new_after
outcomes = []
for allocations in range(int(sys.argv[3])):
    fail_after(allocations)
    handle = shim.lib.shim_clone(plugin.handle)
    fail_after(-1)
    outcomes.append([bool(handle), shim.take_log()])
    if handle:
        shim.lib.shim_destroy(ctypes.c_void_p(handle))
print(json.dumps(outcomes))
"""


def test_clone_returns_null_when_copying_the_plugin_runs_out_of_memory(trt_plugin_build):
    """clone() is noexcept: an allocation that fails while copying the plugin (the object, its
    layer name, its announced shapes) must give TensorRT a null plugin and a logged reason, not
    std::terminate."""
    attempts = 12
    environment = {**os.environ, "LD_PRELOAD": str(trt_plugin_build.failing_new)}
    command = [sys.executable, "-c", CLONE_UNDER_FAILING_NEW, str(trt_plugin_build.adapter_shim), str(trt_plugin_build.plugins), str(attempts)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    failed = [log for cloned, log in outcomes if not cloned]
    # The object's own allocation and at least one copy inside its constructor failed...
    assert len(failed) >= 2, outcomes
    assert all("VmddpmSelectiveScan 'encoder.levels.0.blocks.1.scan' clone: std::bad_alloc" in log for log in failed), failed
    # ...and once every allocation of a clone succeeds, clones work again, silently.
    assert outcomes[-1] == [True, ""], outcomes


# --- runtime -----------------------------------------------------------------------------------------


def test_enqueue_reaches_the_kernels_only_for_announced_shapes(shim):
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"), layer="ss_7")
    types = selective_scan_types(TRT_HALF)
    with pytest.raises(PluginCallError, match="'ss_7' enqueue: called with input shapes that onShapeChange did not accept"):
        plugin.enqueue_without_data(selective_scan_shapes(2), types)
    plugin.on_shape_change(selective_scan_shapes(2), types)
    with pytest.raises(PluginCallError, match="did not accept"):
        plugin.enqueue_without_data(selective_scan_shapes(3), types)
    # The announced shapes reach the kernels' C ABI, which refuses the null tensors this test
    # passes before it touches CUDA (so no GPU is needed to get this far).
    with pytest.raises(PluginCallError, match="'ss_7' enqueue: selective_scan_cuda: u is a null pointer"):
        plugin.enqueue_without_data(selective_scan_shapes(2), types)
    # A clone is as ready as its original (TensorRT clones plugins into execution contexts).
    with pytest.raises(PluginCallError, match="selective_scan_cuda: u is a null pointer"):
        plugin.attach_to_context().enqueue_without_data(selective_scan_shapes(2), types)


def test_on_shape_change_refuses_shapes_and_types_the_kernels_cannot_run(shim):
    plugin = shim.create("VmddpmSelectiveScan", onnx_fields("VmddpmSelectiveScan"), layer="ss_8")
    with pytest.raises(PluginCallError, match=r"'ss_8' onShapeChange: channels \(10, u axis 1\) is not a multiple of routes"):
        plugin.on_shape_change([(2, 10, 6), (2, 10, 6), (10, 5), (2, 4, 5, 6), (2, 4, 5, 6), (10,), (10,)], selective_scan_types(TRT_FLOAT))
    with pytest.raises(PluginCallError, match="onShapeChange: input D is bfloat16 but must be float32"):
        plugin.on_shape_change(selective_scan_shapes(2), [TRT_BF16, TRT_BF16, TRT_FLOAT, TRT_BF16, TRT_BF16, TRT_BF16, TRT_FLOAT])
    # A refused change leaves nothing for enqueue to run on.
    with pytest.raises(PluginCallError, match="did not accept"):
        plugin.enqueue_without_data(selective_scan_shapes(2), selective_scan_types(TRT_FLOAT))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the table is uploaded; tests/tensorrt runs the cross plugins there")
def test_cross_plugins_say_when_cuda_cannot_hold_their_table(shim):
    """The scan table is put in device memory in onShapeChange (so enqueue only launches the
    kernel); without a CUDA device that fails there, with a message, rather than at enqueue."""
    merge = shim.create("VmddpmCrossMerge", onnx_fields("VmddpmCrossMerge", height=5, width=7), layer="merge_2")
    with pytest.raises(PluginCallError, match=r"VmddpmCrossMerge 'merge_2' onShapeChange: (no CUDA device for the cross scan table|cannot allocate device memory for the cross scan table \(1120 bytes\))"):
        merge.on_shape_change([(2, NUM_ROUTES, 3, 35)], [TRT_FLOAT])
