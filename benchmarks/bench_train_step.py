"""Training-step time of ``vmddpm-deploy train``, side by side: op implementations, fp32 / bf16
autocast / channels_last, thread counts and batch sizes, in one run.

    python benchmarks/bench_train_step.py --batch-sizes 8,16 --threads 1,2 --variants fp32,amp,channels_last
    python benchmarks/bench_train_step.py --preset tiny --batch-sizes 16 --steps 20 --device cuda
    python benchmarks/bench_train_step.py --ops auto,reference --steps 6 --warmup 2 --json train_step.json

Each row runs the real training loop (vmddpm_deploy.training.train: data draw, forward,
backward, clipping, AdamW, EMA) on the bundled 32x32 brain slices (or --data) and reports the
median and p90 of the step-to-step wall time after ``--warmup`` steps. The loop reads the loss
back every step, so on a GPU each interval ends with the step's kernels finished. The last step
(which also writes the checkpoint) is left out. Rows are the product of ``--ops`` (``auto``:
native ops where built, the default; ``reference``: pure-PyTorch ops), ``--batch-sizes``,
``--threads`` (torch intra-op threads; CPU) and ``--variants``:

* ``fp32``: what ``train`` does by default;
* ``amp``: ``train --amp``, bfloat16 autocast of the forward pass;
* ``channels_last``: the model's weights and its input in channels-last memory order (no ``train``
  option does this; the row says whether one would pay), with ``channels_last+amp`` both.

``--repeats R`` runs the whole list of rows R times in turn and pools each row's timed steps, so a
machine whose load changes during the run shifts every row alike. ``x fp32`` is each row's median
over the fp32 row of the same ops, batch size and threads.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vmddpm_deploy.data import load_dataset
from vmddpm_deploy.model import preset
from vmddpm_deploy.ops import dispatch
from vmddpm_deploy.training import TrainSettings, loop, train

KERNELS = {"auto": None, "reference": dispatch.REFERENCE, "native": dispatch.NATIVE}
VARIANTS = ("fp32", "amp", "channels_last", "channels_last+amp")


@dataclass(frozen=True)
class Row:
    ops: str
    batch_size: int
    threads: int | None  # None: leave torch's default
    variant: str

    @property
    def channels_last(self) -> bool:
        return self.variant.startswith("channels_last")

    @property
    def amp(self) -> bool:
        return self.variant.endswith("amp")


@contextlib.contextmanager
def channels_last_models():
    """Every VMDDPM the training loop builds gets channels-last weights and converts its input to
    channels-last on entry (a forward pre-hook, which the loop's deepcopy for the EMA keeps)."""
    original = loop.VMDDPM

    def build(config):
        model = original(config).to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(
            lambda module, inputs: (inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:])
        )
        return model

    loop.VMDDPM = build
    try:
        yield
    finally:
        loop.VMDDPM = original


def time_steps(row: Row, args: argparse.Namespace) -> list[float]:
    """The timed step intervals (ms) of one training run with the row's settings."""
    config = preset(args.preset, scan_order=args.scan_order)
    dataset = load_dataset(args.data, config.image_size)
    settings = TrainSettings(
        steps=args.warmup + args.steps + 1, batch_size=row.batch_size, amp=row.amp, checkpoint_every=10**9
    )
    stamps: list[float] = []
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if KERNELS[row.ops] is not None:
            stack.enter_context(dispatch.using(KERNELS[row.ops]))
        if row.channels_last:
            stack.enter_context(channels_last_models())
        if row.threads is not None:
            torch.set_num_threads(row.threads)
        try:
            train(
                dataset, Path(tmp) / "ckpt.pt", settings, config, device=device,
                on_step=lambda step, loss: stamps.append(time.perf_counter()),
            )
        finally:
            torch.set_num_threads(threads)
    # stamps[k] ends step k + 1; interval k (stamps[k + 1] - stamps[k]) is step k + 2. Steps 1..warmup
    # are untimed, steps warmup+1 .. warmup+steps timed, the last one (which saves) dropped.
    return [1e3 * (b - a) for a, b in itertools.pairwise(stamps)][args.warmup - 1 : args.warmup - 1 + args.steps]


def summarise(row: Row, intervals: list[float], args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    median = statistics.median(intervals)
    return {
        "ops": row.ops,
        "forward_kernels": dispatch.kernels_for(torch.empty(1, device=device)).name if row.ops == "auto" else row.ops,
        "preset": args.preset,
        "device": str(device),
        "batch_size": row.batch_size,
        "threads": row.threads if row.threads is not None else torch.get_num_threads(),
        "variant": row.variant,
        "amp": row.amp,
        "channels_last": row.channels_last,
        "timed_steps": len(intervals),
        "median_ms": round(median, 2),
        "p90_ms": round(sorted(intervals)[int(0.9 * (len(intervals) - 1))], 2),
        "images_per_s": round(1e3 * row.batch_size / median, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
    }


def csv_ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--scan-order", default="regen")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--batch-sizes", "--batch-size", default="16", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="shorthand for --variants amp")
    parser.add_argument("--variants", default="fp32", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--threads", default="", help="comma-separated torch thread counts (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="run the list of rows this many times in turn")
    parser.add_argument("--ops", default="auto", help="comma-separated rows: auto, reference, native")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    variants = ["amp"] if args.amp else [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")

    rows = [
        Row(ops, batch, threads, variant)
        for ops in args.ops.split(",")
        for batch in csv_ints(args.batch_sizes)
        for threads in (csv_ints(args.threads) or [None])
        for variant in variants
    ]
    intervals: dict[Row, list[float]] = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row in rows:
            intervals[row] += time_steps(row, args)
            print(f"  done: {row} median {statistics.median(intervals[row]):.1f} ms", file=sys.stderr, flush=True)
    results = [summarise(row, intervals[row], args) for row in rows]
    fp32 = {(r["ops"], r["batch_size"], r["threads"]): r["median_ms"] for r in results if r["variant"] == "fp32"}
    print(f"{'ops':<10} {'kernels':<10} {'device':<7} {'batch':>5} {'threads':>7} {'variant':<18} {'median ms':>10} "
          f"{'p90 ms':>8} {'img/s':>7} {'x fp32':>7}")
    for r in results:
        base = fp32.get((r["ops"], r["batch_size"], r["threads"]))
        r["x_fp32"] = round(r["median_ms"] / base, 3) if base else None
        print(f"{r['ops']:<10} {r['forward_kernels']:<10} {r['device']:<7} {r['batch_size']:>5} {r['threads']:>7} "
              f"{r['variant']:<18} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} {r['images_per_s']:>7.1f} "
              f"{r['x_fp32'] if base else '-':>7}")
    if args.json:
        meta = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats}
        args.json.write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
