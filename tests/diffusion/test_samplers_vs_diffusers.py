"""Our samplers against diffusers' schedulers, step by step, plus the loop and the factory.

Both sides start from the same x_T, follow their own trajectories, get their eps from the same
fixed function of (x, t) and the same injected noise, and must agree to 1e-5 after every step.

Two things are set up on the diffusers side so that the comparison measures the samplers:

* Tables. diffusers builds float32 tables (float32 betas, a float32 cumprod); its DDPM step then
  forms beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} from them, which at beta ~ 1e-4 keeps about
  three significant digits, and its DPM-Solver rounds sigma to float32, which x0 = (x - sigma
  eps) / alpha amplifies by 1 / alpha ~ 2e4 at t = 999 on the cosine schedule. Either alone
  moves x by 1e-4 or more. So diffusers gets our float64 alpha_bar (test_schedule.py checks it
  against diffusers' own to float32 precision) and, for DPM-Solver, float64 sigmas from it.
* DDIM's previous timestep. diffusers steps DDIM to t - T // steps (huggingface/diffusers#12633);
  we step to the next listed timestep. They coincide for leading spacing and for trailing when
  steps divides T; for linspace the test sets diffusers' num_inference_steps, per step, to a
  value whose T // n equals the true gap, so diffusers evaluates the same transition.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers import scheduling_ddpm

from vmddpm_deploy.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPP2MSampler,
    NoiseSchedule,
    Sampler,
    dpm_solver_timesteps,
    gaussian_noise,
    make_sampler,
    run_sampler,
)
from vmddpm_deploy.errors import InvalidArgumentError

T = 1000
SHAPE = (2, 3, 8, 8)
TOLERANCE = 1e-5
DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


class ToyDenoiser:
    """A fixed function eps(x, t) that behaves like a trained model where it matters.

    The base term is the Bayes-optimal eps for data x0 ~ N(0, 0.25 I), so x0 predictions stay
    O(1) at every noise level (as with a real model; an arbitrary eps would put x0 at
    O(1 / alpha_T) and the comparison would measure only float rounding). On top, a random
    channel mix of x (so eps depends on x non-trivially) and a random sinusoid in t, both
    scaled by alpha_t so that they move x0 by O(1).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, channels: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.alphas_cumprod = alphas_cumprod.double()
        self.mix = 0.5 * torch.randn(channels, channels, generator=generator, dtype=torch.float64)
        self.phase = 2 * math.pi * torch.rand(channels, generator=generator, dtype=torch.float64)
        self.calls: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(t.clone())
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x64 = x.double()
        # Channel mix as a broadcast sum: as fast as it gets for 3 x 3 (no BLAS call per step).
        mixed = torch.tanh((self.mix.view(1, *self.mix.shape, 1, 1) * x64.unsqueeze(1)).sum(2))
        wobble = torch.sin(0.01 * t.double().view(-1, 1, 1, 1) + self.phase.view(1, -1, 1, 1))
        eps = sigma * x64 / (0.25 * alpha_bar + sigma**2) + alpha * (0.2 * mixed + 0.3 * wobble)
        return eps.to(x.dtype)


def diffusers_config(kind: str) -> dict:
    return {
        "num_train_timesteps": T,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "beta_schedule": DIFFUSERS_BETA_SCHEDULE[kind],
    }


def starting_point_and_noise(steps: int, dtype: torch.dtype, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn(SHAPE, generator=generator, dtype=torch.float64).to(dtype)
    return x_T, [torch.randn(SHAPE, generator=generator, dtype=torch.float64).to(dtype) for _ in range(steps)]


def t_batch(t: int) -> torch.Tensor:
    return torch.full((SHAPE[0],), t, dtype=torch.int64)


def assert_same_trajectory(ours: Sampler, their_step, schedule: NoiseSchedule, dtype: torch.dtype) -> None:
    """Step both from one x_T; ``their_step(k, t, x, eps, noise)`` advances diffusers."""
    x_T, noises = starting_point_and_noise(len(ours.timesteps), dtype)
    denoiser = ToyDenoiser(schedule.alphas_cumprod, SHAPE[1])
    x_ours, x_theirs, history = x_T.clone(), x_T.clone(), None
    for k, t in enumerate(ours.timesteps):
        eps_ours = denoiser(x_ours, t_batch(t))
        noise = noises[k] if ours.needs_noise(k) else None
        # history: a tensor (DPM-Solver's x0) or a tuple of them (multistep DDIM's eps)
        carried = history if isinstance(history, tuple) else (history,)
        inputs = [x_ours, eps_ours] + [v for v in (noise, *carried) if v is not None]
        snapshots = [v.clone() for v in inputs]
        x_ours, history = ours.step(k, x_ours, eps_ours, noise, history)
        assert all(torch.equal(v, snapshot) for v, snapshot in zip(inputs, snapshots, strict=True)), (
            "step modified an input"
        )
        x_theirs = their_step(k, t, x_theirs, denoiser(x_theirs, t_batch(t)), noises[k])
        assert x_ours.dtype == dtype and x_theirs.dtype == dtype
        difference = (x_ours - x_theirs).abs().max().item()
        assert difference <= TOLERANCE, f"step {k} (t={t}): max |ours - diffusers| = {difference:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps,spacing", [(1000, "leading"), (50, "leading"), (50, "trailing"), (20, "linspace")])
