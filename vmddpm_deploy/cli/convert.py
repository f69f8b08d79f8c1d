"""`vmddpm-deploy convert`: a checkpoint as safetensors or as a diffusers save_pretrained directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import app, choices, reports_errors
from vmddpm_deploy.choices import CONVERSION_TARGETS

ConversionTarget = choices("ConversionTarget", CONVERSION_TARGETS)


@app.command()
@reports_errors
def convert(
    source: Annotated[
        Path, typer.Argument(help="Checkpoint: .safetensors, .pt, or a diffusers save_pretrained directory.")
    ],
    out: Annotated[Path, typer.Argument(help="OUT.safetensors, or with --to diffusers a directory.")],
    to: Annotated[
        ConversionTarget,
        typer.Option(
            help="safetensors: our checkpoint (raw and EMA weights); diffusers: VMDDPMModel.save_pretrained "
            "(config.json + diffusion_pytorch_model.safetensors, the EMA weights), needs vmddpm-deploy\\[diffusers]."
        ),
    ] = ConversionTarget.safetensors,
    force: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Convert a checkpoint: a .pt to safetensors, or any checkpoint to a diffusers model directory.

    The result is read back before it takes OUT's name.

    Example: vmddpm-deploy convert ckpt.pt ckpt.safetensors

    diffusers: vmddpm-deploy convert ckpt.safetensors vmddpm-tiny/ --to diffusers, then
    VMDDPMModel.from_pretrained("vmddpm-tiny") or DDIMPipeline(unet=..., scheduler=...).
    """
    from vmddpm_deploy.conversion import convert_checkpoint

    written = convert_checkpoint(source, out, to.value, force=force)
    typer.echo(f"wrote {written} ({to.value})")
