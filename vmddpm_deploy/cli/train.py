"""`vmddpm-deploy train`: train a denoiser on medical images (or the bundled brain MRI slices)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vmddpm_deploy.cli.app import Preset, ScanOrder, ScheduleKind, app, console, progress_bar, reports_errors
from vmddpm_deploy.errors import ConfigError, InvalidArgumentError

DATA = "Data"
MODEL = "Model"
OPT = "Optimisation"
DEFAULT_STEPS = 10000  # of a new run; --resume continues to the run's own total unless --steps is given


@app.command()
@reports_errors
def train(
    data: Annotated[
        str,
        typer.Option(
            help="Training images: a folder (ACDC, BraTS, ChestXRay layouts or any PNG/JPEG/DICOM/NIfTI files), "
            "one file, or 'bundled' (brain MRI slices shipped with the package).",
            rich_help_panel=DATA,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (and resume).")] = Path("ckpt.pt"),
    steps: Annotated[
        Optional[int],
        typer.Option(help="Total optimiser steps of the run (default 10000; with --resume, the run's).", rich_help_panel=OPT),
    ] = None,
    preset_name: Annotated[
        Optional[Preset],
        typer.Option("--preset", help="Model size and resolution (default tiny).", rich_help_panel=MODEL),
    ] = None,
    scan_order: Annotated[
        Optional[ScanOrder], typer.Option(help="SS2D scan order (default regen).", rich_help_panel=MODEL)
    ] = None,
    schedule: Annotated[
        Optional[ScheduleKind], typer.Option(help="Noise schedule, T = 1000 (default linear).", rich_help_panel=MODEL)
    ] = None,
    config_file: Annotated[
        Optional[Path],
        typer.Option("--config", help="JSON of ModelConfig fields applied over the preset.", rich_help_panel=MODEL),
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(help="Images per step (default 16).", rich_help_panel=OPT)
    ] = None,
    lr: Annotated[
        Optional[float], typer.Option(help="AdamW learning rate (default 2e-4).", rich_help_panel=OPT)
    ] = None,
    weight_decay: Annotated[
        Optional[float], typer.Option(help="AdamW weight decay (default 0).", rich_help_panel=OPT)
    ] = None,
    warmup_steps: Annotated[
        Optional[int], typer.Option(help="Linear learning-rate warm-up (default 500).", rich_help_panel=OPT)
    ] = None,
    ema: Annotated[
        Optional[float], typer.Option(help="EMA decay of the weights (default 0.999).", rich_help_panel=OPT)
    ] = None,
    grad_clip: Annotated[
        Optional[float], typer.Option(help="Max gradient norm, 0 for none (default 1).", rich_help_panel=OPT)
    ] = None,
    amp: Annotated[
        Optional[bool], typer.Option("--amp/--no-amp", help="bfloat16 autocast (default off).", rich_help_panel=OPT)
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Seed of init, data order and noise (default 0).", rich_help_panel=OPT)
    ] = None,
    checkpoint_every: Annotated[
        Optional[int], typer.Option(help="Steps between checkpoints (default 1000; with --resume, the run's).")
    ] = None,
    sample_every: Annotated[
        Optional[int],
        typer.Option(help="Steps between 4x4 EMA sample grids; 0: none (default 0; with --resume, the run's)."),
    ] = None,
    device: Annotated[str, typer.Option(help="Torch device: auto (cuda when present), cpu, cuda, cuda:1.")] = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --output; settings not given are the run's.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Start over, replacing an existing --output run.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar; print one JSON summary line.")] = False,
    hflip: Annotated[
        Optional[bool],
        typer.Option("--hflip/--no-hflip", help="Random horizontal flips (default on).", rich_help_panel=DATA),
    ] = None,
    layout: Annotated[str, typer.Option(help="auto, folder, acdc, brats or chestxray.", rich_help_panel=DATA)] = "auto",
    modality: Annotated[str, typer.Option(help="BraTS contrast: t1, t1ce, t2, flair.", rich_help_panel=DATA)] = "t1",
    split: Annotated[str, typer.Option(help="ChestXRay split: train, val, test, all.", rich_help_panel=DATA)] = "train",
    slice_axis: Annotated[
        Optional[str],
        typer.Option(
            help="Volume planes: axial, coronal, sagittal, or voxel axis 0/1/2 (default axial; ACDC: 2).",
            rich_help_panel=DATA,
        ),
    ] = None,
    window: Annotated[
        Optional[str],
        typer.Option(help="Fixed intensity window LOW,HIGH in file units (CT: -160,240).", rich_help_panel=DATA),
    ] = None,
    percentiles: Annotated[
        str, typer.Option(help="Per-file percentile window LOW,HIGH when no --window.", rich_help_panel=DATA)
    ] = "0.5,99.5",
    fit: Annotated[
        str, typer.Option(help="pad (whole image) or crop (centre) to square.", rich_help_panel=DATA)
    ] = "pad",
    min_foreground: Annotated[
        float, typer.Option(help="Drop volume slices with less foreground than this fraction.", rich_help_panel=DATA)
    ] = 0.05,
    skip_bad_files: Annotated[
        bool, typer.Option(help="Skip and count unreadable files instead of stopping.", rich_help_panel=DATA)
    ] = False,
) -> None:
    """Train a VM-DDPM denoiser (epsilon prediction, AdamW, EMA) and write a checkpoint.

    Images are normalised to [-1, 1], resized to the model's resolution and held in memory.
    Every step's images, flips, timesteps and noise depend only on (seed, step), so a run
    continued with --resume follows the same loss curve as one that never stopped. Ctrl-C
    finishes the current step, writes a checkpoint and exits; ckpt.pt.loss.csv logs the loss.

    Example: vmddpm-deploy train --data bundled --preset tiny --steps 20000 --sample-every 2000 -o ckpt.pt

    Real data: vmddpm-deploy train --data ~/data/BraTS2018/training --modality flair --preset small -o brats.pt
    """
    from vmddpm_deploy.data import Intensity, LoadOptions, load_dataset
    from vmddpm_deploy.diffusion import NoiseSchedule
    from vmddpm_deploy.model import ModelConfig, preset
    from vmddpm_deploy.training import TrainSettings, loss_log_path, saved_run
    from vmddpm_deploy.training import train as run_training

    torch_device = _resolve_device(device)
    given: dict[str, Any] = {
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "warmup_steps": warmup_steps,
        "ema_decay": ema, "grad_clip": grad_clip, "hflip": hflip, "amp": amp, "seed": seed,
        "steps": steps, "checkpoint_every": checkpoint_every, "sample_every": sample_every,
    }
    given = {key: value for key, value in given.items() if value is not None}
    base, saved_config = saved_run(output) if resume else ({"steps": DEFAULT_STEPS}, None)
    settings = TrainSettings(**(base | given))

    config = saved_config
    if preset_name is not None or scan_order is not None or config_file is not None or not resume:
        fields = {"scan_order": (scan_order or ScanOrder.regen).value} | _read_config_file(config_file)
        name = (preset_name or Preset.tiny).value
        config = ModelConfig.from_dict(preset(name).to_dict() | fields)
    noise_schedule = NoiseSchedule(kind=schedule.value) if schedule is not None else None

    options = LoadOptions(
        layout=layout,
        modality=modality,
        split=split,
        slice_axis=slice_axis,
        intensity=Intensity(
            window=_parse_pair(window, "--window") if window is not None else None,
            percentiles=_parse_pair(percentiles, "--percentiles"),
        ),
        fit=fit,
        min_foreground=min_foreground,
        skip_bad_files=skip_bad_files,
    )

    def load(image_size: int):
        loading = progress_bar(quiet)
        load_tasks: list = []

        def on_file(done: int, total: int) -> None:
            if not load_tasks:  # started at the first file read, so path errors print alone
                loading.start()
                load_tasks.append(loading.add_task("loading data", total=total))
            loading.update(load_tasks[0], completed=done)

        try:
            dataset = load_dataset(data, image_size, options, on_file=on_file)
        finally:
            loading.stop()
        if not quiet:
            console.print(dataset.summary(), highlight=False)
        loaded.append(dataset)
        return dataset

    loaded: list = []
    stop_requested: list[bool] = []

    def request_stop(signum, frame):
        stop_requested.append(True)
        signal.signal(signal.SIGINT, previous_handler)  # a second Ctrl-C interrupts at once
        console.print("[yellow]stopping[/]: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    training = progress_bar(quiet)
    tasks: list = []
    smoothed: list[float] = []

    def on_step(step: int, loss: float) -> None:
        if not tasks:  # started after the data loaded and the run's checks passed
            training.start()
            tasks.append(training.add_task("training", total=settings.steps, completed=step - 1))
        smoothed.append(loss if not smoothed else 0.98 * smoothed[-1] + 0.02 * loss)
        training.update(tasks[0], completed=step, description=f"training  loss {smoothed[-1]:.4f}")

    previous_handler = signal.signal(signal.SIGINT, request_stop)
    try:
        result = run_training(
            load, output, settings, config, noise_schedule, device=torch_device, resume=resume, force=force,
            on_step=on_step, should_stop=lambda: bool(stop_requested),
        )
    finally:
        training.stop()
        signal.signal(signal.SIGINT, previous_handler)

    recent = result.losses[-100:]
    summary = {
        "output": str(output),
        "loss_log": str(loss_log_path(output)),
        "steps": result.steps_done,
        "steps_run": result.steps_run,
        "seconds": round(result.seconds, 3),
        "ms_per_step": round(result.ms_per_step, 2),
        "loss_last100": sum(recent) / len(recent) if recent else None,
        "device": str(torch_device),
        "batch_size": settings.batch_size,
        "images": len(loaded[0]),
        "stopped": result.stopped,
    }
    if quiet:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"{'stopped at' if result.stopped else 'trained to'} step {result.steps_done} ({result.steps_run} steps "
            f"in {result.seconds:.1f} s, {result.ms_per_step:.1f} ms/step at batch {settings.batch_size} on "
            f"{torch_device}); mean loss of the last {len(recent)} steps {summary['loss_last100'] or 0:.4f}; "
            f"wrote {output} and {loss_log_path(output)}"
        )
    if result.stopped:
        console.print(f"continue with: vmddpm-deploy train --data {data} -o {output} --resume --steps {settings.steps}")
        raise typer.Exit(130)


def _resolve_device(text: str):
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InvalidArgumentError(f"--device {text!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {text}: no CUDA GPU is visible to PyTorch; use --device cpu")
    return device


def _parse_pair(text: str, option: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise InvalidArgumentError(f"{option} takes two numbers LOW,HIGH, got {text!r}") from None
    return low, high


def _read_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        fields = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--config {path} is not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of ModelConfig fields")
    return fields

