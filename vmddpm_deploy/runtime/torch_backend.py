"""The ``torch`` backend: the model in eager PyTorch (native ops when built)."""

from __future__ import annotations

import torch

from vmddpm_deploy.checkpoint import Checkpoint, build_model


class TorchDenoiser:
    """Runs a checkpoint's model under ``torch.inference_mode`` on ``device``."""

    name = "torch"

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = build_model(checkpoint).to(self.device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device), t.to(self.device))
