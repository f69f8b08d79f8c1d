"""A run killed at any moment resumes to the files of an uninterrupted run, byte for byte.

Every change a job makes to its directory is an ``os.replace`` (a file, a part, ``progress.json``,
the merged volume, the summary, all through ``write_atomic``) or an unlink (merged parts, stale
temporaries). :class:`KillAt` stops the run just before the k-th of them, and from then on lets
nothing reach the disk, as a ``kill -9`` would: the temporary file being renamed stays behind.
Each test kills at every k in turn, resumes, and compares. ``benchmarks/kill_resume.py`` does the
same with real SIGKILLs at random times.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.jobs.conftest import SHAPE
from tests.jobs.test_output_dir import job_files, settings
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.sampling import sample_shard
from vmddpm_deploy.jobs.spec import Shard

N, BATCH = 5, 2


class Killed(BaseException):
    """The process died here."""


class KillAt:
    """Kill the run just before its ``kill_at``-th disk change (1-based); None: count them only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kill_at: int | None):
        self.kill_at, self.changes, self.dead = kill_at, 0, False
        replace, unlink = os.replace, Path.unlink

        def killed_replace(src, dst):
            self._change()
            return replace(src, dst)

        def killed_unlink(path, missing_ok=False):
            if self.dead:
                return None  # a dead process removes nothing, its temporary files included
            self._change()
            return unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(os, "replace", killed_replace)
        monkeypatch.setattr(Path, "unlink", killed_unlink)

    def _change(self) -> None:
        if not self.dead:
            self.changes += 1
            self.dead = self.changes == self.kill_at
        if self.dead:
            raise Killed


def run_shards(out, denoiser, sampler, image_format, count, resume=False):
    for index in range(count):
        job_settings = settings(N, image_format, Shard(index, count), steps=len(sampler.timesteps), batch_size=BATCH)
        sample_shard(OutputDir(out, job_settings, resume=resume), denoiser, sampler, SHAPE)


@pytest.fixture(scope="module")
def sampler():
    return make_sampler("ddim", NoiseSchedule(), 2, eta=0.5)  # 2 noisy steps: every kill point, quickly


@pytest.mark.slow
@pytest.mark.parametrize(
    "image_format,count",
    # Every format alone; a per-sample and a stacked one also split into shards, each killed in turn.
    [("png", 1), ("npz", 1), ("nifti", 1), ("nifti-volume", 1), ("png", 2), ("npz", 2)],
)
def test_a_kill_before_any_disk_change_resumes_to_the_same_files(
    tmp_path, monkeypatch, denoiser, sampler, image_format, count
):
    with monkeypatch.context() as patch:
        counter = KillAt(patch, None)
        run_shards(tmp_path / "clean", denoiser, sampler, image_format, count)
    clean = job_files(tmp_path / "clean")
    assert counter.changes > N and clean  # a file or a part per batch, progress after each, a summary
    for k in range(1, counter.changes + 1):
        out = tmp_path / f"killed-{k}"
        with monkeypatch.context() as patch, pytest.raises(Killed):
            KillAt(patch, k)
            run_shards(out, denoiser, sampler, image_format, count)
        run_shards(out, denoiser, sampler, image_format, count, resume=True)
        assert job_files(out) == clean, f"killed before disk change {k} of {counter.changes}"
        left = [p.name for p in (*out.glob(".*tmp*"), *out.glob(".parts/*"))]
        assert not left, f"killed before disk change {k}: {left} left behind"
