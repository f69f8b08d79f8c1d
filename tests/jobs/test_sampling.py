"""``sample_shard`` is the one sampling loop: ``sample``, the Ray workers, ``demo`` and
``benchmarks/bench_quality.py`` all make their images through it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vmddpm_deploy.cli import app
from vmddpm_deploy.demo import DemoSettings, run_demo
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.jobs import sampling
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.ray_workers import ShardWorker
from vmddpm_deploy.jobs.spec import JobSettings, Shard
from vmddpm_deploy.runtime.arithmetic import Arithmetic
from vmddpm_deploy.runtime.source import load_denoiser, open_source

from .conftest import SHAPE

BENCH_QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quality.py"


class LoopReached(Exception):
    """Raised by the patched loop: whatever a caller does after sampling is its own."""


@pytest.fixture
def loop_calls(monkeypatch):
    calls = []

    def patched(output, denoiser, sampler, image_shape, device="cpu", on_step=None):
        calls.append((output.out.name, output.settings.n, len(sampler.timesteps), tuple(image_shape)))
        raise LoopReached

    monkeypatch.setattr(sampling, "sample_shard", patched)
    return calls


def test_sample_ray_workers_demo_and_bench_quality_share_one_loop(loop_calls, micro_ckpt, tmp_path, monkeypatch):
    result = CliRunner().invoke(app, [
        "sample", str(micro_ckpt), "--n", "3", "--steps", "2", "--out", str(tmp_path / "sample"), "--quiet",
    ])
    assert isinstance(result.exception, LoopReached), result.output

    settings = JobSettings(sha256_file(micro_ckpt), 4, "ddim", 3, 0.0, 0, "png", Shard(0, 2), 2)
    worker, threads = ShardWorker(), torch.get_num_threads()
    try:
        worker.prepare(str(micro_ckpt), "torch", "cpu", str(tmp_path / "ray"), settings, False, 1)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(LoopReached):
        worker.run()

    with pytest.raises(LoopReached):
        run_demo(tmp_path / "demo", DemoSettings(n=5, steps=4, export=False, checkpoint=micro_ckpt))

    spec = importlib.util.spec_from_file_location("bench_quality", BENCH_QUALITY)
    bench_quality = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_quality", bench_quality)  # its dataclasses look their module up
    spec.loader.exec_module(bench_quality)
    source = open_source(micro_ckpt)
    with pytest.raises(LoopReached):
        bench_quality.run_cell("diffusers-ddim", 6, 0, 7, 7, source, load_denoiser(source, "torch"), None, None,
                               tmp_path / "quality", bench_quality.ROWS["diffusers-ddim"].make(source.schedule, 6))

    assert loop_calls == [
        ("sample", 3, 2, (1, 8, 8)),
        ("ray", 4, 3, (1, 8, 8)),
        ("demo", 5, 4, (1, 8, 8)),
        ("diffusers-ddim_nfe6_seed0", 7, 6, (1, 8, 8)),
    ]


def test_a_shard_is_filled_and_summarised(tmp_path, denoiser, sampler):
    arithmetic = Arithmetic("torch", "torch (test)", "cpu AVX512", "fp32", micro_batch=2)
    settings = JobSettings("f" * 64, 5, "ddim", len(sampler.timesteps), 0.5, 3, "npz", Shard(1, 2), 2, arithmetic=arithmetic)
    steps = []
    summary = sampling.sample_shard(OutputDir(tmp_path, settings, resume=False), denoiser, sampler, SHAPE,
                                    on_step=steps.append)
    with np.load(tmp_path / "samples.shard-1-of-2.npz") as npz:
        assert npz["indices"].tolist() == [1, 3] and npz["images"].shape == (2, *SHAPE)
    assert sum(steps) == pytest.approx(2.0)  # images, in fractions per step
    assert summary["images"] == 2 and summary["already_done"] == 0 and summary["padded_rows"] == 0
    assert summary["denoiser_calls"] == len(sampler.timesteps)  # one batch of 2
    again = sampling.sample_shard(OutputDir(tmp_path, settings, resume=True), denoiser, sampler, SHAPE)
    assert again["images"] == 0 and again["already_done"] == 2 and again["denoiser_calls"] == 0
