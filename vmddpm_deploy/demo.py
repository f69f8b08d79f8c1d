"""The end-to-end demo: the bundled trained checkpoint -> ONNX export -> a grid of samples ->
a contact sheet beside real held-out slices, and FID / KID against them, with timings.

Everything runs offline, sized for about a minute on 2 CPU cores: the tiny preset at 32 x 32, ``sample``'s
default sampler (:data:`~vmddpm_deploy.diffusion.reverse_process.DEFAULT_SAMPLER`, chosen by
``benchmarks/bench_quality.py``), 16 images, the Inception features of the held-out slices cached
after the first run.
Files written to the output directory::

    untrained-tiny.safetensors  only when no trained checkpoint is bundled (and --checkpoint is not given)
    export/            denoiser.onnx, denoiser.portable.onnx, manifest.json
    samples.npz        indices (n,), images (n, C, H, W) uint16, written by `sample`'s own loop
    progress.json      and samples.json: `sample`'s record of the run (settings, timings)
    contact_sheet.png  generated (left) and real held-out (right) images, labelled, with the scores
    demo.json          settings, stage timings, FID, KID
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.contact_sheet import write_contact_sheet
from vmddpm_deploy.data.bundled import BUNDLED_DIR
from vmddpm_deploy.diffusion.reverse_process import DEFAULT_SAMPLER, DEFAULT_STEPS
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.outputs import prepare_output_dir

#: The trained checkpoint shipped with the package (``train --data bundled --preset tiny``).
DEMO_CHECKPOINT = BUNDLED_DIR / "vmddpm_tiny_mni152.safetensors"
#: The real images generated ones are compared with: slices the bundled model never trained on.
REAL_SET = "bundled:heldout"
EXPORT_DTYPES = ("fp32",)
EXPORT_OPS = ("plugin", "portable")
#: The samples, as `sample --format npz` writes them (with its progress.json and samples.json).
SAMPLES_FILE = "samples.npz"


@dataclass(frozen=True)
class DemoSettings:
    n: int = 16
    n_real: int | None = None  # held-out slices compared with (a fixed subset); None: all of them
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    seed: int = 0
    batch_size: int | None = None  # None: as `sample` resolves it (on the CPU the images do not depend on it)
    device: str = "cpu"
    export: bool = True
    checkpoint: Path | None = None  # None: DEMO_CHECKPOINT, or an untrained one if it is missing

    def __post_init__(self) -> None:
        if self.n < 2:
            raise InvalidArgumentError(f"--n must be at least 2 (FID needs two images), got {self.n}")
        if self.n_real is not None and self.n_real < 2:
            raise InvalidArgumentError(f"--n-real must be at least 2 (FID needs two images), got {self.n_real}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidArgumentError(f"--batch-size must be at least 1, got {self.batch_size}")


def run_demo(
    out: Path,
    settings: DemoSettings,
    on_stage: Callable[[str], None] | None = None,
    on_progress: Callable[[str, float, float], None] | None = None,
) -> dict[str, Any]:
    """Run every stage and return the summary also written to ``out/demo.json``.

    ``on_stage(text)`` announces a stage; ``on_progress(task, advance, total)`` reports work done
    within one (sampling in images, feature extraction in images).
    """
    from vmddpm_deploy.evaluation import (
        ImageSet,
        InceptionFeatureExtractor,
        evaluate_sets,
        images_to_uint8,
        open_image_set,
    )
    from vmddpm_deploy.jobs import plan_job, run_sample_job
    from vmddpm_deploy.runtime.source import resolve_backend

    def stage(text: str) -> None:
        if on_stage is not None:
            on_stage(text)

    def progress(task: str, advance: float, total: float) -> None:
        if on_progress is not None:
            on_progress(task, advance, total)

    seconds: dict[str, float] = {}
    notes: list[str] = []

    clock = time.perf_counter()
    if settings.checkpoint is None and not DEMO_CHECKPOINT.is_file():
        prepare_output_dir(out)  # the untrained checkpoint is written into it
    checkpoint_path = _checkpoint_path(out, settings, notes)
    plan = plan_job(  # fails on a bad checkpoint or sampler setting before any work, and before --out is made
        checkpoint_path, n=settings.n, sampler=settings.sampler, steps=settings.steps, eta=0.0, seed=settings.seed,
        image_format="npz", batch_size=settings.batch_size,
    )
    prepare_output_dir(out)
    source, config = plan.source, plan.source.config
    seconds["checkpoint"] = time.perf_counter() - clock

    export_dir = None
    if settings.export:
        stage(f"exporting {checkpoint_path.name} to ONNX")
        clock = time.perf_counter()
        export_dir = _export(checkpoint_path, out / "export", notes)
        seconds["export"] = time.perf_counter() - clock

    # The fastest backend that runs here (TensorRT needs an engine, which the demo does not build).
    backend = resolve_backend("auto", source)
    stage(f"sampling {settings.n} images: {settings.sampler}, {settings.steps} steps, backend {backend}")
    clock = time.perf_counter()
    _remove_earlier_samples(out)
    shown = 0.0

    def on_sampled(done: float, total: int) -> None:
        nonlocal shown
        progress("sampling", done - shown, total)
        shown = done

    run = run_sample_job(plan, out, backend=backend, device=settings.device, resume=False, on_progress=on_sampled)
    seconds["sampling"] = time.perf_counter() - clock
    with np.load(out / SAMPLES_FILE) as npz:
        generated = npz["images"]

    stage(f"FID / KID against {REAL_SET}")
    clock = time.perf_counter()
    generated_set = ImageSet("generated", plan.image_shape, None, array=images_to_uint8(generated, "generated"))
    real_set = open_image_set(REAL_SET, size_hint=config.image_size).subset(settings.n_real)
    evaluation = evaluate_sets(
        generated_set,
        real_set,
        extractor=InceptionFeatureExtractor(device=settings.device),
        on_images=lambda images: progress("inception features", images, len(generated_set) + len(real_set)),
    )
    seconds["evaluation"] = time.perf_counter() - clock

    sheet = out / "contact_sheet.png"
    caption = (
        f"FID {evaluation.fid:.1f}   KID {evaluation.kid:.4f}   ({evaluation.n_generated} generated vs "
        f"{evaluation.n_real} real; FID from few images is biased upward)"
    )
    write_contact_sheet(
        sheet,
        [
            (f"generated: {checkpoint_path.name}, {settings.sampler} {settings.steps} steps", generated_set.array),
            (f"real: {real_set.source} (MNI152 slices)", _spread(real_set.array, settings.n)),
        ],
        caption,
    )

    summary = {
        "checkpoint": str(checkpoint_path),
        "settings": asdict(settings) | {"checkpoint": str(settings.checkpoint) if settings.checkpoint else None},
        "model": {"image_size": config.image_size, "in_channels": config.in_channels},
        "backend": backend,
        "export_dir": str(export_dir) if export_dir else None,
        "samples": str(out / SAMPLES_FILE),
        "contact_sheet": str(sheet),
        "ms_per_denoiser_call": run["ms_per_denoiser_call"],
        "denoiser_calls": run["denoiser_calls"],
        "batch_size": run["batch_size"],
        "images_per_second": round(settings.n / seconds["sampling"], 3),
        "evaluation": evaluation.to_dict(),
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "notes": notes,
    }
    data = json.dumps(summary, indent=2).encode()
    write_atomic(out / "demo.json", lambda handle: handle.write(data))
    return summary


def _remove_earlier_samples(out: Path) -> None:
    """An earlier demo's samples are replaced, not resumed: each demo samples and times afresh."""
    for name in (SAMPLES_FILE, "progress.json", "samples.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ".parts", ignore_errors=True)  # a killed demo's batches, of its own settings


def _checkpoint_path(out: Path, settings: DemoSettings, notes: list[str]) -> Path:
    if settings.checkpoint is not None:
        return settings.checkpoint
    if DEMO_CHECKPOINT.is_file():
        return DEMO_CHECKPOINT
    from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
    from vmddpm_deploy.diffusion import NoiseSchedule
    from vmddpm_deploy.model import preset

    notes.append(
        f"no trained checkpoint is bundled ({DEMO_CHECKPOINT} is missing): the demo runs an untrained "
        f"tiny model, so expect noise and a large FID; train one with "
        f"`vmddpm-deploy train --data bundled --preset tiny -o ckpt.safetensors` and pass --checkpoint ckpt.safetensors"
    )
    return save_checkpoint(init_checkpoint(preset("tiny"), NoiseSchedule(), seed=0), out / "untrained-tiny.safetensors")


def _export(checkpoint_path: Path, export_dir: Path, notes: list[str]) -> Path | None:
    from vmddpm_deploy.export import export_checkpoint

    try:
        export_checkpoint(checkpoint_path, export_dir, dtypes=EXPORT_DTYPES, ops=EXPORT_OPS, force=True)
    except ModuleNotFoundError as exc:
        if exc.name != "vmddpm_deploy.export.exporter":
            raise
        notes.append("export skipped: this installation has no ONNX exporter (vmddpm_deploy.export.exporter)")
        return None
    return export_dir


def _spread(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images evenly spread over ``images`` (the held-out set is ordered by contrast)."""
    picks = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    return images[picks]
