"""One-shot GPU acceptance run: build, parity, op bandwidth, denoiser latency, 1000-image sampling.

Prepared for a machine with one NVIDIA GPU, its own torch (CUDA), nvcc, CMake, ninja,
scikit-build-core, onnx and onnxruntime, no TensorRT and no network. From the repository root,
with the interpreter the package is to be installed into (``benchmarks/gpu_run.sh`` is the whole
GPU session: it makes that interpreter, then runs the tests and this script):

    python benchmarks/gpu_acceptance.py --out acceptance/            # the full run
    python benchmarks/gpu_acceptance.py --out acceptance/ --quick    # every stage, smaller
    python benchmarks/gpu_acceptance.py --out smoke/ --cpu-smoke     # CI: the stages on CPU, tiny shapes

Stages, each with a time budget estimated from the work it does (``--quick`` and
``--cpu-smoke`` shrink the work and the estimates, not the rules); each is reported ``ok``,
``over budget`` (it finished, later than estimated), ``failed`` (an error, or stopped at
HARD_LIMIT_FACTOR times its budget) or ``skipped``, with a reason:

  build      ``pip install --no-deps --no-build-isolation -e .`` into the running interpreter, in a
             fresh build directory, with VMDDPM_CUDA=ON, nvcc and CMAKE_CUDA_ARCHITECTURES passed
             explicitly (a reused build tree keeps the architectures and the missing nvcc of its
             first configure): SASS + PTX for nvidia-smi's compute capability (``--arch``; 90 with
             ``--cpu-smoke``), PTX of the newest architecture nvcc knows when nvcc does not know
             the GPU. Records the architectures the installed library really holds (cuobjdump, or
             the fatbinary headers), so a PTX-JIT build cannot pass for native code.
  parity     tests/ops/test_native_cuda.py (the CUDA kernels against the reference).
  ops        device-to-device copy bandwidth (torch), then the CUDA selective scan (bench_ops.py's
             CUDA case and byte count) and cross_scan / cross_merge, as GB/s and % of that copy.
  denoiser   tiny and small, batch 1/16/64: native kernels, reference ops, scan-free floor
             (vmddpm_deploy.benchmark's kernels), fp32 and fp16 / bf16 autocast, eager and
             CUDA-graph replay. Random ``init`` weights.
  sampling   ``vmddpm-deploy sample`` of 1000 ``small`` images, DDIM 50, torch backend on the
             GPU, at the command's defaults otherwise; images/s from the job summary and from the
             wall clock (process start included). Its budget comes from the denoiser stage's
             measured call time when that stage ran.

The build installs the package while this script runs, and an editable install's import hook is
only read when an interpreter starts: so this process never imports vmddpm_deploy, and every stage
that does runs in a fresh interpreter (this script with ``--worker STAGE``, or pytest, or the CLI).

Writes ``acceptance.json`` (format ``vmddpm-deploy-gpu-acceptance/2``) and ``acceptance.md``
into --out, and prints the performance risks the run measures with the next step for each that
measures low. Exit status 0 when no stage failed, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parents[1]
FORMAT = "vmddpm-deploy-gpu-acceptance/2"
STAGES = ("build", "parity", "ops", "denoiser", "sampling")
STATUSES = ("ok", "over budget", "failed", "skipped")
# Stages that import vmddpm_deploy: each runs as ``--worker STAGE`` in a fresh interpreter.
WORKER_STAGES = ("ops", "denoiser", "sampling")
# A stage still running at this multiple of its budget is stopped (and failed); one that finishes
# between its budget and this is "over budget".
HARD_LIMIT_FACTOR = 2.0

# Budgets, in seconds, from estimates of each stage's parts. Nothing here has been timed on a GPU
# yet, so these are guesses written down to be checked: the report gives each stage's seconds
# beside its budget. ``start`` is a fresh interpreter importing torch, initialising CUDA and
# importing the package.
ESTIMATES = {
    "full": {
        "start": 15,
        "build": ("fresh build tree on 16 cores: configure 15 s, CPU library 20 s, two CUDA sources for one architecture 50 s", 90),
        "parity": ("pytest start 15 s + about 320 CUDA cases, each with its reference on the CPU, on 8 workers", 45),
        "ops": ("start 15 s + 31 copies of 1 GiB, 2 x 31 scans of (8, 1536, 16, 4096), 4 x 31 cross ops: a few s", 25),
        "denoiser": ("start 15 s + 2 presets x 3 batches x 12 rows x 11 calls (~15 ms each) + 2 reference calls at ~5 s", 60),
    },
    # CI: two shared cores, everything on the CPU, the CUDA kernels compiled for sm_90 only (the
    # README's GPU section has what it took there).
    "cpu-smoke": {
        "start": 20,
        "build": ("fresh build tree on 2 cores: CPU library with its AVX2/AVX-512 variants, two CUDA sources for sm_90", 200),
        "parity": ("skipped without a GPU", 30),
        "ops": ("start 20 s + tiny shapes", 30),
        "denoiser": ("start 20 s + tiny at batch 4, 2 rows x 3 calls at ~1.5 s", 35),
    },
}
# --quick: the full run's build and parity, less of the timings.
ESTIMATES["quick"] = {
    **ESTIMATES["full"],
    "ops": ("start 15 s + 11 of each timing", 20),
    "denoiser": ("start 15 s + the full run's rows at 6 calls each", 45),
}
# The sampling job per mode: images, DDIM steps and the CLI's default torch batch size for them
# (16, or n when smaller: vmddpm_deploy.runtime.batching).
SAMPLING_JOBS = {"full": (1000, 50, 16), "quick": (200, 50, 16), "cpu-smoke": (4, 2, 4)}
SAMPLING_PRESET = {"full": "small", "quick": "small", "cpu-smoke": "tiny"}
# sampling: start-up (this worker, then the CLI) plus its denoiser calls at the measured (or
# assumed) time per call, with this margin.
SAMPLING_MARGIN = 1.5
# ms per call of the sampling stage's denoiser (SAMPLING_PRESET at SAMPLING_JOBS' batch, native,
# fp32, eager), assumed when the denoiser stage did not time it.
ASSUMED_CALL_MS = {"full": 8.0, "quick": 8.0, "cpu-smoke": 2000.0}

# What the run must measure because it may come out low, and what to do then. Each ``measure``
# names the ops rows whose % of the device-to-device copy is compared with ``goal_percent``.
PERFORMANCE_RISKS = (
    {
        "name": "selective scan",
        "risk": "the CUDA scan parallelises only over batch x channels x state groups and runs the sequence "
        "length L serially inside a block: about 6 warps per SM at (8, 1536, 16, 4096), estimated at ~30% "
        "of copy bandwidth",
        "measure": ("selective_scan (native)",),
        "goal_percent": 60.0,
        "next_step": "a chunked scan over L with a carry pass between chunks, as mamba-ssm's kernel does, so that "
        "the chunks of one sequence run in parallel",
    },
    {
        "name": "cross scan / cross merge",
        "risk": "routes 1 and 3 of cross_scan / cross_merge walk the image by columns, so their gathers read with "
        "a stride of W (uncoalesced)",
        "measure": ("cross_scan (native)", "cross_merge (native)"),
        "goal_percent": 60.0,
        "next_step": "a shared-memory tile transpose for the column routes, so that global reads and writes are "
        "both row-contiguous",
    },
)


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
    mode.add_argument("--cpu-smoke", action="store_true", help="the stages on CPU with tiny shapes (CI); the build still compiles the CUDA kernels")
    parser.add_argument("--arch", help="CUDA compute capability to build for, e.g. 90 or 9.0 (default: nvidia-smi's; --cpu-smoke: 90)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop the whole run by then: a stage is cut at the time left, later ones are skipped (the report is written after every stage)")  # fmt: skip
    parser.add_argument("--worker", choices=WORKER_STAGES, help=argparse.SUPPRESS)  # one stage, in this fresh interpreter
    parser.add_argument("--budget", type=float, default=None, help=argparse.SUPPRESS)  # the worker's stage budget
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
    if args.time_limit is not None and args.time_limit <= 0:
        parser.error(f"--time-limit {args.time_limit:g}: give a positive number of seconds")
    args.mode = "cpu-smoke" if args.cpu_smoke else "quick" if args.quick else "full"
    return args


def mode_flags(args: argparse.Namespace) -> list[str]:
    """The command-line flags that select ``args``' mode, for a worker."""
    return {"cpu-smoke": ["--cpu-smoke"], "quick": ["--quick"], "full": []}[args.mode]


