"""manifest.json: round trip, checksum verification and one clear ArtifactError per problem."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import ArtifactError
from vmddpm_deploy.export.manifest import (
    FORMAT,
    EngineRecord,
    GraphRecord,
    SourceRecord,
    new_manifest,
    read_manifest,
    write_manifest,
)
from vmddpm_deploy.model import ModelConfig


ENGINE = dict(graph="fp16", precision="fp16", min_batch=1, opt_batch=8, max_batch=32, tensorrt="10.14.1.48",
              gpu="some GPU", compute_capability="9.0", plugin_library="libvmddpm_trt_plugins.so",
              plugin_library_sha256="1" * 64)


@pytest.fixture
def export_dir(tmp_path, micro_config):
    """A hand-made export directory: one 'graph' and one 'engine' file with their true digests."""
    graph, engine = b"not really onnx, but bytes with a digest", b"plan bytes"
    (tmp_path / "denoiser.portable.onnx").write_bytes(graph)
    (tmp_path / "denoiser.x.plan").write_bytes(engine)
    manifest = new_manifest(
        tmp_path,
        source=SourceRecord(checkpoint="ckpt.pt", sha256="0" * 64, weights="model"),
        config=micro_config,
        schedule=NoiseSchedule(kind="cosine"),
        opset=18,
        graphs={"portable": GraphRecord("denoiser.portable.onnx", "portable", "float32",
                                        hashlib.sha256(graph).hexdigest(), len(graph))},
        created_by={"vmddpm_deploy": "test"},
    )
    engine_record = EngineRecord(**ENGINE, sha256=hashlib.sha256(engine).hexdigest(), bytes=10)
    write_manifest(manifest.with_engine("denoiser.x.plan", engine_record))
    return tmp_path


def test_round_trip_gives_config_schedule_and_paths(export_dir, micro_config):
    manifest = read_manifest(export_dir)
    assert manifest.config == micro_config
    assert manifest.schedule == NoiseSchedule(kind="cosine")
    assert manifest.graph_path("portable") == export_dir / "denoiser.portable.onnx"
    assert json.loads((export_dir / "manifest.json").read_text())["format"] == FORMAT


def test_graph_that_was_not_exported_is_an_artifact_error(export_dir):
    with pytest.raises(ArtifactError, match="no fp16 graph"):
        read_manifest(export_dir).graph_path("fp16")


@pytest.mark.parametrize("name", ["denoiser.portable.onnx", "denoiser.x.plan"])
def test_modified_file_fails_verification_naming_it(export_dir, name):
    (export_dir / name).write_bytes((export_dir / name).read_bytes()[::-1])  # same size, other bytes
    with pytest.raises(ArtifactError, match=rf"{name} does not match its sha256.*--force"):
        read_manifest(export_dir)
    read_manifest(export_dir, verify=False)  # still readable when the caller opts out


def test_missing_file_fails_verification(export_dir):
    (export_dir / "denoiser.portable.onnx").unlink()
    with pytest.raises(ArtifactError, match="denoiser.portable.onnx is listed in .* but missing"):
        read_manifest(export_dir)


@pytest.mark.parametrize(
    "text,message",
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "top level is not an object"),
        ('{"format": "vmddpm-deploy-export/0"}', "has format 'vmddpm-deploy-export/0'"),
        ('{"format": "vmddpm-deploy-export/1"}', "is missing source, model"),
    ],
)
def test_bad_manifest_is_one_artifact_error(export_dir, text, message):
    (export_dir / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError, match=message):
        read_manifest(export_dir)


def test_bad_model_config_is_an_artifact_error(export_dir):
    data = json.loads((export_dir / "manifest.json").read_text())
    data["model"]["scan_order"] = "zigzag"
    (export_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="scan_order"):
        read_manifest(export_dir)


def test_missing_directory_or_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="export directory not found"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        read_manifest(tmp_path)


def test_write_refuses_anything_but_a_valid_manifest_and_leaves_no_temp_files(export_dir, tmp_path):
    before = (export_dir / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError, match="refusing to write dict"):
        write_manifest({"format": FORMAT, "model": ModelConfig().to_dict()})
    manifest = read_manifest(export_dir)
    bad = dataclasses.replace(manifest, engines={"denoiser.x.plan": dataclasses.replace(
        manifest.engines["denoiser.x.plan"], max_batch="32")})
    with pytest.raises(ArtifactError, match=r"engines\.denoiser\.x\.plan\.max_batch is not a int"):
        write_manifest(bad)
    assert (export_dir / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in export_dir.iterdir()) == ["denoiser.portable.onnx", "denoiser.x.plan", "manifest.json"]


def test_what_is_written_reads_back_equal(export_dir):
    manifest = read_manifest(export_dir)
    assert manifest.engines["denoiser.x.plan"] == EngineRecord(
        **ENGINE, sha256=hashlib.sha256(b"plan bytes").hexdigest(), bytes=10
    )
    assert manifest.graphs["portable"].io_dtype == "float32" and manifest.source.weights == "model"
    assert manifest.image_shape == (1, 8, 8) and manifest.batch_axis == "batch"
    assert [spec.name for spec in manifest.inputs + manifest.outputs] == ["x", "t", "eps"]
    write_manifest(manifest)
    assert read_manifest(export_dir) == manifest


def test_reading_never_writes(export_dir):
    # A manifest without the optional 'engines' reads as having none, and the file stays as it was.
    data = json.loads((export_dir / "manifest.json").read_text())
    del data["engines"]
    text = json.dumps(data)
    (export_dir / "manifest.json").write_text(text)
    manifest = read_manifest(export_dir)
    assert manifest.engines == {}
    assert (export_dir / "manifest.json").read_text() == text


@pytest.mark.parametrize(
    "path,value,message",
    [
        (("graphs", "portable", "bytes"), "41", r"graphs\.portable\.bytes is not a int"),
        (("engines", "denoiser.x.plan", "tensorrt"), None, r"engines\.denoiser\.x\.plan\.tensorrt is not a str"),
        (("source", "sha256"), 7, r"source\.sha256 is not a str"),
        (("inputs",), [], "inputs must list x, t"),
        (("inputs", 0, "shape"), ["batch", 1, 8, 9], r"inputs x has shape \['batch', 1, 8, 9\]"),
        (("outputs", 0, "shape"), [0, 1, 8, 8], "outputs eps has shape"),
        (("custom_ops", "ops"), {"VmddpmCrossScan": "scan_order"}, "is not a list of attribute names"),
        (("opset",), "18", "opset is not an integer"),
    ],
)
def test_every_mistyped_field_is_one_artifact_error_naming_it(export_dir, path, value, message):
    data = json.loads((export_dir / "manifest.json").read_text())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (export_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        read_manifest(export_dir, verify=False)


def test_timesteps_are_recorded_only_when_given_and_read_back(export_dir):
    manifest = read_manifest(export_dir)
    assert manifest.timesteps is None and "timesteps" not in manifest.to_dict()
    write_manifest(dataclasses.replace(manifest, timesteps=(990, 450, 0)))
    assert read_manifest(export_dir).timesteps == (990, 450, 0)
    assert json.loads((export_dir / "manifest.json").read_text())["timesteps"] == [990, 450, 0]


@pytest.mark.parametrize(
    "value,message",
    [([0, 450], "distinct and descending"), ([1000, 0], r"\[0, 999\]"), ("990,0", "must be a list"), ([], "at least one")],
)
def test_bad_timesteps_in_a_manifest_are_one_artifact_error(export_dir, value, message):
    path = export_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["timesteps"] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        read_manifest(export_dir)