def test_ddpm_matches_diffusers(kind, steps, spacing, dtype, monkeypatch):
    schedule = NoiseSchedule(kind=kind)
    ours = DDPMSampler(schedule, steps, spacing=spacing)
    theirs = DDPMScheduler(
        **diffusers_config(kind), timestep_spacing=spacing, variance_type="fixed_small", clip_sample=True
    )
    theirs.alphas_cumprod = schedule.alphas_cumprod
    theirs.set_timesteps(steps)
    assert ours.timesteps == tuple(theirs.timesteps.tolist())

    # DDPMScheduler.step draws its noise with the module's randn_tensor and takes no noise
    # argument; substituting that function is how the same noise reaches both sides.
    injected: dict[str, torch.Tensor] = {}
    drawn_at: list[int] = []

    def their_step(k, t, x, eps, noise):
        injected["noise"] = noise
        before = len(drawn_at)
        x_next = theirs.step(eps, t, x).prev_sample
        if ours.needs_noise(k):
            assert len(drawn_at) == before + 1, f"diffusers drew no noise at step {k}"
        return x_next

    def fake_randn(shape, generator=None, device=None, dtype=None):
        drawn_at.append(1)
        return injected["noise"].to(dtype)

    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", fake_randn)
    assert_same_trajectory(ours, their_step, schedule, dtype)
    # Every step but the last, which lands on alpha_bar = 1 where beta_tilde = 0, adds noise.
    assert [ours.needs_noise(k) for k in range(steps)] == [True] * (steps - 1) + [False]