def budget_for(mode: str, stage: str, earlier: dict | None = None) -> tuple[float, str]:
    """Seconds the stage is expected to take in ``mode`` and how that was estimated. ``earlier``:
    the stages already reported (the sampling budget uses the denoiser's measured call time)."""
    estimates = ESTIMATES[mode]
    if stage != "sampling":
        basis, seconds = estimates[stage]
        return float(seconds), basis
    n, steps, batch = SAMPLING_JOBS[mode]
    calls = math.ceil(n / batch) * steps
    measured = None
    if earlier:
        rows = ((earlier.get("denoiser") or {}).get("results") or {}).get("rows") or []
        measured = next((r["ms"] for r in rows if r.get("ms") and (r["preset"], r["batch"], r["kernels"], r["precision"], r["cuda_graph"])
                         == (SAMPLING_PRESET[mode], batch, "native", "fp32", False)), None)  # fmt: skip
    call_ms = measured if measured is not None else ASSUMED_CALL_MS[mode]
    work = calls * call_ms / 1e3 * SAMPLING_MARGIN
    seconds = 2 * estimates["start"] + work
    source = "measured by the denoiser stage" if measured is not None else "assumed: the denoiser stage did not time it"
    return seconds, (f"2 starts x {estimates['start']} s + {calls} denoiser calls (batch {batch}) x {call_ms:.2f} ms ({source}) "
                     f"x {SAMPLING_MARGIN} margin")  # fmt: skip


