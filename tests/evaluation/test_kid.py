"""KID's unbiased MMD^2 against a direct double loop over pairs, and its subset averaging."""

from __future__ import annotations

import numpy as np
import pytest

from vmddpm_deploy.errors import DataError, InvalidArgumentError
from vmddpm_deploy.evaluation.kid import kernel_inception_distance, mmd2_unbiased


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Gretton et al.'s unbiased MMD^2, pair by pair, with k(a, b) = (a . b / d + 1)^3 in float64."""
    m, d = x.shape
    x, y = x.astype(np.float64), y.astype(np.float64)

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (m * m)


def features(seed: int, n: int, d: int = 8, shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, d)) + shift).astype(np.float32)


def test_mmd2_matches_the_pairwise_formula():
    x, y = features(0, 12), features(1, 12, shift=0.7)
    np.testing.assert_allclose(mmd2_unbiased(x, y), direct_mmd2(x, y), rtol=1e-5, atol=1e-6)


def test_whole_sets_of_equal_size_are_one_exact_subset():
    x, y = features(2, 10), features(3, 10, shift=0.5)
    kid = kernel_inception_distance(x, y, subsets=100, subset_size=1000)
    assert (kid.subsets, kid.subset_size, kid.std) == (1, 10, 0.0)
    np.testing.assert_allclose(kid.mean, direct_mmd2(x, y), rtol=1e-5, atol=1e-6)


def test_subset_average_estimates_the_full_set_mmd2():
    real, fake = features(4, 300, d=16), features(5, 200, d=16, shift=0.4)
    same = features(6, 200, d=16)
    kid_fake = kernel_inception_distance(fake, real, subsets=50, subset_size=60)
    kid_same = kernel_inception_distance(same, real, subsets=50, subset_size=60)
    assert kid_fake.subset_size == 60 and kid_fake.std > 0
    full = mmd2_unbiased(fake, real[:200])
    assert abs(kid_fake.mean - full) < 0.2 * full
    assert abs(kid_same.mean) < 0.1 * kid_fake.mean


def test_rejects_too_few_images_and_empty_subsets():
    with pytest.raises(DataError, match="at least 2 images"):
        kernel_inception_distance(features(7, 1), features(8, 5))
    with pytest.raises(InvalidArgumentError):
        kernel_inception_distance(features(7, 5), features(8, 5), subsets=0)
