"""Per-sample, counter-based Gaussian noise: sample ``i`` gets the same noise in any batch.

Every Gaussian a run consumes is a pure function of four integers, so any host (this module, a
C++ server, another shard) regenerates the noise of any sample without replaying the others:

* ``s``: the run seed, ``0 <= s < 2**64``;
* ``i``: the sample index, ``0 <= i < 2**64``;
* ``r``: the stream: ``r = 0`` is the initial ``x_T``; ``r = k + 1`` is the noise that sampler
  step ``k`` (0-based, in sampling order) consumes;
* ``j``: the element, ``0 <= j < C*H*W``, row-major over ``(C, H, W)``.

The rule. All integers are uint64 and all arithmetic on them is modulo ``2**64`` (C++
``uint64_t``). ``>>`` is a logical shift, ``^`` exclusive or.

1. ``splitmix64(x)``: ``z = x + GOLDEN``; ``z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9``;
   ``z = (z ^ (z >> 27)) * 0x94D049BB133111EB``; return ``z ^ (z >> 31)``, with
   ``GOLDEN = 0x9E3779B97F4A7C15``. This is one step of Steele, Lea & Flood's SplitMix64
   generator (Vigna's ``splitmix64.c``): ``splitmix64(state)`` is the output a generator in
   ``state`` returns next.
2. ``key = splitmix64(splitmix64(splitmix64(s) ^ i) ^ r)``. Hashing between the xors keeps
   ``(s, i, r)`` triples from cancelling (``s ^ i`` alone collides for ``(s, i) = (1, 0), (0, 1)``).
3. Word ``n`` (``n = 0, 1, 2, ...``) is ``bits[n] = splitmix64(key + n * GOLDEN)``, i.e. the
   ``(n+1)``-th output of a SplitMix64 generator seeded with ``key``: elements are read by
   counter, never by advancing a shared state.
4. Box-Muller, in IEEE binary64, for pair ``p = j // 2`` from ``b1 = bits[2p]`` and
   ``b2 = bits[2p+1]``:
   ``u1 = ((b1 >> 11) + 1) * 2**-53`` in ``(0, 1]`` (never 0, so the log is finite),
   ``u2 = (b2 >> 11) * 2**-53`` in ``[0, 1)`` (both exact: 53-bit integers times a power of 2),
   ``radius = sqrt(-2.0 * log(u1))``, ``theta = 6.283185307179586 * u2`` (the binary64 nearest
   to 2 pi), ``z0 = radius * cos(theta)``, ``z1 = radius * sin(theta)``.
5. Element ``2p`` is ``z0`` and element ``2p + 1`` is ``z1``, each rounded to binary32; when
   ``C*H*W`` is odd the last ``z1`` is dropped.

Steps 1-3 and the integer part of 4 are bit-exact on any host. ``sqrt`` and the products are
correctly rounded in IEEE arithmetic; ``log``, ``cos`` and ``sin`` are within an ulp or so of
exact in any mainstream libm (numpy's may differ from glibc's in the last binary64 bit), so the
binary32 results agree bit for bit except where a binary64 value falls within an ulp of a binary32
rounding midpoint: fewer than one element in 10**8 can differ, and then by one binary32 ulp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vmddpm_deploy.errors import InvalidArgumentError

GOLDEN = 0x9E3779B97F4A7C15
UINT64_LIMIT = 2**64

_GOLDEN = np.uint64(GOLDEN)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_MINUS_53 = 2.0**-53


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output for state ``x`` (elementwise on a uint64 array; wraps modulo 2**64)."""
    with np.errstate(over="ignore"):  # wrapping is the point; numpy scalars would warn
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN  # a new array: the rest works in place
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
        return z


def gaussian_noise(seed: int, indices: Sequence[int], stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal float32 noise of shape ``(len(indices), *shape)`` on the CPU.

    Row ``b`` depends only on ``(seed, indices[b], stream)``: the same sample index gives the
    same row in any batch, order or process (see the module docstring for the exact rule).
    """
    indices = list(indices)
    _check_uint64("seed", seed)
    _check_uint64("stream", stream)
    for index in indices:
        _check_uint64("sample index", index)
    shape = tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise InvalidArgumentError(f"noise shape must be positive integers, got {shape}")
    numel = math.prod(shape)
    pairs = (numel + 1) // 2

    run_key = splitmix64(np.array([seed], dtype=np.uint64))
    sample_keys = splitmix64(run_key ^ np.array(indices, dtype=np.uint64))
    keys = splitmix64(sample_keys ^ np.uint64(stream))[:, None]
    with np.errstate(over="ignore"):
        # Words 2p and 2p+1 as two contiguous arrays: counters key + n * GOLDEN, n even / odd.
        first_offsets = np.arange(0, 2 * pairs, 2, dtype=np.uint64) * _GOLDEN
        b1 = splitmix64(keys + first_offsets)
        b2 = splitmix64(keys + (first_offsets + _GOLDEN))

    b1 >>= np.uint64(11)
    b1 += np.uint64(1)
    u1 = b1.astype(np.float64)
    u1 *= _TWO_POW_MINUS_53
    b2 >>= np.uint64(11)
    u2 = b2.astype(np.float64)
    u2 *= _TWO_POW_MINUS_53
    radius = np.sqrt(-2.0 * np.log(u1))
    theta = 6.283185307179586 * u2
    # Each product is formed in float64 and rounded once to float32 as it is stored.
    z = np.empty((len(indices), pairs, 2), dtype=np.float32)  # [..., 0] = z0, [..., 1] = z1
    np.multiply(radius, np.cos(theta), out=z[..., 0], casting="same_kind")
    np.multiply(radius, np.sin(theta), out=z[..., 1], casting="same_kind")
    z = np.ascontiguousarray(z.reshape(len(indices), 2 * pairs)[:, :numel])  # copies only for odd numel
    return torch.from_numpy(z.reshape(len(indices), *shape))


def _check_uint64(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < UINT64_LIMIT:
        raise InvalidArgumentError(f"{name} must be an integer in [0, 2**64), got {value!r}")
