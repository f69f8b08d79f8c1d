"""``check``: the same (x, t) through several backends, compared with torch fp32.

Rows and their tolerances (max over elements of |eps - eps_torch| <= atol + rtol * |eps_torch|):

=====================  ======================================  ===============
row                    runs                                    atol / rtol
=====================  ======================================  ===============
onnxruntime            portable graph in ONNX Runtime          1e-4 / 0
reference-onnx         custom-node fp32 graph (TensorRT's)     1e-4 / 0
reference-onnx-fp16    custom-node fp16 graph                  5e-3 / 3e-3
tensorrt               the export's engine                     by its precision
=====================  ======================================  ===============

fp32 rows use 1e-4 absolute at eps scale ~1 (the export issue's bound); fp16 rows mamba-ssm's
fp16 tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime import Denoiser
from vmddpm_deploy.runtime.source import DenoiserSource, load_denoiser

FP32 = (1e-4, 0.0)
FP16 = (5e-3, 3e-3)


@dataclass(frozen=True)
class CheckRow:
    name: str
    tolerance: tuple[float, float]  # (atol, rtol)
    load: Callable[[DenoiserSource, str], Denoiser]


def _reference_onnx(kind: str) -> Callable[[DenoiserSource, str], Denoiser]:
    def load(source: DenoiserSource, device: str) -> Denoiser:
        from vmddpm_deploy.runtime.onnx_reference_backend import OnnxReferenceDenoiser

        return OnnxReferenceDenoiser(source.manifest.graph_path(kind))

    return load


def _tensorrt_tolerance(source: DenoiserSource) -> tuple[float, float]:
    precisions = {entry.get("precision") for entry in source.manifest.engines.values()}
    return FP16 if "fp16" in precisions else FP32


CHECK_ROWS = {
    "onnxruntime": lambda source: CheckRow("onnxruntime", FP32, lambda s, d: load_denoiser(s, "onnxruntime", d)),
    "reference-onnx": lambda source: CheckRow("reference-onnx", FP32, _reference_onnx("fp32")),
    "reference-onnx-fp16": lambda source: CheckRow("reference-onnx-fp16", FP16, _reference_onnx("fp16")),
    "tensorrt": lambda source: CheckRow(
        "tensorrt", _tensorrt_tolerance(source), lambda s, d: load_denoiser(s, "tensorrt", d)
    ),
}


def check_inputs(config, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, 1) and timesteps spread over [0, T) so early and late steps are both covered."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=generator)
    t = torch.linspace(0, 999, batch).round().long()
    return x, t


def run_check(source: DenoiserSource, rows: list[str], batch: int, device: str = "cpu",
              torch_source: DenoiserSource | None = None) -> list[dict]:
    """Compare each row's eps with torch fp32 on the same inputs; one dict per row."""
    if source.manifest is None:
        raise InvalidArgumentError(f"check compares the graphs of an export directory; {source.path} is not one")
    unknown = [row for row in rows if row not in CHECK_ROWS]
    if unknown:
        raise InvalidArgumentError(f"unknown backend {unknown[0]!r}; choose from {', '.join(CHECK_ROWS)}")
    x, t = check_inputs(source.config, batch)
    reference = load_denoiser(torch_source or source, "torch", device)(x, t).float().cpu()
    results = []
    for name in rows:
        row = CHECK_ROWS[name](source)
        eps = row.load(source, device)(x, t).float().cpu()
        error = (eps - reference).abs()
        atol, rtol = row.tolerance
        results.append({
            "backend": name,
            "max_abs": error.max().item(),
            "max_rel": (error / reference.abs().clamp_min(1e-6)).max().item(),
            "atol": atol,
            "rtol": rtol,
            "passed": bool((error <= atol + rtol * reference.abs()).all()),
        })
    return results
