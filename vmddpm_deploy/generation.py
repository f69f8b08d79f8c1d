"""Generating images from any Denoiser, with per-sample seeding and a fixed batch shape.

Sample ``i`` of a run with seed ``s`` draws its initial noise and every step's noise from the
counter-based generator keyed by ``(s, i, stream)`` (:mod:`vmddpm_deploy.diffusion.noise`), so
its inputs do not depend on the batch it is drawn in. Its *output* depends on the batch only
through the batch size: a backend's arithmetic can round differently at another batch shape, but
at one shape a row's eps does not depend on its position or on the other rows (measured for
torch with native and reference ops and for ONNX Runtime; GroupNorm and LayerNorm are per
sample). So every batch, a job's last one and a shard's included, is padded to ``batch_size``
rows (copies of its last sample, dropped afterwards): sample ``i`` is then a function of
``(seed, i, batch_size)`` and the backend, whichever indices share its batch. The C++ host pads
the same way (plugins/host/src/sampling_loop.cpp).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext

import torch

from vmddpm_deploy.diffusion import Denoiser, Sampler, gaussian_noise, run_sampler


class CallTimer:
    """Wraps a Denoiser and accumulates its call count and wall time."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        eps = self.denoiser(x, t)
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
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(indices, x0)`` per batch; x0: (len(indices), C, H, W) float32 in about [-1, 1].

    Every denoiser call has exactly ``batch_size`` rows: a short batch is padded with copies of its
    last sample (see the module docstring). ``on_step(images)`` is called after every sampler step
    with the (fractional) number of images that step completed, so a progress bar in images moves
    smoothly. ``prefetch_noise``
    draws each step's noise ahead on a thread (:class:`PrefetchedNoise`); None: on a GPU device
    only (on the CPU the draw would take cores from the denoiser).
    """
    device = torch.device(device)
    noisy_steps = [k for k in range(len(sampler.timesteps)) if sampler.needs_noise(k)]
    if prefetch_noise is None:
        prefetch_noise = device.type == "cuda"
    with ThreadPoolExecutor(1, thread_name_prefix="noise") if prefetch_noise and noisy_steps else nullcontext() as pool:
        for start in range(0, len(indices), batch_size):
            chunk = list(indices[start : start + batch_size])
            rows = chunk + chunk[-1:] * (batch_size - len(chunk))
            x_T = gaussian_noise(seed, rows, 0, image_shape).to(device)
            if pool is not None:
                step_noise = PrefetchedNoise(pool, seed, rows, image_shape, noisy_steps, device)
            else:
                def step_noise(k: int, rows: list[int] = rows) -> torch.Tensor:
                    return gaussian_noise(seed, rows, k + 1, image_shape).to(device)

            def callback(k: int, total: int, size: int = len(chunk)) -> None:
                if on_step is not None:
                    on_step(size / total)

            x0 = run_sampler(sampler, denoiser, x_T, step_noise, callback=callback)
            yield chunk, x0[: len(chunk)]
