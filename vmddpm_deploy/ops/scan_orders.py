"""Scan orders: how SS2D threads an H x W grid into K one-dimensional routes.

Every order is data, a ``(K, L)`` int64 index table with ``L = H * W``:
``table[k, l]`` is the row-major position (``h * W + w``) of the token that route ``k``
visits at step ``l``. ``cross_scan`` gathers with it and ``cross_merge`` scatter-adds with
it, so adding an order means adding a table here, never a kernel.

Each row of every table is a permutation of ``range(L)``; the native kernels, the ONNX
``Gather`` constants and the TensorRT plugins all receive the same table.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from vmddpm_deploy.errors import ConfigError

#: Number of routes every order produces (VMamba's four directions).
NUM_ROUTES = 4


def _row_major(h: int, w: int) -> torch.Tensor:
    return torch.arange(h * w, dtype=torch.int64)


def _col_major(h: int, w: int) -> torch.Tensor:
    return torch.arange(h * w, dtype=torch.int64).view(h, w).t().reshape(-1)


def _row_snake(h: int, w: int) -> torch.Tensor:
    grid = torch.arange(h * w, dtype=torch.int64).view(h, w).clone()
    grid[1::2] = grid[1::2].flip(-1)  # odd rows run right-to-left
    return grid.reshape(-1)


def _col_snake(h: int, w: int) -> torch.Tensor:
    grid = torch.arange(h * w, dtype=torch.int64).view(h, w).t().clone()
    grid[1::2] = grid[1::2].flip(-1)  # odd columns run bottom-to-top
    return grid.reshape(-1)


def _cross(h: int, w: int) -> torch.Tensor:
    # VMamba: row-major, column-major, and both reversed.
    rm, cm = _row_major(h, w), _col_major(h, w)
    return torch.stack([rm, cm, rm.flip(0), cm.flip(0)])


def _regen(h: int, w: int) -> torch.Tensor:
    # Sequence Regeneration as we read it: the same four directions re-threaded as snakes, so
    # consecutive tokens on a route are always 4-neighbours in the image.
    rs, cs = _row_snake(h, w), _col_snake(h, w)
    return torch.stack([rs, cs, rs.flip(0), cs.flip(0)])


_BUILDERS = {"cross": _cross, "regen": _regen}

#: Names accepted for ``scan_order`` in configs, CLI flags and ONNX attributes.
SCAN_ORDERS: tuple[str, ...] = tuple(_BUILDERS)


@lru_cache(maxsize=64)
def _cached(order: str, h: int, w: int) -> torch.Tensor:
    table = _BUILDERS[order](h, w).contiguous()
    table.requires_grad_(False)
    return table


def scan_table(order: str, h: int, w: int) -> torch.Tensor:
    """The ``(K, H*W)`` int64 index table of ``order`` for an ``h x w`` grid (CPU, read-only)."""
    if order not in _BUILDERS:
        raise ConfigError(f"unknown scan order {order!r}; choose one of {', '.join(SCAN_ORDERS)}")
    if h < 1 or w < 1:
        raise ConfigError(f"scan grid must be at least 1x1, got {h}x{w}")
    return _cached(order, int(h), int(w))
