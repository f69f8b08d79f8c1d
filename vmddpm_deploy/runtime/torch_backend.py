"""The ``torch`` backend: the model in eager PyTorch (native ops when built)."""

from __future__ import annotations

import torch

from vmddpm_deploy.checkpoint import Checkpoint, build_model
from vmddpm_deploy.choices import PRECISIONS
from vmddpm_deploy.errors import InvalidArgumentError


class TorchDenoiser:
    """Runs a checkpoint's model under ``torch.inference_mode`` on ``device``.

    ``precision="fp16"`` runs the fp16 policy of ``denoiser.fp16.onnx`` (fp16 io, weights and
    activations; norms, the time embedding and the scan's A, D, delta_bias in fp32): the eager
    baseline a TensorRT fp16 engine is compared with. eps comes back in x's dtype.
    """

    name = "torch"

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu", precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"torch precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.io_dtype = torch.float16 if precision == "fp16" else torch.float32
        model = build_model(checkpoint)
        if precision == "fp16":
            from vmddpm_deploy.export.fp16 import half_precision

            model = half_precision(model)
        self.model = model.to(self.device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.model(x.to(self.device, self.io_dtype), t.to(self.device))
        return eps.to(x.dtype)
