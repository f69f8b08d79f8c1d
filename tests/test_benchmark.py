"""bench: rows, JSON schema, speedups measured in the same run, and argument errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from vmddpm_deploy.benchmark import SCAN_FREE, BenchTarget, ThreadReport, run_bench, thread_report, unrankable_rows
from vmddpm_deploy.cli import app
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.ops import dispatch, selective_scan
from tests.ops.test_reference import random_scan_inputs

runner = CliRunner()


@pytest.mark.parametrize("native_bf16", [False, True])
def test_bench_writes_rows_for_every_backend_and_batch(tmp_path, micro_ckpt, monkeypatch, native_bf16):
    monkeypatch.setattr("vmddpm_deploy.benchmark.cpu_has_native_bf16", lambda: native_bf16)
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app, ["bench", str(micro_ckpt), "--batch-sizes", "1,2", "--iters", "2", "--warmup", "0", "--steps", "5", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["baseline"] == "torch-reference" and payload["steps"] == 5
    rows = payload["rows"]
    default = ("torch", "torch-bf16", "torch-reference", "scan-free") if native_bf16 else (
        "torch", "torch-reference", "scan-free")
    assert sorted((r["backend"], r["batch"]) for r in rows) == sorted((b, n) for b in default for n in (1, 2))
    for row in rows:
        assert 0 < row["median_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["iters"] == 2 and row["peak_memory_mb"] > 0 and row["first_call_seconds"] > 0
        expected_ips = row["batch"] / (5 * (row["median_ms"] + row["sampler_step_ms"]) / 1000)
        assert row["images_per_second"] == pytest.approx(expected_ips)
    for row in rows:
        base = next(r for r in rows if r["backend"] == "torch-reference" and r["batch"] == row["batch"])
        assert row["speedup_vs_torch-reference"] == pytest.approx(base["median_ms"] / row["median_ms"])
    assert "scan-free" in result.output


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--backends", "torch,warp"], "unknown backend 'warp'"),
        (["--batch-sizes", "1,0"], "--batch-sizes takes positive integers"),
        (["--batch-sizes", ""], "--batch-sizes needs at least one value"),
        (["--iters", "0"], "--iters >= 1"),
    ],
)
def test_bench_bad_arguments(micro_ckpt, args, phrase):
    result = runner.invoke(app, ["bench", str(micro_ckpt), *args])
    assert result.exit_code == 2
    assert phrase in result.output


def test_scan_free_kernels_keep_only_the_skip_term():
    u, delta, A, B, C, D, delta_bias = random_scan_inputs(2, 4, 3, 4, 6)
    with dispatch.using(SCAN_FREE):
        y = selective_scan(u, delta, A, B, C, D, delta_bias, True)
    torch.testing.assert_close(y, u * D[None, :, None])
    # Outside the block the real scan runs again.
    assert not torch.allclose(selective_scan(u, delta, A, B, C, D, delta_bias, True), y)


def test_bench_fp16_row_and_a_chosen_baseline(tmp_path, micro_ckpt):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(micro_ckpt), "--backends", "torch,torch-fp16", "--baseline", "torch-fp16",
                                 "--batch-sizes", "2", "--iters", "2", "--warmup", "0", "--steps", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["baseline"] == "torch-fp16"
    torch_row, half_row = payload["rows"]
    assert (torch_row["backend"], half_row["backend"]) == ("torch", "torch-fp16")
    assert half_row["speedup_vs_torch-fp16"] == 1.0
    assert torch_row["speedup_vs_torch-fp16"] == pytest.approx(half_row["median_ms"] / torch_row["median_ms"])


@pytest.mark.parametrize(
    "args,code,phrase",
    [
        (["--backends", "torch", "--baseline", "onnxruntime"], 2, "--baseline onnxruntime is not one of the rows"),
        (["--backends", "tensorrt-fp16"], 2, "the tensorrt-fp16 row runs an export's engine"),
    ],
)
def test_bench_rows_that_cannot_run_a_checkpoint(micro_ckpt, args, code, phrase):
    result = runner.invoke(app, ["bench", str(micro_ckpt), "--batch-sizes", "1", "--iters", "1", *args])
    assert result.exit_code == code, result.output
    assert phrase in result.output and "Traceback" not in result.output


def test_timed_calls_go_round_robin_over_the_rows_after_each_rows_warmup():
    calls = []

    def recording(name):
        def denoiser(x, t):
            calls.append(name)
            return torch.zeros_like(x)

        return denoiser

    targets = [BenchTarget("a", recording("a")), BenchTarget("b", recording("b"))]
    sampler = make_sampler("ddim", NoiseSchedule(), 5)
    rows = run_bench(targets, (1, 4, 4), [2], sampler, warmup=2, iters=3, baseline="a")
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a", "b"] * 3  # first call, warm-up, then round robin
    assert [(row["backend"], row["batch"], row["iters"]) for row in rows] == [("a", 2, 3), ("b", 2, 3)]
    assert rows[0]["speedup_vs_a"] == 1.0


def test_bench_bf16_rows_beside_the_fp32_ones(tmp_path, micro_ckpt):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(micro_ckpt), "--backends", "torch,torch-bf16,scan-free,scan-free-bf16",
                                 "--batch-sizes", "2", "--iters", "2", "--warmup", "0", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["torch", "torch-bf16", "scan-free", "scan-free-bf16"]
    assert all(r["median_ms"] > 0 and r["speedup_vs_torch"] > 0 for r in rows)


def test_each_row_reports_its_own_peak_memory_not_the_process_high_water_mark():
    def heavy(x, t):
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched so that it is resident
        return x + block[:1]

    def light(x, t):
        return x + 1

    sampler = make_sampler("ddim", NoiseSchedule(), 2)
    rows = run_bench([BenchTarget("heavy", heavy), BenchTarget("light", light)], (1, 4, 4), [1], sampler, 1, 3, "heavy")
    peaks = {row["backend"]: row["peak_memory_mb"] for row in rows}
    # The light row runs after the heavy one: a process high-water mark would give it the heavy peak.
    assert peaks["heavy"] - peaks["light"] > 48, peaks


def test_rows_closer_than_their_spread_are_named_as_unrankable():
    def row(name, median, p90, batch=1):
        return {"backend": name, "batch": batch, "median_ms": median, "p90_ms": p90}

    rows = [row("torch", 100, 150), row("scan-free", 110, 112), row("reference", 400, 420),
            row("torch", 50, 51, batch=8), row("scan-free", 80, 81, batch=8)]
    lines = unrankable_rows(rows)
    # torch vs scan-free at batch 1: 10% apart, torch's calls spread 50%; reference is 264% slower (spread 5%).
    assert len(lines) == 1 and lines[0].startswith("batch 1: torch and scan-free differ by 10% but their calls spread by up to 50%")


def test_thread_report_advises_fewer_threads_only_when_one_is_faster():
    assert ThreadReport(2, 2, (5.0, 4.0, 3.0), probe_ms=30.0, probe_ms_one_thread=2.0).advice() == (
        "fewer threads are faster here now (30.0 ms against 2.0 ms at 1 thread; load 5.0 on 2 cores): "
        "set OMP_NUM_THREADS=1 or lower")
    assert ThreadReport(2, 2, (0.1, 0.1, 0.1), probe_ms=1.0, probe_ms_one_thread=1.9).advice() is None
    threads = torch.get_num_threads()
    report = thread_report()
    assert report.threads == threads == torch.get_num_threads() and report.cores >= 1  # the count is restored
    assert (report.probe_ms is None) == (threads == 1)
    assert report.summary().startswith(f"{threads} torch threads on {report.cores} cores, load ")


def test_bench_json_on_stdout_has_the_threads_and_no_table(micro_ckpt):
    result = runner.invoke(app, ["bench", str(micro_ckpt), "--backends", "torch", "--batch-sizes", "1", "--iters", "2",
                                 "--warmup", "0", "--steps", "3", "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads([line for line in result.output.splitlines() if line.startswith("{")][0])
    assert payload["threads"]["threads"] == torch.get_num_threads() and payload["rows"][0]["backend"] == "torch"
    assert "median ms" not in result.output
