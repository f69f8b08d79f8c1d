"""The reference ops against independent formulations of the same maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vmddpm_deploy.errors import ConfigError
from vmddpm_deploy.ops import SCAN_ORDERS, cross_merge_ref, cross_scan_ref, scan_table, selective_scan_ref


def random_scan_inputs(batch, routes, dim, n, length, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    channels = routes * dim
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g) * 0.5
    A = -torch.rand(channels, n, generator=g) * 2 - 0.1
    B = torch.randn(batch, routes, n, length, generator=g)
    C = torch.randn(batch, routes, n, length, generator=g)
    D = torch.randn(channels, generator=g)
    delta_bias = torch.randn(channels, generator=g) * 0.3
    return u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, delta_bias


def selective_scan_closed_form(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    """Unrolled solution of the recurrence, in float64, with no loop over steps:

    y_l = sum_{s <= l} sum_n C_l[n] exp(A[n] (S_l - S_s)) dt_s B_s[n] u_s + D u_l,
    where S_l = dt_1 + ... + dt_l (the decay from step s to l is exp of A times sum of dt in (s, l]).
    """
    u, delta, A, B, C, D, delta_bias = (t.double() for t in (u, delta, A, B, C, D, delta_bias))
    batch, channels, length = u.shape
    routes = B.shape[1]
    dt = delta + delta_bias[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    S = dt.cumsum(-1)  # (b, c, L)
    Bc = B.repeat_interleave(channels // routes, 1)  # (b, c, n, L)
    Cc = C.repeat_interleave(channels // routes, 1)
    diff = S[..., :, None] - S[..., None, :]  # (b, c, l, s) = S_l - S_s
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    decay = torch.exp(A[None, :, None, None, :] * diff[..., None])  # (b, c, l, s, n)
    decay = decay * causal[None, None, :, :, None]
    contrib = decay * (dt * u)[:, :, None, :, None] * Bc.permute(0, 1, 3, 2)[:, :, None, :, :]
    y = (contrib * Cc.permute(0, 1, 3, 2)[:, :, :, None, :]).sum((-1, -2))
    return y + D[None, :, None] * u


@pytest.mark.parametrize("delta_softplus", [True, False])
@pytest.mark.parametrize("batch,routes,dim,n,length", [(1, 4, 1, 1, 1), (2, 4, 3, 4, 9), (3, 2, 5, 16, 17)])
def test_selective_scan_ref_matches_closed_form(batch, routes, dim, n, length, delta_softplus):
    inputs = random_scan_inputs(batch, routes, dim, n, length)
    got = selective_scan_ref(*inputs, delta_softplus=delta_softplus)
    want = selective_scan_closed_form(*inputs, delta_softplus=delta_softplus)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float16, 3e-3, 5e-3), (torch.bfloat16, 3e-2, 5e-2)])
def test_selective_scan_ref_low_precision_io(dtype, rtol, atol):
    inputs = random_scan_inputs(2, 4, 3, 8, 12, dtype=dtype)
    got = selective_scan_ref(*inputs)
    assert got.dtype == dtype
    # The oracle sees the same rounded inputs, so only the output rounding differs.
    want = selective_scan_closed_form(*inputs).to(dtype)
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol)


def route_coordinates(table: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([table // width, table % width], dim=-1)


@pytest.mark.parametrize("order", SCAN_ORDERS)
@pytest.mark.parametrize("height,width", [(1, 1), (1, 5), (4, 4), (5, 7), (8, 3)])
def test_scan_tables_are_permutations(order, height, width):
    table = scan_table(order, height, width)
    assert table.shape == (4, height * width) and table.dtype == torch.int64
    for route in table:
        assert torch.equal(route.sort().values, torch.arange(height * width))


@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (2, 9)])
def test_cross_order_is_vmamba_four_directions(height, width):
    x = torch.arange(height * width).view(1, 1, height, width).float()
    routes = cross_scan_ref(x, "cross")[0, :, 0]
    row_major = x.flatten()
    col_major = x[0, 0].t().flatten()
    assert torch.equal(routes[0], row_major)
    assert torch.equal(routes[1], col_major)
    assert torch.equal(routes[2], row_major.flip(0))
    assert torch.equal(routes[3], col_major.flip(0))


@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (2, 9), (1, 6)])
def test_regen_routes_only_step_to_neighbours(height, width):
    table = scan_table("regen", height, width)
    coords = route_coordinates(table, width)
    steps = (coords[:, 1:] - coords[:, :-1]).abs().sum(-1)
    assert torch.all(steps == 1), "a regen route jumps between non-adjacent pixels"
    # Route 0 is the row snake: start top-left, run right along row 0.
    assert coords[0, 0].tolist() == [0, 0]
    assert coords[0, min(1, width - 1)].tolist() == [0, min(1, width - 1)]
    # The cross order does jump (row ends to next row starts) whenever the grid is 2-D.
    cross_steps = (route_coordinates(scan_table("cross", height, width), width)[0].diff(dim=0)).abs().sum(-1)
    assert bool(torch.any(cross_steps > 1)) == (height > 1 and width > 1)


@pytest.mark.parametrize("order", SCAN_ORDERS)
@pytest.mark.parametrize("height,width", [(3, 5), (6, 6), (7, 2)])
def test_cross_merge_is_adjoint_of_cross_scan(order, height, width):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, height, width, generator=g, dtype=torch.float64)
    y = torch.randn(2, 4, 3, height * width, generator=g, dtype=torch.float64)
    lhs = (cross_scan_ref(x, order) * y).sum()
    rhs = (x * cross_merge_ref(y, height, width, order)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", SCAN_ORDERS)
def test_cross_merge_of_cross_scan_counts_each_pixel_once_per_route(order):
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(cross_merge_ref(cross_scan_ref(x, order), 5, 7, order), 4 * x)


def test_unknown_scan_order_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown scan order 'zigzag'"):
        scan_table("zigzag", 4, 4)
