"""Building TensorRT engines from an export directory (``vmddpm-deploy build-engine``).

As in Polygraphy, the build is a chain of lazy loaders, each a callable that does its work when
called and takes the previous step as a callable::

    plugins = LoadPluginLibrary(trt, "libvmddpm_trt_plugins.so", manifest.custom_ops)
    network = NetworkFromOnnxPath(trt, "exports/tiny/denoiser.fp16.onnx", plugins)
    config = CreateConfig(trt, {"x": (1, 32, 32), "t": ()}, BatchRange(1, 8, 32), timing_cache=path)
    plan = EngineBytesFromNetwork(trt, network, config, save_timing_cache=path)()

:class:`EngineBuilder` wires them for an export directory: the network is strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: the graph's dtypes decide each layer's
precision, so ``--fp16`` means "parse ``denoiser.fp16.onnx``", not a builder flag), one
optimisation profile spans the batch range, the timing cache is reused across builds, and the
plan lands beside the graphs with the plugin library, recorded in ``manifest.json``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.choices import PRECISIONS
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import (
    ArtifactError,
    ExportError,
    InvalidArgumentError,
    OutputError,
)
from vmddpm_deploy.export.manifest import CustomOps, EngineRecord, read_manifest
from vmddpm_deploy.tensorrt.engines import (
    BatchRange,
    engine_file_name,
    record_engine,
    stale_engines,
    timing_cache_name,
)
from vmddpm_deploy.tensorrt.environment import cuda_gpu, import_tensorrt
from vmddpm_deploy.tensorrt.logger import tensorrt_logger
from vmddpm_deploy.tensorrt.plugin_library import (
    PLUGIN_LIBRARY_FILENAME,
    find_plugin_library,
    load_plugin_library,
)


class LoadPluginLibrary:
    """Loads the plugin library into TensorRT's registry (once per process) and checks its ops."""

    def __init__(self, trt: ModuleType, path: Path, custom_ops: CustomOps):
        self.trt, self.path, self.custom_ops = trt, Path(path), custom_ops

    def __call__(self) -> Path:
        load_plugin_library(self.trt, self.path, self.custom_ops)
        return self.path


