"""The benchmark scripts run end to end on small shapes and write the JSON they promise.

Timing is not checked (speed lives in the benchmarks themselves); what is checked is that each
script still runs against the current package and runtimes (bench_ops once broke on an
onnxruntime that refused onnx's newest IR version, and nothing noticed), that every row its
table promises is there, and that the correctness checks the scripts make before timing hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmddpm_deploy.ops import native_library

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True, timeout=timeout
    )


def run_to_json(name: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "results.json"
    result = run_script(name, *args, "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text())


needs_native = pytest.mark.skipif(not native_library.available(), reason="the native library is not built")


@needs_native
def test_bench_ops_times_every_implementation_of_each_case(tmp_path):
    cases = [(1, 8, 4, 16), (2, 16, 16, 33)]
    results = run_to_json(
        "bench_ops.py", tmp_path, "--cases", ";".join(",".join(map(str, c)) for c in cases),
        "--iters", "2", "--reference-iters", "1",
    )
    for table, expected in (
        ("cpu_fp32", {"np.exp pass (informative)", "reference (torch loop)", "onnxruntime Scan graph"}),
        ("cpu_fp32_backward", {"native fwd (informative)", "native fwd + native bwd",
                               "native fwd + reference autograd bwd"}),
    ):
        for case in cases:
            rows = [row for row in results[table] if tuple(row["case"].values()) == case]
            names = {row["implementation"] for row in rows}
            assert expected <= names, (table, case, names)
            assert all(row["ms"] > 0 and row["ratio_to_native"] > 0 for row in rows)
    native_rows = [row for row in results["cpu_fp32"] if row["implementation"].startswith("native cpu")]
    assert len(native_rows) == len(cases) and all(row["ratio_to_native"] == 1.0 for row in native_rows)
    assert results["machine"]["native"]["loaded"] is True


@needs_native
def test_bench_ops_compares_two_library_builds(tmp_path):
    # The library against itself: one row per case and instruction set the CPU runs.
    case = (1, 8, 16, 70)
    results = run_to_json(
        "bench_ops.py", tmp_path, "--compare-library", str(native_library.library_path()),
        "--cases", ",".join(map(str, case)), "--iters", "2", "--rounds", "2",
    )
    rows = results["compare"]
    assert {row["isa"] for row in rows} >= {"baseline"}
    assert all(tuple(row["case"].values()) == case for row in rows)
    assert all(row["this_ms"] > 0 and row["other_ms"] > 0 for row in rows)


def test_bench_ops_refuses_a_case_it_cannot_split_into_routes():
    result = run_script("bench_ops.py", "--cases", "1,6,4,16")
    assert result.returncode == 2
    assert "multiple of 4" in result.stderr


@needs_native
def test_bench_train_step_reports_the_rows_it_was_asked_for(tmp_path):
    results = run_to_json(
        "bench_train_step.py", tmp_path, "--preset", "tiny", "--batch-size", "2", "--steps", "1",
        "--warmup", "1", "--ops", "native", "--device", "cpu", "--threads", "1", "--variants", "fp32,channels_last+amp",
    )
    fp32, last_amp = results["rows"]
    for row in (fp32, last_amp):
        settings = (row["ops"], row["preset"], row["batch_size"], row["threads"], row["timed_steps"])
        assert settings == ("native", "tiny", 2, 1, 1)
        assert row["median_ms"] > 0 and row["images_per_s"] > 0
    assert (fp32["variant"], fp32["amp"], fp32["channels_last"], fp32["x_fp32"]) == ("fp32", False, False, 1.0)
    assert (last_amp["amp"], last_amp["channels_last"]) == (True, True)
    assert last_amp["x_fp32"] == round(last_amp["median_ms"] / fp32["median_ms"], 3)


def test_bench_portable_scan_variants_agree_with_the_model(tmp_path):
    results = run_to_json("bench_portable_scan.py", tmp_path, "--iters", "1", "--chunks", "8")
    variants = {row["variant"]: row for row in results["rows"]}
    assert set(variants) == {"Scan", "chunked/8"}
    assert all(row["max_abs_error"] < 1e-4 and row["ms"] > 0 for row in variants.values())


@pytest.mark.slow
@needs_native
def test_bench_denoiser_rows_and_export_summary(tmp_path):
    results = run_to_json(
        "bench_denoiser.py", tmp_path, "--presets", "tiny", "--batch-sizes", "1",
        "--warmup", "0", "--iters", "1", "--reference-iters", "1",
    )
    rows = {row["backend"]: row for row in results["rows"]}
    assert set(rows) == {"torch-reference", "torch-native", "onnxruntime"}
    assert all(row["max_abs_vs_reference"] <= 1e-4 and row["median_ms"] > 0 for row in rows.values())
    assert rows["torch-reference"]["speedup_vs_torch_reference"] == 1.0
    (export,) = results["exports"]
    assert export["preset"] == "tiny" and export["export_seconds"] > 0
    assert set(export["graph_mb"]) == {"fp32", "fp16", "portable"}


def test_kill_resume_kills_resumes_and_compares(tmp_path):
    results = run_to_json(
        "kill_resume.py", tmp_path, "--tries", "2", "--formats", "npz", "--n", "4", "--batch-size", "2",
        "--steps", "2", "--seed", "1",
    )
    assert [row["format"] for row in results["rows"]] == ["npz"]
    for row in results["rows"]:
        assert row["tries"] == 2 and sum(row["splits"].values()) == 2
        assert row["differing_files"] == row["missing_files"] == row["temporary_files_left"] == 0
        assert row["reference_run_seconds"] > 0


def test_bench_quality_runs_diffusers_beside_ours_and_resumes(tmp_path):
    """Two rows of one algorithm, ours and diffusers' (through the Sampler adapter), from the same
    x_T: equal scores. A second run finds the cells done and recomputes nothing."""
    out = tmp_path / "quality"
    args = ["--out", str(out), "--n", "4", "--batch-size", "2", "--nfe", "2", "--rows", "ddim,diffusers-ddim",
            "--real", "bundled:heldout"]
    result = run_script("bench_quality.py", *args)
    assert result.returncode == 0, result.stderr
    cells = {row: json.loads((out / "cells" / f"{row}_nfe2_seed0.json").read_text()) for row in ("ddim", "diffusers-ddim")}
    assert cells["ddim"]["denoiser_calls_per_batch"] == cells["diffusers-ddim"]["denoiser_calls_per_batch"] == 2
    assert cells["ddim"]["fid"] == pytest.approx(cells["diffusers-ddim"]["fid"], rel=1e-3)
    assert cells["ddim"]["fid"] > 0
    written = {path: path.stat().st_mtime_ns for path in (out / "cells").iterdir()}
    again = run_script("bench_quality.py", *args)
    assert again.returncode == 0, again.stderr
    assert {path: path.stat().st_mtime_ns for path in (out / "cells").iterdir()} == written
    summary = json.loads((out / "quality.json").read_text())
    assert [(entry["row"], entry["nfe"]) for entry in summary] == [("ddim", 2), ("diffusers-ddim", 2)]
    assert (out / "fid_vs_nfe.png").stat().st_size > 0


def test_bench_quality_placement_rows_in_both_precisions(tmp_path):
    """A placement row and its bf16 twin share x_T and timesteps; a placement that repeats timesteps
    at the asked NFE makes no cell and says so."""
    out = tmp_path / "quality"
    args = ["--out", str(out), "--n", "4", "--batch-size", "2", "--nfe", "3,40", "--real", "bundled:heldout",
            "--rows", "ddim-ab2-quadratic,ddim-ab2-quadratic-bf16"]
    result = run_script("bench_quality.py", *args)
    assert result.returncode == 0, result.stderr
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").iterdir()}
    assert sorted(cells) == ["ddim-ab2-quadratic-bf16_nfe3_seed0", "ddim-ab2-quadratic_nfe3_seed0"]
    fp32, bf16 = cells["ddim-ab2-quadratic_nfe3_seed0"], cells["ddim-ab2-quadratic-bf16_nfe3_seed0"]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert fp32["timesteps"] == bf16["timesteps"] == [800, 200, 0]
    assert fp32["fid"] != bf16["fid"] and abs(fp32["fid"] - bf16["fid"]) < 0.1 * fp32["fid"]
    assert "ddim-ab2-quadratic" in result.stdout and "NFE   40: no cell (quadratic spacing repeats" in result.stdout


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bench_reproducible_sampling_times_both_schemes_and_checks_their_bytes(tmp_path, precision):
    result = run_to_json("bench_reproducible_sampling.py", tmp_path, "--batch-size", "4", "--steps", "1",
                         "--rounds", "1", "--threads", "2", "--micro-batches", "2", "--precision", precision)
    assert result["precision"] == precision
    assert [row["scheme"] for row in result["rows"]] == ["threaded", "micro-2"]
    assert all(row["median_ms_per_step"] > 0 for row in result["rows"])


def test_bench_quality_tuned_rows_share_one_cached_schedule(tmp_path):
    """The -tuned rows run at tune-schedule's timesteps for the cell's NFE, tuned once and kept in
    OUT/schedules/, so a rerun or another tuned row does not tune again."""
    out = tmp_path / "quality"
    args = ["--out", str(out), "--n", "4", "--batch-size", "2", "--nfe", "2", "--real", "bundled:heldout",
            "--rows", "ddim-tuned,ddim-ab2-tuned", "--tune-trajectories", "2"]
    result = run_script("bench_quality.py", *args)
    assert result.returncode == 0, result.stderr
    schedule = json.loads((out / "schedules" / "ddim-nfe2.json").read_text())
    assert schedule["trajectories"] == 2 and result.stdout.count("tuning the timesteps") == 1
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").iterdir()}
    assert cells["ddim-tuned_nfe2_seed0"]["timesteps"] == cells["ddim-ab2-tuned_nfe2_seed0"]["timesteps"] \
        == schedule["timesteps"]
    tuned_at = (out / "schedules" / "ddim-nfe2.json").stat().st_mtime_ns
    for path in (out / "cells").iterdir():
        path.unlink()
    again = run_script("bench_quality.py", *args)
    assert again.returncode == 0, again.stderr
    assert "tuning" not in again.stdout and (out / "schedules" / "ddim-nfe2.json").stat().st_mtime_ns == tuned_at
