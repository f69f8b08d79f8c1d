"""The counter-based noise: a second, pure-Python implementation of the rule, and statistics.

Statistical bounds are 5 standard errors of the estimate for the sample size at hand, so a
correct generator fails one of them with probability below 1e-6 (the seeds are fixed, so a
pass is reproducible).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from vmddpm_deploy.diffusion import gaussian_noise, splitmix64
from vmddpm_deploy.errors import InvalidArgumentError

MASK = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15
Z = 5.0  # standard errors allowed by every statistical check


def reference_splitmix64(state: int) -> int:
    """Steele, Lea & Flood's SplitMix64 step in Python integers: advance, then mix."""
    z = (state + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def reference_noise(seed: int, index: int, stream: int, numel: int) -> list[float]:
    """The module docstring's rule, element by element, with Python ints and the math module."""
    key = reference_splitmix64(reference_splitmix64(reference_splitmix64(seed) ^ index) ^ stream)
    values = []
    for j in range(numel):
        p = j // 2
        b1 = reference_splitmix64((key + 2 * p * GOLDEN) & MASK)
        b2 = reference_splitmix64((key + (2 * p + 1) * GOLDEN) & MASK)
        u1 = ((b1 >> 11) + 1) * 2.0**-53
        u2 = (b2 >> 11) * 2.0**-53
        radius = math.sqrt(-2.0 * math.log(u1))
        angle = 2.0 * math.pi * u2
        values.append(radius * (math.cos(angle) if j % 2 == 0 else math.sin(angle)))
    return values


def test_splitmix64_reproduces_the_published_seed_0_sequence():
    # Vigna's splitmix64.c seeded with 0 (the seeding generator of xoshiro/xoroshiro) opens with
    # these outputs; the pure-Python step above derives the same values.
    published = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    states = [(n * GOLDEN) & MASK for n in range(4)]  # the generator adds GOLDEN per call
    assert [reference_splitmix64(s) for s in states] == published
    assert splitmix64(np.array(states, dtype=np.uint64)).tolist() == published


def test_splitmix64_matches_the_python_integer_implementation():
    rng = random.Random(1234)
    states = [0, 1, MASK, MASK - GOLDEN + 1, GOLDEN] + [rng.getrandbits(64) for _ in range(2000)]
    ours = splitmix64(np.array(states, dtype=np.uint64)).tolist()
    assert ours == [reference_splitmix64(s) for s in states]


@pytest.mark.parametrize(
    "seed,index,stream,numel",
    [(0, 0, 0, 7), (2**64 - 1, 12345, 3, 10), (42, 2**63 + 5, 2**40, 5), (7, 3, 1001, 33)],
)
def test_noise_follows_the_documented_rule(seed, index, stream, numel):
    ours = gaussian_noise(seed, [index], stream, (numel,))[0].numpy()
    expected = np.array(reference_noise(seed, index, stream, numel), dtype=np.float32)
    # The integer side is exact; numpy's and libm's log/cos/sin may differ in the last
    # binary64 bit, which moves a binary32 result by at most one ulp.
    np.testing.assert_array_max_ulp(ours, expected, maxulp=1)


def test_shape_and_dtype():
    noise = gaussian_noise(3, [0, 1, 2], 0, (1, 5, 7))
    assert noise.shape == (3, 1, 5, 7) and noise.dtype == torch.float32 and noise.is_contiguous()
    assert gaussian_noise(3, [], 0, (2, 4)).shape == (0, 2, 4)


def test_row_depends_only_on_its_own_index():
    shape = (3, 8, 8)
    alone = gaussian_noise(11, [5], 2, shape)[0]
    batch = gaussian_noise(11, [3, 5, 9], 2, shape)
    assert torch.equal(batch[1], alone)
    assert torch.equal(gaussian_noise(11, [9, 5, 3], 2, shape)[1], alone)
    assert torch.equal(batch[0], gaussian_noise(11, [3], 2, shape)[0])


def test_element_j_does_not_depend_on_the_shape():
    # Counter-based: element j of a row is fixed by j, so a C++ host may flatten as it likes.
    long = gaussian_noise(1, [4], 6, (3, 8, 8)).flatten()
    for shape in [(1, 7, 7), (50,), (2, 3, 4)]:
        short = gaussian_noise(1, [4], 6, shape).flatten()
        assert torch.equal(short, long[: short.numel()])


def test_seed_index_and_stream_each_change_the_noise():
    base = gaussian_noise(0, [0], 0, (64,))
    for other in [gaussian_noise(1, [0], 0, (64,)), gaussian_noise(0, [1], 0, (64,)), gaussian_noise(0, [0], 1, (64,))]:
        assert not torch.equal(base, other)


def test_moments_and_tails_of_the_marginal():
    z = gaussian_noise(2024, range(16), 1, (4, 64, 64)).double().flatten()
    n = z.numel()
    assert abs(z.mean().item()) < Z / math.sqrt(n)
    # Var of the sample variance of a standard normal is 2 / n.
    assert abs(z.var().item() - 1.0) < Z * math.sqrt(2.0 / n)
    # Tails: P(|z| > 1.96) = 0.05 and P(|z| > 3) = 0.0027, each a binomial proportion.
    for threshold, p in [(1.959963984540054, 0.05), (3.0, 0.0026997960632601866)]:
        observed = (z.abs() > threshold).double().mean().item()
        assert abs(observed - p) < Z * math.sqrt(p * (1 - p) / n), threshold
    # Fourth moment is 3 with variance (105 - 9) / n.
    assert abs((z**4).mean().item() - 3.0) < Z * math.sqrt(96.0 / n)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return (a @ b / (a.norm() * b.norm())).item()


def test_no_correlation_between_streams_indices_seeds_or_neighbours():
    shape = (4, 64, 64)
    indices = list(range(8))
    base = gaussian_noise(99, indices, 1, shape)
    n = base.numel()
    bound = Z / math.sqrt(n)  # a sample correlation of independent variables has sd ~ 1/sqrt(n)
    assert abs(correlation(base, gaussian_noise(99, indices, 2, shape))) < bound, "streams"
    assert abs(correlation(base, gaussian_noise(99, indices, 0, shape))) < bound, "x_T vs step 0"
    assert abs(correlation(base, gaussian_noise(99, [i + 1 for i in indices], 1, shape))) < bound, "indices"
    assert abs(correlation(base, gaussian_noise(100, indices, 1, shape))) < bound, "seeds"
    # Swapped roles: seed s, index i against seed i, index s must not coincide either.
    assert abs(correlation(gaussian_noise(1, [0], 1, shape), gaussian_noise(0, [1], 1, shape))) < Z / math.sqrt(
        math.prod(shape)
    )
    flat = base.flatten(1)
    half = flat.shape[1] // 2
    pairs = flat.view(len(indices), -1, 2)
    # Box-Muller partners (z0, z1) are independent: neither they nor their squares correlate.
    assert abs(correlation(pairs[..., 0], pairs[..., 1])) < Z / math.sqrt(n / 2)
    assert abs(correlation(pairs[..., 0] ** 2, pairs[..., 1] ** 2)) < Z / math.sqrt(n / 2)
    # Neighbouring pairs (z1 of pair p against z0 of pair p + 1), and far-apart elements.
    assert abs(correlation(pairs[:, :-1, 1], pairs[:, 1:, 0])) < Z / math.sqrt(n / 2)
    assert abs(correlation(flat[:, :half], flat[:, half:])) < Z / math.sqrt(n / 2)


@pytest.mark.parametrize(
    "kwargs,phrase",
    [
        ({"seed": -1}, "seed must be an integer in [0, 2**64)"),
        ({"seed": 2**64}, "seed must be an integer in [0, 2**64)"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"indices": [0, -3]}, "sample index must be an integer"),
        ({"stream": True}, "stream must be an integer"),
        ({"shape": (3, 0, 4)}, "noise shape must be positive integers"),
    ],
)
def test_rejects_out_of_range_arguments(kwargs, phrase):
    arguments = {"seed": 0, "indices": [0], "stream": 0, "shape": (2, 2)} | kwargs
    with pytest.raises(InvalidArgumentError) as caught:
        gaussian_noise(**arguments)
    assert phrase in str(caught.value)
