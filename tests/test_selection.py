"""where, ==, !=, abs, sign, maximum, minimum, clip, min/argmin and the tensor methods, x ** k, and
the NumPy habits that must fail loudly (bool, ufuncs), against NumPy.

Under securenn every result here is exact (``where`` by SelectShare with the comparison's ring bit,
the rest by DReLU and ReLU), so it is compared by equality on quantized inputs (multiples of 2^-f,
what encoding shares), at the edges of the encodable range included. Pond's versions are compared
with the tolerance its docstrings state; ``x ** k`` with k products truncated within a unit each:
its tolerance is derived below.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpcnp as mp
from mpcnp.runtime.context import barrier, current
from helpers import ULP, quantize, run_private
from strategies import broadcastable_pair, real_arrays


def edges(frac_bits: int) -> np.ndarray:
    """0, +-1 unit, +-2^k over the whole encodable range, and the largest encodable magnitudes."""
    unit = 2.0 ** -frac_bits
    top = np.nextafter(2.0 ** (62 - frac_bits), 0.0)
    powers = 2.0 ** np.arange(-frac_bits, 62 - frac_bits)
    values = np.concatenate([[0.0, unit, -unit, top, -top], powers, -powers, powers + unit, -powers - unit])
    values = quantize(values, frac_bits)
    return np.unique(values[np.abs(values) < 2.0 ** (62 - frac_bits)])


# ---- where -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac_bits", [8, 16, 20, 24])
def test_where_is_exact_at_the_edges_of_the_encodable_range(frac_bits):
    """a and b anywhere in the encodable range, |a - b| up to twice the largest magnitude (far beyond
    the product headroom a truncated product would need): SelectShare is exact."""
    x = edges(frac_bits)
    a, b = x, x[::-1].copy()
    expected = np.where(a > b, a, b)
    got = run_private(lambda s, t: mp.where(s > t, s, t), a, b, frac_bits=frac_bits)
    np.testing.assert_array_equal(got, expected)
    got = run_private(lambda s, t: mp.where(s <= t, s, -t), a, b, frac_bits=frac_bits)
    np.testing.assert_array_equal(got, np.where(a <= b, a, -b))


@settings(max_examples=30)
@given(st.data())
def test_where_matches_numpy_with_broadcasting_and_public_operands(data):
    c_shape, a_shape = data.draw(broadcastable_pair())
    c = quantize(data.draw(real_arrays(c_shape)))
    a = quantize(data.draw(real_arrays(a_shape)))
    b = data.draw(st.sampled_from([0.0, -1.5, 2.0 ** 40]))
    expected = np.where(c >= 0, a, b)
    np.testing.assert_array_equal(run_private(lambda s, t: mp.where(s >= 0, t, b), c, a), expected)
    np.testing.assert_array_equal(run_private(lambda s, t: mp.where(s >= 0, t, b), c, a,
                                              private_mask=[True, False]), expected)
    # a condition kept through views (transpose, indexing) keeps its ring bit
    np.testing.assert_array_equal(run_private(lambda s, t: mp.where((s.T >= 0).T, t, b), c, a), expected)


def test_where_on_a_computed_condition_reads_it_as_at_least_a_half():
    """A condition not straight from a comparison (here the product of two, which exact truncation
    may leave one unit above 1.0) is read as [cond >= 0.5] by one more comparison: still exact."""
    x = np.array([-3.0, -1.0, 0.0, 2.0, 5.0, 2.0 ** 40])
    got = run_private(lambda t: mp.where((t > -2) * (t < 3), t, 2.0 ** 44), x)
    np.testing.assert_array_equal(got, np.where((x > -2) & (x < 3), x, 2.0 ** 44))


def test_where_under_pond_weighs_by_the_condition():
    x = np.array([-3.0, -1.0, 2.0, 5.0])
    got = run_private(lambda t: mp.where(t > 0, t, -t), x, protocol="pond")
    # cond is the step within 5e-6 + 3 units, multiplied by |a - b| = 2 |x| <= 10, plus the truncation
    np.testing.assert_allclose(got, np.abs(x), rtol=0, atol=10 * (5e-6 + 3 * ULP) + ULP)


def test_where_costs_one_bit_product():
    def program():
        x = mp.private(lambda: np.arange(10.0), owner="server0")
        y = mp.private(lambda: -np.arange(10.0), owner="server0")
        cond = x > 4
        barrier(current())   # equal clocks, so that rounds are the operation's depth
        before = mp.stats()
        mp.where(cond, x, y)
        after = mp.stats()
        return after["payload_bytes_sent"] - before["payload_bytes_sent"], after["rounds"] - before["rounds"]

    results = mp.run(program)
    assert sum(b for b, _ in results.values()) == 40 * 10   # SelectShare: one untruncated product
    assert max(r for _, r in results.values()) == 1


# ---- == and != ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac_bits", [8, 16, 24])
def test_equality_is_exact_under_securenn(frac_bits):
    x = edges(frac_bits)
    y = np.concatenate([x[:len(x) // 2], x[len(x) // 2:] + 2.0 ** -frac_bits])
    y = np.where(np.abs(y) < 2.0 ** (62 - frac_bits), y, x)
    np.testing.assert_array_equal(run_private(lambda s, t: s == t, x, y, frac_bits=frac_bits), x == y)
    np.testing.assert_array_equal(run_private(lambda s, t: s != t, x, y, frac_bits=frac_bits), x != y)
    np.testing.assert_array_equal(run_private(lambda s: s == 0.0, x, frac_bits=frac_bits), x == 0)
    np.testing.assert_array_equal(run_private(lambda s: 0.0 != s, x, frac_bits=frac_bits), x != 0)
    # the result keeps its ring bit: where on it is exact
    np.testing.assert_array_equal(run_private(lambda s, t: mp.where(s == t, s, -t), x, y, frac_bits=frac_bits),
                                  np.where(x == y, x, -y))


def test_equality_under_pond_within_its_band():
    x = np.array([0.0, 1.0, -2.0, 3.0, 7.5, -7.5])
    y = np.array([0.0, 1.2, -1.0, 3.0, 0.0, -7.5])   # |x - y| <= 0.25 or >= 0.75
    got = run_private(lambda s, t: s == t, x, y, protocol="pond")
    np.testing.assert_allclose(got, (np.abs(x - y) <= 0.25) * 1.0, rtol=0, atol=2 * (5e-6 + 3 * ULP))


def test_public_equality_and_truth_values():
    assert isinstance(mp.public([1.0, 2.0]) == 1.0, mp.PublicTensor)
    np.testing.assert_array_equal((mp.public([1.0, 2.0]) != 1.0).value, [0.0, 1.0])
    assert bool(mp.public(3.0)) and not bool(mp.public(0.0))
    t = mp.public([1.0])
    assert {t: 1}[t] == 1   # hashing by identity


def test_bool_of_a_private_tensor_says_why_and_what_to_use():
    def program():
        x = mp.private(lambda: np.ones(3), owner="server0")
        if x > 0:
            return "took the branch"

    with pytest.raises(mp.PartyError, match=r"truth value of a private tensor is secret.*mp\.where.*reveal"):
        mp.run(program)


# ---- NumPy ufuncs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ufunc, hint", [(np.exp, "mp.exp"), (np.sqrt, "mp.sqrt"), (np.log, "mp.log"),
                                         (np.abs, "mp.abs"), (np.tanh, "mp.tanh"), (np.sign, "mp.sign"),
                                         (np.cos, "mpcnp functions")])
def test_a_ufunc_on_a_private_tensor_names_the_function_to_use(ufunc, hint):
    def program():
        ufunc(mp.private(lambda: np.ones(3), owner="server0"))

    with pytest.raises(mp.PartyError, match=f"numpy.{ufunc.__name__} cannot compute on a private tensor.*{hint}"):
        mp.run(program)


def test_a_ufunc_method_names_its_own_replacement():
    def program():
        np.maximum.reduce(mp.private(lambda: np.ones(3), owner="server0"))

    with pytest.raises(mp.PartyError, match=r"numpy.maximum.reduce cannot compute on a private tensor.*x\.max\(\)"):
        mp.run(program)


def test_binary_ufuncs_name_their_replacement_and_operators_from_ndarrays_still_work():
    x = np.array([1.0, -2.0, 3.0])

    def program():
        t = mp.private(lambda: x, owner="server0")
        with_arrays = [np.ones(3) + t, np.ones(3) - t, np.full(3, 2.0) * t, np.zeros(3) < t, np.ones(3) == t]
        try:
            np.maximum(t, np.zeros(3))
        except TypeError as exc:
            message = str(exc)
        return [v.reveal() for v in with_arrays], message, np.exp(mp.public(x)).value

    values, message, public_exp = mp.run(program)["server0"]
    np.testing.assert_array_equal(values, [1 + x, 1 - x, 2 * x, (x > 0) * 1.0, (x == 1) * 1.0])
    assert "mp.maximum(a, b)" in message
    np.testing.assert_allclose(public_exp, np.exp(x))   # public tensors compute on their plaintext


# ---- abs, sign, maximum, minimum, clip ------------------------------------------------------------------
@pytest.mark.parametrize("frac_bits", [8, 16, 24])
def test_abs_sign_maximum_minimum_clip_are_exact_under_securenn(frac_bits):
    x = edges(frac_bits)
    y = np.roll(x, 7)
    run = lambda fn, *arrays: run_private(fn, *arrays, frac_bits=frac_bits)  # noqa: E731
    np.testing.assert_array_equal(run(abs, x), np.abs(x))
    np.testing.assert_array_equal(run(mp.abs, x), np.abs(x))
    np.testing.assert_array_equal(run(mp.sign, x), np.sign(x))
    np.testing.assert_array_equal(run(mp.maximum, x, y), np.maximum(x, y))
    np.testing.assert_array_equal(run(mp.minimum, x, y), np.minimum(x, y))
    np.testing.assert_array_equal(run(lambda t: mp.clip(t, -3.5, 2.0 ** 20), x), np.clip(x, -3.5, 2.0 ** 20))
    np.testing.assert_array_equal(run(lambda t: mp.clip(t, None, 0.0), x), np.clip(x, None, 0.0))
    np.testing.assert_array_equal(run(lambda t, s: mp.clip(t, -abs(s), abs(s)), x, y),
                                  np.clip(x, -np.abs(y), np.abs(y)))


def test_pond_versions_within_the_relus_error():
    x = quantize(np.linspace(-7.4, 7.4, 41))   # x, x - 0.5 and x - y inside [-8, 8], the default bound
    y = quantize(np.linspace(0.5, -0.5, 41))
    # twice the ReLU's error at bound B (mpcnp.approx.relu_polynomial): two ReLUs in clip, 2 relu in abs
    tolerance = lambda bound: 2 * (0.0044 * bound + 10 * bound * ULP)  # noqa: E731
    for fn, expected, bound in [(mp.abs, np.abs(x), 8), (lambda t: mp.maximum(t, 0.5), np.maximum(x, 0.5), 8),
                                (lambda t: mp.minimum(t, 0.5), np.minimum(x, 0.5), 8),
                                (lambda t: mp.clip(t, -1.0, 1.0, bound=16), np.clip(x, -1.0, 1.0), 16)]:
        np.testing.assert_allclose(run_private(fn, x, protocol="pond"), expected, rtol=0, atol=tolerance(bound))
    np.testing.assert_allclose(run_private(mp.sign, x[np.abs(x) >= 0.25], protocol="pond"),
                               np.sign(x[np.abs(x) >= 0.25]), rtol=0, atol=2 * (5e-6 + 3 * ULP))
    np.testing.assert_allclose(run_private(mp.maximum, x, y, protocol="pond"), np.maximum(x, y), rtol=0,
                               atol=tolerance(8))


def test_clip_refuses_crossed_or_missing_bounds():
    with pytest.raises(ValueError, match="lo <= hi"):
        mp.clip(mp.public([1.0]), 2.0, 1.0)
    with pytest.raises(ValueError, match="lo or hi"):
        mp.clip(mp.public([1.0]), None, None)


# ---- maxima, minima and their positions ------------------------------------------------------------------
@settings(max_examples=25)
@given(st.data())
def test_reductions_and_their_positions_match_numpy_with_ties(data):
    shape = data.draw(st.sampled_from([(5,), (3, 4), (2, 3, 2), (1,), (4, 1)]))
    x = data.draw(st.sampled_from([lambda s: np.random.default_rng(sum(s)).integers(-3, 4, s) / 4.0,
                                   lambda s: quantize(np.random.default_rng(7).normal(0, 1e6, s))]))(shape)
    axis = data.draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))
    keepdims = data.draw(st.booleans())
    checks = [(lambda t: t.max(axis=axis, keepdims=keepdims), np.max(x, axis=axis, keepdims=keepdims)),
              (lambda t: t.min(axis, keepdims), np.min(x, axis=axis, keepdims=keepdims)),
              (lambda t: mp.min(t, axis=axis, keepdims=keepdims), np.min(x, axis=axis, keepdims=keepdims)),
              (lambda t: t.argmax(axis), np.argmax(x, axis=axis)),
              (lambda t: t.argmin(axis=axis), np.argmin(x, axis=axis)),
              (lambda t: mp.argmin(t, axis), np.argmin(x, axis=axis))]
    for fn, expected in checks:
        np.testing.assert_array_equal(run_private(fn, x), expected)
        assert np.array_equal(fn(mp.public(x)).value, expected)   # public tensors: NumPy itself


def test_reductions_refuse_what_numpy_refuses():
    with pytest.raises(mp.PartyError, match="zero-size"):
        run_private(lambda t: t.min(), np.zeros(0))
    with pytest.raises(TypeError, match="argmin takes one axis"):
        mp.public(np.ones((2, 2))).argmin(axis=(0, 1))


# ---- x ** k -------------------------------------------------------------------------------------------
@settings(max_examples=20)
@given(st.data())
def test_integer_powers_match_numpy(data):
    """x ** k for k = 0..9 on |x| <= 4: floor(log2 k) squarings and popcount(k) - 1 more products,
    each within a unit; an error e in a factor grows to about k |x|^(k-1) e in the power, so the
    tolerance is (k |x|^(k - 1) + 1) * k units (k products at most, each adding a unit)."""
    k = data.draw(st.integers(0, 9))
    x = quantize(data.draw(real_arrays(data.draw(st.sampled_from([(0,), (1,), (6,), (2, 3)])), bound=4.0)))
    tolerance = (k * np.abs(x) ** max(k - 1, 0) + 1) * k * ULP * 1.01
    got = run_private(lambda t: t ** k, x)
    np.testing.assert_allclose(got, x ** k, rtol=0, atol=np.max(tolerance, initial=0.0))
    np.testing.assert_array_equal((mp.public(x) ** k).value, x ** k)


def test_powers_refuse_what_they_cannot_compute():
    def attempt(fn):
        def program():
            fn(mp.private(lambda: np.ones(2), owner="server0"))
        with pytest.raises(mp.PartyError) as info:
            mp.run(program)
        return str(info.value)

    assert "mp.sqrt" in attempt(lambda t: t ** 0.5)
    assert "mp.reciprocal" in attempt(lambda t: t ** -1)
    assert "powers above 64" in attempt(lambda t: t ** 65)
    assert "public integer" in attempt(lambda t: t ** t)
    assert "cannot be an exponent" in attempt(lambda t: 2 ** t)


def test_power_costs_as_documented():
    """x ** 5: two squarings and one more product, 3 sequential products."""
    def program():
        x = mp.private(lambda: np.full(4, 1.5), owner="server0")
        barrier(current())
        before = mp.stats()
        y = x ** 5
        return mp.stats()["rounds"] - before["rounds"], y.reveal()

    rounds, value = mp.run(program, truncation="local")["server0"]
    assert rounds == 3
    np.testing.assert_allclose(value, 1.5 ** 5, atol=20 * ULP)
