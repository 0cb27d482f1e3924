"""Private tensors against NumPy float64 on the plaintext.

Tolerances: inputs are first rounded to multiples of 2^-f (``quantize``), so linear operations on
them are exact in the ring and compared with equality (up to float64's own rounding). A product is
computed exactly on the quantized inputs and then truncated, which costs at most one unit 2^-f
(exact truncation, as the tests run, is within one unit in the last place), so products are compared with atol = 2^-f
plus float64 rounding; matmul over k terms likewise (truncation happens once, after the sum).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import mpcnp as mp
from helpers import ULP, assert_within, public_factor_tolerance, quantize, run_private
from strategies import PRODUCT_BOUND, broadcastable_pair, matmul_shapes, real_arrays, shapes

LIMIT = 2.0 ** (62 - 16)  # the first magnitude encoding refuses at frac_bits=16


def both_ways(shape_pair, bound=None):
    a_shape, b_shape = shape_pair
    return st.tuples(real_arrays(a_shape, bound=bound), real_arrays(b_shape, bound=bound))


@given(st.data())
def test_add_sub_neg_with_broadcasting(data):
    # |x|, |y| < 2^46 each: sums stay below 2^47 * 2^16 = 2^63, so nothing wraps.
    a, b = data.draw(both_ways(data.draw(broadcastable_pair())))
    qa, qb = quantize(a), quantize(b)
    np.testing.assert_array_equal(run_private(lambda x, y: x + y, a, b), qa + qb)
    np.testing.assert_array_equal(run_private(lambda x, y: x - y, a, b), qa - qb)
    np.testing.assert_array_equal(run_private(lambda x, y: -x + (-y), a, b), -qa - qb)


@given(st.data())
def test_private_with_public_operands(data):
    a, b = data.draw(both_ways(data.draw(broadcastable_pair())))
    qa, qb = quantize(a), quantize(b)
    np.testing.assert_array_equal(run_private(lambda x, y: x + y, a, b, private_mask=[True, False]), qa + qb)
    np.testing.assert_array_equal(run_private(lambda x, y: y - x, a, b, private_mask=[True, False]), qb - qa)
    np.testing.assert_array_equal(run_private(lambda x: x + 1.5 - mp.public(0.25), a), qa + 1.25)


@given(st.data())
def test_elementwise_multiply(data):
    a, b = data.draw(both_ways(data.draw(broadcastable_pair()), bound=PRODUCT_BOUND))
    qa, qb = quantize(a), quantize(b)
    expected = qa * qb
    np.testing.assert_allclose(run_private(lambda x, y: x * y, a, b), expected, rtol=0, atol=ULP * 1.01)
    np.testing.assert_allclose(run_private(lambda x: x * x, a), qa * qa, rtol=0, atol=ULP * 1.01)


@given(st.data())
def test_multiply_by_public(data):
    a, b = data.draw(both_ways(data.draw(broadcastable_pair()), bound=PRODUCT_BOUND))
    qa = quantize(a)
    # the public factor b is used as given (rounded to 16 significant bits), not quantized
    assert_within(run_private(lambda x, y: x * y, a, b, private_mask=[True, False]),
                  qa * b, public_factor_tolerance(qa, b, np.multiply))
    # integral public factors are exact: no truncation
    np.testing.assert_array_equal(run_private(lambda x: 3 * x * -2, a), qa * -6)


@given(st.data())
def test_matmul(data):
    a_shape, b_shape = data.draw(matmul_shapes())
    a, b = data.draw(both_ways((a_shape, b_shape), bound=PRODUCT_BOUND))
    qa, qb = quantize(a), quantize(b)
    expected = np.matmul(qa, qb)
    np.testing.assert_allclose(run_private(lambda x, y: x @ y, a, b), expected, rtol=0, atol=ULP * 1.01)
    assert_within(run_private(lambda x, y: mp.matmul(x, y), a, b, private_mask=[False, True]),
                  np.matmul(a, qb), public_factor_tolerance(qb.T, a.T, lambda u, v: np.matmul(v.T, u.T)))
    assert_within(run_private(lambda x, y: x @ y, a, b, private_mask=[True, False]),
                  np.matmul(qa, b), public_factor_tolerance(qa, b, np.matmul))


@given(st.data())
def test_sum_mean_and_layout(data):
    a = data.draw(real_arrays(shapes))
    qa = quantize(a)
    axis = data.draw(st.none() | st.integers(-qa.ndim, qa.ndim - 1)) if qa.ndim else None
    keepdims = data.draw(st.booleans())
    # sums of up to 5^4 values near 2^46 could wrap: bound the summed values. The ring sum is exact,
    # so the reference is the integer sum of the encodings, decoded once (not a float64 sum).
    small = quantize(np.clip(a, -2.0 ** 36, 2.0 ** 36))
    exact_sum = np.rint(small * 2.0 ** 16).astype(np.int64).sum(axis=axis, keepdims=keepdims) * ULP
    np.testing.assert_array_equal(run_private(lambda x: x.sum(axis=axis, keepdims=keepdims), small),
                                  exact_sum)
    if small.size and (axis is None or small.shape[axis]):
        # the mean divides the sum exactly (pond.divide_exact: within two units)
        modest = quantize(np.clip(a, -2.0 ** 12, 2.0 ** 12))
        modest_sum = np.rint(modest * 2.0 ** 16).astype(np.int64).sum(axis=axis, keepdims=keepdims) * ULP
        mean = run_private(lambda x: x.mean(axis=axis, keepdims=keepdims), modest)
        count = modest.size // max(1, np.asarray(modest_sum).size)
        np.testing.assert_allclose(mean, modest_sum / count, rtol=2 ** -50, atol=2 * ULP)  # exact division
    np.testing.assert_array_equal(run_private(lambda x: x.T, a), qa.T)
    np.testing.assert_array_equal(run_private(lambda x: x.flatten(), a), qa.flatten())
    np.testing.assert_array_equal(run_private(lambda x: x.reshape(-1, 1), a), qa.reshape(-1, 1))
    if qa.ndim >= 2:
        np.testing.assert_array_equal(run_private(lambda x: x.transpose(1, 0, *range(2, qa.ndim)), a),
                                      qa.transpose(1, 0, *range(2, qa.ndim)))


@given(st.data())
def test_indexing(data):
    a = data.draw(real_arrays(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)))
    qa = quantize(a)
    index = data.draw(hnp.basic_indices(qa.shape, allow_ellipsis=True, allow_newaxis=True))
    np.testing.assert_array_equal(run_private(lambda x: x[index], a), qa[index])
    np.testing.assert_array_equal(run_private(lambda x: x[-1], a), qa[-1])


@given(st.data())
def test_divide_by_public(data):
    a = data.draw(real_arrays(shapes, bound=2.0 ** 20))
    qa = quantize(a)
    d = data.draw(st.sampled_from([1, 2, 3, 7, -5, 1000, 65536]))
    # integer divisors: exact division of the shares (pond.divide_exact), within two units
    np.testing.assert_allclose(run_private(lambda x: x / d, a), qa / d, rtol=0, atol=2 * ULP * 1.01)
    c = data.draw(st.sampled_from([0.5, 2.5, -3.75, 1000.5, 1e-3]))
    # real divisors: 1/c rounded to 16 significant bits (relative error 2^-17), then one truncation,
    # which fails with probability |x| 2^(32 - 64) per element (fixedpoint.encode_factor): |x| <= 2^8
    # keeps that below 2^-24
    modest = quantize(np.clip(a, -2.0 ** 8, 2.0 ** 8))
    np.testing.assert_allclose(run_private(lambda x: x / c, modest), modest / c, rtol=2.0 ** -16,
                               atol=ULP * 1.01)


def test_concat_stack_pad():
    a = np.arange(6.0).reshape(2, 3)
    b = -np.arange(3.0).reshape(1, 3)
    np.testing.assert_array_equal(run_private(lambda x, y: mp.concat([x, y]), a, b), np.concatenate([a, b]))
    np.testing.assert_array_equal(run_private(lambda x, y: mp.concat([x, y], axis=0), a, b,
                                              private_mask=[True, False]), np.concatenate([a, b]))
    np.testing.assert_array_equal(run_private(lambda x: mp.stack([x, x * 2], axis=1), a),
                                  np.stack([a, a * 2], axis=1))
    np.testing.assert_array_equal(run_private(lambda x: mp.pad(x, ((1, 0), (2, 1))), a), np.pad(a, ((1, 0), (2, 1))))


def test_shape_properties_on_every_party():
    def program():
        x = mp.private(lambda: np.zeros((4, 3, 2)), owner="alice")
        y = (x.T @ np.ones((4, 5)))[0]
        return x.shape, x.ndim, x.size, len(x), y.shape

    results = mp.run(program, parties=["alice"])
    assert set(results.values()) == {((4, 3, 2), 3, 24, 4, (3, 5))}


def test_shape_mismatch_names_both_shapes():
    def program():
        x = mp.private(np.zeros((2, 3)))
        return x + np.zeros((4, 5))

    with pytest.raises(mp.PartyError, match=r"\(2, 3\).*\(4, 5\)"):
        mp.run(program)

    def matmul_program():
        return mp.private(np.zeros((2, 3))) @ mp.private(np.zeros((4, 5)))

    with pytest.raises(mp.PartyError, match=r"\(2, 3\).*\(4, 5\)"):
        mp.run(matmul_program)


def test_division_by_private_points_to_reciprocal():
    def program():
        x = mp.private(np.ones(2))
        return x / x

    with pytest.raises(mp.PartyError, match="mp.reciprocal"):
        mp.run(program)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, LIMIT])
def test_bad_input_is_refused_on_the_owner(bad):
    def program():
        return mp.private(lambda: np.array([1.0, bad]), owner="alice").reveal()

    with pytest.raises(mp.PartyError, match="alice") as info:
        mp.run(program, parties=["alice"], timeout=10)
    assert isinstance(info.value.cause, ValueError)


@settings(max_examples=10)
@given(st.data())
@pytest.mark.processes
def test_a_sample_on_the_processes_backend(data):
    a, b = data.draw(both_ways(data.draw(broadcastable_pair()), bound=PRODUCT_BOUND))
    qa, qb = quantize(a), quantize(b)
    np.testing.assert_allclose(run_private(lambda x, y: x * y + x, a, b, backend="processes"),
                               qa * qb + qa, rtol=0, atol=ULP * 1.01)
