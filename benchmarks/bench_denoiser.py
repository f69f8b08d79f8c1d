"""Denoiser latency per CPU backend, side by side in one run: torch eager with the reference ops,
torch with the native kernels, and ONNX Runtime on the portable graph, plus each preset's export
time and graph sizes. Every backend's eps is checked against torch-reference before it is timed,
so a fast wrong backend cannot post a number.

    python benchmarks/bench_denoiser.py [--presets tiny,small] [--batch-sizes 1,16] [--iters 10]
                                        [--reference-iters 2] [--json bench_denoiser.json] [--out DIR]

Random-weight checkpoints (latency does not depend on the weights). The torch-reference rows are
slow (a Python loop over every token), so ``--reference-iters`` times them with fewer calls and no
warm-up call. Rows report the median and p90 ms per call and the speedup over torch-reference
measured in the same run; the machine's other load moves all rows together, so read the ratios
(the load average at start and end is printed and saved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import onnxruntime
import torch

from vmddpm_deploy.benchmark import measure_calls
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export import export_checkpoint
from vmddpm_deploy.model import preset
from vmddpm_deploy.ops import dispatch, native_library
from vmddpm_deploy.runtime.source import load_denoiser, open_source

FP32_ATOL = 1e-4  # the export's fp32 parity bound at eps scale ~1 (runtime/parity.py)


def bench_preset(name: str, scratch: Path, batch_sizes: list[int], args) -> tuple[dict, list[dict]]:
    config = preset(name)
    ckpt = save_checkpoint(init_checkpoint(config, NoiseSchedule(), seed=0), scratch / f"{name}.pt")
    began = time.perf_counter()
    manifest = export_checkpoint(ckpt, scratch / name, force=True)
    export = {
        "preset": name,
        "export_seconds": round(time.perf_counter() - began, 1),
        "graph_mb": {kind: round(entry.bytes / 2**20, 2) for kind, entry in manifest.graphs.items()},
    }
    torch_denoiser = load_denoiser(open_source(ckpt), "torch")
    ort_denoiser = load_denoiser(open_source(scratch / name), "onnxruntime")
    backends = [  # (label, denoiser, kernels, warm-up calls, timed calls)
        ("torch-reference", torch_denoiser, dispatch.REFERENCE, 0, args.reference_iters),
        ("torch-native", torch_denoiser, dispatch.NATIVE, args.warmup, args.iters),
        ("onnxruntime", ort_denoiser, None, args.warmup, args.iters),
    ]
    rows = []
    generator = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=generator)
        t = torch.linspace(0, 999, batch).round().long()
        reference_eps, baseline = None, None
        for label, denoiser, kernels, warmup, iters in backends:
            with dispatch.using(kernels) if kernels is not None else nullcontext():
                eps = denoiser(x, t)
                if reference_eps is None:
                    reference_eps = eps
                error = (eps - reference_eps).abs().max().item()
                if error > FP32_ATOL:
                    raise SystemExit(f"{name} batch {batch}: {label} eps differs from torch-reference by {error:.2e}")
                stats = measure_calls(denoiser, x, t, warmup, iters)
            baseline = baseline or stats.median_ms
            row = {"preset": name, "batch": batch, "backend": label, "median_ms": round(stats.median_ms, 2),
                   "p90_ms": round(stats.p90_ms, 2), "iters": iters, "max_abs_vs_reference": error,
                   "speedup_vs_torch_reference": round(baseline / stats.median_ms, 2)}
            rows.append(row)
            print(f"  {name} batch {batch} {label}: median {row['median_ms']:.2f} ms", flush=True)
    return export, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before the fast rows")
    parser.add_argument("--iters", type=int, default=10, help="timed calls of the fast rows")
    parser.add_argument("--reference-iters", type=int, default=2, help="timed calls of the torch-reference rows")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--out", type=Path, help="keep the checkpoints and exports here (default: a temp dir)")
    args = parser.parse_args()

    native_library.library()  # fail now, with the reason, if the native kernels are not built
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),  # a shared machine: load above the core count inflates rows
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "native_cpu_isa": native_library.describe()["cpu_isa"],
    }
    print(f"{machine['cores']} cores, {machine['torch_threads']} torch threads, "
          f"load average {machine['load_average_at_start'][0]:.2f} at start")
    exports, rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        for name in args.presets.split(","):
            export, preset_rows = bench_preset(name, root, batch_sizes, args)
            exports.append(export)
            rows += preset_rows
    machine["load_average_at_end"] = os.getloadavg()

    print(f"\n{'preset':<8}{'batch':>6}  {'backend':<18}{'median ms':>11}{'p90 ms':>11}{'iters':>7}"
          f"{'x torch-reference':>19}")
    for row in rows:
        print(f"{row['preset']:<8}{row['batch']:>6}  {row['backend']:<18}{row['median_ms']:>11.2f}"
              f"{row['p90_ms']:>11.2f}{row['iters']:>7}{row['speedup_vs_torch_reference']:>19.2f}")
    print(f"\n{'preset':<8}{'export s':>10}  graph sizes (MB)")
    for entry in exports:
        sizes = ", ".join(f"{kind} {mb}" for kind, mb in entry["graph_mb"].items())
        print(f"{entry['preset']:<8}{entry['export_seconds']:>10}  {sizes}")
    print(f"load average {machine['load_average_at_end'][0]:.2f} at end")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "exports": exports}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
