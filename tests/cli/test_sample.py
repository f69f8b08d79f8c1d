"""`vmddpm-deploy sample` through CliRunner: images, invariances, and one line per bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.cli.runner import error_line, invoke
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.choices import DEFAULT_SAMPLER, DEFAULT_SPACINGS


def test_sample_writes_16_bit_pngs(tmp_path, micro_ckpt):
    out = tmp_path / "samples"
    result = invoke("sample", micro_ckpt, "--n", 3, "--steps", 4, "--out", out, "--batch-size", 2)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["00000.png", "00001.png", "00002.png", "progress.json", "samples.json"]
    with Image.open(out / "00001.png") as image:
        assert image.size == (8, 8) and image.mode.startswith("I")
        pixels = np.asarray(image)
    assert pixels.max() > 255, "not using the 16-bit range"
    assert "wrote 3 images" in result.output and "ms per denoiser call" in result.output


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver++"])
def test_sample_is_batch_size_invariant(tmp_path, micro_ckpt, sampler):
    runs = {}
    for batch_size in (1, 3):
        out = tmp_path / f"b{batch_size}"
        eta = ["--eta", "0.5"] if sampler == "ddim" else []
        result = invoke(
            "sample", micro_ckpt, "--n", 3, "--steps", 6, "--sampler", sampler, *eta,
            "--batch-size", batch_size, "--format", "npz", "--out", out, "--seed", 7,
        )
        assert result.exit_code == 0, result.output
        with np.load(out / "samples.npz") as data:
            assert data["indices"].tolist() == [0, 1, 2]
            runs[batch_size] = data["images"].astype(np.int64)
    assert runs[1].shape == (3, 1, 8, 8)
    assert np.array_equal(runs[1], runs[3])  # every call has the same micro-batch of rows, on one thread
    assert np.abs(runs[1][0] - runs[1][1]).max() > 1000, "different samples should differ"


def test_sample_seed_changes_images(tmp_path, micro_ckpt):
    images = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        assert invoke("sample", micro_ckpt, "--n", 1, "--steps", 3, "--format", "npz", "--out", out, "--seed", seed).exit_code == 0
        images.append(np.load(out / "samples.npz")["images"])
    assert not np.array_equal(*images)


@pytest.mark.parametrize(
    "args,code,phrase",
    [
        (["--n", "0"], 2, "--n must be at least 1"),
        (["--n", "-4"], 2, "--n must be at least 1"),
        (["--steps", "2000"], 2, "steps"),
        (["--batch-size", "0"], 2, "--batch-size must be at least 1"),
        (["--seed", "-1"], 2, "--seed must be in [0, 2^64)"),
        (["--sampler", "ddpm", "--eta", "0.3"], 2, "eta applies to ddim only"),
    ],
)
def test_sample_bad_arguments_write_nothing(tmp_path, micro_ckpt, args, code, phrase):
    out = tmp_path / "out"
    result = invoke("sample", micro_ckpt, "--out", out, *args)
    assert result.exit_code == code
    assert phrase in error_line(result)
    assert not out.exists()


def test_sample_unknown_sampler(tmp_path, micro_ckpt):
    result = invoke("sample", micro_ckpt, "--sampler", "euler", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "euler" in result.output
    assert not (tmp_path / "o").exists()


def test_sample_missing_checkpoint(tmp_path):
    result = invoke("sample", tmp_path / "missing.pt", "--out", tmp_path / "o")
    assert result.exit_code == 4
    assert "checkpoint not found" in error_line(result)
    assert not (tmp_path / "o").exists()


def test_sample_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("this is not a checkpoint")
    result = invoke("sample", bad, "--out", tmp_path / "o")
    assert result.exit_code == 4
    assert "not a readable checkpoint" in error_line(result)
    assert not (tmp_path / "o").exists()


def test_sample_output_path_is_a_file(tmp_path, micro_ckpt):
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = invoke("sample", micro_ckpt, "--out", target)
    assert result.exit_code == 5
    assert "exists and is not a directory" in error_line(result)
    assert target.read_text() == "keep me"


def test_sample_quiet_prints_one_json_summary(tmp_path, micro_ckpt):
    import json

    result = invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--out", tmp_path / "q", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["images"] == 2 and summary["denoiser_calls"] == 2 and summary["sampler"] == DEFAULT_SAMPLER


def test_sample_refuses_to_mix_runs_without_resume(tmp_path, micro_ckpt):
    out = tmp_path / "o"
    assert invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--out", out).exit_code == 0
    again = invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--out", out)
    assert again.exit_code == 5 and "pass --resume to continue them, --force to replace them" in error_line(again)
    changed = invoke("sample", micro_ckpt, "--n", 2, "--steps", 3, "--out", out, "--resume")
    assert changed.exit_code == 2
    assert "--resume with different settings: --steps was 2, now 3;" in error_line(changed)


def test_resume_mismatch_names_every_differing_setting_most_telling_first(tmp_path, micro_ckpt, micro_config):
    out = tmp_path / "o"
    assert invoke("sample", micro_ckpt, "--n", 4, "--steps", 2, "--out", out).exit_code == 0
    other = save_checkpoint(init_checkpoint(micro_config, NoiseSchedule(), seed=5), tmp_path / "other.pt")
    result = invoke("sample", other, "--n", 2, "--steps", 2, "--format", "npz", "--seed", 3, "--out", out, "--resume")
    assert result.exit_code == 2
    line = error_line(result)
    # The batch size followed --n (4, then 2), but it does not change the images, so it is not named.
    changes = line.split("--resume with different settings: ")[1].split("; use the original")[0].split("; ")
    assert [change.split()[0] for change in changes] == ["SRC", "--n", "--format", "--seed"]
    assert changes[1:] == ["--n was 4, now 2", "--format was png, now npz", "--seed was 0, now 3"]


def test_force_replaces_the_samples_of_another_run(tmp_path, micro_ckpt):
    out = tmp_path / "o"
    assert invoke("sample", micro_ckpt, "--n", 3, "--steps", 2, "--out", out, "--seed", 1).exit_code == 0
    (out / "notes.txt").write_text("mine")
    forced = invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--format", "npz", "--out", out, "--force")
    assert forced.exit_code == 0, forced.output
    left = sorted(p.name for p in out.iterdir() if p.name != ".parts")  # .parts: empty once merged
    assert left == ["notes.txt", "progress.json", "samples.json", "samples.npz"]
    fresh = tmp_path / "fresh"
    assert invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--format", "npz", "--out", fresh).exit_code == 0
    assert (out / "samples.npz").read_bytes() == (fresh / "samples.npz").read_bytes()
    both = invoke("sample", micro_ckpt, "--out", out, "--force", "--resume")
    assert both.exit_code == 2 and "pass one" in error_line(both)


@pytest.mark.parametrize("shard", ["2/2", "a/b", "1/0", "-1/3"])
def test_sample_bad_shard(tmp_path, micro_ckpt, shard):
    result = invoke("sample", micro_ckpt, "--shard", shard, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--shard" in error_line(result)
    assert not (tmp_path / "o").exists()


def test_sample_records_spacing_and_precision_and_resume_checks_them(tmp_path, micro_ckpt):
    import json

    out = tmp_path / "o"
    args = ("sample", micro_ckpt, "--n", 2, "--steps", 4, "--sampler", "ddim-ab2", "--spacing", "quadratic", "--out", out)
    result = invoke(*args, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert "ddim-ab2 4 steps quadratic, backend torch bf16" in result.output
    settings = json.loads((out / "progress.json").read_text())["settings"]
    assert settings["spacing"] == "quadratic" and settings["precision"] == "bf16" and settings["sampler"] == "ddim-ab2"
    changed = invoke(*args, "--precision", "fp32", "--resume")
    assert changed.exit_code == 2
    assert "--resume with different settings: --precision was bf16, now fp32;" in error_line(changed)
    resumed = invoke(*args, "--precision", "bf16", "--resume")
    assert resumed.exit_code == 0, resumed.output


def test_sample_default_spacing_and_precision_are_recorded_resolved(tmp_path, micro_ckpt):
    import json

    out = tmp_path / "o"
    assert invoke("sample", micro_ckpt, "--n", 1, "--steps", 3, "--sampler", "dpm-solver++", "--out", out).exit_code == 0
    settings = json.loads((out / "progress.json").read_text())["settings"]
    assert settings["spacing"] == DEFAULT_SPACINGS["dpm-solver++"] and settings["precision"] in ("fp32", "bf16")


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--spacing", "quadratic", "--steps", "40"], "quadratic spacing repeats timesteps at 40 steps; use at most"),
        (["--spacing", "uniform"], "uniform"),
        (["--precision", "fp8"], "fp8"),
    ],
)
def test_sample_bad_spacing_or_precision_is_one_line(tmp_path, micro_ckpt, args, phrase):
    result = invoke("sample", micro_ckpt, "--out", tmp_path / "o", *args)
    assert result.exit_code == 2 and phrase in error_line(result)
    assert not (tmp_path / "o").exists()
