"""The torch custom ops: registration, fake kernels, autograd."""

from __future__ import annotations

import pytest
import torch

from vmddpm_deploy.ops import cross_merge, cross_scan, selective_scan, selective_scan_ref
from tests.ops.test_reference import random_scan_inputs


def test_selective_scan_opcheck():
    inputs = random_scan_inputs(2, 4, 3, 4, 6)
    args = [t.requires_grad_(t.is_floating_point()) for t in inputs]
    torch.library.opcheck(torch.ops.vmddpm.selective_scan.default, (*args, True))


@pytest.mark.parametrize("order", ["cross", "regen"])
def test_cross_ops_opcheck(order):
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.vmddpm.cross_scan.default, (x, order))
    ys = torch.randn(2, 4, 3, 20, requires_grad=True)
    torch.library.opcheck(torch.ops.vmddpm.cross_merge.default, (ys, 5, 4, order))


def test_selective_scan_gradients_match_autograd_through_reference():
    inputs = random_scan_inputs(1, 4, 2, 3, 5)
    leaves_op = [t.clone().requires_grad_() for t in inputs]
    leaves_ref = [t.clone().requires_grad_() for t in inputs]
    weight = torch.randn(1, 8, 5)
    (selective_scan(*leaves_op) * weight).sum().backward()
    (selective_scan_ref(*leaves_ref) * weight).sum().backward()
    for got, want in zip(leaves_op, leaves_ref):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize("order", ["cross", "regen"])
def test_cross_op_gradients_are_each_others_adjoint(order):
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: cross_scan(t, order), (x,))
    ys = torch.randn(1, 4, 2, 15, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: cross_merge(t, 3, 5, order), (ys,))
