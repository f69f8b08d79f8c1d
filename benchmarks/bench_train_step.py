"""Training-step time of ``vmddpm-deploy train``, side by side for op implementations.

    python benchmarks/bench_train_step.py --preset tiny --batch-size 16 --steps 20 --device cuda
    python benchmarks/bench_train_step.py --ops auto,reference --steps 6 --warmup 2 --json train_step.json

Each row runs the real training loop (vmddpm_deploy.training.train: data draw, forward,
backward, clipping, AdamW, EMA) on the bundled 32x32 brain slices (or --data) and reports the
median and p90 of the step-to-step wall time after ``--warmup`` steps. The loop reads the loss
back every step, so on a GPU each interval ends with the step's kernels finished. The last step
(which also writes the checkpoint) is left out. Rows: ``auto`` (native ops where built, the
default), ``reference`` (pure-PyTorch ops).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vmddpm_deploy.data import load_dataset
from vmddpm_deploy.model import preset
from vmddpm_deploy.ops import dispatch
from vmddpm_deploy.training import TrainSettings, train

KERNELS = {"auto": None, "reference": dispatch.REFERENCE, "native": dispatch.NATIVE}


def time_row(ops: str, args: argparse.Namespace) -> dict:
    config = preset(args.preset, scan_order=args.scan_order)
    dataset = load_dataset(args.data, config.image_size)
    settings = TrainSettings(
        steps=args.warmup + args.steps + 1, batch_size=args.batch_size, amp=args.amp, checkpoint_every=10**9
    )
    stamps: list[float] = []
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:

        def run() -> None:
            train(
                dataset, Path(tmp) / "ckpt.pt", settings, config, device=device,
                on_step=lambda step, loss: stamps.append(time.perf_counter()),
            )

        if KERNELS[ops] is None:
            run()
        else:
            with dispatch.using(KERNELS[ops]):
                run()
    # stamps[k] ends step k + 1; interval k (stamps[k + 1] - stamps[k]) is step k + 2. Steps 1..warmup
    # are untimed, steps warmup+1 .. warmup+steps timed, the last one (which saves) dropped.
    intervals = [1e3 * (b - a) for a, b in itertools.pairwise(stamps)][args.warmup - 1 : args.warmup - 1 + args.steps]
    median = statistics.median(intervals)
    return {
        "ops": ops,
        "forward_kernels": dispatch.kernels_for(torch.empty(1, device=device)).name if ops == "auto" else ops,
        "preset": args.preset,
        "device": str(device),
        "batch_size": args.batch_size,
        "amp": args.amp,
        "timed_steps": len(intervals),
        "median_ms": round(median, 2),
        "p90_ms": round(sorted(intervals)[int(0.9 * (len(intervals) - 1))], 2),
        "images_per_s": round(1e3 * args.batch_size / median, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--scan-order", default="regen")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--ops", default="auto", help="comma-separated rows: auto, reference, native")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    rows = [time_row(ops, args) for ops in args.ops.split(",")]
    base = rows[0]["median_ms"]
    print(f"{'ops':<10} {'kernels':<10} {'device':<8} {'batch':>5} {'amp':>5} {'median ms':>10} {'p90 ms':>8} "
          f"{'img/s':>8} {'x row 1':>8}")
    for row in rows:
        print(f"{row['ops']:<10} {row['forward_kernels']:<10} {row['device']:<8} {row['batch_size']:>5} "
              f"{row['amp']!s:>5} {row['median_ms']:>10.1f} {row['p90_ms']:>8.1f} {row['images_per_s']:>8.1f} "
              f"{row['median_ms'] / base:>8.2f}")
    if args.json:
        meta = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
