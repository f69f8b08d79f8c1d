"""export_checkpoint end to end on the tiny preset: files, manifest, the portable graph in ONNX
Runtime against PyTorch, the custom-node graph's nodes and the fp16 graph's precision policy."""

from __future__ import annotations

import hashlib
import json
import shutil
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vmddpm_deploy.checkpoint import (
    build_model,
    init_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import ArtifactError, OutputError
from vmddpm_deploy.export import export_checkpoint, read_manifest
from vmddpm_deploy.export.exporter import lower_program, trace_denoiser
from vmddpm_deploy.model import ModelConfig, preset
from vmddpm_deploy.model.vmddpm import SS2D

FILES = {"fp32": "denoiser.onnx", "fp16": "denoiser.fp16.onnx", "portable": "denoiser.portable.onnx"}
F32, F16, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64

pytestmark = pytest.mark.slow  # one tiny-preset export of all three graphs (about a minute on 2 cores)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ckpt = save_checkpoint(init_checkpoint(preset("tiny"), NoiseSchedule(), seed=0), root / "tiny.pt")
    stages = []
    manifest = export_checkpoint(ckpt, root / "exports" / "tiny", on_stage=lambda *stage: stages.append(stage))
    return SimpleNamespace(root=root, ckpt=ckpt, manifest=manifest, stages=stages, model=build_model(load_checkpoint(ckpt)))


def io_signature(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        value.name: (value.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim])
        for value in [*graph.input, *graph.output]
    }


def eps_torch(model, x, t):
    with torch.no_grad():
        return model(x, t)


def test_export_writes_three_graphs_and_a_manifest_atomically(tiny):
    export_dir = tiny.root / "exports" / "tiny"
    assert sorted(p.name for p in export_dir.iterdir()) == sorted([*FILES.values(), "manifest.json"])
    assert [p.name for p in (tiny.root / "exports").iterdir()] == ["tiny"]  # no staging dirs left
    descriptions = [stage[0] for stage in tiny.stages]
    assert descriptions[0] == "load checkpoint" and descriptions[-1] == "write manifest"
    assert [stage[1] for stage in tiny.stages] == list(range(len(tiny.stages)))
    assert {stage[2] for stage in tiny.stages} == {len(tiny.stages)}


def test_manifest_contents(tiny):
    data = json.loads(tiny.manifest.path.read_text())  # what the file says, as a host reads it
    assert data["format"] == "vmddpm-deploy-export/1"
    assert data["created_by"]["onnx"] == onnx.__version__ and data["created_by"]["torch"] == torch.__version__
    assert data["source"] == {
        "checkpoint": "../../tiny.pt",  # relative to the export directory: found from any working directory
        "checkpoint_absolute": str(tiny.ckpt.resolve()),
        "sha256": hashlib.sha256(tiny.ckpt.read_bytes()).hexdigest(),
        "weights": "model",
    }
    assert ModelConfig.from_dict(data["model"]) == preset("tiny")
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(data["schedule"]["alphas_cumprod"], np.cumprod(1 - betas), rtol=1e-12)
    assert data["opset"] == 18 and data["engines"] == {}
    assert data["custom_ops"]["ops"] == {
        "VmddpmSelectiveScan": ["delta_softplus"],
        "VmddpmCrossScan": ["scan_order"],
        "VmddpmCrossMerge": ["scan_order", "height", "width"],
    }
    assert data["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": ["batch", 1, 32, 32]},
        {"name": "t", "dtype": "int64", "shape": ["batch"]},
    ]
    assert data["outputs"] == [{"name": "eps", "dtype": "float32", "shape": ["batch", 1, 32, 32]}]
    for kind, (ops, io_dtype) in {"fp32": ("plugin", "float32"), "fp16": ("plugin", "float16"),
                                   "portable": ("portable", "float32")}.items():
        entry = data["graphs"][kind]
        path = tiny.manifest.export_dir / FILES[kind]
        assert (entry["file"], entry["ops"], entry["io_dtype"]) == (FILES[kind], ops, io_dtype)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["bytes"] == path.stat().st_size


def test_batch_axis_is_symbolic_in_every_graph(tiny):
    for kind, path in FILES.items():
        dtype = F16 if kind == "fp16" else F32
        assert io_signature(tiny.manifest.export_dir / path) == {
            "x": (dtype, ["batch", 1, 32, 32]),
            "t": (I64, ["batch"]),
            "eps": (dtype, ["batch", 1, 32, 32]),
        }


