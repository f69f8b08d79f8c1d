"""Checkpoints: a model config, its noise schedule, raw weights and (optionally) EMA weights.

Two file forms hold the same :class:`Checkpoint`:

* ``ckpt.safetensors`` (written by default): tensors ``model.<name>`` and ``ema.<name>``; the
  header's metadata holds ``format``, ``config`` and ``schedule``, each a JSON string. A
  safetensors file is a JSON header and raw buffers, nothing in it can run code.
* ``ckpt.pt`` (``.pt`` / ``.pth``, the earlier form): ``torch.save`` of
  ``{"format", "config", "schedule", "model", "ema"}``, read with ``torch.load(weights_only=True)``
  only, so it can never run code either.

Reading tells the forms apart by their bytes, not their names. Everything is validated (format,
config, every tensor's name and shape) before a weight is read. Writes go to a temporary name
beside the target and are renamed into place, so a crash or a full disk never leaves a
half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.errors import CheckpointError, ConfigError, OutputError
from vmddpm_deploy.model import VMDDPM, ModelConfig

FORMAT = "vmddpm-deploy/1"
#: The file name ``init`` and ``train`` write by default.
DEFAULT_CHECKPOINT_NAME = "ckpt.safetensors"
#: Suffixes written as a ``torch.save`` file; every other name is written as safetensors.
TORCH_SAVE_SUFFIXES = (".pt", ".pth")
_METADATA_KEYS = ("format", "config", "schedule")


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


    def to_safetensors(self) -> bytes:
        """The safetensors form: ``model.*`` / ``ema.*`` tensors, JSON strings in the metadata."""
        from safetensors.torch import save

        storages: set[int] = set()

        def own_buffer(value: torch.Tensor) -> torch.Tensor:
            # safetensors refuses tensors that share memory (EMA weights that are the raw ones, a view).
            value = value.contiguous()
            storage = value.untyped_storage().data_ptr()
            if storage in storages:
                value = value.clone()
            storages.add(value.untyped_storage().data_ptr())
            return value

        tensors = {f"model.{name}": own_buffer(value) for name, value in self.model.items()}
        if self.ema is not None:
            tensors |= {f"ema.{name}": own_buffer(value) for name, value in self.ema.items()}
        metadata = {
            "format": json.dumps(FORMAT),
            "config": json.dumps(self.config.to_dict()),
            "schedule": json.dumps(self.schedule.to_dict()),
        }
        return save(tensors, metadata=metadata)


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path``: safetensors, or a ``torch.save`` file for a ``.pt`` / ``.pth`` name."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name such as {path / DEFAULT_CHECKPOINT_NAME}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    if path.suffix in TORCH_SAVE_SUFFIXES:
        payload = checkpoint.to_payload()
        write_atomic(path, lambda handle: torch.save(payload, handle))
    else:
        data = checkpoint.to_safetensors()
        write_atomic(path, lambda handle: handle.write(data))
    return path


def is_safetensors_file(path: Path) -> bool:
    """Whether ``path``'s bytes start like a safetensors file: an 8-byte little-endian header
    length, then the JSON header's ``{`` (a torch.save file starts with a zip or pickle marker)."""
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read either form (told apart by the file's first bytes) or a save_pretrained directory;
    CheckpointError on anything wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if is_pretrained_directory(path):
        return load_pretrained_directory(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (nor a save_pretrained directory)")
    if is_safetensors_file(path):
        return load_safetensors_checkpoint(path)
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


def load_safetensors_checkpoint(path: Path) -> Checkpoint:
    """Our safetensors form: the header's metadata and every tensor's name and shape checked, then
    the tensors read."""

    def parse(metadata: dict[str, str]) -> tuple[ModelConfig, NoiseSchedule]:
        missing = [key for key in _METADATA_KEYS if key not in metadata]
        if missing:
            raise CheckpointError(
                f"{path} is not a vmddpm-deploy checkpoint (its safetensors metadata lacks {', '.join(missing)})"
            )
        fields = {}
        for key in _METADATA_KEYS:
            try:
                fields[key] = json.loads(metadata[key])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path}: metadata {key!r} is not JSON ({exc.msg})") from None
        if fields["format"] != FORMAT:
            raise CheckpointError(f"{path} has checkpoint format {fields['format']!r}; this version reads {FORMAT!r}")
        return _parse_config(path, fields["config"], fields["schedule"])

    return _read_safetensors(path, parse, groups=("model", "ema"))


#: A ``save_pretrained`` directory of :class:`vmddpm_deploy.diffusers.VMDDPMModel`: diffusers'
#: file names, the model's config (``ModelConfig``'s fields, ``sample_size``, ``noise_schedule``).
PRETRAINED_CONFIG = "config.json"
PRETRAINED_WEIGHTS = "diffusion_pytorch_model.safetensors"
PRETRAINED_CLASS = "VMDDPMModel"


def is_pretrained_directory(path: Path) -> bool:
    return path.is_dir() and (path / PRETRAINED_CONFIG).is_file()


def load_pretrained_directory(path: Path) -> Checkpoint:
    """A ``save_pretrained`` directory read without diffusers: config.json, then the weights file
    (tensors ``model.*``, the wrapped denoiser's), checked like our own safetensors form."""
    config_path, weights_path = path / PRETRAINED_CONFIG, path / PRETRAINED_WEIGHTS
    try:
        data = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("_class_name") != PRETRAINED_CLASS:
        found = data.get("_class_name") if isinstance(data, dict) else None
        raise CheckpointError(f"{path} is a save_pretrained directory of {found!r}, not of {PRETRAINED_CLASS}")
    if not weights_path.is_file():
        raise CheckpointError(f"{path} has no {PRETRAINED_WEIGHTS}")
    fields = {key: value for key, value in data.items() if not key.startswith("_")}
    sample_size = fields.pop("sample_size", None)
    schedule = fields.pop("noise_schedule", None)
    config, schedule = _parse_config(config_path, fields, NoiseSchedule().to_dict() if schedule is None else schedule)
    if sample_size not in (None, config.image_size):
        raise CheckpointError(f"{config_path}: sample_size {sample_size} differs from image_size {config.image_size}")
    return _read_safetensors(weights_path, lambda metadata: (config, schedule), groups=("model",))


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """What identifies a checkpoint's content: a file's sha256; for a save_pretrained directory,
    the sha256 of its config's and its weights' sha256 together."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    parts = (sha256_file(path / PRETRAINED_CONFIG), sha256_file(path / PRETRAINED_WEIGHTS))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _parse_config(path: Path, config: Any, schedule: Any) -> tuple[ModelConfig, NoiseSchedule]:
    try:
        return ModelConfig.from_dict(config), NoiseSchedule.from_dict(schedule)
    except (ConfigError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _read_safetensors(
    path: Path,
    parse_metadata: Callable[[dict[str, str]], tuple[ModelConfig, NoiseSchedule]],
    groups: tuple[str, ...],
) -> Checkpoint:
    """Read a safetensors file of ``<group>.<name>`` tensors: the header first (safetensors refuses
    a truncated file or offsets that do not fit the file), then names and shapes against the
    config, and only then the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            config, schedule = parse_metadata(handle.metadata() or {})
            found: dict[str, dict[str, Any]] = {group: {} for group in groups}
            for name in handle.keys():
                group, dot, key = name.partition(".")
                if not dot or group not in found:
                    expected = " nor ".join(f"{group}.*" for group in groups)
                    raise CheckpointError(f"{path}: tensor {name!r} is {'neither' if len(groups) > 1 else 'not'} {expected}")
                found[group][key] = handle.get_slice(name)
            if not found["model"]:
                raise CheckpointError(f"{path} holds no model.* tensors")
            shapes = Checkpoint(config, schedule, found["model"], found.get("ema") or None)
            _check_weights(shapes, path, shape_of=lambda value: value.get_shape())
            weights = {
                group: {key: handle.get_tensor(f"{group}.{key}") for key in names} for group, names in found.items()
            }
    except CheckpointError:
        raise
    except Exception as exc:  # SafetensorError: a header that lies about sizes, a truncated file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({first_line[:160]})") from None
    return Checkpoint(config, schedule, weights["model"], weights.get("ema") or None)


def load_weights_only(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; CheckpointError naming ``what`` when the file
    is not one (truncated, another format, or a pickle that asks for code to run, which is refused
    and never executed). torch's warnings about the pickle are kept off the console."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # A file handle, not the path: torch picks a reader from a path's suffix (.safetensors).
            with path.open("rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
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


def _check_weights(
    checkpoint: Checkpoint, path: Path, shape_of: Callable[[Any], Any] = lambda value: value.shape
) -> None:
    """Fail with the first offending key when the weights do not fit the config; ``shape_of``
    reads a value's shape (a tensor's, or a safetensors slice's before it is read)."""
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
            if tuple(shape_of(weights[key])) != tuple(value.shape):
                raise CheckpointError(
                    f"{path}: {label} weights do not match the config: {key} has shape "
                    f"{tuple(shape_of(weights[key]))}, the config needs {tuple(value.shape)}"
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
