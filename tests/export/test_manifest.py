"""manifest.json: round trip, checksum verification and one clear ArtifactError per problem."""

from __future__ import annotations

import hashlib
import json

import pytest

from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import ArtifactError
from vmddpm_deploy.export.manifest import FORMAT, read_manifest, write_manifest
from vmddpm_deploy.model import ModelConfig


@pytest.fixture
def export_dir(tmp_path, micro_config):
    """A hand-made export directory: one 'graph' and one 'engine' file with their true digests."""
    graph, engine = b"not really onnx, but bytes with a digest", b"plan bytes"
    (tmp_path / "denoiser.portable.onnx").write_bytes(graph)
    (tmp_path / "denoiser.x.plan").write_bytes(engine)
    schedule = NoiseSchedule(kind="cosine")
    data = {
        "format": "vmddpm-deploy-export/1",
        "source": {"checkpoint": "ckpt.pt", "sha256": "0" * 64, "weights": "model"},
        "model": micro_config.to_dict(),
        "schedule": {**schedule.to_dict(), "alphas_cumprod": schedule.alphas_cumprod.tolist()},
        "opset": 18,
        "inputs": [],
        "outputs": [],
        "graphs": {
            "portable": {
                "file": "denoiser.portable.onnx",
                "ops": "portable",
                "io_dtype": "float32",
                "sha256": hashlib.sha256(graph).hexdigest(),
                "bytes": len(graph),
            }
        },
        "engines": {"denoiser.x.plan": {"graph": "fp16", "sha256": hashlib.sha256(engine).hexdigest(), "bytes": 10}},
    }
    write_manifest(tmp_path, data)
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


def test_write_refuses_other_formats_and_leaves_no_temp_files(tmp_path):
    with pytest.raises(ArtifactError):
        write_manifest(tmp_path, {"format": "something-else"})
    write_manifest(tmp_path, {"format": FORMAT, "model": ModelConfig().to_dict()})
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
