"""vmddpm_host's DDIM loop and RNG against the Python sampler.

The Python side (vmddpm_deploy.generation.generate with the torch backend) records every
denoiser call; the host replays the recorded eps but computes everything else itself: the
initial noise with its own counter RNG, the timesteps, the DDIM coefficients and steps, the
per-step noise, the batching. Its final images must match Python's.
"""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch
from PIL import Image

from typer.testing import CliRunner

from tests.host.artifacts import write_export_dir
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.diffusion import DEFAULT_SAMPLER, DEFAULT_STEPS, NoiseSchedule, gaussian_noise, make_sampler
from vmddpm_deploy.outputs import png_name, to_uint16
from vmddpm_deploy.runtime.eps_recording import EpsRecorder
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
from vmddpm_deploy.generation import generate


@pytest.fixture(scope="module")
def micro_checkpoint():
    from vmddpm_deploy.model import ModelConfig

    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return init_checkpoint(config, NoiseSchedule(), seed=0)


@pytest.mark.parametrize(
    "sampler_name,steps,eta,spacing,schedule_kind",
    # None: that setting is given to neither side, so the host's default must be Python's.
    [("ddim", 10, 0.0, "leading", "linear"), ("ddim", 7, 0.6, "trailing", "linear"),
     ("ddim", 9, 1.0, "linspace", "cosine"), (None, None, 0.0, None, "linear"), ("ddim", 10, 0.0, None, "linear"),
     ("ddim-ab2", 7, 0.0, None, "cosine"),
     ("ddim", 8, 0.0, "quadratic", "linear"), ("ddim", 8, 0.5, "karras", "linear"),
     ("ddim", 12, 0.0, "logsnr", "linear"), ("ddim", 5, 0.0, "karras", "cosine"),
     ("ddim", 8, 0.0, "logsnr", "cosine"), ("ddim-ab2", 8, 0.0, "quadratic", "linear"),
     ("ddim-ab3", 9, 0.0, "logsnr", "linear"), ("ddim-ab2", 6, 0.0, "leading", "cosine"),
     ("ddim-ab3", 2, 0.0, "trailing", "linear"), ("dpm-solver++", 8, 0.0, "quadratic", "linear"),
     ("dpm-solver++", 6, 0.0, "linspace", "linear"), ("dpm-solver++", 5, 0.0, "leading", "cosine"),
     ("dpm-solver++", 7, 0.0, "trailing", "linear"), ("dpm-solver++", 5, 0.0, "karras", "cosine")],
)
def test_replay_reproduces_python_sampler(host, micro_checkpoint, tmp_path, sampler_name, steps, eta, spacing,
                                          schedule_kind):
    checkpoint = micro_checkpoint
    if schedule_kind != checkpoint.schedule.kind:
        checkpoint = init_checkpoint(checkpoint.config, NoiseSchedule(kind=schedule_kind), seed=0)
    config = checkpoint.config
    image_shape = (config.in_channels, config.image_size, config.image_size)
    n, batch_size, seed = 5, 3, 2**63 + 11  # two batches: 3 + 2; a seed above 2**63 (unsigned)

    recorder = EpsRecorder(TorchDenoiser(checkpoint), tmp_path / "eps.bin", image_shape)
    sampler = make_sampler(sampler_name or DEFAULT_SAMPLER, checkpoint.schedule, steps or DEFAULT_STEPS, eta=eta,
                           spacing=spacing)
    batches = list(generate(recorder, sampler, seed, list(range(n)), image_shape, batch_size))
    expected = torch.cat([x0 for _, x0 in batches]).numpy()

    export_dir = write_export_dir(tmp_path / "export", checkpoint)
    recording = recorder.close()
    out = tmp_path / "samples"
    given = {"--sampler": sampler_name, "--steps": steps, "--spacing": spacing}
    result = host.run(
        "sample", "--export-dir", export_dir, "--replay", recording, "--n", n, "--batch-size", batch_size,
        *[part for option, value in given.items() if value is not None for part in (option, value)],
        "--eta", eta, "--seed", seed, "--out", out, "--npy", tmp_path / "x0.npy",
    )
    assert result.returncode == 0, result.stderr
    assert f"replayed {recorder.calls} denoiser calls" in result.stdout

    images = np.load(tmp_path / "x0.npy")
    assert images.shape == expected.shape
    assert np.abs(images - expected).max() <= 1e-5
    # The samples moved away from their initial noise (the test would pass vacuously otherwise).
    assert np.abs(expected - gaussian_noise(seed, range(n), 0, image_shape).numpy()).max() > 0.1

    for index in range(n):
        written = np.asarray(Image.open(out / png_name(index, n)), dtype=np.int64)
        # One uint16 level is 3e-5 in [-1, 1]: float noise below 1e-5 can move a rounding by one.
        assert np.abs(written - to_uint16(expected[index, 0]).astype(np.int64)).max() <= 1


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_replay_at_the_manifests_timesteps_reproduces_python(host, micro_checkpoint, tmp_path, eta):
    # export --timesteps records a tune-schedule file's list; the host samples at it when neither
    # --steps nor --spacing is given, as sample --timesteps does in Python.
    checkpoint = micro_checkpoint
    config = checkpoint.config
    image_shape = (config.in_channels, config.image_size, config.image_size)
    timesteps = (990, 610, 330, 120, 40)
    recorder = EpsRecorder(TorchDenoiser(checkpoint), tmp_path / "eps.bin", image_shape)
    sampler = make_sampler("ddim", checkpoint.schedule, len(timesteps), eta=eta, timesteps=timesteps)
    expected = torch.cat([x0 for _, x0 in generate(recorder, sampler, 5, [0, 1, 2], image_shape, 2)]).numpy()
    export_dir = write_export_dir(tmp_path / "export", checkpoint, timesteps=timesteps)
    recording = recorder.close()

    result = host.run("sample", "--export-dir", export_dir, "--replay", recording, "--n", 3, "--batch-size", 2,
                      "--sampler", "ddim", "--eta", eta, "--seed", 5, "--out", tmp_path / "out", "--npy", tmp_path / "x0.npy")
    assert result.returncode == 0, result.stderr
    assert "ddim 5 steps" in result.stdout and "the manifest's timesteps" in result.stdout
    assert np.abs(np.load(tmp_path / "x0.npy") - expected).max() <= 1e-5
    # --steps asks for a placement instead: other timesteps than the recording's, refused.
    placed = host.run("sample", "--export-dir", export_dir, "--replay", recording, "--n", 3, "--batch-size", 2,
                      "--sampler", "ddim", "--steps", 5, "--eta", eta, "--seed", 5, "--out", tmp_path / "out2")
    assert placed.returncode == 8 and "other timesteps or batch size" in placed.stderr


