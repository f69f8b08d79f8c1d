"""Tuned timesteps against the fixed placements, on one model: the search's cost and the error
against the teacher's final images at equal NFE.

    python benchmarks/bench_schedule_search.py [--checkpoint CKPT] [--nfe 5,6,8] [--trajectories 128]
        [--out benchmarks/results/schedules]

Runs the DDIM teacher of ``tune-schedule`` once (its defaults), picks the schedule for every
``--nfe`` from the same cost matrix (each written as ``OUT/ddim-nfeN.json``, the file
``tune-schedule --nfe N`` writes with these settings), and for each NFE runs DDIM at the tuned
timesteps and at the ``leading``, ``quadratic`` and ``logsnr`` placements from the same noise,
reporting each one's mean squared difference from the teacher's final images. A placement's
summed one-step cost is comparable only where its path lies on the teacher's grid and starts
where the teacher starts; elsewhere the table says so. ``OUT/search.md`` and ``OUT/search.json``
hold the result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.choices import DEFAULT_TEACHER_STEPS, DEFAULT_TUNE_TRAJECTORIES
from vmddpm_deploy.diffusion import make_sampler
from vmddpm_deploy.diffusion.schedule_search import final_image_error, pick_schedule, teacher_costs
from vmddpm_deploy.runtime.source import load_denoiser, open_source

BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[1] / "vmddpm_deploy/data/bundled/vmddpm_tiny_mni152.safetensors"
PLACEMENTS = ("leading", "quadratic", "logsnr")


def path_cost(teacher, timesteps) -> float | None:
    """The summed one-step cost of ``timesteps`` on the teacher's grid; None where it is off the
    grid or does not start at the teacher's first timestep (no teacher state to start from)."""
    if timesteps[0] != teacher.grid[0] or not set(timesteps) <= set(teacher.grid):
        return None
    nodes = [teacher.grid.index(t) for t in timesteps] + [len(teacher.grid)]
    return float(sum(teacher.cost[a, b] for a, b in zip(nodes, nodes[1:])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT))
    parser.add_argument("--nfe", default="5,6,8")
    parser.add_argument("--trajectories", type=int, default=DEFAULT_TUNE_TRAJECTORIES)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/schedules"))
    args = parser.parse_args()
    nfes = [int(v) for v in args.nfe.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    source = open_source(args.checkpoint)
    denoiser = load_denoiser(source, "torch")
    config = source.config
    start = time.perf_counter()
    teacher = teacher_costs(denoiser, source.schedule, (config.in_channels, config.image_size, config.image_size),
                            trajectories=args.trajectories, batch_size=args.batch_size,
                            teacher_steps=DEFAULT_TEACHER_STEPS)
    teacher_seconds = time.perf_counter() - start
    rows = []
    for nfe in nfes:
        tuned = pick_schedule(denoiser, source.schedule, teacher, nfe=nfe, source_sha256=source.sha256,
                              batch_size=args.batch_size)
        tuned.write(args.out / f"ddim-nfe{nfe}.json", force=True)
        rows.append({"nfe": nfe, "placement": "tuned", "timesteps": list(tuned.timesteps), "cost": tuned.cost,
                     "final_mse": tuned.final_mse})
        for spacing in PLACEMENTS:
            sampler = make_sampler("ddim", source.schedule, nfe, spacing=spacing)
            rows.append({
                "nfe": nfe, "placement": spacing, "timesteps": list(sampler.timesteps),
                "cost": path_cost(teacher, sampler.timesteps),
                "final_mse": final_image_error(denoiser, sampler, teacher.finals, batch_size=args.batch_size),
            })
        print(f"NFE {nfe} done", flush=True)
    lines = [
        f"teacher: DDIM {DEFAULT_TEACHER_STEPS} leading, {args.trajectories} trajectories, {teacher_seconds:.1f} s",
        "",
        "| NFE | placement | timesteps | summed one-step cost | MSE vs teacher's final images |",
        "|---:|---|---|---:|---:|",
    ]
    for row in rows:
        cost = "off the grid" if row["cost"] is None else f"{row['cost']:.4g}"
        lines.append(f"| {row['nfe']} | {row['placement']} | {', '.join(map(str, row['timesteps']))} | {cost} | "
                     f"{row['final_mse']:.4g} |")
    table = "\n".join(lines) + "\n"
    print(table)
    write_atomic(args.out / "search.md", lambda handle: handle.write(table.encode()))
    payload = {"teacher_seconds": teacher_seconds, "trajectories": args.trajectories, "rows": rows}
    write_atomic(args.out / "search.json", lambda handle: handle.write(json.dumps(payload, indent=1).encode()))


if __name__ == "__main__":
    main()
