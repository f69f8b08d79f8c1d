"""libvmddpm_trt_plugins.so inside a real TensorRT: the lean runtime's plugin registry.

The full TensorRT does not install without a GPU, but the lean runtime does (``make test``
installs ``tensorrt-lean-cu12-libs`` / ``-bindings``, pinned in constraints-cpu.txt), and its
plugin registry works on a CPU machine. This is TensorRT 11 loading a library built against the
TensorRT 10 headers (tests/plugins/conftest.py), the way build-engine, the tensorrt backend and
the C++ host load it: ``IPluginRegistry::loadLibrary``. Every call the Python bindings make into
the plugins goes through TensorRT 11's layout of the plugin interfaces.

All of it runs in a child process (a layout mismatch crashes rather than fails), which prints one
JSON report; the tests assert on it. Expected values come from outside the plugin code: op names,
attributes, namespace and version from the exporter's manifest, field type codes from TensorRT's
NvInferPluginBase.h (tests/plugins/plugin_fields.py), scan orders from the Python registry.

What the lean bindings cannot reach: ``IPluginV3.clone`` and ``get_fields_to_serialize`` /
``get_output_data_types`` etc. are bound only as documentation stubs for plugins written in
Python (they return None or refuse a C++ plugin without calling it), so clone and the serialised
fields are exercised by the adapter shim (test_trt_adapter.py) and by real engines
(tests/tensorrt/, GPU only); test_lean_bindings_cannot_call_clone_of_a_cpp_plugin pins that
limit down, so a wheel that lifts it shows up here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.plugins.cmake_build import REPO_ROOT
from tests.plugins.plugin_fields import CHAR, INT32, ONNX_ATTRIBUTE_TYPES
from vmddpm_deploy.export.manifest import CUSTOM_OP_ATTRIBUTES, PLUGIN_NAMESPACE, PLUGIN_VERSION
from vmddpm_deploy.ops.scan_orders import SCAN_ORDERS

# The session fixture compiles the plugins; the child process loads a 110 MB TensorRT library.
pytestmark = pytest.mark.slow

BINDINGS = "tensorrt_lean_bindings"
INSTALL_FAILED = REPO_ROOT / "build" / "tensorrt-lean-install-failed.txt"

# The child: load the library into the lean registry and report everything the bindings can see.
# argv: plugin library, JSON {"ops": {op: {"good": fields, "bad": {layer: fields}}}}, where fields
# are [name, PluginFieldType code, value] with value an int or a string.
REGISTRY_SCRIPT = r"""
import json, sys
import numpy as np
import tensorrt_lean_bindings as trt

library, spec = sys.argv[1], json.loads(sys.argv[2])
registry = trt.get_plugin_registry()
keep = []  # PluginField holds a pointer to the array's memory, not the array


def collection(fields):
    made = []
    for name, code, value in fields:
        kind = trt.PluginFieldType(code)
        if isinstance(value, str):
            data = np.frombuffer(value.encode(), dtype=np.int8).copy()
        else:
            data = np.array([value], dtype=np.int32)
        keep.append(data)
        made.append(trt.PluginField(name, data, kind))
    return trt.PluginFieldCollection(made)


def interface(obj):
    info = obj.interface_info
    return [info.kind, info.major, info.minor]


def described(plugin):
    if plugin is None:
        return None
    core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
    build = plugin.get_capability_interface(trt.PluginCapabilityType.BUILD)
    runtime = plugin.get_capability_interface(trt.PluginCapabilityType.RUNTIME)
    return {
        "interface": interface(plugin),
        "core": [core.plugin_name, core.plugin_version, core.plugin_namespace, interface(core)],
        "build": interface(build), "runtime": interface(runtime),
        "num_outputs": build.num_outputs,
        "format_combination_limit": build.format_combination_limit,
        "timing_cache_id": build.timing_cache_id, "metadata_string": build.metadata_string,
        "clone": None if plugin.clone() is None else "plugin",
    }


def creators():
    return sorted([c.name, c.plugin_version, c.plugin_namespace] for c in registry.all_creators)


