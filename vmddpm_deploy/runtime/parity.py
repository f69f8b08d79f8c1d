"""``check``: the same (x, t) through several backends, compared with torch fp32.

Rows and their tolerances (a row passes when every element has |eps - eps_torch| <= atol + rtol * |eps_torch|):

=====================  ======================================  ===============
row                    runs                                    atol / rtol
=====================  ======================================  ===============
torch                  the checkpoint in PyTorch: the oracle   (reference)
onnxruntime            portable graph in ONNX Runtime          1e-4 / 0
reference-onnx         custom-node fp32 graph (TensorRT's)     1e-4 / 0
reference-onnx-fp16    custom-node fp16 graph                  5e-3 / 3e-3
tensorrt               the export's engine                     by its precision
=====================  ======================================  ===============

fp32 rows use 1e-4 absolute at eps scale ~1, far above fp32 rounding over the model and far below
any real disagreement (a wrong op or weight); fp16 rows mamba-ssm's fp16 tolerance. The measured
errors, well inside both, are in the README ("ONNX export", ``vmddpm-deploy check EXPORT``).

Example::

    source = open_source("exports/tiny")
    rows = run_check(source, ["onnxruntime", "reference-onnx"], batch=2)
"""

from __future__ import annotations

import os

import torch

from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime.source import (
    BACKENDS,
    DenoiserSource,
    load_denoiser,
    open_source,
)

FP32 = (1e-4, 0.0)
FP16 = (5e-3, 3e-3)

#: The backends ``check`` compares and each one's (atol, rtol); tensorrt's depends on its engine.
TOLERANCES: dict[str, tuple[float, float]] = {
    "torch": (0.0, 0.0),
    "onnxruntime": FP32,
    "reference-onnx": FP32,
    "reference-onnx-fp16": FP16,
    "tensorrt": FP32,
}


def tolerance(name: str, source: DenoiserSource) -> tuple[float, float]:
    """(atol, rtol) of row ``name``: fp16 bounds for an fp16 graph or an engine with fp16 layers."""
    if name == "tensorrt":
        precisions = {entry.precision for entry in source.manifest.engines.values()}
        return FP16 if "fp16" in precisions else FP32
    return TOLERANCES[name]


def torch_reference(source: DenoiserSource, checkpoint: str | os.PathLike | None = None) -> DenoiserSource:
    """The checkpoint source behind an export: ``checkpoint`` when given, else the one the manifest
    records if it is still there with the recorded sha256."""
    if checkpoint is not None:
        opened = open_source(checkpoint)
        if opened.kind != "checkpoint":
            raise InvalidArgumentError(f"--checkpoint takes a checkpoint file, {checkpoint} is an export")
        if opened.config != source.config:
            raise InvalidArgumentError(
                f"{checkpoint} is a different model from the export {source.path} (model configs differ); "
                "pass the checkpoint it was exported from"
            )
        return opened
    recorded = source.torch_checkpoint
    path, why = source.source_checkpoint_path
    if recorded is None:
        raise InvalidArgumentError(
            f"check compares with torch fp32 and needs the checkpoint {source.path} was exported from; "
            f"{why}: pass it with --checkpoint CKPT"
        )
    return DenoiserSource("checkpoint", path, recorded.config, recorded.schedule,
                          source.manifest.source.sha256, checkpoint=recorded)


def check_inputs(config, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, 1) and timesteps spread over [0, T) so early and late steps are both covered."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=generator)
    t = torch.linspace(0, 999, batch).round().long()
    return x, t


def compare(eps: torch.Tensor, reference: torch.Tensor, atol: float, rtol: float) -> dict:
    """max abs / max rel error of ``eps`` against ``reference`` and whether every element is in bounds.

    max rel divides by max(|reference|, 1e-3): elements of eps near 0 would make it meaningless.
    """
    error = (eps - reference).abs()
    allowed = atol + rtol * reference.abs()
    return {
        "max_abs": error.max().item(),
        "max_rel": (error / reference.abs().clamp_min(1e-3)).max().item(),
        "atol": atol,
        "rtol": rtol,
        # What the verdict is made on: the largest error as a fraction of what its element allows.
        "max_error_over_allowed": (error / allowed).max().item(),
        "passed": bool((error <= allowed).all()),
    }


#: One test batch is enough to compare backends; a larger one only risks running out of memory.
MAX_CHECK_BATCH = 256


def run_check(source: DenoiserSource, rows: list[str], batch: int, device: str = "cpu",
              checkpoint: str | os.PathLike | None = None) -> list[dict]:
    """Compare each row's eps with torch fp32 on the same inputs; one dict per row.

    The ``torch`` row, when asked for, is the reference itself (error 0): it names what ran.
    """
    if source.manifest is None:
        raise InvalidArgumentError(f"check compares the graphs of an export directory; {source.path} is not one")
    if not 1 <= batch <= MAX_CHECK_BATCH:
        raise InvalidArgumentError(f"--batch must be at least 1 and at most {MAX_CHECK_BATCH}, got {batch}")
    unknown = [row for row in rows if row not in TOLERANCES or row not in BACKENDS]
    if unknown:
        choices = ", ".join(name for name in TOLERANCES if name in BACKENDS)
        raise InvalidArgumentError(f"unknown backend {unknown[0]!r}; choose from {choices}")
    x, t = check_inputs(source.config, batch)
    reference_source = torch_reference(source, checkpoint)
    reference = load_denoiser(reference_source, "torch", device)(x, t).float().cpu()
    results = []
    for name in rows:
        eps = reference if name == "torch" else BACKENDS[name](source, device)(x, t).float().cpu()
        results.append({"backend": name, **compare(eps, reference, *tolerance(name, source))})
    return results
