"""TensorRT end to end: build engines for the tiny preset, compare them with the torch backend,
and check CUDA-graph replay against plain enqueue. Needs TensorRT, a GPU and the plugin library;
skipped (with the reason) elsewhere.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule, gaussian_noise, make_sampler
from vmddpm_deploy.errors import ArtifactError
from vmddpm_deploy.export import export_checkpoint, read_manifest, write_manifest
from vmddpm_deploy.model import preset
from vmddpm_deploy.runtime.tensorrt_backend import load_tensorrt_denoiser
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
from vmddpm_deploy.generation import generate
from vmddpm_deploy.tensorrt import BatchRange, EngineBuilder, EngineSettings

pytestmark = pytest.mark.tensorrt

# The rules' tolerances: fp32 engines against the fp32 torch model, fp16 engines looser.
TOLERANCES = {"fp32": {"rtol": 1e-4, "atol": 1e-4}, "fp16": {"rtol": 3e-3, "atol": 5e-3}}


@pytest.fixture(scope="module")
def tiny(tensorrt_ready, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tensorrt")
    checkpoint = init_checkpoint(preset("tiny"), NoiseSchedule(), seed=0)
    path = save_checkpoint(checkpoint, directory / "tiny.pt")
    export_checkpoint(path, directory / "export", dtypes=("fp32", "fp16"), ops=("plugin",))
    return checkpoint, directory / "export"


@pytest.fixture(scope="module")
def engines(tiny):
    _, export_dir = tiny
    built = {}
    for precision in ("fp32", "fp16"):
        settings = EngineSettings(precision=precision, batch=BatchRange(1, 4, 8))
        built[precision] = EngineBuilder(export_dir, settings).build()
    return built


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = gaussian_noise(seed, range(batch), 0, (1, 32, 32))
    t = torch.linspace(0, 999, batch).round().to(torch.int64)
    return x, t


def test_engines_are_recorded_with_their_plugin_library(tiny, engines):
    _, export_dir = tiny
    manifest = read_manifest(export_dir)  # sha256 of every plan verified
    for precision, built in engines.items():
        assert built.path.name.startswith(f"denoiser.{precision}.b1-8.trt")
        entry = manifest.engines[built.path.name]
        assert (entry.precision, entry.min_batch, entry.opt_batch, entry.max_batch) == (precision, 1, 4, 8)
        assert (export_dir / entry.plugin_library).is_file()
    assert engines["fp32"].timing_cache.is_file()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_engine_matches_torch(tiny, engines, precision, batch):
    checkpoint, _ = tiny
    reference = TorchDenoiser(checkpoint, "cuda")
    denoiser = load_tensorrt_denoiser(engines[precision].path)
    x, t = _inputs(batch)
    expected = reference(x.cuda(), t.cuda())
    eps = denoiser(x.cuda(), t.cuda())
    assert eps.dtype == torch.float32 and eps.shape == x.shape
    torch.testing.assert_close(eps, expected, **TOLERANCES[precision])


def test_cuda_graph_replay_equals_enqueue(tiny, engines):
    plan = engines["fp32"].path
    graphs = load_tensorrt_denoiser(plan, cuda_graphs=True)
    plain = load_tensorrt_denoiser(plan, cuda_graphs=False)
    for step, batch in enumerate([4, 4, 2, 4, 2]):  # first call per batch enqueues and captures; later ones replay
        x, t = _inputs(batch, seed=step)
        x, t = x.cuda(), t.cuda()
        assert torch.equal(graphs(x, t), plain(x, t)), f"call {step} (batch {batch})"
    assert graphs.graph_status == {4: "cuda graph", 2: "cuda graph"}
    assert plain.graph_status == {}


def test_cpu_inputs_come_back_on_the_cpu(engines):
    denoiser = load_tensorrt_denoiser(engines["fp32"].path)
    x, t = _inputs(2)
    eps = denoiser(x, t)
    assert eps.device.type == "cpu"
    torch.testing.assert_close(eps, denoiser(x.cuda(), t.cuda()).cpu(), rtol=0, atol=0)


def test_sampling_with_the_engine_tracks_torch(tiny, engines):
    checkpoint, _ = tiny
    sampler = make_sampler("ddim", checkpoint.schedule, 10)
    images = {}
    for name, denoiser in {"torch": TorchDenoiser(checkpoint, "cuda"),
                           "tensorrt": load_tensorrt_denoiser(engines["fp32"].path)}.items():
        images[name] = torch.cat([x0 for _, x0 in generate(denoiser, sampler, 0, range(6), (1, 32, 32), 4, "cuda")])
    torch.testing.assert_close(images["tensorrt"], images["torch"], rtol=1e-3, atol=1e-3)


def test_engine_for_another_tensorrt_is_refused(tiny, engines):
    _, export_dir = tiny
    manifest = read_manifest(export_dir)
    name = engines["fp32"].path.name
    write_manifest(manifest.with_engine(name, dataclasses.replace(manifest.engines[name], tensorrt="9.0.0.1")))
    try:
        with pytest.raises(ArtifactError, match="built with TensorRT 9.0.0.1"):
            load_tensorrt_denoiser(engines["fp32"].path)
    finally:
        write_manifest(manifest)


def test_sample_cli_with_the_tensorrt_backend(tiny, engines, tmp_path):
    _, export_dir = tiny
    result = CliRunner().invoke(
        app, ["sample", str(export_dir), "--backend", "tensorrt", "--device", "cuda", "--n", "4", "--steps", "3",
              "--batch-size", "4", "--out", str(tmp_path / "out"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_bench_times_the_engines_beside_torch_fp16(tiny, engines, tmp_path):
    _, export_dir = tiny
    out = tmp_path / "bench.json"
    rows = "torch-fp16,tensorrt-fp16,tensorrt-fp16-enqueue,tensorrt-fp32"
    result = CliRunner().invoke(app, ["bench", str(export_dir), "--device", "cuda", "--backends", rows,
                                      "--baseline", "torch-fp16", "--batch-sizes", "1,4", "--iters", "3",
                                      "--steps", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert [(r["backend"], r["batch"]) for r in payload["rows"]] == [
        (name, batch) for batch in (1, 4) for name in rows.split(",")
    ]
    for row in payload["rows"]:
        assert row["median_ms"] > 0 and row["speedup_vs_torch-fp16"] > 0 and row["peak_memory_mb"] > 0
