"""`vmddpm-deploy train`: train a denoiser on medical images (or the bundled brain MRI slices)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vmddpm_deploy.cli.app import (
    DEFAULT_PRESET,
    DEFAULT_SAMPLER_NAME,
    DEFAULT_SCAN_ORDER,
    DEFAULT_SCHEDULE,
    Preset,
    SamplerName,
    ScanOrder,
    ScheduleKind,
    app,
    console,
    print_note,
    progress_bar,
    reports_errors,
    resolve_device,
)
from vmddpm_deploy.choices import DEFAULT_STEPS
from vmddpm_deploy.errors import InvalidArgumentError

DATA = "Data"
MODEL = "Model"
OPT = "Optimisation"


def _optimisation(help_text: str, *names: str):
    """An option of the help's Optimisation panel (names: as typer.Option's, default from the parameter)."""
    return typer.Option(*names, help=help_text, rich_help_panel=OPT)


@app.command()
@reports_errors
def train(
    data: Annotated[
        Optional[str],
        typer.Option(
            help="Training images: a folder (ACDC, BraTS, ChestXRay layouts or any PNG/JPEG/DICOM/NIfTI files), "
            "one file, or 'bundled' (brain MRI slices shipped with the package). With --resume, default: the run's.",
            rich_help_panel=DATA,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (and resume).")] = Path("ckpt.safetensors"),
    steps: Annotated[
        Optional[int],
        typer.Option(help="Total optimiser steps of the run (default 10000; with --resume, the run's).", rich_help_panel=OPT),
    ] = None,
    preset_name: Annotated[
        Optional[Preset],
        typer.Option(
            "--preset", help=f"Model size and resolution (default {DEFAULT_PRESET.value}).", rich_help_panel=MODEL
        ),
    ] = None,
    scan_order: Annotated[
        Optional[ScanOrder],
        typer.Option(help=f"SS2D scan order (default {DEFAULT_SCAN_ORDER.value}).", rich_help_panel=MODEL),
    ] = None,
    schedule: Annotated[
        Optional[ScheduleKind],
        typer.Option(help=f"Noise schedule, T = 1000 (default {DEFAULT_SCHEDULE.value}).", rich_help_panel=MODEL),
    ] = None,
    config_file: Annotated[
        Optional[Path],
        typer.Option("--config", help="JSON of ModelConfig fields applied over the preset.", rich_help_panel=MODEL),
    ] = None,
    batch_size: Annotated[Optional[int], _optimisation("Images per step (default 16).")] = None,
    lr: Annotated[Optional[float], _optimisation("AdamW learning rate (default 2e-4).")] = None,
    weight_decay: Annotated[Optional[float], _optimisation("AdamW weight decay (default 0).")] = None,
    warmup_steps: Annotated[Optional[int], _optimisation("Linear learning-rate warm-up (default 500).")] = None,
    ema: Annotated[Optional[float], _optimisation("EMA decay of the weights (default 0.999).")] = None,
    grad_clip: Annotated[Optional[float], _optimisation("Max gradient norm, 0 for none (default 1).")] = None,
    amp: Annotated[Optional[bool], _optimisation("bfloat16 autocast (default off).", "--amp/--no-amp")] = None,
    seed: Annotated[Optional[int], _optimisation("Seed of init, data order and noise (default 0).")] = None,
    checkpoint_every: Annotated[
        Optional[int], typer.Option(help="Steps between checkpoints (default 1000; with --resume, the run's).")
    ] = None,
    sample_every: Annotated[
        Optional[int],
        typer.Option(help="Steps between 4x4 EMA sample grids; 0: none (default 0; with --resume, the run's)."),
    ] = None,
    sample_sampler: Annotated[
        Optional[SamplerName],
        typer.Option(help=f"Sampler of the --sample-every grids (default {DEFAULT_SAMPLER_NAME.value}, as sample's)."),
    ] = None,
    sample_steps: Annotated[
        Optional[int], typer.Option(help=f"Steps of the --sample-every grids (default {DEFAULT_STEPS}, as sample's).")
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
    finishes the current step, writes a checkpoint and exits; ckpt.safetensors.loss.csv logs the loss.

    Example: vmddpm-deploy train --data bundled --preset tiny --steps 20000 --sample-every 2000 -o ckpt.safetensors

    Real data: vmddpm-deploy train --data ~/data/BraTS2018/training --modality flair --preset small -o brats.safetensors
    """
    from vmddpm_deploy.data import Intensity, LoadOptions
    from vmddpm_deploy.training import TrainRequest, loss_log_path, run_request

    request = TrainRequest(
        data=data,
        output=output,
        device=resolve_device(device),
        load_options=LoadOptions(
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
        ),
        given_settings={
            "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "warmup_steps": warmup_steps,
            "ema_decay": ema, "grad_clip": grad_clip, "hflip": hflip, "amp": amp, "seed": seed,
            "steps": steps, "checkpoint_every": checkpoint_every, "sample_every": sample_every,
            "sample_sampler": sample_sampler.value if sample_sampler is not None else None,
            "sample_steps": sample_steps,
        },
        preset=preset_name.value if preset_name is not None else None,
        scan_order=scan_order.value if scan_order is not None else None,
        config_file=config_file,
        schedule=schedule.value if schedule is not None else None,
        resume=resume,
        force=force,
    )
    report = run_request(request, _ProgressBars(quiet))

    result, summary = report.result, report.summary()
    if quiet:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"{'stopped at' if result.stopped else 'trained to'} step {result.steps_done} ({result.steps_run} steps "
            f"in {result.seconds:.1f} s, {result.ms_per_step:.1f} ms/step at batch {report.settings.batch_size} on "
            f"{report.device}); mean loss of the last {len(report.recent_losses)} steps "
            f"{summary['loss_last100'] or 0:.4f}; wrote {output} and {loss_log_path(output)}"
        )
        if result.grids:
            settings = report.settings
            typer.echo(
                f"{len(result.grids)} sample grid(s) ({settings.sample_sampler} {settings.sample_steps} steps) in "
                f"{result.grid_seconds:.1f} s: {result.grids[0].parent}/ ({', '.join(p.name for p in result.grids[-3:])})"
            )
    if result.stopped:
        console.print(
            f"continue with: vmddpm-deploy train -o {output} --resume --steps {report.settings.steps}"
        )
        raise typer.Exit(130)


