"""The native CPU backward of the selective scan against autograd through the reference.

Two independent derivations of the same gradients: the C++ kernel's hand-written reverse
recurrence and torch autograd through the step-by-step ``selective_scan_ref`` (run in float64,
so the comparison measures the kernel's fp32 error alone).
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from vmddpm_deploy.checkpoint import build_model, init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.ops import dispatch, native
from vmddpm_deploy.ops.reference import selective_scan_bwd_ref
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES

from tests.ops.test_native import scan_inputs

NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias")
INVALID_ARGUMENT = 1


@pytest.mark.parametrize("delta_softplus", [True, False])
@pytest.mark.parametrize("length", [1, 7, 64])
@pytest.mark.parametrize("state", [1, 4])
@pytest.mark.parametrize("channels", [4, 12])
@pytest.mark.parametrize("batch", [1, 3])
def test_backward_matches_reference_autograd(batch, channels, state, length, delta_softplus):
    inputs = scan_inputs(batch, channels, state, length, torch.float32, delta_softplus, seed=length)
    dy = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(1))
    got = native.selective_scan_bwd(*inputs, dy, delta_softplus)
    expected = selective_scan_bwd_ref(*(t.double() for t in inputs), dy.double(), delta_softplus)
    for name, g, e in zip(NAMES, got, expected):
        assert g.dtype == torch.float32 and g.shape == e.shape, name
        torch.testing.assert_close(g, e.float(), rtol=6e-4, atol=2e-4, msg=name)


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
    for name, reference in grads["reference"].items():
        torch.testing.assert_close(grads["native"][name], reference, rtol=6e-4, atol=2e-5, msg=name)


def test_abi_rejects_null_gradient_buffers():
    batch, channels, state, length = 1, NUM_ROUTES, 2, 5
    u, delta, A, B, C, D, bias = scan_inputs(batch, channels, state, length, torch.float32, True)
    dy = torch.ones_like(u)
    outputs = [torch.empty_like(t) for t in (u, delta, A, B, C, D, bias)]
    pointers = [t.data_ptr() for t in (u, delta, A, B, C, D, bias, dy, *outputs)]
    lib = native.library()
    for missing in range(7, 15):  # dy and each gradient buffer in turn
        args = list(pointers)
        args[missing] = None
        status = lib.vmddpm_selective_scan_bwd_cpu(*args, batch, channels, NUM_ROUTES, state, length, 1)
        assert status == INVALID_ARGUMENT
        assert b"null pointer" in ctypes.c_char_p(lib.vmddpm_last_error()).value
    status = lib.vmddpm_selective_scan_bwd_cpu(*pointers, batch, channels, NUM_ROUTES + 1, state, length, 1)
    assert status == INVALID_ARGUMENT
