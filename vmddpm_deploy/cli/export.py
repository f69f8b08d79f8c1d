"""`vmddpm-deploy export`: ONNX graphs and manifest.json from a checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.choices import EXPORT_OPS, PRECISIONS
from vmddpm_deploy.cli.app import app, choices, print_note, progress_bar, reports_errors


#: One precision, or every one of ``choices.PRECISIONS``.
ExportDtype = choices("ExportDtype", (*PRECISIONS, "both"))
#: One way to run the vmddpm ops, or every one of ``choices.EXPORT_OPS``.
ExportOps = choices("ExportOps", (*EXPORT_OPS, "all"))


@app.command("export")
@reports_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (ckpt.safetensors) to export.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Export directory (default: exports/<checkpoint stem>).")
    ] = None,
    dtype: Annotated[
        ExportDtype, typer.Option(help="Precision of the graphs; the portable graph exists in fp32 only.")
    ] = ExportDtype.both,
    ops: Annotated[
        ExportOps,
        typer.Option(help="plugin: vmddpm custom nodes (TensorRT); portable: standard ONNX ops (ONNX Runtime)."),
    ] = ExportOps.all,
    opset: Annotated[int, typer.Option(help="ONNX opset of the graphs (18 to 25).")] = 18,
    batch_dim: Annotated[
        str, typer.Option(help="'dynamic' (a symbolic 'batch' axis) or a fixed batch size.")
    ] = "dynamic",
    timesteps: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Record a tune-schedule file's timesteps in manifest.json; vmddpm_host sample then runs DDIM at "
            "them unless given --steps or --spacing.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing export directory.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Export the denoiser eps(x, t) of a checkpoint to ONNX, with a manifest.json.

    Writes denoiser.onnx (fp32, custom vmddpm nodes that TensorRT runs with our plugins),
    denoiser.fp16.onnx (fp16 io and weights; norms, time embedding and scan math stay fp32),
    denoiser.portable.onnx (standard ONNX ops only: runs in ONNX Runtime with no custom
    library) and manifest.json (model config, noise schedule, io names and dtypes, sha256 of
    every file). Every graph passes onnx.checker before the directory is renamed into place.

    Example: vmddpm-deploy export ckpt.safetensors -o exports/tiny --dtype both --ops all
    """
    from vmddpm_deploy.export import export_checkpoint

    tuned = None
    if timesteps is not None:
        from vmddpm_deploy.checkpoint import checkpoint_sha256
        from vmddpm_deploy.diffusion.schedule_file import read_schedule

        tuned = read_schedule(timesteps)
        if checkpoint.exists() and tuned.source_sha256 != checkpoint_sha256(checkpoint):
            print_note(
                f"--timesteps {timesteps} was tuned for another model (sha256 {tuned.source_sha256[:12]}...); "
                "its timesteps are recorded as given"
            )

    dtypes = PRECISIONS if dtype is ExportDtype.both else (dtype.value,)
    ops_kinds = EXPORT_OPS if ops is ExportOps.all else (ops.value,)
    start = time.perf_counter()
    with progress_bar(quiet, transient=True) as progress:
        task = progress.add_task("export", total=None)

        def on_stage(description: str, index: int, total: int) -> None:
            progress.update(task, description=description, completed=index, total=total)

        manifest = export_checkpoint(
            checkpoint,
            output,
            dtypes=dtypes,
            ops=ops_kinds,
            opset=opset,
            batch_dim=batch_dim,
            force=force,
            on_stage=on_stage,
            timesteps=None if tuned is None else tuned.timesteps,
        )
    typer.echo(f"  {'file':<24} {'graph':<8} {'ops':<8} {'size':>11}")
    for kind, graph in manifest.graphs.items():
        typer.echo(f"  {graph.file:<24} {kind:<8} {graph.ops:<8} {graph.bytes / 1e6:8.2f} MB")
    count = len(manifest.graphs)
    typer.echo(
        f"wrote {manifest.export_dir} ({count} graph{'s' if count != 1 else ''} + manifest.json) "
        f"in {time.perf_counter() - start:.1f} s"
    )
