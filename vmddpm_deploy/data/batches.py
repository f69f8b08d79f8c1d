"""What training step ``k`` draws, as a pure function of ``(seed, k)``: images, flips, t, noise.

Nothing carries over from one step to the next, so a run resumed at step ``k`` draws exactly
what an uninterrupted run draws there, and the same run on CPU and GPU sees the same data and
noise (drawn on the CPU, then moved).

Image order: the run walks the endless sequence ``perm(seed, 0) ++ perm(seed, 1) ++ ...`` of
per-epoch permutations of the ``n`` images; step ``k`` takes positions ``k*B .. k*B+B-1``, so
every image is seen once per epoch. Per-step draws come from a generator seeded with numpy's
``SeedSequence((seed, stream, k))``, which gives independent streams for different integer tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

_EPOCH_STREAM = 0
_STEP_STREAM = 1


def stream_seed(*words: int) -> int:
    """A 64-bit seed for the tuple ``words`` (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0])


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng(stream_seed(seed, _EPOCH_STREAM, epoch)).permutation(n)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Indices (batch_size,) into ``n`` images for ``step`` (see the module docstring)."""
    out = np.empty(batch_size, dtype=np.int64)
    position, filled = step * batch_size, 0
    while filled < batch_size:
        epoch, offset = divmod(position, n)
        take = min(batch_size - filled, n - offset)
        out[filled : filled + take] = epoch_permutation(seed, epoch, n)[offset : offset + take]
        filled, position = filled + take, position + take
    return out


@dataclass(frozen=True)
class StepDraws:
    """indices (B,) int64; hflip (B,) bool; t (B,) int64 in [0, T); noise (B, C, H, W) float32."""

    indices: np.ndarray
    hflip: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor


def step_draws(
    seed: int, step: int, batch_size: int, n: int, image_shape: tuple[int, int, int], num_timesteps: int
) -> StepDraws:
    generator = torch.Generator().manual_seed(stream_seed(seed, _STEP_STREAM, step))
    hflip = torch.rand(batch_size, generator=generator) < 0.5
    t = torch.randint(0, num_timesteps, (batch_size,), generator=generator)
    noise = torch.randn((batch_size, *image_shape), generator=generator)
    return StepDraws(batch_indices(seed, step, batch_size, n), hflip, t, noise)
