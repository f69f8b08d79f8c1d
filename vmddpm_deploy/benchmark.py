"""Side-by-side denoiser latency: the library behind ``vmddpm-deploy bench``.

Every target runs the same (x, t) batches in one process, its timed calls interleaved
round-robin with the other targets', so ratios between rows are meaningful even on a noisy
machine. GPU targets are timed with CUDA events, CPU targets
with ``perf_counter``. The rows a source can have are :data:`BENCH_ROWS`; :func:`bench_targets`
builds them, :func:`run_bench` times them.
"""

from __future__ import annotations

import re
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from vmddpm_deploy.choices import PRECISIONS
from vmddpm_deploy.diffusion import Denoiser, Sampler
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.ops import dispatch
from vmddpm_deploy.runtime.source import DenoiserSource, load_denoiser, tensorrt_runs_here
from vmddpm_deploy.runtime.torch_backend import cpu_has_native_bf16


def _skip_term_only(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    # The scan's cheapest possible stand-in with the same shapes: y = D * u.
    return (u.float() * D[None, :, None]).to(u.dtype)


#: Benchmark-only kernels: the selective scan replaced by its skip term ("scan-free floor"), so
#: a row measures the cost of everything in the network except the scan.
SCAN_FREE = SimpleNamespace(
    name="scan-free",
    selective_scan=_skip_term_only,
    cross_scan=dispatch.kernels_when_built().cross_scan,
    cross_merge=dispatch.kernels_when_built().cross_merge,
)


#: What each row of ``bench`` runs.
BENCH_ROWS = {
    "torch": "the checkpoint in eager PyTorch (native kernels when built)",
    "torch-fp16": "the same under the fp16 policy of denoiser.fp16.onnx (the eager twin of an fp16 engine)",
    "torch-bf16": "the checkpoint under bf16 autocast, channels_last (sample --precision bf16)",
    "torch-bf16-compiled": "torch-bf16 through torch.compile with weight freezing (its compile time: first call s)",
    "torch-reference": "eager PyTorch with the pure-PyTorch reference ops",
    "scan-free": "benchmark-only floor: torch with the selective scan replaced by its skip term D*u",
    "scan-free-bf16": "the same floor under bf16 autocast",
    "onnxruntime": "the export's portable graph in ONNX Runtime",
    "tensorrt-fp32": "the export's fp32 engine for this GPU, one CUDA graph replayed per batch size",
    "tensorrt-fp16": "the export's fp16 engine for this GPU, one CUDA graph replayed per batch size",
    "tensorrt-fp32-enqueue": "the fp32 engine with plain enqueue (no CUDA graph)",
    "tensorrt-fp16-enqueue": "the fp16 engine with plain enqueue (no CUDA graph)",
}
#: Rows that run the checkpoint itself (for an export dir: the unchanged one its manifest names).
CHECKPOINT_ROWS = ("torch", "torch-fp16", "torch-bf16", "torch-bf16-compiled", "torch-reference", "scan-free",
                   "scan-free-bf16")


@dataclass
class BenchTarget:
    """One row family: a denoiser and the op kernels it runs under (None: normal dispatch)."""

    name: str
    denoiser: Denoiser
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    kernels: SimpleNamespace | None = None
    dtype: torch.dtype = torch.float32

    def context(self) -> AbstractContextManager:
        return dispatch.using(self.kernels) if self.kernels is not None else nullcontext()


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    p99_ms: float
    iters: int


def default_rows(source: DenoiserSource, device: str = "cpu") -> list[str]:
    """The rows ``bench`` times when none are named: what runs ``source`` here (bf16 on a CPU with
    native bf16), with the floor (for a checkpoint) or ONNX Runtime and the engines (for an export)."""
    has_checkpoint = source.torch_checkpoint is not None
    rows = ["torch", "torch-reference"] if has_checkpoint else []
    if has_checkpoint and device == "cpu" and cpu_has_native_bf16():
        rows.insert(1, "torch-bf16")
    if source.manifest is None:
        return [*rows, "scan-free"]
    rows.append("onnxruntime")
    if tensorrt_runs_here(source):
        precisions = {entry.precision for entry in source.manifest.engines.values()}
        rows += [f"tensorrt-{precision}" for precision in PRECISIONS if precision in precisions]
    return rows


def check_row_names(names: Sequence[str]) -> list[str]:
    """``names`` when each is a row of :data:`BENCH_ROWS`; the one-line error for the first that is not."""
    unknown = [name for name in names if name not in BENCH_ROWS]
    if unknown:
        raise InvalidArgumentError(f"unknown backend {unknown[0]!r} in --backends; choose from {', '.join(BENCH_ROWS)}")
    return list(names)


def bench_targets(source: DenoiserSource, names: Sequence[str], device: str = "cpu") -> list[BenchTarget]:
    """One target per row name of :data:`BENCH_ROWS` (torch rows of one precision share a model)."""
    check_row_names(names)
    checkpoint = source.torch_checkpoint
    needs_checkpoint = [name for name in names if name in CHECKPOINT_ROWS]
    if needs_checkpoint and checkpoint is None:
        raise InvalidArgumentError(
            f"the {needs_checkpoint[0]} row needs the checkpoint that {source.path} was exported from, which is "
            "gone or changed; bench the checkpoint itself, or use --backends onnxruntime (and tensorrt-* rows)"
        )
    from vmddpm_deploy.runtime.torch_backend import TorchDenoiser

    torch_models: dict[tuple[str, bool], TorchDenoiser] = {}

    def torch_model(precision: str, compile: bool = False) -> TorchDenoiser:
        if (precision, compile) not in torch_models:
            torch_models[precision, compile] = TorchDenoiser(checkpoint, device, precision, compile=compile)
        return torch_models[precision, compile]

    # row -> (precision, compiled, kernels)
    torch_rows = {
        "torch": ("fp32", False, None),
        "torch-bf16": ("bf16", False, None),
        "torch-bf16-compiled": ("bf16", True, None),
        "torch-reference": ("fp32", False, dispatch.REFERENCE),
        "scan-free": ("fp32", False, SCAN_FREE),
        "scan-free-bf16": ("bf16", False, SCAN_FREE),
    }
    targets = []
    for name in names:
        if name == "torch-fp16":
            denoiser = torch_model("fp16")
            targets.append(BenchTarget(name, denoiser, denoiser.device, dtype=torch.float16))
        elif name in torch_rows:
            precision, compile, kernels = torch_rows[name]
            denoiser = torch_model(precision, compile)
            targets.append(BenchTarget(name, denoiser, denoiser.device, kernels))
        elif name == "onnxruntime":
            targets.append(BenchTarget(name, load_denoiser(source, name, device), torch.device(device)))
        else:
            targets.append(_tensorrt_target(source, name, device))
    return targets


def _tensorrt_target(source: DenoiserSource, name: str, device: str) -> BenchTarget:
    if source.manifest is None:
        raise InvalidArgumentError(
            f"the {name} row runs an export's engine; export {source.path} and build one first "
            f"(`vmddpm-deploy export`, then `vmddpm-deploy build-engine`)"
        )
    from vmddpm_deploy.runtime.tensorrt_backend import load_tensorrt_denoiser

    precision = name.split("-")[1]
    denoiser = load_tensorrt_denoiser(
        source.path, device, cuda_graphs=not name.endswith("-enqueue"), manifest=source.manifest, precision=precision
    )
    return BenchTarget(name, denoiser, denoiser.device)  # inputs on the engine's GPU: timed with CUDA events


def time_call(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor) -> float:
    """Milliseconds of one ``denoiser(x, t)``: CUDA events on a GPU, ``perf_counter`` on CPU."""
    if x.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        denoiser(x, t)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    denoiser(x, t)
    return 1000.0 * (time.perf_counter() - begin)


def latency_stats(times: Sequence[float]) -> LatencyStats:
    q = np.percentile(times, [90, 99])
    return LatencyStats(statistics.median(times), float(q[0]), float(q[1]), len(times))


def measure_calls(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, warmup: int, iters: int) -> LatencyStats:
    """Per-call latency of ``denoiser(x, t)`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        denoiser(x, t)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return latency_stats([time_call(denoiser, x, t) for _ in range(iters)])


def sampler_step_ms(sampler: Sampler, x: torch.Tensor, iters: int = 20) -> float:
    """Cost of the sampler's own arithmetic per step (the loop outside the denoiser)."""
    eps = torch.zeros_like(x)
    noise = torch.zeros_like(x)
    history = None
    begin = time.perf_counter()
    for k in range(iters):
        kk = k % len(sampler.timesteps)
        _, history = sampler.step(kk, x, eps, noise if sampler.needs_noise(kk) else None, history if kk else None)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return 1000.0 * (time.perf_counter() - begin) / iters


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for :func:`peak_memory_mb`: on CPU, Linux resets the process's peak RSS
    (VmHWM) when "5" is written to /proc/self/clear_refs."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak is then the process's since it started


def peak_memory_mb(device: torch.device) -> float:
    """The most memory held since :func:`reset_peak_memory`: allocated on the GPU, resident on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1]) / 1024
    except (OSError, TypeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def unrankable_rows(rows: Sequence[dict]) -> list[str]:
    """One line per pair of rows at one batch size whose medians differ by less than their calls
    spread (p90 over median): with so few or so noisy calls their order is chance."""
    lines = []
    for batch in dict.fromkeys(row["batch"] for row in rows):
        mine = sorted((row for row in rows if row["batch"] == batch), key=lambda row: row["median_ms"])
        for faster, slower in zip(mine, mine[1:]):
            gap = slower["median_ms"] / faster["median_ms"] - 1
            spread = max(row["p90_ms"] / row["median_ms"] - 1 for row in (faster, slower))
            if gap < spread:
                lines.append(
                    f"batch {batch}: {faster['backend']} and {slower['backend']} differ by {gap:.0%} but their calls "
                    f"spread by up to {spread:.0%} (p90 over median): too wide to rank them; raise --iters or "
                    "bench on a quieter machine"
                )
    return lines


@dataclass(frozen=True)
class ThreadReport:
    """How many threads torch uses here, how busy the machine is, and whether fewer would be faster now."""

    threads: int
    cores: int  # the CPUs this process may run on
    load: tuple[float, float, float]  # 1, 5 and 15 minute load averages
    probe_ms: float | None = None  # a probe convolution at ``threads`` threads, median
    probe_ms_one_thread: float | None = None  # the same at 1 thread

    @property
    def fewer_threads_faster(self) -> bool:
        return self.probe_ms is not None and self.probe_ms > 1.2 * self.probe_ms_one_thread

    def summary(self) -> str:
        text = f"{self.threads} torch threads on {self.cores} cores, load {' / '.join(f'{v:.1f}' for v in self.load)}"
        if self.probe_ms is not None:
            text += f"; probe conv {self.probe_ms:.1f} ms at {self.threads} threads, {self.probe_ms_one_thread:.1f} at 1"
        return text

    def advice(self) -> str | None:
        if not self.fewer_threads_faster:
            return None
        return (
            f"fewer threads are faster here now ({self.probe_ms:.1f} ms against {self.probe_ms_one_thread:.1f} ms "
            f"at 1 thread; load {self.load[0]:.1f} on {self.cores} cores): set OMP_NUM_THREADS=1 or lower"
        )


def thread_report(probe: bool = True, rounds: int = 5) -> ThreadReport:
    """The thread count and load, and (``probe``) a small convolution timed at that many threads and
    at 1, interleaved: on an oversubscribed machine torch's threads wait on each other and the
    multi-threaded time collapses, which the load average alone does not show."""
    import os

    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = tuple(os.getloadavg()) if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    if not probe or threads == 1:
        return ThreadReport(threads, cores, load)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 32, 32, generator=generator)
    weight = torch.randn(32, 32, 3, 3, generator=generator)
    times: dict[int, list[float]] = {threads: [], 1: []}
    try:
        for _ in range(rounds):
            for count in (threads, 1):
                torch.set_num_threads(count)
                begin = time.perf_counter()
                torch.nn.functional.conv2d(x, weight, padding=1)
                times[count].append(1000.0 * (time.perf_counter() - begin))
    finally:
        torch.set_num_threads(threads)
    return ThreadReport(threads, cores, load, statistics.median(times[threads]), statistics.median(times[1]))


def run_bench(
    targets: Sequence[BenchTarget],
    image_shape: tuple[int, int, int],
    batch_sizes: Sequence[int],
    sampler: Sampler,
    warmup: int,
    iters: int,
    baseline: str,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One row per (target, batch size): latency, images/s of a full run, peak memory, speedup.

    Within a batch size the timed calls go round-robin over the targets (after each target's
    warm-up), so a burst of load from elsewhere on a shared machine slows every row alike and
    the speedups, the numbers worth reading there, hold; timed one row after another, two runs
    of the same command moved the torch / scan-free ratio by 15%. Peak memory: the most held
    during the target's own calls (the peak is reset before each), allocated on a GPU, resident
    on CPU (the whole process's, so every row includes the weights of all the rows' models).

    A full run's images/s is ``batch / (steps * (median call + sampler step))``: the sampling
    loop adds nothing else per step, so this avoids re-running slow rows end to end.
    """
    rows = []
    steps = len(sampler.timesteps)
    generator = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        x_cpu = torch.randn(batch, *image_shape, generator=generator)
        t_cpu = torch.randint(0, 1000, (batch,), generator=generator)
        inputs = [(x_cpu.to(target.device, target.dtype), t_cpu.to(target.device)) for target in targets]
        peaks, first_calls = [], []
        for target, (x, t) in zip(targets, inputs, strict=True):
            reset_peak_memory(target.device)
            with target.context():
                # The first call at a shape pays one-off costs (torch.compile's compilation, oneDNN's
                # kernel selection, CUDA graph capture): reported apart, never in the timed calls.
                first_calls.append(time_call(target.denoiser, x, t) / 1000.0)
                for _ in range(warmup):
                    target.denoiser(x, t)
            if target.device.type == "cuda":
                torch.cuda.synchronize(target.device)
            peaks.append(peak_memory_mb(target.device))
        times: list[list[float]] = [[] for _ in targets]
        for _ in range(iters):
            for i, (target, (x, t)) in enumerate(zip(targets, inputs, strict=True)):
                reset_peak_memory(target.device)
                with target.context():
                    times[i].append(time_call(target.denoiser, x, t))
                peaks[i] = max(peaks[i], peak_memory_mb(target.device))
        for target, (x, _), target_times, peak, first_call in zip(
            targets, inputs, times, peaks, first_calls, strict=True
        ):
            stats = latency_stats(target_times)
            step_ms = sampler_step_ms(sampler, x)
            row = {
                "backend": target.name,
                "batch": batch,
                **asdict(stats),
                "sampler_step_ms": step_ms,
                "images_per_second": batch / (steps * (stats.median_ms + step_ms) / 1000.0),
                "peak_memory_mb": peak,
                "first_call_seconds": first_call,
            }
            rows.append(row)
            if on_row is not None:
                on_row(row)
    base = {r["batch"]: r["median_ms"] for r in rows if r["backend"] == baseline}
    for row in rows:
        row["speedup_vs_" + baseline] = base[row["batch"]] / row["median_ms"] if row["batch"] in base else None
    return rows
