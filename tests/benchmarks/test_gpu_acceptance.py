"""benchmarks/gpu_acceptance.py, the one-shot GPU acceptance run, as far as a CPU machine can
check it: its arguments, budgets and statuses, how it picks CUDA architectures and reads what a
library holds, the performance risks it reports, and a ``--cpu-smoke`` run taken exactly as the
GPU machine takes it: from a fresh environment where the package is not installed yet, so that
the build stage's ``pip install --no-deps --no-build-isolation -e .`` must be what later stages
import. (The run on a GPU is the script's job; no GPU was lent when it was written.)
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.benchmarks.test_scripts import BENCHMARKS

SCRIPT = BENCHMARKS / "gpu_acceptance.py"
REPO_ROOT = BENCHMARKS.parent
spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
acceptance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(acceptance)
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)


@pytest.mark.parametrize(
    "argv",
    [[], ["--out", "x", "--stages", "build,nope"], ["--out", "x", "--stages", ","], ["--out", "x", "--arch", "hopper"], ["--out", "x", "--quick", "--cpu-smoke"], ["--out", "x", "--time-limit", "0"]],
    ids=["no-out", "unknown-stage", "no-stage", "bad-arch", "two-modes", "no-time"],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        acceptance.parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_arguments_pick_mode_stages_and_arch():
    args = acceptance.parse_args(["--out", "o", "--quick", "--stages", "ops,build", "--arch", "9.0"])
    assert (args.mode, args.stages, args.arch) == ("quick", ["ops", "build"], "90")
    full = acceptance.parse_args(["--out", "o"])
    assert full.mode == "full" and full.stages == list(acceptance.STAGES)


def test_budgets_leave_room_for_a_second_run():
    """GPU time comes as 15 minutes, start-up included: the full run's estimates must fit twice."""
    total = sum(acceptance.budget_for("full", stage)[0] for stage in acceptance.STAGES)
    assert total <= 6 * 60


def test_sampling_budget_comes_from_the_denoisers_measured_call():
    # 1000 images at batch 16 are 63 batches of 50 DDIM steps: 3150 calls of 20 ms with a 1.5
    # margin is 94.5 s, after two interpreter starts of 15 s.
    row = {"preset": "small", "batch": 16, "kernels": "native", "precision": "fp32", "cuda_graph": False, "ms": 20.0}
    other = {**row, "batch": 64, "ms": 50.0}
    seconds, basis = acceptance.budget_for("full", "sampling", {"denoiser": {"results": {"rows": [other, row]}}})
    assert seconds == pytest.approx(124.5)
    assert "3150 denoiser calls" in basis and "measured" in basis
    _, assumed = acceptance.budget_for("full", "sampling", {"denoiser": {"results": None}})
    assert "assumed" in assumed


def fake_stage(monkeypatch, behaviour):
    monkeypatch.setitem(acceptance.IN_PROCESS_STAGES, "parity", behaviour)
    monkeypatch.setitem(acceptance.ESTIMATES["cpu-smoke"], "parity", ("test", 0.2))


@pytest.mark.parametrize(
    "behaviour,status,reason",
    [
        (lambda args, out, limit: {"rows": 1}, "ok", None),
        (lambda args, out, limit: time.sleep(0.3) or {"rows": 1}, "over budget", "took 0 s against 0 s estimated"),
        (lambda args, out, limit: {"rows": 1, "budget_spent": True}, "over budget", "rows left untimed"),
        (lambda args, out, limit: 1 / 0, "failed", "ZeroDivisionError"),
        (lambda args, out, limit: acceptance.run_command(["sleep", "5"], limit, Path(out) / "sleep.log"), "failed", "stopped after"),
    ],
    ids=["ok", "late", "cut-short", "error", "past-the-hard-limit"],
)
def test_over_budget_is_reported_apart_from_failed(monkeypatch, tmp_path, behaviour, status, reason):
    fake_stage(monkeypatch, behaviour)
    args = acceptance.parse_args(["--out", str(tmp_path), "--cpu-smoke", "--stages", "parity"])
    entry = acceptance.run_stage(args, "parity", tmp_path, {})
    assert entry["status"] == status
    assert (entry["reason"] is None) if reason is None else (reason in entry["reason"])
    assert entry["budget_s"] == 0.2 and entry["budget_basis"] == "test"
    assert (entry["results"] is not None) == (status in ("ok", "over budget"))


def test_cuda_architectures_fall_back_to_ptx_when_nvcc_does_not_know_the_gpu():
    archs, _ = acceptance.cuda_architectures("90", [80, 86, 89, 90, 100])
    assert archs == "90"  # CMake's plain number: SASS and PTX for it
    archs, how = acceptance.cuda_architectures("130", [80, 90, 100, 120])
    assert archs == "120-virtual" and "PTX" in how