class NetworkFromOnnxPath:
    """``(builder, network, parser)`` for an ONNX file, parsed into a strongly typed network.

    ``plugins`` runs first: the parser maps our custom nodes to plugin creators by op type,
    ``plugin_version`` and ``plugin_namespace``, so the creators must be registered by then.
    """

    def __init__(self, trt: ModuleType, path: Path, plugins: Callable[[], object] | None = None):
        self.trt, self.path, self.plugins = trt, Path(path), plugins

    def __call__(self):
        trt = self.trt
        if self.plugins is not None:
            self.plugins()
        logger = tensorrt_logger(trt)
        builder = trt.Builder(logger)
        if builder is None:
            raise ExportError(f"TensorRT could not create a builder{logger.take_error()}")
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        # parse_from_file (not parse(bytes)) so weights stored as external data are found.
        if not parser.parse_from_file(str(self.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or logger.take_error()
            raise ExportError(f"TensorRT could not parse {self.path}: {errors}")
        return builder, network, parser


class CreateConfig:
    """A builder config with one optimisation profile over the batch axis.

    ``input_shapes`` maps each input to its shape without the batch axis (``x``: (C, H, W),
    ``t``: ()); ``timing_cache`` is read when it exists (a cache from another TensorRT or GPU is
    ignored with a warning, as TensorRT would reject it).
    """

    def __init__(
        self,
        trt: ModuleType,
        input_shapes: Mapping[str, tuple[int, ...]],
        batch: BatchRange,
        workspace_mb: int | None = None,
        timing_cache: Path | None = None,
    ):
        self.trt, self.input_shapes, self.batch = trt, dict(input_shapes), batch
        self.workspace_mb, self.timing_cache = workspace_mb, timing_cache

    def __call__(self, builder, network):
        trt = self.trt
        logger = tensorrt_logger(trt)
        config = builder.create_builder_config()
        if self.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        profile = builder.create_optimization_profile()
        for name, tail in self.input_shapes.items():
            profile.set_shape(name, (self.batch.min, *tail), (self.batch.opt, *tail), (self.batch.max, *tail))
        if config.add_optimization_profile(profile) < 0:
            raise ExportError(f"TensorRT rejected the batch profile {self.batch}{logger.take_error()}")
        cache = None
        if self.timing_cache is not None and self.timing_cache.is_file():
            cache = config.create_timing_cache(self.timing_cache.read_bytes())
            if cache is None or not config.set_timing_cache(cache, False):
                print(f"tensorrt: ignoring timing cache {self.timing_cache} (from another TensorRT or GPU)", file=sys.stderr)
                cache = None
        if cache is None:
            config.set_timing_cache(config.create_timing_cache(b""), False)
        return config


class EngineBytesFromNetwork:
    """The serialised plan (``IHostMemory``) built from a network loader and a config loader;
    ``save_timing_cache`` receives the builder's timing cache afterwards (atomically)."""

    def __init__(
        self,
        trt: ModuleType,
        network: Callable[[], tuple],
        config: Callable[[Any, Any], Any],
        save_timing_cache: Path | None = None,
    ):
        self.trt, self.network, self.config, self.save_timing_cache = trt, network, config, save_timing_cache

    def __call__(self):
        logger = tensorrt_logger(self.trt)
        builder, network, _parser = self.network()
        config = self.config(builder, network)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ExportError(f"TensorRT could not build an engine{logger.take_error()}")
        if self.save_timing_cache is not None:
            cache = config.get_timing_cache().serialize()
            write_atomic(self.save_timing_cache, lambda handle: handle.write(cache))
        return plan


@dataclass(frozen=True)
class EngineSettings:
    """What ``build-engine`` is asked for; ``timing_cache`` None = beside the plan, per TensorRT and GPU."""

    precision: str = "fp32"
    batch: BatchRange = field(default_factory=BatchRange)
    workspace_mb: int | None = None
    timing_cache: Path | None = None
    plugin_library: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.workspace_mb is not None and (isinstance(self.workspace_mb, bool) or self.workspace_mb < 1):
            raise InvalidArgumentError(f"--workspace must be a positive number of MiB, got {self.workspace_mb}")


@dataclass(frozen=True)
class BuiltEngine:
    path: Path
    entry: EngineRecord
    seconds: float
    timing_cache: Path
    stale: list[str]  # engines recorded with a plugin library this build replaced


class EngineBuilder:
    """Builds one engine for an export directory and records it in the manifest.

    Checks run cheapest first, so a machine without TensorRT fails in milliseconds with one line:
    the manifest and graph (ArtifactError), the batch range (InvalidArgumentError), TensorRT, the
    GPU and the plugin library (BackendUnavailableError).
    """

    def __init__(self, export_dir: str | os.PathLike, settings: EngineSettings = EngineSettings()):
        self.export_dir = Path(export_dir)
        self.settings = settings

    def build(self, on_stage: Callable[[str], None] | None = None) -> BuiltEngine:
        stage = on_stage or (lambda message: None)
        settings = self.settings
        manifest = read_manifest(self.export_dir)
        onnx_path = manifest.graph_path(settings.precision)  # graph kinds are named after their precision
        batch = settings.batch.fit(manifest.batch_axis)
        if settings.timing_cache is not None and (settings.timing_cache.is_dir() or not settings.timing_cache.parent.is_dir()):
            raise OutputError(f"--timing-cache {settings.timing_cache} must be a file in an existing directory")
        trt = import_tensorrt()
        gpu = cuda_gpu()
        plugin_library = find_plugin_library(settings.plugin_library)

        name = engine_file_name(settings.precision, batch, trt.__version__, gpu)
        timing_cache = settings.timing_cache or self.export_dir / timing_cache_name(trt.__version__, gpu)
        stage(f"building {name} from {onnx_path.name} with TensorRT {trt.__version__} on {gpu.name}")
        started = time.perf_counter()
        plan = EngineBytesFromNetwork(
            trt,
            NetworkFromOnnxPath(trt, onnx_path, LoadPluginLibrary(trt, plugin_library, manifest.custom_ops)),
            CreateConfig(
                trt,
                {spec.name: spec.shape[1:] for spec in manifest.inputs},
                batch,
                settings.workspace_mb,
                timing_cache,
            ),
            save_timing_cache=timing_cache,
        )()
        seconds = time.perf_counter() - started

        plan_path = self.export_dir / name
        write_atomic(plan_path, lambda handle: handle.write(plan))
        library_beside = copy_plugin_library(plugin_library, self.export_dir)
        entry = record_engine(
            self.export_dir, plan_path, precision=settings.precision, batch=batch, tensorrt_version=trt.__version__,
            gpu=gpu, plugin_library=library_beside,
        )
        stale = stale_engines(read_manifest(self.export_dir, verify=False), entry.plugin_library_sha256)
        return BuiltEngine(plan_path, entry, seconds, timing_cache, stale)


def copy_plugin_library(library: Path, export_dir: Path) -> Path:
    """Put ``library`` beside the plans as ``libvmddpm_trt_plugins.so`` (atomically; skipped when
    the same bytes are already there); returns the copy."""
    destination = export_dir / PLUGIN_LIBRARY_FILENAME
    if not library.is_file():
        raise ArtifactError(f"plugin library {library} disappeared during the build")
    if destination.is_file() and sha256_file(destination) == sha256_file(library):
        return destination

    def copy(handle) -> None:
        with open(library, "rb") as source:
            shutil.copyfileobj(source, handle)

    write_atomic(destination, copy)
    return destination
