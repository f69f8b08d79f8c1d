"""The ``tensorrt`` backend: a TensorRT plan with our plugins, one CUDA graph per batch size.

Loading (:func:`load_tensorrt_denoiser`) checks, each with a one-line error:

1. TensorRT imports and a CUDA GPU is visible (BackendUnavailableError);
2. the export directory's manifest and checksums hold (ArtifactError), and it lists a plan built
   with this TensorRT version for this GPU's compute capability (ArtifactError, "rebuild");
3. the plugin library beside the plan is the one it was built with (sha256 in the manifest) and
   registers every custom op (BackendUnavailableError); it is loaded before the plan is
   deserialised, since the plan's plugin layers need their creators.

Running (:class:`TensorRTDenoiser`): one execution context per batch size, all sharing one block
of activation memory (``ExecutionContextAllocationStrategy.USER_MANAGED``), with inputs and
outputs bound to static torch CUDA tensors. Everything runs on one CUDA stream. The first call at
a batch size enqueues the engine (the warm-up TensorRT asks for before capture: it performs its
deferred set-up outside the graph), then captures that enqueue in a CUDA graph; later calls copy
``x`` and ``t`` into the static inputs and replay the graph. If capture fails (an engine whose
layers cannot be captured) the batch size runs with plain ``execute_async_v3`` and a warning says
so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import (
    ArtifactError,
    BackendUnavailableError,
    InvalidArgumentError,
)
from vmddpm_deploy.export.manifest import MANIFEST_NAME, EngineRecord, Manifest, read_manifest
from vmddpm_deploy.runtime.arithmetic import device_description
from vmddpm_deploy.runtime.batching import check_batch
from vmddpm_deploy.tensorrt.engines import ENGINE_SUFFIX, select_engine
from vmddpm_deploy.tensorrt.environment import cuda_gpu, import_tensorrt
from vmddpm_deploy.tensorrt.logger import tensorrt_logger
from vmddpm_deploy.tensorrt.plugin_library import load_plugin_library


def load_tensorrt_denoiser(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    cuda_graphs: bool = True,
    manifest: Manifest | None = None,
    precision: str | None = None,
) -> TensorRTDenoiser:
    """The denoiser of an export directory (its best plan for this machine, of ``precision``
    when given) or of a plan inside one.

    ``manifest``: the export directory's manifest when the caller has already read and verified
    it (``open_source`` has), so the files are not hashed twice.
    """
    path = Path(path)
    if path.suffix == ENGINE_SUFFIX:
        export_dir, engine_name = path.parent, path.name
    elif path.name == MANIFEST_NAME:
        export_dir, engine_name = path.parent, None
    elif path.is_dir() or not path.exists():
        export_dir, engine_name = path, None
    else:
        raise InvalidArgumentError(
            f"the tensorrt backend runs an export directory or a {ENGINE_SUFFIX} file inside one, got {path}; "
            f"export the checkpoint (`vmddpm-deploy export`) and build an engine (`vmddpm-deploy build-engine`)"
        )
    trt = import_tensorrt()
    # A CPU device (sample's default) still runs the plan on the current GPU; eps goes back to x's device.
    gpu = cuda_gpu(None if device is None or torch.device(device).type != "cuda" else str(device))
    if manifest is None or manifest.export_dir != export_dir:
        manifest = read_manifest(export_dir)  # ArtifactError without a manifest; verifies every sha256
    name, entry = select_engine(manifest, trt.__version__, gpu, engine_name, precision)
    return TensorRTDenoiser(trt, manifest, name, entry, torch.device("cuda", gpu.index), cuda_graphs)


# TensorRT data types of our graphs' I/O and their torch twins.
def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64, trt.int32: torch.int32}
    if dtype not in table:
        raise ArtifactError(f"the engine has an I/O tensor of type {dtype}, which the graphs never export")
    return table[dtype]


class _BatchRunner:
    """One batch size: its execution context, static I/O tensors and (once captured) CUDA graph."""

    def __init__(self, owner: TensorRTDenoiser, batch: int):
        trt, engine = owner.trt, owner.engine
        self.owner, self.batch = owner, batch
        self.context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self.context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context{owner.logger.take_error()}")
        memory = owner.activation_memory
        if hasattr(self.context, "set_device_memory"):  # TensorRT >= 10.1
            self.context.set_device_memory(memory.data_ptr(), memory.numel())
        else:
            self.context.device_memory = memory.data_ptr()
        image = owner.image_shape
        self.x = torch.empty((batch, *image), dtype=owner.dtypes["x"], device=owner.device)
        self.t = torch.empty((batch,), dtype=owner.dtypes["t"], device=owner.device)
        self.eps = torch.empty((batch, *image), dtype=owner.dtypes["eps"], device=owner.device)
        for role, tensor in (("x", self.x), ("t", self.t)):
            if not self.context.set_input_shape(owner.names[role], tuple(tensor.shape)):
                raise InvalidArgumentError(f"the engine refused batch {batch}{owner.logger.take_error()}")
        if tuple(self.context.get_tensor_shape(owner.names["eps"])) != tuple(self.eps.shape):
            raise ArtifactError(f"the engine's output {owner.names['eps']} is not shaped like x (batch, C, H, W)")
        for role, tensor in (("x", self.x), ("t", self.t), ("eps", self.eps)):
            self.context.set_tensor_address(owner.names[role], tensor.data_ptr())
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed_up = False

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(self.owner.stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT failed to run the engine{self.owner.logger.take_error()}")

    def run(self) -> None:
        """Compute eps from the static inputs on the owner's stream (the current stream)."""
        if self.graph is not None:
            self.graph.replay()
            return
        self.enqueue()
        if not self.warmed_up:
            self.warmed_up = True
            if self.owner.cuda_graphs:
                self.capture()

    def capture(self) -> None:
        stream = self.owner.stream
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local, as trtexec captures: other threads' CUDA calls do not break the capture.
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                if not self.context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError(f"execute_async_v3 failed while capturing{self.owner.logger.take_error()}")
        except RuntimeError as exc:
            torch.cuda.synchronize(self.owner.device)
            self.owner.graph_status[self.batch] = f"enqueue ({exc})"
            warnings.warn(
                f"tensorrt: CUDA graph capture failed at batch {self.batch} ({exc}); running plain enqueue instead",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self.graph = graph
        self.owner.graph_status[self.batch] = "cuda graph"


class TensorRTDenoiser:
    """Runs a TensorRT plan: x (batch, C, H, W), t (batch,) -> eps, batch within the plan's profile.

    ``x`` may live on any device; ``eps`` comes back on ``x``'s device in ``x``'s dtype (an fp16
    plan computes in fp16 and its eps is cast back). ``graph_status`` says, per batch size seen,
    whether it replays a CUDA graph or enqueues.
    """

    name = "tensorrt"

    def __init__(self, trt, manifest: Manifest, engine_name: str, entry: EngineRecord, device: torch.device,
                 cuda_graphs: bool = True):
        self.trt, self.manifest, self.engine_name, self.entry = trt, manifest, engine_name, entry
        self.device, self.cuda_graphs = device, cuda_graphs
        self.logger = tensorrt_logger(trt)
        export_dir = manifest.export_dir
        library = export_dir / entry.plugin_library
        if not library.is_file():
            raise ArtifactError(
                f"{library} (the plugin library {engine_name} was built with) is missing; "
                f"rebuild the engine with `vmddpm-deploy build-engine {export_dir}`"
            )
        if sha256_file(library) != entry.plugin_library_sha256:
            raise ArtifactError(
                f"{library} is not the plugin library {engine_name} was built with (sha256 differs); "
                f"rebuild the engine with `vmddpm-deploy build-engine {export_dir}`"
            )
        load_plugin_library(trt, library, manifest.custom_ops)

        with torch.cuda.device(device):
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine((export_dir / engine_name).read_bytes())
            if self.engine is None:
                raise ArtifactError(
                    f"TensorRT could not deserialise {export_dir / engine_name}{self.logger.take_error()}; "
                    f"rebuild it with `vmddpm-deploy build-engine {export_dir}`"
                )
            self.names = {
                "x": manifest.inputs[0].name,
                "t": manifest.inputs[1].name,
                "eps": manifest.outputs[0].name,
            }
            engine_io = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
            if set(self.names.values()) != engine_io:
                raise ArtifactError(f"{engine_name} has I/O {sorted(engine_io)}, the manifest says {sorted(self.names.values())}")
            self.dtypes = {role: _torch_dtype(trt, self.engine.get_tensor_dtype(name)) for role, name in self.names.items()}
            self.image_shape = manifest.image_shape
            size = getattr(self.engine, "device_memory_size_v2", None) or self.engine.device_memory_size
            self.activation_memory = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)
            self.stream = torch.cuda.Stream(device)
        self.batch_range = (entry.min_batch, entry.max_batch)
        self.runners: dict[int, _BatchRunner] = {}
        self.graph_status: dict[int, str] = {}

    def arithmetic(self) -> dict[str, str]:
        """What decides this denoiser's rounding besides the batch shape (runtime/arithmetic.py):
        the plan, which TensorRT tuned for this GPU model and version."""
        return {
            "runtime": f"tensorrt {self.trt.__version__}, {self.engine_name}",
            "device": device_description(self.device),
            "precision": self.entry.precision,
        }

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        check_batch(self.engine_name, self.batch_range, batch)
        with torch.cuda.device(self.device):
            runner = self.runners.get(batch)
            if runner is None:
                runner = self.runners[batch] = _BatchRunner(self, batch)
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)  # x and t may still be in the making on the caller's stream
            with torch.cuda.stream(self.stream):
                runner.x.copy_(x, non_blocking=True)
                runner.t.copy_(t, non_blocking=True)
                runner.run()
                eps = runner.eps.to(dtype=x.dtype, copy=True)  # the static output is overwritten next call
            caller.wait_stream(self.stream)
            eps.record_stream(caller)
        return eps if x.device == self.device else eps.to(x.device)
