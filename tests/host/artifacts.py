"""What the host tests feed vmddpm_host: a manifest for a checkpoint, and eps recorded from the
Python sampler in the replay format of plugins/host/src/replay_denoiser.h."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

from vmddpm_deploy.checkpoint import Checkpoint
from vmddpm_deploy.export.manifest import (
    CUSTOM_OP_ATTRIBUTES,
    FORMAT,
    file_record,
    write_manifest,
)

REPLAY_MAGIC = b"VMDEPS01"


def manifest_data(checkpoint: Checkpoint) -> dict:
    """The manifest.json an export of ``checkpoint`` carries, per docs/design.md section 3 (no graph files)."""
    config, schedule = checkpoint.config, checkpoint.schedule
    image = [config.in_channels, config.image_size, config.image_size]
    return {
        "format": FORMAT,
        "created_by": {"vmddpm_deploy": "test"},
        "source": {"checkpoint": "ckpt.pt", "sha256": "0" * 64, "weights": "ema"},
        "model": config.to_dict(),
        "schedule": schedule.to_dict() | {"alphas_cumprod": schedule.alphas_cumprod.tolist()},
        "opset": 18,
        "custom_ops": {"domain": "vmddpm", "plugin_namespace": "vmddpm", "plugin_version": "1", "ops": CUSTOM_OP_ATTRIBUTES},
        "inputs": [
            {"name": "x", "dtype": "float32", "shape": ["batch", *image]},
            {"name": "t", "dtype": "int64", "shape": ["batch"]},
        ],
        "outputs": [{"name": "eps", "dtype": "float32", "shape": ["batch", *image]}],
        "graphs": {},
        "engines": {},
        "seeding": "per-sample counter RNG, see vmddpm_deploy/diffusion/noise.py",
    }


def write_export_dir(directory: Path, checkpoint: Checkpoint, fp32_graph: bytes | None = None) -> Path:
    """A hand-made export directory; ``fp32_graph`` (placeholder bytes) is listed with its true sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    data = manifest_data(checkpoint)
    if fp32_graph is not None:
        (directory / "denoiser.onnx").write_bytes(fp32_graph)
        record = file_record(directory / "denoiser.onnx")
        data["graphs"] = {"fp32": {"file": "denoiser.onnx", "ops": "plugin", "io_dtype": "float32", **record}}
    write_manifest(directory, data)
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
