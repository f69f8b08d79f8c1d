"""Selective-scan latency, side by side: the reference torch loop, the same recurrence as an
ONNX ``Scan`` graph in ONNX Runtime, and the native CPU kernels (plus native CUDA and mamba-ssm
on a GPU machine); then, for training, forward + backward with the native backward kernel
against autograd through the reference. Every implementation's output (and gradients) is
checked against the reference before it is timed, so a fast wrong kernel cannot post a number.

    python benchmarks/bench_ops.py [--json results.json] [--iters 20] [--no-backward]
                                   [--cases 1,512,16,4096;8,384,16,1024]
    python benchmarks/bench_ops.py --compare-library OTHER/libvmddpm_ops.so [--rounds 7]

Rows report the median of several runs, in ms, and each row's time over native's. The
``np.exp pass`` row is informative: one numpy exp over batch*K*D*L*N floats, the count of
exponentials the scan itself evaluates.

``--compare-library`` times only the native CPU forward, of this build and of another one (say
the base commit's, built with ``cmake -S plugins -B OTHER``), for each instruction set both
have that the CPU runs. The two alternate within one process, in ABBA order over ``--rounds``
rounds of ``--iters`` runs each, so that a shared machine's load falls on both alike; a row
gives the median over rounds of each round's median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from vmddpm_deploy.errors import NativeOpsError
from vmddpm_deploy.ops import native, native_library
from vmddpm_deploy.ops.reference import selective_scan_bwd_ref, selective_scan_ref

ROUTES = 4
CPU_CASES = [  # (batch, K*D, N, L)
    (1, 512, 16, 4096),
    (8, 384, 16, 1024),
]
CUDA_CASE = (8, 1536, 16, 4096)
# The tiny preset's scans in a batch-8 training step: level 0 (32x32, 96 SS2D channels) and
# level 1 (16x16, 192 channels), K = 4 routes each.
BACKWARD_CASES = [
    (8, 384, 16, 1024),
    (8, 768, 16, 256),
]


def scan_inputs(batch, channels, state, length, dtype=torch.float32, device="cpu"):
    """SS2D-like inputs: A from A_log = log(1..N), dt bias the inverse softplus of U[1e-3, 0.1]."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g)
    A = -torch.arange(1, state + 1, dtype=torch.float32).repeat(channels, 1)
    B = torch.randn(batch, ROUTES, state, length, generator=g)
    C = torch.randn(batch, ROUTES, state, length, generator=g)
    D = torch.ones(channels)
    delta_bias = torch.log(torch.expm1(torch.empty(channels).uniform_(1e-3, 0.1, generator=g)))
    io = [t.to(dtype).to(device) for t in (u, delta, B, C)]
    return io[0], io[1], A.to(device), io[2], io[3], D.to(device), delta_bias.to(device)


