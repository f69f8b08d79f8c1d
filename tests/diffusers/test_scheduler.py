"""DiffusersScheduler: diffusers' schedulers as our samplers, from the library and from
`sample --scheduler`, with their settings recorded for --resume and shards."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is the optional [diffusers] extra")

import diffusers  # noqa: E402

from tests.cli.runner import error_line, invoke  # noqa: E402
from vmddpm_deploy.checkpoint import build_model, load_checkpoint  # noqa: E402
from vmddpm_deploy.diffusers.scheduler import DiffusersScheduler, diffusers_sampler  # noqa: E402
from vmddpm_deploy.diffusion import NoiseSchedule, run_sampler  # noqa: E402
from vmddpm_deploy.errors import InvalidArgumentError  # noqa: E402

UNIPC = "diffusers:UniPCMultistepScheduler"


def _toy_eps(x, t):
    """A denoiser whose eps depends on x and t, so that a wrong timestep or state shows."""
    return 0.3 * x + 1e-4 * t.view(-1, 1, 1, 1).to(x.dtype)


def _diffusers_loop(scheduler, steps, x):
    """diffusers' own sampling loop (as its pipelines run it)."""
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(_toy_eps(x, t.expand(x.shape[0])), t, x).prev_sample
    return x


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("name,config", [
    ("UniPCMultistepScheduler", {}),
    ("DEISMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 1.0}),
])
def test_adapter_runs_as_diffusers_loop_does(name, config, kind):
    schedule = NoiseSchedule(kind=kind)
    sampler = diffusers_sampler(name, schedule, 12, config)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ours = run_sampler(sampler, _toy_eps, x_T, step_noise=None)
    # An independent scheduler built straight from diffusers, betas set as diffusers would for our schedule.
    betas = {"beta_schedule": "linear"} if kind == "linear" else {"beta_schedule": "squaredcos_cap_v2"}
    theirs = _diffusers_loop(getattr(diffusers, name)(**betas, **config), 12, x_T)
    torch.testing.assert_close(ours, theirs, rtol=6e-4, atol=2e-3)


def test_one_adapter_drives_interleaved_runs():
    sampler = diffusers_sampler("UniPCMultistepScheduler", NoiseSchedule(), 8)
    a, b = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    alone_a = run_sampler(sampler, _toy_eps, a, step_noise=None)
    alone_b = run_sampler(sampler, _toy_eps, b, step_noise=None)
    t = torch.tensor(sampler.timesteps)
    histories, xs = [None, None], [a, b]
    for k in range(len(t)):
        for run in (0, 1):  # step k of run 0, then of run 1: each keeps its own scheduler state
            eps = _toy_eps(xs[run], t[k].expand(2))
            xs[run], histories[run] = sampler.step(k, xs[run], eps, None, histories[run])
    assert torch.equal(xs[0], alone_a) and torch.equal(xs[1], alone_b)


@pytest.mark.parametrize("name,config,message", [
    ("DDPMScheduler", {}, "draws noise of its own"),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "draws noise of its own"),
    ("EulerDiscreteScheduler", {}, "scales the model input"),
    ("FlowMatchEulerDiscreteScheduler", {}, "does not take a DDPM beta schedule"),
    ("NoSuchScheduler", {}, "has no scheduler 'NoSuchScheduler'"),
    ("UniPCMultistepScheduler", {"beta_end": 0.5}, "may not set beta_end"),
    ("UniPCMultistepScheduler", {"solver_odrer": 3}, "no config key 'solver_odrer'"),
    ("UniPCMultistepScheduler", {"solver_type": "rk4"}, "refused the config"),
])
def test_refused_schedulers_and_configs(name, config, message):
    with pytest.raises(InvalidArgumentError, match=message):
        diffusers_sampler(name, NoiseSchedule(), 10, config)


def test_spec_round_trips_and_pins_the_diffusers_version():
    sampler = diffusers_sampler("UniPCMultistepScheduler", NoiseSchedule(kind="cosine"), 6, {"solver_order": 3})
    spec = json.loads(json.dumps(sampler.spec))
    assert spec["class"] == "UniPCMultistepScheduler" and spec["diffusers"] == diffusers.__version__
    assert spec["config"]["solver_order"] == 3 and len(spec["config"]["trained_betas"]) == 1000
    again = DiffusersScheduler.from_spec(spec, 6)
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(run_sampler(again, _toy_eps, x, None), run_sampler(sampler, _toy_eps, x, None))
    with pytest.raises(InvalidArgumentError, match="recorded with diffusers 0.0.1"):
        DiffusersScheduler.from_spec(spec | {"diffusers": "0.0.1"}, 6)


# -- `vmddpm-deploy sample --scheduler` -------------------------------------------------------------


def _sample(ckpt, out, *extra):
    # fp32: the library run it is compared with computes in fp32 (auto is bf16 on a CPU with native bf16).
    return invoke("sample", ckpt, "--n", 4, "--steps", 5, "--batch-size", 2, "--precision", "fp32", "--format", "npz",
                  "--out", out, *extra)


