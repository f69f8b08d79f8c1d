"""What a ``SRC`` argument names, and the backends that can run it.

A source is a checkpoint (a ``ckpt.safetensors`` or ``.pt`` file, or a ``save_pretrained``
directory of :class:`vmddpm_deploy.diffusers.VMDDPMModel`), an export directory (``manifest.json``
+ graphs) or an engine plan inside one. :func:`open_source` reads and validates it once (checkpoint format,
manifest checksums); :func:`load_denoiser` turns it into a ``Denoiser`` for one backend:

==============  =================  ==============================================================
backend         runs               needs
==============  =================  ==============================================================
torch           the PyTorch model  a checkpoint (native ops when built)
onnxruntime     portable graph     an export dir with ``denoiser.portable.onnx``
reference-onnx  custom-node graph  an export dir with ``denoiser.onnx`` (``-fp16``: the fp16 one),
                                   run by onnx's ReferenceEvaluator with our ops: slow, for ``check``
tensorrt        engine plan        an export dir with an engine built here (``build-engine``)
auto            the fastest one    picks as :func:`resolve_backend` says
==============  =================  ==============================================================
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from vmddpm_deploy.checkpoint import (
    TORCH_SAVE_SUFFIXES,
    Checkpoint,
    checkpoint_sha256,
    is_pretrained_directory,
    load_checkpoint,
)
from vmddpm_deploy.diffusion import Denoiser, NoiseSchedule
from vmddpm_deploy.choices import CHECK_ONLY_BACKENDS, SAMPLING_BACKENDS, SAMPLING_PRECISIONS
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.export.manifest import MANIFEST_NAME, Manifest, read_manifest
from vmddpm_deploy.model import ModelConfig


#: Files a training run's folder holds its checkpoint in (``train -o``'s default, and the older form).
CHECKPOINT_SUFFIXES = (".safetensors", *TORCH_SAVE_SUFFIXES)


@dataclass(frozen=True)
class DenoiserSource:
    """A validated SRC: ``kind`` is "checkpoint" or "export"; ``sha256`` is the file that runs
    (the checkpoint, or the export's manifest, which pins every graph's sha256)."""

    kind: str
    path: Path
    config: ModelConfig
    schedule: NoiseSchedule
    sha256: str
    checkpoint: Checkpoint | None = None
    manifest: Manifest | None = None

    @cached_property
    def source_checkpoint_path(self) -> tuple[Path | None, str]:
        """(path, "") of the checkpoint an export was made from, found unchanged; else (None, why not).

        Tried relative to the export directory, then at the absolute path, then as written (exports
        from before the relative path recorded it relative to where export ran); only a file whose
        sha256 is the recorded one counts. Hashed at most once per source."""
        if self.manifest is None:
            return None, f"{self.path} is not an export"
        recorded = self.manifest.source
        if not recorded.checkpoint:
            return None, "the manifest names no checkpoint"
        candidates = [self.manifest.export_dir / recorded.checkpoint,
                      Path(recorded.checkpoint_absolute or recorded.checkpoint), Path(recorded.checkpoint)]
        # A file, or a save_pretrained directory.
        found = [path for path in dict.fromkeys(Path(os.path.normpath(p)) for p in candidates) if path.exists()]
        for path in found:
            if checkpoint_sha256(path) == recorded.sha256:
                return path, ""
        if found:
            return None, f"{found[0]} changed since the export (its sha256 differs)"
        return None, f"{recorded.checkpoint_absolute or recorded.checkpoint} is gone"

    @cached_property
    def torch_checkpoint(self) -> Checkpoint | None:
        """The checkpoint the torch backend runs: SRC itself, or the one an export was made from if
        it is still found unchanged (:attr:`source_checkpoint_path`); None otherwise. Hashed and
        loaded at most once per source, however many places ask (``auto``, then the backend it picked)."""
        if self.checkpoint is not None or self.manifest is None:
            return self.checkpoint
        path, _ = self.source_checkpoint_path
        return load_checkpoint(path) if path is not None else None


def open_source(path: str | os.PathLike) -> DenoiserSource:
    """Read a checkpoint, an export directory or a plan file inside one (checksums verified)."""
    path = Path(path)
    if (path.is_dir() and not is_pretrained_directory(path)) or path.suffix == ".plan" or path.name == MANIFEST_NAME:
        export_dir = path if path.is_dir() else path.parent
        checkpoints = [] if (export_dir / MANIFEST_NAME).exists() else sorted(
            child for child in export_dir.iterdir() if child.suffix in CHECKPOINT_SUFFIXES and child.is_file()
        )
        if path.is_dir() and checkpoints:  # a training run's folder
            raise ArtifactError(
                f"{path} is a folder holding {', '.join(p.name for p in checkpoints[:3])}, not an export directory; "
                f"did you mean {checkpoints[0]}?"
            )
        manifest = read_manifest(export_dir)  # ArtifactError on a missing/corrupt artifact
        return DenoiserSource(
            "export", path, manifest.config, manifest.schedule, sha256_file(manifest.path), manifest=manifest
        )
    checkpoint = load_checkpoint(path)  # CheckpointError: missing, not a checkpoint, mismatched
    return DenoiserSource(
        "checkpoint", path, checkpoint.config, checkpoint.schedule, checkpoint_sha256(path), checkpoint=checkpoint
    )


def _load_torch(source: DenoiserSource, device: str, single_threaded_calls: bool = False, precision: str = "fp32") -> Denoiser:
    from vmddpm_deploy.runtime.torch_backend import TorchDenoiser

    checkpoint = source.torch_checkpoint
    if checkpoint is None:
        _, why = source.source_checkpoint_path
        raise InvalidArgumentError(
            f"the torch backend needs the checkpoint {source.path} was exported from, and {why}; "
            "pass the checkpoint, or use --backend onnxruntime"
        )
    return TorchDenoiser(checkpoint, device, precision)


def _load_onnxruntime(source: DenoiserSource, device: str, single_threaded_calls: bool = False) -> Denoiser:
    from vmddpm_deploy.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

    if source.manifest is None:
        raise InvalidArgumentError(
            f"the onnxruntime backend runs an export directory; export {source.path} first: "
            f"vmddpm-deploy export {source.path}"
        )
    threads = 1 if single_threaded_calls and torch.device(device).type == "cpu" else None
    return OnnxRuntimeDenoiser(source.manifest.graph_path("portable"), device, threads=threads)


def _reference_onnx(kind: str) -> Callable[[DenoiserSource, str, bool], Denoiser]:
    def load(source: DenoiserSource, device: str, single_threaded_calls: bool = False) -> Denoiser:
        from vmddpm_deploy.runtime.onnx_reference_backend import OnnxReferenceDenoiser

        if source.manifest is None:
            raise InvalidArgumentError(
                f"the reference-onnx backend runs an export directory's custom-node graph; export "
                f"{source.path} first: vmddpm-deploy export {source.path}"
            )
        return OnnxReferenceDenoiser(source.manifest.graph_path(kind))  # CPU only; eps returns on x's device

    return load


def _load_tensorrt(source: DenoiserSource, device: str, single_threaded_calls: bool = False) -> Denoiser:
    from vmddpm_deploy.runtime.tensorrt_backend import load_tensorrt_denoiser

    if source.manifest is None:
        raise InvalidArgumentError(
            f"the tensorrt backend runs an export directory with an engine; run `vmddpm-deploy export "
            f"{source.path}` and `vmddpm-deploy build-engine` first"
        )
    return load_tensorrt_denoiser(source.path, device, manifest=source.manifest)


#: The loader of every backend, one per name of ``choices.BACKENDS``.
BACKENDS: dict[str, Callable[[DenoiserSource, str, bool], Denoiser]] = {
    "torch": _load_torch,
    "onnxruntime": _load_onnxruntime,
    "reference-onnx": _reference_onnx("fp32"),
    "reference-onnx-fp16": _reference_onnx("fp16"),
    "tensorrt": _load_tensorrt,
}


def tensorrt_runs_here(source: DenoiserSource) -> bool:
    """Whether ``source`` has engines and this machine has TensorRT and a GPU to try them on."""
    if source.manifest is None or not source.manifest.engines:
        return False
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def resolve_backend(name: str, source: DenoiserSource) -> str:
    """``auto`` -> the fastest backend that can run ``source`` here; other names pass through.

    Order (measured, README "Backends"): TensorRT when the export has an engine and TensorRT and a
    GPU are here; else torch (native kernels), whenever the checkpoint is at hand — on CPU it is
    several times faster per call than ONNX Runtime on the portable graph; else onnxruntime.
    """
    if name != "auto":
        if name not in BACKENDS:
            raise InvalidArgumentError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
        return name
    if tensorrt_runs_here(source):
        return "tensorrt"
    if source.torch_checkpoint is not None:
        return "torch"
    return "onnxruntime"


def auto_fallback_note(source: DenoiserSource) -> str | None:
    """One line saying why ``auto`` runs ``source`` on a slower backend than the fastest it could
    use (TensorRT for an export with engines, else torch), or None when it runs on that one."""
    chosen = resolve_backend("auto", source)
    if source.manifest is not None and source.manifest.engines and chosen != "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            why = "TensorRT is not installed (vmddpm-deploy[tensorrt])"
        else:
            why = "no CUDA GPU is visible"
        return f"backend auto: {chosen}, not tensorrt: the export has engines but {why}"
    if chosen == "onnxruntime":
        _, why = source.source_checkpoint_path
        return (
            f"backend auto: onnxruntime, slower than torch, which needs the checkpoint this export was made "
            f"from, and {why}; pass that checkpoint as SRC, or re-export"
        )
    return None


def resolve_sampling_precision(precision: str, backend: str, device: str) -> str:
    """``precision`` (one of :data:`SAMPLING_PRECISIONS`) as the resolved ``backend`` runs it:
    the torch backend resolves ``auto`` for ``device``; the others run their graphs or engines
    as built and take ``auto`` or ``fp32`` only."""
    if precision not in SAMPLING_PRECISIONS:
        raise InvalidArgumentError(f"unknown precision {precision!r}; choose one of {', '.join(SAMPLING_PRECISIONS)}")
    if backend == "torch":
        from vmddpm_deploy.runtime.torch_backend import resolve_precision

        return resolve_precision(precision, device)
    if precision != "auto" and precision != "fp32":
        raise InvalidArgumentError(f"--precision {precision} runs on the torch backend only, not {backend}")
    return "fp32"


def load_denoiser(
    source: DenoiserSource, backend: str, device: str = "cpu", precision: str = "fp32", single_threaded_calls: bool = False
) -> Denoiser:
    """A ``Denoiser`` running ``source`` on ``backend`` (``auto`` resolved first); ``precision``
    as :func:`resolve_sampling_precision` resolves it.

    ``single_threaded_calls``: every call on one intra-op thread where the backend owns its
    threads (ONNX Runtime's ``intra_op_num_threads``), for sampling jobs, which run calls side by
    side instead (:mod:`vmddpm_deploy.runtime.batching`); torch's threads are process-wide and set
    by :func:`vmddpm_deploy.generation.generate`."""
    name = resolve_backend(backend, source)
    precision = resolve_sampling_precision(precision, name, device)
    if name == "torch":
        return _load_torch(source, device, precision=precision)
    return BACKENDS[name](source, device, single_threaded_calls)
