"""sample --ray: Ray workers on a local 2-CPU Ray instance leave the files of a job array."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from tests.jobs.test_output_dir import KilledAfter
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import ArtifactError, BackendUnavailableError, OutputError
from vmddpm_deploy.model import ModelConfig
from vmddpm_deploy.runtime.arithmetic import Arithmetic
from vmddpm_deploy.runtime.batching import CPU_MICRO_BATCH
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.sampling import sample_shard
from vmddpm_deploy.jobs.spec import JobSettings, Shard

runner = CliRunner()
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (starting one takes ~5 s): 2 CPUs, a small object store
    (it is only used for small results), no dashboard."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'vmddpm-deploy[distributed]'")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory):
    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return save_checkpoint(init_checkpoint(config, NoiseSchedule(), seed=0), tmp_path_factory.mktemp("ckpt") / "m.pt")


def settings(ckpt, n=5, image_format="png", shard: Shard | None = None, batch_size=2) -> JobSettings:
    """The settings a worker resolves for ``ckpt`` on this machine's CPU (so that shards made here and
    by Ray workers share a directory)."""
    from vmddpm_deploy.checkpoint import load_checkpoint

    here = TorchDenoiser(load_checkpoint(ckpt)).arithmetic()
    arithmetic = Arithmetic("torch", **here, micro_batch=CPU_MICRO_BATCH)
    return JobSettings(sha256_file(ckpt), n, "ddim", 3, 0.5, 11, image_format, shard or Shard(), batch_size, arithmetic=arithmetic)


def run_in_process(ckpt, out, shard, denoiser=None, resume=False, image_format="png"):
    """The job-array way: ``sample --shard I/N`` in this process, on one thread as each Ray worker
    here (2 CPUs / 2 workers), so that both sum in the same order and agree bit for bit."""
    from vmddpm_deploy.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(ckpt)
    output = OutputDir(out, settings(ckpt, image_format=image_format, shard=shard), resume=resume)
    sampler = make_sampler("ddim", checkpoint.schedule, 3, eta=0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sample_shard(output, denoiser or TorchDenoiser(checkpoint), sampler, SHAPE)
    finally:
        torch.set_num_threads(threads)


def test_ray_run_equals_the_job_array_and_the_single_process_run(tmp_path, ray_instance, micro_ckpt):
    out = tmp_path / "ray"
    result = runner.invoke(app, [
        "sample", str(micro_ckpt), "--n", "5", "--sampler", "ddim", "--steps", "3", "--eta", "0.5", "--precision", "fp32", "--seed", "11", "--batch-size", "2",
        "--out", str(out), "--ray", "local", "--workers", "2", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["workers"] == 2 and summary["images"] == 5 and summary["backend"] == "torch"
    assert summary["denoiser_calls"] == 3 * 3  # micro-batches of shard 0: [0, 2], [4]; of shard 1: [1, 3]
    for index in (0, 1):
        run_in_process(micro_ckpt, tmp_path / "array", Shard(index, 2))
    run_in_process(micro_ckpt, tmp_path / "single", Shard())
    names = [f"{i:05d}.png" for i in range(5)]
    assert sorted(p.name for p in out.glob("*.png")) == names
    for name in names:
        # Same shard, same batches: bit for bit the job array's file.
        assert (out / name).read_bytes() == (tmp_path / "array" / name).read_bytes()
        # Other micro-batch composition: every call is padded to the micro-batch, so bit for bit too.
        assert (out / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    for index in (0, 1):
        progress = json.loads((out / f"progress.shard-{index}-of-2.json").read_text())
        assert progress["done"] == list(range(index, 5, 2))
        assert (out / f"samples.shard-{index}-of-2.json").exists()


def test_ray_resumes_a_killed_job_array_and_vice_versa(tmp_path, ray_instance, micro_ckpt):
    from vmddpm_deploy.checkpoint import load_checkpoint
    from vmddpm_deploy.jobs.ray_workers import RayJob

    clean = tmp_path / "clean"
    for index in (0, 1):
        run_in_process(micro_ckpt, clean, Shard(index, 2), image_format="nifti-volume")
    out = tmp_path / "o"
    run_in_process(micro_ckpt, out, Shard(1, 2), image_format="nifti-volume")  # shard 1 finished
    with pytest.raises(KeyboardInterrupt):  # shard 0 killed in its second batch
        killed = KilledAfter(TorchDenoiser(load_checkpoint(micro_ckpt)), 3 + 1)
        run_in_process(micro_ckpt, out, Shard(0, 2), denoiser=killed, image_format="nifti-volume")
    progress = []
    with RayJob(
        micro_ckpt, settings(micro_ckpt, image_format="nifti-volume"), out, backend="torch", device="cpu",
        resume=True, workers=2,
    ) as job:
        assert job.already_done == 2 + 2
        summary = job.run(on_progress=progress.append)
    assert summary["already_done"] == 2 + 2 and summary["images"] == 1
    assert progress[-1] == 5
    for index in (0, 1):
        name = f"samples.shard-{index}-of-2.nii.gz"
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    # The Ray run's directory continues without Ray: nothing left to do.
    assert OutputDir(out, settings(micro_ckpt, image_format="nifti-volume", shard=Shard(0, 2)), resume=True).todo == []


def test_interrupted_ray_run_resumes_to_the_same_files(tmp_path, ray_instance, micro_ckpt, monkeypatch):
    from vmddpm_deploy.jobs import ray_workers

    def ctrl_c_after_a_batch(images):
        if images >= 3:  # steps of 2/3 image: 3 needs a finished batch; the last poll sees 5
            raise KeyboardInterrupt

    monkeypatch.setattr(ray_workers, "POLL_SECONDS", 0.0)  # poll all the time, not just every 0.5 s
    out = tmp_path / "o"
    job = ray_workers.RayJob(
        micro_ckpt, settings(micro_ckpt), out, backend="torch", device="cpu", workers=2
    )
    with pytest.raises(KeyboardInterrupt), job:
        job.run(on_progress=ctrl_c_after_a_batch)
    assert not list(out.glob(".*tmp*")), "the workers stop after finishing their writes"
    for index in (0, 1):  # continued without Ray, shard by shard, as a job array would
        run_in_process(micro_ckpt, out, Shard(index, 2), resume=True)
        run_in_process(micro_ckpt, tmp_path / "clean", Shard(index, 2))
    for i in range(5):
        name = f"{i:05d}.png"
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_a_stopped_worker_keeps_a_resumable_directory(tmp_path, micro_ckpt):
    """What a worker does on the driver's stop(), step by step (in this process, no Ray)."""
    from vmddpm_deploy.jobs.ray_workers import ShardWorker

    class StopAfter:
        def __init__(self, inner, calls):
            self.inner, self.calls = inner, calls

        def __call__(self, x, t):
            self.calls -= 1
            if self.calls == 0:
                worker.stop()  # arrives while batch 2 ([4]) is being denoised
            return self.inner(x, t)

    out = tmp_path / "o"
    worker = ShardWorker()
    done, backend, arithmetic = worker.prepare(
        str(micro_ckpt), "auto", "cpu", str(out), settings(micro_ckpt, shard=Shard(0, 2)), False, 1
    )
    assert (done, backend) == (0.0, "torch") and arithmetic == dataclasses.asdict(settings(micro_ckpt).arithmetic)
    worker._denoiser = StopAfter(worker._denoiser, 3 + 1)
    assert worker.run() is None
    assert worker.completed() == pytest.approx(2.0)  # batch 1; the stop is seen at the end of batch 2's step 1
    assert json.loads((out / "progress.shard-0-of-2.json").read_text())["done"] == [0, 2]
    assert not (out / "00004.png").exists() and not (out / "samples.shard-0-of-2.json").exists()
    summary = run_in_process(micro_ckpt, out, Shard(0, 2), resume=True)
    assert summary["images"] == 1 and summary["already_done"] == 2