def test_sample_with_a_diffusers_scheduler_matches_the_library_run(tmp_path, micro_ckpt):
    config = '{"thresholding": true, "sample_max_value": 1.0}'
    result = _sample(micro_ckpt, tmp_path / "s", "--scheduler", UNIPC, "--scheduler-config", config)
    assert result.exit_code == 0, result.output
    assert "diffusers:UniPCMultistepScheduler 5 steps" in result.output
    recorded = json.loads((tmp_path / "s/samples.json").read_text())["settings"]
    assert recorded["sampler"] == UNIPC
    assert recorded["scheduler"]["class"] == "UniPCMultistepScheduler"
    assert recorded["scheduler"]["diffusers"] == diffusers.__version__
    assert recorded["scheduler"]["config"]["thresholding"] is True

    from vmddpm_deploy.generation import generate

    checkpoint = load_checkpoint(micro_ckpt)
    model = build_model(checkpoint)
    sampler = diffusers_sampler("UniPCMultistepScheduler", checkpoint.schedule, 5, json.loads(config))
    expected = torch.cat([x0 for _, x0 in generate(model, sampler, 0, range(4), (1, 8, 8), 2)]).numpy()
    images = np.load(tmp_path / "s/samples.npz")["images"].astype(np.float64) / 65535 * 2 - 1
    np.testing.assert_allclose(images, np.clip(expected, -1, 1), atol=2e-5)


def test_config_from_a_file_shards_and_resume_check_it(tmp_path, micro_ckpt):
    config_file = tmp_path / "unipc.json"
    config_file.write_text('{"solver_order": 3}')
    whole = _sample(micro_ckpt, tmp_path / "whole", "--scheduler", UNIPC, "--scheduler-config", config_file)
    assert whole.exit_code == 0, whole.output
    shards = tmp_path / "shards"
    for index in (0, 1):
        part = _sample(micro_ckpt, shards, "--scheduler", UNIPC, "--scheduler-config", config_file, "--shard", f"{index}/2")
        assert part.exit_code == 0, part.output
    merged = np.zeros_like(np.load(tmp_path / "whole/samples.npz")["images"])
    for index in (0, 1):
        part = np.load(shards / f"samples.shard-{index}-of-2.npz")
        merged[part["indices"]] = part["images"]
    assert np.array_equal(merged, np.load(tmp_path / "whole/samples.npz")["images"])

    other = _sample(micro_ckpt, tmp_path / "mixed", "--scheduler", UNIPC, "--shard", "0/2")
    assert other.exit_code == 0, other.output
    clash = _sample(micro_ckpt, tmp_path / "mixed", "--scheduler", UNIPC, "--scheduler-config", config_file, "--shard", "1/2")
    assert clash.exit_code == 2
    assert "(progress.shard-0-of-2.json: scheduler.config.solver_order was 2, now 3)" in error_line(clash)

    resumed = _sample(micro_ckpt, tmp_path / "whole", "--scheduler", UNIPC, "--resume")
    assert resumed.exit_code == 2
    assert "--resume with different settings: scheduler.config.solver_order was 3, now 2" in error_line(resumed)
    plain = _sample(micro_ckpt, tmp_path / "whole", "--resume")
    assert plain.exit_code == 2 and "--resume with different settings" in error_line(plain)


@pytest.mark.parametrize("args,message", [
    (["--scheduler", "diffusers:DDPMScheduler"], "draws noise of its own"),
    (["--scheduler", "UniPCMultistepScheduler"], "--scheduler takes diffusers:CLASS"),
    (["--scheduler", UNIPC, "--scheduler-config", "{bad"], "--scheduler-config is neither a file nor valid JSON"),
    (["--scheduler", UNIPC, "--scheduler-config", "[1, 2]"], "must be a JSON object"),
    (["--scheduler", UNIPC, "--scheduler-config", "missing.json"], "is neither a file nor valid JSON"),
    (["--scheduler-config", "{}"], "applies to --scheduler only"),
    (["--scheduler", UNIPC, "--eta", "0.5"], "takes it in --scheduler-config"),
])
def test_bad_scheduler_options_are_one_line_exit_2(tmp_path, micro_ckpt, args, message):
    result = _sample(micro_ckpt, tmp_path / "s", *args)
    assert result.exit_code == 2
    assert message in error_line(result)
    assert not (tmp_path / "s").exists()


def test_without_diffusers_the_scheduler_option_says_so(tmp_path, micro_ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # what `import diffusers` meets where it is absent
    result = _sample(micro_ckpt, tmp_path / "s", "--scheduler", UNIPC)
    assert result.exit_code == 9
    assert "needs diffusers, which is not installed: pip install 'vmddpm-deploy[diffusers]'" in error_line(result)


def test_the_cli_does_not_import_diffusers():
    code = "import sys, vmddpm_deploy.cli; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
