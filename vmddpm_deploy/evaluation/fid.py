"""Frechet Inception Distance (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium", NeurIPS 2017, eq. 6).

Both feature sets are summarised by a Gaussian (mean, covariance); FID is the squared Frechet
(2-Wasserstein) distance between the two Gaussians:

    d^2 = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

Instead of ``scipy.linalg.sqrtm`` of the non-symmetric product S_a S_b (slow at 2048 x 2048,
and it returns spurious imaginary parts when the covariances are singular, which they always are
with fewer images than feature dimensions) we use a factor F of each covariance, S = F F^T:
S_a S_b = F_a (F_a^T F_b) F_b^T has the same non-zero eigenvalues as (F_a^T F_b)(F_a^T F_b)^T,
so tr((S_a S_b)^(1/2)) is the nuclear norm (sum of singular values) of F_a^T F_b, and
tr(S) = ||F||_F^2. With n <= d images F is the centred features themselves (d x n), so a
100-image FID costs a 100 x 100 SVD instead of three 2048 x 2048 decompositions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vmddpm_deploy.errors import DataError


@dataclass(frozen=True)
class FeatureStatistics:
    """mean: (d,) float64; factor: (d, k) float64 with factor @ factor.T the unbiased (n - 1)
    covariance of the ``count`` feature vectors; k = n when n <= d, else d."""

    mean: np.ndarray
    factor: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray, name: str = "the image set") -> FeatureStatistics:
        """features: (n, d); needs n >= 2 for a covariance."""
        if features.ndim != 2:
            raise DataError(f"features of {name} must be (n, d), got shape {features.shape}")
        n, d = features.shape
        if n < 2:
            raise DataError(f"FID needs at least 2 images per set; {name} has {n}")
        x = features.astype(np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        if n <= d:
            factor = centred.T / np.sqrt(n - 1)
        else:
            factor = _psd_sqrt(centred.T @ centred / (n - 1))
        return cls(mean, factor, n)

    @property
    def covariance(self) -> np.ndarray:
        """(d, d) unbiased covariance."""
        return self.factor @ self.factor.T


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative rounding noise -> 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """FID between two feature statistics (see the module docstring for the factor identity)."""
    if a.mean.shape != b.mean.shape:
        raise DataError(f"feature dimensions differ: {a.mean.shape[0]} vs {b.mean.shape[0]}")
    trace_sqrt = float(np.linalg.svd(a.factor.T @ b.factor, compute_uv=False).sum())
    mean_term = float(np.sum((a.mean - b.mean) ** 2))
    traces = float(np.sum(a.factor**2) + np.sum(b.factor**2))
    return max(mean_term + traces - 2.0 * trace_sqrt, 0.0)  # a squared distance; only rounding goes below 0
