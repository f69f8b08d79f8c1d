"""The memorization report: nearest training images by pixel correlation and Inception cosine,
calibrated by held-out images; a planted copy is found, unseen real images are not flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.evaluation.conftest import requires_extractor
from vmddpm_deploy.cli import app
from vmddpm_deploy.data import load_bundled
from vmddpm_deploy.errors import DataError
from vmddpm_deploy.evaluation import ImageSet, memorization
from vmddpm_deploy.outputs import write_npz

runner = CliRunner()


def array_set(source: str, images: np.ndarray) -> ImageSet:
    """Uncached (fingerprint None): the features below come from a stand-in network."""
    return ImageSet(source, tuple(images.shape[1:]), None, array=images)


class ProjectedPixels:
    """A stand-in feature network for the calibration logic (the real one is tested through the CLI
    below): a fixed random projection of 4x4-pooled pixels, so near-identical images get near-identical
    features and unrelated ones do not."""

    def __init__(self, channels: int, size: int):
        self.matrix = np.random.default_rng(0).normal(size=(channels * (size // 4) ** 2, 64)).astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        n, c, h, w = images.shape
        pooled = images.astype(np.float32).reshape(n, c, h // 4, 4, w // 4, 4).mean(axis=(3, 5))
        return np.maximum(pooled.reshape(n, -1) @ self.matrix, 0.0)


def test_pixel_pearson_equals_numpy_corrcoef():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(7, 3, 6, 5), dtype=np.uint8)
    b = rng.integers(0, 256, size=(9, 3, 6, 5), dtype=np.uint8)
    a[4] &= 0xFE  # even values, so that halving them is exact
    b[2] = a[4] // 2 + 60  # a linear transform of a[4]: correlation 1
    ours = memorization.unit_pixel_rows(a) @ memorization.unit_pixel_rows(b).T
    numpy = np.corrcoef(a.reshape(7, -1).astype(np.float64), b.reshape(9, -1).astype(np.float64))[:7, 7:]
    np.testing.assert_allclose(ours, numpy, rtol=0, atol=2e-6)
    assert ours[4, 2] == pytest.approx(1.0, abs=1e-6)


def test_constant_images_correlate_with_nothing():
    flat = np.full((1, 1, 4, 4), 7, np.uint8)
    other = np.random.default_rng(2).integers(0, 256, size=(3, 1, 4, 4), dtype=np.uint8)
    assert not np.any(memorization.unit_pixel_rows(flat) @ memorization.unit_pixel_rows(other).T)


def test_chunked_nearest_neighbours_equal_a_full_argmax(monkeypatch):
    rng = np.random.default_rng(3)
    queries = memorization.unit_rows(rng.normal(size=(23, 10)))
    references = memorization.unit_rows(rng.normal(size=(17, 10)))
    monkeypatch.setattr(memorization, "CHUNK_ROWS", 5)
    score, index = memorization.nearest_neighbours(queries, references)
    similarity = queries.astype(np.float64) @ references.astype(np.float64).T
    np.testing.assert_array_equal(index, similarity.argmax(axis=1))
    np.testing.assert_allclose(score, similarity.max(axis=1), atol=1e-6)


def bundled_split():
    """Training slices, and the held-out slices cut in two: one half plays 'generated', the other calibrates."""
    train = load_bundled("train", 32).images
    heldout = load_bundled("heldout", 32).images
    to8 = lambda images: ((images.astype(np.uint32) + 128) // 257).astype(np.uint8)  # noqa: E731
    return to8(train), to8(heldout[0::2]), to8(heldout[1::2])


def report_for(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray):
    return memorization.find_nearest_training_images(
        array_set("generated", generated), array_set("train", train), array_set("heldout", heldout),
        extractor=ProjectedPixels(1, 32), cache=False,
    )


def test_unseen_real_slices_are_not_flagged_as_copies():
    train, unseen, heldout = bundled_split()
    report = report_for(unseen, train, heldout)
    summary = report.summary()
    for measure in memorization.MEASURES:
        # Same distribution as the calibration set: about G / (H + 1) pass the held-out maximum by chance.
        assert summary["measures"][measure]["likely_copy_fraction"] <= 0.1
        assert 0.25 < float(np.mean(report.measures[measure].heldout_percentile)) < 0.75
    assert summary["notes"] == []


def test_a_planted_copy_is_found_and_flagged():
    train, unseen, heldout = bundled_split()
    rng = np.random.default_rng(4)
    noisy = np.clip(train[200].astype(np.int16) + rng.integers(-3, 4, size=train[200].shape), 0, 255).astype(np.uint8)
    generated = np.concatenate([unseen[:20], train[57:58], noisy[None]])
    report = report_for(generated, train, heldout)
    for measure, result in report.measures.items():
        assert list(result.nearest[20:]) == [57, 200], measure
        flagged = set(np.flatnonzero(result.likely_copy).tolist())
        assert 20 in flagged and len(flagged) <= 4, measure  # 20 unseen slices pass by chance at ~1 / 41 each
        assert result.closest(1)[0] == 20 and result.heldout_percentile[20] == 1.0
    pixel = report.measures["pixel_pearson"]  # the noisy copy too (the stand-in features pool the noise away
    assert pixel.likely_copy[21] and list(pixel.closest(2)) == [20, 21]  # and so do the held-out slices' neighbours)
    assert pixel.score[20] == pytest.approx(1.0, abs=1e-5) and pixel.score[21] < pixel.score[20]
    pairs = report.summary(pairs=2)["measures"]["pixel_pearson"]["closest_pairs"]
    assert pairs[0] == {
        "generated": "generated[20]", "train": "train[57]", "score": pixel.score[20], "heldout_percentile": 1.0
    }


def test_an_overlapping_heldout_set_is_called_out():
    train, unseen, _ = bundled_split()
    report = report_for(unseen[:5], train, np.concatenate([unseen[5:10], train[:1]]))
    assert "overlaps the training set" in report.notes()[0]


def test_report_files_are_written(tmp_path):
    train, unseen, heldout = bundled_split()
    report = report_for(unseen[:10], train[:40], heldout)
    files = memorization.write_report_files(report, tmp_path, pairs=4)
    data = json.loads((tmp_path / memorization.REPORT_JSON).read_text())
    assert data["n_generated"] == 10 and data["n_train"] == 40
    assert len(data["per_image"]["pixel_pearson"]["score"]) == 10
    assert len(data["measures"]["inception_cosine"]["closest_pairs"]) == 4
    assert data["files"]["histogram"] == files["histogram"]
    from PIL import Image

    for name in ("histogram", "sheet_pixel_pearson", "sheet_inception_cosine"):
        with Image.open(files[name]) as image:
            assert image.width > 200 and image.height > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [memorization.REPORT_JSON, memorization.HISTOGRAM_PNG]
        + [memorization.sheet_name(m) for m in memorization.MEASURES]
    )


@requires_extractor
def test_cli_finds_a_planted_copy_with_the_inception_network(tmp_path):
    train, unseen, heldout = bundled_split()
    train = train[::12]  # 27 training slices keep the Inception pass short
    write_npz(tmp_path / "train.npz", np.arange(len(train)), train)
    write_npz(tmp_path / "heldout.npz", np.arange(10), heldout[:10])
    write_npz(tmp_path / "generated.npz", np.arange(7), np.concatenate([unseen[:6], train[9:10]]))
    result = runner.invoke(
        app,
        ["evaluate", str(tmp_path / "generated.npz"), "--memorization", str(tmp_path / "train.npz"), "--heldout",
         str(tmp_path / "heldout.npz"), "--out", str(tmp_path / "report"), "--pairs", "3", "--json", "-"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])["memorization"]
    assert summary["n_generated"] == 7 and summary["n_train"] == 27 and summary["n_heldout"] == 10
    for measure in memorization.MEASURES:
        assert summary["measures"][measure]["closest_pairs"][0]["generated"].endswith("[6]")
        assert summary["measures"][measure]["closest_pairs"][0]["train"].endswith("[9]")
        assert summary["measures"][measure]["likely_copies"] >= 1
    assert summary["measures"]["inception_cosine"]["closest_pairs"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "report" / memorization.REPORT_JSON).is_file()
    text = runner.invoke(
        app,
        ["evaluate", str(tmp_path / "generated.npz"), "--memorization", str(tmp_path / "train.npz"), "--heldout",
         str(tmp_path / "heldout.npz"), "--out", str(tmp_path / "report")],
    )
    assert text.exit_code == 0, text.output
    assert "pixel_pearson     likely copies" in text.output and "report:" in text.output


@requires_extractor
def test_bundled_train_is_calibrated_by_the_bundled_heldout_slices_at_the_generated_size(tmp_path, monkeypatch):
    seen = {}

    def record(generated, train, heldout, **options):
        seen.update(train=(train.source, train.shape), heldout=(heldout.source, heldout.shape))
        raise DataError("stopped before feature extraction")

    monkeypatch.setattr(memorization, "find_nearest_training_images", record)
    write_npz(tmp_path / "generated.npz", np.arange(2), np.zeros((2, 1, 16, 16), np.uint16))
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "generated.npz"), "--memorization", "bundled:train", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 11 and "stopped before feature extraction" in result.output
    assert seen == {"train": ("bundled:train", (1, 16, 16)), "heldout": ("bundled:heldout", (1, 16, 16))}
