"""Precision, recall, density and coverage of generated images in feature space.

Precision and recall: Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing
Generative Models", NeurIPS 2019. Density and coverage: Naeem et al., "Reliable Fidelity and
Diversity Metrics for Generative Models", ICML 2020 (eqs. 5 and 6 there restate all four).

Each real feature r_i gets a ball B(r_i, NND_k(r_i)) whose radius is the distance to its k-th
nearest other real feature; the fake features f_j get balls the same way among themselves:

    precision = 1/M sum_j 1[f_j in some real ball]                  (fidelity: fakes look real)
    recall    = 1/N sum_i 1[r_i in some fake ball]                  (diversity: reals are produced)
    density   = 1/(kM) sum_j sum_i 1[f_j in B(r_i, NND_k(r_i))]     (like precision, counts balls)
    coverage  = 1/N sum_i 1[the nearest fake of r_i is in B(r_i, NND_k(r_i))]

"In a ball" is strict (distance < radius), as in the authors' ``prdc`` package. Distances are
Euclidean in float64, built from Gram matrices in row chunks of the real set, so 10,000 x 10,000
features never hold more than one chunk of the distance matrix in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vmddpm_deploy.errors import DataError, InvalidArgumentError

DEFAULT_K = 5
#: Rows of one distance block: CHUNK_ROWS x n float64 stays at tens of MB for n = 10,000.
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x: (m, d), y: (n, d) float64 -> (m, n) ||x_i - y_j||^2 (rounding below 0 clipped)."""
    gram = x @ y.T
    squared = np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", y, y)[None, :] - 2.0 * gram
    return np.maximum(squared, 0.0)


def kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    """(n, d) -> (n,) squared distance of each feature to its k-th nearest other feature.

    The k + 1 smallest distances of a row include the feature itself (distance 0), so the radius is
    the (k + 1)-th smallest, as in the reference package (a duplicate counts as a neighbour).
    """
    radii = np.empty(len(features))
    for start in range(0, len(features), CHUNK_ROWS):
        block = squared_distances(features[start : start + CHUNK_ROWS], features)
        radii[start : start + len(block)] = np.partition(block, k, axis=1)[:, k]
    return radii


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_K) -> PrecisionRecall:
    """real: (N, d), fake: (M, d) features; both sets need more than k images."""
    check_k(k)
    for name, features in (("the real set", real), ("the generated set", fake)):
        if len(features) <= k:
            raise DataError(f"PRDC with k = {k} needs at least {k + 1} images per set; {name} has {len(features)}")
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    balls_holding_fake = np.zeros(len(fake), np.int64)  # per fake: how many real balls contain it
    real_in_fake_ball = np.zeros(len(real), bool)
    nearest_fake_in_ball = np.zeros(len(real), bool)
    for start in range(0, len(real), CHUNK_ROWS):
        block = squared_distances(real[start : start + CHUNK_ROWS], fake)  # (rows, M)
        radii = real_radii[start : start + len(block), None]
        balls_holding_fake += (block < radii).sum(axis=0)
        real_in_fake_ball[start : start + len(block)] = (block < fake_radii[None, :]).any(axis=1)
        nearest_fake_in_ball[start : start + len(block)] = block.min(axis=1) < radii[:, 0]
    return PrecisionRecall(
        precision=float((balls_holding_fake > 0).mean()),
        recall=float(real_in_fake_ball.mean()),
        density=float(balls_holding_fake.mean() / k),
        coverage=float(nearest_fake_in_ball.mean()),
        k=k,
    )


def check_k(k: int) -> None:
    if k < 1:
        raise InvalidArgumentError(f"--k must be at least 1, got {k}")
