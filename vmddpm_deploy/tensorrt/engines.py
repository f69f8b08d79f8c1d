"""TensorRT engine files in an export directory: their names, their manifest entries, and whether
one can run here.

A plan is tied to the TensorRT version that built it and to the GPU's compute capability, so
both are in its file name and in its manifest entry (docs/design.md section 3)::

    denoiser.fp16.b1-32.trt10.14.sm90.plan
    {"graph": "fp16", "precision": "fp16", "min_batch": 1, "opt_batch": 8, "max_batch": 32,
     "tensorrt": "10.14.1.48", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
     "sha256": ..., "bytes": ..., "plugin_library": "libvmddpm_trt_plugins.so",
     "plugin_library_sha256": ...}

TensorRT loads a plan only into the exact version that built it (major.minor.patch.build) on a
GPU of the same compute capability; :func:`check_engine_runs_here` says so before TensorRT does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmddpm_deploy.choices import PRECISIONS
from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.export.manifest import (
    EngineRecord,
    Manifest,
    file_record,
    read_manifest,
    write_manifest,
)
from vmddpm_deploy.tensorrt.environment import Gpu, short_version

ENGINE_SUFFIX = ".plan"


@dataclass(frozen=True)
class BatchRange:
    """The optimisation profile over the batch axis: ``min <= opt <= max``, all >= 1."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"--{name}-batch must be a positive integer, got {value!r}")
        if not self.min <= self.opt <= self.max:
            raise InvalidArgumentError(
                f"need --min-batch <= --opt-batch <= --max-batch, got {self.min}, {self.opt}, {self.max}"
            )

    def fit(self, static_batch: int | str) -> BatchRange:
        """This range checked against the graph's batch axis (an int when exported with --batch-dim K)."""
        if isinstance(static_batch, int) and (self.min, self.opt, self.max) != (static_batch,) * 3:
            raise InvalidArgumentError(
                f"the graph was exported with a fixed batch of {static_batch}; pass --min-batch {static_batch} "
                f"--opt-batch {static_batch} --max-batch {static_batch} or re-export with a dynamic batch"
            )
        return self


def engine_file_name(precision: str, batch: BatchRange, tensorrt_version: str, gpu: Gpu) -> str:
    """``denoiser.fp16.b1-32.trt10.14.sm90.plan``."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return f"denoiser.{precision}.b{batch.min}-{batch.max}.trt{short_version(tensorrt_version)}.{gpu.sm}{ENGINE_SUFFIX}"


def timing_cache_name(tensorrt_version: str, gpu: Gpu) -> str:
    """Where build-engine keeps TensorRT's timing cache by default: one per TensorRT version and
    compute capability, the two things a timing cache is only valid for."""
    return f"timing-cache.trt{short_version(tensorrt_version)}.{gpu.sm}.bin"


def check_engine_runs_here(manifest: Manifest, name: str, tensorrt_version: str, gpu: Gpu) -> EngineRecord:
    """The manifest entry of plan ``name``, after checking it was built for this TensorRT and GPU."""
    entry = manifest.engines.get(name)
    if entry is None:
        raise ArtifactError(
            f"{manifest.export_dir / name} is not listed in {manifest.path}; "
            f"build engines with `vmddpm-deploy build-engine {manifest.export_dir}`"
        )
    rebuild = f"rebuild it here with `vmddpm-deploy build-engine {manifest.export_dir}{_precision_flag(entry)}`"
    if entry.tensorrt != tensorrt_version:
        raise ArtifactError(
            f"{name} was built with TensorRT {entry.tensorrt}, this machine has TensorRT {tensorrt_version} "
            f"(a plan only loads into the version that built it); {rebuild}"
        )
    if entry.compute_capability != gpu.compute_capability:
        raise ArtifactError(
            f"{name} was built for a GPU of compute capability {entry.compute_capability} "
            f"({entry.gpu}), this is {gpu.name} ({gpu.compute_capability}); {rebuild}"
        )
    return entry


def select_engine(
    manifest: Manifest, tensorrt_version: str, gpu: Gpu, name: str | None = None, precision: str | None = None
) -> tuple[str, EngineRecord]:
    """The plan to run: ``name`` if given, else the best one built for this TensorRT and GPU
    (fp16 before fp32, then the widest batch range); ``precision`` (one of ``PRECISIONS``) narrows the choice."""
    if name is not None:
        entry = check_engine_runs_here(manifest, name, tensorrt_version, gpu)
        if precision is not None and entry.precision != precision:
            raise InvalidArgumentError(f"{name} is an {entry.precision} engine, not {precision}")
        return name, entry
    usable = [
        (candidate, entry)
        for candidate, entry in manifest.engines.items()
        if entry.tensorrt == tensorrt_version and entry.compute_capability == gpu.compute_capability
        and precision in (None, entry.precision)
    ]
    if not usable:
        built = ", ".join(manifest.engines) or "none"
        kind = f"{precision} engine" if precision else "engine"
        flag = "--fp32" if precision == "fp32" else "--fp16"
        raise ArtifactError(
            f"{manifest.export_dir} has no {kind} for TensorRT {tensorrt_version} on {gpu.name} ({gpu.sm}) "
            f"(engines: {built}); build one with `vmddpm-deploy build-engine {manifest.export_dir} {flag}`"
        )
    usable.sort(key=lambda item: (item[1].precision != "fp16", -item[1].max_batch, item[0]))
    return usable[0]


def record_engine(
    export_dir: Path, plan: Path, *, precision: str, batch: BatchRange, tensorrt_version: str, gpu: Gpu,
    plugin_library: Path,
) -> EngineRecord:
    """Add (or replace) ``plan``'s entry in ``export_dir/manifest.json``; returns the entry.

    The build says what it made (precision, batch range, TensorRT, GPU); the file identities
    (sha256, bytes of the plan and of the plugin library) are measured here from the files on
    disk. The manifest is re-read just before it is rewritten (atomically), so entries another
    build recorded meanwhile are kept.
    """
    record, library = file_record(plan), file_record(plugin_library)
    entry = EngineRecord(
        graph=precision,  # graph kinds are named after their precision
        precision=precision,
        min_batch=batch.min,
        opt_batch=batch.opt,
        max_batch=batch.max,
        tensorrt=tensorrt_version,
        gpu=gpu.name,
        compute_capability=gpu.compute_capability,
        sha256=record["sha256"],
        bytes=record["bytes"],
        plugin_library=plugin_library.name,
        plugin_library_sha256=library["sha256"],
    )
    write_manifest(read_manifest(export_dir, verify=False).with_engine(plan.name, entry))
    return entry


def stale_engines(manifest: Manifest, plugin_library_sha256: str) -> list[str]:
    """Engines recorded with another plugin library than the one now beside them."""
    return sorted(name for name, entry in manifest.engines.items() if entry.plugin_library_sha256 != plugin_library_sha256)


def _precision_flag(entry: EngineRecord) -> str:
    return " --fp16" if entry.precision == "fp16" else ""
