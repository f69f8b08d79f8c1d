"""`vmddpm-deploy init`: a randomly initialised checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import (
    DEFAULT_PRESET,
    DEFAULT_SCAN_ORDER,
    DEFAULT_SCHEDULE,
    Preset,
    ScanOrder,
    ScheduleKind,
    app,
    reports_errors,
)
from vmddpm_deploy.errors import OutputError


@app.command()
@reports_errors
def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint file to write.")] = Path("ckpt.safetensors"),
    preset_name: Annotated[Preset, typer.Option("--preset", help="Model size and resolution.")] = DEFAULT_PRESET,
    scan_order: Annotated[ScanOrder, typer.Option(help="How SS2D threads the image into 1-D routes.")] = DEFAULT_SCAN_ORDER,
    schedule: Annotated[ScheduleKind, typer.Option(help="Noise schedule (T = 1000 steps).")] = DEFAULT_SCHEDULE,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
) -> None:
    """Write a randomly initialised checkpoint.

    Untrained weights produce noise-like images; use it to try the pipeline (export, engines,
    sampling speed) before a trained model is at hand.

    Example: vmddpm-deploy init --preset tiny --scan-order regen -o ckpt.safetensors
    """
    from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
    from vmddpm_deploy.diffusion import NoiseSchedule
    from vmddpm_deploy.model import preset
    from vmddpm_deploy.model.profile import count_parameters

    if output.exists() and not force:
        raise OutputError(f"{output} already exists; pass --force to overwrite it")
    config = preset(preset_name.value, scan_order=scan_order.value)
    checkpoint = init_checkpoint(config, NoiseSchedule(kind=schedule.value), seed=seed)
    save_checkpoint(checkpoint, output)
    typer.echo(
        f"wrote {output}: preset {preset_name.value}, {config.image_size}x{config.image_size}, "
        f"scan order {scan_order.value}, {count_parameters(config) / 1e6:.2f} M parameters"
    )


