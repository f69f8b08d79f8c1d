"""`vmddpm-deploy sample`: generate images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vmddpm_deploy.cli.app import (
    DEFAULT_SAMPLER_NAME,
    DEFAULT_STEPS,
    Backend,
    ImageFormat,
    Precision,
    SamplerName,
    Spacing,
    app,
    print_note,
    progress_callback,
    reports_errors,
    resolve_device,
)
from vmddpm_deploy.errors import InvalidArgumentError, OutputError
from vmddpm_deploy.choices import DEFAULT_SPACINGS, IMAGE_FORMATS

#: The largest job one directory holds: its indices are listed in progress.json (and held in memory
#: while it runs), about 100 MB at this size.
MAX_IMAGES = 10_000_000


@app.command()
@reports_errors
def sample(
    source: Annotated[
        Path, typer.Argument(help="Checkpoint (ckpt.safetensors, .pt, or a diffusers save_pretrained directory), export directory, or "
        "engine plan inside one.")
    ],
    n: Annotated[int, typer.Option("--n", help="Number of images in the whole job (all shards).")] = 16,
    sampler: Annotated[SamplerName, typer.Option(help="Sampling algorithm.")] = DEFAULT_SAMPLER_NAME,
    steps: Annotated[
        int | None,
        typer.Option(help=f"Denoising steps (at most the schedule's T). Default: {DEFAULT_STEPS}, or --timesteps' count."),
    ] = None,
    eta: Annotated[float, typer.Option(help="DDIM stochasticity: 0 is deterministic, 1 is DDPM-like.")] = 0.0,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="diffusers:CLASS",
            help="A diffusers scheduler in place of --sampler, e.g. diffusers:UniPCMultistepScheduler: a deterministic "
            "one that feeds the sample itself to the model; its beta schedule is SRC's. Needs vmddpm-deploy\\[diffusers].",
        ),
    ] = None,
    scheduler_config: Annotated[
        str | None,
        typer.Option(metavar="JSON|FILE", help="--scheduler's config: a JSON object, or a file holding one."),
    ] = None,
    spacing: Annotated[
        Spacing | None,
        typer.Option(
            help="Where the timesteps sit: leading / trailing / linspace (diffusers' grids), quadratic (the DDIM "
            "paper's), logsnr (even log-SNR), karras (rho 7); formulas in docs/design.md section 4. Default: "
            + ", ".join(f"{spacing} for {name}" for name, spacing in DEFAULT_SPACINGS.items()) + "."
        ),
    ] = None,
    timesteps: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Run at the timesteps of a tune-schedule file instead of --steps / --spacing (ddpm, ddim, ddim-ab2, "
            "ddim-ab3, dpm-solver++); recorded in the run's settings like --spacing. An export made with "
            "--timesteps runs at its manifest's list unless --steps, --spacing or --timesteps is given.",
        ),
    ] = None,
    precision: Annotated[
        Precision,
        typer.Option(
            help="Arithmetic of the torch backend: fp32, or bf16 (autocast; the CPU path, fast where the CPU "
            "has native bf16). auto: bf16 on a CPU with native bf16 (avx512_bf16 or AMX), fp32 elsewhere "
            "(README \"Fast sampling at equal quality\" says why)."
        ),
    ] = Precision("auto"),
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Images sampled together. On the CPU the images do not depend on it (every denoiser call "
            "has a fixed micro-batch of rows); on a GPU every call has this many rows and the images depend on "
            "it, so a resumed run and every shard of a GPU job use one value. Default: on the CPU 16, or more "
            "to keep every thread busy; on a GPU the largest the backend takes (a TensorRT engine's "
            "--max-batch, a --batch-dim K export's K), else 16."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Run seed; sample i's noise depends only on (seed, i).")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("samples"),
    image_format: Annotated[
        ImageFormat,
        typer.Option(
            "--format",
            help="; ".join(f"{name}: {layout.description}" for name, layout in IMAGE_FORMATS.items()) + ".",
        ),
    ] = ImageFormat.png,
    shard: Annotated[str, typer.Option(help="Make only indices i with i % N == I, given as I/N.")] = "0/1",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out (same settings).")] = False,
    force: Annotated[
        bool, typer.Option(help="Replace the samples --out holds (this shard's) instead of refusing them.")
    ] = False,
    backend: Annotated[
        Backend,
        typer.Option(
            help="Runtime that evaluates the denoiser: torch (checkpoint), onnxruntime (export dir), "
            "tensorrt (export dir with an engine), auto (the fastest of these that runs SRC here)."
        ),
    ] = Backend.auto,
    device: Annotated[str, typer.Option(help="Device: auto (cuda when present, as in train), cpu, cuda, cuda:1.")] = "auto",
    ray: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Run as Ray workers, worker w of W making shard w/W (same files, same --resume): "
            "local (start Ray here), auto (the running cluster) or HOST:PORT. Needs vmddpm-deploy\\[distributed].",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="With --ray: number of workers (default: one per GPU, or per CPU).")
    ] = None,
    record_eps: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Also record every denoiser call (t, x, eps) to FILE for the C++ host's `vmddpm_host sample "
            "--replay FILE` (DDIM, a whole job without --resume, --shard or --ray).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar; print one JSON summary line.")] = False,
) -> None:
    """Generate images with DDPM, DDIM, multistep DDIM (ddim-ab2 / ddim-ab3), DPM-Solver++ or a diffusers
    scheduler; write 16-bit PNG, NPZ or NIfTI.

    On the CPU, sample i is the same file byte for byte whatever the thread count
    (OMP_NUM_THREADS), --batch-size, --shard split, resume point or Ray workers: its noise comes
    from (seed, i) alone and every denoiser call has the same rows on one thread, the calls
    running side by side. The bytes still depend on the arithmetic: backend and its version,
    CPU instruction set or GPU model, precision, and on a GPU --batch-size. It is recorded in
    progress.json and samples.json, and a resume or shard under another one is refused: other
    backends or instruction sets give close images, not always identical ones (README
    "Reproducible datasets"). Each image is written atomically and progress.json records what is done, so a run
    killed at any moment continues with --resume.

    The default sampler, steps, spacing and precision (see each option) are the fewest denoiser
    calls that keep DDIM 50's FID and KID on the bundled model, on two seeds (README, "Fast
    sampling at equal quality").

    Example: vmddpm-deploy sample ckpt.safetensors --n 1000 --out samples/

    Job array: vmddpm-deploy sample ckpt.safetensors --n 100000 --shard $SLURM_ARRAY_TASK_ID/64 --out samples/

    Ray: vmddpm-deploy sample ckpt.safetensors --n 100000 --ray auto --device cuda --out /shared/samples/

    diffusers: vmddpm-deploy sample ckpt.safetensors --scheduler diffusers:UniPCMultistepScheduler --scheduler-config '{"solver_order": 3}'
    """
    from vmddpm_deploy.jobs import Shard, plan_job, run_sample_job

    if n < 1:
        raise InvalidArgumentError(f"--n must be at least 1, got {n}")
    if n > MAX_IMAGES:
        raise InvalidArgumentError(
            f"--n must be at most {MAX_IMAGES:,}, got {n}; split a larger job over several --out directories"
        )
    if batch_size is not None and batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= seed < 2**64:
        raise InvalidArgumentError(f"--seed must be in [0, 2^64), got {seed}")
    shard_spec = Shard.parse(shard)
    tuned = None
    if timesteps is not None:
        from vmddpm_deploy.diffusion.schedule_file import read_schedule

        if spacing is not None:
            raise InvalidArgumentError("--timesteps and --spacing both place the timesteps; give one of them")
        tuned = read_schedule(timesteps)
        if steps is not None and steps != tuned.nfe:
            raise InvalidArgumentError(f"--steps {steps} conflicts with --timesteps {timesteps}, which lists {tuned.nfe}; drop --steps")
        steps = tuned.nfe
    manifest_timesteps, opened = None, None
    if tuned is None and steps is None and spacing is None and scheduler is None:
        # An export made with --timesteps samples at them unless another placement is asked for,
        # as vmddpm_host does; the source is opened once and handed to plan_job.
        from vmddpm_deploy.runtime.source import open_source

        opened = open_source(source)
        if opened.manifest is not None and opened.manifest.timesteps is not None:
            manifest_timesteps = opened.manifest.timesteps
            steps = len(manifest_timesteps)
    if steps is None:
        steps = DEFAULT_STEPS
    if device == "auto":
        device = str(resolve_device(device))
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a directory; choose another --out")

    plan = plan_job(
        opened if opened is not None else source, n=n, sampler=sampler.value, steps=steps, eta=eta, seed=seed, image_format=image_format.value,
        shard=shard_spec, batch_size=batch_size, scheduler=_scheduler_choice(scheduler, scheduler_config),
        spacing=None if spacing is None else spacing.value, precision=precision.value,
        timesteps=tuned.timesteps if tuned is not None else manifest_timesteps,
    )
    if manifest_timesteps is not None and not quiet:
        print_note(f"sampling at the {steps} timesteps the export's manifest lists (export --timesteps); "
                   "--steps or --spacing asks for a placement instead")
    if tuned is not None and tuned.source_sha256 not in _model_digests(plan.source):
        print_note(
            f"--timesteps {timesteps} was tuned for another model (sha256 {tuned.source_sha256[:12]}...); "
            "its timesteps run as given, but may not be this model's best"
        )
    if backend is Backend.auto:
        from vmddpm_deploy.runtime.source import auto_fallback_note

        note = auto_fallback_note(plan.source)
        if note:
            print_note(note)
    with progress_callback("sampling", quiet) as report:
        summary = run_sample_job(
            plan, out, backend=backend.value, device=device, resume=resume, force=force, record_eps=record_eps,
            ray=ray, workers=workers, on_progress=report,
        )
    if quiet:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"wrote {summary['images']} images to {out} in {summary['seconds']:.1f} s "
            f"({summary['images_per_second'] or 0:.2f} images/s, {summary['ms_per_denoiser_call']:.1f} ms per "
            f"denoiser call at batch {summary['batch_size']}, {summary['sampler']} {steps} steps"
            f"{' ' + summary['spacing'] if summary['spacing'] else ''}{' tuned' if summary['timesteps'] else ''}, "
            f"backend {summary['backend']} "
            f"{summary['precision']})"
        )
    if "eps_recording" in summary and not quiet:
        export_dir = source if plan.source.kind == "export" else "EXPORT_DIR"
        # The host takes explicit timesteps from its manifest only (export --timesteps).
        placement = (
            f" (the export made with export --timesteps {timesteps}, whose manifest lists them)" if tuned is not None
            else f" --steps {steps}" + (f" --spacing {summary['spacing']}" if summary["spacing"] else "")
        )
        typer.echo(
            f"recorded {summary['eps_recording']['calls']} denoiser calls to {record_eps}; replay them with: "
            f"vmddpm_host sample --export-dir {export_dir} --replay {record_eps} --n {n} --batch-size "
            f"{summary['batch_size']} --micro-batch {summary['eps_recording']['micro_batch']} "
            f"--sampler {summary['sampler']} --eta {eta:g} --seed {seed}{placement}"
        )


def _model_digests(source) -> set[str]:
    """The sha256s that name SRC's model: SRC's own, and for an export the checkpoint it was made from."""
    return {source.sha256} | ({source.manifest.source.sha256} if source.manifest is not None else set())


def _scheduler_choice(scheduler: str | None, config_text: str | None) -> tuple[str, dict[str, Any]] | None:
    """``--scheduler diffusers:CLASS`` and ``--scheduler-config`` -> (CLASS, config), checked for form only."""
    if scheduler is None:
        if config_text is not None:
            raise InvalidArgumentError("--scheduler-config applies to --scheduler only")
        return None
    prefix, _, class_name = scheduler.partition(":")
    if prefix != "diffusers" or not class_name.isidentifier():
        raise InvalidArgumentError(f"--scheduler takes diffusers:CLASS (e.g. diffusers:UniPCMultistepScheduler), got {scheduler!r}")
    if config_text is None:
        return class_name, {}
    source = "--scheduler-config"
    if Path(config_text).is_file():
        source = f"--scheduler-config {config_text}"
        try:
            config_text = Path(config_text).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"{source}: cannot read it ({exc})") from None
    try:
        config = json.loads(config_text)
    except json.JSONDecodeError as exc:
        what = "is not valid JSON" if source != "--scheduler-config" else "is neither a file nor valid JSON"
        raise InvalidArgumentError(f"{source} {what} ({exc.msg} at character {exc.pos})") from None
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"{source} must be a JSON object, got {type(config).__name__}")
    return class_name, config


