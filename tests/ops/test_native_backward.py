"""The native CPU backward of the selective scan against autograd through the reference.

Two independent derivations of the same gradients: the C++ kernel's hand-written reverse
recurrence (with its own exp/softplus polynomials and chunked recomputation of the states) and
torch autograd through the step-by-step ``selective_scan_ref``, run in float64 so that the
comparison measures the kernel's fp32 error alone. The library is found as ``native_library.py``
describes (``VMDDPM_OPS_LIB`` or the package build); these tests fail, not skip, without it.
"""

from __future__ import annotations

import pytest
import torch

from tests.ops.test_native import INVALID_ARGUMENT, scan_inputs
from vmddpm_deploy.checkpoint import build_model, init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import NativeOpsError
from vmddpm_deploy.ops import dispatch, native, native_library, torch_ops
from vmddpm_deploy.ops.reference import selective_scan_bwd_ref
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES
from vmddpm_deploy.ops.torch_ops import selective_scan

GRAD_NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias")

# fp32 kernel against the float64 oracle: tighter than the project's fp32 rtol 6e-4 / atol 2e-3.
FP32 = {"rtol": 6e-4, "atol": 2e-4}
# fp16 / bf16 io: both sides widen the same rounded inputs and round each gradient once.
ROUNDED = {
    torch.float16: {"rtol": 3e-3, "atol": 5e-3},
    torch.bfloat16: {"rtol": 3e-2, "atol": 5e-2},
}


def oracle_gradients(inputs, dy, delta_softplus):
    """Autograd through the reference in float64, cast to each input's dtype."""
    grads = selective_scan_bwd_ref(*(t.double() for t in inputs), dy.double(), delta_softplus)
    return [g.to(t.dtype) for g, t in zip(grads, inputs, strict=True)]


def output_gradient(batch, channels, length, seed=1):
    return torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(seed))


