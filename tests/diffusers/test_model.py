"""VMDDPMModel: diffusers' config and save/load machinery, and diffusers' own pipelines running it
against our sampler."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is the optional [diffusers] extra")

from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler  # noqa: E402
from diffusers.pipelines.ddim import pipeline_ddim  # noqa: E402

from tests.cli.runner import invoke  # noqa: E402
from vmddpm_deploy.checkpoint import Checkpoint, init_checkpoint, load_checkpoint  # noqa: E402
from vmddpm_deploy.diffusers import VMDDPMModel  # noqa: E402
from vmddpm_deploy.diffusion import NoiseSchedule, gaussian_noise  # noqa: E402
from vmddpm_deploy.errors import ConfigError  # noqa: E402
from vmddpm_deploy.model import ModelConfig  # noqa: E402

SCHEDULE = NoiseSchedule(beta_start=2e-4, beta_end=0.03)


@pytest.fixture
def checkpoint(micro_config) -> Checkpoint:
    base = init_checkpoint(micro_config, SCHEDULE, seed=5)
    ema = {k: v * 0.9 for k, v in base.model.items()}  # the model must carry the EMA weights
    return Checkpoint(base.config, base.schedule, base.model, ema)


def test_the_config_is_model_configs_fields_plus_what_pipelines_read():
    parameters = list(inspect.signature(VMDDPMModel.__init__).parameters)[1:]
    assert parameters == [f.name for f in dataclasses.fields(ModelConfig)] + ["sample_size", "noise_schedule"]
    model = VMDDPMModel(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4, in_channels=2)
    assert model.config.sample_size == 8 and model.config.in_channels == 2
    with pytest.raises(ConfigError, match="sample_size 16 differs"):
        VMDDPMModel(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4, sample_size=16)


def test_save_pretrained_round_trip(tmp_path, checkpoint):
    model = VMDDPMModel.from_checkpoint(checkpoint)
    model.save_pretrained(tmp_path / "pretrained")
    assert sorted(p.name for p in (tmp_path / "pretrained").iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors",
    ]
    config = json.loads((tmp_path / "pretrained/config.json").read_text())
    assert config["_class_name"] == "VMDDPMModel" and config["noise_schedule"]["beta_end"] == 0.03
    loaded = VMDDPMModel.from_pretrained(tmp_path / "pretrained").eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 900])
    with torch.no_grad():
        assert torch.equal(loaded(x, t).sample, model(x, t).sample)
        assert torch.equal(loaded(x, 17).sample, model(x, torch.tensor([17, 17])).sample)
    # Read back without diffusers, as `sample`, `export` and `check` read it: the EMA weights.
    read = load_checkpoint(tmp_path / "pretrained")
    assert read.config == checkpoint.config and read.schedule == SCHEDULE
    assert torch.equal(read.model["stem.weight"], checkpoint.ema["stem.weight"])


def _our_x_T(seed):
    """diffusers' pipelines draw x_T with randn_tensor; ours is sample i's noise for (seed, i)."""

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return gaussian_noise(seed, list(range(shape[0])), 0, tuple(shape[1:])).to(device=device, dtype=dtype)

    return randn_tensor


def test_diffusers_ddim_pipeline_matches_our_sample_command(tmp_path, checkpoint, monkeypatch):
    """The real DDIMPipeline on VMDDPMModel against `vmddpm-deploy sample` of the same
    save_pretrained directory, from the same x_T. DDIMScheduler set as our DDIM is: leading
    spacing, x0 clipped to [-1, 1], alpha_bar = 1 after the last step, eta 0."""
    VMDDPMModel.from_checkpoint(checkpoint).save_pretrained(tmp_path / "pretrained")
    seed, n, steps = 7, 3, 10
    out = tmp_path / "samples"
    result = invoke("sample", tmp_path / "pretrained", "--n", n, "--sampler", "ddim", "--steps", steps, "--seed", seed,
                    "--precision", "fp32",
                    "--batch-size", n, "--format", "npz", "--out", out)
    assert result.exit_code == 0, result.output
    ours = np.load(out / "samples.npz")["images"].astype(np.float64) / 65535.0  # (n, C, H, W) in [0, 1]

    scheduler = DDIMScheduler(
        num_train_timesteps=SCHEDULE.num_train_timesteps, beta_start=SCHEDULE.beta_start, beta_end=SCHEDULE.beta_end,
        beta_schedule="linear", clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading", steps_offset=0,
    )
    pipeline = DDIMPipeline(unet=VMDDPMModel.from_pretrained(tmp_path / "pretrained"), scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    monkeypatch.setattr(pipeline_ddim, "randn_tensor", _our_x_T(seed))
    theirs = pipeline(batch_size=n, num_inference_steps=steps, eta=0.0, output_type="np").images  # (n, H, W, C)
    theirs = np.transpose(theirs, (0, 3, 1, 2)).astype(np.float64)
    assert ours.shape == theirs.shape == (n, 1, 8, 8)
    assert ours.std() > 0.05, "images too flat to compare"
    np.testing.assert_allclose(ours, theirs, rtol=6e-4, atol=2e-3)


def test_diffusers_ddpm_pipeline_runs_the_model(tmp_path, checkpoint):
    model = VMDDPMModel.from_checkpoint(checkpoint)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=2e-4, beta_end=0.03, beta_schedule="linear")
    pipeline = DDPMPipeline(unet=model, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all() and images.std() > 0


def test_export_and_check_take_a_save_pretrained_directory(tmp_path, checkpoint):
    pretrained = tmp_path / "pretrained"
    VMDDPMModel.from_checkpoint(checkpoint).save_pretrained(pretrained)
    export_dir = tmp_path / "export"
    result = invoke("export", pretrained, "-o", export_dir, "--ops", "portable", "--dtype", "fp32", "--quiet")
    assert result.exit_code == 0, result.output
    # check finds the torch reference through the manifest's record of the directory ...
    checked = invoke("check", export_dir, "--backends", "onnxruntime", "--batch", "2")
    assert checked.exit_code == 0, checked.output
    assert "pass" in checked.output
    # ... or takes it as --checkpoint; a changed weights file is no longer the export's source.
    named = invoke("check", export_dir, "--backends", "onnxruntime", "--checkpoint", pretrained)
    assert named.exit_code == 0, named.output
    VMDDPMModel.from_checkpoint(init_checkpoint(checkpoint.config, SCHEDULE, seed=9)).save_pretrained(pretrained)
    stale = invoke("check", export_dir, "--backends", "onnxruntime")
    assert stale.exit_code != 0
