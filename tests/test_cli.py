"""The command line through Typer's CliRunner: happy paths and one clear line per bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vmddpm_deploy import __version__
from vmddpm_deploy.checkpoint import init_checkpoint, load_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def micro_ckpt(tmp_path, micro_config):
    return save_checkpoint(init_checkpoint(micro_config, NoiseSchedule(), seed=0), tmp_path / "micro.pt")


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.output!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"vmddpm-deploy {__version__}"


@pytest.mark.parametrize("command,phrase", [("init", "randomly initialised"), ("sample", "16-bit PNG")])
def test_help_reads_like_documentation(command, phrase):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert phrase in " ".join(result.output.split())
    assert "Example:" in result.output


def test_init_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "ckpt.pt"
    result = invoke("init", "--preset", "tiny", "--scan-order", "cross", "-o", out)
    assert result.exit_code == 0, result.output
    assert "3.48 M parameters" in result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.config.scan_order == "cross" and checkpoint.config.image_size == 32


def test_init_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "ckpt.pt"
    out.write_bytes(b"precious")
    result = invoke("init", "-o", out)
    assert result.exit_code == 5
    assert "already exists; pass --force" in error_line(result)
    assert out.read_bytes() == b"precious"


def test_init_unknown_preset_is_a_usage_error(tmp_path):
    result = invoke("init", "--preset", "huge", "-o", tmp_path / "c.pt")
    assert result.exit_code == 2
    assert "huge" in result.output and "is not one of" in " ".join(result.output.split())
    assert not (tmp_path / "c.pt").exists()


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
    # Same noise per sample; only batched-kernel rounding may differ, by at most one 16-bit level.
    assert np.abs(runs[1] - runs[3]).max() <= 1
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
    assert summary["images"] == 2 and summary["denoiser_calls"] == 2 and summary["sampler"] == "ddim"


def test_sample_refuses_to_mix_runs_without_resume(tmp_path, micro_ckpt):
    out = tmp_path / "o"
    assert invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--out", out).exit_code == 0
    again = invoke("sample", micro_ckpt, "--n", 2, "--steps", 2, "--out", out)
    assert again.exit_code == 5 and "pass --resume" in error_line(again)
    changed = invoke("sample", micro_ckpt, "--n", 2, "--steps", 3, "--out", out, "--resume")
    assert changed.exit_code == 2
    assert "--resume with different settings: steps was 2, now 3" in error_line(changed)


@pytest.mark.parametrize("shard", ["2/2", "a/b", "1/0", "-1/3"])
def test_sample_bad_shard(tmp_path, micro_ckpt, shard):
    result = invoke("sample", micro_ckpt, "--shard", shard, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--shard" in error_line(result)
    assert not (tmp_path / "o").exists()


def test_doctor_reports_native_kernels():
    from vmddpm_deploy.ops import native_library

    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    expected = "native cpu" if native_library.available() else "not loaded"
    assert expected in result.output


def test_doctor_says_when_the_native_library_is_missing(monkeypatch, tmp_path):
    from vmddpm_deploy.ops import native_library

    monkeypatch.setenv("VMDDPM_OPS_LIB", str(tmp_path / "missing.so"))
    native_library.reset()
    try:
        result = invoke("doctor")
    finally:
        monkeypatch.delenv("VMDDPM_OPS_LIB")
        native_library.reset()
    assert result.exit_code == 0
    assert "not loaded" in result.output and "reference" in result.output
