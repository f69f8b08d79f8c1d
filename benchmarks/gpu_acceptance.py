"""One-shot GPU acceptance run: build, parity, op bandwidth, denoiser latency, 1000-image sampling.

Prepared for a machine with one NVIDIA GPU, its own torch (CUDA), nvcc, CMake, ninja,
scikit-build-core, onnx and onnxruntime, no TensorRT and no network. From the repository root:

    python benchmarks/gpu_acceptance.py --out acceptance/            # the full run (< 8 min on one H200)
    python benchmarks/gpu_acceptance.py --out acceptance/ --quick    # every stage, smaller (about 2 min)
    python benchmarks/gpu_acceptance.py --out smoke/ --cpu-smoke     # CI: the stages on CPU, tiny shapes

Stages, each with a time budget (seconds; ``--quick`` and ``--cpu-smoke`` shrink the work, not
the rules), each reported ``ok``, ``failed`` or ``skipped`` with a reason:

  build      ``pip install --no-deps --no-build-isolation -e .`` with VMDDPM_CUDA=ON and
             CUDAARCHS from nvidia-smi's compute capability (SASS + PTX for it; PTX of the newest
             architecture nvcc knows when nvcc does not know the GPU). ``--cpu-smoke``: configure
             plugins/ with the same settings and compile the CUDA kernels only (``--arch``,
             default 90), and record the SASS / PTX targets nvcc was given for each object.
  parity     tests/ops/test_native_cuda.py (the CUDA kernels against the reference).
  ops        device-to-device copy bandwidth (torch), then the CUDA selective scan (bench_ops.py's
             CUDA case and byte count) and cross_scan / cross_merge, as GB/s and % of that copy.
  denoiser   tiny and small, batch 1/16/64: native kernels, reference ops, scan-free floor
             (vmddpm_deploy.benchmark's kernels), fp32 and fp16 / bf16 autocast, eager and
             CUDA-graph replay. Random ``init`` weights.
  sampling   ``vmddpm-deploy sample`` of 1000 ``small`` images, DDIM 50, torch backend on the
             GPU; images/s from the job summary.

Writes ``acceptance.json`` (format ``vmddpm-deploy-gpu-acceptance/1``) and ``acceptance.md``
into --out. Exit status 0 when no stage failed, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMAT = "vmddpm-deploy-gpu-acceptance/1"
STAGES = ("build", "parity", "ops", "denoiser", "sampling")
STATUSES = ("ok", "failed", "skipped")
# Seconds per stage; they add up to 7 minutes, leaving one of the eight for start-up and writing.
BUDGETS = {"build": 150, "parity": 60, "ops": 45, "denoiser": 120, "sampling": 45}
QUICK_BUDGETS = {"build": 150, "parity": 60, "ops": 20, "denoiser": 45, "sampling": 20}
SMOKE_BUDGETS = {"build": 120, "parity": 30, "ops": 10, "denoiser": 20, "sampling": 30}


class StageSkipped(Exception):
    """A stage that cannot run here; the message says why."""


class Deadline:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def passed(self) -> bool:
        return self.left() <= 0


# --- settings ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", type=Path, required=True, help="directory for acceptance.json and acceptance.md (and the stages' files)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="every stage with less work")
    mode.add_argument("--cpu-smoke", action="store_true", help="the stages on CPU with tiny shapes (CI); the build compiles the CUDA kernels only")
    parser.add_argument("--arch", help="CUDA compute capability to build for, e.g. 90 or 9.0 (default: nvidia-smi's; --cpu-smoke: 90)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        parser.error(f"unknown stage {unknown[0]!r} in --stages; choose from {', '.join(STAGES)}" if unknown else "--stages names no stage")
    args.stages = stages
    if args.arch is not None:
        if not re.fullmatch(r"\d+(\.\d)?", args.arch):
            parser.error(f"--arch {args.arch!r}: give a compute capability such as 90 or 9.0")
        args.arch = args.arch.replace(".", "")
    args.mode = "cpu-smoke" if args.cpu_smoke else "quick" if args.quick else "full"
    args.budgets = {"cpu-smoke": SMOKE_BUDGETS, "quick": QUICK_BUDGETS, "full": BUDGETS}[args.mode]
    return args


def gpu_compute_capability() -> str | None:
    """``"90"`` for the first GPU nvidia-smi lists; None without nvidia-smi or a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    return lines[0].strip().replace(".", "") if result.returncode == 0 and lines else None