def gpu_compute_capability() -> str | None:
    """``"90"`` for the first GPU nvidia-smi lists; None without nvidia-smi or a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    return lines[0].strip().replace(".", "") if result.returncode == 0 and lines else None


def cuda_tool(name: str) -> str | None:
    """A CUDA toolkit program from PATH or CUDA's default home."""
    default = Path("/usr/local/cuda/bin") / name
    return shutil.which(name) or (str(default) if default.is_file() else None)


def nvcc_architectures() -> list[int]:
    """The compute capabilities this nvcc compiles for (``nvcc --list-gpu-arch``)."""
    nvcc = cuda_tool("nvcc")
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


# --- what a built library holds -------------------------------------------------------------------

FATBIN_MAGIC = 0xBA55ED50
FATBIN_PTX, FATBIN_ELF = 1, 2


def fatbin_architectures(library: Path) -> dict[str, list[str]]:
    """The machine code (``sm_XX``) and PTX (``compute_XX``) targets in a library's CUDA fatbinaries,
    read from their headers: a 16-byte header (magic, version 1, header size, size of the entries),
    then per entry a header with its kind at offset 0, its header size at 4, its padded payload
    size at 8 and its architecture at 28 (what cuobjdump --list-elf / --list-ptx print)."""
    data = library.read_bytes()
    sass, ptx = set(), set()
    position = data.find(struct.pack("<I", FATBIN_MAGIC))
    while position >= 0:
        _, version, header_size, entries_size = struct.unpack_from("<IHHQ", data, position)
        end = position + header_size + entries_size
        if version != 1 or header_size != 16 or end > len(data):
            position = data.find(struct.pack("<I", FATBIN_MAGIC), position + 4)  # bytes that only look like a header
            continue
        entry = position + header_size
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHII", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            if kind == FATBIN_ELF:
                sass.add(f"sm_{arch}")
            elif kind == FATBIN_PTX:
                ptx.add(f"compute_{arch}")
            if entry_header == 0:
                break
            entry += entry_header + payload
        position = data.find(struct.pack("<I", FATBIN_MAGIC), end)
    return {"sass": sorted(sass), "ptx": sorted(ptx)}


def compiled_architectures(library: Path) -> dict:
    """What ``library`` holds, by cuobjdump when it is installed, else by the fatbinary headers."""
    cuobjdump = cuda_tool("cuobjdump")
    if cuobjdump is None:
        return {**fatbin_architectures(library), "read_by": "fatbinary headers (no cuobjdump)"}
    found = {}
    for kind, flag in (("sass", "--list-elf"), ("ptx", "--list-ptx")):
        listing = subprocess.run([cuobjdump, flag, str(library)], capture_output=True, text=True, check=False).stdout
        found[kind] = sorted(set(re.findall(r"\.(sm_\d+a?)\.(?:cubin|ptx)", listing)))
    found["ptx"] = [name.replace("sm_", "compute_") for name in found["ptx"]]
    return {**found, "read_by": "cuobjdump --list-elf / --list-ptx"}


# --- stages run by this process (no package import) ---------------------------------------------


