"""Generating images from any Denoiser, with per-sample seeding.

Sample ``i`` of a run with seed ``s`` draws its initial noise and every step's noise from the
counter-based generator keyed by ``(s, i, stream)`` (:mod:`vmddpm_deploy.diffusion.noise`), so
it is the same image whatever the batch size, the order of batches, or the backend (up to that
backend's arithmetic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import torch

from vmddpm_deploy.diffusion import Sampler, gaussian_noise, run_sampler
from vmddpm_deploy.runtime import Denoiser


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


def generate(
    denoiser: Denoiser,
    sampler: Sampler,
    seed: int,
    indices: Sequence[int],
    image_shape: tuple[int, int, int],
    batch_size: int,
    device: str | torch.device = "cpu",
    on_step: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(indices, x0)`` per batch; x0: (len(indices), C, H, W) float32 in about [-1, 1].

    ``on_step(images)`` is called after every sampler step with the (fractional) number of
    images that step completed, so a progress bar in images moves smoothly.
    """
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        x_T = gaussian_noise(seed, chunk, 0, image_shape).to(device)

        def step_noise(k: int, chunk: list[int] = chunk) -> torch.Tensor:
            return gaussian_noise(seed, chunk, k + 1, image_shape).to(device)

        def callback(k: int, total: int, size: int = len(chunk)) -> None:
            if on_step is not None:
                on_step(size / total)

        yield chunk, run_sampler(sampler, denoiser, x_T, step_noise, callback=callback)
