"""The ``vmddpm-deploy`` command line: thin Typer commands over the library.

Every expected failure is a :class:`~vmddpm_deploy.errors.VmddpmError`; :func:`main` turns it
into one ``error: ...`` line on stderr and the family's exit code.
"""

from __future__ import annotations

import functools
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vmddpm_deploy import __version__
from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.errors import InvalidArgumentError, OutputError, VmddpmError

app = typer.Typer(
    name="vmddpm-deploy",
    help="Export, accelerate and sample VM-DDPM (Vision Mamba diffusion) medical image models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def reports_errors(command):
    """Turn library errors into one line and an exit code (and Ctrl-C into exit 130)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VmddpmError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: files written so far are complete")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vmddpm-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Export, accelerate and sample VM-DDPM medical image diffusion models.

    Start with `init` (or a trained checkpoint), then `sample`.
    """


class Preset(str, Enum):
    tiny = "tiny"
    small = "small"
    base = "base"
    large = "large"


class ScanOrder(str, Enum):
    cross = "cross"
    regen = "regen"


class ScheduleKind(str, Enum):
    linear = "linear"
    cosine = "cosine"


class SamplerName(str, Enum):
    ddpm = "ddpm"
    ddim = "ddim"
    dpm_solver = "dpm-solver++"


class ImageFormat(str, Enum):
    png = "png"
    npz = "npz"


class Backend(str, Enum):
    torch = "torch"


@app.command()
@reports_errors
def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint file to write.")] = Path("ckpt.pt"),
    preset_name: Annotated[Preset, typer.Option("--preset", help="Model size and resolution.")] = Preset.tiny,
    scan_order: Annotated[ScanOrder, typer.Option(help="How SS2D threads the image into 1-D routes.")] = ScanOrder.regen,
    schedule: Annotated[ScheduleKind, typer.Option(help="Noise schedule (T = 1000 steps).")] = ScheduleKind.linear,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
) -> None:
    """Write a randomly initialised checkpoint.

    Untrained weights produce noise-like images; use it to try the pipeline (export, engines,
    sampling speed) before a trained model is at hand.

    Example: vmddpm-deploy init --preset tiny --scan-order regen -o ckpt.pt
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


@app.command()
@reports_errors
def sample(
    source: Annotated[Path, typer.Argument(help="Checkpoint file (ckpt.pt) to sample from.")],
    n: Annotated[int, typer.Option("--n", help="Number of images in the whole job (all shards).")] = 16,
    sampler: Annotated[SamplerName, typer.Option(help="Sampling algorithm.")] = SamplerName.ddim,
    steps: Annotated[int, typer.Option(help="Denoising steps (at most the schedule's T).")] = 50,
    eta: Annotated[float, typer.Option(help="DDIM stochasticity: 0 is deterministic, 1 is DDPM-like.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Images per denoiser call.")] = 16,
    seed: Annotated[int, typer.Option(help="Run seed; sample i depends only on (seed, i).")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("samples"),
    image_format: Annotated[
        ImageFormat, typer.Option("--format", help="png: one 16-bit PNG per sample; npz: one samples.npz.")
    ] = ImageFormat.png,
    shard: Annotated[str, typer.Option(help="Make only indices i with i % N == I, given as I/N.")] = "0/1",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out (same settings).")] = False,
    backend: Annotated[Backend, typer.Option(help="Runtime that evaluates the denoiser.")] = Backend.torch,
    device: Annotated[str, typer.Option(help="Torch device for the torch backend (cpu, cuda, cuda:1).")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar; print one JSON summary line.")] = False,
) -> None:
    """Generate images with DDPM, DDIM or DPM-Solver++ and write them as 16-bit PNG or NPZ.

    Sample i of a run is the same image for any --batch-size, --shard split or resume point:
    its noise comes from (seed, i) alone. Each image is written atomically and progress.json
    records what is done, so an interrupted run continues with --resume.

    Example: vmddpm-deploy sample ckpt.pt --n 1000 --sampler ddim --steps 50 --out samples/

    Job array: vmddpm-deploy sample ckpt.pt --n 100000 --shard $SLURM_ARRAY_TASK_ID/64 --out samples/
    """
    from vmddpm_deploy.checkpoint import load_checkpoint
    from vmddpm_deploy.diffusion import make_sampler
    from vmddpm_deploy.digests import sha256_file
    from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
    from vmddpm_deploy.sample_job import JobSettings, SampleJob, Shard

    if n < 1:
        raise InvalidArgumentError(f"--n must be at least 1, got {n}")
    if batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= seed < 2**64:
        raise InvalidArgumentError(f"--seed must be in [0, 2^64), got {seed}")
    shard_spec = Shard.parse(shard)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a directory; choose another --out")

    checkpoint = load_checkpoint(source)
    steps_sampler = make_sampler(sampler.value, checkpoint.schedule, steps, eta=eta)  # fails before any write
    config = checkpoint.config
    image_shape = (config.in_channels, config.image_size, config.image_size)
    settings = JobSettings(
        source_sha256=sha256_file(source),
        n=n,
        sampler=sampler.value,
        steps=steps,
        eta=eta,
        seed=seed,
        image_format=image_format.value,
        shard=shard_spec,
    )
    denoiser = TorchDenoiser(checkpoint, device)
    job = SampleJob(out, settings, resume)
    total = len(shard_spec.indices(n))
    with _progress(quiet) as progress:
        task = progress.add_task("sampling", total=total, completed=total - len(job.todo))
        summary = job.run(
            denoiser,
            steps_sampler,
            image_shape,
            min(batch_size, n),
            device,
            on_step=lambda images: progress.advance(task, images),
        )
    summary |= {"out": str(out), "backend": backend.value, "sampler": sampler.value, "steps": steps}
    if quiet:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"wrote {summary['images']} images to {out} in {summary['seconds']:.1f} s "
            f"({summary['images_per_second'] or 0:.2f} images/s, {summary['ms_per_denoiser_call']:.1f} ms per "
            f"denoiser call at batch {summary['batch_size']}, {sampler.value} {steps} steps, backend {backend.value})"
        )


BENCH_BACKENDS = ("torch", "torch-reference", "scan-free")


@app.command()
@reports_errors
def bench(
    source: Annotated[Path, typer.Argument(help="Checkpoint file (ckpt.pt) to benchmark.")],
    backends: Annotated[
        str,
        typer.Option(
            help="Comma-separated rows: torch (native ops when built), torch-reference (pure-PyTorch "
            "ops), scan-free (benchmark-only floor: the scan replaced by its skip term D*u)."
        ),
    ] = "torch,torch-reference,scan-free",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    steps: Annotated[int, typer.Option(help="DDIM steps of the full run behind images/s.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 2,
    iters: Annotated[int, typer.Option(help="Timed calls per row.")] = 10,
    device: Annotated[str, typer.Option(help="Torch device (cpu, cuda).")] = "cpu",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows as JSON here.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also plot latency vs batch size (needs matplotlib).")] = None,
) -> None:
    """Time the denoiser of each backend side by side, in one run, and report speedups.

    Rows report the median / p90 / p99 per-call latency, images/s of a full DDIM run (steps x
    (median call + sampler step)), peak memory, and the speedup over torch-reference measured
    in the same run.

    Example: vmddpm-deploy bench ckpt.pt --batch-sizes 1,16 --json bench.json
    """
    from rich.table import Table

    from vmddpm_deploy.benchmark import SCAN_FREE, BenchTarget, run_bench
    from vmddpm_deploy.checkpoint import load_checkpoint
    from vmddpm_deploy.diffusion import make_sampler
    from vmddpm_deploy.ops import dispatch
    from vmddpm_deploy.runtime.torch_backend import TorchDenoiser

    names = _csv(backends, "--backends")
    unknown = [name for name in names if name not in BENCH_BACKENDS]
    if unknown:
        raise InvalidArgumentError(f"unknown backend {unknown[0]!r} in --backends; choose from {', '.join(BENCH_BACKENDS)}")
    sizes = [_positive_int(text, "--batch-sizes") for text in _csv(batch_sizes, "--batch-sizes")]
    if warmup < 0 or iters < 1:
        raise InvalidArgumentError("--warmup must be >= 0 and --iters >= 1")
    if plot is not None:
        _require_matplotlib()

    checkpoint = load_checkpoint(source)
    sampler_steps = make_sampler("ddim", checkpoint.schedule, steps)
    torch_denoiser = TorchDenoiser(checkpoint, device)
    kernels = {"torch": None, "torch-reference": dispatch.REFERENCE, "scan-free": SCAN_FREE}
    targets = [BenchTarget(name, torch_denoiser, torch_denoiser.device, kernels[name]) for name in names]
    config = checkpoint.config
    baseline = "torch-reference" if "torch-reference" in names else names[0]

    table = Table(title=f"denoiser latency, {config.image_size}x{config.image_size}, DDIM {steps} steps")
    for column in ("backend", "batch", "median ms", "p90 ms", "p99 ms", "images/s", "peak MB", f"x {baseline}"):
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
            "-" if speedup is None else f"{speedup:.2f}",
        )
    wide_console().print(table)
    payload = {"source": str(source), "device": device, "steps": steps, "warmup": warmup, "iters": iters,
               "baseline": baseline, "rows": rows}
    if json_path is not None:
        data = json.dumps(payload, indent=2).encode()
        write_atomic(json_path, lambda handle: handle.write(data))
    if plot is not None:
        _plot_latency(rows, plot)


def _csv(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidArgumentError(f"{option} needs at least one value")
    return items


def _positive_int(text: str, option: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgumentError(f"{option} takes positive integers, got {text!r}")
    return int(text)


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


@app.command()
@reports_errors
def doctor() -> None:
    """Report what this installation can run: native kernels, GPU, runtimes.

    Example: vmddpm-deploy doctor
    """
    import importlib.util

    import torch
    from rich.table import Table

    from vmddpm_deploy.ops import dispatch, native

    report = native.describe()
    table = Table(title=f"vmddpm-deploy {__version__}", show_header=False)
    table.add_row("torch", f"{torch.__version__} (cuda device: {'yes' if torch.cuda.is_available() else 'no'})")
    table.add_row("VMDDPM_OPS", dispatch.requested())
    if report["loaded"]:
        table.add_row("native library", report["library"])
        table.add_row("native cpu", f"{report['cpu_isa']} (built: {', '.join(report['cpu_isas_built'])}), "
                      f"openmp {'on' if report['openmp'] else 'off'}")
        cuda = f"built for sm_{', sm_'.join(report['cuda_archs'])}" if report["cuda_built"] else "not built"
        table.add_row("native cuda", cuda)
    else:
        table.add_row("native library", f"not loaded: {report['error']} (ops run the reference)")
    for module in ("onnxruntime", "tensorrt"):
        table.add_row(module, "installed" if importlib.util.find_spec(module) else "not installed")
    wide_console().print(table)


def wide_console() -> Console:
    """stdout console that does not squeeze tables into 80 columns when piped to a file."""
    return Console(width=max(Console().width, 120))


def _progress(quiet: bool = False) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )


def main() -> None:
    app()
