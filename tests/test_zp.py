"""The small rings of SecureNN (mpcnp.protocols.zp) against Python integers, and its C kernels against
its NumPy kernels, bit for bit.

The C kernels (``mpcnp_zp_*`` in _ring.c) are what zp dispatches to when the extension is built; the
NumPy ones (``*_numpy``) are called directly here to compare. Every kernel is fed the layouts the
protocols pass: column slices of wider arrays (rows not contiguous with each other), read-only
arrays, blocks of any width.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mpcnp import ring, zp
from helpers import chi_square, chi_square_limit
from strategies import ring_elements

L = 1 << 64
RNG = np.random.default_rng(67)   # test data only
needs_c = pytest.mark.skipif(ring.BACKEND == "numpy", reason="no compiled extension (installed without a "
                                                               "C compiler, or MPCNP_RING=numpy)")


@needs_c
def test_the_compiled_extension_has_the_zp_kernels():
    assert zp.KERNELS == "c"  # a stale or partial build must fail here, not skip the tests below


# ---- arithmetic --------------------------------------------------------------------------------------
def test_zp_arithmetic_matches_python():
    a, s = np.meshgrid(np.arange(zp.P, dtype=np.uint8), np.arange(zp.P, dtype=np.uint8))
    np.testing.assert_array_equal(zp.mul(a, s), (a.astype(int) * s) % zp.P)
    np.testing.assert_array_equal(zp.add(a, s), (a.astype(int) + s) % zp.P)
    np.testing.assert_array_equal(zp.neg(a), (-a.astype(int)) % zp.P)
    w = RNG.integers(0, zp.P, (64, 9)).astype(np.uint8)
    expected = np.vstack([np.zeros((1, 9), int), np.cumsum(w.astype(int), axis=0)[:-1]]) % zp.P
    np.testing.assert_array_equal(zp.exclusive_prefix_sum(w), expected)


@pytest.mark.parametrize("rows", [64, 63, 5, 1])
def test_rotate_moves_row_i_to_i_plus_g(rows):
    d = RNG.integers(0, 256, (rows, 300)).astype(np.uint8)
    g = RNG.integers(0, rows, 300).astype(np.uint8)
    rotated = zp.rotate(d.copy(), g)
    for col in range(300):
        np.testing.assert_array_equal(rotated[(np.arange(rows) + g[col]) % rows, col], d[:, col])


@pytest.mark.parametrize("rows", [64, 63, 1])
def test_bits_msb_first(rows):
    x = np.array([0, 1, (1 << 63) + 5, L - 1, 0x0123_4567_89AB_CDEF], np.uint64)
    bits = zp.bits_msb_first(x, rows)
    assert bits.shape == (rows, 5)
    for col, v in enumerate(x.tolist()):
        assert bits[:, col].tolist() == [(v >> (rows - 1 - i)) & 1 for i in range(rows)]


@given(st.lists(ring_elements, min_size=1, max_size=8), st.lists(ring_elements, min_size=1, max_size=8))
def test_odd_ring_matches_python(xs, ys):
    n = min(len(xs), len(ys))
    odd = L - 1
    a = np.array([x % odd for x in xs[:n]], np.uint64)
    b = np.array([y % odd for y in ys[:n]], np.uint64)
    assert [int(v) for v in zp.odd_add(a, b)] == [(int(x) + int(y)) % odd for x, y in zip(a, b)]
    assert [int(v) for v in zp.odd_sub(a, b)] == [(int(x) - int(y)) % odd for x, y in zip(a, b)]
    assert [int(v) for v in zp.odd_reduce(np.array(xs[:n], np.uint64))] == [x % odd for x in xs[:n]]


def test_uniform_is_reproducible_and_uniform():
    key = bytes(range(16))
    draws = [zp.uniform(ring.PRF(key), zp.P, (64, 20000)) for _ in range(2)]   # 3 blocks
    np.testing.assert_array_equal(draws[0], draws[1])      # two holders of a stream draw the same
    counts = np.bincount(draws[0].reshape(-1), minlength=zp.P)
    assert counts.size == zp.P and chi_square(counts) < chi_square_limit(zp.P - 1)
    assert zp.uniform_nonzero(ring.PRF(key), 10000).min() >= 1
    rotations = zp.uniform(ring.PRF(key), 63, 63 * 2000)
    assert rotations.max() == 62 and chi_square(np.bincount(rotations, minlength=63)) < chi_square_limit(62)


# ---- the C kernels against the NumPy kernels ------------------------------------------------------
def every_draw() -> np.ndarray:
    """All 2^16 draws, shuffled: every rejected value occurs."""
    return RNG.permutation(np.arange(1 << 16, dtype=np.uint16))


@needs_c
@pytest.mark.parametrize("modulus, offset", [(2, 0), (63, 0), (64, 0), (66, 1), (67, 0), (255, 1), (256, 0)])
def test_map_draws_c_equals_numpy(modulus, offset):
    v = every_draw()
    out_c, out_np = np.empty(v.size, np.uint8), np.empty(v.size, np.uint8)
    bad_c = zp.map_draws(v.copy(), modulus, offset, out_c)
    bad_np = zp.map_draws_numpy(v.copy(), modulus, offset, out_np)
    np.testing.assert_array_equal(out_c, out_np)
    np.testing.assert_array_equal(bad_c, bad_np)
    assert bad_c.size == (1 << 16) % modulus


@needs_c
def test_uniform_draws_the_same_stream_with_either_kernel(monkeypatch):
    key = bytes(range(16, 32))
    with_c = [zp.uniform(ring.PRF(key), m, (64, 9000), offset) for m, offset in ((66, 1), (67, 0), (63, 0))]
    monkeypatch.setattr(zp, "map_draws", zp.map_draws_numpy)
    with_numpy = [zp.uniform(ring.PRF(key), m, (64, 9000), offset) for m, offset in ((66, 1), (67, 0), (63, 0))]
    for a, b in zip(with_c, with_numpy):
        np.testing.assert_array_equal(a, b)


def column_slice(array: np.ndarray, margin: int) -> np.ndarray:
    """``array`` as columns 3 .. 3 + n of a read-only array ``margin`` columns wider, as the protocols
    pass blocks of received messages."""
    rows, n = array.shape
    wide = np.zeros((rows, n + 3 + margin), dtype=array.dtype)
    wide[:, 3:3 + n] = array
    wide.flags.writeable = False
    return wide[:, 3:3 + n]


@needs_c
@pytest.mark.parametrize("rows", [64, 63])
@pytest.mark.parametrize("n", [1, 31, 257, 9000])
def test_bit_shares_c_equals_numpy(rows, n):
    x = RNG.integers(0, L - 1, n, dtype=np.uint64, endpoint=True)
    x[:4] = [0, L - 1, 1 << 63, (1 << 63) - 1][:n] if n >= 4 else x[:4]
    share0 = column_slice(RNG.integers(0, zp.P, (rows, n)).astype(np.uint8), 11)
    got = zp.bit_shares(x, share0)
    np.testing.assert_array_equal(got, zp.bit_shares_numpy(x, share0))
    bits = (zp.bits_msb_first(x, rows).astype(int) - share0) % zp.P
    np.testing.assert_array_equal(got, bits)


def compare_inputs(rows: int, n: int):
    """Random bit shares, comparands with the edge cases (0, 2^rows - 1 with beta = 1: the known case,
    top bit set), betas, multipliers, offsets, rotations."""
    top = (1 << rows) - 1
    x = RNG.integers(0, zp.P, (rows, n)).astype(np.uint8)
    r = RNG.integers(0, top, n, dtype=np.uint64, endpoint=True)
    edges = np.array([0, top, top, 1 << (rows - 1), top - 1, 1], np.uint64)
    r[:min(n, 6)] = edges[:min(n, 6)]
    beta = RNG.integers(0, 2, n).astype(np.uint8)
    beta[:min(n, 3)] = [0, 1, 0][:min(n, 3)]
    s = RNG.integers(1, zp.P, (rows, n)).astype(np.uint8)
    u = RNG.integers(0, zp.P, (rows, n)).astype(np.uint8)
    g = RNG.integers(0, rows, n).astype(np.uint8)
    return x, r, beta, s, u, g


@needs_c
@pytest.mark.parametrize("j", [0, 1])
@pytest.mark.parametrize("rows", [64, 63])
@pytest.mark.parametrize("n", [1, 7, 300, 8192])
def test_compare_masks_c_equals_numpy(j, rows, n):
    x, r, beta, s, u, g = compare_inputs(rows, n)
    x = column_slice(x, 5)
    got = np.full((rows, n + 2), 0xAA, np.uint8)
    zp.compare_masks(j, x, r, beta, s, u, g, got[:, 1:1 + n])
    expected = zp.compare_masks_numpy(j, x, r, beta, s, u, g, np.empty((rows, n), np.uint8))
    np.testing.assert_array_equal(got[:, 1:1 + n], expected)
    assert (got[:, 0] == 0xAA).all() and (got[:, -1] == 0xAA).all()     # nothing written outside


@needs_c
@pytest.mark.parametrize("rows", [64, 63])
@pytest.mark.parametrize("n", [1, 100, 20000])
def test_any_zero_c_equals_numpy(rows, n):
    # d0 + d1 = e with e = 0 at about one row in 92: about half the columns hold a zero
    d0 = RNG.integers(0, zp.P, (rows, n))
    e = np.where(RNG.random((rows, n)) < 0.0108, 0, RNG.integers(1, zp.P, (rows, n)))
    d0, d1 = d0.astype(np.uint8), ((e - d0) % zp.P).astype(np.uint8)
    got = zp.any_zero(column_slice(d0, 2), column_slice(d1, 9))
    expected = zp.any_zero_numpy(d0, d1)
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected.sum() < n or n < 100
    np.testing.assert_array_equal(expected, (((d0.astype(int) + d1) % zp.P) == 0).any(axis=0))
