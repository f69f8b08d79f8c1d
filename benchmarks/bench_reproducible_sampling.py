"""CPU sampling speed of the reproducible scheme against one multi-threaded call per batch, side by side.

    python benchmarks/bench_reproducible_sampling.py [--preset tiny] [--batch-size 16] [--steps 5]
                                                     [--threads 2] [--micro-batches 1,4] [--rounds 4]
                                                     [--precision fp32] [--json out.json]

``threaded``: what ``sample`` did before micro-batches: one denoiser call per batch of
``--batch-size`` rows on ``--threads`` intra-op threads (the images depend on both).
``micro-M``: what ``sample`` does on the CPU: calls of M rows, ``--threads`` of them side by side
on one intra-op thread each (the images depend on M only). Each round times every scheme once on
the same images (DDIM, eta 0.5), in turn, so the machine's other load moves them together; read
the ratios. Rows: median and best ms per sampler step for the whole batch, and the ratio of
medians to ``threaded``. Every micro-M scheme is also run at one thread and must give the same
bytes, or the script fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.generation import generate
from vmddpm_deploy.model import preset
from vmddpm_deploy.runtime.batching import CallPlan
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser


def sample(denoiser, sampler, shape, batch_size: int, calls: CallPlan | None, threads: int) -> torch.Tensor:
    torch.set_num_threads(threads)
    return torch.cat([x0 for _, x0 in generate(denoiser, sampler, 11, range(batch_size), shape, batch_size, calls=calls)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--micro-batches", default="1,4")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the torch backend's")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    config = preset(args.preset)
    shape = (config.in_channels, config.image_size, config.image_size)
    denoiser = TorchDenoiser(init_checkpoint(config, NoiseSchedule(), seed=0), precision=args.precision)
    sampler = make_sampler("ddim", NoiseSchedule(), args.steps, eta=0.5)
    schemes: dict[str, CallPlan | None] = {"threaded": None}
    for m in (int(text) for text in args.micro_batches.split(",")):
        schemes[f"micro-{m}"] = CallPlan(m, workers=args.threads, intra_op_threads=1)

    for name, calls in schemes.items():  # warm-up, and the bytes check
        x0 = sample(denoiser, sampler, shape, args.batch_size, calls, args.threads)
        if calls is not None and not torch.equal(x0, sample(denoiser, sampler, shape, args.batch_size,
                                                           CallPlan(calls.micro_batch), 1)):
            raise SystemExit(f"{name}: the bytes at {args.threads} threads differ from those at 1 thread")
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in schemes}
    for _ in range(args.rounds):
        for name, calls in schemes.items():
            start = time.perf_counter()
            sample(denoiser, sampler, shape, args.batch_size, calls, args.threads)
            times[name].append(1000 * (time.perf_counter() - start) / args.steps)
    base = statistics.median(times["threaded"])
    rows = [
        {"scheme": name, "median_ms_per_step": round(statistics.median(t), 1), "best_ms_per_step": round(min(t), 1),
         "ratio_to_threaded": round(statistics.median(t) / base, 3)}
        for name, t in times.items()
    ]
    result = {
        "preset": args.preset, "precision": args.precision, "batch_size": args.batch_size, "steps": args.steps, "threads": args.threads,
        "rounds": args.rounds, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)], "rows": rows,
    }
    for row in rows:
        print(f"{row['scheme']:>10}: {row['median_ms_per_step']:8.1f} ms/step median, {row['best_ms_per_step']:8.1f} best,"
              f" x{row['ratio_to_threaded']:.3f} of threaded")
    print(f"load average {result['load_average_start_end']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
