"""`sample` run as separate processes gives the same bytes at any thread count, batch size, split,
Ray workers and resume point, on torch and on ONNX Runtime.

The untrained tiny preset at DDIM 20 (random weights amplify any rounding difference). Every run
is its own process, as a user starts it, so ``OMP_NUM_THREADS`` takes effect when torch starts.
Processes are few (CI has two cores): each case changes several things at once and is compared
with one plain run (2 threads, the default batch size, so two micro-batches side by side). One
format, PNG (a file per image, so shards share names with a plain run); every format's writing
under splits and resumes is tested in-process (tests/jobs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.model import preset

SETTINGS = ["--n", "5", "--steps", "20", "--sampler", "ddim", "--eta", "0.5", "--seed", "11", "--quiet"]


def command(src, out, *args) -> list[str]:
    return [sys.executable, "-c", "from vmddpm_deploy.cli import main; main()", "sample", str(src), *SETTINGS,
            "--out", str(out), *map(str, args)]


def environment(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def sample(src, out, *args, threads: int = 2) -> dict:
    done = subprocess.run(command(src, out, *args), env=environment(threads), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout.splitlines()[-1])


def files(out) -> dict[str, bytes]:
    """The images a job left (progress and summaries hold timings): file name -> bytes."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.endswith(".json")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_checkpoint(init_checkpoint(preset("tiny"), NoiseSchedule(), seed=0),
                           tmp_path_factory.mktemp("tiny") / "tiny.pt")


@pytest.fixture(scope="module")
def plain(tiny, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("plain") / "o"
    sample(tiny, out, "--format", "png")
    return files(out)


def test_one_thread_at_batch_size_1_changes_no_byte(tmp_path, tiny, plain):
    summary = sample(tiny, tmp_path / "o", "--format", "png", "--batch-size", 1, threads=1)
    assert summary["batch_size"] == 1
    assert files(tmp_path / "o") == plain


def test_shards_at_other_threads_and_batch_sizes_are_the_plain_runs_files(tmp_path, tiny, plain):
    sample(tiny, tmp_path / "o", "--format", "png", "--shard", "0/2", "--batch-size", 3, threads=1)
    sample(tiny, tmp_path / "o", "--format", "png", "--shard", "1/2", "--batch-size", 1, threads=2)
    assert files(tmp_path / "o") == plain


def test_ray_workers_write_the_plain_runs_files(tmp_path, tiny, plain):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'vmddpm-deploy[distributed]'")
    summary = sample(tiny, tmp_path / "o", "--format", "png", "--ray", "local", "--workers", "2")
    assert summary["workers"] == 2
    assert files(tmp_path / "o") == plain


def test_a_killed_run_resumed_with_other_threads_and_batch_size_is_the_plain_run(tmp_path, tiny, plain):
    out = tmp_path / "o"
    # 1 thread, batches of 4: killed once the first batch is on disk, while the second is being made.
    process = subprocess.Popen(command(tiny, out, "--format", "png", "--batch-size", 4), env=environment(1),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (out / "progress.json").exists() and process.poll() is None:
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    assert not (out / "samples.json").exists(), "the run finished before it was killed"
    summary = sample(tiny, out, "--format", "png", "--batch-size", 3, "--resume", threads=2)
    assert summary["already_done"] == 4 and summary["images"] == 1
    assert files(out) == plain


@pytest.fixture(scope="module")
def tiny_export(tiny, tmp_path_factory):
    from vmddpm_deploy.export import export_checkpoint

    out = tmp_path_factory.mktemp("export") / "tiny"
    export_checkpoint(tiny, out, dtypes=("fp32",), ops=("portable",))
    return out


def test_onnxruntime_gives_the_same_bytes_at_any_threads_batch_size_and_split(tmp_path, tiny_export):
    """3 images, one micro-batch per process (ONNX Runtime's single-threaded calls are the slow
    part): a plain run (batch 3, 2 threads) and a 2-way split whose shards differ from it in
    threads, batch size and each image's row in its call."""
    onnxruntime = ["--backend", "onnxruntime", "--format", "png", "--n", 3]  # the last --n counts
    summary = sample(tiny_export, tmp_path / "plain", *onnxruntime)
    assert summary["backend"] == "onnxruntime" and summary["images"] == 3
    sample(tiny_export, tmp_path / "split", *onnxruntime, "--shard", "0/2", "--batch-size", 2, threads=1)
    sample(tiny_export, tmp_path / "split", *onnxruntime, "--shard", "1/2", "--batch-size", 1, threads=2)
    assert files(tmp_path / "split") == files(tmp_path / "plain")
