"""Per-model timestep search: the few timesteps whose DDIM best reproduces a fine DDIM teacher.

After GITS (Chen et al. 2024, "A Geometric Perspective on Optimal Timesteps for Accelerating
Diffusion Sampling"): the teacher, our deterministic DDIM (``eta = 0``, clipped x0) over a fine
grid ``g_0 > g_1 > ... > g_{G-1}`` (default the DDIM-100 ``leading`` timesteps), runs ``N``
trajectories from the noise ``sample`` would give samples ``0 .. N-1`` at the seed, and records
its ``x`` and its ``eps`` at every grid point, and its final image. Node ``G`` is that clean end.

    cost(i, j) = mean over trajectories and pixels of
                 (one DDIM step from the teacher's x_i with the teacher's eps_i to node j  -  x_j)^2

for ``i < j`` (node ``G``: the step to the clean end, compared with the final image). The step is
:class:`~vmddpm_deploy.diffusion.ddim.DDIMSampler`'s own, so the cost measures the update the
chosen schedule will run. A schedule of ``nfe`` steps is a path ``0 = p_0 < p_1 < ... < p_nfe = G``;
dynamic programming finds the one with the least summed cost, and its timesteps are
``g_{p_0} .. g_{p_{nfe-1}}``. The path starts where the teacher starts, since the search has no
teacher state for a start at another noise level.

Only forward passes: ``N x G`` denoiser calls for the teacher, ``N x nfe`` for checking the tuned
DDIM against the teacher's final images (``final_mse``, an end-to-end measure the summed one-step
cost only stands in for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vmddpm_deploy.choices import DEFAULT_TEACHER_SPACING, DEFAULT_TEACHER_STEPS
from vmddpm_deploy.diffusion.ddim import DDIMSampler
from vmddpm_deploy.diffusion.denoiser import Denoiser
from vmddpm_deploy.diffusion.noise import gaussian_noise
from vmddpm_deploy.diffusion.reverse_process import run_sampler
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.diffusion.schedule_file import TunedSchedule
from vmddpm_deploy.errors import InvalidArgumentError



@dataclass(frozen=True)
class TeacherCosts:
    """What the search needs from the teacher: its grid, the one-step cost between every pair of
    nodes (``(G + 1, G + 1)``, ``inf`` where ``j <= i``) and its final images."""

    grid: tuple[int, ...]
    cost: np.ndarray
    finals: torch.Tensor


def trajectory_noise(seed: int, indices: Sequence[int], image_shape: tuple[int, int, int]) -> torch.Tensor:
    """x_T of samples ``indices``: the noise ``sample`` starts them from at ``seed``."""
    return gaussian_noise(seed, indices, 0, image_shape)


def batches(trajectories: int, batch_size: int) -> list[range]:
    return [range(start, min(start + batch_size, trajectories)) for start in range(0, trajectories, batch_size)]


def teacher_costs(
    denoiser: Denoiser, schedule: NoiseSchedule, image_shape: tuple[int, int, int], *, trajectories: int,
    seed: int = 0, batch_size: int = 16, teacher_steps: int = DEFAULT_TEACHER_STEPS,
    device: torch.device | str = "cpu",
    on_call: Callable[[], None] | None = None,
) -> TeacherCosts:
    """Run the teacher on ``trajectories`` samples, ``batch_size`` at a time, and accumulate the
    cost matrix batch by batch (memory holds one batch's trajectory, not all of them).
    ``on_call()`` runs after every denoiser call."""
    if trajectories < 1:
        raise InvalidArgumentError(f"trajectories must be at least 1, got {trajectories}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch size must be at least 1, got {batch_size}")
    teacher = DDIMSampler(schedule, teacher_steps, spacing=DEFAULT_TEACHER_SPACING)
    grid = teacher.timesteps
    nodes = len(grid) + 1
    # One immutable one-step sampler per edge; its step(0) is the jump i -> j (or to the clean end).
    jumps = {}
    for i in range(len(grid)):
        for j in range(i + 1, nodes):
            timesteps = (grid[i], grid[j]) if j < len(grid) else (grid[i],)
            jumps[i, j] = DDIMSampler(schedule, len(timesteps), timesteps=timesteps)
    total = np.zeros((nodes, nodes), dtype=np.float64)
    finals = []
    with torch.no_grad():
        for indices in batches(trajectories, batch_size):
            x = trajectory_noise(seed, indices, image_shape).to(device)
            states, eps_list = [x], []
            for k, t in enumerate(grid):
                eps = denoiser(x, torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device))
                if on_call is not None:
                    on_call()
                eps_list.append(eps)
                x, _ = teacher.step(k, x, eps, None, None)
                states.append(x)
            finals.append(x.cpu())
            for (i, j), jump in jumps.items():
                predicted, _ = jump.step(0, states[i], eps_list[i], None, None)
                total[i, j] += float(torch.sub(predicted, states[j]).double().square().sum())
    per_element = trajectories * int(np.prod(image_shape))
    cost = np.full((nodes, nodes), np.inf)
    upper = np.triu_indices(nodes, k=1)
    cost[upper] = total[upper] / per_element
    return TeacherCosts(grid, cost, torch.cat(finals))


def best_path(cost: np.ndarray, nfe: int) -> tuple[list[int], float]:
    """The path ``0 = p_0 < ... < p_nfe = n - 1`` through an ``(n, n)`` cost matrix with the least
    summed ``cost[p_k, p_{k+1}]`` (dynamic programming over the number of steps taken), and that sum."""
    nodes = cost.shape[0]
    if isinstance(nfe, bool) or not isinstance(nfe, int) or not 1 <= nfe <= nodes - 1:
        raise InvalidArgumentError(f"nfe must be an integer in [1, {nodes - 1}] (the teacher's steps), got {nfe!r}")
    best = np.full((nfe + 1, nodes), np.inf)
    parent = np.zeros((nfe + 1, nodes), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, nfe + 1):
        for j in range(1, nodes):
            candidates = best[k - 1, :j] + cost[:j, j]
            i = int(np.argmin(candidates))
            best[k, j], parent[k, j] = candidates[i], i
    path = [nodes - 1]
    for k in range(nfe, 0, -1):
        path.append(int(parent[k, path[-1]]))
    return path[::-1], float(best[nfe, nodes - 1])


def final_image_error(
    denoiser: Denoiser, sampler: object, finals: torch.Tensor, *, seed: int = 0, batch_size: int = 16,
    device: torch.device | str = "cpu", on_call: Callable[[], None] | None = None,
) -> float:
    """Mean squared difference between ``sampler``'s images and the teacher's ``finals`` from the
    same noise (samples ``0 .. len(finals) - 1`` at ``seed``)."""
    squared = 0.0
    image_shape = tuple(finals.shape[1:])
    for indices in batches(finals.shape[0], batch_size):
        x_T = trajectory_noise(seed, indices, image_shape).to(device)
        callback = None if on_call is None else (lambda k, total: on_call())
        images = run_sampler(sampler, denoiser, x_T, lambda k: None, callback).cpu()
        squared += float(torch.sub(images, finals[indices.start:indices.stop]).double().square().sum())
    return squared / finals.numel()


def tune_schedule(
    denoiser: Denoiser, schedule: NoiseSchedule, image_shape: tuple[int, int, int], *, nfe: int, source_sha256: str,
    trajectories: int, seed: int = 0, batch_size: int = 16, teacher_steps: int = DEFAULT_TEACHER_STEPS,
    precision: str = "fp32", device: torch.device | str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> TunedSchedule:
    """The ``nfe`` timesteps of least summed cost, with the tuned DDIM's error against the teacher's
    final images; ``on_progress(calls done, calls in all)`` after every denoiser call."""
    if not 1 <= nfe <= teacher_steps:
        raise InvalidArgumentError(f"--nfe must be in [1, {teacher_steps}] (the teacher's steps), got {nfe}")
    calls_in_all = len(batches(trajectories, batch_size)) * (teacher_steps + nfe)
    done = 0

    def on_call() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, calls_in_all)

    teacher = teacher_costs(
        denoiser, schedule, image_shape, trajectories=trajectories, seed=seed, batch_size=batch_size,
        teacher_steps=teacher_steps, device=device, on_call=on_call,
    )
    return pick_schedule(denoiser, schedule, teacher, nfe=nfe, source_sha256=source_sha256, seed=seed,
                         batch_size=batch_size, precision=precision, device=device, on_call=on_call)


def pick_schedule(
    denoiser: Denoiser, schedule: NoiseSchedule, teacher: TeacherCosts, *, nfe: int, source_sha256: str,
    seed: int = 0, batch_size: int = 16, precision: str = "fp32", device: torch.device | str = "cpu",
    on_call: Callable[[], None] | None = None,
) -> TunedSchedule:
    """The schedule of ``nfe`` steps that ``teacher``'s costs give, checked against its final images
    (one teacher serves every ``nfe``)."""
    path, cost = best_path(teacher.cost, nfe)
    timesteps = tuple(teacher.grid[node] for node in path[:-1])
    tuned = DDIMSampler(schedule, nfe, timesteps=timesteps)
    error = final_image_error(denoiser, tuned, teacher.finals, seed=seed, batch_size=batch_size, device=device,
                              on_call=on_call)
    return TunedSchedule(
        timesteps=timesteps, num_train_timesteps=schedule.num_train_timesteps, source_sha256=source_sha256,
        teacher={"sampler": "ddim", "steps": len(teacher.grid), "spacing": DEFAULT_TEACHER_SPACING, "eta": 0.0},
        trajectories=teacher.finals.shape[0], seed=seed, precision=precision, cost=cost, final_mse=error,
    )
