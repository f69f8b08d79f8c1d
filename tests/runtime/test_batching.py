"""Batch sizes: backends with a fixed batch say so, and sampling runs any job on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vmddpm_deploy.cli import app
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.export import export_checkpoint
from vmddpm_deploy.runtime.batching import (
    CPU_MICRO_BATCH,
    DEFAULT_BATCH_SIZE,
    CallPlan,
    PaddedDenoiser,
    fit_batches,
    plan_calls,
    resolve_batch_size,
)
from vmddpm_deploy.runtime.onnx_reference_backend import OnnxReferenceDenoiser
from vmddpm_deploy.runtime.onnxruntime_backend import OnnxRuntimeDenoiser

runner = CliRunner()


class RowwiseDenoiser:
    """eps = row-dependent function of (x, t), batches limited to ``batch_range``; records calls."""

    def __init__(self, batch_range):
        self.batch_range = batch_range
        self.calls: list[int] = []

    def __call__(self, x, t):
        low, high = self.batch_range
        assert low <= x.shape[0] <= high
        self.calls.append(x.shape[0])
        return torch.tanh(x) * (t.float()[:, None, None, None] / 1000.0)


@pytest.fixture(scope="module")
def static_export(exported, tmp_path_factory):
    """The micro model's portable and fp32 custom-node graphs exported with a fixed batch of 4."""
    ckpt, _ = exported
    out = tmp_path_factory.mktemp("static") / "b4"
    export_checkpoint(ckpt, out, dtypes=("fp32",), ops=("plugin", "portable"), batch_dim=4)
    return out


def test_padding_runs_small_batches_and_keeps_their_rows():
    inner = RowwiseDenoiser((4, 8))
    padded = fit_batches(inner)
    assert isinstance(padded, PaddedDenoiser)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 500, 999])
    eps = padded(x, t)
    assert inner.calls == [4] and eps.shape == x.shape
    torch.testing.assert_close(eps, torch.tanh(x) * (t.float()[:, None, None, None] / 1000.0), rtol=0, atol=0)
    padded(torch.zeros(6, 1, 4, 4), torch.zeros(6, dtype=torch.long))
    assert inner.calls == [4, 6]  # within the range: passed through as it is
    unlimited = RowwiseDenoiser((1, 8))
    assert fit_batches(unlimited) is unlimited


def test_default_batch_size_on_a_gpu_is_the_backends_largest():
    assert resolve_batch_size(RowwiseDenoiser((1, 32)), None, 1000, "cuda") == 32
    assert resolve_batch_size(RowwiseDenoiser((4, 4)), None, 3, "cuda") == 3
    assert resolve_batch_size(lambda x, t: x, None, 1000, "cuda") == DEFAULT_BATCH_SIZE
    assert resolve_batch_size(lambda x, t: x, None, 5, "cuda") == 5
    assert resolve_batch_size(lambda x, t: x, 64, 1000, "cuda") == 64
    with pytest.raises(InvalidArgumentError, match="--batch-size 16 is larger than this backend takes .at most 8"):
        resolve_batch_size(RowwiseDenoiser((1, 8)), 16, 1000, "cuda")


def test_on_the_cpu_calls_have_the_micro_batch_and_the_default_keeps_every_thread_busy(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert resolve_batch_size(lambda x, t: x, None, 1000, "cpu") == 8 * CPU_MICRO_BATCH
    assert resolve_batch_size(lambda x, t: x, None, 5, "cpu") == 5
    assert resolve_batch_size(RowwiseDenoiser((1, 8)), 16, 1000, "cpu") == 16  # the calls have 4 rows
    assert plan_calls(lambda x, t: x, "cpu", 16) == CallPlan(CPU_MICRO_BATCH, workers=8, intra_op_threads=1)
    assert plan_calls(RowwiseDenoiser((6, 6)), "cpu", 16).micro_batch == 6  # a --batch-dim 6 graph takes 6
    assert plan_calls(lambda x, t: x, "cuda", 16) == CallPlan(16)


def test_fixed_batch_graphs_report_and_enforce_their_batch(static_export, exported):
    _, dynamic_export = exported
    ort = OnnxRuntimeDenoiser(static_export / "denoiser.portable.onnx")
    reference = OnnxReferenceDenoiser(static_export / "denoiser.onnx")
    assert ort.batch_range == (4, 4) and reference.batch_range == (4, 4)
    assert OnnxRuntimeDenoiser(dynamic_export / "denoiser.portable.onnx").batch_range is None
    assert OnnxReferenceDenoiser(dynamic_export / "denoiser.onnx").batch_range is None
    x, t = torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    for denoiser, graph in ((ort, "denoiser.portable.onnx"), (reference, "denoiser.onnx")):
        with pytest.raises(InvalidArgumentError, match=f"{graph} takes exactly batch 4, not 2"):
            denoiser(x, t)


def _images(directory, n):
    return np.stack([np.asarray(Image.open(directory / f"{i:05d}.png"), dtype=np.int64) for i in range(n)])


def test_sampling_a_fixed_batch_export_pads_the_last_batch(static_export, exported, tmp_path):
    ckpt, _ = exported
    common = ["--n", "6", "--steps", "4", "--seed", "3", "--quiet"]
    result = runner.invoke(app, ["sample", str(static_export), "--backend", "onnxruntime", *common, "--batch-size", "3",
                                 "--out", str(tmp_path / "static")])
    assert result.exit_code == 0, result.output
    assert '"padded_rows": 2' in result.output  # calls of the graph's 4 rows: [0, 1, 2 + a copy], [3, 4, 5 + a copy]
    result = runner.invoke(app, ["sample", str(ckpt), "--backend", "torch", "--precision", "fp32", *common,
                                 "--out", str(tmp_path / "torch")])
    assert result.exit_code == 0, result.output
    # Same seeds, other backend and batch composition: equal up to float rounding (one 16-bit level).
    assert np.abs(_images(tmp_path / "static", 6) - _images(tmp_path / "torch", 6)).max() <= 1


def test_on_the_cpu_a_batch_size_above_a_fixed_batch_graphs_runs_and_changes_no_byte(static_export, tmp_path):
    common = ["sample", str(static_export), "--backend", "onnxruntime", "--n", "6", "--steps", "4", "--quiet"]
    for batch_size in (8, 1):
        result = runner.invoke(app, [*common, "--batch-size", str(batch_size), "--out", str(tmp_path / str(batch_size))])
        assert result.exit_code == 0, result.output
    assert np.array_equal(_images(tmp_path / "8", 6), _images(tmp_path / "1", 6))


def test_a_given_batch_size_is_kept_even_above_n():
    """On a GPU the images depend on the batch size (every call is padded to it), so the one the user
    gave is the one a small job runs with too: --n 10 and --n 1000 at --batch-size 16 agree on 0..9."""
    assert resolve_batch_size(lambda x, t: x, 16, 5, "cuda") == 16
    assert resolve_batch_size(lambda x, t: x, None, 5, "cuda") == 5  # the default still fits the job