def test_worker_errors_arrive_as_themselves(tmp_path, ray_instance, micro_ckpt):
    from vmddpm_deploy.jobs.ray_workers import RayJob

    run_in_process(micro_ckpt, tmp_path / "o", Shard(), resume=False)  # an unsharded run
    kwargs = {"backend": "torch", "device": "cpu", "workers": 2}
    mixed = RayJob(micro_ckpt, settings(micro_ckpt), tmp_path / "o", resume=True, **kwargs)
    with pytest.raises(OutputError, match=r"split into 1 shard\(s\) \(progress.json\)"), mixed:
        pass
    other_file = dataclasses.replace(settings(micro_ckpt), source_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="every node must see the same SRC"), RayJob(
        micro_ckpt, other_file, tmp_path / "p", **kwargs
    ):
        pass


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--ray", "local", "--workers", "3"], "--workers 3 needs 3 CPUs, the Ray cluster has 2"),
        (["--ray", "local", "--shard", "0/2"], "--shard and --ray both split the job"),
        (["--ray", "local", "--device", "cuda:1"], "pass --device cuda or cpu"),
        (["--workers", "2"], "--workers applies to --ray only"),
    ],
)
def test_ray_bad_arguments(tmp_path, ray_instance, micro_ckpt, args, phrase):
    result = runner.invoke(app, ["sample", str(micro_ckpt), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and phrase in lines[0]
    assert not (tmp_path / "o").exists()


def test_without_ray_installed_the_error_names_the_extra(tmp_path, micro_ckpt, monkeypatch):
    from vmddpm_deploy.jobs.ray_workers import RayJob

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    job = RayJob(micro_ckpt, settings(micro_ckpt), tmp_path / "o", backend="torch", device="cpu")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'vmddpm-deploy\[distributed\]'"), job:
        pass
    result = runner.invoke(app, ["sample", str(micro_ckpt), "--out", str(tmp_path / "o"), "--ray", "auto"])
    assert result.exit_code == 9 and "vmddpm-deploy[distributed]" in result.output
    assert not (tmp_path / "o").exists()
