"""generate(): per-sample seeded batches, with the step noise drawn inline or prefetched on a thread."""

from __future__ import annotations

import threading

import pytest
import torch

import vmddpm_deploy.generation as generation
from vmddpm_deploy.diffusion import NoiseSchedule, gaussian_noise, make_sampler
from vmddpm_deploy.generation import generate


def toy_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.tanh(x) * (t.float()[:, None, None, None] + 1) / 1000


def run(sampler, prefetch_noise):
    batches = generate(toy_denoiser, sampler, 7, range(5), (1, 4, 4), batch_size=2, prefetch_noise=prefetch_noise)
    return torch.cat([x0 for _, x0 in batches])


@pytest.mark.parametrize("name,eta", [("ddpm", 0.0), ("ddim", 0.7)])
def test_prefetched_noise_gives_the_same_images_and_is_drawn_off_the_loop(monkeypatch, name, eta):
    sampler = make_sampler(name, NoiseSchedule(), 6, eta=eta)
    inline = run(sampler, prefetch_noise=False)
    threads = []

    def recording_noise(seed, indices, stream, shape):
        if stream > 0:
            threads.append(threading.current_thread().name)
        return gaussian_noise(seed, indices, stream, shape)

    monkeypatch.setattr(generation, "gaussian_noise", recording_noise)
    prefetched = run(sampler, prefetch_noise=True)
    assert torch.equal(prefetched, inline)
    noisy_steps = sum(sampler.needs_noise(k) for k in range(len(sampler.timesteps)))
    assert len(threads) == 3 * noisy_steps  # three batches (2, 2, 1), no draw wasted
    assert all(name.startswith("noise") for name in threads)


def test_a_deterministic_sampler_starts_no_noise_thread(monkeypatch):
    sampler = make_sampler("ddim", NoiseSchedule(), 4)
    monkeypatch.setattr(generation, "ThreadPoolExecutor", None)  # would fail if it were used
    assert run(sampler, prefetch_noise=True).shape == (5, 1, 4, 4)
