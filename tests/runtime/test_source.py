"""SRC resolution and the onnxruntime backend: an export directory samples the same images as its
checkpoint, `auto` picks a backend that can run the source, and corrupt artifacts are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.runtime.conftest import corrupted_copy, orphaned_copy
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.runtime.source import auto_fallback_note, load_denoiser, open_source, resolve_backend


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
    moved = orphaned_copy(exported, tmp_path)
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
                                     "--backend", backend, "--precision", "fp32", "--out", str(tmp_path / name),
                                     "--quiet"])
        assert result.exit_code == 0, result.output
    for index in range(3):
        a = np.asarray(Image.open(tmp_path / "torch" / f"{index:05d}.png"), dtype=np.int64)
        b = np.asarray(Image.open(tmp_path / "ort" / f"{index:05d}.png"), dtype=np.int64)
        assert np.abs(a - b).max() <= 1


def test_corrupt_graph_is_refused_in_one_line(exported, tmp_path):
    _, export_dir = exported
    broken = corrupted_copy(export_dir, tmp_path, "denoiser.portable.onnx", lambda data: data[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="sha256"):
        open_source(broken)
    result = CliRunner().invoke(app, ["sample", str(broken), "--n", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == ArtifactError.exit_code
    assert "sha256" in result.output and "Traceback" not in result.output


def test_reference_onnx_backends_run_the_custom_node_graphs(exported):
    ckpt, export_dir = exported
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([10, 700])
    expected = load_denoiser(open_source(ckpt), "torch")(x, t)
    fp32 = load_denoiser(open_source(export_dir), "reference-onnx")
    assert fp32.io_dtype == np.float32
    torch.testing.assert_close(fp32(x, t), expected, rtol=0, atol=1e-4)
    fp16 = load_denoiser(open_source(export_dir), "reference-onnx-fp16")
    assert fp16.io_dtype == np.float16
    torch.testing.assert_close(fp16(x, t), expected, rtol=3e-3, atol=5e-3)
    with pytest.raises(InvalidArgumentError, match="export"):
        load_denoiser(open_source(ckpt), "reference-onnx")


def test_onnxruntime_session_options(exported):
    from vmddpm_deploy.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

    _, export_dir = exported
    graph = export_dir / "denoiser.portable.onnx"
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([3, 333])
    optimised = OnnxRuntimeDenoiser(graph, threads=2, optimization="all")
    plain = OnnxRuntimeDenoiser(graph, threads=1, optimization="disable")
    assert plain.session.get_session_options().intra_op_num_threads == 1
    torch.testing.assert_close(optimised(x, t), plain(x, t), rtol=0, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="graph optimisation level 'max'"):
        OnnxRuntimeDenoiser(graph, optimization="max")
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        OnnxRuntimeDenoiser(graph, threads=0)


def test_onnxruntime_on_cuda_needs_the_cuda_provider(exported):
    import onnxruntime

    from vmddpm_deploy.errors import BackendUnavailableError
    from vmddpm_deploy.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

    _, export_dir = exported
    graph = export_dir / "denoiser.portable.onnx"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
            OnnxRuntimeDenoiser(graph, "cuda")
        return
    if not torch.cuda.is_available():
        pytest.skip("onnxruntime has the CUDA provider but torch sees no GPU")
    ckpt, _ = exported
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7)).cuda()  # IO binding path
    t = torch.tensor([3, 333]).cuda()
    eps = OnnxRuntimeDenoiser(graph, "cuda")(x, t)
    assert eps.is_cuda
    torch.testing.assert_close(eps.cpu(), load_denoiser(open_source(ckpt), "torch")(x.cpu(), t.cpu()), rtol=0,
                               atol=1e-4)


def test_ddim_trajectory_from_the_same_noise_agrees(exported):
    """20 DDIM steps through torch and through ONNX Runtime from the same per-sample noise."""
    from vmddpm_deploy.diffusion import make_sampler
    from vmddpm_deploy.generation import generate

    ckpt, export_dir = exported
    source = open_source(export_dir)
    images = {}
    for backend, src in (("torch", open_source(ckpt)), ("onnxruntime", source)):
        sampler = make_sampler("ddim", src.schedule, 20)
        batches = generate(load_denoiser(src, backend), sampler, 11, range(3), (1, 8, 8), batch_size=3)
        images[backend] = torch.cat([x0 for _, x0 in batches]).clamp(-1, 1)
    mse = (images["torch"] - images["onnxruntime"]).pow(2).mean().item()
    psnr = 10 * np.log10(2.0**2 / max(mse, 1e-20))  # data range [-1, 1]
    assert psnr >= 40, psnr
    assert images["torch"].std() > 0.05  # the trajectories went somewhere: not two constant images


def test_sample_of_an_export_hashes_and_loads_its_checkpoint_once(exported, tmp_path, monkeypatch):
    # `auto` asks whether the source checkpoint is at hand, then the torch backend runs it: one read.
    from vmddpm_deploy.runtime import source as source_module

    ckpt, export_dir = exported
    loads, hashes = [], []
    real_load, real_hash = source_module.load_checkpoint, source_module.checkpoint_sha256
    monkeypatch.setattr(source_module, "load_checkpoint", lambda path: loads.append(path) or real_load(path))
    monkeypatch.setattr(source_module, "checkpoint_sha256", lambda path: hashes.append(path) or real_hash(path))
    result = CliRunner().invoke(app, ["sample", str(export_dir), "--n", "1", "--steps", "1",
                                      "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert '"backend": "torch"' in result.output
    assert [str(p) for p in loads] == [str(ckpt)] and [str(p) for p in hashes] == [str(ckpt)]


def test_precision_is_the_torch_backends_choice(exported):
    from vmddpm_deploy.runtime.source import resolve_sampling_precision

    _, export_dir = exported
    source = open_source(export_dir)
    assert resolve_sampling_precision("auto", "onnxruntime", "cpu") == "fp32"
    assert resolve_sampling_precision("fp32", "onnxruntime", "cpu") == "fp32"
    assert resolve_sampling_precision("bf16", "torch", "cpu") == "bf16"
    with pytest.raises(InvalidArgumentError, match="--precision bf16 runs on the torch backend only, not onnxruntime"):
        load_denoiser(source, "onnxruntime", "cpu", "bf16")
    with pytest.raises(InvalidArgumentError, match="unknown precision 'fp8'; choose one of auto, fp32, bf16"):
        resolve_sampling_precision("fp8", "torch", "cpu")


def test_auto_says_in_one_line_why_it_falls_back_to_onnxruntime(exported, tmp_path):
    ckpt, export_dir = exported
    assert auto_fallback_note(open_source(export_dir)) is None  # runs on torch, the fastest here
    gone = auto_fallback_note(open_source(orphaned_copy(exported, tmp_path)))
    assert gone.startswith("backend auto: onnxruntime, slower than torch") and "gone.pt is gone" in gone

    # A later `train --resume` rewrote the checkpoint the export was made from.
    rewritten = tmp_path / "rewritten"
    shutil.copytree(export_dir.parent, rewritten)
    save_checkpoint(init_checkpoint(open_source(ckpt).config, NoiseSchedule(), seed=9),
                    rewritten / ckpt.name)
    data = json.loads((rewritten / "export" / "manifest.json").read_text())
    data["source"]["checkpoint_absolute"] = str(rewritten / ckpt.name)
    (rewritten / "export" / "manifest.json").write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["sample", str(rewritten / "export"), "--n", "1", "--steps", "2",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert notes == [f"note: backend auto: onnxruntime, slower than torch, which needs the checkpoint this export "
                     f"was made from, and {rewritten / ckpt.name} changed since the export (its sha256 differs); "
                     "pass that checkpoint as SRC, or re-export"]
    assert "backend onnxruntime" in result.output


def test_a_run_folder_as_src_suggests_its_checkpoint(exported, tmp_path):
    ckpt, _ = exported
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "ckpt.pt")
    result = CliRunner().invoke(app, ["sample", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code == ArtifactError.exit_code
    assert result.output.strip() == f"error: {run} is a folder holding ckpt.pt, not an export directory; did you mean {run / 'ckpt.pt'}?"
    assert not (tmp_path / "o").exists()


def test_auto_says_why_it_does_not_run_the_exports_engine(exported, tmp_path):
    import importlib.util

    from vmddpm_deploy.export.manifest import EngineRecord, file_record, read_manifest, write_manifest

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are here: auto would try the engine")
    _, export_dir = exported
    copy = Path(shutil.copytree(export_dir, tmp_path / "with-engine"))
    (copy / "denoiser.fp16.plan").write_bytes(b"an engine built elsewhere")
    engine = EngineRecord(graph="fp16", precision="fp16", min_batch=1, opt_batch=8, max_batch=32, tensorrt="10.14.1.48",
                          gpu="NVIDIA H100 80GB HBM3", compute_capability="9.0", plugin_library="libvmddpm_trt_plugins.so",
                          plugin_library_sha256="cd" * 32, **file_record(copy / "denoiser.fp16.plan"))
    write_manifest(read_manifest(copy).with_engine("denoiser.fp16.plan", engine))
    why = "TensorRT is not installed" if importlib.util.find_spec("tensorrt") is None else "no CUDA GPU is visible"
    note = auto_fallback_note(open_source(copy))
    assert note.startswith(f"backend auto: torch, not tensorrt: the export has engines but {why}")