def their_ddim_num_inference_steps(gap: int) -> int:
    """An n with T // n == gap, so diffusers' DDIM step lands on the next listed timestep."""
    candidates = [n for n in range(1, T + 1) if T // n == gap]
    assert candidates, f"no diffusers stride equals the gap {gap}"
    return candidates[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_matches_diffusers(kind, spacing, steps, eta, dtype):
    schedule = NoiseSchedule(kind=kind)
    ours = DDIMSampler(schedule, steps, eta=eta, spacing=spacing)
    theirs = DDIMScheduler(**diffusers_config(kind), timestep_spacing=spacing, clip_sample=True, set_alpha_to_one=True)
    theirs.alphas_cumprod = schedule.alphas_cumprod
    theirs.set_timesteps(steps)
    assert ours.timesteps == tuple(theirs.timesteps.tolist())

    def their_step(k, t, x, eps, noise):
        theirs.num_inference_steps = steps
        if k + 1 < steps and t - T // steps != ours.timesteps[k + 1]:
            assert spacing == "linspace", "diffusers' own stride reaches the next timestep"
            theirs.num_inference_steps = their_ddim_num_inference_steps(t - ours.timesteps[k + 1])
        return theirs.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample

    assert_same_trajectory(ours, their_step, schedule, dtype)
    # eta > 0 draws noise at every step but the last, which lands on alpha_bar = 1 exactly.
    assert [ours.needs_noise(k) for k in range(steps)] == [eta > 0] * (steps - 1) + [False]


# diffusers' set_timesteps calls np.array on a tensor, which numpy 2 warns about with this torch.
DIFFUSERS_NUMPY_COPY_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


#: Our noise-level placements and the diffusers options that place DPM-Solver's timesteps alike.
DIFFUSERS_PLACEMENTS = {"karras": {"use_karras_sigmas": True}, "logsnr": {"use_lu_lambdas": True}}


@pytest.mark.filterwarnings(DIFFUSERS_NUMPY_COPY_WARNING)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "kind,steps,spacing",
    [
        *((kind, steps, spacing) for kind in ("linear", "cosine")
          for steps, spacing in [(10, "linspace"), (20, "linspace"), (10, "leading"), (10, "trailing")]),
        # diffusers rounds karras / logsnr timesteps to integers only off the cosine schedule.
        ("linear", 8, "karras"),
        ("linear", 12, "logsnr"),
    ],
)
@pytest.mark.parametrize("clip_sample", [True, False])
def test_dpm_solver_pp_2m_matches_diffusers(kind, steps, spacing, clip_sample, dtype):
    schedule = NoiseSchedule(kind=kind)
    ours = DPMSolverPP2MSampler(schedule, steps, spacing=spacing, clip_sample=clip_sample)
    placement = DIFFUSERS_PLACEMENTS.get(spacing, {"timestep_spacing": spacing})
    # diffusers clips through dynamic thresholding: s = clamp(quantile(|x0|, 0.995), 1, sample_max_value)
    # is 1 when sample_max_value = 1, so x0 is clipped to [-1, 1].
    theirs = DPMSolverMultistepScheduler(
        **diffusers_config(kind),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        **placement,
        thresholding=clip_sample,
        sample_max_value=1.0,
    )
    theirs.alphas_cumprod = schedule.alphas_cumprod
    theirs.set_timesteps(steps)
    assert ours.timesteps == tuple(theirs.timesteps.tolist())
    # karras / logsnr: diffusers steps between its continuous sigmas, we between the integer
    # timesteps' (the noise levels the model is evaluated at); this compares the update rule.
    alpha_bar = schedule.alphas_cumprod.numpy()[theirs.timesteps.numpy()]
    theirs.sigmas = torch.from_numpy(np.append(np.sqrt((1 - alpha_bar) / alpha_bar), 0.0))  # float64, see module doc
    assert not any(ours.needs_noise(k) for k in range(steps))

    def their_step(k, t, x, eps, noise):
        return theirs.step(eps, t, x).prev_sample

    assert_same_trajectory(ours, their_step, schedule, dtype)


def test_dpm_solver_clipping_changes_the_toy_trajectory():
    """The clip_sample=True comparison above is not vacuous: the toy model's x0 leaves [-1, 1]."""
    schedule = NoiseSchedule()
    x_T, _ = starting_point_and_noise(10, torch.float64)
    denoiser = ToyDenoiser(schedule.alphas_cumprod, SHAPE[1])
    clipped, unclipped = (
        run_sampler(DPMSolverPP2MSampler(schedule, 10, clip_sample=clip), denoiser, x_T, step_noise=None)
        for clip in (True, False)
    )
    assert unclipped.abs().max() > 1.0
    assert clipped.abs().max() <= 1.0
    assert (clipped - unclipped).abs().max() > 1e-2


@pytest.mark.filterwarnings(DIFFUSERS_NUMPY_COPY_WARNING)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_dpm_solver_timesteps_match_diffusers(spacing):
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    for steps in [*range(1, 60), *range(60, T, 37), T - 1]:
        scheduler.set_timesteps(steps)
        theirs = scheduler.timesteps.tolist()
        ours = dpm_solver_timesteps(NoiseSchedule(num_train_timesteps=T), steps, spacing)
        assert ours == theirs[:steps], steps
        # diffusers' trailing may append a -1 (float arange overshoot); nothing else is cut.
        assert theirs[steps:] in ([], [-1])


def test_dpm_solver_rejects_step_counts_that_repeat_timesteps():
    with pytest.raises(InvalidArgumentError, match="repeats timesteps at 1000 steps; use at most 999"):
        DPMSolverPP2MSampler(NoiseSchedule(), 1000)
    assert len(DPMSolverPP2MSampler(NoiseSchedule(), 1000, spacing="trailing").timesteps) == 1000


def recorded_run(sampler: Sampler, schedule: NoiseSchedule, indices: list[int], seed: int = 5):
    denoiser = ToyDenoiser(schedule.alphas_cumprod, SHAPE[1])
    x_T = gaussian_noise(seed, indices, 0, SHAPE[1:])
    x_T_before = x_T.clone()
    asked, progress = [], []

    def step_noise(k: int) -> torch.Tensor:
        asked.append(k)
        return gaussian_noise(seed, indices, k + 1, SHAPE[1:])

    x_0 = run_sampler(sampler, denoiser, x_T, step_noise, callback=lambda k, total: progress.append((k, total)))
    assert torch.equal(x_T, x_T_before), "run_sampler must not modify x_T"
    return x_0, denoiser.calls, asked, progress


SAMPLERS = {
    "ddpm": lambda s: DDPMSampler(s, 20),
    "ddim": lambda s: DDIMSampler(s, 12, eta=0.7, spacing="trailing"),
    "dpm-solver++": lambda s: DPMSolverPP2MSampler(s, 9),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_run_sampler_is_the_step_loop(name):
    schedule = NoiseSchedule(kind="cosine")
    sampler = SAMPLERS[name](schedule)
    indices = [0, 1]
    x_0, calls, asked, progress = recorded_run(sampler, schedule, indices)
    steps = len(sampler.timesteps)
    assert [tuple(t.tolist()) for t in calls] == [(t, t) for t in sampler.timesteps]
    assert all(t.dtype == torch.int64 and t.shape == (2,) for t in calls)
    assert asked == [k for k in range(steps) if sampler.needs_noise(k)]
    assert progress == [(k, steps) for k in range(steps)]

    # The same loop written out by hand.
    denoiser = ToyDenoiser(schedule.alphas_cumprod, SHAPE[1])
    x, history = gaussian_noise(5, indices, 0, SHAPE[1:]), None
    for k, t in enumerate(sampler.timesteps):
        noise = gaussian_noise(5, indices, k + 1, SHAPE[1:]) if sampler.needs_noise(k) else None
        x, history = sampler.step(k, x, denoiser(x, torch.tensor([t, t])), noise, history)
    assert torch.equal(x_0, x)
    assert x_0.dtype == torch.float32 and torch.isfinite(x_0).all()


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_keep_no_state_between_runs(name):
    schedule = NoiseSchedule()
    sampler = SAMPLERS[name](schedule)
    first = recorded_run(sampler, schedule, [0, 1], seed=5)[0]
    recorded_run(sampler, schedule, [7], seed=6)  # a different run in between
    assert torch.equal(recorded_run(sampler, schedule, [0, 1], seed=5)[0], first)


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_sample_does_not_depend_on_its_batch(name):
    schedule = NoiseSchedule()
    sampler = SAMPLERS[name](schedule)
    batch = recorded_run(sampler, schedule, [3, 4, 9])[0]
    alone = recorded_run(sampler, schedule, [4])[0]
    torch.testing.assert_close(batch[1], alone[0], rtol=0, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_make_sampler_builds_each_sampler_with_its_default_spacing():
    schedule = NoiseSchedule()
    ddpm = make_sampler("ddpm", schedule, 10)
    ddim = make_sampler("ddim", schedule, 10, eta=0.3)
    dpm = make_sampler("dpm-solver++", schedule, 10)
    # diffusers' defaults for DDPM and DDIM; DPM-Solver++ takes the placement the quality grid chose,
    # while the class itself keeps diffusers' linspace.
    assert isinstance(ddpm, DDPMSampler) and ddpm.spacing == "leading" and ddpm.clip_sample
    assert isinstance(ddim, DDIMSampler) and ddim.spacing == "leading" and ddim.eta == 0.3 and ddim.clip_sample
    assert isinstance(dpm, DPMSolverPP2MSampler) and dpm.spacing == "karras"
    assert DPMSolverPP2MSampler(schedule, 10).spacing == "linspace"
    assert make_sampler("ddim", schedule, 10, spacing="trailing").timesteps[0] == T - 1
    assert make_sampler("ddpm", schedule, 10, eta=0.0) == ddpm  # what SamplingSettings passes
    assert all(isinstance(s, Sampler) for s in (ddpm, ddim, dpm))


@pytest.mark.parametrize(
    "args,kwargs,phrase",
    [
        (("euler", 10), {}, "unknown sampler 'euler'; choose one of ddpm, ddim, ddim-ab2, ddim-ab3, dpm-solver++"),
        (("ddim", 0), {}, "steps must be at least 1, got 0"),
        (("ddpm", -5), {}, "steps must be at least 1, got -5"),
        (("ddim", 1001), {}, "steps must be at most the schedule's 1000 training timesteps, got 1001"),
        (("dpm-solver++", 2000), {}, "steps must be at most the schedule's 1000"),
        (("ddim", 2.5), {}, "steps must be an integer"),
        (("ddim", 10), {"eta": -0.1}, "eta must be in [0, 1], got -0.1"),
        (("ddim", 10), {"eta": 1.5}, "eta must be in [0, 1], got 1.5"),
        (("ddim", 10), {"eta": float("nan")}, "eta must be a number"),
        (("ddpm", 10), {"eta": 0.3}, "eta applies to ddim only; drop it for ddpm"),
        (("dpm-solver++", 10), {"eta": 0.3}, "eta applies to ddim only; drop it for dpm-solver++"),
        (("ddim", 10), {"spacing": "uniform"}, "unknown timestep spacing 'uniform'"),
        (("dpm-solver++", 10), {"spacing": "uniform"}, "unknown timestep spacing 'uniform'"),
        (("ddim", 50), {"spacing": "quadratic"}, "quadratic spacing repeats timesteps at 50 steps; use at most 29"),
        (("dpm-solver++", 100), {"spacing": "karras"}, "karras spacing repeats timesteps at 100 steps; use at most 78"),
        (("dpm-solver++", 1000), {"spacing": "linspace"}, "use at most 999"),
        (("dpm-solver++", 100), {}, "karras spacing repeats timesteps at 100 steps; use at most 78"),
    ],
)
def test_make_sampler_rejects_bad_arguments_in_one_line(args, kwargs, phrase):
    name, steps = args
    with pytest.raises(InvalidArgumentError) as caught:
        make_sampler(name, NoiseSchedule(), steps, **kwargs)
    message = str(caught.value)
    assert phrase in message and "\n" not in message
