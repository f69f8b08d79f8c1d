"""benchmarks/gpu_acceptance.py, the one-shot GPU acceptance run, as far as a CPU machine can
check it: its arguments, how it picks CUDA architectures, and a ``--cpu-smoke`` run whose JSON
must have the promised shape, whose build step must compile the CUDA kernels for sm_90 with
VMDDPM_CUDA=ON, and whose GPU-only stages must say why they were skipped. (The run on a GPU is
the script's job; no GPU was lent when it was written.)
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.benchmarks.test_scripts import BENCHMARKS

SCRIPT = BENCHMARKS / "gpu_acceptance.py"
spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
acceptance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(acceptance)


@pytest.mark.parametrize(
    "argv",
    [[], ["--out", "x", "--stages", "build,nope"], ["--out", "x", "--stages", ","], ["--out", "x", "--arch", "hopper"], ["--out", "x", "--quick", "--cpu-smoke"]],
    ids=["no-out", "unknown-stage", "no-stage", "bad-arch", "two-modes"],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        acceptance.parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_arguments_pick_mode_stages_arch_and_budgets():
    args = acceptance.parse_args(["--out", "o", "--quick", "--stages", "ops,build", "--arch", "9.0"])
    assert (args.mode, args.stages, args.arch) == ("quick", ["ops", "build"], "90")
    full = acceptance.parse_args(["--out", "o"])
    assert full.mode == "full" and full.stages == list(acceptance.STAGES)
    # The full run must fit in 8 minutes on one H200, with a minute left for start-up and writing.
    assert sum(full.budgets.values()) <= 7 * 60
    assert all(sum(acceptance.parse_args(["--out", "o", mode]).budgets.values()) <= 7 * 60 for mode in ("--quick", "--cpu-smoke"))


def test_cuda_architectures_fall_back_to_ptx_when_nvcc_does_not_know_the_gpu():
    archs, _ = acceptance.cuda_architectures("90", [80, 86, 89, 90, 100])
    assert archs == "90"  # CMake's plain number: SASS and PTX for it
    archs, how = acceptance.cuda_architectures("130", [80, 90, 100, 120])
    assert archs == "120-virtual" and "PTX" in how


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("acceptance")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--cpu-smoke"], capture_output=True, text=True, timeout=300)
    assert (out / "acceptance.json").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "acceptance.json").read_text()), out, result


def test_cpu_smoke_report_has_every_stage_with_a_status(smoke):
    report, out, result = smoke
    assert report["format"] == "vmddpm-deploy-gpu-acceptance/1" and report["mode"] == "cpu-smoke"
    assert {"python", "torch"} <= report["environment"].keys()
    assert list(report["stages"]) == ["build", "parity", "ops", "denoiser", "sampling"]
    for name, stage in report["stages"].items():
        assert stage.keys() == {"status", "reason", "seconds", "budget_s", "results"}, name
        assert stage["status"] in ("ok", "skipped"), (name, stage["reason"])  # nothing failed
        assert (stage["reason"] is None) == (stage["status"] == "ok"), name
        assert (stage["results"] is None) == (stage["status"] != "ok"), name
        assert 0 <= stage["seconds"] <= stage["budget_s"] + 30, name
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "acceptance.md").read_text()
    assert all(f"| {name} | {stage['status']} |" in table for name, stage in report["stages"].items())


def test_cpu_smoke_build_compiles_the_cuda_kernels_for_sm_90(smoke):
    build = smoke[0]["stages"]["build"]
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        assert build["status"] == "skipped" and "nvcc" in build["reason"]
        pytest.skip("nvcc not found: the build stage reported itself skipped")
    assert build["status"] == "ok", build["reason"]
    results = build["results"]
    assert results["arch"] == "90" and 90 in results["nvcc_architectures"]
    assert results["objects"] == {"selective_scan.cu.o": ["compute_90", "sm_90"], "cross_ops.cu.o": ["compute_90", "sm_90"]}


def test_cpu_smoke_gpu_stages_say_why_they_did_not_run(smoke):
    parity = smoke[0]["stages"]["parity"]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the parity stage runs")
    assert parity["status"] == "skipped" and "GPU" in parity["reason"]


def test_cpu_smoke_times_the_ops_against_the_copy_and_the_denoiser_rows(smoke):
    report = smoke[0]
    ops = report["stages"]["ops"]
    if ops["status"] == "skipped":
        assert "native library" in ops["reason"]
        pytest.skip(ops["reason"])
    rows = ops["results"]["rows"]
    assert rows[0]["op"].startswith("copy") and rows[0]["percent_of_copy"] == 100.0
    assert {r["op"] for r in rows[1:]} == {"selective_scan (native)", "cross_scan (native)", "cross_merge (native)"}
    for row in rows:
        assert row["ms"] > 0 and row["percent_of_copy"] == pytest.approx(100 * row["gb_per_s"] / ops["results"]["copy_gb_per_s"])
    denoiser = report["stages"]["denoiser"]["results"]["rows"]
    assert {(r["kernels"], r["precision"], r["cuda_graph"]) for r in denoiser} == {("native", "fp32", False), ("scan-free", "fp32", False)}
    assert all(r["ms"] > 0 for r in denoiser)
    floor = next(r for r in denoiser if r["kernels"] == "scan-free")
    assert floor["x_scan_free"] == 1.0


def test_cpu_smoke_samples_through_the_cli(smoke):
    report, out, _ = smoke
    sampling = report["stages"]["sampling"]["results"]
    assert (sampling["n"], sampling["steps"], sampling["sampler"]) == (4, 2, "ddim")
    assert sampling["summary"]["images"] == 4 and sampling["images_per_s_wall"] > 0
    images = np.load(out / "samples-tiny" / "samples.npz")["images"]
    assert images.shape == (4, 1, 32, 32)
