"""`vmddpm-deploy train` through Typer's CliRunner: a micro run, resume, and one line per bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.cli import runner as cli
from tests.cli.runner import error_line
from vmddpm_deploy.checkpoint import is_safetensors_file, load_checkpoint
from vmddpm_deploy.choices import DEFAULT_SAMPLER

def invoke(*args):
    return cli.invoke("train", *args)


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(6):
        Image.fromarray(rng.integers(0, 65535, (12, 10), dtype=np.uint16)).save(folder / f"{k}.png")
    return folder


@pytest.fixture
def micro_json(tmp_path, micro_config):
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(micro_config.to_dict()))
    return path


def test_micro_run_then_resume(tmp_path, pngs, micro_json):
    out = tmp_path / "ckpt.safetensors"
    common = ("--data", pngs, "--config", micro_json, "--batch-size", 2, "--lr", "1e-3", "-o", out, "--device", "cpu")
    result = invoke(*common, "--steps", 2, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["images"] == 6 and summary["batch_size"] == 2
    assert load_checkpoint(out).config.image_size == 8 and is_safetensors_file(out)
    # --resume takes the run's settings, model and data; only --steps is given.
    result = invoke("-o", out, "--steps", 3, "--resume", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "trained to step 3 (1 steps" in " ".join(result.output.split())
    result = invoke("--data", pngs, "-o", out, "--steps", 3, "--resume", "--lr", "5e-4", "--device", "cpu")
    assert result.exit_code == 2 and "--lr 0.001 -> 0.0005" in error_line(result)


def test_resume_keeps_the_runs_total_and_checkpoint_cadence(tmp_path, pngs, micro_json):
    import torch

    out = tmp_path / "ckpt.pt"
    common = ("--data", pngs, "--config", micro_json, "--batch-size", 2, "-o", out, "--device", "cpu")
    result = invoke(*common, "--steps", 3, "--checkpoint-every", 1, "--quiet")
    assert result.exit_code == 0, result.output
    # Without --steps and --checkpoint-every, the resumed run keeps the run's 3 and 1, not the
    # defaults (10000 and 1000): it has nothing left to do.
    result = invoke("--data", pngs, "-o", out, "--resume", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["steps_run"] == 0
    result = invoke("--data", pngs, "-o", out, "--resume", "--steps", 4, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    state = torch.load(out.with_name(out.name + ".train-state"), weights_only=True)
    assert (state["settings"]["steps"], state["settings"]["checkpoint_every"]) == (4, 1)


def test_bad_data_path_is_one_data_error_line(tmp_path):
    result = invoke("--data", tmp_path / "missing", "-o", tmp_path / "ckpt.pt")
    assert result.exit_code == 11
    assert error_line(result).startswith("error: data path") and "does not exist" in result.output


def test_unreadable_file_names_the_file_and_skip_flag_continues(tmp_path, pngs, micro_json):
    (pngs / "broken.png").write_bytes(b"garbage")
    args = ("--data", pngs, "--config", micro_json, "--steps", 1, "--batch-size", 2, "--device", "cpu")
    result = invoke(*args, "-o", tmp_path / "a.pt")
    assert result.exit_code == 11
    assert "broken.png" in result.output and "--skip-bad-files" in result.output and "Traceback" not in result.output
    result = invoke(*args, "-o", tmp_path / "b.pt", "--skip-bad-files")
    assert result.exit_code == 0, result.output
    assert "1 unreadable files skipped" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "args,code,phrase",
    [
        (("--window", "5"), 2, "--window takes two numbers"),
        (("--percentiles", "60,40"), 2, "--percentiles needs"),
        (("--steps", "0"), 2, "--steps must be at least 1"),
        (("--slice-axis", "oblique"), 2, "unknown slice axis"),
        (("--device", "tpu:9"), 2, "is not a torch device"),
        (("--resume",), 4, "cannot resume"),
        (("--preset", "base"), 11, "needs 128x128"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, code, phrase):
    result = invoke("--data", "bundled", "-o", tmp_path / "ckpt.pt", *args)
    assert result.exit_code == code, result.output
    assert phrase in error_line(result)


def test_existing_checkpoint_needs_force(tmp_path):
    out = tmp_path / "ckpt.pt"
    out.write_bytes(b"precious")
    result = invoke("--data", "bundled", "-o", out)
    assert result.exit_code == 5 and "--force" in error_line(result)
    assert out.read_bytes() == b"precious"


def test_help_reads_like_documentation():
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Example:" in text and "--resume" in text and "--skip-bad-files" in text and "bundled" in text


def test_grids_use_the_sampling_default_and_are_reported_and_resized_data_noted_once(tmp_path, pngs, micro_json):
    out = tmp_path / "ckpt.pt"
    common = ("--data", pngs, "--config", micro_json, "--batch-size", 2, "-o", out, "--device", "cpu", "--steps", 2)
    result = invoke(*common, "--sample-every", 1, "--sample-steps", 3)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # The PNGs are 12 x 10 and the micro model 8 x 8; no preset trains at 12, so none is suggested.
    assert [line for line in lines if line.startswith("note:")] == [
        "note: the images are 12x10, the model 8x8: every image is resized to it"]
    grid_lines = [line for line in lines if "sample grid" in line]
    assert len(grid_lines) == 1 and grid_lines[0].startswith(f"2 sample grid(s) ({DEFAULT_SAMPLER} 3 steps) in ")
    assert grid_lines[0].endswith(f"{tmp_path / 'ckpt.samples'}/ (step_0000001.png, step_0000002.png)")

    quiet = invoke(*common, "--sample-every", 2, "--force", "--quiet")
    assert quiet.exit_code == 0, quiet.output
    summary = json.loads(quiet.output.strip().splitlines()[-1])
    assert summary["sample_grids"] == [str(tmp_path / "ckpt.samples" / "step_0000002.png")]
    assert summary["sample_grid_seconds"] > 0


def test_a_new_run_needs_data(tmp_path):
    result = invoke("-o", tmp_path / "ckpt.pt", "--steps", 1)
    assert result.exit_code == 2 and "a new training run needs --data" in error_line(result)
