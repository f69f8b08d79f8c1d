"""Checkpoints: ``ckpt.pt`` = ``{"format", "config", "schedule", "model", "ema"}``.

Read with ``torch.load(weights_only=True)`` only, so a checkpoint can never run code. Writes go
to a temporary name beside the target and are renamed into place, so a crash or a full disk
never leaves a half-written file under the real name.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.errors import CheckpointError, ConfigError, OutputError
from vmddpm_deploy.model import VMDDPM, ModelConfig

FORMAT = "vmddpm-deploy/1"


@dataclass(frozen=True)
class Checkpoint:
    config: ModelConfig
    schedule: NoiseSchedule
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None

    @property
    def inference_weights(self) -> dict[str, torch.Tensor]:
        """EMA weights when present (what DDPM-style training samples with), else the raw ones."""
        return self.ema if self.ema is not None else self.model

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "model": self.model,
            "ema": self.ema,
        }


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name such as {path / 'ckpt.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    payload = checkpoint.to_payload()
    write_atomic(path, lambda handle: torch.save(payload, handle))
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    payload = load_weights_only(path, "checkpoint")
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path} is not a vmddpm-deploy checkpoint (no 'format' entry)")
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format']!r}; this version reads {FORMAT!r}"
        )
    missing = [key for key in ("config", "schedule", "model") if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is missing {', '.join(missing)}")
    try:
        config = ModelConfig.from_dict(payload["config"])
        schedule = NoiseSchedule.from_dict(payload["schedule"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    checkpoint = Checkpoint(config, schedule, payload["model"], payload.get("ema"))
    _check_weights(checkpoint, path)
    return checkpoint


def load_weights_only(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; CheckpointError naming ``what`` when the file
    is not one (truncated, another format, or a pickle that asks for code to run, which is refused
    and never executed). torch's warnings about the pickle are kept off the console."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text advises weights_only=False, which is what must not be done with such a file.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")), "")
        detail = detail.replace("WeightsUnpickler error: ", "").split(". Please use")[0]
        raise CheckpointError(
            f"{path} is not a readable {what}: it is not a torch file of tensors, or it holds Python objects "
            f"that are never unpickled" + (f" ({detail[:160]})" if detail else "")
        ) from None
    except Exception as exc:  # arbitrary bytes make torch.load raise almost any type
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable {what} ({first_line[:160]})") from None


def _check_weights(checkpoint: Checkpoint, path: Path) -> None:
    """Fail with the first offending key when the weights do not fit the config."""
    with torch.device("meta"):
        expected = VMDDPM(checkpoint.config).state_dict()
    for label, weights in (("model", checkpoint.model), ("ema", checkpoint.ema)):
        if weights is None:
            continue
        if not isinstance(weights, dict):
            raise CheckpointError(f"{path}: '{label}' is not a state dict")
        for key, value in expected.items():
            if key not in weights:
                raise CheckpointError(f"{path}: {label} weights do not match the config: missing {key}")
            if tuple(weights[key].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"{path}: {label} weights do not match the config: {key} has shape "
                    f"{tuple(weights[key].shape)}, the config needs {tuple(value.shape)}"
                )
        extra = sorted(set(weights) - set(expected))
        if extra:
            raise CheckpointError(f"{path}: {label} weights do not match the config: unexpected {extra[0]}")


def build_model(checkpoint: Checkpoint) -> VMDDPM:
    """The denoiser with the checkpoint's inference weights, in eval mode, on CPU."""
    model = VMDDPM(checkpoint.config)
    model.load_state_dict(checkpoint.inference_weights)
    return model.eval()


def init_checkpoint(config: ModelConfig, schedule: NoiseSchedule, seed: int = 0) -> Checkpoint:
    """A randomly initialised checkpoint, for plumbing, export and benchmarks."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = VMDDPM(config)
    return Checkpoint(config, schedule, {k: v.detach().clone() for k, v in model.state_dict().items()})
