"""Which selective scan the portable ONNX graph uses: ONNX ``Scan`` or a chunked closed form.

Both are lowered through the exporter (``torch.onnx.export(dynamo=True)`` with a custom
translation of ``vmddpm::selective_scan``) and run in ONNX Runtime on CPU, on the scan inputs a
real denoiser call produces: the preset's model runs once on random input while every
``selective_scan`` call's inputs are recorded. Each variant's outputs are compared with the
reference first, so a fast wrong variant shows its error next to its time.

* ``Scan``: :func:`vmddpm_deploy.export.onnx_functions.selective_scan_portable`, what
  ``denoiser.portable.onnx`` uses: one ``Scan`` iteration per token.
* ``chunked/<c>``: MzeroMiko/mamba-mini's ``selective_scan_easy`` (the form HaoKun-Li/VMamba_onnx
  exports): cumulative sums within chunks of ``c`` tokens, ``h = exp(A*S) * cumsum(dt*B*u /
  exp(A*S))``, chunks chained by an unrolled loop. The division underflows (NaN/inf) once
  ``|A| * sum(dt)`` over a chunk exceeds about 87.

    python benchmarks/bench_portable_scan.py [--preset tiny] [--batch 1] [--iters 5] [--json out.json]

Rows: total ms over all scan calls of one denoiser call (median of ``--iters`` runs each), the
ratio to ``Scan``, and the largest |difference| from the reference over all calls.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import statistics
import time
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import torch
from onnxscript import opset18 as op

from vmddpm_deploy.checkpoint import build_model, init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export.onnx_functions import selective_scan_portable
from vmddpm_deploy.model import preset
from vmddpm_deploy.ops import dispatch
from vmddpm_deploy.ops.reference import selective_scan_ref


def _ints(values):
    return op.Constant(value_ints=[int(v) for v in values])


def selective_scan_chunked(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True, chunk: int = 16):
    """mamba-mini's chunked closed form; u: (batch, K*D, L) fp32, L a multiple of ``chunk``."""
    _, channels, length = u.shape
    _, routes, state, _ = B.shape
    dim, chunks = channels // routes, length // chunk
    dt = op.Add(delta, op.Reshape(delta_bias, _ints([channels, 1])))
    if delta_softplus:
        dt = op.Softplus(dt)
    chunk_major = [3, 4, 0, 1, 2]  # (chunks, chunk, batch, K, D or N)
    dt = op.Transpose(op.Reshape(dt, _ints([0, routes, dim, chunks, chunk])), perm=chunk_major)
    u4 = op.Transpose(op.Reshape(u, _ints([0, routes, dim, chunks, chunk])), perm=chunk_major)
    B = op.Unsqueeze(op.Transpose(op.Reshape(B, _ints([0, routes, state, chunks, chunk])), perm=chunk_major), _ints([4]))
    C = op.Unsqueeze(op.Transpose(op.Reshape(C, _ints([0, routes, state, chunks, chunk])), perm=chunk_major), _ints([4]))
    decay = op.Exp(op.Mul(op.Unsqueeze(op.CumSum(dt, _ints([1])), _ints([-1])), op.Reshape(A, _ints([routes, dim, state]))))
    inject = op.Mul(op.Unsqueeze(op.Mul(dt, u4), _ints([-1])), B)
    local = op.Mul(decay, op.CumSum(op.Div(inject, decay), _ints([1])))  # (chunks, chunk, batch, K, D, N)
    states, carry = [], None
    for index in range(chunks):
        at = _ints([index])
        h = op.Squeeze(op.Gather(local, at, axis=0), _ints([0]))
        if carry is not None:
            h = op.Add(h, op.Mul(op.Squeeze(op.Gather(decay, at, axis=0), _ints([0])), carry))
        carry = op.Gather(h, _ints([chunk - 1]), axis=0)
        states.append(op.Unsqueeze(h, _ints([0])))
    y = op.ReduceSum(op.Mul(op.Concat(*states, axis=0), C), _ints([-1]), keepdims=0)  # (chunks, chunk, batch, K, D)
    y = op.Add(y, op.Mul(u4, op.Reshape(D, _ints([routes, dim]))))
    return op.Reshape(op.Transpose(y, perm=[2, 3, 4, 0, 1]), _ints([0, channels, length]))


