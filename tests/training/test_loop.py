"""Training on a micro model: files, EMA semantics, exact resume, and refusals."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from vmddpm_deploy.checkpoint import init_checkpoint, load_checkpoint
from vmddpm_deploy.data import ImageDataset
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import CheckpointError, DataError, InvalidArgumentError, OutputError
from vmddpm_deploy.training import TrainSettings, loss_log_path, samples_dir, train, train_state_path


def blobs(n: int = 12, size: int = 8, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(2, size - 2), rng.uniform(2, size - 2), rng.uniform(1.5, 3)
        images.append(((x - cx) ** 2 + (y - cy) ** 2 < r**2) * 60000 + rng.integers(0, 3000, (size, size)))
    stacked = np.stack(images).astype(np.uint16)[:, None]
    return ImageDataset(stacked, tuple(f"blob{k}" for k in range(n)), f"blobs:{seed}", "folder")


SETTINGS = TrainSettings(steps=4, batch_size=3, lr=1e-3, warmup_steps=2, checkpoint_every=2)


def test_a_short_run_writes_checkpoint_state_and_loss_log(tmp_path, micro_config):
    out = tmp_path / "run" / "ckpt.pt"
    # DDIM: on 4 steps' weights a second-order solver saturates the micro model's tiles to flat fills.
    result = train(blobs(), out, dataclasses.replace(SETTINGS, sample_every=4, sample_sampler="ddim"), micro_config)
    assert result.steps_done == 4 and result.steps_run == 4 and len(result.losses) == 4
    assert all(np.isfinite(result.losses)) and result.ms_per_step > 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.config == micro_config and checkpoint.ema is not None
    init = init_checkpoint(micro_config, NoiseSchedule(), seed=0).model
    moved = [k for k in init if not torch.equal(init[k], checkpoint.model[k])]
    assert len(moved) > len(init) // 2  # gradients reached most parameters
    with open(loss_log_path(out)) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["step", "loss"] and [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], result.losses, rtol=1e-5)
    assert result.grids == (samples_dir(out) / "step_0000004.png",) and result.grid_seconds > 0
    grid = np.asarray(Image.open(result.grids[0]))
    # 4 x 4 tiles, each 8 x 8 scaled up 16 times, 2-pixel grey gaps between them; 8 bits per channel.
    assert grid.shape == (4 * 128 + 3 * 2, 4 * 128 + 3 * 2, 3) and grid.dtype == np.uint8
    assert (grid[128:130, :] == 128).all() and (grid[:, 128:130] == 128).all()
    assert len(np.unique(grid[:128, :128])) > 8, "a tile should hold an image, not a flat fill"


def test_ema_follows_diffusers_warmup_decay(tmp_path, micro_config):
    """After step 1 the decay is min(0.999, (1 + 0) / (10 + 0)) = 0.1: ema = 0.1 init + 0.9 theta_1."""
    out = tmp_path / "ckpt.pt"
    train(blobs(), out, dataclasses.replace(SETTINGS, steps=1, checkpoint_every=1), micro_config)
    checkpoint = load_checkpoint(out)
    init = init_checkpoint(micro_config, NoiseSchedule(), seed=0).model
    for key, value in checkpoint.ema.items():
        torch.testing.assert_close(value, 0.1 * init[key] + 0.9 * checkpoint.model[key], rtol=1e-5, atol=1e-6)


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, micro_config):
    data = blobs()
    straight = train(data, tmp_path / "a.pt", dataclasses.replace(SETTINGS, steps=6), micro_config)
    first = train(data, tmp_path / "b.pt", dataclasses.replace(SETTINGS, steps=3), micro_config)
    assert first.losses == straight.losses[:3]
    resumed = train(data, tmp_path / "b.pt", dataclasses.replace(SETTINGS, steps=6), resume=True)
    assert resumed.steps_run == 3 and resumed.losses == straight.losses  # bit for bit
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]) and torch.equal(a.ema[key], b.ema[key])


def test_resume_refuses_other_settings_data_or_missing_state(tmp_path, micro_config):
    out = tmp_path / "ckpt.pt"
    train(blobs(), out, dataclasses.replace(SETTINGS, steps=2), micro_config)
    with pytest.raises(InvalidArgumentError, match=r"--lr 0.001 -> 0.002"):
        train(blobs(), out, dataclasses.replace(SETTINGS, lr=2e-3), resume=True)
    with pytest.raises(DataError, match="the data differ"):
        train(blobs(seed=1), out, SETTINGS, resume=True)
    with pytest.raises(InvalidArgumentError, match="model config differs.*base_channels"):
        train(blobs(), out, SETTINGS, dataclasses.replace(micro_config, base_channels=16), resume=True)
    with pytest.raises(CheckpointError, match="train-state not found"):
        train(blobs(), tmp_path / "other.pt", SETTINGS, resume=True)
    train_state_path(out).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable train state"):
        train(blobs(), out, SETTINGS, resume=True)


def test_new_run_refuses_to_overwrite_and_checks_the_data_size(tmp_path, micro_config):
    out = tmp_path / "ckpt.pt"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists.*--resume.*--force"):
        train(blobs(), out, SETTINGS, micro_config)
    assert out.read_bytes() == b"precious"
    with pytest.raises(DataError, match="the data is 16x16, the model 8x8"):
        train(blobs(size=16), tmp_path / "new.pt", SETTINGS, micro_config)


def test_should_stop_ends_with_a_checkpoint_that_resumes(tmp_path, micro_config):
    out = tmp_path / "ckpt.pt"
    calls = []
    result = train(
        blobs(), out, dataclasses.replace(SETTINGS, checkpoint_every=100), micro_config,
        should_stop=lambda: calls.append(1) or len(calls) >= 2,
    )
    assert result.stopped and result.steps_done == 2
    assert train(blobs(), out, SETTINGS, resume=True).steps_done == 4


def test_bfloat16_autocast_follows_the_fp32_loss_curve(tmp_path, micro_config):
    fp32 = train(blobs(), tmp_path / "a.pt", dataclasses.replace(SETTINGS, steps=3), micro_config)
    bf16 = train(blobs(), tmp_path / "b.pt", dataclasses.replace(SETTINGS, steps=3, amp=True), micro_config)
    np.testing.assert_allclose(bf16.losses, fp32.losses, rtol=3e-2)  # bf16 tolerance
    assert bf16.losses != fp32.losses  # autocast really ran in bfloat16


@pytest.mark.parametrize(
    "pause_at,in_flight",
    [(4, ".ckpt.pt.train-state.tmp-"),  # the 2nd checkpoint's train state: every file still at step 1
     (5, ".ckpt.pt.tmp-")],  # its ckpt.pt: the train state already at step 2, ckpt.pt and the log at step 1
)
def test_kill_9_during_a_checkpoint_write_then_resume_follows_the_same_loss_curve(
    tmp_path, micro_config, pause_at, in_flight
):
    """A real `train` subprocess is SIGKILLed inside a checkpoint write (tests/train_kill_runner.py
    pauses in the Nth atomic write, after the temporary file is written and before its rename)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    config = tmp_path / "micro32.json"
    config.write_text(json.dumps(micro_config.to_dict() | {"image_size": 32}))
    run = ("--data", "bundled", "--config", config, "--steps", 3, "--checkpoint-every", 1, "--batch-size", 2,
           "--device", "cpu", "--quiet")

    runner, root = Path(__file__).parents[1] / "train_kill_runner.py", Path(__file__).parents[2]

    def train_command(pause: int, *args) -> list[str]:  # every run in a fresh process, as a user runs them
        return [sys.executable, str(runner), str(pause), str(marker), "train", *map(str, args)]

    out, marker = tmp_path / "killed" / "ckpt.pt", tmp_path / "in-flight"
    straight = tmp_path / "straight" / "ckpt.pt"
    done = subprocess.run(train_command(0, *run, "-o", straight), cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    process = subprocess.Popen(train_command(pause_at, *run, "-o", out), cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate(timeout=5)[0].decode()[-2000:] if process.poll() is not None else "timeout"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert in_flight in marker.read_text()  # the kill hit that write

    # The previous checkpoint is intact: it loads, at step 1 like the log beside it.
    assert load_checkpoint(out).config.image_size == 32
    with open(loss_log_path(out)) as handle:
        assert [row[0] for row in csv.reader(handle)] == ["step", "1"]
    assert any(p.name.startswith(in_flight) for p in out.parent.iterdir())  # the write's remains

    done = subprocess.run(train_command(0, "--data", "bundled", "-o", out, "--resume", "--device", "cpu", "--quiet"),
                          cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 3
    assert loss_log_path(out).read_bytes() == loss_log_path(straight).read_bytes()  # the same curve, to the byte
    a, b = load_checkpoint(straight), load_checkpoint(out)
    assert all(torch.equal(a.model[key], b.model[key]) and torch.equal(a.ema[key], b.ema[key]) for key in a.model)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ckpt.pt", "ckpt.pt.loss.csv", "ckpt.pt.train-state"]