class _ProgressBars:
    """The run's progress on the console: a bar while the data load, then one while it trains."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.loading, self.training = progress_bar(quiet), progress_bar(quiet)
        self.load_task = self.train_task = None

    def file_read(self, done: int, total: int) -> None:
        if self.load_task is None:  # started at the first file read, so path errors print alone
            self.loading.start()
            self.load_task = self.loading.add_task("loading data", total=total)
        self.loading.update(self.load_task, completed=done)

    def loading_ended(self, dataset) -> None:
        self.loading.stop()
        if dataset is not None and not self.quiet:
            console.print(dataset.summary(), highlight=False)

    def step_done(self, step: int, total: int, smoothed_loss: float) -> None:
        if self.train_task is None:  # started after the data loaded and the run's checks passed
            self.training.start()
            self.train_task = self.training.add_task("training", total=total, completed=step - 1)
        self.training.update(self.train_task, completed=step, description=f"training  loss {smoothed_loss:.4f}")

    def training_ended(self) -> None:
        self.training.stop()

    def note(self, message: str) -> None:
        print_note(message)

    def stop_requested(self) -> None:
        console.print("[yellow]stopping[/]: finishing this step and writing a checkpoint (Ctrl-C again to abort)")


def _parse_pair(text: str, option: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise InvalidArgumentError(f"{option} takes two numbers LOW,HIGH, got {text!r}") from None
    return low, high
