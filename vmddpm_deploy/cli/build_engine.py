"""`vmddpm-deploy build-engine`: a TensorRT engine from an export directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import app, console, reports_errors


@app.command("build-engine")
@reports_errors
def build_engine(
    export_dir: Annotated[
        Path, typer.Argument(help="Export directory (from `vmddpm-deploy export`) holding manifest.json.")
    ] = Path("."),
    fp16: Annotated[
        bool, typer.Option("--fp16/--fp32", help="Build from denoiser.fp16.onnx (fp16 io and weights) or denoiser.onnx.")
    ] = False,
    min_batch: Annotated[int, typer.Option(help="Smallest batch the engine accepts.")] = 1,
    opt_batch: Annotated[int, typer.Option(help="Batch TensorRT tunes its kernels for.")] = 8,
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine accepts.")] = 32,
    timing_cache: Annotated[
        Path | None,
        typer.Option(
            help="TensorRT timing cache to reuse and update.", show_default="EXPORT_DIR/timing-cache.trt<version>.sm<cc>.bin"
        ),
    ] = None,
    workspace: Annotated[
        int | None, typer.Option(help="Workspace limit in MiB for TensorRT's tactics.", show_default="TensorRT's")
    ] = None,
    plugin_lib: Annotated[
        Path | None,
        typer.Option(
            help="libvmddpm_trt_plugins.so to build with.", show_default="$VMDDPM_TRT_PLUGIN_LIB, the package, build/"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No status line; print one JSON summary line.")] = False,
) -> None:
    """Build a TensorRT engine for this GPU from an export directory, with the vmddpm plugins.

    The network is strongly typed: --fp16 parses the fp16 graph (norms and softplus stay fp32 in
    it) instead of setting a builder flag. One optimisation profile covers --min-batch ..
    --max-batch. The plan is written beside the graphs as
    denoiser.<precision>.b<min>-<max>.trt<version>.sm<cc>.plan, the plugin library is copied
    next to it, and both are recorded (with sha256) in manifest.json's "engines". A plan only
    runs with the TensorRT version and GPU type that built it; `sample --backend tensorrt` checks.

    Example: vmddpm-deploy build-engine exports/tiny --fp16 --max-batch 32
    """
    from vmddpm_deploy.tensorrt import BatchRange, EngineBuilder, EngineSettings

    settings = EngineSettings(
        precision="fp16" if fp16 else "fp32",
        batch=BatchRange(min_batch, opt_batch, max_batch),
        workspace_mb=workspace,
        timing_cache=timing_cache,
        plugin_library=plugin_lib,
    )
    builder = EngineBuilder(export_dir, settings)
    if quiet:
        built = builder.build()
    else:
        with console.status("checking the export directory, TensorRT and the GPU") as status:
            built = builder.build(on_stage=lambda message: status.update(f"{message} (this takes minutes)"))
    summary = {
        "engine": str(built.path),
        "bytes": built.entry.bytes,
        "seconds": round(built.seconds, 1),
        "tensorrt": built.entry.tensorrt,
        "gpu": built.entry.gpu,
        "timing_cache": str(built.timing_cache),
        "stale_engines": built.stale,
    }
    if quiet:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"built {built.path} ({built.entry.bytes / 2**20:.1f} MiB) in {built.seconds:.0f} s with TensorRT "
        f"{built.entry.tensorrt} on {built.entry.gpu}; plugin library {built.entry.plugin_library} beside it"
    )
    if built.stale:
        console.print(
            f"[yellow]note:[/] the plugin library changed; rebuild {', '.join(built.stale)} "
            "(they were built with the previous one and will not load)",
            highlight=False,
        )
