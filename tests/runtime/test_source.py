"""SRC resolution and the onnxruntime backend: an export directory samples the same images as its
checkpoint, `auto` picks a backend that can run the source, and corrupt artifacts are refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vmddpm_deploy.cli import app
from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.runtime.source import load_denoiser, open_source, resolve_backend


def test_onnxruntime_eps_matches_torch(exported):
    ckpt, export_dir = exported
    torch_denoiser = load_denoiser(open_source(ckpt), "torch")
    ort_denoiser = load_denoiser(open_source(export_dir), "onnxruntime")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(ort_denoiser(x, t), torch_denoiser(x, t), rtol=0, atol=1e-4)


def test_auto_prefers_torch_with_the_checkpoint_and_onnxruntime_without(exported, tmp_path):
    ckpt, export_dir = exported
    assert resolve_backend("auto", open_source(ckpt)) == "torch"
    assert resolve_backend("auto", open_source(export_dir)) == "torch"  # manifest names the unchanged ckpt
    moved = tmp_path / "export"
    shutil.copytree(export_dir, moved)
    manifest = (moved / "manifest.json").read_text().replace(str(ckpt), str(tmp_path / "gone.pt"))
    (moved / "manifest.json").write_text(manifest)
    assert resolve_backend("auto", open_source(moved)) == "onnxruntime"
    with pytest.raises(InvalidArgumentError, match="needs the checkpoint"):
        load_denoiser(open_source(moved), "torch")
    with pytest.raises(InvalidArgumentError, match="export"):
        load_denoiser(open_source(ckpt), "onnxruntime")


def test_sample_from_export_dir_equals_checkpoint(exported, tmp_path):
    ckpt, export_dir = exported
    runner = CliRunner()
    for name, src, backend in (("torch", ckpt, "torch"), ("ort", export_dir, "onnxruntime")):
        result = runner.invoke(app, ["sample", str(src), "--n", "3", "--steps", "4", "--batch-size", "2",
                                     "--backend", backend, "--out", str(tmp_path / name), "--quiet"])
        assert result.exit_code == 0, result.output
    for index in range(3):
        a = np.asarray(Image.open(tmp_path / "torch" / f"{index:05d}.png"), dtype=np.int64)
        b = np.asarray(Image.open(tmp_path / "ort" / f"{index:05d}.png"), dtype=np.int64)
        assert np.abs(a - b).max() <= 1


def test_corrupt_graph_is_refused_in_one_line(exported, tmp_path):
    _, export_dir = exported
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    graph = broken / "denoiser.portable.onnx"
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="sha256"):
        open_source(broken)
    result = CliRunner().invoke(app, ["sample", str(broken), "--n", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == ArtifactError.exit_code
    assert "sha256" in result.output and "Traceback" not in result.output