def run_command(command: list[str], timeout: float, log: Path, env: dict | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """``command`` with its output kept in ``log``; RuntimeError when it runs past ``timeout`` s,
    after killing it with every process it started (a worker's CLI or pytest workers would
    otherwise go on using the GPU)."""
    timeout = max(1.0, timeout)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        log.write_text(f"$ {' '.join(command)}\n(stopped after {timeout:.0f} s)\n{stdout}\n{stderr}")
        raise RuntimeError(f"{Path(command[0]).name} ... stopped after {timeout:.0f} s (the stage's limit: {HARD_LIMIT_FACTOR:g} x its budget, or what the run's --time-limit left); see {log.name}") from None
    log.write_text(f"$ {' '.join(command)}\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def stage_build(args, out: Path, limit: float) -> dict:
    known = nvcc_architectures()
    if not known:
        raise StageSkipped("nvcc not found (PATH, /usr/local/cuda/bin): the CUDA kernels cannot be built")
    arch = args.arch or ("90" if args.cpu_smoke else gpu_compute_capability())
    if arch is None:
        raise StageSkipped("no GPU listed by nvidia-smi and no --arch given")
    archs, how = cuda_architectures(arch, known)
    result = {"arch": arch, "cuda_architectures": archs, "how": how, "nvcc_architectures": known}
    build = out / "build"
    shutil.rmtree(build, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(REPO_ROOT),
               f"--config-settings=build-dir={build}",
               f"--config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES={archs}",
               f"--config-settings=cmake.define.CMAKE_CUDA_COMPILER={cuda_tool('nvcc')}"]  # fmt: skip
    begin = time.monotonic()
    done = run_command(command, limit, out / "build.log", {**os.environ, "VMDDPM_CUDA": "ON"})
    if done.returncode != 0:
        raise RuntimeError(f"pip install -e . failed ({done.returncode}); see build.log")
    # A fresh interpreter outside the repository, where only the install can provide the package.
    describe = "import json; from vmddpm_deploy.ops import native_library as n; print(json.dumps(n.describe(), default=str))"
    info = run_command([sys.executable, "-c", describe], limit - (time.monotonic() - begin), out / "build-info.log", cwd=out)
    if info.returncode != 0:
        raise RuntimeError(f"the installed package does not import in a fresh interpreter ({info.returncode}); see build-info.log")
    result["build_info"] = json.loads(info.stdout.strip().splitlines()[-1])
    if not result["build_info"].get("cuda_built"):
        raise RuntimeError(f"{result['build_info'].get('library')} was built without its CUDA kernels; see build.log")
    compiled = compiled_architectures(Path(result["build_info"]["library"]))
    native = f"sm_{arch}" in compiled["sass"]
    result["compiled"] = {**compiled, "native": native}
    if not archs.endswith("-virtual") and not native:
        raise RuntimeError(f"asked for sm_{arch} machine code but the library holds SASS {compiled['sass'] or 'none'} and PTX "
                           f"{compiled['ptx'] or 'none'}: the GPU would run JIT-compiled PTX")  # fmt: skip
    return result


def stage_parity(args, out: Path, limit: float) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise StageSkipped(f"no CUDA GPU visible to torch {torch.__version__}: the CUDA parity tests need one")
    command = [sys.executable, "-m", "pytest", "tests/ops/test_native_cuda.py", "-q", "-p", "no:cacheprovider", "-x"]
    environment = None
    if importlib.util.find_spec("xdist") is not None:
        # Each case computes its reference on the CPU (a Python loop over the sequence): spread
        # the cases over the machine's cores, two threads each.
        command += ["-n", str(max(1, min(8, (os.cpu_count() or 2) // 2)))]
        environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = run_command(command, limit, out / "parity.log", environment)
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout.splitlines()[-1] if done.stdout else "")}
    if done.returncode != 0:
        raise RuntimeError(f"tests/ops/test_native_cuda.py: {counts or 'no summary'}; see parity.log")
    return counts


def run_worker(args, name: str, out: Path, budget: float, limit: float) -> dict:
    """Stage ``name`` in a fresh interpreter (this script with --worker): its result file's content."""
    result_file = out / f"{name}.result.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-u", str(SCRIPT), "--out", str(out), *mode_flags(args), *(["--arch", args.arch] if args.arch else []),
               "--worker", name, "--budget", f"{budget:.1f}"]  # fmt: skip
    # Run from --out: from the repository root the source tree would import even without the install.
    done = run_command(command, limit, out / f"{name}.log", cwd=out)
    if not result_file.is_file():
        raise RuntimeError(f"the {name} worker exited {done.returncode} without a result; see {name}.log")
    return json.loads(result_file.read_text())


IN_PROCESS_STAGES = {"build": stage_build, "parity": stage_parity}

# --- stages run in a fresh interpreter (``--worker STAGE``) -------------------------------------


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

    cut = False  # whether the budget ran out before every row was timed
    # The selective scan: bench_ops.py's CUDA case (tiny on CPU), checked against the reference first.
    batch, channels, state, length = (1, 8, 4, 64) if args.cpu_smoke else CUDA_CASE
    small = scan_inputs(2, 16, state, 64, dtype=torch.float16)
    torch.testing.assert_close(native.selective_scan(*(t.to(device) for t in small)).cpu(), selective_scan_ref(*small), rtol=1e-3, atol=1e-3)
    for dtype in (torch.float16, torch.float32):
        if deadline.passed():
            cut = True
            break
        inputs = scan_inputs(batch, channels, state, length, dtype=dtype, device=device)
        size = torch.finfo(dtype).bits // 8
        moved = size * (3 * batch * channels * length + 2 * batch * ROUTES * state * length) + 4 * (channels * state + 2 * channels)
        row("selective_scan (native)", (batch, channels, state, length), dtype, cuda_ms(lambda: native.selective_scan(*inputs), iters, device), moved)
    # cross_scan / cross_merge on the small preset's first level (64x64) at batch 16.
    b, d, h, w = (1, 4, 8, 8) if args.cpu_smoke else (16, 128, 64, 64)
    for dtype in (torch.float16, torch.float32):
        if deadline.passed():
            cut = True
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
    return {"device": str(device), "copy_gb_per_s": copy_gbps, "rows": rows, "budget_spent": cut}


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
        # The sampling stage's batch, so that its budget comes from a measured call.
        presets, batches, precisions, graph_modes, kernel_rows = ["tiny"], [SAMPLING_JOBS["cpu-smoke"][2]], ["fp32"], [False], ["native", "scan-free"]
    else:
        presets, batches = ["tiny", "small"], [1, 16, 64]
        precisions, graph_modes, kernel_rows = ["fp32", "fp16", "bf16"], [False, True], ["native", "reference", "scan-free"]
    kernels = {"native": dispatch.NATIVE, "reference": dispatch.REFERENCE, "scan-free": SCAN_FREE}
    autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}
    iters = 2 if args.cpu_smoke else 5 if args.quick else 10
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
                        # The reference ops step through every token in Python, a few kernel launches
                        # each: one row (tiny, batch 1, fp32, eager) shows their cost.
                        if kernel_name == "reference" and (preset_name != presets[0] or batch != batches[0] or precision != "fp32" or graph):
                            skipped.append({**config, "reason": "reference ops: timed for tiny at batch 1, fp32, eagerly only (a Python loop over tokens)"})
                            continue
                        if deadline.passed():
                            skipped.append({**config, "reason": "stage budget spent"})
                            continue
                        rows.append({**config, **time_denoiser(model, x, t, kernels[kernel_name], autocast.get(precision), graph, 1 if kernel_name == "reference" else iters, device)})
    for row in rows:
        floor = next((r for r in rows if r.get("ms") and r["kernels"] == "scan-free" and all(r[k] == row[k] for k in ("preset", "batch", "precision", "cuda_graph"))), None)
        row["x_scan_free"] = row["ms"] / floor["ms"] if row.get("ms") and floor else None
    budget_spent = any(s["reason"] == "stage budget spent" for s in skipped)
    return {"device": str(device), "rows": rows, "skipped": skipped, "budget_spent": budget_spent}


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
    preset_name, device = SAMPLING_PRESET[args.mode], "cpu" if args.cpu_smoke else "cuda"
    n, steps, _ = SAMPLING_JOBS[args.mode]
    checkpoint = make_checkpoint(preset_name, out / f"{preset_name}.pt")
    samples = out / f"samples-{preset_name}"
    shutil.rmtree(samples, ignore_errors=True)
    # The CLI's defaults otherwise: its --batch-size is SAMPLING_JOBS' batch, which the budget assumes.
    command = [sys.executable, "-c", "from vmddpm_deploy.cli import main; main()", "sample", str(checkpoint), "--n", str(n), "--sampler", "ddim", "--steps", str(steps),
               "--backend", "torch", "--device", device, "--format", "npz", "--out", str(samples), "--quiet"]  # fmt: skip
    begin = time.monotonic()
    done = run_command(command, HARD_LIMIT_FACTOR * deadline.left(), out / "sampling-cli.log", cwd=out)
    wall = time.monotonic() - begin
    if done.returncode != 0:
        raise RuntimeError(f"vmddpm-deploy sample failed ({done.returncode}); see sampling-cli.log")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"preset": preset_name, "n": n, "sampler": "ddim", "steps": steps, "device": device, "wall_s": wall, "images_per_s_wall": n / wall, "summary": summary}


WORKER_FUNCTIONS = {"ops": stage_ops, "denoiser": stage_denoiser, "sampling": stage_sampling}


def worker_main(args) -> int:
    """Run one stage here and write ``STAGE.result.json``: status ok or skipped, or failed with the traceback in ``STAGE.error.log``."""
    out = args.out.resolve()
    name = args.worker
    try:
        entry = {"status": "ok", "reason": None, "results": WORKER_FUNCTIONS[name](args, out, Deadline(args.budget or ESTIMATES[args.mode]["start"]))}
    except StageSkipped as why:
        entry = {"status": "skipped", "reason": str(why), "results": None}
    except Exception as error:
        (out / f"{name}.error.log").write_text(traceback.format_exc())
        entry = {"status": "failed", "reason": f"{type(error).__name__}: {error}"[:500], "results": None}
    (out / f"{name}.result.json").write_text(json.dumps(entry, default=str) + "\n")
    return 0


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
    if shutil.which("nvidia-smi"):
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, check=False)
        info["driver"] = driver.stdout.strip().splitlines()[0] if driver.returncode == 0 and driver.stdout.strip() else None
    return info


