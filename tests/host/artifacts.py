"""What the host tests feed vmddpm_host: a manifest for a checkpoint, and eps recorded from the
Python sampler in the replay format of plugins/host/src/replay_denoiser.h."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import torch

from vmddpm_deploy.checkpoint import Checkpoint
from vmddpm_deploy.export.manifest import (
    GraphRecord,
    Manifest,
    SourceRecord,
    file_record,
    new_manifest,
    write_manifest,
)

REPLAY_MAGIC = b"VMDEPS01"


def export_manifest(directory: Path, checkpoint: Checkpoint) -> Manifest:
    """The manifest an export of ``checkpoint`` carries, made by the exporter's own constructor
    (no graph files), so the host is tested against what Python writes."""
    return new_manifest(
        directory,
        source=SourceRecord(checkpoint="ckpt.pt", sha256="0" * 64, weights="ema"),
        config=checkpoint.config,
        schedule=checkpoint.schedule,
        opset=18,
        graphs={},
        created_by={"vmddpm_deploy": "test"},
    )


def manifest_data(checkpoint: Checkpoint) -> dict:
    """The manifest.json content of :func:`export_manifest`, for tests that break one field of it."""
    return export_manifest(Path("."), checkpoint).to_dict()


def write_export_dir(directory: Path, checkpoint: Checkpoint, fp32_graph: bytes | None = None) -> Path:
    """A hand-made export directory; ``fp32_graph`` (placeholder bytes) is listed with its true sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = export_manifest(directory, checkpoint)
    if fp32_graph is not None:
        (directory / "denoiser.onnx").write_bytes(fp32_graph)
        record = file_record(directory / "denoiser.onnx")
        manifest = dataclasses.replace(
            manifest, graphs={"fp32": GraphRecord("denoiser.onnx", "plugin", "float32", **record)}
        )
    write_manifest(manifest)
    return directory


class RecordingDenoiser:
    """Wraps a Denoiser and keeps every call's (t, x, eps), in call order."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.denoiser(x, t)
        self.calls.append((t.clone(), x.clone(), eps.clone()))
        return eps


def write_recording(path: Path, calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], image_shape) -> Path:
    """The replay file: magic, u32 C, H, W, calls; per call u32 batch, i64 t, f32 x, f32 eps."""
    with open(path, "wb") as handle:
        handle.write(REPLAY_MAGIC + struct.pack("<4I", *image_shape, len(calls)))
        for t, x, eps in calls:
            handle.write(struct.pack("<I", t.shape[0]))
            handle.write(t.numpy().astype("<i8").tobytes())
            handle.write(x.numpy().astype("<f4").tobytes())
            handle.write(eps.numpy().astype("<f4").tobytes())
    return path
