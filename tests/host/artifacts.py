"""What the host tests feed vmddpm_host: a manifest for a checkpoint (the eps it replays are
recorded by vmddpm_deploy.runtime.eps_recording)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vmddpm_deploy.checkpoint import Checkpoint
from vmddpm_deploy.export.manifest import (
    GraphRecord,
    Manifest,
    SourceRecord,
    file_record,
    new_manifest,
    write_manifest,
)


def export_manifest(directory: Path, checkpoint: Checkpoint, timesteps: tuple[int, ...] | None = None) -> Manifest:
    """The manifest an export of ``checkpoint`` carries, made by the exporter's own constructor
    (no graph files), so the host is tested against what Python writes; ``timesteps`` as ``export
    --timesteps`` records them."""
    return new_manifest(
        directory,
        source=SourceRecord(checkpoint="ckpt.pt", sha256="0" * 64, weights="ema"),
        config=checkpoint.config,
        schedule=checkpoint.schedule,
        opset=18,
        graphs={},
        created_by={"vmddpm_deploy": "test"},
        timesteps=timesteps,
    )


def manifest_data(checkpoint: Checkpoint) -> dict:
    """The manifest.json content of :func:`export_manifest`, for tests that break one field of it."""
    return export_manifest(Path("."), checkpoint).to_dict()


def write_export_dir(
    directory: Path, checkpoint: Checkpoint, fp32_graph: bytes | None = None, timesteps: tuple[int, ...] | None = None
) -> Path:
    """A hand-made export directory; ``fp32_graph`` (placeholder bytes) is listed with its true sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = export_manifest(directory, checkpoint, timesteps)
    if fp32_graph is not None:
        (directory / "denoiser.onnx").write_bytes(fp32_graph)
        record = file_record(directory / "denoiser.onnx")
        manifest = dataclasses.replace(
            manifest, graphs={"fp32": GraphRecord("denoiser.onnx", "plugin", "float32", **record)}
        )
    write_manifest(manifest)
    return directory
