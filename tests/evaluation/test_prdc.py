"""Precision, recall, density and coverage against the authors' `prdc` package (Naeem et al. 2020)
on identical features, synthetic and real Inception ones."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.conftest import requires_extractor
from vmddpm_deploy.errors import DataError, InvalidArgumentError
from vmddpm_deploy.evaluation import InceptionFeatureExtractor, open_image_set, prdc
from vmddpm_deploy.evaluation.features import extract_features

reference = pytest.importorskip("prdc", reason="the reference `prdc` package is a dev dependency (pip install prdc)")


def ours_and_theirs(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[dict, dict]:
    ours = prdc.precision_recall_density_coverage(real, fake, k)
    theirs = reference.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {name: getattr(ours, name) for name in theirs}, {name: float(value) for name, value in theirs.items()}


@pytest.mark.parametrize(("n_real", "n_fake", "k", "shift"), [(60, 45, 5, 0.0), (40, 70, 3, 0.6), (25, 25, 1, 0.0)])
def test_equals_the_prdc_package_on_gaussian_features(n_real, n_fake, k, shift):
    """The fake cloud is narrower (and shifted), so the scores are not all 0 or 1."""
    rng = np.random.default_rng(n_real + n_fake + k)
    real = rng.normal(size=(n_real, 8)).astype(np.float32)
    fake = (0.7 * rng.normal(size=(n_fake, 8)) + shift).astype(np.float32)
    ours, theirs = ours_and_theirs(real, fake, k)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert sum(0.0 < value < 1.0 for value in ours.values()) >= 2  # not a trivially all-or-nothing case


def test_chunked_distances_give_the_same_scores(monkeypatch):
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(50, 16)), rng.normal(size=(41, 16)) + 0.3
    whole = prdc.precision_recall_density_coverage(real, fake, 4)
    monkeypatch.setattr(prdc, "CHUNK_ROWS", 7)
    assert prdc.precision_recall_density_coverage(real, fake, 4) == whole


def test_a_copy_of_the_real_set_scores_full_precision_and_coverage_and_a_far_cloud_zero():
    real = np.random.default_rng(3).normal(size=(30, 8))
    same = prdc.precision_recall_density_coverage(real, real.copy(), 5)
    assert (same.precision, same.recall, same.coverage) == (1.0, 1.0, 1.0)
    far = prdc.precision_recall_density_coverage(real, real + 100.0, 5)
    assert (far.precision, far.recall, far.density, far.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_too_few_images_or_a_bad_k_is_refused():
    features = np.zeros((5, 4))
    with pytest.raises(DataError, match="needs at least 6 images per set; the real set has 5"):
        prdc.precision_recall_density_coverage(features, np.ones((9, 4)), 5)
    with pytest.raises(InvalidArgumentError, match="--k must be at least 1"):
        prdc.precision_recall_density_coverage(features, features, 0)


@requires_extractor
def test_equals_the_prdc_package_on_inception_features_of_brain_slices():
    extractor = InceptionFeatureExtractor()
    real, _ = extract_features(open_image_set("bundled:heldout", 32).subset(14), extractor)
    fake, _ = extract_features(open_image_set("bundled:train", 32).subset(12, seed=1), extractor)
    ours, theirs = ours_and_theirs(real, fake, 3)
    assert ours == pytest.approx(theirs, abs=1e-12)
