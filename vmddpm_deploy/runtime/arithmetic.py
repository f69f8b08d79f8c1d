"""What, besides a job's settings, decides the bytes of the images it makes.

A backend's kernels round according to the code that runs (runtime and version, our native
kernels), the hardware they were picked for (CPU instruction set, GPU model), the precision and
the number of rows per denoiser call. Sampling fixes everything else (docs/design.md section 4):
on the CPU every call has ``micro_batch`` rows and one intra-op thread, so neither the thread
count, nor ``--batch-size``, nor the shard split changes a byte. A job records its
:class:`Arithmetic` in ``progress.json`` and ``samples.json`` and refuses to be continued, or
to share a directory, under another one.

Each backend describes itself with ``arithmetic() -> {"runtime": ..., "device": ..., "precision": ...}``
using the two helpers below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is described: job settings are read without it
    import torch


@dataclass(frozen=True)
class Arithmetic:
    """The arithmetic family a job's images were computed in; equal values give equal bytes."""

    backend: str  # torch, onnxruntime, tensorrt
    runtime: str  # the library and version that runs the graph (and our native kernels, for torch)
    device: str  # "cpu AVX512" / "cpu AVX2" ...; a GPU's model name
    precision: str  # fp32, fp16
    micro_batch: int  # rows per denoiser call: kernels may round differently at another batch shape


def cpu_device() -> str:
    """The CPU as far as its kernels see it: the instruction set ATen dispatches to (``AVX512``,
    ``AVX2``, ``DEFAULT``), which is also the level oneDNN and ONNX Runtime's MLAS pick theirs by."""
    import torch

    return f"cpu {torch.backends.cpu.get_cpu_capability()}"


def device_description(device: torch.device) -> str:
    """:func:`cpu_device` on the CPU, the GPU's model name on CUDA."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_device()
