"""Engine names, manifest entries and "was this plan built for this machine" (no TensorRT needed)."""

from __future__ import annotations

import dataclasses

import pytest

from vmddpm_deploy.errors import ArtifactError, InvalidArgumentError
from vmddpm_deploy.export.manifest import EngineRecord, read_manifest, write_manifest
from vmddpm_deploy.tensorrt.engines import (
    BatchRange,
    check_engine_runs_here,
    engine_file_name,
    record_engine,
    select_engine,
    stale_engines,
    timing_cache_name,
)
from vmddpm_deploy.tensorrt.environment import Gpu, short_version

H100 = Gpu(0, "NVIDIA H100 80GB HBM3", "9.0")
A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", "8.0")
TRT = "10.14.1.48"


def test_engine_file_name_carries_precision_batch_tensorrt_and_gpu():
    assert engine_file_name("fp16", BatchRange(1, 8, 32), TRT, H100) == "denoiser.fp16.b1-32.trt10.14.sm90.plan"
    assert engine_file_name("fp32", BatchRange(4, 4, 4), "10.8.0.43", A100) == "denoiser.fp32.b4-4.trt10.8.sm80.plan"
    assert timing_cache_name(TRT, Gpu(0, "RTX 4090", "8.9")) == "timing-cache.trt10.14.sm89.bin"
    assert short_version("11.0.0.1") == "11.0"
    with pytest.raises(InvalidArgumentError, match="unknown precision 'int8'"):
        engine_file_name("int8", BatchRange(), TRT, H100)


@pytest.mark.parametrize(
    "args,phrase",
    [((0, 1, 1), "--min-batch must be a positive integer"), ((1, 9, 8), "need --min-batch <= --opt-batch <= --max-batch"),
     ((2, 1, 4), "got 2, 1, 4"), ((1, 1, True), "--max-batch must be a positive integer")],
)
def test_batch_range_is_validated(args, phrase):
    with pytest.raises(InvalidArgumentError, match=phrase):
        BatchRange(*args)


def test_static_batch_graph_needs_that_batch():
    assert BatchRange(1, 8, 32).fit("batch") == BatchRange(1, 8, 32)
    assert BatchRange(4, 4, 4).fit(4) == BatchRange(4, 4, 4)
    with pytest.raises(InvalidArgumentError, match="fixed batch of 4; pass --min-batch 4"):
        BatchRange(1, 4, 8).fit(4)


def _with_engines(export_dir, engines: dict) -> None:
    manifest = read_manifest(export_dir, verify=False)
    write_manifest(dataclasses.replace(manifest, engines=engines))


def _entry(precision="fp16", tensorrt=TRT, cc="9.0", max_batch=32) -> EngineRecord:
    return EngineRecord(graph=precision, precision=precision, min_batch=1, opt_batch=8, max_batch=max_batch,
                        tensorrt=tensorrt, gpu="some GPU", compute_capability=cc, sha256="0" * 64, bytes=1,
                        plugin_library="libvmddpm_trt_plugins.so", plugin_library_sha256="1" * 64)


def test_an_engine_from_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(export_dir):
    _with_engines(export_dir, {"old.plan": _entry(tensorrt="10.8.0.43"), "a100.plan": _entry("fp32", cc="8.0")})
    manifest = read_manifest(export_dir, verify=False)
    with pytest.raises(ArtifactError, match=r"built with TensorRT 10\.8\.0\.43, this machine has TensorRT 10\.14\.1\.48") as info:
        check_engine_runs_here(manifest, "old.plan", TRT, H100)
    assert f"vmddpm-deploy build-engine {export_dir} --fp16" in str(info.value)
    with pytest.raises(ArtifactError, match=r"compute capability 8\.0 \(some GPU\), this is NVIDIA H100 80GB HBM3 \(9\.0\)"):
        check_engine_runs_here(manifest, "a100.plan", TRT, H100)
    with pytest.raises(ArtifactError, match="is not listed in"):
        check_engine_runs_here(manifest, "missing.plan", TRT, H100)
    assert check_engine_runs_here(manifest, "a100.plan", TRT, A100).precision == "fp32"