def median_ms(run, iters, sync=lambda: None):
    run()  # warm-up: first-call allocation, library load, graph optimisation
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def scan_graph(batch, channels, state, length):
    """The recurrence as ONNX: softplus and dt*u vectorised, then a Scan over L whose body does
    one step, h = exp(dt*A)*h + dt*u*B and y = sum_n C*h, for all channels at once."""
    dim = channels // ROUTES
    f32 = TensorProto.FLOAT

    def const(name, values):
        array = np.asarray(values, dtype=np.int64)
        return helper.make_node(
            "Constant",
            [],
            [name],
            value=helper.make_tensor(name, TensorProto.INT64, array.shape, array),
        )

    body = helper.make_graph(
        [
            const("step_shape", [batch, ROUTES, dim, 1]),
            const("y_shape", [batch, channels]),
            const("state_axis", [2]),
            const("sum_axis", [3]),
            helper.make_node("Reshape", ["dt_l", "step_shape"], ["dt4"]),
            helper.make_node("Reshape", ["dtu_l", "step_shape"], ["dtu4"]),
            helper.make_node("Mul", ["dt4", "A4"], ["dtA"]),
            helper.make_node("Exp", ["dtA"], ["dA"]),
            helper.make_node("Unsqueeze", ["B_l", "state_axis"], ["B4"]),
            helper.make_node("Unsqueeze", ["C_l", "state_axis"], ["C4"]),
            helper.make_node("Mul", ["dA", "h_prev"], ["decayed"]),
            helper.make_node("Mul", ["dtu4", "B4"], ["injected"]),
            helper.make_node("Add", ["decayed", "injected"], ["h_next"]),
            helper.make_node("Mul", ["h_next", "C4"], ["hC"]),
            helper.make_node("ReduceSum", ["hC", "sum_axis"], ["y_routes"], keepdims=0),
            helper.make_node("Reshape", ["y_routes", "y_shape"], ["y_l"]),
        ],
        "scan_step",
        [
            helper.make_tensor_value_info("h_prev", f32, [batch, ROUTES, dim, state]),
            helper.make_tensor_value_info("dt_l", f32, [batch, channels]),
            helper.make_tensor_value_info("dtu_l", f32, [batch, channels]),
            helper.make_tensor_value_info("B_l", f32, [batch, ROUTES, state]),
            helper.make_tensor_value_info("C_l", f32, [batch, ROUTES, state]),
        ],
        [
            helper.make_tensor_value_info("h_next", f32, [batch, ROUTES, dim, state]),
            helper.make_tensor_value_info("y_l", f32, [batch, channels]),
        ],
    )
    nodes = [
        const("bias_shape", [1, channels, 1]),
        const("A_shape", [1, ROUTES, dim, state]),
        helper.make_node("Reshape", ["delta_bias", "bias_shape"], ["bias3"]),
        helper.make_node("Reshape", ["D", "bias_shape"], ["D3"]),
        helper.make_node("Reshape", ["A", "A_shape"], ["A4"]),  # read by the body (outer scope)
        helper.make_node("Add", ["delta", "bias3"], ["dt_raw"]),
        helper.make_node("Softplus", ["dt_raw"], ["dt"]),
        helper.make_node("Mul", ["dt", "u"], ["dtu"]),
        helper.make_node(
            "Scan",
            ["h0", "dt", "dtu", "B", "C"],
            ["h_last", "y_scan"],
            body=body,
            num_scan_inputs=4,
            scan_input_axes=[2, 2, 3, 3],
            scan_output_axes=[2],
        ),
        helper.make_node("Mul", ["D3", "u"], ["skip"]),
        helper.make_node("Add", ["y_scan", "skip"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("u", f32, [batch, channels, length]),
        helper.make_tensor_value_info("delta", f32, [batch, channels, length]),
        helper.make_tensor_value_info("A", f32, [channels, state]),
        helper.make_tensor_value_info("B", f32, [batch, ROUTES, state, length]),
        helper.make_tensor_value_info("C", f32, [batch, ROUTES, state, length]),
        helper.make_tensor_value_info("D", f32, [channels]),
        helper.make_tensor_value_info("delta_bias", f32, [channels]),
        helper.make_tensor_value_info("h0", f32, [batch, ROUTES, dim, state]),
    ]
    outputs = [helper.make_tensor_value_info("y", f32, [batch, channels, length])]
    graph = helper.make_graph(nodes, "selective_scan", inputs, outputs)
    # IR version 10 (onnx 1.16's): onnx's helper stamps its own newest IR version, which an older
    # onnxruntime refuses ("Unsupported model IR version"); opset 17 needs nothing newer.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def check(name, actual, expected, rtol, atol):
    if not torch.allclose(actual.float().cpu(), expected.float(), rtol=rtol, atol=atol):
        difference = (actual.float().cpu() - expected.float()).abs().max().item()
        raise SystemExit(f"{name} disagrees with the reference (max |diff| {difference:.3g})")


def cpu_rows(case, iters, reference_iters):
    batch, channels, state, length = case
    inputs = scan_inputs(*case)
    expected = selective_scan_ref(*inputs)
    rows = []

    # Native first and ONNX Runtime last: another runtime's idle worker threads must not share
    # the cores while the row every ratio divides by is timed.
    check("native cpu", native.selective_scan(*inputs), expected, 1e-5, 1e-5)
    rows.append(
        (
            f"native cpu ({native_library.describe()['cpu_isa']})",
            median_ms(lambda: native.selective_scan(*inputs), iters),
        )
    )

    exponents = -np.random.default_rng(0).random(
        batch * channels * length * state, dtype=np.float32
    )
    out = np.empty_like(exponents)
    rows.append(("np.exp pass (informative)", median_ms(lambda: np.exp(exponents, out=out), iters)))

    rows.append(
        ("reference (torch loop)", median_ms(lambda: selective_scan_ref(*inputs), reference_iters))
    )

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = torch.get_num_threads()
    # ONNX Runtime's idle threads otherwise spin on the cores the next case is timed on.
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        scan_graph(*case).SerializeToString(), session_options, providers=["CPUExecutionProvider"]
    )
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
    feeds = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
    feeds["h0"] = np.zeros((batch, ROUTES, channels // ROUTES, state), dtype=np.float32)
    check("onnxruntime Scan", torch.from_numpy(session.run(None, feeds)[0]), expected, 1e-4, 1e-4)
    rows.append(
        ("onnxruntime Scan graph", median_ms(lambda: session.run(None, feeds), reference_iters))
    )
    return rows


def backward_rows(case, iters, reference_iters):
    """Forward + backward of one scan as training runs it: the native forward, then the native
    backward kernel or (the path before it existed) autograd through the reference recurrence."""
    batch, channels, _, length = case
    inputs = scan_inputs(*case)
    dy = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(1))
    expected = selective_scan_bwd_ref(*inputs, dy)
    for name, got, want in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"),
                               native.selective_scan_bwd(*inputs, dy), expected, strict=True):
        check(f"native backward {name}", got, want, 6e-4, 2e-3)

    def native_step():
        native.selective_scan(*inputs)
        native.selective_scan_bwd(*inputs, dy)

    def reference_backward_step():
        native.selective_scan(*inputs)
        selective_scan_bwd_ref(*inputs, dy)

    return [
        ("native fwd (informative)", median_ms(lambda: native.selective_scan(*inputs), iters)),
        ("native fwd + native bwd", median_ms(native_step, iters)),
        ("native fwd + reference autograd bwd", median_ms(reference_backward_step, reference_iters)),
    ]


def cuda_rows(iters):
    batch, channels, state, length = CUDA_CASE
    inputs = scan_inputs(*CUDA_CASE, dtype=torch.float16, device="cuda")
    small = scan_inputs(2, 96, state, 512, dtype=torch.float16)
    check(
        "native cuda",
        native.selective_scan(*(t.cuda() for t in small)),
        selective_scan_ref(*small),
        1e-3,
        1e-3,
    )
    # Each io element read or written once: u, delta, y and B, C in fp16; A, D, bias in fp32.
    io_bytes = 2 * (3 * batch * channels * length + 2 * batch * ROUTES * state * length)
    io_bytes += 4 * (channels * state + 2 * channels)
    rows = []
    ms = median_ms(lambda: native.selective_scan(*inputs), iters, torch.cuda.synchronize)
    rows.append(("native cuda", ms, io_bytes / (ms * 1e-3) / 1e9))
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        print("mamba-ssm is not importable: no mamba-ssm row")
    else:
        # Same layouts as our contract (B, C grouped per route), so the inputs pass as they are.
        def mamba_scan(u, delta, A, B, C, D, delta_bias):
            return selective_scan_fn(
                u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True
            )

        check(
            "mamba-ssm",
            mamba_scan(*(t.cuda() for t in small)),
            selective_scan_ref(*small),
            1e-3,
            1e-3,
        )
        ms = median_ms(lambda: mamba_scan(*inputs), iters, torch.cuda.synchronize)
        rows.append(("mamba-ssm selective_scan_fn", ms, io_bytes / (ms * 1e-3) / 1e9))
    return rows


def scan_with(library, u, delta, A, B, C, D, delta_bias):
    """The CPU forward through one loaded library's ABI (fp32, contiguous inputs, softplus)."""
    y = torch.empty_like(u)
    batch, channels, length = u.shape
    pointers = [t.data_ptr() for t in (u, delta, A, B, C, D, delta_bias, y)]
    status = library.vmddpm_selective_scan_cpu(
        *pointers, batch, channels, B.shape[1], B.shape[2], length, 0, 1
    )
    if status != 0:
        raise NativeOpsError(library.vmddpm_last_error().decode())
    return y


def compare_rows(cases, other_path, iters, rounds):
    """(case, isa, this ms, other ms) per case and instruction set both builds run here."""
    libraries = (native_library.library(), native_library._open(other_path))  # typed, ABI checked
    names = ("this build", str(other_path))
    isas = [
        isa
        for isa in ("avx512", "avx2", "baseline")
        if all(library.vmddpm_select_cpu_isa(isa.encode()) == 0 for library in libraries)
    ]
    rows = []
    for case in cases:
        inputs = scan_inputs(*case)
        expected = selective_scan_ref(*inputs)
        for isa in isas:
            for library, name in zip(libraries, names, strict=True):
                library.vmddpm_select_cpu_isa(isa.encode())
                check(f"{name} ({isa})", scan_with(library, *inputs), expected, 1e-5, 1e-5)
            times = ([], [])
            for index in range(rounds):
                for which in (0, 1) if index % 2 == 0 else (1, 0):
                    library = libraries[which]
                    times[which].append(median_ms(lambda: scan_with(library, *inputs), iters))
            rows.append((case, isa, *(statistics.median(t) for t in times)))
    libraries[0].vmddpm_select_cpu_isa(b"auto")
    return rows


def report_case(case, rows, native_ms, name_width):
    """Print one case's (implementation, ms) rows with their ratio to ``native_ms``; return them as JSON rows."""
    records = []
    for name, ms in rows:
        print(f"{case!s:<22}{name:<{name_width}}{ms:>10.2f}{ms / native_ms:>10.1f}")
        records.append({
            "case": dict(zip(["batch", "channels", "state", "length"], case, strict=True)),
            "implementation": name,
            "ms": ms,
            "ratio_to_native": ms / native_ms,
        })
    return records


def parse_cases(text):
    """``"1,512,16,4096;8,384,16,1024"`` -> [(1, 512, 16, 4096), (8, 384, 16, 1024)]."""
    cases = []
    for part in text.split(";"):
        values = tuple(int(value) for value in part.split(","))
        if len(values) != 4 or min(values) < 1 or values[1] % ROUTES:
            raise argparse.ArgumentTypeError(
                f"{part!r}: want batch,K*D,N,L, all positive, K*D a multiple of {ROUTES}"
            )
        cases.append(values)
    return cases


def machine_info():
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # The machine may be shared: a load above the core count inflates every row.
        "load_average_at_start": os.getloadavg(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "native": native_library.describe(),
    }


def compare(args, cases):
    """--compare-library: this build's CPU forward against another's, alternating."""
    results = {"machine": machine_info(), "other_library": str(args.compare_library), "compare": []}
    print(
        f"native CPU forward, fp32, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.2f} at start; median over {args.rounds} alternating rounds of the "
        f"median of {args.iters} runs, ms"
    )
    print(f"{'batch, K*D, N, L':<22}{'isa':<10}{'this build':>12}{'other':>12}{'other/this':>12}")
    for case, isa, this_ms, other_ms in compare_rows(
        cases, args.compare_library, args.iters, args.rounds
    ):
        print(f"{case!s:<22}{isa:<10}{this_ms:>12.2f}{other_ms:>12.2f}{other_ms / this_ms:>12.2f}")
        results["compare"].append({
            "case": dict(zip(["batch", "channels", "state", "length"], case, strict=True)),
            "isa": isa,
            "this_ms": this_ms,
            "other_ms": other_ms,
        })
    print(f"other: {args.compare_library}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nwrote {args.json}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--iters", type=int, default=20, help="timed runs of the fast rows")
    parser.add_argument(
        "--reference-iters", type=int, default=3, help="timed runs of the slow rows"
    )
    parser.add_argument(
        "--backward-reference-iters", type=int, default=1,
        help="timed runs of the reference autograd backward rows (each takes seconds to minutes)",
    )
    parser.add_argument("--no-backward", action="store_true", help="skip the forward + backward table")
    parser.add_argument(
        "--cases", type=parse_cases,
        help="batch,K*D,N,L;... for both CPU tables instead of the issue's shapes (K*D a multiple of 4)",
    )
    parser.add_argument(
        "--compare-library", type=Path, metavar="PATH",
        help="only time the native CPU forward of this build against the library at PATH",
    )
    parser.add_argument(
        "--rounds", type=int, default=7, help="alternating rounds of --compare-library"
    )
    args = parser.parse_args()
    cpu_cases = args.cases or CPU_CASES
    backward_cases = args.cases or BACKWARD_CASES

    native_library.library()  # fail now, with the reason, if the native kernels are not built
    if args.compare_library:
        compare(args, cpu_cases)
        return
    results = {
        "machine": machine_info(),
        "cpu_fp32": [],
        "cpu_fp32_backward": [],
        "cuda_fp16": [],
    }
    load = os.getloadavg()[0]
    print(
        f"CPU, fp32, {torch.get_num_threads()} threads, load average {load:.2f} at start; "
        "median ms; ratio = time / native cpu"
    )
    print(f"{'batch, K*D, N, L':<22}{'implementation':<32}{'ms':>10}{'x native':>10}")
    for case in cpu_cases:
        rows = cpu_rows(case, args.iters, args.reference_iters)
        native_ms = next(ms for name, ms in rows if name.startswith("native"))
        results["cpu_fp32"] += report_case(case, rows, native_ms, 32)

    if not args.no_backward:
        print("\nCPU, fp32, forward + backward of one scan (training); ratio = time / native fwd + bwd")
        print(f"{'batch, K*D, N, L':<22}{'implementation':<40}{'ms':>10}{'x native':>10}")
        for case in backward_cases:
            rows = backward_rows(case, args.iters, args.backward_reference_iters)
            results["cpu_fp32_backward"] += report_case(case, rows, dict(rows)["native fwd + native bwd"], 40)

    if torch.cuda.is_available() and native_library.cuda_available():
        print(f"\nCUDA ({torch.cuda.get_device_name()}), fp16 io, case {CUDA_CASE}")
        print(f"{'implementation':<32}{'ms':>10}{'GB/s':>10}")
        for name, ms, bandwidth in cuda_rows(args.iters):
            print(f"{name:<32}{ms:>10.3f}{bandwidth:>10.0f}")
            results["cuda_fp16"].append(
                {
                    "case": dict(
                        zip(["batch", "channels", "state", "length"], CUDA_CASE, strict=True)
                    ),
                    "implementation": name,
                    "ms": ms,
                    "gb_per_s": bandwidth,
                }
            )
    else:
        print("\nno CUDA device (or no CUDA build of the native library): no CUDA rows")

    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
