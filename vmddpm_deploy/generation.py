"""Generating images from any Denoiser, with per-sample seeding and fixed-shape denoiser calls.

Sample ``i`` of a run with seed ``s`` draws its initial noise and every step's noise from the
counter-based generator keyed by ``(s, i, stream)`` (:mod:`vmddpm_deploy.diffusion.noise`), so
its inputs do not depend on the batch it is drawn in. Its *output* depends on the batch only
through the number of rows the sampler and the denoiser run on: a backend's arithmetic can round
differently at another batch shape (and, on the CPU, another intra-op thread count), but at one
shape a row's result does not depend on its position or on the other rows (measured for torch
with native and reference ops and for ONNX Runtime; GroupNorm and LayerNorm are per sample).

So each batch is cut into micro-batches of a fixed number of rows, the last one padded with
copies of its last sample (dropped afterwards), and every micro-batch runs through the whole
sampler on its own: sample ``i`` is a function of ``(seed, i, micro_batch)`` and the backend,
whichever indices share its batch. On the CPU the micro-batches run side by side on worker
threads, each with one intra-op thread (torch releases the GIL inside its ops), so the thread
count changes the speed and not the bytes (:mod:`vmddpm_deploy.runtime.batching`). The C++
host pads a batch the same way (plugins/host/src/sampling_loop.cpp).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import torch

from vmddpm_deploy.diffusion import Denoiser, Sampler, gaussian_noise, run_sampler
from vmddpm_deploy.runtime.batching import CallPlan


class CallTimer:
    """Wraps a Denoiser and accumulates its call count and wall time (summed over the worker
    threads that call it side by side)."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        eps = self.denoiser(x, t)
        with self._lock:
            self.seconds += time.perf_counter() - start
            self.calls += 1
        return eps

    @property
    def ms_per_call(self) -> float:
        return 1000.0 * self.seconds / max(self.calls, 1)


class PrefetchedNoise:
    """Step noise of one batch, drawn one noisy step ahead on a worker thread.

    The noise is drawn on the host (numpy, the rule the C++ host reproduces), which can take as
    long as a GPU denoiser call of a small model. Drawn while the
    previous call runs, only an asynchronous copy from pinned memory stays in the loop. The values
    are :func:`gaussian_noise`'s: prefetching changes when they are made, not what they are.
    """

    def __init__(self, executor: ThreadPoolExecutor, seed: int, chunk: list[int], image_shape: tuple[int, ...],
                 noisy_steps: Sequence[int], device: torch.device):
        self.executor, self.seed, self.chunk, self.image_shape = executor, seed, chunk, image_shape
        self.device = device
        self.upcoming = iter(noisy_steps)
        self.pending: dict[int, Future] = {}
        self._draw_next()

    def _draw(self, k: int) -> torch.Tensor:
        noise = gaussian_noise(self.seed, self.chunk, k + 1, self.image_shape)
        return noise.pin_memory() if self.device.type == "cuda" else noise

    def _draw_next(self) -> None:
        k = next(self.upcoming, None)
        if k is not None:
            self.pending[k] = self.executor.submit(self._draw, k)

    def __call__(self, k: int) -> torch.Tensor:
        future = self.pending.pop(k, None) or self.executor.submit(self._draw, k)
        noise = future.result()
        self._draw_next()
        return noise.to(self.device, non_blocking=True)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count is ``count`` inside the block (it is process-wide; restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generate(
    denoiser: Denoiser,
    sampler: Sampler,
    seed: int,
    indices: Sequence[int],
    image_shape: tuple[int, int, int],
    batch_size: int,
    device: str | torch.device = "cpu",
    on_step: Callable[[float], None] | None = None,
    prefetch_noise: bool | None = None,
    calls: CallPlan | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(indices, x0)`` per batch of ``batch_size`` indices; x0: (len(indices), C, H, W)
    float32 in about [-1, 1].

    ``calls`` says how the batch is evaluated (None: as one micro-batch of ``batch_size`` rows on
    this thread): micro-batches of ``calls.micro_batch`` rows, a short one padded with copies of its
    last sample, ``calls.workers`` of them side by side, each worker thread with
    ``calls.intra_op_threads`` torch threads (see the module docstring). ``on_step(images)`` is
    called after every sampler step of every micro-batch with the (fractional) number of images
    that step completed, so a progress bar in images moves smoothly; with several workers it is
    called from their threads, one call at a time. ``prefetch_noise`` draws each step's noise ahead
    on a thread (:class:`PrefetchedNoise`); None: on a GPU device only (on the CPU the draw would
    take cores from the denoiser).
    """
    device = torch.device(device)
    calls = calls or CallPlan(batch_size)
    rows_per_call = calls.micro_batch
    noisy_steps = [k for k in range(len(sampler.timesteps)) if sampler.needs_noise(k)]
    if prefetch_noise is None:
        prefetch_noise = device.type == "cuda"
    report_lock = threading.Lock()

    def run_micro_batch(chunk: list[int], noise_pool: ThreadPoolExecutor | None) -> torch.Tensor:
        rows = chunk + chunk[-1:] * (rows_per_call - len(chunk))
        x_T = gaussian_noise(seed, rows, 0, image_shape).to(device)
        if noise_pool is not None:
            step_noise = PrefetchedNoise(noise_pool, seed, rows, image_shape, noisy_steps, device)
        else:
            def step_noise(k: int) -> torch.Tensor:
                return gaussian_noise(seed, rows, k + 1, image_shape).to(device)

        def callback(k: int, total: int) -> None:
            if on_step is not None:
                with report_lock:
                    on_step(len(chunk) / total)

        return run_sampler(sampler, denoiser, x_T, step_noise, callback=callback)[: len(chunk)]

    with ExitStack() as stack:
        noise_pool = None
        if prefetch_noise and noisy_steps:
            noise_pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="noise"))
        threads = calls.intra_op_threads
        if threads is not None:
            stack.enter_context(intra_op_threads(threads))
        def set_worker_threads() -> None:
            # OpenMP keeps a thread count per thread: each worker sets its own before its first op.
            if threads is not None:
                torch.set_num_threads(threads)

        workers = None
        if calls.workers > 1:
            workers = ThreadPoolExecutor(calls.workers, thread_name_prefix="denoise", initializer=set_worker_threads)
            stack.callback(workers.shutdown, wait=True, cancel_futures=True)  # Ctrl-C: start no new micro-batch
        for start in range(0, len(indices), batch_size):
            chunk = list(indices[start : start + batch_size])
            parts = [chunk[i : i + rows_per_call] for i in range(0, len(chunk), rows_per_call)]
            if workers is None:
                x0 = [run_micro_batch(part, noise_pool) for part in parts]
            else:
                x0 = [future.result() for future in [workers.submit(run_micro_batch, part, noise_pool) for part in parts]]
            yield chunk, torch.cat(x0)
