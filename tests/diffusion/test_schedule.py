"""NoiseSchedule against the papers' formulas (re-derived here in plain Python) and diffusers."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from vmddpm_deploy.diffusion import TIMESTEP_SPACINGS, NoiseSchedule, spaced_timesteps
from vmddpm_deploy.diffusion.schedule import inference_timesteps, noise_level_timesteps
from vmddpm_deploy.errors import ConfigError, InvalidArgumentError

T = 1000
FLOAT32_EPS = 2.0**-23
DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def nichol_dhariwal_alpha_bar(t: float, s: float = 0.008) -> float:
    """Nichol & Dhariwal 2021 eq. 17: f(t) / f(0) with f(t) = cos(((t / T + s) / (1 + s)) pi / 2)^2."""

    def f(u: float) -> float:
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    return f(t) / f(0)


def test_linear_betas_are_evenly_spaced_from_start_to_end():
    betas = NoiseSchedule(kind="linear").betas
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    expected = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    np.testing.assert_allclose(betas.numpy(), expected, rtol=1e-13, atol=0)


def test_cosine_betas_follow_nichol_dhariwal_with_the_cap():
    betas = NoiseSchedule(kind="cosine").betas.numpy()
    expected = [min(1 - nichol_dhariwal_alpha_bar(i + 1) / nichol_dhariwal_alpha_bar(i), 0.999) for i in range(T)]
    # 1 - f(i+1)/f(i) cancels to ~1e-4, so both sides carry ~1e-16 absolute rounding.
    np.testing.assert_allclose(betas, expected, rtol=1e-12, atol=1e-15)
    assert betas[-1] == 0.999, "f(T) = 0, so the last beta is the cap"
    assert betas[:-1].max() < 0.999


def test_alphas_cumprod_is_the_product_of_one_minus_beta():
    for kind in ("linear", "cosine"):
        schedule = NoiseSchedule(kind=kind)
        running, expected = 1.0, []
        for beta in schedule.betas.tolist():
            running *= 1.0 - beta
            expected.append(running)
        alpha_bar = schedule.alphas_cumprod
        assert alpha_bar.dtype == torch.float64
        np.testing.assert_allclose(alpha_bar.numpy(), expected, rtol=1e-13, atol=0)
        assert torch.all(alpha_bar[1:] < alpha_bar[:-1]) and alpha_bar[-1] > 0 and alpha_bar[0] < 1


def test_cosine_alphas_cumprod_telescopes_to_the_closed_form():
    # Until the cap bites (only the last beta), prod (f(i+1) / f(i)) = f(t+1) / f(0).
    alpha_bar = NoiseSchedule(kind="cosine").alphas_cumprod.numpy()
    closed_form = [nichol_dhariwal_alpha_bar(t + 1) for t in range(T - 1)]
    np.testing.assert_allclose(alpha_bar[:-1], closed_form, rtol=1e-9, atol=0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_tables_agree_with_diffusers_to_float32_precision(kind):
    ours = NoiseSchedule(kind=kind)
    theirs = DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_BETA_SCHEDULE[kind])
    their_betas = theirs.betas.double()
    # torch.linspace in float32 is within 2 float32 ulps of the exact values; the cosine betas
    # are float64 values rounded once.
    np.testing.assert_allclose(ours.betas.numpy(), their_betas.numpy(), rtol=2 * FLOAT32_EPS, atol=0)
    # diffusers multiplies float32 (1 - beta) factors: each factor carries a relative rounding of
    # up to eps/2 of 1, i.e. eps/2 / (1 - beta) of itself, and each product another eps/2.
    per_factor = 0.5 * FLOAT32_EPS * (1.0 / (1.0 - their_betas) + 1.0)
    bound = torch.cumsum(per_factor, 0) + FLOAT32_EPS
    relative = (ours.alphas_cumprod - theirs.alphas_cumprod.double()).abs() / ours.alphas_cumprod
    assert torch.all(relative <= bound), f"worst excess {(relative - bound).max().item():.3g}"


def test_tables_are_copies():
    schedule = NoiseSchedule(kind="cosine")
    schedule.betas.mul_(0)
    schedule.alphas_cumprod.zero_()
    assert schedule.betas[0] > 0 and schedule.alphas_cumprod[0] > 0


def test_dict_round_trip_through_json():
    schedule = NoiseSchedule(kind="cosine", num_train_timesteps=500, cosine_s=0.01, max_beta=0.99)
    data = json.loads(json.dumps(schedule.to_dict()))
    assert data == {
        "kind": "cosine",
        "num_train_timesteps": 500,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "cosine_s": 0.01,
        "max_beta": 0.99,
    }
    restored = NoiseSchedule.from_dict(data)
    assert restored == schedule and hash(restored) == hash(schedule)
    assert torch.equal(restored.betas, schedule.betas)


def test_from_dict_fills_defaults_and_accepts_integral_floats():
    assert NoiseSchedule.from_dict({"kind": "cosine"}) == NoiseSchedule(kind="cosine")
    assert NoiseSchedule.from_dict({}) == NoiseSchedule()
    schedule = NoiseSchedule.from_dict({"kind": "linear", "max_beta": 0.5, "cosine_s": 0})
    assert schedule.cosine_s == 0.0 and isinstance(schedule.cosine_s, float)


@pytest.mark.parametrize(
    "data,phrase",
    [
        ({"kind": "sigmoid"}, "unknown noise schedule kind 'sigmoid'"),
        ({"kind": "linear", "beta_schedule": "linear"}, "unknown noise schedule field(s) beta_schedule"),
        ({"num_train_timesteps": 0}, "num_train_timesteps must be at least 1"),
        ({"num_train_timesteps": "1000"}, "num_train_timesteps must be an integer"),
        ({"num_train_timesteps": 1000.0}, "num_train_timesteps must be an integer"),
        ({"num_train_timesteps": True}, "num_train_timesteps must be an integer"),
        ({"beta_start": 0.0}, "need 0 < beta_start <= beta_end < 1"),
        ({"beta_start": 0.03}, "need 0 < beta_start <= beta_end < 1"),
        ({"beta_end": 1.0}, "need 0 < beta_start <= beta_end < 1"),
        ({"beta_end": float("nan")}, "beta_end must be a finite number"),
        ({"beta_end": "0.02"}, "beta_end must be a finite number"),
        ({"max_beta": 1.0}, "max_beta must be in (0, 1)"),
        ({"cosine_s": -0.1}, "cosine_s must be non-negative"),
        ([("kind", "linear")], "a noise schedule must be a mapping"),
    ],
)
def test_from_dict_rejects_bad_data_in_one_line(data, phrase):
    with pytest.raises(ConfigError) as caught:
        NoiseSchedule.from_dict(data)
    message = str(caught.value)
    assert phrase in message and "\n" not in message


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match="unknown noise schedule kind"):
        NoiseSchedule(kind="quadratic")


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_spaced_timesteps_match_diffusers_set_timesteps(spacing):
    scheduler = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    overshoots = []
    for steps in range(1, T + 1):
        scheduler.set_timesteps(steps)
        theirs = scheduler.timesteps.tolist()
        ours = spaced_timesteps(T, steps, spacing)
        if len(theirs) == steps + 1:
            # diffusers' float arange overshoots for some trailing step counts; its extra
            # entry is -1, which is not a timestep.
            assert spacing == "trailing" and theirs[-1] == -1
            overshoots.append(steps)
            theirs = theirs[:-1]
        assert ours == theirs, steps
        assert all(a > b for a, b in zip(ours, ours[1:], strict=False)) and ours[-1] >= 0
    assert (spacing == "trailing") == bool(overshoots)


def test_spaced_timesteps_rejects_bad_requests():
    for steps, phrase in [(0, "at least 1"), (T + 1, "at most the schedule's 1000"), (2.5, "integer")]:
        with pytest.raises(InvalidArgumentError, match=phrase):
            spaced_timesteps(T, steps, "leading")
    with pytest.raises(InvalidArgumentError, match="unknown timestep spacing 'uniform'"):
        spaced_timesteps(T, 10, "uniform")


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("spacing,option", [("karras", "use_karras_sigmas"), ("logsnr", "use_lu_lambdas")])
def test_noise_level_placements_match_diffusers(spacing, option):
    schedule = NoiseSchedule()
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=T, **{option: True})
    scheduler.alphas_cumprod = schedule.alphas_cumprod  # our float64 table, see test_samplers_vs_diffusers
    most = {"karras": 78, "logsnr": 38}[spacing]
    for steps in range(1, most + 1):
        scheduler.set_timesteps(steps)
        assert noise_level_timesteps(schedule, steps, spacing) == scheduler.timesteps.tolist(), steps
    with pytest.raises(InvalidArgumentError, match=f"repeats timesteps at {most + 1} steps; use at most {most}"):
        noise_level_timesteps(schedule, most + 1, spacing)


def reference_placement(alpha_bar: list[float], steps: int, spacing: str) -> list[int]:
    """The placements from their papers' formulas, one timestep at a time in plain Python."""
    T = len(alpha_bar)
    if spacing == "quadratic":  # the largest t <= (i sqrt(0.8 T) / (S - 1))^2, by exact comparison
        bound = [Fraction(4 * T, 5) * Fraction(i, steps - 1) ** 2 for i in range(steps)]
        return [max(t for t in range(T) if t <= b) for b in bound][::-1]
    log_s = [math.log(math.sqrt((1 - a) / a)) for a in alpha_bar]
    out = []
    for i in range(steps):
        r = i / (steps - 1) if steps > 1 else 0.0
        if spacing == "logsnr":
            target = log_s[-1] + r * (log_s[0] - log_s[-1])
        else:  # karras, rho = 7
            hi, lo = math.exp(log_s[-1]) ** (1 / 7), math.exp(log_s[0]) ** (1 / 7)
            target = math.log((hi + r * (lo - hi)) ** 7)
        j = max(min(sum(1 for v in log_s if v <= target) - 1, T - 2), 0)
        fraction = min(max((target - log_s[j]) / (log_s[j + 1] - log_s[j]), 0.0), 1.0)
        out.append(round(j + fraction))  # Python's round: halves to even, as numpy's
    return out


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["quadratic", "logsnr", "karras"])
def test_noise_level_placements_match_their_formulas(kind, spacing):
    schedule = NoiseSchedule(kind=kind)
    alpha_bar = schedule.alphas_cumprod.tolist()
    checked = 0
    for steps in range(2, 30):
        expected = reference_placement(alpha_bar, steps, spacing)
        if len(set(expected)) < steps:
            with pytest.raises(InvalidArgumentError, match=f"{spacing} spacing repeats timesteps"):
                noise_level_timesteps(schedule, steps, spacing)
            continue
        ours = noise_level_timesteps(schedule, steps, spacing)
        assert ours == expected, steps
        assert ours[-1] == 0 and all(a > b for a, b in zip(ours, ours[1:], strict=False))
        checked += 1
    assert checked >= 4
    if spacing == "quadratic":
        assert noise_level_timesteps(schedule, 8, spacing) == [800, 587, 408, 261, 146, 65, 16, 0]


def test_every_spacing_reaches_ddim_and_the_one_list_names_them():
    schedule = NoiseSchedule()
    assert TIMESTEP_SPACINGS == ("leading", "trailing", "linspace", "quadratic", "logsnr", "karras")
    for spacing in TIMESTEP_SPACINGS:
        timesteps = inference_timesteps(schedule, 10, spacing)
        assert len(timesteps) == 10 and all(a > b for a, b in zip(timesteps, timesteps[1:], strict=False))
    with pytest.raises(InvalidArgumentError, match="choose one of leading, trailing, linspace, quadratic"):
        inference_timesteps(schedule, 10, "uniform")
