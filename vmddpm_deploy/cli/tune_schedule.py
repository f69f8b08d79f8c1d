"""`vmddpm-deploy tune-schedule`: the timesteps that best reproduce a fine DDIM teacher, for one model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import Precision, app, progress_callback, reports_errors, resolve_device
from vmddpm_deploy.choices import DEFAULT_TEACHER_STEPS, DEFAULT_TUNE_TRAJECTORIES
from vmddpm_deploy.errors import InvalidArgumentError, OutputError


@app.command("tune-schedule")
@reports_errors
def tune_schedule_command(
    source: Annotated[
        Path, typer.Argument(help="Checkpoint or export directory whose model the timesteps are tuned for.")
    ],
    nfe: Annotated[int, typer.Option("--nfe", help="Denoiser calls (steps) of the tuned schedule.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Schedule file to write (JSON).")],
    trajectories: Annotated[
        int, typer.Option(help="Teacher trajectories the error is averaged over: samples 0 .. N-1 at --seed.")
    ] = DEFAULT_TUNE_TRAJECTORIES,
    teacher_steps: Annotated[
        int, typer.Option(help="Steps of the DDIM teacher; its leading grid is where the timesteps are chosen from.")
    ] = DEFAULT_TEACHER_STEPS,
    batch_size: Annotated[int, typer.Option(help="Trajectories per denoiser call.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the trajectories' noise, as sample's --seed.")] = 0,
    precision: Annotated[
        Precision, typer.Option(help="Arithmetic of the torch backend, as sample's --precision.")
    ] = Precision("auto"),
    device: Annotated[str, typer.Option(help="Device: auto (cuda when present), cpu, cuda, cuda:1.")] = "auto",
    force: Annotated[bool, typer.Option(help="Replace an existing -o file instead of refusing it.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar; print the schedule file's JSON on one line.")] = False,
) -> None:
    """Pick the --nfe timesteps whose DDIM best reproduces a DDIM teacher's final images on this model.

    The teacher, deterministic DDIM over --teacher-steps leading timesteps, runs --trajectories
    samples and records its x and eps at every one of its timesteps. One DDIM step from the
    teacher's x at one of its timesteps, with the teacher's eps there, to a later one is compared
    with the teacher's x there; dynamic programming picks the --nfe steps of least summed error
    (after GITS, Chen et al. 2024). Forward passes only. The tuned DDIM is then run from the same
    noise and its mean squared difference from the teacher's final images is recorded as final_mse.

    The file lists the timesteps, the teacher, the SRC's sha256 and the errors; sample --timesteps
    and export --timesteps read it (README, "Tuned timesteps").

    Example: vmddpm-deploy tune-schedule ckpt.safetensors --nfe 8 -o schedule.json

    Then: vmddpm-deploy sample ckpt.safetensors --sampler ddim-ab2 --timesteps schedule.json --n 1000
    """
    import torch

    from vmddpm_deploy.diffusion.schedule_search import tune_schedule
    from vmddpm_deploy.runtime.source import load_denoiser, open_source, resolve_backend, resolve_sampling_precision

    if trajectories < 1:
        raise InvalidArgumentError(f"--trajectories must be at least 1, got {trajectories}")
    if batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be at least 1, got {batch_size}")
    if teacher_steps < 1:
        raise InvalidArgumentError(f"--teacher-steps must be at least 1, got {teacher_steps}")
    if not 1 <= nfe <= teacher_steps:
        raise InvalidArgumentError(f"--nfe must be in [1, {teacher_steps}] (the teacher's steps), got {nfe}")
    if not 0 <= seed < 2**64:
        raise InvalidArgumentError(f"--seed must be in [0, 2^64), got {seed}")
    # Refused before minutes of work, and again (atomically) when written.
    if output.exists() and not force:
        raise OutputError(f"{output} exists; use --force to replace it or choose another -o")
    opened = open_source(source)
    resolved_device = resolve_device(device)
    backend = resolve_backend("auto", opened)
    resolved_precision = resolve_sampling_precision(precision.value, backend, str(resolved_device))
    denoiser = load_denoiser(opened, backend, str(resolved_device), resolved_precision)
    config = opened.config
    start = time.perf_counter()
    with progress_callback("teacher + check", quiet) as report, torch.no_grad():
        tuned = tune_schedule(
            denoiser, opened.schedule, (config.in_channels, config.image_size, config.image_size), nfe=nfe,
            source_sha256=opened.sha256, trajectories=trajectories, seed=seed, batch_size=batch_size,
            teacher_steps=teacher_steps, precision=resolved_precision, device=resolved_device, on_progress=report,
        )
    tuned.write(output, force=force)
    if quiet:
        typer.echo(json.dumps(tuned.to_dict()))
    else:
        typer.echo(
            f"wrote {output}: timesteps {', '.join(map(str, tuned.timesteps))} (summed one-step error "
            f"{tuned.cost:.4g}, final-image MSE against the DDIM {teacher_steps} teacher {tuned.final_mse:.4g}) "
            f"in {time.perf_counter() - start:.1f} s"
        )