def test_portable_graph_matches_torch_at_batch_1_and_3(tiny):
    session = ort.InferenceSession(str(tiny.manifest.graph_path("portable")), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        x = torch.randn(batch, 1, 32, 32, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        (eps,) = session.run(None, {"x": x.numpy(), "t": t.numpy()})
        expected = eps_torch(tiny.model, x, t)
        assert eps.shape == (batch, 1, 32, 32)
        assert np.abs(eps - expected.numpy()).max() <= 1e-4


def test_plugin_graph_has_one_custom_node_per_op_call(tiny):
    graph = onnx.load(str(tiny.manifest.graph_path("fp32"))).graph
    ss2d = [m for m in tiny.model.modules() if isinstance(m, SS2D)]
    custom = [node for node in graph.node if node.domain == "vmddpm"]
    for op_type in ("VmddpmSelectiveScan", "VmddpmCrossScan", "VmddpmCrossMerge"):
        assert sum(node.op_type == op_type for node in custom) == len(ss2d) == 10
    grids = set()
    for node in custom:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["plugin_version"] == b"1" and attributes["plugin_namespace"] == b"vmddpm"
        if node.op_type != "VmddpmSelectiveScan":
            assert attributes["scan_order"] == b"regen"
        if node.op_type == "VmddpmCrossMerge":
            grids.add((attributes["height"], attributes["width"]))
    assert grids == {(32, 32), (16, 16), (8, 8)}


def test_fp16_graph_keeps_norms_time_embedding_and_scan_parameters_in_fp32(tiny):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tiny.manifest.graph_path("fp16"))))
    graph = model.graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    dtype.update({init.name: init.data_type for init in graph.initializer})

    def input_dtypes(op_type):
        return [[dtype.get(name) for name in node.input] for node in graph.node if node.op_type == op_type]

    assert {tuple(d) for d in input_dtypes("VmddpmSelectiveScan")} == {(F16, F16, F32, F16, F16, F32, F32)}
    for op_type in ("LayerNormalization", "InstanceNormalization", "Sin", "Cos"):  # GroupNorm is InstanceNorm
        assert input_dtypes(op_type) and all(set(d) == {F32} for d in input_dtypes(op_type)), op_type
    for op_type in ("Conv", "VmddpmCrossScan", "VmddpmCrossMerge", "MatMul"):
        assert input_dtypes(op_type) and all(set(d) == {F16} for d in input_dtypes(op_type)), op_type
    # Weights are stored in fp16 except the fp32 islands': the file is about half the fp32 one.
    assert tiny.manifest.graphs["fp16"].bytes < 0.55 * tiny.manifest.graphs["fp32"].bytes


def test_modified_graph_fails_verification(tiny, tmp_path):
    copy = shutil.copytree(tiny.manifest.export_dir, tmp_path / "copy")
    graph = copy / "denoiser.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="denoiser.onnx does not match its sha256"):
        read_manifest(copy)


def test_existing_directory_needs_force(tiny):
    before = {p.name: p.stat().st_mtime_ns for p in tiny.manifest.export_dir.iterdir()}
    with pytest.raises(OutputError, match="already exists; pass --force"):
        export_checkpoint(tiny.ckpt, tiny.manifest.export_dir)
    assert {p.name: p.stat().st_mtime_ns for p in tiny.manifest.export_dir.iterdir()} == before


def test_fp16_policy_in_onnxruntime_with_a_static_batch(tmp_path, micro_config):
    """The fp16 graph's numerics, through the same fp16 program lowered with the portable
    translations (ONNX Runtime cannot run the custom nodes), against fp32 PyTorch."""
    model = build_model(init_checkpoint(micro_config, NoiseSchedule(), seed=0))
    lower_program(trace_denoiser(model, "fp16", fixed_batch=2), "portable", 18, tmp_path / "fp16.onnx")
    assert io_signature(tmp_path / "fp16.onnx") == {"x": (F16, [2, 1, 8, 8]), "t": (I64, [2]), "eps": (F16, [2, 1, 8, 8])}
    session = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"])
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 999])
    (eps,) = session.run(None, {"x": x.half().numpy(), "t": t.numpy()})
    assert eps.dtype == np.float16
    torch.testing.assert_close(torch.from_numpy(eps).float(), eps_torch(model, x, t), rtol=3e-3, atol=5e-3)