def assert_gradients_close(got, expected, tolerance):
    for name, g, e in zip(GRAD_NAMES, got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        torch.testing.assert_close(g, e, **tolerance, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("delta_softplus", [True, False])
@pytest.mark.parametrize("length", [1, 7, 64])
@pytest.mark.parametrize("state", [1, 4])
@pytest.mark.parametrize("channels", [4, 12])
@pytest.mark.parametrize("batch", [1, 3])
def test_backward_matches_reference_autograd(batch, channels, state, length, delta_softplus):
    inputs = scan_inputs(batch, channels, state, length, torch.float32, delta_softplus, seed=length)
    dy = output_gradient(batch, channels, length)
    got = native.selective_scan_bwd(*inputs, dy, delta_softplus)
    assert_gradients_close(got, oracle_gradients(inputs, dy, delta_softplus), FP32)


# The model's state size (N = 16 has its own compiled path), a route wider than one SIMD group
# of any instruction set (20 channels = 16 + 4 on AVX-512), and L = 70: two full chunks of the
# recomputation and a partial one.
@pytest.mark.parametrize("delta_softplus", [True, False])
def test_backward_matches_reference_at_model_state_size(delta_softplus):
    inputs = scan_inputs(2, NUM_ROUTES * 20, 16, 70, torch.float32, delta_softplus, seed=3)
    dy = output_gradient(2, NUM_ROUTES * 20, 70)
    got = native.selective_scan_bwd(*inputs, dy, delta_softplus)
    assert_gradients_close(got, oracle_gradients(inputs, dy, delta_softplus), FP32)


@pytest.mark.parametrize("dtype", list(ROUNDED))
def test_half_precision_io_is_widened_and_gradients_rounded_back(dtype):
    inputs = scan_inputs(2, 8, 4, 33, dtype, True, seed=5)
    dy = output_gradient(2, 8, 33).to(dtype)
    got = native.selective_scan_bwd(*inputs, dy, True)
    assert_gradients_close(got, oracle_gradients(inputs, dy, True), ROUNDED[dtype])


def test_gradients_do_not_depend_on_the_thread_count():
    inputs = scan_inputs(3, NUM_ROUTES * 5, 16, 40, torch.float32, True, seed=7)
    dy = output_gradient(3, NUM_ROUTES * 5, 40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the kernels share torch's OpenMP runtime
        one_thread = native.selective_scan_bwd(*inputs, dy)
        torch.set_num_threads(max(2, threads))
        several = native.selective_scan_bwd(*inputs, dy)
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(GRAD_NAMES, one_thread, several, strict=True):
        assert torch.equal(a, b), name


def test_degenerate_shapes_give_the_closed_form_gradients():
    # L = 0: nothing flows; only shapes come back, with zeros for the parameters.
    u, delta, A, B, C, D, bias = scan_inputs(2, 8, 4, 0, torch.float32, True)
    grads = native.selective_scan_bwd(u, delta, A, B, C, D, bias, torch.empty(2, 8, 0))
    assert [tuple(g.shape) for g in grads] == [tuple(t.shape) for t in (u, delta, A, B, C, D, bias)]
    assert not grads[2].any() and not grads[5].any() and not grads[6].any()
    # N = 0: y = D u, so du = D dy and dD = sum(dy u) over batch and steps; nothing else moves.
    u, delta, A, B, C, D, bias = scan_inputs(2, 8, 0, 5, torch.float32, True)
    dy = output_gradient(2, 8, 5)
    du, ddelta, dA, dB, dC, dD, dbias = native.selective_scan_bwd(u, delta, A, B, C, D, bias, dy)
    torch.testing.assert_close(du, D[None, :, None] * dy)
    torch.testing.assert_close(dD, (dy * u).sum(dim=(0, 2)))
    assert not ddelta.any() and not dbias.any() and dA.numel() == dB.numel() == dC.numel() == 0


def test_binding_rejects_mismatched_shapes():
    inputs = scan_inputs(2, 8, 4, 5, torch.float32, True)
    with pytest.raises(NativeOpsError, match=r"dy has shape \(2, 8, 4\), expected \(2, 8, 5\)"):
        native.selective_scan_bwd(*inputs, torch.zeros(2, 8, 4))
    u, delta, A, B, C, D, bias = inputs
    with pytest.raises(NativeOpsError, match="A has shape"):
        native.selective_scan_bwd(u, delta, A[:, :3], B, C, D, bias, torch.zeros(2, 8, 5))


def test_custom_op_backward_runs_the_native_kernel_when_native_is_active(monkeypatch):
    inputs = [t.requires_grad_() for t in scan_inputs(2, 8, 4, 9, torch.float32, True, seed=2)]
    dy = output_gradient(2, 8, 9)
    expected = oracle_gradients([t.detach() for t in inputs], dy, True)
    calls = []
    kernel = native.selective_scan_bwd
    monkeypatch.setattr(dispatch.NATIVE, "selective_scan_bwd", lambda *a: calls.append(1) or kernel(*a))
    for kernels, native_calls in ((dispatch.NATIVE, 1), (dispatch.REFERENCE, 1)):
        with dispatch.using(kernels):
            grads = torch.autograd.grad(selective_scan(*inputs, True), inputs, dy)
        assert len(calls) == native_calls  # the reference row differentiates the reference
        assert_gradients_close(grads, expected, FP32)


def test_custom_ops_pass_opcheck_with_the_native_backward():
    """Schema, fake kernels and compiled (AOT) training graphs of the forward and backward ops."""
    inputs = scan_inputs(2, 8, 4, 9, torch.float32, True, seed=4)
    dy = output_gradient(2, 8, 9)
    with dispatch.using(dispatch.NATIVE):
        torch.library.opcheck(selective_scan, (*[t.clone().requires_grad_() for t in inputs], True))
        torch.library.opcheck(torch_ops.selective_scan_bwd, (*inputs, dy, True))


def test_model_gradients_native_equal_reference(micro_config):
    checkpoint = init_checkpoint(micro_config, NoiseSchedule(), seed=0)
    x = torch.randn(2, micro_config.in_channels, micro_config.image_size, micro_config.image_size,
                    generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    grads = {}
    for kernels in (dispatch.NATIVE, dispatch.REFERENCE):
        model = build_model(checkpoint).train()
        with dispatch.using(kernels):
            model(x, t).square().mean().backward()
        grads[kernels.name] = {name: p.grad for name, p in model.named_parameters()}
    assert grads["reference"].keys() == grads["native"].keys()
    for name, reference in grads["reference"].items():
        assert reference is not None and reference.abs().sum() > 0, name
        torch.testing.assert_close(grads["native"][name], reference, rtol=6e-4, atol=2e-5, msg=name)


# --- the C ABI, called directly -----------------------------------------------------------


class BackwardCall:
    """A valid vmddpm_selective_scan_bwd_cpu call whose arguments a test can break one at a time."""

    POINTER_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias", "dy", *GRAD_NAMES)

    def __init__(self):
        self.tensors = scan_inputs(2, 8, 4, 5, torch.float32, True)
        self.dy = torch.ones_like(self.tensors[0])
        self.grads = [torch.full_like(t, float("nan")) for t in self.tensors]
        self.pointers = [t.data_ptr() for t in (*self.tensors, self.dy, *self.grads)]
        self.sizes = [2, 8, NUM_ROUTES, 4, 5]  # batch, channels, routes, state, length

    def __call__(self):
        return native_library.library().vmddpm_selective_scan_bwd_cpu(*self.pointers, *self.sizes, 1)


def last_error() -> str:
    return native_library.library().vmddpm_last_error().decode()


def test_valid_abi_call_overwrites_every_gradient():
    call = BackwardCall()
    assert call() == 0 and last_error() == ""
    expected = oracle_gradients(call.tensors, call.dy, True)
    assert_gradients_close(call.grads, expected, FP32)  # the NaN fill is gone everywhere


@pytest.mark.parametrize("index", range(15), ids=BackwardCall.POINTER_NAMES)
def test_abi_rejects_null_pointers(index):
    call = BackwardCall()
    call.pointers[index] = None
    assert call() == INVALID_ARGUMENT
    assert f"selective_scan_bwd_cpu: {BackwardCall.POINTER_NAMES[index]} is a null pointer" in last_error()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda call: call.sizes.__setitem__(0, 0), "batch must be positive"),
        (lambda call: call.sizes.__setitem__(4, -1), "length must be positive"),
        (lambda call: call.sizes.__setitem__(1, 6), "not a multiple of routes"),
        (lambda call: call.sizes.__setitem__(3, 257), "VMDDPM_MAX_STATE"),
        (lambda call: call.sizes.__setitem__(0, 2**40) or call.sizes.__setitem__(4, 2**30), "overflows int64"),
        (lambda call: call.pointers.__setitem__(11, call.pointers[11] + 2), "dB is not aligned"),
    ],
    ids=["zero-batch", "negative-length", "routes", "state", "overflow", "misaligned"],
)
def test_abi_rejects_bad_sizes_and_leaves_the_outputs_alone(change, message):
    call = BackwardCall()
    change(call)
    assert call() == INVALID_ARGUMENT
    assert message in last_error()
    assert all(g.isnan().all() for g in call.grads)  # validation happens before any write