def test_replay_refuses_a_recording_of_other_settings(host, micro_checkpoint, tmp_path):
    config = micro_checkpoint.config
    image_shape = (config.in_channels, config.image_size, config.image_size)
    recorder = EpsRecorder(TorchDenoiser(micro_checkpoint), tmp_path / "eps.bin", image_shape)
    sampler = make_sampler("ddim", micro_checkpoint.schedule, 4)
    list(generate(recorder, sampler, 0, [0, 1], image_shape, 2))
    export_dir = write_export_dir(tmp_path / "export", micro_checkpoint)
    recording = recorder.close()

    result = host.run("sample", "--export-dir", export_dir, "--replay", recording, "--n", 2, "--batch-size", 2,
                      "--steps", 5, "--out", tmp_path / "out")
    assert result.returncode == 8
    assert result.stderr.count("\n") == 1 and "other timesteps or batch size" in result.stderr


@pytest.mark.parametrize(
    "seed,index,stream,count",
    [(0, 0, 0, 100_001), (12345, 7, 3, 4096), (2**64 - 1, 2**64 - 1, 2**64 - 1, 1), (2**63, 1, 51, 3)],
)
def test_host_noise_matches_gaussian_noise(host, tmp_path, seed, index, stream, count):
    out = tmp_path / "noise.npy"
    result = host.run("noise", "--seed", seed, "--index", index, "--stream", stream, "--count", count, "--out", out)
    assert result.returncode == 0, result.stderr
    from_host = np.load(out)
    from_python = gaussian_noise(seed, [index], stream, (count,))[0].numpy()
    assert from_host.dtype == np.float32 and from_host.shape == (count,)
    # noise.py: bit-exact except, rarely, one binary32 ulp where libm's last float64 bit differs.
    differ = from_host != from_python
    assert differ.sum() <= max(1, count // 10**6)
    assert np.all(np.abs(from_host - from_python)[differ] <= np.spacing(np.abs(from_python[differ])))


@pytest.mark.parametrize(
    "args,code,phrase",
    [
        (("sample", "--n", "4"), 2, "--export-dir is required"),
        (("noise", "--count", "0", "--out", "x.npy"), 2, "--count must be an integer >= 1"),
        (("noise", "--count", "3", "--out", "x.npy", "--sed", "1"), 2, "unknown option --sed"),
        (("frobnicate",), 2, "unknown command frobnicate"),
        (("sample", "--export-dir", "/nonexistent/export"), 8, "export directory not found"),
    ],
)
def test_host_bad_arguments_are_one_line(host, tmp_path, args, code, phrase):
    result = host.run(*args)
    assert result.returncode == code
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert phrase in result.stderr


def test_host_without_tensorrt_says_how_to_get_it(host, micro_checkpoint, tmp_path):
    export_dir = write_export_dir(tmp_path / "export", micro_checkpoint)
    result = host.run("sample", "--export-dir", export_dir, "--n", 1, "--out", tmp_path / "out")
    assert result.returncode == 9
    assert "built without TensorRT" in result.stderr and "--replay" in result.stderr


@pytest.mark.parametrize("spacing,steps", [("quadratic", 40), ("karras", 90), ("logsnr", 50)])
def test_host_refuses_a_placement_that_repeats_timesteps_as_python_does(host, micro_checkpoint, tmp_path, spacing, steps):
    export_dir = write_export_dir(tmp_path / "export", micro_checkpoint)
    with pytest.raises(InvalidArgumentError) as caught:
        make_sampler("ddim", micro_checkpoint.schedule, steps, spacing=spacing)
    result = host.run("sample", "--export-dir", export_dir, "--steps", steps, "--spacing", spacing, "--out", tmp_path / "o")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr == f"error: {caught.value}\n"


@pytest.mark.parametrize("sampler_args", [["--sampler", "ddim", "--eta", "0.5"], ["--sampler", "ddim-ab2"],
                                          ["--sampler", "dpm-solver++", "--spacing", "quadratic"]])
def test_sample_records_eps_that_the_host_replays_to_the_same_images(host, micro_checkpoint, tmp_path, sampler_args):
    ckpt = save_checkpoint(micro_checkpoint, tmp_path / "ckpt.pt")
    export_dir = write_export_dir(tmp_path / "export", micro_checkpoint)
    recording = tmp_path / "eps.bin"
    # Batches of 6 and 1 on the CPU: calls of 4 + 2 padded rows, then 1 padded row (CPU_MICRO_BATCH),
    # which the process's threads would run side by side if recording did not keep them in order.
    result = CliRunner().invoke(app, ["sample", str(ckpt), "--n", "7", "--batch-size", "6", "--steps", "6",
                                      *sampler_args, "--seed", "9", "--format", "npz", "--out", str(tmp_path / "py"),
                                      "--record-eps", str(recording)])
    assert result.exit_code == 0, result.output
    assert f"recorded {3 * 6} denoiser calls" in result.output
    samples = json.loads((tmp_path / "py" / "samples.json").read_text())
    micro_batch = samples["settings"]["arithmetic"]["micro_batch"]
    # The host command the run printed, with this test's paths.
    line = next(line for line in result.output.splitlines() if "vmddpm_host sample" in line)
    printed = line[line.index("vmddpm_host sample"):].split()[1:]
    assert printed[printed.index("--micro-batch") + 1] == str(micro_batch)
    printed[printed.index("--export-dir") + 1] = str(export_dir)
    replay = host.run(*printed, "--out", tmp_path / "host", "--npy", tmp_path / "x0.npy")
    assert replay.returncode == 0, replay.stderr
    assert f"replayed {3 * 6} denoiser calls" in replay.stdout
    with np.load(tmp_path / "py" / "samples.npz") as data:
        python_images = data["images"].astype(np.int64)
    host_images = to_uint16(np.load(tmp_path / "x0.npy")).astype(np.int64)
    assert np.abs(host_images - python_images).max() <= 1


def test_record_eps_refuses_what_the_host_cannot_replay(micro_checkpoint, tmp_path):
    ckpt = save_checkpoint(micro_checkpoint, tmp_path / "ckpt.pt")
    for args, phrase in ((["--sampler", "ddpm"], "runs ddim, ddim-ab2, ddim-ab3, dpm-solver++, not ddpm"), (["--shard", "0/2"], "drop --resume and --shard")):
        result = CliRunner().invoke(app, ["sample", str(ckpt), "--n", "2", "--out", str(tmp_path / "o"),
                                          "--record-eps", str(tmp_path / "eps.bin"), *args])
        assert result.exit_code == 2 and phrase in result.output
        assert not (tmp_path / "eps.bin").exists() and not (tmp_path / "o").exists()