def test_select_engine_prefers_fp16_then_the_widest_batch_range(export_dir):
    _with_engines(export_dir, {
        "a.plan": _entry("fp32", max_batch=64), "b.plan": _entry("fp16", max_batch=16),
        "c.plan": _entry("fp16", max_batch=32), "d.plan": _entry("fp16", tensorrt="10.8.0.43", max_batch=128),
    })
    manifest = read_manifest(export_dir, verify=False)
    assert select_engine(manifest, TRT, H100)[0] == "c.plan"
    assert select_engine(manifest, TRT, H100, "a.plan")[0] == "a.plan"
    with pytest.raises(ArtifactError, match=r"has no engine for TensorRT 10\.14\.1\.48 on .* \(sm80\) \(engines: a\.plan, b\.plan"):
        select_engine(manifest, TRT, A100)


def test_select_engine_of_a_precision(export_dir):
    _with_engines(export_dir, {"a.plan": _entry("fp32", max_batch=64), "c.plan": _entry("fp16", max_batch=32)})
    manifest = read_manifest(export_dir, verify=False)
    assert select_engine(manifest, TRT, H100, precision="fp32")[0] == "a.plan"
    assert select_engine(manifest, TRT, H100, precision="fp16")[0] == "c.plan"
    with pytest.raises(InvalidArgumentError, match="a.plan is an fp32 engine, not fp16"):
        select_engine(manifest, TRT, H100, "a.plan", precision="fp16")
    _with_engines(export_dir, {"c.plan": _entry("fp16")})
    with pytest.raises(ArtifactError, match="has no fp32 engine for TensorRT .* build-engine .* --fp32"):
        select_engine(read_manifest(export_dir, verify=False), TRT, H100, precision="fp32")


def test_record_engine_writes_an_entry_read_manifest_verifies(export_dir):
    plan = export_dir / "denoiser.fp32.b1-32.trt10.14.sm90.plan"
    plan.write_bytes(b"serialised plan bytes")
    library = export_dir / "libvmddpm_trt_plugins.so"
    library.write_bytes(b"plugin library bytes")
    fields = {"graph": "fp32", "precision": "fp32", "min_batch": 1, "opt_batch": 8, "max_batch": 32,
              "tensorrt": TRT, "gpu": H100.name, "compute_capability": "9.0"}
    build = {"precision": "fp32", "batch": BatchRange(1, 8, 32), "tensorrt_version": TRT, "gpu": H100}
    entry = record_engine(export_dir, plan, **build, plugin_library=library)

    manifest = read_manifest(export_dir)  # verify=True: the recorded sha256 and size match the plan
    assert manifest.engines == {plan.name: entry}
    assert entry.bytes == len(b"serialised plan bytes") and entry.plugin_library == library.name
    recorded = dataclasses.asdict(entry)
    assert set(recorded) == set(fields) | {"sha256", "bytes", "plugin_library", "plugin_library_sha256"}
    assert {key: recorded[key] for key in fields} == fields
    assert manifest.graphs["fp32"].file == "denoiser.onnx"  # the rest of the manifest is kept

    # A second engine joins the first; a changed plugin library makes the first one stale.
    second = export_dir / "denoiser.fp32.b1-8.trt10.14.sm90.plan"
    second.write_bytes(b"another plan")
    library.write_bytes(b"rebuilt plugin library")
    record_engine(export_dir, second, **build | {"batch": BatchRange(1, 8, 8)}, plugin_library=library)
    manifest = read_manifest(export_dir)
    assert sorted(manifest.engines) == sorted([plan.name, second.name])
    assert stale_engines(manifest, manifest.engines[second.name].plugin_library_sha256) == [plan.name]

    plan.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        read_manifest(export_dir)