def test_the_runs_time_limit_cuts_a_stage_and_skips_the_next(monkeypatch, tmp_path):
    fake_stage(monkeypatch, lambda args, out, limit: acceptance.run_command(["sleep", "5"], limit, Path(out) / "sleep.log"))
    monkeypatch.setitem(acceptance.ESTIMATES["cpu-smoke"], "parity", ("test", 60))
    args = acceptance.parse_args(["--out", str(tmp_path), "--cpu-smoke", "--stages", "parity", "--time-limit", "100"])
    begin = time.monotonic()
    cut = acceptance.run_stage(args, "parity", tmp_path, {}, time_left=1.5)
    assert cut["status"] == "failed" and "stopped after 2 s" in cut["reason"] and time.monotonic() - begin < 4
    later = acceptance.run_stage(args, "parity", tmp_path, {}, time_left=0.5)
    assert later["status"] == "skipped" and "--time-limit" in later["reason"]


def test_a_stopped_stage_takes_the_processes_it_started_with_it(tmp_path):
    """A worker stopped at its limit must not leave its own children (the sampling CLI, pytest
    workers) running on the GPU."""
    with pytest.raises(RuntimeError, match="stopped after 2 s"):
        acceptance.run_command(["bash", "-c", "sleep 60 & echo $! > child.pid; wait"], 2, tmp_path / "log", cwd=tmp_path)
    child = int((tmp_path / "child.pid").read_text())

    def running(pid: int) -> bool:
        try:
            return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while running(child):
        assert time.monotonic() < deadline, f"process {child}, started by the stopped command, still runs"
        time.sleep(0.1)


def compile_fatbin_library(tmp_path: Path, *gencode: str) -> Path:
    source = tmp_path / "kernel.cu"
    source.write_text("__global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }\n"
                      "extern \"C\" void launch(float* x) { twice<<<1, 32>>>(x); }\n")  # fmt: skip
    library = tmp_path / "libkernel.so"
    command = [NVCC, "-shared", "-Xcompiler", "-fPIC", *(f"-gencode={g}" for g in gencode), str(source), "-o", str(library)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return library


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, /usr/local/cuda/bin)")
def test_compiled_architectures_tell_machine_code_from_ptx(tmp_path):
    """What nvcc was asked for, read back from the library: sm_80 machine code and compute_90 PTX
    only, so a GPU of compute capability 9.0 would run JIT-compiled PTX, not native code."""
    library = compile_fatbin_library(tmp_path, "arch=compute_80,code=sm_80", "arch=compute_90,code=compute_90")
    assert acceptance.fatbin_architectures(library) == {"sass": ["sm_80"], "ptx": ["compute_90"]}
    compiled = acceptance.compiled_architectures(library)
    assert (compiled["sass"], compiled["ptx"]) == (["sm_80"], ["compute_90"]), compiled["read_by"]
    assert acceptance.fatbin_architectures(Path(sys.executable).resolve()) == {"sass": [], "ptx": []}


def ops_rows(device: str, percents: dict[str, float]) -> dict:
    rows = [{"op": op, "dtype": "float16", "percent_of_copy": percent} for op, percent in percents.items()]
    return {"ops": {"results": {"device": device, "rows": rows}}}


def test_performance_risks_name_the_next_step_when_measured_low():
    stages = ops_rows("cuda", {"selective_scan (native)": 31.0, "cross_scan (native)": 75.0, "cross_merge (native)": 64.0})
    scan, cross = acceptance.performance_risks(stages)
    assert scan["verdict"].startswith("low (selective_scan (native) float16 at 31% of the copy)")
    assert "chunked scan over L with a carry pass" in scan["verdict"] and "mamba-ssm" in scan["verdict"]
    assert cross["verdict"].startswith("met")
    _, cross = acceptance.performance_risks(ops_rows("cuda", {"cross_scan (native)": 75.0, "cross_merge (native)": 40.0}))
    assert "cross_merge (native) float16 at 40%" in cross["verdict"] and "shared-memory tile transpose" in cross["verdict"]
    for risk in acceptance.performance_risks(ops_rows("cpu", {"selective_scan (native)": 99.0})):
        assert risk["verdict"].startswith("not measured")


