"""Denoiser latency per backend, side by side in one run: torch eager with the reference ops, torch
with the native kernels, and ONNX Runtime on the portable graph — plus each preset's export time
and graph sizes.

    python benchmarks/bench_denoiser.py [--presets tiny,small] [--batch-sizes 1,16] [--iters 10]
                                        [--json bench_denoiser.json]

Random-weight checkpoints (latency does not depend on the weights). The torch-reference rows are
slow (a Python loop over every token): ``--reference-iters`` times them with fewer calls. Every
row reports the median and p90 ms per call and its speedup over torch-reference measured in the
same run; the machine's other load moves all rows together, so read the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from vmddpm_deploy.benchmark import measure_calls
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export import export_checkpoint
from vmddpm_deploy.model import preset
from vmddpm_deploy.ops import dispatch
from vmddpm_deploy.runtime.source import load_denoiser, open_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--reference-iters", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows, exports = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.presets.split(","):
            config = preset(name)
            ckpt = save_checkpoint(init_checkpoint(config, NoiseSchedule(), seed=0), Path(scratch) / f"{name}.pt")
            began = time.perf_counter()
            manifest = export_checkpoint(ckpt, Path(scratch) / name, dtypes=("fp32",), ops=("portable",))
            exports.append({
                "preset": name,
                "export_seconds": round(time.perf_counter() - began, 1),
                "portable_graph_mb": round(manifest.graph_path("portable").stat().st_size / 2**20, 2),
            })
            torch_denoiser = load_denoiser(open_source(ckpt), "torch")
            ort_denoiser = load_denoiser(open_source(Path(scratch) / name), "onnxruntime")
            backends = [
                ("torch-reference", torch_denoiser, dispatch.REFERENCE, args.reference_iters),
                ("torch-native", torch_denoiser, dispatch.NATIVE, args.iters),
                ("onnxruntime", ort_denoiser, None, args.iters),
            ]
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                x = torch.randn(batch, config.in_channels, config.image_size, config.image_size)
                t = torch.full((batch,), 500, dtype=torch.long)
                baseline = None
                for label, denoiser, kernels, iters in backends:
                    with dispatch.using(kernels) if kernels is not None else nullcontext():
                        stats = measure_calls(denoiser, x, t, min(args.warmup, iters), iters)
                    baseline = baseline or stats.median_ms
                    row = {"preset": name, "batch": batch, "backend": label, "median_ms": round(stats.median_ms, 2),
                           "p90_ms": round(stats.p90_ms, 2), "iters": iters,
                           "speedup_vs_torch_reference": round(baseline / stats.median_ms, 2)}
                    rows.append(row)
                    print(f"{name:6} batch {batch:3} {label:16} median {row['median_ms']:10.2f} ms  "
                          f"p90 {row['p90_ms']:10.2f} ms  x{row['speedup_vs_torch_reference']:.2f}", flush=True)
    for entry in exports:
        print(f"{entry['preset']:6} export {entry['export_seconds']} s, portable graph {entry['portable_graph_mb']} MB")
    if args.json:
        payload = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                   "rows": rows, "exports": exports}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
