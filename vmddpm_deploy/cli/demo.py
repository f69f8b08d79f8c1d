"""`vmddpm-deploy demo`: the whole pipeline on the bundled model, in a minute or two on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import (
    DEFAULT_SAMPLER_NAME,
    DEFAULT_STEPS,
    SamplerName,
    app,
    progress_bar,
    reports_errors,
    wide_console,
)


@app.command()
@reports_errors
def demo(
    out: Annotated[Path, typer.Option(help="Output directory (files in it from an earlier demo are replaced).")] = Path(
        "demo"
    ),
    n: Annotated[int, typer.Option("--n", help="Images to generate.")] = 16,
    n_real: Annotated[
        int | None, typer.Option(help="Held-out real slices to compare with (a fixed subset; default all 81).")
    ] = None,
    sampler: Annotated[SamplerName, typer.Option(help="Sampling algorithm.")] = DEFAULT_SAMPLER_NAME,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = DEFAULT_STEPS,
    seed: Annotated[int, typer.Option(help="Run seed; sample i depends only on (seed, i).")] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Images sampled together, resolved as `sample --batch-size` (on the CPU the images do not depend on it)."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Use this checkpoint instead of the bundled trained one.")
    ] = None,
    export: Annotated[bool, typer.Option(help="Export the checkpoint to ONNX first (export/ in --out).")] = True,
    device: Annotated[str, typer.Option(help="Torch device for sampling and features (cpu, cuda).")] = "cpu",
) -> None:
    """Run the pipeline end to end on the bundled trained model: export it to ONNX, sample a grid,
    write a contact sheet of generated next to real held-out brain MRI slices, and score the
    samples with FID and KID against those slices. Prints the time of every stage.

    Writes export/, samples.npz, contact_sheet.png and demo.json into --out.

    Example: vmddpm-deploy demo --out demo/ --n 16 --steps 50
    """
    from rich.table import Table

    from vmddpm_deploy.demo import DemoSettings, run_demo

    settings = DemoSettings(
        n=n,
        n_real=n_real,
        sampler=sampler.value,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        export=export,
        checkpoint=checkpoint,
    )
    tasks: dict[str, int] = {}
    with progress_bar() as progress:

        def on_progress(name: str, advance: float, total: float) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.advance(tasks[name], advance)

        summary = run_demo(out, settings, on_stage=lambda text: progress.console.print(text), on_progress=on_progress)

    evaluation = summary["evaluation"]
    table = Table(title=f"vmddpm-deploy demo ({summary['checkpoint']})", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    seconds = summary["seconds"]
    table.add_row("load checkpoint", f"{seconds['checkpoint']:.1f}", summary["checkpoint"])
    if "export" in seconds:
        table.add_row("export to ONNX", f"{seconds['export']:.1f}", summary["export_dir"] or "skipped")
    table.add_row(
        "sample",
        f"{seconds['sampling']:.1f}",
        f"{n} images, {summary['images_per_second']:.2f} images/s, {summary['ms_per_denoiser_call']:.0f} ms per "
        f"denoiser call ({summary['backend']}) -> {summary['samples']}",
    )
    table.add_row(
        "FID / KID",
        f"{seconds['evaluation']:.1f}",
        f"FID {evaluation['fid']:.2f}, KID {evaluation['kid']:.4f} +- {evaluation['kid_std']:.4f} "
        f"({evaluation['n_generated']} generated vs {evaluation['n_real']} {evaluation['real']})",
    )
    console = wide_console()
    console.print(table)
    console.print(f"contact sheet: {summary['contact_sheet']}   summary: {Path(out) / 'demo.json'}")
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