def performance_risks(stages: dict) -> list[dict]:
    """PERFORMANCE_RISKS with what this run measured: each risk's rows as % of the copy, and the
    verdict (met, low: take the next step, or not measured)."""
    rows = ((stages.get("ops") or {}).get("results") or {}).get("rows") or []
    on_gpu = ((stages.get("ops") or {}).get("results") or {}).get("device", "").startswith("cuda")
    report = []
    for risk in PERFORMANCE_RISKS:
        measured = [{"op": r["op"], "dtype": r["dtype"], "percent_of_copy": r["percent_of_copy"]} for r in rows if r["op"] in risk["measure"]]
        if not measured or not on_gpu:
            verdict = "not measured: " + ("no GPU ops stage in this run" if not on_gpu else "its rows were not timed")
        elif min(m["percent_of_copy"] for m in measured) >= risk["goal_percent"]:
            verdict = f"met: every row at {risk['goal_percent']:.0f}% of the copy or more"
        else:
            low = min(measured, key=lambda m: m["percent_of_copy"])
            verdict = f"low ({low['op']} {low['dtype']} at {low['percent_of_copy']:.0f}% of the copy): next step, {risk['next_step']}"
        report.append({**risk, "measure": list(risk["measure"]), "measured": measured, "verdict": verdict})
    return report


