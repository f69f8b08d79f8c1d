"""generate(): per-sample seeded batches, with the step noise drawn inline or prefetched on a thread."""

from __future__ import annotations

import threading

import pytest
import torch

import vmddpm_deploy.generation as generation
from vmddpm_deploy.diffusion import NoiseSchedule, gaussian_noise, make_sampler
from vmddpm_deploy.generation import generate
from vmddpm_deploy.runtime.batching import CallPlan


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


@pytest.fixture(scope="module")
def micro_denoiser():
    from vmddpm_deploy.checkpoint import init_checkpoint
    from vmddpm_deploy.model import ModelConfig
    from vmddpm_deploy.runtime.torch_backend import TorchDenoiser

    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return TorchDenoiser(init_checkpoint(config, NoiseSchedule(), seed=0))


def test_micro_batches_side_by_side_run_single_threaded_and_give_the_serial_bytes(micro_denoiser):
    sampler = make_sampler("ddim", NoiseSchedule(), 3, eta=0.5)
    seen = []

    def recording(x, t):
        seen.append((threading.current_thread().name, torch.get_num_threads(), x.shape[0]))
        return micro_denoiser(x, t)

    def images(batch_size, calls):
        batches = generate(recording, sampler, 7, range(5), (1, 8, 8), batch_size, calls=calls)
        return torch.cat([x0 for _, x0 in batches])

    before = torch.get_num_threads()
    serial = images(5, CallPlan(2, workers=1, intra_op_threads=1))
    assert {(name, threads) for name, threads, _ in seen} == {(threading.current_thread().name, 1)}
    assert torch.get_num_threads() == before  # restored
    # Micro-batches of 2 rows: batches of 1 -> five; of 3 -> [0, 1], [2], [3, 4]; of 5 -> three. 3 steps each.
    for batch_size, micro_batches in ((1, 5), (3, 3), (5, 3)):
        seen.clear()
        assert torch.equal(images(batch_size, CallPlan(2, workers=3, intra_op_threads=1)), serial)
        assert all(name.startswith("denoise") and threads == 1 and rows == 2 for name, threads, rows in seen)
        assert len(seen) == 3 * micro_batches


def test_progress_from_worker_threads_adds_up_to_the_images(micro_denoiser):
    sampler = make_sampler("ddim", NoiseSchedule(), 4)
    reported = []
    batches = generate(micro_denoiser, sampler, 7, range(5), (1, 8, 8), 3, on_step=reported.append,
                       calls=CallPlan(2, workers=2, intra_op_threads=1))
    sizes = [len(indices) for indices, _ in batches]
    assert sizes == [3, 2] and sum(reported) == pytest.approx(5.0) and len(reported) == 3 * 4
