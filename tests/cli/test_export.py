"""`vmddpm-deploy export` through Typer's CliRunner: a micro model with the `cross` order end to
end, and one clear line plus the family's exit code for every bad input."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.cli.runner import error_line, invoke
from vmddpm_deploy.checkpoint import build_model, init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export import read_manifest
from vmddpm_deploy.model import ModelConfig

@pytest.mark.slow
def test_cross_order_portable_export_runs_batches_1_and_3(tmp_path):
    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4, scan_order="cross")
    checkpoint = init_checkpoint(config, NoiseSchedule(), seed=3)
    ckpt = save_checkpoint(checkpoint, tmp_path / "cross.pt")
    out = tmp_path / "exports" / "cross"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier export")

    result = invoke("export", ckpt, "-o", out, "--ops", "portable", "--dtype", "fp32", "--force", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["file", "graph", "ops", "size"] and lines[1].split()[:3] == ["denoiser.portable.onnx", "portable", "portable"]
    assert f"wrote {out} (1 graph + manifest.json)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["denoiser.portable.onnx", "manifest.json"]  # --force replaced it
    manifest = read_manifest(out)
    assert list(manifest.graphs) == ["portable"] and manifest.config.scan_order == "cross"

    session = ort.InferenceSession(str(manifest.graph_path("portable")), providers=["CPUExecutionProvider"])
    model = build_model(checkpoint)
    for batch in (1, 3):
        x, t = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch)), torch.arange(batch) * 300
        (eps,) = session.run(None, {"x": x.numpy(), "t": t.numpy()})
        with torch.no_grad():
            assert np.abs(eps - model(x, t).numpy()).max() <= 1e-4


def test_help_reads_like_documentation():
    result = invoke("export", "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and "onnx.checker" in " ".join(result.output.split())


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    result = invoke("export", bogus, "-o", tmp_path / "out")
    assert result.exit_code == 4
    assert "not a readable checkpoint" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_existing_directory_without_force(tmp_path, micro_ckpt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    result = invoke("export", micro_ckpt, "-o", out)
    assert result.exit_code == 5
    assert "already exists; pass --force" in error_line(result)
    assert (out / "manifest.json").read_text() == "{}"


def test_output_under_a_file(tmp_path, micro_ckpt):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("export", micro_ckpt, "-o", blocker / "out")
    assert result.exit_code == 5
    assert error_line(result).startswith(f"error: cannot create {blocker / 'out'}")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_directory(tmp_path, micro_ckpt):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        result = invoke("export", micro_ckpt, "-o", parent / "out")
    finally:
        parent.chmod(0o700)
    assert result.exit_code == 5
    assert "Permission denied" in error_line(result)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-dim", "0"], "--batch-dim takes 'dynamic' or a positive integer"),
        (["--batch-dim", "many"], "--batch-dim takes 'dynamic' or a positive integer"),
        (["--opset", "11"], "--opset must be between 18 and 25"),
        (["--opset", "28"], "--opset must be between 18 and 25"),
        (["--dtype", "fp16", "--ops", "portable"], "the portable graph is fp32 only"),
    ],
)
def test_bad_arguments(tmp_path, micro_ckpt, args, message):
    result = invoke("export", micro_ckpt, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in error_line(result)
    assert not (tmp_path / "out").exists()


def test_an_export_finds_its_checkpoint_from_any_working_directory(tmp_path, micro_config, monkeypatch):
    project = tmp_path / "project"
    save_checkpoint(init_checkpoint(micro_config, NoiseSchedule(), seed=1), project / "run" / "ckpt.pt")
    monkeypatch.chdir(project)
    exported = invoke("export", "run/ckpt.pt", "-o", "exports/ckpt", "--ops", "portable", "--dtype", "fp32", "--quiet")
    assert exported.exit_code == 0, exported.output

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    export_dir = project / "exports" / "ckpt"
    explicit = invoke("sample", export_dir, "--backend", "torch", "--n", 1, "--steps", 2, "--out", "a", "--quiet")
    assert explicit.exit_code == 0, explicit.output
    auto = invoke("sample", export_dir, "--n", 1, "--steps", 2, "--out", "b")
    assert auto.exit_code == 0, auto.output
    assert "backend torch" in auto.output and "note:" not in auto.output

    # Export and run moved together: the path relative to the export directory still finds the checkpoint.
    moved = tmp_path / "moved"
    os.rename(project, moved)
    again = invoke("sample", moved / "exports" / "ckpt", "--n", 1, "--steps", 2, "--out", "c")
    assert again.exit_code == 0 and "backend torch" in again.output, again.output
