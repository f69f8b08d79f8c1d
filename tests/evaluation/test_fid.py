"""FID's matrix algebra against scipy.linalg.sqrtm (pytorch-fid's formula) and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from vmddpm_deploy.errors import DataError
from vmddpm_deploy.evaluation.fid import FeatureStatistics, frechet_distance


def sqrtm_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook computation: sample covariances, scipy's sqrtm of their product, real part."""
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y)
    return float(np.real(np.sum((mu_x - mu_y) ** 2) + np.trace(s_x) + np.trace(s_y) - 2.0 * np.trace(root)))


def correlated(rng, n: int, d: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d))) * scale + shift


@pytest.mark.parametrize(
    ("n_x", "n_y", "d"),
    [(50, 60, 16), (300, 200, 32), (10, 12, 64), (40, 250, 24)],
    ids=["n<d-free full rank", "n>d both", "rank-deficient both", "mixed"],
)
def test_matches_scipy_sqrtm(n_x, n_y, d):
    rng = np.random.default_rng(n_x + n_y + d)
    x = correlated(rng, n_x, d)
    y = correlated(rng, n_y, d, scale=0.8, shift=0.3)
    ours = frechet_distance(FeatureStatistics.of(x), FeatureStatistics.of(y))
    np.testing.assert_allclose(ours, sqrtm_fid(x, y), rtol=1e-6)


def test_one_dimensional_closed_form():
    # For 1-D Gaussians FID = (mu_x - mu_y)^2 + (sigma_x - sigma_y)^2.
    rng = np.random.default_rng(1)
    x, y = rng.normal(2.0, 3.0, size=(500, 1)), rng.normal(-1.0, 0.5, size=(400, 1))
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    np.testing.assert_allclose(frechet_distance(FeatureStatistics.of(x), FeatureStatistics.of(y)), expected, rtol=1e-10)


@pytest.mark.parametrize("n", [5, 300])
def test_identical_sets_give_zero_and_covariance_is_np_cov(n):
    x = correlated(np.random.default_rng(2), n, 32)
    stats = FeatureStatistics.of(x)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    assert frechet_distance(stats, FeatureStatistics.of(x.copy())) < 1e-6 * np.trace(stats.covariance)


def test_mean_shift_adds_its_squared_norm():
    x = correlated(np.random.default_rng(3), 100, 8)
    shift = np.arange(8.0)
    np.testing.assert_allclose(
        frechet_distance(FeatureStatistics.of(x), FeatureStatistics.of(x + shift)), np.sum(shift**2), rtol=1e-7
    )


def test_needs_two_images_and_equal_dimensions():
    with pytest.raises(DataError, match="at least 2 images"):
        FeatureStatistics.of(np.zeros((1, 4)))
    with pytest.raises(DataError, match="dimensions differ"):
        frechet_distance(FeatureStatistics.of(np.eye(3, 4)), FeatureStatistics.of(np.eye(3, 5)))
