"""Planning a job (SRC and sampler settings, nothing written) and preparing a shard (denoiser, batch
size, output directory)."""

from __future__ import annotations

import dataclasses

import pytest

from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.jobs import prepare
from vmddpm_deploy.jobs.prepare import plan_job, prepare_job
from vmddpm_deploy.runtime.source import open_source

JOB = {"n": 3, "sampler": "ddim", "steps": 2, "eta": 0.0, "seed": 0, "image_format": "png"}


def test_bad_sampler_settings_fail_before_anything_is_written(micro_ckpt, tmp_path):
    with pytest.raises(InvalidArgumentError):
        plan_job(micro_ckpt, **JOB | {"steps": 5000})
    with pytest.raises(InvalidArgumentError, match="eta"):
        plan_job(micro_ckpt, **JOB | {"sampler": "ddpm", "eta": 0.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["micro.pt"]


def test_an_opened_source_is_not_read_again(micro_ckpt, monkeypatch):
    source = open_source(micro_ckpt)
    monkeypatch.setattr(prepare, "open_source", lambda path: pytest.fail("SRC opened twice"))
    assert plan_job(source, **JOB).source is source


def test_prepare_resolves_the_batch_size_and_refuses_another_src(micro_ckpt, tmp_path):
    plan = plan_job(micro_ckpt, **JOB)
    output, denoiser, backend = prepare_job(plan, tmp_path / "out", backend="auto", device="cpu", resume=False)
    assert backend == "torch" and output.settings.batch_size == 3 and output.todo == [0, 1, 2]
    other = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, source_sha256="0" * 64))
    with pytest.raises(ArtifactError, match="every node must see the same SRC"):
        prepare_job(other, tmp_path / "other", backend="auto", device="cpu", resume=False)
    assert not (tmp_path / "other").exists()
