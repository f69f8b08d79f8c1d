"""The bundled brain MRI slices: present, verified, the documented shapes, splits and contents."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vmddpm_deploy.data import bundled, load_bundled, load_dataset
from vmddpm_deploy.errors import DataError


def test_splits_partition_the_slices_at_both_sizes():
    manifest = json.loads(bundled.BUNDLED_MANIFEST.read_text())
    for size in (32, 64):
        train, heldout, everything = (load_bundled(split, size) for split in ("train", "heldout", "all"))
        assert train.images.shape == (manifest["train"], 1, size, size) and train.images.dtype == np.uint16
        assert len(heldout) == manifest["heldout"] and len(everything) == manifest["images"]
        assert len(train) + len(heldout) == len(everything) and len(heldout) >= 50
        assert not set(train.names) & set(heldout.names)
    assert manifest["images"] >= 300 and manifest["bytes"] < 5_000_000


def test_images_span_the_full_range_with_a_dark_background():
    data = load_bundled("all", 32)
    assert data.images.min() == 0 and data.images.max() >= 65000
    background = (data.images == 0).mean(axis=(1, 2, 3))
    assert 0.2 < np.median(background) < 0.8  # a brain in the middle of a black frame


def test_t1_slices_are_left_right_symmetric_brains_and_contrasts_differ():
    """The templates are symmetric (nlin_sym): an axial slice matches its mirror image."""
    data = load_bundled("all", 64)
    x = data.images[:, 0].astype(np.float64)
    t1 = np.array([name.startswith("mni152_t1#") for name in data.names])
    mid = np.array([int(name.rsplit("=", 1)[1]) for name in data.names])
    for k in np.flatnonzero(t1 & (mid == 80)):
        assert np.corrcoef(x[k].ravel(), x[k][:, ::-1].ravel())[0, 1] > 0.9
    by_contrast = {c: x[[n.startswith(f"mni152_{c}#axial=80") for n in data.names]] for c in ("t1", "gm", "wm")}
    assert all(len(v) == 1 for v in by_contrast.values())
    assert np.corrcoef(by_contrast["gm"].ravel(), by_contrast["wm"].ravel())[0, 1] < 0.9


def test_load_dataset_names_bundled_splits():
    assert len(load_dataset("bundled", 32)) == len(load_bundled("train", 32))
    assert load_dataset("bundled:heldout", 64).source == "bundled:heldout"
    with pytest.raises(DataError, match="unknown bundled split"):
        load_dataset("bundled:validation", 32)


def test_unsupported_sizes_and_corruption_are_data_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="needs 128x128.*--preset tiny or small"):
        load_bundled("train", 128)
    corrupt = tmp_path / bundled.BUNDLED_FILE.name
    shutil.copy(bundled.BUNDLED_FILE, corrupt)
    with open(corrupt, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff\xff\xff")
    monkeypatch.setattr(bundled, "BUNDLED_FILE", corrupt)
    with pytest.raises(DataError, match="does not match its manifest's sha256"):
        load_bundled("train", 32)
