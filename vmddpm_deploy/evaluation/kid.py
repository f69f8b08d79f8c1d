"""Kernel Inception Distance (Binkowski et al., "Demystifying MMD GANs", ICLR 2018).

KID is the squared maximum mean discrepancy between the two feature distributions under the
cubic polynomial kernel k(x, y) = (x . y / d + 1)^3, estimated without bias and averaged over
random subsets of equal size (as in the paper's code, torch-fidelity and the StyleGAN tools:
100 subsets of at most 1000 features). Unlike FID it has an unbiased estimator, so numbers from
small sets are comparable with numbers from large ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vmddpm_deploy.errors import DataError, InvalidArgumentError

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x: (m, d), y: (k, d) -> (m, k) float64, k(x, y) = (x . y / d + 1)^3.

    The Gram matrix is a float32 matmul (the features are float32 and it dominates the cost);
    the kernel values and all sums over them are float64.
    """
    gram = (x.astype(np.float32) @ y.astype(np.float32).T).astype(np.float64)
    return (gram / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equally sized samples x, y: (m, d), m >= 2 (Gretton et al. 2012, eq. 3):

    sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
    - 2 sum_{i, j} k(x_i, y_j) / m^2
    """
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


@dataclass(frozen=True)
class KernelInceptionDistance:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kernel_inception_distance(
    generated: np.ndarray,
    real: np.ndarray,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = 0,
) -> KernelInceptionDistance:
    """generated: (n_g, d), real: (n_r, d) features -> mean and std of MMD^2 over ``subsets``
    random subsets of ``min(subset_size, n_g, n_r)`` features from each set (without replacement)."""
    if subsets < 1 or subset_size < 2:
        raise InvalidArgumentError(f"KID needs at least 1 subset of at least 2 images, got {subsets} x {subset_size}")
    for name, features in (("the generated set", generated), ("the real set", real)):
        if len(features) < 2:
            raise DataError(f"KID needs at least 2 images per set; {name} has {len(features)}")
    m = min(subset_size, len(generated), len(real))
    if m == len(generated) == len(real):
        subsets = 1  # every subset would be a permutation of the whole sets, and MMD^2 ignores order
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(
                generated[rng.choice(len(generated), m, replace=False)],
                real[rng.choice(len(real), m, replace=False)],
            )
            for _ in range(subsets)
        ]
    )
    return KernelInceptionDistance(float(values.mean()), float(values.std()), subsets, m)