def nvcc_architectures() -> list[int]:
    """The compute capabilities this nvcc compiles for (``nvcc --list-gpu-arch``)."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)
    if nvcc is None:
        return []
    result = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=False)
    return sorted({int(m) for m in re.findall(r"compute_(\d+)", result.stdout)})


def cuda_architectures(arch: str, known: list[int]) -> tuple[str, str]:
    """CMake CUDA architectures for compute capability ``arch`` and how they were chosen: SASS and
    PTX for it when nvcc knows it, else PTX of the newest architecture nvcc knows (the driver
    compiles that for the GPU when the library loads)."""
    if not known or int(arch) in known:
        return arch, f"sm_{arch} SASS + compute_{arch} PTX"
    older = [a for a in known if a <= int(arch)] or known
    return f"{older[-1]}-virtual", f"nvcc does not know sm_{arch}: compute_{older[-1]} PTX only, compiled by the driver at load"


# --- stages --------------------------------------------------------------------------------------


def run_command(command: list[str], deadline: Deadline, log: Path, env: dict | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    timeout = max(1.0, deadline.left())
    try:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        log.write_text(f"$ {' '.join(command)}\n(timed out after {timeout:.0f} s)\n{error.stdout or ''}\n{error.stderr or ''}")
        raise RuntimeError(f"{command[0]} ... ran past the stage budget ({timeout:.0f} s left); see {log.name}") from None
    log.write_text(f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    return result


def stage_build(args, out: Path, deadline: Deadline) -> dict:
    known = nvcc_architectures()
    if not known:
        raise StageSkipped("nvcc not found (PATH, /usr/local/cuda/bin): the CUDA kernels cannot be built")
    arch = args.arch or ("90" if args.cpu_smoke else gpu_compute_capability())
    if arch is None:
        raise StageSkipped("no GPU listed by nvidia-smi and no --arch given")
    archs, how = cuda_architectures(arch, known)
    env = {**os.environ, "VMDDPM_CUDA": "ON", "CUDAARCHS": archs}
    result = {"arch": arch, "cuda_architectures": archs, "how": how, "nvcc_architectures": known}
    if args.cpu_smoke and shutil.which("ninja") is None:
        raise StageSkipped("ninja not found: the compile-only build names the kernels' object files as targets, which needs Ninja")
    if not args.cpu_smoke:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(REPO_ROOT)]
        done = run_command(command, deadline, out / "build.log", env)
        if done.returncode != 0:
            raise RuntimeError(f"pip install -e . failed ({done.returncode}); see build.log")
        info = run_command([sys.executable, "-c", "from vmddpm_deploy.ops import native_library as n; print(n.describe())"], deadline, out / "build-info.log")
        result["build_info"] = info.stdout.strip()
        return result
    # CI: the same settings, compile only: the two CUDA sources of the ops library.
    build = Path(tempfile.mkdtemp(prefix="acceptance-build-", dir=out))
    configure = ["cmake", "-S", str(REPO_ROOT / "plugins"), "-B", str(build), "-G", "Ninja", "-DVMDDPM_CUDA=ON"]
    done = run_command(configure, deadline, out / "build-configure.log", env)
    if done.returncode != 0:
        raise RuntimeError(f"cmake configure failed ({done.returncode}); see build-configure.log")
    objects = [f"ops/CMakeFiles/vmddpm_ops.dir/cuda/{name}.cu.o" for name in ("selective_scan", "cross_ops")]
    done = run_command(["cmake", "--build", str(build), "--target", *objects], deadline, out / "build.log", env)
    if done.returncode != 0:
        raise RuntimeError(f"compiling the CUDA kernels failed ({done.returncode}); see build.log")
    # What nvcc was asked to put in each object: SASS (sm_XX) and PTX (compute_XX) targets.
    result["objects"] = {}
    for name in objects:
        commands = subprocess.run(["ninja", "-C", str(build), "-t", "commands", name], capture_output=True, text=True, check=False).stdout
        targets = re.findall(r",code=\[?([\w,]+)\]?", commands.strip().splitlines()[-1] if commands.strip() else "")
        result["objects"][Path(name).name] = sorted({t for group in targets for t in group.split(",")})
    shutil.rmtree(build, ignore_errors=True)
    return result


def stage_parity(args, out: Path, deadline: Deadline) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise StageSkipped(f"no CUDA GPU visible to torch {torch.__version__}: the CUDA parity tests need one")
    command = [sys.executable, "-m", "pytest", "tests/ops/test_native_cuda.py", "-q", "-p", "no:cacheprovider", "-x"]
    done = run_command(command, deadline, out / "parity.log")
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout.splitlines()[-1] if done.stdout else "")}
    if done.returncode != 0:
        raise RuntimeError(f"tests/ops/test_native_cuda.py: {counts or 'no summary'}; see parity.log")
    return counts


def cuda_ms(run: Callable[[], object], iters: int, device) -> float:
    """Median milliseconds of ``run`` (CUDA events on a GPU, perf_counter on CPU), after one warm-up."""
    import torch

    run()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            run()
            times.append(1e3 * (time.perf_counter() - begin))
    return statistics.median(times)


def stage_ops(args, out: Path, deadline: Deadline) -> dict:
    import torch

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from bench_ops import CUDA_CASE, ROUTES, scan_inputs

    from vmddpm_deploy.ops import native, native_library
    from vmddpm_deploy.ops.reference import cross_merge_ref, cross_scan_ref, selective_scan_ref

    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StageSkipped(f"no CUDA GPU visible to torch {torch.__version__}")
    if not native_library.available():
        raise StageSkipped("the native library is not built (the build stage failed or was skipped)")
    iters = 3 if args.cpu_smoke else 10 if args.quick else 30
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # The device's copy bandwidth: read + write of one buffer, device to device.
    copy_bytes = (8 << 20) if args.cpu_smoke else (1 << 30)
    source = torch.empty(copy_bytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_ms = cuda_ms(lambda: target.copy_(source), iters, device)
    copy_gbps = 2 * copy_bytes / (copy_ms * 1e-3) / 1e9
    del source, target
    rows = [{"op": "copy (torch, device to device)", "shape": [copy_bytes], "dtype": "uint8", "ms": copy_ms, "gb_per_s": copy_gbps, "percent_of_copy": 100.0}]

    def row(op, shape, dtype, ms, moved):
        gbps = moved / (ms * 1e-3) / 1e9
        rows.append({"op": op, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "ms": ms, "gb_per_s": gbps, "percent_of_copy": 100.0 * gbps / copy_gbps})

    # The selective scan: bench_ops.py's CUDA case (tiny on CPU), checked against the reference first.
    batch, channels, state, length = (1, 8, 4, 64) if args.cpu_smoke else CUDA_CASE
    small = scan_inputs(2, 16, state, 64, dtype=torch.float16)
    torch.testing.assert_close(native.selective_scan(*(t.to(device) for t in small)).cpu(), selective_scan_ref(*small), rtol=1e-3, atol=1e-3)
    for dtype in (torch.float16, torch.float32):
        if deadline.passed():
            break
        inputs = scan_inputs(batch, channels, state, length, dtype=dtype, device=device)
        size = torch.finfo(dtype).bits // 8
        moved = size * (3 * batch * channels * length + 2 * batch * ROUTES * state * length) + 4 * (channels * state + 2 * channels)
        row("selective_scan (native)", (batch, channels, state, length), dtype, cuda_ms(lambda: native.selective_scan(*inputs), iters, device), moved)
    # cross_scan / cross_merge on the small preset's first level (64x64) at batch 16.
    b, d, h, w = (1, 4, 8, 8) if args.cpu_smoke else (16, 128, 64, 64)
    for dtype in (torch.float16, torch.float32):
        if deadline.passed():
            break
        x = torch.randn(b, d, h, w, device=device, dtype=dtype)
        ys = native.cross_scan(x, "regen")
        assert torch.equal(ys.cpu(), cross_scan_ref(x.cpu(), "regen"))
        torch.testing.assert_close(native.cross_merge(ys, h, w, "regen").float().cpu(), cross_merge_ref(ys.cpu(), h, w, "regen").float(), rtol=1e-3, atol=1e-3)
        size = torch.finfo(dtype).bits // 8
        moved = size * (1 + ROUTES) * b * d * h * w  # x once, ys (K routes) once
        row("cross_scan (native)", (b, d, h, w), dtype, cuda_ms(lambda: native.cross_scan(x, "regen"), iters, device), moved)
        row("cross_merge (native)", (b, ROUTES, d, h * w), dtype, cuda_ms(lambda: native.cross_merge(ys, h, w, "regen"), iters, device), moved)
        sync()
    return {"device": str(device), "copy_gb_per_s": copy_gbps, "rows": rows}


def make_checkpoint(preset_name: str, path: Path) -> Path:
    from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
    from vmddpm_deploy.diffusion import NoiseSchedule
    from vmddpm_deploy.model import preset

    if not path.is_file():
        save_checkpoint(init_checkpoint(preset(preset_name), NoiseSchedule(), seed=0), path)
    return path


def stage_denoiser(args, out: Path, deadline: Deadline) -> dict:
    import torch

    from vmddpm_deploy.benchmark import SCAN_FREE
    from vmddpm_deploy.checkpoint import load_checkpoint
    from vmddpm_deploy.ops import dispatch
    from vmddpm_deploy.runtime.torch_backend import TorchDenoiser

    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StageSkipped(f"no CUDA GPU visible to torch {torch.__version__}")
    if args.cpu_smoke:
        presets, batches, precisions, graph_modes, kernel_rows = ["tiny"], [1], ["fp32"], [False], ["native", "scan-free"]
    else:
        presets, batches = ["tiny", "small"], [1, 16, 64]
        precisions, graph_modes, kernel_rows = ["fp32", "fp16", "bf16"], [False, True], ["native", "reference", "scan-free"]
    kernels = {"native": dispatch.NATIVE, "reference": dispatch.REFERENCE, "scan-free": SCAN_FREE}
    autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}
    iters = 2 if args.cpu_smoke else 5 if args.quick else 20
    rows, skipped = [], []
    for preset_name in presets:
        checkpoint = load_checkpoint(make_checkpoint(preset_name, out / f"{preset_name}.pt"))
        model = TorchDenoiser(checkpoint, device, "fp32")
        shape = (checkpoint.config.in_channels, checkpoint.config.image_size, checkpoint.config.image_size)
        for batch in batches:
            x = torch.randn(batch, *shape, device=device)
            t = torch.randint(0, 1000, (batch,), device=device)
            for kernel_name in kernel_rows:
                for precision in precisions:
                    for graph in graph_modes:
                        config = {"preset": preset_name, "batch": batch, "kernels": kernel_name, "precision": precision, "cuda_graph": graph}
                        # The reference ops step through every token in Python: one batch size is enough.
                        if kernel_name == "reference" and (batch != batches[0] or graph):
                            skipped.append({**config, "reason": "reference ops: timed at batch 1 eagerly only (a Python loop over tokens)"})
                            continue
                        if deadline.passed():
                            skipped.append({**config, "reason": "stage budget spent"})
                            continue
                        rows.append({**config, **time_denoiser(model, x, t, kernels[kernel_name], autocast.get(precision), graph, 1 if kernel_name == "reference" else iters, device)})
    for row in rows:
        floor = next((r for r in rows if r.get("ms") and r["kernels"] == "scan-free" and all(r[k] == row[k] for k in ("preset", "batch", "precision", "cuda_graph"))), None)
        row["x_scan_free"] = row["ms"] / floor["ms"] if row.get("ms") and floor else None
    return {"device": str(device), "rows": rows, "skipped": skipped}


def time_denoiser(model, x, t, kernels, autocast_dtype, graph: bool, iters: int, device) -> dict:
    import contextlib

    import torch

    from vmddpm_deploy.ops import dispatch

    def call():
        with dispatch.using(kernels), (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()):
            return model(x, t)

    try:
        with torch.inference_mode():
            if not graph:
                return {"ms": cuda_ms(call, iters, device), "images_per_s": None}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    call()
            torch.cuda.current_stream().wait_stream(side)
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                call()
            return {"ms": cuda_ms(captured.replay, iters, device), "images_per_s": None}
    except Exception as error:  # a row that cannot run (capture refused, out of memory) says why
        return {"ms": None, "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]}


def stage_sampling(args, out: Path, deadline: Deadline) -> dict:
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        raise StageSkipped(f"no CUDA GPU visible to torch {torch.__version__}")
    preset_name, n, steps, device = ("tiny", 4, 2, "cpu") if args.cpu_smoke else ("small", 200 if args.quick else 1000, 50, "cuda")
    checkpoint = make_checkpoint(preset_name, out / f"{preset_name}.pt")
    samples = out / f"samples-{preset_name}"
    shutil.rmtree(samples, ignore_errors=True)
    command = [sys.executable, "-c", "from vmddpm_deploy.cli import main; main()", "sample", str(checkpoint), "--n", str(n), "--sampler", "ddim", "--steps", str(steps),
               "--backend", "torch", "--device", device, "--format", "npz", "--out", str(samples), "--quiet"]  # fmt: skip
    begin = time.monotonic()
    done = run_command(command, deadline, out / "sampling.log")
    wall = time.monotonic() - begin
    if done.returncode != 0:
        raise RuntimeError(f"vmddpm-deploy sample failed ({done.returncode}); see sampling.log")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"preset": preset_name, "n": n, "sampler": "ddim", "steps": steps, "device": device, "wall_s": wall, "images_per_s_wall": n / wall, "summary": summary}


STAGE_FUNCTIONS = {"build": stage_build, "parity": stage_parity, "ops": stage_ops, "denoiser": stage_denoiser, "sampling": stage_sampling}


# --- report --------------------------------------------------------------------------------------


def environment() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}", "memory_gib": props.total_memory / 2**30}
    except Exception as error:
        info["torch"] = f"not importable: {error}"
    return info


def markdown(report: dict) -> str:
    env = report["environment"]
    gpu = env.get("gpu") or {}
    where = f"{gpu['name']} (sm_{gpu['compute_capability'].replace('.', '')})" if gpu else "no GPU"
    lines = [f"# GPU acceptance ({report['mode']})", "", f"{where}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), Python {env['python']}", "", "| stage | status | seconds | budget s | note |", "|---|---|---:|---:|---|"]
    for name, stage in report["stages"].items():
        lines.append(f"| {name} | {stage['status']} | {stage['seconds']:.1f} | {stage['budget_s']} | {(stage['reason'] or '').replace('|', '/')} |")
    ops = report["stages"].get("ops", {}).get("results") or {}
    if ops.get("rows"):
        lines += ["", "| op | shape | dtype | ms | GB/s | % of copy |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['ms']:.3f} | {r['gb_per_s']:.1f} | {r['percent_of_copy']:.0f} |" for r in ops["rows"]]
    den = report["stages"].get("denoiser", {}).get("results") or {}
    if den.get("rows"):
        lines += ["", "| preset | batch | kernels | precision | CUDA graph | ms | x scan-free |", "|---|---:|---|---|---|---:|---:|"]
        for r in den["rows"]:
            ms = f"{r['ms']:.2f}" if r.get("ms") else r.get("error", "-")
            ratio = f"{r['x_scan_free']:.2f}" if r.get("x_scan_free") else "-"
            lines.append(f"| {r['preset']} | {r['batch']} | {r['kernels']} | {r['precision']} | {'yes' if r['cuda_graph'] else 'no'} | {ms} | {ratio} |")
    sampling = report["stages"].get("sampling", {}).get("results") or {}
    if sampling:
        lines += ["", f"Sampling: {sampling['n']} `{sampling['preset']}` images, DDIM {sampling['steps']}, {sampling['device']}: "
                  f"{sampling['images_per_s_wall']:.2f} images/s ({sampling['wall_s']:.1f} s wall, process start included)"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = {"format": FORMAT, "mode": args.mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(), "stages": {}}
    for name in STAGES:
        budget = args.budgets[name]
        entry = {"status": "skipped", "reason": "not in --stages", "seconds": 0.0, "budget_s": budget, "results": None}
        if name in args.stages:
            begin = time.monotonic()
            try:
                entry.update(status="ok", reason=None, results=STAGE_FUNCTIONS[name](args, out, Deadline(budget)))
            except StageSkipped as why:
                entry.update(status="skipped", reason=str(why))
            except Exception as error:
                (out / f"{name}.error.log").write_text(traceback.format_exc())
                entry.update(status="failed", reason=f"{type(error).__name__}: {error}"[:500])
            entry["seconds"] = time.monotonic() - begin
        report["stages"][name] = entry
        print(f"{name}: {entry['status']} ({entry['seconds']:.1f} s){': ' + entry['reason'] if entry['reason'] else ''}", flush=True)
    report["total_seconds"] = time.monotonic() - started
    (out / "acceptance.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "acceptance.md").write_text(markdown(report))
    print(f"wrote {out / 'acceptance.json'} and {out / 'acceptance.md'} in {report['total_seconds']:.0f} s")
    return 1 if any(stage["status"] == "failed" for stage in report["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
