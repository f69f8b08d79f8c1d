"""The native CPU kernels (libvmddpm_ops) against the pure-PyTorch reference.

Two independent implementations of the op contract (docs/design.md section 2) must agree: the C++
kernels (their own exp/log polynomials, their own fp16/bf16 conversions) and the reference's
step-by-step torch loop. Both read the same rounded io tensors and compute in fp32, so fp16 and
bf16 outputs may differ by one unit in the last place at most; fp32 ones by the reordered fp32
sums. The library must be built (``pip install -e .``): these tests fail, not skip, without it.
"""

from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import vmddpm_deploy.ops as ops
from vmddpm_deploy.errors import ConfigError, NativeOpsError
from vmddpm_deploy.ops import dispatch, native, native_library
from vmddpm_deploy.ops.reference import cross_merge_ref, cross_scan_ref, selective_scan_ref
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES, SCAN_ORDERS, scan_table

REPO_ROOT = Path(__file__).resolve().parents[2]

# fp32: far inside mamba-ssm's rtol 6e-4 / atol 2e-3. fp16 / bf16: one unit in the last place
# (2^-10 and 2^-7 relative), as both sides round the same fp32 value once.
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-4),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-3),
}
IO_DTYPES = list(TOLERANCES)

# ABI status codes (plugins/ops/include/vmddpm/ops.h).
INVALID_ARGUMENT = 1
UNSUPPORTED = 2


@pytest.fixture(autouse=True)
def _fresh_native_state(monkeypatch):
    """Each test sees the library as the environment describes it, with the default CPU ISA."""
    for variable in ("VMDDPM_OPS", "VMDDPM_OPS_LIB", "VMDDPM_CPU_ISA"):
        monkeypatch.delenv(variable, raising=False)
    native_library.reset()
    yield
    native_library.reset()


def scan_inputs(batch, channels, state, length, dtype, delta_softplus, seed=0):
    """Inputs shaped like SS2D's: A from A_log = log(1..N) (+ noise), dt bias from U[1e-3, 0.1]."""
    g = torch.Generator().manual_seed(seed)
    routes = NUM_ROUTES
    u = torch.randn(batch, channels, length, generator=g)
    if delta_softplus:
        delta = torch.randn(batch, channels, length, generator=g)
        dt_init = torch.empty(channels).uniform_(1e-3, 0.1, generator=g)
        delta_bias = torch.log(torch.expm1(dt_init))  # inverse softplus, as SS2D initialises it
    else:
        # Without softplus dt = delta + bias is used as is: keep it positive so h stays bounded.
        delta = 0.5 * torch.rand(batch, channels, length, generator=g)
        delta_bias = 0.1 * torch.rand(channels, generator=g)
    A_log = torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(channels, 1)
    A = -torch.exp(A_log + 0.1 * torch.randn(channels, state, generator=g))
    B = torch.randn(batch, routes, state, length, generator=g)
    C = torch.randn(batch, routes, state, length, generator=g)
    D = torch.randn(channels, generator=g)
    return u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, delta_bias


def assert_matches_reference(actual, expected):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype])


@pytest.mark.parametrize("dtype", IO_DTYPES, ids=str)
@pytest.mark.parametrize("delta_softplus", [True, False], ids=["softplus", "raw_dt"])
@pytest.mark.parametrize("length", [1, 7, 64, 1000])
@pytest.mark.parametrize("state", [1, 16])
@pytest.mark.parametrize("channels", [4, 96])
@pytest.mark.parametrize("batch", [1, 3])
def test_selective_scan_matches_reference(batch, channels, state, length, delta_softplus, dtype):
    inputs = scan_inputs(batch, channels, state, length, dtype, delta_softplus)
    actual = native.selective_scan(*inputs, delta_softplus=delta_softplus)
    expected = selective_scan_ref(*inputs, delta_softplus=delta_softplus)
    assert_matches_reference(actual, expected)


def cpu_isas_this_machine_runs():
    built = native_library.describe()["cpu_isas_built"]
    runnable = []
    for isa in built:
        if native_library.library().vmddpm_select_cpu_isa(isa.encode()) == 0:
            runnable.append(isa)
    native_library.library().vmddpm_select_cpu_isa(b"auto")
    return runnable


