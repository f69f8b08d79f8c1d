"""The ``onnxruntime`` backend: the portable graph (standard ONNX ops only) in ONNX Runtime.

CPU execution provider by default; the CUDA provider first when this onnxruntime has it and a
CUDA device is asked for. Inputs and outputs cross as numpy arrays on CPU (for the CPU provider
that is the IO binding: no copies beyond the torch<->numpy views).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vmddpm_deploy.errors import ArtifactError, BackendUnavailableError, InvalidArgumentError

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class OnnxRuntimeDenoiser:
    """``Denoiser`` over an ONNX graph: x (batch, C, H, W) float, t (batch,) int64 -> eps.

    ``threads``: intra-op threads (None: onnxruntime's default, one per core);
    ``optimization``: graph optimisation level, one of GRAPH_OPTIMIZATION_LEVELS.
    """

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
        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "this onnxruntime has no CUDA execution provider; install onnxruntime-gpu or use --device cpu"
                )
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(Path(graph)), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises pybind types that share no base but Exception)
            raise ArtifactError(f"onnxruntime cannot load {graph}: {str(exc).splitlines()[0]}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"x", "t"}:
            raise ArtifactError(f"{graph} has inputs {sorted(inputs)}, expected x and t (a vmddpm-deploy export)")
        self.io_dtype = np.float16 if inputs["x"].type == "tensor(float16)" else np.float32

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        feeds = {
            "x": x.detach().cpu().numpy().astype(self.io_dtype, copy=False),
            "t": t.detach().cpu().numpy().astype(np.int64, copy=False),
        }
        (eps,) = self.session.run(["eps"], feeds)
        return torch.from_numpy(eps).to(device=x.device, dtype=x.dtype)