class ScanOnly(torch.nn.Module):
    def forward(self, u, delta, A, B, C, D, delta_bias):
        return torch.ops.vmddpm.selective_scan(u, delta, A, B, C, D, delta_bias, True)


def record_scan_calls(preset_name: str, batch: int) -> list[tuple[torch.Tensor, ...]]:
    """The inputs of every selective_scan call of one denoiser call on random data."""
    config = preset(preset_name)
    model = build_model(init_checkpoint(config, NoiseSchedule(), seed=0))
    calls = []

    def recording(*args):
        calls.append(tuple(a.clone() for a in args[:7]))
        return selective_scan_ref(*args)

    kernels = SimpleNamespace(**{**vars(dispatch.REFERENCE), "selective_scan": recording})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    with torch.no_grad(), dispatch.using(kernels):
        model(x, t)
    return calls


def session_for(translation, inputs, directory: Path, name: str) -> ort.InferenceSession:
    path = directory / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            ScanOnly(),
            inputs,
            dynamo=True,
            custom_translation_table={torch.ops.vmddpm.selective_scan.default: translation},
            opset_version=18,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(run, iters: int) -> float:
    run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--chunks", default="8,16,32,64", help="chunk sizes of the chunked variant")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    calls = record_scan_calls(args.preset, args.batch)
    variants = {"Scan": selective_scan_portable}
    for chunk in (int(c) for c in args.chunks.split(",")):
        variants[f"chunked/{chunk}"] = functools.partial(selective_scan_chunked, chunk=chunk)
    shapes = sorted({tuple(call[0].shape) for call in calls}, key=lambda s: -s[-1])
    print(f"{args.preset}, batch {args.batch}: {len(calls)} scan calls, shapes (batch, K*D, L) {shapes}")

    rows = []
    with TemporaryDirectory() as tmp:
        for name, translation in variants.items():
            sessions = {}
            total_ms, worst = 0.0, 0.0
            for call in calls:
                shape = tuple(call[0].shape)
                if shape not in sessions:
                    sessions[shape] = session_for(translation, call, Path(tmp), f"{name.replace('/', '_')}_{len(sessions)}")
                session = sessions[shape]
                feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), call, strict=True)}
                out = session.run(None, feeds)[0]
                error = float(np.abs(out - selective_scan_ref(*call).numpy()).max())
                worst = error if np.isnan(error) or np.isnan(worst) else max(worst, error)
                total_ms += median_ms(lambda s=session, f=feeds: s.run(None, f), args.iters)
            rows.append({"variant": name, "ms": total_ms, "max_abs_error": worst})
            print(f"  {name:<12} {total_ms:9.1f} ms   max |error| {worst:.3g}", flush=True)

    scan_ms = rows[0]["ms"]
    print(f"\n{'variant':<12} {'ms / denoiser call':>19} {'x Scan':>7} {'max |error|':>12}")
    for row in rows:
        row["x_scan"] = row["ms"] / scan_ms
        print(f"{row['variant']:<12} {row['ms']:19.1f} {row['x_scan']:7.2f} {row['max_abs_error']:12.3g}")
    if args.json:
        meta = {"preset": args.preset, "batch": args.batch, "iters": args.iters, "machine": platform.platform(),
                "threads": torch.get_num_threads(), "onnxruntime": ort.__version__}
        for row in rows:  # JSON has no NaN: a variant that produced NaN reports null
            row["max_abs_error"] = None if np.isnan(row["max_abs_error"]) else row["max_abs_error"]
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
