"""`vmddpm-deploy bench`: denoiser latency side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.cli.app import (
    JSON_HELP,
    app,
    console,
    json_to_stdout,
    parse_csv,
    parse_positive_int,
    print_note,
    reports_errors,
    wide_console,
    write_json,
)
from vmddpm_deploy.errors import InvalidArgumentError


@app.command()
@reports_errors
def bench(
    source: Annotated[
        Path, typer.Argument(help="Checkpoint file (ckpt.safetensors) or export directory (from `vmddpm-deploy export`).")
    ],
    backends: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated rows: torch (native ops when built), torch-fp16 (the fp16 policy of the fp16 "
            "graph, eager), torch-bf16 (bf16 autocast, channels_last: sample --precision bf16), "
            "torch-bf16-compiled (the same through torch.compile with weight freezing; its compile time is the "
            "first call), torch-reference (pure-PyTorch ops), scan-free (benchmark-only floor: the scan "
            "replaced by its skip term D*u) and scan-free-bf16, onnxruntime (the export's portable graph), tensorrt-fp32 / "
            "tensorrt-fp16 (the export's engine, CUDA graphs) and tensorrt-fp32-enqueue / tensorrt-fp16-enqueue "
            "(plain enqueue). Default: torch,torch-reference,scan-free for a checkpoint (with torch-bf16 on a CPU with "
            "native bf16); for an export dir torch,torch-reference (while its checkpoint is there), onnxruntime and "
            "its engines that run here."
        ),
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    steps: Annotated[int, typer.Option(help="DDIM steps of the full run behind images/s.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 2,
    iters: Annotated[int, typer.Option(help="Timed calls per row.")] = 10,
    device: Annotated[str, typer.Option(help="Torch device (cpu, cuda).")] = "cpu",
    baseline: Annotated[
        str | None,
        typer.Option(help="Row the speedups are measured against (default: torch-reference, else torch, else the first)."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", metavar="PATH", help=JSON_HELP)] = None,
    plot: Annotated[Path | None, typer.Option(help="Also plot latency vs batch size (needs matplotlib).")] = None,
) -> None:
    """Time the denoiser of each backend side by side, in one run, and report speedups.

    Rows report the median / p90 / p99 per-call latency, images/s of a full DDIM run (steps x
    (median call + sampler step)), the peak memory during the row's own calls, the untimed first
    call's seconds (torch.compile's compilation for the compiled row), and the speedup over the
    baseline row measured in the same run. The header gives torch's threads and the machine's
    load; a note follows when fewer threads would be faster, and one for rows whose calls spread
    too widely to rank them. Timed calls go round-robin over the rows, so load from elsewhere on the
    machine slows every row alike and the speedups hold.

    Example: vmddpm-deploy bench ckpt.safetensors --batch-sizes 1,16 --json bench.json

    Example: vmddpm-deploy bench exports/ckpt --backends torch,onnxruntime

    GPU: vmddpm-deploy bench exports/small --device cuda --backends torch-fp16,tensorrt-fp16,tensorrt-fp16-enqueue
    --baseline torch-fp16
    """
    from rich.table import Table

    from dataclasses import asdict

    from vmddpm_deploy.benchmark import (
        bench_targets,
        check_row_names,
        default_rows,
        run_bench,
        thread_report,
        unrankable_rows,
    )
    from vmddpm_deploy.diffusion import make_sampler
    from vmddpm_deploy.runtime.source import open_source

    names = check_row_names(parse_csv(backends, "--backends")) if backends is not None else None
    sizes = [parse_positive_int(text, "--batch-sizes") for text in parse_csv(batch_sizes, "--batch-sizes")]
    if warmup < 0 or iters < 1:
        raise InvalidArgumentError("--warmup must be >= 0 and --iters >= 1")
    if plot is not None:
        _require_matplotlib()

    opened = open_source(source)  # an export dir's checksums are verified here
    names = names or default_rows(opened, device)
    sampler_steps = make_sampler("ddim", opened.schedule, steps)
    targets = bench_targets(opened, names, device)
    config = opened.config
    if baseline is None:
        baseline = next((name for name in ("torch-reference", "torch") if name in names), names[0])
    elif baseline not in names:
        raise InvalidArgumentError(f"--baseline {baseline} is not one of the rows ({', '.join(names)})")

    threads = thread_report(probe=device == "cpu")
    table = Table(
        title=f"denoiser latency, {config.image_size}x{config.image_size}, DDIM {steps} steps\n{threads.summary()}"
    )
    columns = ("backend", "batch", "median ms", "p90 ms", "p99 ms", "images/s", "peak MB", "1st call s", f"x {baseline}")
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right", no_wrap=True)
    with console.status("benchmarking") as status:
        rows = run_bench(
            targets,
            (config.in_channels, config.image_size, config.image_size),
            sizes,
            sampler_steps,
            warmup,
            iters,
            baseline,
            on_row=lambda row: status.update(f"benchmarking: {row['backend']} batch {row['batch']} done"),
        )
    for row in rows:
        speedup = row[f"speedup_vs_{baseline}"]
        table.add_row(
            row["backend"], str(row["batch"]), f"{row['median_ms']:.2f}", f"{row['p90_ms']:.2f}",
            f"{row['p99_ms']:.2f}", f"{row['images_per_second']:.2f}", f"{row['peak_memory_mb']:.0f}",
            f"{row['first_call_seconds']:.2f}",
            "-" if speedup is None else f"{speedup:.2f}",
        )
    notes = [line for line in (threads.advice(),) if line] + unrankable_rows(rows)
    if not json_to_stdout(json_path):
        wide_console().print(table)
    for note in notes:
        print_note(note)
    payload = {"source": str(source), "device": device, "steps": steps, "warmup": warmup, "iters": iters,
               "baseline": baseline, "threads": asdict(threads), "notes": notes, "rows": rows}
    write_json(json_path, payload)
    if plot is not None:
        _plot_latency(rows, plot)


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise InvalidArgumentError("--plot needs matplotlib: pip install matplotlib")


def _plot_latency(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for backend in dict.fromkeys(row["backend"] for row in rows):
        mine = [row for row in rows if row["backend"] == backend]
        axis.plot([r["batch"] for r in mine], [r["median_ms"] for r in mine], marker="o", label=backend)
    axis.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median ms per denoiser call")
    axis.legend()
    figure.tight_layout()
    write_atomic(path, lambda handle: figure.savefig(handle, format=path.suffix.lstrip(".") or "png"))
    plt.close(figure)


