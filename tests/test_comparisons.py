"""Comparisons, where, relu, maxpool2d, max, argmax and divide on private tensors, against NumPy.

Inputs are first rounded to multiples of 2^-f (``quantize``): the ring then holds them exactly, and
SecureNN's results are compared with NumPy on the rounded values by equality (``where`` with a
private condition included: SelectShare with the comparison's bit is exact). The exception is the
dispatch test (a fake protocol family stands in; only which of its steps is called is tested).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpcnp as mp
from mpcnp.protocols import families, maxpool
from mpcnp.protocols.shared import add_public
from helpers import FRAC_BITS, ULP, quantize, run_private
from strategies import PRODUCT_BOUND, broadcastable_pair, real_arrays

LIMIT = 2.0 ** (62 - FRAC_BITS)            # encoding refuses magnitudes from here on; any two encodable
LARGEST = np.nextafter(LIMIT, 0.0)         # operands differ by less than 2^(63 - f): comparisons exact
RNG = np.random.default_rng(2019)

OPS = {"<": (lambda x, y: x < y, np.less), "<=": (lambda x, y: x <= y, np.less_equal),
       ">": (lambda x, y: x > y, np.greater), ">=": (lambda x, y: x >= y, np.greater_equal)}


def edge_reals() -> np.ndarray:
    """0, +-1 ulp, +-2^k for every k in range and their neighbours (+-1 ulp where float64 can hold it,
    else the nearest float64), and the largest encodable magnitudes, all quantized."""
    powers = 2.0 ** np.arange(-FRAC_BITS, 62 - FRAC_BITS)
    near = np.concatenate([powers + ULP, powers - ULP, np.nextafter(powers, 0.0), np.nextafter(powers, np.inf)])
    # LARGEST = 2^(62 - f) - 2^-7: LIMIT - ULP is not a float64
    values = quantize(np.concatenate([[0.0, ULP, -ULP, LARGEST, -LARGEST], powers, -powers, near, -near]))
    return np.unique(values[np.abs(values) < LIMIT])


@pytest.mark.parametrize("op", list(OPS))
def test_comparisons_with_zero_and_relu_at_the_edges(op):
    x = edge_reals()
    private_op, numpy_op = OPS[op]
    np.testing.assert_array_equal(run_private(lambda t: private_op(t, 0.0), x), numpy_op(x, 0.0))
    np.testing.assert_array_equal(run_private(lambda t: private_op(0.0, t), x), numpy_op(0.0, x))
    if op == "<":
        np.testing.assert_array_equal(run_private(mp.relu, x), np.maximum(x, 0.0))


def test_pairwise_comparisons_at_the_edges_of_the_exact_range():
    # |a - b| up to 2^(63 - f) - 2^-6, the largest difference of two encodable values: beyond the
    # 2^(62 - f) that PETS' DReLU is exact for, within the 2^(63 - f) of the default DReLU
    top = LARGEST
    a = np.array([top, -top, top, 1.0, ULP, 0.0, -ULP, 5.0, top, -top, top / 2])
    b = np.array([-top, top, top, 1.0 + ULP, 0.0, -ULP, ULP, 5.0, -ULP, ULP, -top])
    for op, (private_op, numpy_op) in OPS.items():
        np.testing.assert_array_equal(run_private(private_op, a, b), numpy_op(a, b), err_msg=op)


@settings(max_examples=60)
@given(st.data())
def test_comparisons_match_numpy(data):
    a_shape, b_shape = data.draw(broadcastable_pair())
    a = quantize(data.draw(real_arrays(a_shape, bound=LIMIT - 1)))
    b = quantize(data.draw(real_arrays(b_shape, bound=LIMIT - 1)))
    op = data.draw(st.sampled_from(list(OPS)))
    private_op, numpy_op = OPS[op]
    expected = numpy_op(a, b).astype(np.float64)
    np.testing.assert_array_equal(run_private(private_op, a, b), expected)
    np.testing.assert_array_equal(run_private(private_op, a, b, private_mask=[True, False]), expected)
    np.testing.assert_array_equal(run_private(private_op, a, b, private_mask=[False, True]), expected)
    np.testing.assert_array_equal(run_private(lambda x: private_op(x, mp.public(b)), a), expected)


def test_comparison_of_public_operands_is_public():
    result = mp.PublicTensor(np.array([1.0, 3.0])) < 2.0
    assert isinstance(result, mp.PublicTensor)
    np.testing.assert_array_equal(result.value, [1.0, 0.0])


@settings(max_examples=20)
@given(st.data())
def test_where_and_relu_match_numpy(data):
    a_shape, b_shape = data.draw(broadcastable_pair())
    # |a - b| <= 2 PRODUCT_BOUND keeps the truncation failure rate of where's product below 2^-25
    a = quantize(data.draw(real_arrays(a_shape, bound=PRODUCT_BOUND)))
    b = quantize(data.draw(real_arrays(b_shape, bound=PRODUCT_BOUND)))
    expected = np.where(a > b, a, b)
    # a private condition from a comparison: SelectShare with its ring bit, exact
    np.testing.assert_array_equal(run_private(lambda x, y: mp.where(x > y, x, y), a, b), expected)
    cond = a > 0
    np.testing.assert_array_equal(run_private(lambda x: mp.where(cond, x, -1.5), a), np.where(cond, a, -1.5))
    np.testing.assert_array_equal(run_private(mp.relu, a), np.maximum(a, 0.0))


@pytest.mark.parametrize("shape, kernel, stride", [((1, 2, 4, 4), 2, None), ((2, 3, 5, 7), (2, 3), None),
                                                    ((1, 1, 5, 5), 3, 1), ((1, 2, 6, 6), 3, 2),
                                                    ((1, 1, 3, 3), 1, None)])
def test_maxpool2d_matches_numpy_with_ties(shape, kernel, stride):
    x = RNG.integers(-3, 4, shape).astype(np.float64) / 4   # many ties
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
    sh, sw = (kh, kw) if stride is None else (stride, stride)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    np.testing.assert_array_equal(run_private(lambda t: mp.maxpool2d(t, kernel, stride), x),
                                  windows.max(axis=(-2, -1)))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
def test_max_and_argmax_match_numpy_with_ties(axis):
    x = RNG.integers(-2, 3, (3, 5, 4)).astype(np.float64)
    np.testing.assert_array_equal(run_private(lambda t: mp.max(t, axis=axis), x), np.max(x, axis=axis))
    np.testing.assert_array_equal(run_private(lambda t: mp.max(t, axis=axis, keepdims=True), x),
                                  np.max(x, axis=axis, keepdims=True))
    if not isinstance(axis, tuple):
        # ties: the first maximal element wins, as in NumPy
        np.testing.assert_array_equal(run_private(lambda t: mp.argmax(t, axis=axis), x), np.argmax(x, axis=axis))


@settings(max_examples=15)
@given(st.data())
def test_max_and_argmax_of_random_vectors(data):
    n = data.draw(st.integers(1, 9))
    x = quantize(data.draw(real_arrays((n,), bound=LIMIT - 1)))
    np.testing.assert_array_equal(run_private(mp.max, x), np.max(x))
    np.testing.assert_array_equal(run_private(mp.argmax, x), np.argmax(x))


def test_divide_is_exact_floor_division_in_fixed_point():
    f = FRAC_BITS
    # the last two at the preconditions' edge, |x| 2^(2f) + 2^(12 + 2f) y just below 2^63 (beyond 2^62)
    x = quantize(np.array([0.0, 1.0, -1.0, 3.5, -7.25, 1000.0, -2047.0, ULP, 0.1, 2.0 ** 29 + 0.5, -2.0 ** 29]))
    y = quantize(np.array([1.0, 3.0, 3.0, 0.5, 2.0, 7.0, 1.0, 1.0, 0.3, 2.0 ** 18 - 1, 2.0 ** 18 - 1]))
    assert np.all(np.abs(x) * 2.0 ** (2 * f) + 2.0 ** (12 + 2 * f) * y < 2.0 ** 63)
    ring_x, ring_y = (x * 2 ** f).astype(np.int64), (y * 2 ** f).astype(np.int64)
    expected = np.array([(int(a) << f) // int(b) for a, b in zip(ring_x, ring_y)]) / 2.0 ** f
    np.testing.assert_array_equal(run_private(lambda a, b: mp.divide(a, b, integer_bits=12), x, y), expected)
    np.testing.assert_array_equal(run_private(lambda b: mp.divide(1.0, b, integer_bits=2), y[1:4]),
                                  np.array([(1 << 2 * f) // int(b) for b in ring_y[1:4]]) / 2.0 ** f)


def test_comparisons_on_each_backend(backend):
    x = edge_reals()[:40]
    np.testing.assert_array_equal(run_private(lambda t: t >= 0.0, x, backend=backend), x >= 0.0)
    np.testing.assert_array_equal(run_private(mp.relu, x, backend=backend), np.maximum(x, 0.0))


# ---- dispatch: every composite goes through the protocol family ------------------------------------------------
def ones(ctx, like):
    """Fixed-point shares of 1.0 in the shape of ``like``: server0 holds the encoding, server1 zero."""
    return add_public(ctx, like * 0, 1 << ctx.config.frac_bits)


class FakeFamily(families.Family):
    """A family that records its calls: exact comparisons and max steps (SecureNN's), and 1.0 for
    every ReLU and quotient, so that the results show which step was used."""

    name, exact, default_truncation = "fake", False, "local"

    def __init__(self, calls):
        self.calls = calls

    def ge_zero(self, ctx, d):
        self.calls.append("ge_zero")
        return families.FAMILIES["securenn"].ge_zero(ctx, d)

    def equal_zero(self, ctx, d):
        self.calls.append("equal_zero")
        return families.FAMILIES["securenn"].equal_zero(ctx, d)

    def select(self, ctx, cond, a, b):
        self.calls.append("select")
        return families.FAMILIES["securenn"].select(ctx, cond, a, b)

    def relu(self, ctx, x, bound):
        self.calls.append(f"relu {bound}")
        return ones(ctx, x)

    def max_step(self, ctx, best, other, index, other_index):
        self.calls.append("max_step")
        return maxpool.exact_step(ctx, best, other, index, other_index)

    def divide(self, ctx, x, y, integer_bits):
        self.calls.append("divide")
        return ones(ctx, x)


@pytest.fixture
def fake_family(monkeypatch):
    calls = []
    monkeypatch.setitem(families.FAMILIES, "fake", FakeFamily(calls))
    return calls


def test_composites_use_the_family(fake_family):
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    for op, (private_op, numpy_op) in OPS.items():
        got = run_private(lambda t: private_op(t, 0.25), x, protocol="fake")
        np.testing.assert_array_equal(got, numpy_op(x, 0.25), err_msg=op)
    np.testing.assert_array_equal(run_private(mp.relu, x, protocol="fake"), np.ones(4))
    np.testing.assert_array_equal(run_private(lambda t: mp.relu(t, 32), x, protocol="fake"), np.ones(4))
    np.testing.assert_array_equal(run_private(mp.max, x, protocol="fake"), 3.0)
    np.testing.assert_array_equal(run_private(lambda a: mp.divide(a, a), x, protocol="fake"), np.ones(4))
    np.testing.assert_array_equal(run_private(lambda a: mp.where(a > 0, a, -a), x, protocol="fake"), np.abs(x))
    np.testing.assert_array_equal(run_private(lambda a: a == 0.5, x, protocol="fake"), x == 0.5)
    assert set(fake_family) == {"ge_zero", "relu None", "relu 32", "max_step", "divide", "select", "equal_zero"}


def test_an_unknown_protocol_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown protocol 'aby3'; choose one of securenn, pond"):
        mp.run(lambda: None, protocol="aby3")


def test_pond_comparisons_and_relu_with_the_approximations():
    # inside approx's stated intervals: step within 5e-6 + 3 units away from |x| < 0.25, relu within
    # 0.035 + 80 units on [-8, 8] (mpcnp.approx docstrings)
    x = np.array([-7.5, -3.0, -0.5, 0.75, 2.0, 7.9])
    np.testing.assert_allclose(run_private(lambda t: t > 0.25, x, protocol="pond"), x > 0.25, rtol=0,
                               atol=5e-6 + 3 * ULP)
    np.testing.assert_allclose(run_private(lambda t: t <= 0.25, x, protocol="pond"), x <= 0.25,
                               rtol=0, atol=5e-6 + 3 * ULP)
    np.testing.assert_allclose(run_private(mp.relu, x, protocol="pond"), np.maximum(x, 0.0), rtol=0,
                               atol=0.035 + 80 * ULP)
