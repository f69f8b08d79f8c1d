"""Step draws are a pure function of (seed, step): epochs are permutations, nothing depends on history."""

from __future__ import annotations

import numpy as np
import torch

from vmddpm_deploy.data.batches import batch_indices, step_draws


def test_each_epoch_visits_every_image_once_even_across_batch_boundaries():
    n, batch = 10, 4  # batches straddle epochs: 4 + 4 + (2 | 2) + ...
    seen = np.concatenate([batch_indices(7, step, batch, n) for step in range(10)])  # 40 draws = 4 epochs
    for epoch in range(4):
        assert sorted(seen[epoch * n : (epoch + 1) * n].tolist()) == list(range(n))
    assert seen[:n].tolist() != seen[n : 2 * n].tolist()  # a new order each epoch


def test_a_step_draws_the_same_whatever_came_before():
    direct = step_draws(3, 41, 8, 50, (1, 4, 4), 1000)
    for step in range(41):  # walk the run up to step 41 first
        step_draws(3, step, 8, 50, (1, 4, 4), 1000)
    again = step_draws(3, 41, 8, 50, (1, 4, 4), 1000)
    np.testing.assert_array_equal(direct.indices, again.indices)
    assert torch.equal(direct.noise, again.noise) and torch.equal(direct.t, again.t)
    assert torch.equal(direct.hflip, again.hflip)


def test_different_steps_and_seeds_draw_differently():
    a, b, c = (step_draws(s, k, 8, 50, (1, 4, 4), 1000) for s, k in ((0, 0), (0, 1), (1, 0)))
    assert not torch.equal(a.noise, b.noise) and not torch.equal(a.noise, c.noise)
    assert not torch.equal(a.t, b.t) and a.t.min() >= 0 and a.t.max() < 1000
