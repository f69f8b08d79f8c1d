"""The ``torch`` backend: the model in eager PyTorch (native ops when built)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from vmddpm_deploy.checkpoint import Checkpoint, build_model
from vmddpm_deploy.choices import TORCH_PRECISIONS
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime.arithmetic import device_description

#: /proc/cpuinfo flags of CPUs whose bf16 matrix products run natively (oneDNN uses them).
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), read at run time."""
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto`` -> the precision the torch backend runs on ``device``; other names pass through.

    ``auto`` is bf16 on a CPU with native bf16, where the quality grid showed its samples equal to
    fp32's on two seeds (README, "Fast sampling at equal quality"), and fp32 elsewhere: bf16
    emulated without those instructions is slower than fp32. bf16 is a CPU path: a GPU runs fp16
    through TensorRT.
    """
    if precision == "auto":
        native = torch.device(device).type == "cpu" and cpu_has_native_bf16()
        return "bf16" if native else "fp32"
    if precision not in TORCH_PRECISIONS:
        raise InvalidArgumentError(f"torch precision must be one of auto, {', '.join(TORCH_PRECISIONS)}, got {precision!r}")
    return precision


class TorchDenoiser:
    """Runs a checkpoint's model under ``torch.inference_mode`` on ``device``.

    * ``fp32``: the reference arithmetic.
    * ``fp16``: the fp16 policy of ``denoiser.fp16.onnx`` (fp16 io, weights and activations;
      norms, the time embedding and the scan's A, D, delta_bias in fp32): the eager baseline a
      TensorRT fp16 engine is compared with.
    * ``bf16``: fp32 weights under ``torch.autocast(dtype=bfloat16)``, so convolutions, linear
      layers and matrix products run in bf16 (oneDNN's native bf16 kernels on AVX512-BF16 / AMX
      CPUs). LayerNorm and GroupNorm take bf16 and accumulate their statistics in fp32 (torch's
      CPU kernels do, and tests/runtime/test_torch_backend.py checks it; explicit fp32 casts
      around them measured slower). The selective scan takes bf16 io and keeps its math in fp32,
      as the op contract says (docs/design.md section 2). Activations are ``channels_last``,
      the layout oneDNN's convolutions prefer.

    ``compile=True`` runs the model through ``torch.compile`` with inductor's weight freezing
    (``bench``'s compiled rows; the first calls at each batch shape compile). eps comes back in
    x's dtype.
    """

    name = "torch"

    def __init__(
        self, checkpoint: Checkpoint, device: str | torch.device = "cpu", precision: str = "fp32", compile: bool = False
    ):
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.io_dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = build_model(checkpoint)
        if self.precision == "fp16":
            from vmddpm_deploy.export.fp16 import half_precision

            model = half_precision(model)
        self.memory_format = torch.contiguous_format
        if self.precision == "bf16":
            self.memory_format = torch.channels_last
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.compiled = compile
        if compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # fold the weights into the graph (inference only)
            self.model = torch.compile(self.model)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def arithmetic(self) -> dict[str, str]:
        """What decides this denoiser's rounding besides the batch shape (runtime/arithmetic.py)."""
        from vmddpm_deploy.ops.dispatch import kernels_for
        from vmddpm_deploy.ops.native_library import library

        probe = torch.empty(0, device=self.device, dtype=self.io_dtype)
        kernels = kernels_for(probe).name
        if kernels == "native" and self.device.type == "cpu":
            kernels = f"native {library().vmddpm_cpu_isa().decode()}"
        return {
            "runtime": f"torch {torch.__version__}, {kernels} scan",
            "device": device_description(self.device),
            "precision": self.precision,
        }

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inputs = x.to(self.device, self.io_dtype).contiguous(memory_format=self.memory_format)
        with self._autocast():
            eps = self.model(inputs, t.to(self.device))
        return eps.to(x.dtype).contiguous()