def fresh_environment(root: Path) -> Path:
    """A new virtual environment that sees this one's packages (torch, pip, scikit-build-core...)
    but not vmddpm-deploy: as on the GPU machine, the package is not installed until the build
    stage installs it. Returns its interpreter."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    # Links to this environment's packages, less this project's install (its package, dist-info
    # and editable import hook); .pth files are left out too, since a directory named in a .pth
    # file is not scanned for more of them.
    shared = root / "packages"
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("vmddpm_deploy", "_editable_skbc_vmddpm_deploy")) and entry.suffix != ".pth":
            (shared / entry.name).symlink_to(entry)
    (site / "packages.pth").write_text(f"{shared}\n")
    return python


# The tests below share one run, slow: a fresh build of the native library with its CUDA kernels,
# then four interpreters (the README's GPU section says how long it took on two shared cores).
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, Path, subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("acceptance")
    python = fresh_environment(root)
    absent = subprocess.run([python, "-c", "import vmddpm_deploy"], cwd=root, capture_output=True, text=True)
    assert absent.returncode != 0 and "No module named 'vmddpm_deploy'" in absent.stderr, "the fresh environment already has the package"
    out = root / "out"
    # As the GPU machine runs it: from the repository root, with that environment's interpreter.
    result = subprocess.run([python, str(SCRIPT), "--out", str(out), "--cpu-smoke"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert (out / "acceptance.json").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "acceptance.json").read_text()), out, result, python


@pytest.mark.slow
def test_cpu_smoke_report_has_every_stage_with_a_status(smoke):
    report, out, result, _ = smoke
    assert report["format"] == "vmddpm-deploy-gpu-acceptance/2" and report["mode"] == "cpu-smoke"
    assert {"python", "torch"} <= report["environment"].keys()
    assert list(report["stages"]) == ["build", "parity", "ops", "denoiser", "sampling"]
    for name, stage in report["stages"].items():
        assert stage.keys() == {"status", "reason", "seconds", "budget_s", "budget_basis", "results"}, name
        # Nothing failed; a loaded CI machine may run past an estimate, which is reported as such.
        assert stage["status"] in ("ok", "over budget", "skipped"), (name, stage["reason"])
        assert (stage["reason"] is None) == (stage["status"] == "ok"), name
        assert (stage["results"] is None) == (stage["status"] == "skipped"), name
        assert 0 <= stage["seconds"] <= acceptance.HARD_LIMIT_FACTOR * stage["budget_s"], name
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "acceptance.md").read_text()
    assert all(f"| {name} | {stage['status']} |" in table for name, stage in report["stages"].items())


@pytest.mark.slow
def test_cpu_smoke_build_installs_the_package_for_the_later_stages(smoke):
    """The build stage's editable install is what the later stages import: into the fresh
    environment, with the CUDA kernels for sm_90 (machine code and PTX, read from the library)."""
    report, _, _, python = smoke
    build = report["stages"]["build"]
    if NVCC is None:
        assert build["status"] == "skipped" and "nvcc" in build["reason"]
        pytest.skip("nvcc not found: the build stage reported itself skipped")
    assert build["status"] != "skipped", build["reason"]
    results = build["results"]
    assert results["arch"] == "90" and 90 in results["nvcc_architectures"]
    library = Path(results["build_info"]["library"])
    assert library.is_relative_to(python.parent.parent), f"{library} is not the fresh environment's"
    assert results["build_info"]["cuda_built"] and results["build_info"]["cuda_archs"] == ["90"]
    assert (results["compiled"]["sass"], results["compiled"]["ptx"], results["compiled"]["native"]) == (["sm_90"], ["compute_90"], True)


@pytest.mark.slow
def test_cpu_smoke_gpu_stages_say_why_they_did_not_run(smoke):
    parity = smoke[0]["stages"]["parity"]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the parity stage runs")
    assert parity["status"] == "skipped" and "GPU" in parity["reason"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_cpu_smoke_samples_through_the_cli_on_a_measured_budget(smoke):
    report, out, _, _ = smoke
    stage = report["stages"]["sampling"]
    sampling = stage["results"]
    assert (sampling["n"], sampling["steps"], sampling["sampler"]) == (4, 2, "ddim")
    assert sampling["summary"]["images"] == 4 and sampling["images_per_s_wall"] > 0
    images = np.load(out / "samples-tiny" / "samples.npz")["images"]
    assert images.shape == (4, 1, 32, 32)
    native = next(r for r in report["stages"]["denoiser"]["results"]["rows"] if r["kernels"] == "native")
    assert f"x {native['ms']:.2f} ms (measured by the denoiser stage)" in stage["budget_basis"]


@pytest.mark.slow
def test_cpu_smoke_writes_down_the_performance_risks(smoke):
    report, out, result, _ = smoke
    names = [risk["name"] for risk in report["performance_risks"]]
    assert names == ["selective scan", "cross scan / cross merge"]
    for risk in report["performance_risks"]:
        assert risk["verdict"].startswith("not measured")  # the ops ran on the CPU
        assert risk["next_step"] in result.stdout and risk["next_step"] in (out / "acceptance.md").read_text()
