"""The ``onnxruntime`` backend: the portable graph (standard ONNX ops only) in ONNX Runtime.

CPU execution provider by default; on a CUDA device the CUDA provider (onnxruntime-gpu), with
the CPU provider behind it for any node CUDA lacks. On CPU, x, t and eps cross as numpy views of
the torch tensors (no copies). On CUDA an IO binding hands ONNX Runtime the torch tensors'
device pointers and a preallocated eps, so nothing round-trips through host memory.

Example::

    denoiser = OnnxRuntimeDenoiser("exports/tiny/denoiser.portable.onnx", threads=4)
    eps = denoiser(x, t)          # x: (batch, C, H, W) float32, t: (batch,) int64
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vmddpm_deploy.errors import (
    ArtifactError,
    BackendUnavailableError,
    InvalidArgumentError,
)
from vmddpm_deploy.runtime.arithmetic import device_description
from vmddpm_deploy.runtime.batching import check_batch

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_ORT_WARNING = 2  # onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error


class OnnxRuntimeDenoiser:
    """``Denoiser`` over an ONNX graph: x (batch, C, H, W) float, t (batch,) int64 -> eps.

    ``threads``: intra-op threads (None: onnxruntime's default, one per physical core);
    ``optimization``: graph optimisation level, one of GRAPH_OPTIMIZATION_LEVELS.
    """

    name = "onnxruntime"

    def __init__(
        self,
        graph: str | os.PathLike,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        optimization: str = "all",
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from None
        if optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise InvalidArgumentError(
                f"graph optimisation level {optimization!r} is not one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}"
            )
        if threads is not None and threads < 1:
            raise InvalidArgumentError(f"onnxruntime intra-op threads must be at least 1, got {threads}")
        self.device = torch.device(device)
        self.device_id = self.device.index or 0
        providers: list = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "this onnxruntime has no CUDA execution provider; install onnxruntime-gpu or use --device cpu"
                )
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device_id}))
        elif self.device.type != "cpu":
            raise InvalidArgumentError(f"the onnxruntime backend runs on cpu or cuda, not {self.device}")
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        options.log_severity_level = _ORT_WARNING
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(Path(graph)), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises pybind types that share no base but Exception)
            raise ArtifactError(f"onnxruntime cannot load {graph}: {str(exc).splitlines()[0]}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != {"x", "t"} or outputs != ["eps"]:
            raise ArtifactError(
                f"{graph} has inputs {sorted(inputs)} and outputs {outputs}; expected (x, t) -> eps "
                "(a vmddpm-deploy export)"
            )
        self.io_dtype = np.float16 if inputs["x"].type == "tensor(float16)" else np.float32
        self.providers = self.session.get_providers()
        self.graph_name = Path(graph).name
        fixed = inputs["x"].shape[0]  # an int for a graph exported with --batch-dim K, else a name
        self.batch_range = (fixed, fixed) if isinstance(fixed, int) else None

    def arithmetic(self) -> dict[str, str]:
        """What decides this denoiser's rounding besides the batch shape (runtime/arithmetic.py)."""
        import onnxruntime as ort

        return {
            "runtime": f"onnxruntime {ort.__version__}, {self.providers[0]}",
            "device": device_description(self.device),
            "precision": "fp16" if self.io_dtype == np.float16 else "fp32",
        }

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_batch(self.graph_name, self.batch_range, x.shape[0])
        if self.device.type == "cuda":
            return self._run_bound(x, t)
        feeds = {
            "x": x.detach().cpu().numpy().astype(self.io_dtype, copy=False),
            "t": t.detach().cpu().numpy().astype(np.int64, copy=False),
        }
        (eps,) = self.session.run(["eps"], feeds)
        return torch.from_numpy(eps).to(device=x.device, dtype=x.dtype)

    def _run_bound(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """CUDA: bind the torch buffers themselves; ORT reads x, t and writes eps in device memory."""
        torch_dtype = torch.float16 if self.io_dtype == np.float16 else torch.float32
        device = torch.device("cuda", self.device_id)
        x_in = x.detach().to(device, torch_dtype).contiguous()
        t_in = t.detach().to(device, torch.int64).contiguous()
        eps = torch.empty_like(x_in)
        binding = self.session.io_binding()
        binding.bind_input("x", "cuda", self.device_id, self.io_dtype, tuple(x_in.shape), x_in.data_ptr())
        binding.bind_input("t", "cuda", self.device_id, np.int64, tuple(t_in.shape), t_in.data_ptr())
        binding.bind_output("eps", "cuda", self.device_id, self.io_dtype, tuple(eps.shape), eps.data_ptr())
        # ORT runs on its own stream: finish torch's writes to x_in / t_in first.
        torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding)
        return eps.to(device=x.device, dtype=x.dtype)