@pytest.mark.parametrize("state", [16, 5], ids=["N16_registers", "N5_generic"])
def test_every_cpu_instruction_set_matches_reference(state):
    # 96 channels = 24 per route: vector groups of 4, 8 and 16 lanes all end part-filled;
    # L = 130 ends in a partial chunk.
    inputs = scan_inputs(3, 96, state, 130, torch.float32, delta_softplus=True, seed=1)
    expected = selective_scan_ref(*inputs)
    isas = cpu_isas_this_machine_runs()
    assert "baseline" in isas
    try:
        for isa in isas:
            native_library.select_cpu_isa(isa)
            assert native_library.library().vmddpm_cpu_isa().decode() == isa
            assert_matches_reference(native.selective_scan(*inputs), expected)
    finally:
        native_library.select_cpu_isa("auto")


@pytest.mark.parametrize("dtype", IO_DTYPES, ids=str)
def test_selective_scan_extreme_dt_matches_reference(dtype):
    # delta + bias spans the softplus threshold (20) and both tails: dt*A reaches about -6e3,
    # where exp underflows to 0, and dt reaches about 1e-17, where softplus is exp itself.
    batch, channels, state, length = 1, 8, 16, 200
    u, _, A, B, C, D, _ = scan_inputs(batch, channels, state, length, dtype, True, seed=2)
    delta = torch.linspace(-40, 400, length).repeat(batch, channels, 1).to(dtype)
    delta_bias = torch.linspace(-1, 1, channels)
    actual = native.selective_scan(u, delta, A, B, C, D, delta_bias)
    expected = selective_scan_ref(u, delta, A, B, C, D, delta_bias)
    # With dt in the hundreds y sums terms of a few hundred that can cancel, so rounding error
    # scales with the largest output rather than with each output.
    tolerance = TOLERANCES[dtype]
    scale = expected.float().abs().max().item()
    torch.testing.assert_close(
        actual, expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * max(1.0, scale)
    )


# The CPU kernels' exp2 (plugins/ops/cpu/vector_math.h), measured against exp2 over every fp32
# input of its polynomial: relative error at most 1.53e-7 with FMA (the avx2 and avx512 builds),
# 1.74e-7 without (baseline).
EXP2_RELATIVE_ERROR_BOUND = 2e-7


