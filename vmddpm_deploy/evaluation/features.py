"""Inception features of an image set, batched, with an on-disk cache.

The cache holds one ``<key>.npy`` (n, 2048) float32 per image set, keyed by the extractor's
sha256, the preprocessing version and the set's fingerprint (file names, sizes, modification
times and the chosen subset), so re-evaluating against the same real folder costs nothing. It
lives in ``$VMDDPM_CACHE_DIR`` or ``$XDG_CACHE_HOME/vmddpm-deploy`` (``~/.cache/vmddpm-deploy``);
an unreadable entry is recomputed and an unwritable cache is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.errors import OutputError
from vmddpm_deploy.evaluation.image_sets import ImageSet
from vmddpm_deploy.evaluation.inception import EXTRACTOR_SHA256, FEATURE_DIM, InceptionFeatureExtractor

#: Bump when the preprocessing (quantisation, resize, scaling) changes: cached features go stale.
PREPROCESSING_VERSION = "uint8-tf1bilinear299-v1"


def feature_cache_dir() -> Path:
    if os.environ.get("VMDDPM_CACHE_DIR"):
        return Path(os.environ["VMDDPM_CACHE_DIR"]) / "fid-features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vmddpm-deploy" / "fid-features"


def extract_features(
    image_set: ImageSet,
    extractor: InceptionFeatureExtractor,
    batch_size: int = 32,
    cache: bool = True,
    on_images: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, bool]:
    """(features (n, 2048) float32, whether they came from the cache).

    ``on_images(k)`` is called after every batch with the number of images it held.
    """
    path = _cache_path(image_set) if cache else None
    if path is not None:
        cached = _read_cached(path, len(image_set))
        if cached is not None:
            if on_images is not None:
                on_images(len(image_set))
            return cached, True
    chunks = []
    for images in image_set.batches(batch_size):
        chunks.append(extractor(images))
        if on_images is not None:
            on_images(len(images))
    features = np.concatenate(chunks)
    if path is not None:
        _write_cached(path, features)
    return features, False


def _cache_path(image_set: ImageSet) -> Path | None:
    if image_set.fingerprint is None:
        return None
    key = hashlib.sha256(f"{EXTRACTOR_SHA256}\0{PREPROCESSING_VERSION}\0{image_set.fingerprint}".encode())
    return feature_cache_dir() / f"{key.hexdigest()}.npy"


def _read_cached(path: Path, count: int) -> np.ndarray | None:
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent or damaged: recompute
    if features.shape != (count, FEATURE_DIM) or features.dtype != np.float32:
        return None
    return features


def _write_cached(path: Path, features: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda handle: np.save(handle, features, allow_pickle=False))
    except (OSError, OutputError):
        pass  # the cache only saves time; a read-only home must not fail an evaluation
