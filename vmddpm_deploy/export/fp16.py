"""The fp16 casting policy of ``denoiser.fp16.onnx``.

TensorRT 10+ builds strongly typed networks: every tensor's precision is the one in the graph.
So the policy is applied to the PyTorch model before export, and the exporter records it as
``Cast`` nodes:

* fp16: graph io (``x``, ``eps``), convolutions, linear layers, activations, the residual stream
  and the scan's io tensors (u, delta, B, C and y: ``T`` of the op contract).
* fp32 islands: LayerNorm and GroupNorm (their variance sums overflow fp16 at 65504), the time
  embedding (``sin``/``cos`` of ``t * freq`` with t up to 999 needs more than fp16's 11 bits of
  mantissa) and the scan's A = -exp(A_log), D and delta_bias, which the op contract takes in
  fp32. The scan's softplus and exp run in fp32 inside the custom node (contract: math in fp32).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vmddpm_deploy.model.vmddpm import SS2D, VMDDPM

#: Modules evaluated in fp32 inside the fp16 graph.
FP32_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm)
#: SS2D parameters the op contract takes in fp32 (A from A_logs, D, delta_bias).
FP32_SS2D_PARAMETERS = ("A_logs", "Ds", "dt_projs_bias")


class Float32Island(nn.Module):
    """Run ``module`` in fp32; return ``output_dtype`` (default: the dtype of the input)."""

    def __init__(self, module: nn.Module, output_dtype: torch.dtype | None = None):
        super().__init__()
        self.module = module.float()
        self.output_dtype = output_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float()).to(self.output_dtype or x.dtype)


def half_precision(model: VMDDPM) -> VMDDPM:
    """A copy of ``model`` taking and returning fp16, with the fp32 islands described above."""
    model = copy.deepcopy(model).float().eval()
    _wrap_islands(model)
    model.time_embed = Float32Island(model.time_embed, output_dtype=torch.float16)
    _to_half(model)
    return model


def _wrap_islands(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, FP32_MODULE_TYPES):
            setattr(module, name, Float32Island(child))
        else:
            _wrap_islands(child)


def _to_half(module: nn.Module) -> None:
    if isinstance(module, Float32Island):
        return
    keep = FP32_SS2D_PARAMETERS if isinstance(module, SS2D) else ()
    for name, param in module.named_parameters(recurse=False):
        if name not in keep:
            param.data = param.data.half()
    for child in module.children():
        _to_half(child)
