"""Sample quality against training progress: FID and KID of checkpoints saved along one run.

    python benchmarks/training_curve.py STEP=CKPT [STEP=CKPT ...] [--batch 16] [--label new]
        [--out benchmarks/results/training_curve] [--n 321]

Each ``STEP=CKPT`` is a checkpoint written after STEP optimiser steps of ``--batch`` images (the
x axis is images seen, STEP x batch, so runs at different batch sizes share one plot). For every
checkpoint the script runs the public commands a user would: ``vmddpm-deploy sample CKPT --n N
--seed 0`` at the sampling default, then ``vmddpm-deploy evaluate`` twice:

- 81 of the generated images (``evaluate --n 81``'s fixed subset) against the 81 held-out
  slices (``bundled:heldout``), the README's model table;
- all N generated images against the 321 training slices (``bundled:train``), the protocol of
  ``benchmarks/bench_quality.py``.

Each finished checkpoint is one JSON cell in ``OUT/cells/`` (written atomically), so a stopped run
continues where it left off; the table (``OUT/curve.md``), ``OUT/curve.json`` and the plot
(``OUT/fid_vs_images_seen.png``) cover every cell present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.digests import sha256_file

CLI = [str(Path(sys.executable).with_name("vmddpm-deploy"))]
HELDOUT_N = 81


def run_json(args: list[str]) -> dict:
    """Run one CLI command that prints a JSON object on its last line."""
    done = subprocess.run(CLI + args, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(checkpoint: Path, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples"
        started = time.perf_counter()
        run_json(["sample", str(checkpoint), "--n", str(n), "--seed", "0", "--format", "npz",
                  "--out", str(samples), "--quiet"])
        sample_s = time.perf_counter() - started
        generated = samples / "samples.npz"
        heldout = run_json(["evaluate", str(generated), "bundled:heldout", "--n", str(HELDOUT_N),
                            "--no-cache", "--json", "-"])
        train = run_json(["evaluate", str(generated), "bundled:train", "--no-cache", "--json", "-"])
    return {
        "sample_seconds": round(sample_s, 1),
        "heldout": {"n": HELDOUT_N, "fid": heldout["fid"], "kid": heldout["kid"]},
        "train": {"n": n, "fid": train["fid"], "kid": train["kid"]},
    }


def report(out: Path) -> list[dict]:
    cells = sorted(
        (json.loads(path.read_text()) for path in (out / "cells").glob("*.json")),
        key=lambda cell: (cell["label"], cell["images_seen"]),
    )
    lines = [
        "| run | steps x batch | images seen | FID 81 vs held-out | KID 81 vs held-out "
        "| FID n vs train | KID n vs train |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        lines.append(
            f"| {cell['label']} | {cell['step']} x {cell['batch']} | {cell['images_seen']} "
            f"| {cell['heldout']['fid']:.1f} | {cell['heldout']['kid']:.3f} "
            f"| {cell['train']['fid']:.1f} (n = {cell['train']['n']}) | {cell['train']['kid']:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    write_atomic(out / "curve.md", lambda handle: handle.write(table.encode()))
    write_atomic(out / "curve.json", lambda handle: handle.write((json.dumps(cells, indent=2) + "\n").encode()))
    print(table)
    plot(cells, out / "fid_vs_images_seen.png")
    return cells


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for label in sorted({cell["label"] for cell in cells}):
        rows = [cell for cell in cells if cell["label"] == label]
        seen = [cell["images_seen"] for cell in rows]
        axis.plot(seen, [cell["heldout"]["fid"] for cell in rows], "o-", label=f"{label}: 81 vs held-out")
        axis.plot(seen, [cell["train"]["fid"] for cell in rows], "s--", label=f"{label}: n vs train")
    axis.set_xlabel("training images seen (steps x batch)")
    axis.set_ylabel("FID (lower is better)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="STEP=CKPT pairs")
    parser.add_argument("--batch", type=int, default=16, help="images per training step of the run")
    parser.add_argument("--label", default="run", help="name of the run in the table and plot")
    parser.add_argument("--n", type=int, default=321, help="images generated per checkpoint")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "training_curve")
    args = parser.parse_args()
    if args.n < HELDOUT_N:
        parser.error(f"--n must be at least {HELDOUT_N} (the held-out comparison uses {HELDOUT_N})")
    (args.out / "cells").mkdir(parents=True, exist_ok=True)
    for pair in args.checkpoints:
        step_text, _, path_text = pair.partition("=")
        if not step_text.isdigit() or not path_text:
            parser.error(f"{pair!r} is not STEP=CKPT")
        checkpoint = Path(path_text)
        if not checkpoint.is_file():
            parser.error(f"{checkpoint} not found")
        cell_path = args.out / "cells" / f"{args.label}_step{int(step_text)}.json"
        if cell_path.exists():
            continue
        print(f"{args.label} step {step_text}: sampling {args.n} and scoring", flush=True)
        cell = {
            "label": args.label,
            "step": int(step_text),
            "batch": args.batch,
            "images_seen": int(step_text) * args.batch,
            "checkpoint_sha256": sha256_file(checkpoint),
            **measure(checkpoint, args.n),
        }
        write_atomic(cell_path, lambda handle: handle.write((json.dumps(cell, indent=2) + "\n").encode()))
    report(args.out)


if __name__ == "__main__":
    main()
