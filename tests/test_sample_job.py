"""Sampling jobs on disk: shard invariance, exact resume after a kill, refused resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
from vmddpm_deploy.sample_job import JobSettings, SampleJob, Shard

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def denoiser():
    from vmddpm_deploy.model import ModelConfig

    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return TorchDenoiser(init_checkpoint(config, NoiseSchedule(), seed=0))


@pytest.fixture(scope="module")
def sampler():
    return make_sampler("ddim", NoiseSchedule(), 4, eta=0.5)


def settings(n=5, image_format="npz", shard=Shard(), steps=4) -> JobSettings:
    return JobSettings("f" * 64, n, "ddim", steps, 0.5, 11, image_format, shard)


def run(out, denoiser, sampler, batch_size=2, resume=False, **kwargs):
    job = SampleJob(out, settings(**kwargs), resume=resume)
    return job.run(denoiser, sampler, SHAPE, batch_size)


def load_npz(path):
    with np.load(path) as data:
        return data["indices"], data["images"].astype(np.int64)


def test_shards_together_equal_the_full_run(tmp_path, denoiser, sampler):
    run(tmp_path / "full", denoiser, sampler, batch_size=5)
    for index in (0, 1):
        run(tmp_path / "sharded", denoiser, sampler, batch_size=2, shard=Shard(index, 2))
    full_indices, full = load_npz(tmp_path / "full" / "samples.npz")
    i0, a = load_npz(tmp_path / "sharded" / "samples.shard-0-of-2.npz")
    i1, b = load_npz(tmp_path / "sharded" / "samples.shard-1-of-2.npz")
    assert i0.tolist() == [0, 2, 4] and i1.tolist() == [1, 3]
    merged = np.empty_like(full)
    merged[i0], merged[i1] = a, b
    assert full_indices.tolist() == [0, 1, 2, 3, 4]
    # Batch composition differs between the runs, so allow one 16-bit level of rounding.
    assert np.abs(merged - full).max() <= 1
    assert not (tmp_path / "sharded" / ".parts").exists() or not list((tmp_path / "sharded" / ".parts").iterdir())


class KilledAfter:
    """A denoiser that dies (like Ctrl-C) after ``calls`` calls."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def __call__(self, x, t):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.inner(x, t)


@pytest.mark.parametrize("image_format", ["png", "npz"])
def test_resume_after_kill_gives_the_uninterrupted_files(tmp_path, denoiser, sampler, image_format):
    run(tmp_path / "clean", denoiser, sampler, image_format=image_format)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run(killed, KilledAfter(denoiser, 4 + 2), sampler, image_format=image_format)  # dies in batch 2
    progress = json.loads((killed / "progress.json").read_text())
    assert progress["done"] == [0, 1]
    summary = run(killed, denoiser, sampler, image_format=image_format, resume=True)
    assert summary["images"] == 3 and summary["already_done"] == 2
    if image_format == "png":
        names = sorted(p.name for p in (tmp_path / "clean").glob("*.png"))
        assert names == sorted(p.name for p in killed.glob("*.png")) and len(names) == 5
        for name in names:
            assert (tmp_path / "clean" / name).read_bytes() == (killed / name).read_bytes()
    else:
        clean, resumed = load_npz(tmp_path / "clean" / "samples.npz"), load_npz(killed / "samples.npz")
        assert clean[0].tolist() == resumed[0].tolist()
        assert np.array_equal(clean[1], resumed[1])
    assert not list(killed.glob(".*tmp*"))


def test_resume_with_other_settings_is_refused(tmp_path, denoiser, sampler):
    run(tmp_path / "o", denoiser, sampler, n=2)
    with pytest.raises(InvalidArgumentError, match="n was 2, now 3"):
        SampleJob(tmp_path / "o", settings(n=3), resume=True)


def test_resume_trusts_only_files_on_disk(tmp_path, denoiser, sampler):
    out = tmp_path / "o"
    run(out, denoiser, sampler, n=3, image_format="png")
    (out / "00001.png").unlink()
    (out / "samples.json").unlink()
    job = SampleJob(out, settings(n=3, image_format="png"), resume=True)
    assert job.todo == [1]


@pytest.mark.parametrize("text,index,count", [("0/1", 0, 1), ("3/4", 3, 4), (" 1 / 2 ", 1, 2)])
def test_shard_parse(text, index, count):
    assert Shard.parse(text) == Shard(index, count)
    assert list(Shard(index, count).indices(9)) == [i for i in range(9) if i % count == index]