def markdown(report: dict) -> str:
    env = report["environment"]
    gpu = env.get("gpu") or {}
    where = f"{gpu['name']} (sm_{gpu['compute_capability'].replace('.', '')}), driver {env.get('driver')}" if gpu else "no GPU"
    lines = [f"# GPU acceptance ({report['mode']})", "", f"{where}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), Python {env['python']}", "",
             "| stage | status | seconds | budget s | note |", "|---|---|---:|---:|---|"]  # fmt: skip
    for name, stage in report["stages"].items():
        note = stage["reason"] or ""
        if stage["status"] in ("ok", "over budget"):
            note = (note + "; " if note else "") + f"budget: {stage['budget_basis']}"
        lines.append(f"| {name} | {stage['status']} | {stage['seconds']:.1f} | {stage['budget_s']:.0f} | {note.replace('|', '/')} |")
    build = report["stages"].get("build", {}).get("results") or {}
    if build.get("compiled"):
        compiled = build["compiled"]
        kind = "native machine code" if compiled["native"] else "PTX only: the driver JIT-compiles it, not a native build"
        lines += ["", f"Built for sm_{build['arch']}: SASS {', '.join(compiled['sass']) or 'none'}, PTX {', '.join(compiled['ptx']) or 'none'} "
                      f"({kind}; read by {compiled['read_by']})"]  # fmt: skip
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
        summary = sampling["summary"]
        lines += ["", f"Sampling: {sampling['n']} `{sampling['preset']}` images, DDIM {sampling['steps']}, batch {summary['batch_size']}, {sampling['device']}: "
                      f"{summary['images_per_second'] or 0:.2f} images/s in the job ({summary['ms_per_denoiser_call']:.2f} ms per denoiser call), "
                      f"{sampling['images_per_s_wall']:.2f} images/s over {sampling['wall_s']:.1f} s wall (process start included)"]  # fmt: skip
    lines += ["", "Performance risks this run measures:", ""]
    for risk in report["performance_risks"]:
        lines.append(f"- **{risk['name']}** (goal {risk['goal_percent']:.0f}% of the copy): {risk['risk']}. This run: {risk['verdict']}. "
                     f"If low, next step: {risk['next_step']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path, started: float) -> None:
    """acceptance.json and acceptance.md, each written whole under a temporary name and renamed
    (this process cannot use vmddpm_deploy.atomic_write: it never imports the package)."""
    report["performance_risks"] = performance_risks(report["stages"])
    report["total_seconds"] = time.monotonic() - started
    for name, text in (("acceptance.json", json.dumps(report, indent=2, default=str) + "\n"), ("acceptance.md", markdown(report))):
        temporary = out / f".{name}.tmp"
        temporary.write_text(text)
        os.replace(temporary, out / name)


def run_stage(args, name: str, out: Path, stages: dict, time_left: float | None = None) -> dict:
    """Stage ``name``, stopped at HARD_LIMIT_FACTOR times its budget or at ``time_left`` seconds
    (the run's --time-limit), whichever comes first."""
    budget, basis = budget_for(args.mode, name, stages)
    entry = {"status": "skipped", "reason": "not in --stages", "seconds": 0.0, "budget_s": budget, "budget_basis": basis, "results": None}
    if name not in args.stages:
        return entry
    if time_left is not None and time_left < 1:
        entry["reason"] = "the run's --time-limit was reached before it"
        return entry
    limit = HARD_LIMIT_FACTOR * budget if time_left is None else min(HARD_LIMIT_FACTOR * budget, time_left)
    begin = time.monotonic()
    try:
        if name in WORKER_STAGES:
            entry.update(run_worker(args, name, out, budget, limit))
        else:
            entry.update(status="ok", reason=None, results=IN_PROCESS_STAGES[name](args, out, limit))
    except StageSkipped as why:
        entry.update(status="skipped", reason=str(why))
    except Exception as error:
        (out / f"{name}.error.log").write_text(traceback.format_exc())
        entry.update(status="failed", reason=f"{type(error).__name__}: {error}"[:500])
    entry["seconds"] = time.monotonic() - begin
    if entry["status"] == "ok":
        cut = (entry["results"] or {}).get("budget_spent") if isinstance(entry["results"], dict) else False
        if entry["seconds"] > budget or cut:
            entry.update(status="over budget", reason=f"took {entry['seconds']:.0f} s against {budget:.0f} s estimated" + ("; rows left untimed" if cut else ""))
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker_main(args)
    started = time.monotonic()
    report = {"format": FORMAT, "mode": args.mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(), "stages": {}}
    for name in STAGES:
        time_left = None if args.time_limit is None else args.time_limit - (time.monotonic() - started)
        entry = report["stages"][name] = run_stage(args, name, out, report["stages"], time_left)
        print(f"{name}: {entry['status']} ({entry['seconds']:.1f} s of {entry['budget_s']:.0f} s budgeted){': ' + entry['reason'] if entry['reason'] else ''}", flush=True)
        # After every stage, so that a run killed from outside still leaves what it measured.
        write_report(report, out, started)
    print("\nPerformance risks this run measures:")
    for risk in report["performance_risks"]:
        print(f"- {risk['name']}: {risk['risk']}.\n  goal {risk['goal_percent']:.0f}% of the copy; this run: {risk['verdict']}.\n  if low: {risk['next_step']}.")
    print(f"\nwrote {out / 'acceptance.json'} and {out / 'acceptance.md'} in {report['total_seconds']:.0f} s", flush=True)
    return 1 if any(stage["status"] == "failed" for stage in report["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
