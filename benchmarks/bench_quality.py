"""Sample quality against the number of denoiser calls: FID and KID per sampler and NFE, our
samplers beside diffusers' own schedulers driving the same model's eps.

    python benchmarks/bench_quality.py [--out benchmarks/results/quality] [--n 321]
        [--nfe 5,6,8,10,12,20,50,100] [--seeds 0,1] [--rows ddim,ddim-ab2-quadratic,ddim-ab2-quadratic-bf16,...]
        [--checkpoint vmddpm_deploy/data/bundled/vmddpm_tiny_mni152.safetensors] [--real bundled:train]
        [--tune-trajectories 128]

Rows: our samplers at their defaults, diffusers' schedulers, and ``SAMPLER-SPACING[-bf16]`` for
the deterministic samplers (ddim, ddim-ab2, ddim-ab3, dpm-solver++) at each noise-level placement
(quadratic, logsnr, karras; the multistep ones at leading too), in fp32 and under the torch
backend's bf16 autocast. A (row, NFE) whose placement repeats timesteps at that NFE (quadratic
beyond 29 steps) has no cell and is reported as such. ``ddim-tuned``, ``ddim-ab2-tuned`` and
``ddim-ab3-tuned`` run at the timesteps ``tune-schedule`` picks for that NFE on this checkpoint
(the search's defaults, ``--tune-trajectories`` trajectories), tuned once per NFE and kept in
``OUT/schedules/ddim-nfeN.json`` so an interrupted grid does not tune again.

Every cell (row, NFE, seed) samples ``--n`` images through ``sample``'s own loop
(:func:`vmddpm_deploy.jobs.sampling.sample_shard`, an npz shard in ``OUT/samples/CELL/``), so every
row starts from the same x_T (sample ``i`` of seed ``s`` draws the same noise whatever the
sampler), runs the same padded batches and differs only in the update rule. diffusers' schedulers
enter through :class:`vmddpm_deploy.diffusers.DiffusersScheduler` (what ``sample --scheduler
diffusers:NAME`` runs); they keep their own defaults (float32 tables from ``beta_schedule="linear"``),
so their rows are an independent implementation, not ours re-run. FID and KID are against ``--real`` (default: the 321 training
slices, so n = 321 compares equal-sized sets; FID is biased upward at small n, so compare rows
only at equal n). Seconds per image are the sampling wall time (writing included) over the images
made in this run.

Each finished cell is written to ``OUT/cells/`` at once (JSON, atomically), so an interrupted run
continues where it stopped; ``--rows`` / ``--nfe`` / ``--seeds`` pick which cells to (re)compute,
the table and the plot (``OUT/quality.md``, ``OUT/quality.json``, ``OUT/fid_vs_nfe.png``) cover
every cell in ``OUT/cells/``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.choices import DEFAULT_TUNE_TRAJECTORIES
from vmddpm_deploy.diffusion import DPMSolverPP2MSampler, NoiseSchedule, make_sampler
from vmddpm_deploy.diffusion.schedule_file import read_schedule
from vmddpm_deploy.diffusion.schedule_search import tune_schedule
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.evaluation.image_sets import ImageSet, images_to_uint8, open_image_set
from vmddpm_deploy.evaluation.inception import InceptionFeatureExtractor
from vmddpm_deploy.evaluation.metrics import evaluate_sets
from vmddpm_deploy.jobs import sampling
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.prepare import resolve_arithmetic
from vmddpm_deploy.jobs.spec import JobSettings, Shard
from vmddpm_deploy.runtime.source import DenoiserSource, load_denoiser, open_source

BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[1] / "vmddpm_deploy/data/bundled/vmddpm_tiny_mni152.safetensors"
DEFAULT_NFE = (5, 6, 8, 10, 12, 20, 50, 100)


def _diffusers(class_name: str, **options) -> Callable[[NoiseSchedule, int], object]:
    def make(schedule: NoiseSchedule, steps: int) -> object:
        from vmddpm_deploy.diffusers.scheduler import diffusers_sampler

        return diffusers_sampler(class_name, schedule, steps, options)

    return make


def _ours(name: str, **options) -> Callable[[NoiseSchedule, int], object]:  # options: make_sampler's
    return lambda schedule, steps: make_sampler(name, schedule, steps, **options)


@dataclass(frozen=True)
class Row:
    label: str
    implementation: str  # "ours" or "diffusers"
    #: Builds the sampler from (schedule, NFE); None for a tuned row, built at its tuned timesteps.
    make: Callable[[NoiseSchedule, int], object] | None
    precision: str = "fp32"  # the torch backend's (sample --precision)
    #: The sampler a tuned row runs at ``tune-schedule``'s timesteps for the cell's NFE.
    tuned: str | None = None


#: The deterministic samplers the placement rows cross with, and their labels.
PLACEMENT_SAMPLERS = {
    "ddim": "DDIM (eta 0, x0 clipped)",
    "ddim-ab2": "multistep DDIM, AB2 eps (x0 clipped)",
    "ddim-ab3": "multistep DDIM, AB3 eps (x0 clipped)",
    "dpm-solver++": "DPM-Solver++(2M) (x0 clipped)",
}
#: Placements crossed with them: the noise-level ones, and multistep DDIM's default grid.
PLACEMENT_SPACINGS = ("quadratic", "logsnr", "karras")


def placement_rows() -> dict[str, Row]:
    """``SAMPLER-SPACING`` rows (and ``-bf16`` twins) for every sampler x placement, plus the
    multistep samplers at their default ``leading`` and the bf16 twins of our default rows."""
    rows = {}
    for sampler, label in PLACEMENT_SAMPLERS.items():
        spacings = (*PLACEMENT_SPACINGS, "leading") if sampler.startswith("ddim-ab") else PLACEMENT_SPACINGS
        for spacing in spacings:
            for precision in ("fp32", "bf16"):
                name = f"{sampler}-{spacing}" + ("-bf16" if precision == "bf16" else "")
                rows[name] = Row(
                    f"{label}, {spacing}, {precision}", "ours", _ours(sampler, spacing=spacing), precision
                )
    for sampler in ("ddim", "dpm-solver++"):
        rows[f"{sampler}-bf16"] = Row(f"{ROWS[sampler].label}, bf16", "ours", ROWS[sampler].make, "bf16")
    return rows


#: Every row by name. Ours first, then diffusers' with its defaults, then its variants.
ROWS: dict[str, Row] = {
    "ddim": Row("DDIM (eta 0, leading, x0 clipped)", "ours", _ours("ddim", spacing="leading")),
    "ddpm": Row("DDPM (ancestral, leading)", "ours", _ours("ddpm", spacing="leading")),
    "dpm-solver++": Row("DPM-Solver++(2M) (linspace, x0 clipped)", "ours", _ours("dpm-solver++", spacing="linspace")),
    "dpm-solver++-no-clip": Row(
        "DPM-Solver++(2M) (linspace, x0 not clipped: before this benchmark)", "ours",
        lambda schedule, steps: DPMSolverPP2MSampler(schedule, steps, clip_sample=False),
    ),
    "diffusers-ddim": Row("DDIMScheduler (defaults)", "diffusers", _diffusers("DDIMScheduler")),
    "diffusers-dpm++2m": Row(
        "DPMSolverMultistepScheduler (defaults)", "diffusers", _diffusers("DPMSolverMultistepScheduler")
    ),
    "diffusers-dpm++2m-karras": Row(
        "DPMSolverMultistepScheduler use_karras_sigmas", "diffusers",
        _diffusers("DPMSolverMultistepScheduler", use_karras_sigmas=True),
    ),
    "diffusers-dpm++2m-thresholding": Row(
        "DPMSolverMultistepScheduler thresholding (x0 in [-1, 1])", "diffusers",
        _diffusers("DPMSolverMultistepScheduler", thresholding=True, sample_max_value=1.0),
    ),
    "diffusers-unipc": Row("UniPCMultistepScheduler (defaults, bh2)", "diffusers", _diffusers("UniPCMultistepScheduler")),
}
ROWS |= placement_rows()
ROWS |= {
    f"{sampler}-tuned": Row(f"{PLACEMENT_SAMPLERS[sampler]}, tune-schedule's timesteps", "ours", None, tuned=sampler)
    for sampler in ("ddim", "ddim-ab2", "ddim-ab3")
}


def tuned_timesteps(out: Path, source: DenoiserSource, denoiser, nfe: int, trajectories: int) -> tuple[int, ...]:
    """``tune-schedule``'s timesteps for ``nfe`` steps on ``source``: from ``OUT/schedules/`` when an
    earlier run tuned them for this very checkpoint, else tuned now (minutes) and kept there."""
    path = out / "schedules" / f"ddim-nfe{nfe}.json"
    if path.exists():
        tuned = read_schedule(path)
        if tuned.source_sha256 != source.sha256 or tuned.trajectories != trajectories:
            raise SystemExit(f"error: {path} was tuned for another checkpoint or trajectory count; remove it")
        return tuned.timesteps
    config = source.config
    print(f"tuning the timesteps for NFE {nfe} ({trajectories} trajectories)", flush=True)
    tuned = tune_schedule(denoiser, source.schedule, (config.in_channels, config.image_size, config.image_size),
                          nfe=nfe, source_sha256=source.sha256, trajectories=trajectories)
    path.parent.mkdir(parents=True, exist_ok=True)
    tuned.write(path)
    return tuned.timesteps


def make_row_sampler(row: str, nfe: int, out: Path, source: DenoiserSource, load, trajectories: int) -> object:
    """The sampler of ``row`` at ``nfe`` calls; ``load(precision)`` gives the denoiser a tuned row is
    tuned with (fp32, whatever the row's precision: the timesteps are the model's, not the arithmetic's)."""
    if ROWS[row].tuned is None:
        return ROWS[row].make(source.schedule, nfe)
    timesteps = tuned_timesteps(out, source, load("fp32"), nfe, trajectories)
    return make_sampler(ROWS[row].tuned, source.schedule, nfe, timesteps=timesteps)


def cell_path(out: Path, row: str, nfe: int, seed: int) -> Path:
    return out / "cells" / f"{row}_nfe{nfe}_seed{seed}.json"


def run_cell(row: str, nfe: int, seed: int, n: int, batch_size: int, source: DenoiserSource, denoiser,
             extractor, real_set: ImageSet, out: Path, sampler) -> dict:
    """Sample one cell into ``OUT/samples/ROW_nfeNFE_seedSEED/`` through ``sample``'s own loop (an
    npz shard; a cell without its JSON is made again from the start) and score it."""
    assert len(sampler.timesteps) == nfe, f"{row} at {nfe} steps makes {len(sampler.timesteps)} calls"
    config = source.config
    image_shape = (config.in_channels, config.image_size, config.image_size)
    arithmetic = resolve_arithmetic(denoiser, "torch", "cpu", batch_size)
    settings = JobSettings(source.sha256, n, row, nfe, 0.0, seed, "npz", Shard(), batch_size,
                           precision=ROWS[row].precision, arithmetic=arithmetic)
    samples_dir = out / "samples" / cell_path(out, row, nfe, seed).stem
    shutil.rmtree(samples_dir, ignore_errors=True)  # an interrupted cell's samples: its timing is lost, redo it
    run = sampling.sample_shard(OutputDir(samples_dir, settings, resume=False), denoiser, sampler, image_shape)
    with np.load(samples_dir / "samples.npz") as npz:
        images = images_to_uint8(npz["images"], row)
    generated = ImageSet(f"{row} nfe {nfe} seed {seed}", tuple(images.shape[1:]), None, array=images)
    # The real set's features come from evaluate's per-set cache after the first cell.
    scores = evaluate_sets(generated, real_set, ("fid", "kid"), extractor=extractor)
    return {
        "row": row, "label": ROWS[row].label, "implementation": ROWS[row].implementation,
        "nfe": nfe, "precision": ROWS[row].precision, "timesteps": list(sampler.timesteps),
        "denoiser_calls_per_batch": run["denoiser_calls"] // math.ceil(n / batch_size), "seed": seed,
        "n": n, "batch_size": batch_size, "fid": scores.fid, "kid": scores.kid, "kid_std": scores.kid_std,
        "seconds_per_image": run["seconds"] / n, "sampling_seconds": run["seconds"],
    }


def collect(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((out / "cells").glob("*.json"))]


def summarise(cells: list[dict]) -> list[dict]:
    """One entry per (row, NFE): FID / KID per seed, their mean, and the mean seconds per image."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["row"], cell["nfe"]), []).append(cell)
    order = list(ROWS)
    summary = []
    for (row, nfe), group in sorted(groups.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        group.sort(key=lambda cell: cell["seed"])
        summary.append({
            "row": row, "label": group[0]["label"], "implementation": group[0]["implementation"], "nfe": nfe,
            "n": group[0]["n"], "seeds": [c["seed"] for c in group], "fid": [c["fid"] for c in group],
            "kid": [c["kid"] for c in group], "fid_mean": statistics.fmean(c["fid"] for c in group),
            "kid_mean": statistics.fmean(c["kid"] for c in group),
            "seconds_per_image": statistics.fmean(c["seconds_per_image"] for c in group),
        })
    return summary


def markdown_table(summary: list[dict]) -> str:
    lines = [
        "| row | implementation | NFE | FID per seed | KID per seed | s / image |",
        "|---|---|---:|---|---|---:|",
    ]
    for entry in summary:
        fids = " / ".join(f"{v:.1f}" for v in entry["fid"])
        kids = " / ".join(f"{v:.4f}" for v in entry["kid"])
        lines.append(
            f"| {entry['row']} | {entry['implementation']} | {entry['nfe']} | {fids} | {kids} | "
            f"{entry['seconds_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    shown = [row for row in ROWS if any(e["row"] == row for e in summary)]
    colours, markers = plt.get_cmap("tab20").colors, "os^Dv<>"  # one colour and marker pair per row
    for i, row in enumerate(shown):
        entries = [e for e in summary if e["row"] == row]
        style = "-" if ROWS[row].implementation == "ours" else "--"
        axis.plot([e["nfe"] for e in entries], [e["fid_mean"] for e in entries], style, color=colours[i % 20],
                  marker=markers[i % len(markers)], label=row)
    axis.set_xscale("log")
    axis.minorticks_off()
    nfes = sorted({e["nfe"] for e in summary})
    axis.set_xticks(nfes, labels=[str(v) for v in nfes])
    axis.set_xlabel("denoiser calls (NFE)")
    axis.set_ylabel(f"FID (n = {summary[0]['n']}, mean over seeds)")
    axis.set_title("FID against NFE (solid: ours, dashed: diffusers; equal scores overlap)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    parser.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT))
    parser.add_argument("--real", default="bundled:train", help="reference images (an evaluate REAL spec)")
    parser.add_argument("--n", type=int, default=321, help="generated images per cell")
    parser.add_argument("--batch-size", type=int, default=107, help="321 = 3 x 107: no padded rows")
    parser.add_argument("--nfe", default=",".join(map(str, DEFAULT_NFE)))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"any of {', '.join(ROWS)}")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--tune-trajectories", type=int, default=DEFAULT_TUNE_TRAJECTORIES,
                        help="teacher trajectories the -tuned rows' timesteps are tuned on")
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    nfes = [int(v) for v in args.nfe.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    (args.out / "cells").mkdir(parents=True, exist_ok=True)

    if not args.report_only:
        source = open_source(args.checkpoint)
        denoisers: dict[str, object] = {}  # one model per precision, loaded when a row first needs it

        def load(precision: str):
            if precision not in denoisers:
                denoisers[precision] = load_denoiser(source, "torch", precision=precision)
            return denoisers[precision]

        extractor = InceptionFeatureExtractor()
        real_set = open_image_set(args.real, size_hint=source.config.image_size)
        for nfe in nfes:
            for seed in seeds:
                for row in rows:
                    path = cell_path(args.out, row, nfe, seed)
                    if path.exists():
                        continue
                    try:
                        sampler = make_row_sampler(row, nfe, args.out, source, load, args.tune_trajectories)
                    except InvalidArgumentError as exc:  # e.g. quadratic spacing repeats timesteps at 50
                        print(f"{row:32s} NFE {nfe:4d}: no cell ({exc})", flush=True)
                        continue
                    cell = run_cell(row, nfe, seed, args.n, args.batch_size, source, load(ROWS[row].precision), extractor,
                                    real_set, args.out, sampler)
                    cell["real"] = args.real
                    cell["checkpoint"] = Path(args.checkpoint).name
                    write_atomic(path, lambda handle: handle.write(json.dumps(cell, indent=1).encode()))
                    print(f"{row:32s} NFE {nfe:4d} seed {seed}: FID {cell['fid']:7.2f}  KID {cell['kid']:.4f}  "
                          f"{cell['seconds_per_image']:.3f} s/image", flush=True)

    summary = summarise(collect(args.out))
    if not summary:
        raise SystemExit("error: no finished cells yet")
    table = markdown_table(summary)
    print(table)
    write_atomic(args.out / "quality.md", lambda handle: handle.write(table.encode()))
    write_atomic(args.out / "quality.json", lambda handle: handle.write(json.dumps(summary, indent=1).encode()))
    plot(summary, args.out / "fid_vs_nfe.png")


if __name__ == "__main__":
    main()