report = {"version": trt.__version__, "default_format_combination_limit": trt.IPluginV3OneBuild.DEFAULT_FORMAT_COMBINATION_LIMIT}
before = creators()
handle = registry.load_library(library)
report["loaded"] = handle is not None
report["added"] = [c for c in creators() if c not in before]
report["creators"] = {}
for op, cases in spec["ops"].items():
    creator = registry.get_creator(op, spec["version"], spec["namespace"])
    if creator is None:
        report["creators"][op] = None
        continue
    entry = {
        "type": type(creator).__name__, "interface": interface(creator),
        "identity": [creator.name, creator.plugin_version, creator.plugin_namespace],
        "fields": [[f.name, int(f.type)] for f in creator.field_names],
        "good": {}, "bad": {},
    }
    for phase in ("BUILD", "RUNTIME"):
        entry["good"][phase] = described(creator.create_plugin(op.lower(), collection(cases["good"]), getattr(trt.TensorRTPhase, phase)))
        sys.stdout.flush()
        for layer, fields in cases["bad"].items():
            plugin = creator.create_plugin(layer, collection(fields), getattr(trt.TensorRTPhase, phase))
            entry["bad"][f"{phase}:{layer}"] = plugin is not None
    report["creators"][op] = entry
# A second load of the same library: the registry refuses the duplicate creators, the first stay.
report["second_load"] = registry.load_library(library) is not None
report["after_second_load"] = [c for c in creators() if c not in before]
if handle is not None:
    registry.deregister_library(handle)
report["after_deregister"] = [c for c in creators() if c not in before]
print("REPORT " + json.dumps(report), flush=True)
"""


def field(name: str, value: int | str) -> list:
    return [name, CHAR if isinstance(value, str) else INT32, value]


def onnx_fields(op: str, **values) -> list[list]:
    """The attributes an exported node carries, as TensorRT's ONNX parser hands them over."""
    defaults = {"delta_softplus": 1, "scan_order": SCAN_ORDERS[0], "height": 5, "width": 7}
    defaults.update(values)
    return [field(name, defaults[name]) for name in CUSTOM_OP_ATTRIBUTES[op]]


UNKNOWN_ORDER = "spiral"
assert UNKNOWN_ORDER not in SCAN_ORDERS


def bad_cases(op: str) -> dict[str, list[list]]:
    """Layer name -> attributes the creator must refuse (the layer name says why)."""
    good = onnx_fields(op)
    cases = {
        "unknown_attribute": good + [field("no_such_attribute", 1)],
        "other_plugin_version": good + [field("plugin_version", "2")],
    }
    if "delta_softplus" in CUSTOM_OP_ATTRIBUTES[op]:
        cases["delta_softplus_not_boolean"] = onnx_fields(op, delta_softplus=2)
        cases["delta_softplus_as_string"] = [field("delta_softplus", "1")]
    if "scan_order" in CUSTOM_OP_ATTRIBUTES[op]:
        cases["unknown_scan_order"] = onnx_fields(op, scan_order=UNKNOWN_ORDER)
        cases["no_scan_order"] = [f for f in good if f[0] != "scan_order"]
    if "height" in CUSTOM_OP_ATTRIBUTES[op]:
        cases["no_grid"] = [f for f in good if f[0] not in ("height", "width")]
        cases["empty_grid"] = onnx_fields(op, height=0)
    return cases