def test_selective_scan_decay_is_exp2_within_its_error_bound():
    # N = 1, L = 2, raw dt: step 0 sets h = dt*u*B = 1, step 1 has u = 0, so with C = 1 and D = 0
    # its output is the decay factor 2^(dt*A*log2(e)) alone. A = -ln 2 makes A*log2(e) exactly
    # -1 in fp32, so every build's exponent is -dt with no rounding. Every 32nd channel gets
    # dt = 1000, which sends its vector group through the clamped exp2 (the others skip the
    # clamps); both must meet the bound, and 2^-1000 must give 0.
    A_log2 = torch.tensor(-math.log(2)) * torch.tensor(1.44269504088896341)
    assert A_log2.item() == -1.0
    batch, channels = 4, 4 * 4096
    g = torch.Generator().manual_seed(5)
    exponent = torch.cat([
        torch.linspace(0, 126, batch * channels // 2),
        126 * torch.rand(batch * channels // 2, generator=g),
    ]).reshape(batch, channels)
    exponent[:, ::32] = 1000.0
    u = torch.zeros(batch, channels, 2)
    u[:, :, 0] = 1.0
    delta = torch.stack([torch.ones(batch, channels), exponent], dim=2)
    A = torch.full((channels, 1), -math.log(2))
    B = torch.ones(batch, NUM_ROUTES, 1, 2)
    C = torch.ones(batch, NUM_ROUTES, 1, 2)
    zeros = torch.zeros(channels)
    expected = torch.exp2(-exponent.double())
    clamped = exponent == 1000.0
    try:
        for isa in cpu_isas_this_machine_runs():
            native_library.select_cpu_isa(isa)
            decay = native.selective_scan(u, delta, A, B, C, zeros, zeros, delta_softplus=False)
            decay = decay[:, :, 1].double()
            assert torch.all(decay[clamped] == 0), isa
            error = ((decay - expected).abs() / expected)[~clamped].max().item()
            assert error <= EXP2_RELATIVE_ERROR_BOUND, (isa, error)
    finally:
        native_library.select_cpu_isa("auto")


def test_selective_scan_carries_the_state_across_clamped_and_unclamped_chunks():
    # A chunk (64 steps) of a vector group skips exp2's clamps only where max|dt| * max|A*log2 e|
    # is at most 126 (here dt stays below about 3 and |A*log2 e| below 31); a few steps with dt
    # of 13 and more send single chunks of some groups through the clamped path. u = 0 there,
    # so h decays without a large input and y stays of order one.
    u, delta, A, B, C, D, delta_bias = scan_inputs(2, 96, 16, 300, torch.float32, True, seed=4)
    delta[:, ::5, 70] = 20.0
    u[:, ::5, 70] = 0.0
    delta[0, 3, 200:210] = 300.0
    u[0, 3, 200:210] = 0.0
    expected = selective_scan_ref(u, delta, A, B, C, D, delta_bias)
    try:
        for isa in cpu_isas_this_machine_runs():
            native_library.select_cpu_isa(isa)
            actual = native.selective_scan(u, delta, A, B, C, D, delta_bias)
            assert_matches_reference(actual, expected)
    finally:
        native_library.select_cpu_isa("auto")


def test_selective_scan_accepts_non_contiguous_inputs():
    u, delta, A, B, C, D, delta_bias = scan_inputs(2, 8, 16, 33, torch.float32, True, seed=3)
    # The same values laid out differently: transposed storage and a strided A.
    u_t = u.transpose(1, 2).contiguous().transpose(1, 2)
    B_t = B.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    A_wide = torch.zeros(8, 32)
    A_wide[:, ::2] = A
    A_strided = A_wide[:, ::2]
    assert not (u_t.is_contiguous() or B_t.is_contiguous() or A_strided.is_contiguous())
    actual = native.selective_scan(u_t, delta, A_strided, B_t, C, D, delta_bias)
    assert_matches_reference(actual, selective_scan_ref(u, delta, A, B, C, D, delta_bias))


def test_selective_scan_rejects_mixed_io_dtypes_and_bad_shapes():
    u, delta, A, B, C, D, delta_bias = scan_inputs(1, 8, 4, 5, torch.float32, True)
    with pytest.raises(NativeOpsError, match="share one dtype"):
        native.selective_scan(u, delta.half(), A, B, C, D, delta_bias)
    with pytest.raises(NativeOpsError, match="A has shape"):
        native.selective_scan(u, delta, A[:, :3], B, C, D, delta_bias)
    with pytest.raises(NativeOpsError, match="float64"):
        native.selective_scan(
            *(t.double() for t in (u, delta)), A, B.double(), C.double(), D, delta_bias
        )


GRIDS = [(1, 1), (3, 5), (5, 9), (7, 1), (1, 7)]


@pytest.mark.parametrize("dtype", IO_DTYPES, ids=str)
@pytest.mark.parametrize("order", SCAN_ORDERS)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("batch,dim", [(1, 1), (3, 24)])
def test_cross_scan_and_merge_match_reference(batch, dim, grid, order, dtype):
    height, width = grid
    g = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(batch, dim, height, width, generator=g).to(dtype)
    # A gather copies values: the native result must be exactly the reference's.
    assert torch.equal(native.cross_scan(x, order), cross_scan_ref(x, order))
    ys = torch.randn(batch, NUM_ROUTES, dim, height * width, generator=g).to(dtype)
    assert_matches_reference(
        native.cross_merge(ys, height, width, order), cross_merge_ref(ys, height, width, order)
    )


def test_cross_ops_accept_non_contiguous_inputs():
    x = torch.randn(2, 5, 7, 3).permute(0, 3, 1, 2)  # (2, 3, 5, 7) in channels-last storage
    assert not x.is_contiguous()
    assert torch.equal(native.cross_scan(x, "regen"), cross_scan_ref(x, "regen"))
    ys = torch.randn(2, 3, NUM_ROUTES, 35).transpose(1, 2)
    assert not ys.is_contiguous()
    torch.testing.assert_close(
        native.cross_merge(ys, 5, 7, "cross"), cross_merge_ref(ys, 5, 7, "cross")
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cross_merge_converts_every_16_bit_pattern_like_torch(dtype):
    # Route 0 of 'cross' is the identity, so with the other routes zero each output is one
    # input widened to fp32 and rounded back: all 65536 bit patterns through our conversions.
    patterns = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    ys = torch.zeros(1, NUM_ROUTES, 1, patterns.numel(), dtype=dtype)
    ys[0, 0, 0] = patterns
    actual = native.cross_merge(ys, 256, 256, "cross").flatten()
    expected = cross_merge_ref(ys, 256, 256, "cross").flatten()
    nan = torch.isnan(expected.float())
    assert torch.isnan(actual.float()[nan]).all()
    assert torch.equal(actual.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])


def test_empty_inputs_give_empty_outputs():
    u, delta, A, B, C, D, delta_bias = scan_inputs(2, 8, 4, 1, torch.float32, True)
    u, delta, B, C = (t[..., :0] for t in (u, delta, B, C))  # length 0 along L
    y = native.selective_scan(u, delta, A, B, C, D, delta_bias)
    assert y.shape == (2, 8, 0)
    assert native.cross_scan(torch.randn(0, 3, 5, 5), "cross").shape == (0, NUM_ROUTES, 3, 25)


# --- dispatch ---------------------------------------------------------------------------


def test_auto_dispatch_runs_native_on_cpu_tensors():
    assert dispatch.kernels_for(torch.zeros(1)) is dispatch.NATIVE
    assert dispatch.kernels_for(torch.zeros(1, dtype=torch.float64)) is dispatch.REFERENCE


def test_vmddpm_ops_forces_an_implementation(monkeypatch):
    monkeypatch.setenv("VMDDPM_OPS", "reference")
    assert dispatch.kernels_for(torch.zeros(1)) is dispatch.REFERENCE
    monkeypatch.setenv("VMDDPM_OPS", "native")
    assert dispatch.kernels_for(torch.zeros(1)) is dispatch.NATIVE
    with pytest.raises(NativeOpsError, match="float64"):
        dispatch.kernels_for(torch.zeros(1, dtype=torch.float64))
    monkeypatch.setenv("VMDDPM_OPS", "fastest")
    with pytest.raises(ConfigError, match="VMDDPM_OPS"):
        dispatch.kernels_for(torch.zeros(1))


def test_missing_library_falls_back_unless_native_is_forced(monkeypatch, tmp_path):
    monkeypatch.setenv("VMDDPM_OPS_LIB", str(tmp_path / "libvmddpm_ops.so"))
    native_library.reset()
    assert not native_library.available()
    assert native_library.describe()["loaded"] is False
    assert dispatch.kernels_for(torch.zeros(1)) is dispatch.REFERENCE
    monkeypatch.setenv("VMDDPM_OPS", "native")
    with pytest.raises(NativeOpsError, match="not built"):
        dispatch.kernels_for(torch.zeros(1))


def test_broken_library_is_reported(monkeypatch, tmp_path):
    broken = tmp_path / "libvmddpm_ops.so"
    broken.write_bytes(b"not an ELF file")
    monkeypatch.setenv("VMDDPM_OPS_LIB", str(broken))
    native_library.reset()
    with pytest.raises(NativeOpsError, match="could not be loaded"):
        native_library.library()


def test_unknown_cpu_isa_in_environment_is_reported(monkeypatch):
    monkeypatch.setenv("VMDDPM_CPU_ISA", "sse9")
    native_library.reset()
    with pytest.raises(NativeOpsError, match="VMDDPM_CPU_ISA=sse9"):
        native_library.library()


def test_torch_custom_ops_run_native_kernels(monkeypatch):
    monkeypatch.setenv("VMDDPM_OPS", "native")
    inputs = scan_inputs(2, 8, 16, 20, torch.float32, True, seed=4)
    assert_matches_reference(ops.selective_scan(*inputs), selective_scan_ref(*inputs))
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(ops.cross_scan(x, "regen"), cross_scan_ref(x, "regen"))
    ys = torch.randn(2, NUM_ROUTES, 3, 35)
    torch.testing.assert_close(
        ops.cross_merge(ys, 5, 7, "regen"), cross_merge_ref(ys, 5, 7, "regen")
    )


def test_describe_reports_the_loaded_build():
    report = native_library.describe()
    assert report["loaded"] is True
    assert report["abi_version"] == native_library.ABI_VERSION
    assert Path(report["library"]).is_file()
    assert report["cpu_isa"] in report["cpu_isas_built"]
    assert "cpu" in report["devices"]


# --- the C ABI, called directly -----------------------------------------------------------


class ScanCall:
    """A valid vmddpm_selective_scan_cpu call whose arguments a test can break one at a time."""

    def __init__(self):
        self.tensors = scan_inputs(2, 8, 4, 5, torch.float32, True)
        self.y = torch.empty_like(self.tensors[0])
        self.pointers = [t.data_ptr() for t in (*self.tensors, self.y)]
        self.sizes = [2, 8, NUM_ROUTES, 4, 5]  # batch, channels, routes, state, length
        self.dtype = 0
        self.softplus = 1

    def __call__(self):
        return native_library.library().vmddpm_selective_scan_cpu(
            *self.pointers, *self.sizes, self.dtype, self.softplus
        )


def last_error() -> str:
    return native_library.library().vmddpm_last_error().decode()


def test_valid_abi_call_succeeds_and_clears_the_error():
    call = ScanCall()
    call.dtype = 99
    assert call() == INVALID_ARGUMENT
    call.dtype = 0
    assert call() == 0
    assert last_error() == ""
    assert_matches_reference(call.y, selective_scan_ref(*call.tensors))


POINTER_NAMES = ["u", "delta", "A", "B", "C", "D", "delta_bias", "y"]


@pytest.mark.parametrize("index", range(8), ids=POINTER_NAMES)
def test_abi_rejects_null_pointers(index):
    call = ScanCall()
    call.pointers[index] = None
    assert call() == INVALID_ARGUMENT
    assert f"{POINTER_NAMES[index]} is a null pointer" in last_error()


SIZE_NAMES = ["batch", "channels", "routes", "state", "length"]


@pytest.mark.parametrize("value", [0, -3])
@pytest.mark.parametrize("index", range(5), ids=SIZE_NAMES)
def test_abi_rejects_non_positive_sizes(index, value):
    call = ScanCall()
    call.sizes[index] = value
    assert call() == INVALID_ARGUMENT
    assert f"{SIZE_NAMES[index]} must be positive" in last_error()


def test_abi_rejects_inconsistent_scan_arguments():
    call = ScanCall()
    call.sizes[1] = 6  # 6 channels over 4 routes
    assert call() == INVALID_ARGUMENT
    assert "not a multiple of routes" in last_error()

    call = ScanCall()
    call.dtype = 3
    assert call() == INVALID_ARGUMENT
    assert "unknown dtype 3" in last_error()

    call = ScanCall()
    call.sizes[3] = 257
    assert call() == INVALID_ARGUMENT
    assert "VMDDPM_MAX_STATE" in last_error()

    call = ScanCall()
    call.pointers[0] += 2  # fp32 u no longer on a 4-byte boundary
    assert call() == INVALID_ARGUMENT
    assert "u is not aligned" in last_error()

    call = ScanCall()
    call.sizes = [2**40, 2**20, 4, 4, 2**20]
    assert call() == INVALID_ARGUMENT
    assert "overflows int64" in last_error()


@pytest.mark.parametrize("function", ["vmddpm_cross_scan_cpu", "vmddpm_cross_merge_cpu"])
def test_abi_rejects_bad_cross_arguments(function):
    lib = native_library.library()
    entry = getattr(lib, function)
    table = scan_table("cross", 3, 5)
    data = torch.zeros(2 * NUM_ROUTES * 4 * 15)
    out = torch.zeros_like(data)

    def call(**changes):
        a = {"source": data.data_ptr(), "table_ptr": table.data_ptr(), "height": 3, "dtype": 0}
        a.update(changes)
        sizes = (2, 4, a["height"], 5, NUM_ROUTES)  # batch, dim, height, width, routes
        return entry(a["source"], a["table_ptr"], out.data_ptr(), *sizes, a["dtype"])

    assert call() == 0
    assert call(source=None) == INVALID_ARGUMENT and "is a null pointer" in last_error()
    assert call(table_ptr=None) == INVALID_ARGUMENT and "table is a null pointer" in last_error()
    assert call(height=0) == INVALID_ARGUMENT and "height must be positive" in last_error()
    assert call(dtype=-1) == INVALID_ARGUMENT and "unknown dtype -1" in last_error()
    off_grid = table.clone()
    off_grid[2, 7] = 15
    assert call(table_ptr=off_grid.data_ptr()) == INVALID_ARGUMENT
    assert "table[2][7] = 15 is outside the grid" in last_error()


def test_abi_rejects_unknown_or_unavailable_cpu_isa():
    lib = native_library.library()
    assert lib.vmddpm_select_cpu_isa(b"sse9") == UNSUPPORTED
    assert "not compiled into this library" in last_error()
    assert lib.vmddpm_select_cpu_isa(None) == INVALID_ARGUMENT


def test_abi_header_is_plain_c():
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler on PATH to check plugins/ops/include/vmddpm/ops.h with")
    header = REPO_ROOT / "plugins" / "ops" / "include" / "vmddpm" / "ops.h"
    result = subprocess.run(
        [
            compiler,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-x",
            "c",
            str(header),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_ctypes_signatures_cover_every_exported_function():
    # Every ABI function the header declares must have argument types in the binding, so no
    # call goes through ctypes' unchecked default conversions.
    header = (REPO_ROOT / "plugins" / "ops" / "include" / "vmddpm" / "ops.h").read_text()
    declared = set(re.findall(r"^VMDDPM_API [^;(]*?\b(vmddpm_\w+)\(", header, re.MULTILINE))
    assert declared == set(native_library._SIGNATURES)
    assert all(isinstance(getattr(native_library.library(), name), ctypes._CFuncPtr) for name in declared)
