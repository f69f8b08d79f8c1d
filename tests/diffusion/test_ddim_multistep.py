"""Multistep DDIM against diffusers' PLMS (unclipped) and a clipped reference written here.

diffusers' PNDMScheduler(skip_prk_steps=True) is PLMS: Adams-Bashforth on eps fed to the DDIM
transfer function. It differs from ours in two documented places, which the comparison steers
around through its public state: its second call repeats the first step with the average of two
eps (a pseudo improved Euler start, one extra denoiser call), where we take the second-order step
at once; and it goes on to order 4. Setting ``counter`` past 1 before every step after the first
skips the improved-Euler branch, and keeping only the last ``order - 1`` eps in ``ets`` caps the
order; everything that computes the step is diffusers' own.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import PNDMScheduler

from tests.diffusion.test_samplers_vs_diffusers import (
    SHAPE,
    T,
    ToyDenoiser,
    assert_same_trajectory,
    diffusers_config,
    starting_point_and_noise,
    t_batch,
)
from vmddpm_deploy.diffusion import MultistepDDIMSampler, NoiseSchedule, Sampler, make_sampler, run_sampler
from vmddpm_deploy.errors import InvalidArgumentError


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("steps", [8, 20])
def test_unclipped_multistep_ddim_is_diffusers_plms(kind, order, steps, dtype):
    schedule = NoiseSchedule(kind=kind)
    ours = MultistepDDIMSampler(schedule, steps, order=order, spacing="leading", clip_sample=False)
    theirs = PNDMScheduler(**diffusers_config(kind), skip_prk_steps=True, set_alpha_to_one=True)
    theirs.alphas_cumprod = schedule.alphas_cumprod  # float64, as in test_samplers_vs_diffusers
    theirs.set_timesteps(steps)
    # diffusers lists its improved-Euler start's timestep twice; the distinct ones are ours.
    assert tuple(dict.fromkeys(theirs.timesteps.tolist())) == ours.timesteps

    def their_step(k, t, x, eps, noise):
        if k > 0:
            theirs.counter = 2  # past the improved-Euler branch
            theirs.ets = theirs.ets[len(theirs.ets) - (order - 1) :]  # at most `order` eps after append
        return theirs.step_plms(eps, t, x).prev_sample

    assert_same_trajectory(ours, their_step, schedule, dtype)


def clipped_reference(schedule: NoiseSchedule, timesteps, order: int, x_T: torch.Tensor, denoiser) -> torch.Tensor:
    """Multistep DDIM written out in float64 from the formulas, independent of the package's DDIM."""
    alpha_bar = schedule.alphas_cumprod.tolist()
    weights = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12]}
    x, eps_history = x_T.double(), []
    for k, t in enumerate(timesteps):
        eps_history.insert(0, denoiser(x, t_batch(t)).double())
        w = weights[min(order, k + 1)]
        e = sum(weight * e_old for weight, e_old in zip(w, eps_history, strict=False))
        a_t = alpha_bar[t]
        a_next = alpha_bar[timesteps[k + 1]] if k + 1 < len(timesteps) else 1.0
        x0 = ((x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)).clamp(-1, 1)
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * e
    return x


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("spacing", ["leading", "quadratic", "karras"])
def test_clipped_multistep_ddim_matches_the_reference(order, spacing):
    schedule = NoiseSchedule()
    sampler = MultistepDDIMSampler(schedule, 8, order=order, spacing=spacing)
    x_T, _ = starting_point_and_noise(8, torch.float64)
    ours = run_sampler(sampler, ToyDenoiser(schedule.alphas_cumprod, SHAPE[1]), x_T, step_noise=None)
    reference = clipped_reference(schedule, sampler.timesteps, order, x_T, ToyDenoiser(schedule.alphas_cumprod, SHAPE[1]))
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-10)
    unclipped = run_sampler(
        MultistepDDIMSampler(schedule, 8, order=order, spacing=spacing, clip_sample=False),
        ToyDenoiser(schedule.alphas_cumprod, SHAPE[1]), x_T, step_noise=None,
    )
    assert (ours - unclipped).abs().max() > 1e-2, "the toy model's x0 must leave [-1, 1] for this test to bite"


def test_orders_differ_and_start_as_ddim():
    schedule = NoiseSchedule()
    x_T, _ = starting_point_and_noise(6, torch.float64)
    ddim, ab2, ab3 = (make_sampler(name, schedule, 6) for name in ("ddim", "ddim-ab2", "ddim-ab3"))
    assert ddim.timesteps == ab2.timesteps == ab3.timesteps
    eps = ToyDenoiser(schedule.alphas_cumprod, SHAPE[1])(x_T, t_batch(ddim.timesteps[0]))
    first = [sampler.step(0, x_T, eps, None, None)[0] for sampler in (ddim, ab2, ab3)]
    assert torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])  # step 0 is DDIM
    finals = [run_sampler(s, ToyDenoiser(schedule.alphas_cumprod, SHAPE[1]), x_T, None) for s in (ddim, ab2, ab3)]
    assert (finals[0] - finals[1]).abs().max() > 1e-3 and (finals[1] - finals[2]).abs().max() > 1e-4


def test_history_keeps_only_what_the_order_needs():
    schedule = NoiseSchedule()
    x = torch.zeros(SHAPE)
    for order in (2, 3):
        sampler = MultistepDDIMSampler(schedule, 5, order=order)
        history = None
        for k in range(5):
            eps = torch.full(SHAPE, float(k))
            _, history = sampler.step(k, x, eps, None, history)
            assert len(history) == min(k + 1, order - 1) and history[-1] is eps


def test_registered_and_deterministic():
    sampler = make_sampler("ddim-ab3", NoiseSchedule(), 10, spacing="quadratic")
    assert isinstance(sampler, Sampler) and isinstance(sampler, MultistepDDIMSampler)
    assert sampler.order == 3 and sampler.timesteps[0] == 800 and sampler.timesteps[-1] == 0
    assert not any(sampler.needs_noise(k) for k in range(10))
    with pytest.raises(InvalidArgumentError, match="eta applies to ddim only; drop it for ddim-ab2"):
        make_sampler("ddim-ab2", NoiseSchedule(), 10, eta=0.5)
    with pytest.raises(InvalidArgumentError, match="order must be 2 or 3, got 4"):
        MultistepDDIMSampler(NoiseSchedule(), 10, order=4)
    assert T == 1000