@pytest.fixture(scope="module")
def lean_report(trt_plugin_build) -> tuple[dict, str]:
    if importlib.util.find_spec(BINDINGS) is None:
        why = INSTALL_FAILED.read_text().strip().splitlines()[-1:] if INSTALL_FAILED.is_file() else []
        pytest.skip(
            f"the TensorRT lean runtime is not installed (no `{BINDINGS}`); `make test` installs "
            "tensorrt-lean-cu12-libs / -bindings pinned in constraints-cpu.txt"
            + (f"; pip said: {why[0]}" if why else "")
        )
    spec = {
        "version": PLUGIN_VERSION,
        "namespace": PLUGIN_NAMESPACE,
        "ops": {op: {"good": onnx_fields(op), "bad": bad_cases(op)} for op in CUSTOM_OP_ATTRIBUTES},
    }
    result = subprocess.run(
        [sys.executable, "-c", REGISTRY_SCRIPT, str(trt_plugin_build.plugins), json.dumps(spec)],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    reports = [line[len("REPORT ") :] for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and reports, (
        f"the lean registry process ended with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return json.loads(reports[0]), result.stderr


def expected_creators() -> list[list[str]]:
    return sorted([op, PLUGIN_VERSION, PLUGIN_NAMESPACE] for op in CUSTOM_OP_ATTRIBUTES)


def test_it_is_tensorrt_11_that_loads_the_library(lean_report):
    report, _ = lean_report
    assert int(report["version"].split(".")[0]) >= 11, report["version"]
    assert report["loaded"], "load_library returned no handle"
    assert sorted(report["added"]) == expected_creators()


@pytest.mark.parametrize("op", sorted(CUSTOM_OP_ATTRIBUTES))
def test_creator_identity_and_fields(lean_report, op):
    creator = lean_report[0]["creators"][op]
    assert creator is not None, f"get_creator({op}, {PLUGIN_VERSION}, {PLUGIN_NAMESPACE}) found nothing"
    assert creator["type"] == "IPluginCreatorV3One"
    assert creator["interface"] == ["PLUGIN CREATOR_V3ONE", 1, 0]
    assert creator["identity"] == [op, PLUGIN_VERSION, PLUGIN_NAMESPACE]
    # Exactly the node's attributes, in the types TensorRT's ONNX parser hands them over.
    assert creator["fields"] == [[name, ONNX_ATTRIBUTE_TYPES[name]] for name in CUSTOM_OP_ATTRIBUTES[op]]


@pytest.mark.parametrize("phase", ["BUILD", "RUNTIME"])
@pytest.mark.parametrize("op", sorted(CUSTOM_OP_ATTRIBUTES))
def test_good_attributes_create_a_complete_plugin_in_both_phases(lean_report, op, phase):
    report = lean_report[0]
    plugin = report["creators"][op]["good"][phase]
    assert plugin is not None, f"create_plugin refused the exported attributes of {op} in the {phase} phase"
    assert plugin["interface"][0] == "PLUGIN"
    assert plugin["core"] == [op, PLUGIN_VERSION, PLUGIN_NAMESPACE, ["PLUGIN_V3ONE_CORE", 1, 0]]
    assert plugin["build"][0] == "PLUGIN_V3ONE_BUILD" and plugin["runtime"][0] == "PLUGIN_V3ONE_RUNTIME"
    # Each op of the contract (docs/design.md section 2) has one output.
    assert plugin["num_outputs"] == 1
    # Defaults from TensorRT's own headers, read through TensorRT 11's layout of IPluginV3OneBuild.
    assert plugin["format_combination_limit"] == report["default_format_combination_limit"]
    assert plugin["timing_cache_id"] is None and plugin["metadata_string"] is None


@pytest.mark.parametrize("op", sorted(CUSTOM_OP_ATTRIBUTES))
def test_bad_attributes_are_refused_in_both_phases_with_a_message(lean_report, op):
    report, stderr = lean_report
    refused = report["creators"][op]["bad"]
    assert sorted(refused) == sorted(f"{phase}:{layer}" for phase in ("BUILD", "RUNTIME") for layer in bad_cases(op))
    assert not [case for case, created in refused.items() if created], "created despite bad attributes"
    # TensorRT 11 has no logger to hand out outside a build or a deserialisation, so the message
    # goes to standard error; each names the layer.
    for layer in bad_cases(op):
        assert stderr.count(f"vmddpm plugins: cannot create layer '{layer}': {op}: ") == 2, (layer, stderr[-3000:])


def test_tensorrt_11_hands_over_a_logger_finder_the_plugins_can_call(lean_report):
    """The plugins call TensorRT 11's ILoggerFinder in its own layout, after asking it what it is
    (src/logging.cpp); they say so on standard error when it does not answer ILoggerFinder 1.x."""
    _, stderr = lean_report
    assert "logger finder" not in stderr, stderr[-3000:]


def test_a_second_load_adds_nothing_and_deregistering_removes_the_creators(lean_report):
    report = lean_report[0]
    assert sorted(report["after_second_load"]) == expected_creators()
    assert report["after_deregister"] == []


def test_lean_bindings_cannot_call_clone_of_a_cpp_plugin(lean_report):
    """A documented limit of the bindings (module docstring), not of the plugins: when a pinned wheel
    does call clone, this fails, and the report should check the clone and its serialised fields."""
    clones = {plugin["clone"] for creator in lean_report[0]["creators"].values() for plugin in creator["good"].values()}
    assert clones == {None}
