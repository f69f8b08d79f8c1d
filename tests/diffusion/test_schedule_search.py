"""The per-model timestep search (GITS-style dynamic programming), explicit timesteps in the
samplers, and the schedule file."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from vmddpm_deploy.diffusion import make_sampler, run_sampler
from vmddpm_deploy.diffusion.schedule import NoiseSchedule, inference_timesteps
from vmddpm_deploy.diffusion.schedule_file import SCHEDULE_FORMAT, TunedSchedule, read_schedule
from vmddpm_deploy.diffusion.schedule_search import best_path, final_image_error, teacher_costs, tune_schedule
from vmddpm_deploy.errors import InvalidArgumentError, OutputError


def _brute_force(cost: np.ndarray, nfe: int) -> float:
    end = cost.shape[0] - 1
    best = math.inf
    for middle in itertools.combinations(range(1, end), nfe - 1):
        path = (0, *middle, end)
        best = min(best, sum(cost[a, b] for a, b in zip(path, path[1:])))
    return best


@pytest.mark.parametrize("nodes,nfe", [(2, 1), (6, 1), (6, 3), (7, 6), (9, 4), (10, 5)])
def test_dynamic_programming_finds_the_cheapest_path_enumeration_finds(nodes, nfe):
    rng = np.random.default_rng(nodes * 10 + nfe)
    cost = np.full((nodes, nodes), np.inf)
    upper = np.triu_indices(nodes, k=1)
    cost[upper] = rng.exponential(size=len(upper[0]))
    path, total = best_path(cost, nfe)
    assert path[0] == 0 and path[-1] == nodes - 1 and len(path) == nfe + 1
    assert all(a < b for a, b in zip(path, path[1:]))
    assert total == pytest.approx(sum(cost[a, b] for a, b in zip(path, path[1:])))
    assert total == pytest.approx(_brute_force(cost, nfe))


@pytest.mark.parametrize("nfe", [0, 5])
def test_a_step_count_the_grid_cannot_take_is_refused(nfe):
    with pytest.raises(InvalidArgumentError, match="nfe must be"):
        best_path(np.zeros((5, 5)), nfe)


class GaussianData:
    """Data x0 ~ N(mean, std^2 I): the exact eps is the posterior mean of the noise,
    E[e | x_t] = sqrt(1 - a) (x_t - sqrt(a) mean) / (a std^2 + 1 - a) with a = alpha_bar_t."""

    def __init__(self, schedule: NoiseSchedule, mean: float = 0.2, std: float = 0.3):
        self.alpha_bar = schedule.alphas_cumprod
        self.mean, self.std = mean, std

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * (x.double() - a.sqrt() * self.mean) / (a * self.std**2 + 1 - a)
        return eps.to(x.dtype)


SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def toy():
    schedule = NoiseSchedule()
    denoiser = GaussianData(schedule)
    return schedule, denoiser, teacher_costs(denoiser, schedule, SHAPE, trajectories=48, batch_size=16, teacher_steps=50)


def test_taking_every_grid_step_costs_nothing(toy):
    # The one-step jumps between neighbours are the teacher's own steps, so the full path is exact:
    # the cost uses the very DDIM update the teacher ran.
    _, _, teacher = toy
    path, total = best_path(teacher.cost, len(teacher.grid))
    assert path == list(range(len(teacher.grid) + 1))
    assert total < 1e-10


@pytest.mark.parametrize("nfe", [4, 6, 8])
def test_on_exact_gaussian_eps_the_tuned_schedule_beats_the_fixed_placements(toy, nfe):
    schedule, denoiser, teacher = toy
    path, _ = best_path(teacher.cost, nfe)
    tuned = make_sampler("ddim", schedule, nfe, timesteps=[teacher.grid[i] for i in path[:-1]])
    tuned_error = final_image_error(denoiser, tuned, teacher.finals)
    for spacing in ("leading", "trailing", "linspace", "quadratic", "logsnr", "karras"):
        fixed = make_sampler("ddim", schedule, nfe, spacing=spacing)
        # Measured independently of the search: run each sampler from the same noise, compare images.
        assert tuned_error <= final_image_error(denoiser, fixed, teacher.finals), spacing


def test_final_image_error_is_the_mean_squared_difference_of_the_images(toy):
    schedule, denoiser, teacher = toy
    sampler = make_sampler("ddim", schedule, 3)
    from vmddpm_deploy.diffusion.noise import gaussian_noise

    images = run_sampler(sampler, denoiser, gaussian_noise(0, range(48), 0, SHAPE), lambda k: None)
    expected = ((images.double() - teacher.finals.double()) ** 2).mean().item()
    assert final_image_error(denoiser, sampler, teacher.finals, batch_size=5) == pytest.approx(expected)


def test_tune_schedule_records_what_it_did(toy):
    schedule, denoiser, _ = toy
    calls = []
    tuned = tune_schedule(
        denoiser, schedule, SHAPE, nfe=5, source_sha256="a" * 64, trajectories=20, batch_size=8, teacher_steps=50,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert tuned.nfe == 5 and tuned.timesteps[0] == inference_timesteps(schedule, 50, "leading")[0]
    assert list(tuned.timesteps) == sorted(set(tuned.timesteps), reverse=True)
    assert calls[-1] == (3 * (50 + 5), 3 * (50 + 5))
    assert tuned.cost > 0 and tuned.final_mse > 0


@pytest.mark.parametrize("name", ["ddpm", "ddim", "ddim-ab2", "ddim-ab3", "dpm-solver++"])
def test_explicit_timesteps_equal_the_placement_they_copy(name):
    schedule = NoiseSchedule()
    placed = make_sampler(name, schedule, 7, spacing="quadratic")
    given = make_sampler(name, schedule, 7, timesteps=list(placed.timesteps))
    assert given.timesteps == placed.timesteps
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    noise = torch.randn(2, 1, 4, 4) if placed.needs_noise(0) else None
    torch.testing.assert_close(given.step(0, x, eps, noise, None)[0], placed.step(0, x, eps, noise, None)[0])


@pytest.mark.parametrize(
    "timesteps,phrase",
    [([900, 900, 0], "distinct and descending"), ([0, 500], "distinct and descending"), ([1000, 0], r"\[0, 999\]"),
     ([], "at least one"), ([900.0, 0], "integers")],
)
def test_bad_explicit_timesteps_are_refused(timesteps, phrase):
    with pytest.raises(InvalidArgumentError, match=phrase):
        make_sampler("ddim", NoiseSchedule(), max(len(timesteps), 1), timesteps=timesteps)


def test_spacing_and_timesteps_together_are_refused():
    with pytest.raises(InvalidArgumentError, match="not both"):
        make_sampler("ddim", NoiseSchedule(), 2, spacing="leading", timesteps=[500, 0])


def test_a_step_count_other_than_the_timesteps_is_refused():
    with pytest.raises(InvalidArgumentError, match="2 timesteps given for 3 steps"):
        make_sampler("ddim", NoiseSchedule(), 3, timesteps=[500, 0])


def _schedule(**changes) -> TunedSchedule:
    return TunedSchedule(timesteps=(990, 400, 0), num_train_timesteps=1000, source_sha256="b" * 64, **changes)


def test_schedule_file_round_trips(tmp_path):
    path = _schedule(cost=0.5, final_mse=0.25, trajectories=8).write(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["format"] == SCHEDULE_FORMAT and data["nfe"] == 3 and data["timesteps"] == [990, 400, 0]
    assert read_schedule(path) == _schedule(cost=0.5, final_mse=0.25, trajectories=8)


def test_an_existing_schedule_file_is_replaced_only_with_force(tmp_path):
    path = _schedule().write(tmp_path / "s.json")
    with pytest.raises(OutputError, match="--force"):
        _schedule(cost=1.0).write(path)
    _schedule(cost=1.0).write(path, force=True)
    assert read_schedule(path).cost == 1.0


@pytest.mark.parametrize(
    "change,phrase",
    [({"format": "other/1"}, "is not a vmddpm-deploy-timesteps/1 file"),
     ({"timesteps": [0, 990, 400]}, "distinct and descending"),
     ({"timesteps": [1200, 400, 0]}, r"\[0, 999\]"),
     ({"timesteps": "990,400,0"}, "must be a list"),
     ({"nfe": 4}, "nfe is 4 but it lists 3"),
     ({"source_sha256": "xyz"}, "sha256"),
     ({"extra": 1}, "unknown field"),
     ({"num_train_timesteps": 0}, "positive integer")],
)
def test_bad_schedule_files_are_one_clear_error(tmp_path, change, phrase):
    data = _schedule().to_dict() | change
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidArgumentError, match=phrase) as info:
        read_schedule(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_file_that_is_not_json_is_one_clear_error(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(InvalidArgumentError, match="is not JSON"):
        read_schedule(path)
    with pytest.raises(InvalidArgumentError, match="no such file"):
        read_schedule(tmp_path / "missing.json")
