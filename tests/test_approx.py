"""Pond's approximations (mpcnp.approx) against NumPy float64, inside and outside their intervals.

The acceptance line: every function is within its stated error on its stated interval. ``CASES``
restates each docstring: the interval and the bound, an approximation part (checked in float64 by
test_polynomials_alone) plus k units 2^-f for the fixed-point part, with k 1.3 to 1.5 times the largest
value measured on dense grids at frac_bits 12, 16 and 20. Inputs are multiples of 2^-f (what encoding
shares), so the reference is the exact function of the shared value. The private tests truncate
exactly (tests/helpers.run_private): local truncation's rare failures are tested in test_pond.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import mpcnp as mp
from mpcnp import approx
from mpcnp.protocols import polynomial
from helpers import run_private
from strategies import grid_arrays, shapes


def exact_sigmoid(v):
    return 0.5 + 0.5 * np.tanh(np.asarray(v) / 2)  # no overflow for large |v|


@dataclass(frozen=True)
class Case:
    fn: Callable
    exact: Callable
    lo: float
    hi: float
    bound: Callable  # (exact value, x, unit) -> the stated max abs error
    log: bool = False
    rounds: int = 0
    products: int = 0  # elementwise products per input element (Pond)


CASES = {
    "sigmoid": Case(approx.sigmoid, exact_sigmoid, -10, 10, lambda y, x, u: 3.2e-5 + 8 * u,
                    rounds=5, products=19),
    "tanh": Case(approx.tanh, np.tanh, -5, 5, lambda y, x, u: 6.4e-5 + 14 * u,
                 rounds=5, products=19),
    "relu": Case(approx.relu_polynomial, lambda v: np.maximum(v, 0), -8, 8, lambda y, x, u: 0.035 + 80 * u,
                 rounds=5, products=16),
    # outside the band |x| < 0.25 only; the band is test_step_inside_its_band's
    "step": Case(approx.step, lambda v: (v > 0) * 1.0, -16, 16,
                 lambda y, x, u: np.where(np.abs(x) >= 0.25, 5e-6 + 3 * u, np.inf), rounds=12, products=46),
    "exp": Case(approx.exp, np.exp, -16, 6, lambda y, x, u: (40 * y + 3) * u,
                rounds=6, products=10),
    "reciprocal": Case(approx.reciprocal, lambda v: 1 / v, 0.05, 100, lambda y, x, u: 2.5 * (1 + y) * u,
                       log=True, rounds=16, products=16),
}
CLAMPED = ("sigmoid", "tanh", "exp")  # clamped exactly under securenn: accurate everywhere


def grid(lo, hi, frac_bits, count=20001, log=False):
    """About ``count`` multiples of 2^-frac_bits spread over [lo, hi], both ends included."""
    points = np.geomspace(lo, hi, count) if log else np.linspace(lo, hi, count)
    units = np.clip(np.rint(points * 2.0 ** frac_bits), np.ceil(lo * 2.0 ** frac_bits),
                    np.floor(hi * 2.0 ** frac_bits))
    return np.unique(units) * 2.0 ** -frac_bits


def check(case: Case, x, got, frac_bits):
    exact = case.exact(x)
    error = np.abs(got - exact)
    bound = case.bound(exact, x, 2.0 ** -frac_bits)
    worst = np.argmax(error - bound) if error.size else None
    assert np.all(error <= bound), f"x={x.flat[worst]}: error {error.flat[worst]:.3g} > bound"


# ---- inside the intervals ---------------------------------------------------------------------------
@pytest.mark.parametrize("frac_bits", [12, 16])
@pytest.mark.parametrize("name", list(CASES))
def test_dense_grid_within_stated_error(name, frac_bits):
    case = CASES[name]
    x = grid(case.lo, case.hi, frac_bits, log=case.log)
    check(case, x, run_private(case.fn, x, protocol="pond", frac_bits=frac_bits), frac_bits)


@settings(max_examples=40)
@given(data=st.data(), protocol=st.sampled_from(["pond", "securenn"]))
@pytest.mark.parametrize("name", list(CASES))
def test_any_shape_inside_the_interval(name, data, protocol):
    case = CASES[name]
    x = data.draw(grid_arrays(shapes, case.lo, case.hi, log=case.log))
    got = run_private(case.fn, x, protocol=protocol)
    assert got.shape == x.shape
    check(case, x, got, 16)


def test_step_inside_its_band():
    x = grid(-0.25, 0.25, 16, count=4001)
    got = run_private(approx.step, x, protocol="pond")
    unit = 2.0 ** -16
    assert np.all((got >= -unit) & (got <= 1 + unit))
    assert abs(got[x == 0][0] - 0.5) < 0.05
    assert got[0] < 1e-3 and got[-1] > 1 - 1e-3


@pytest.mark.parametrize("name", CLAMPED)
def test_securenn_clamps_to_accurate_everywhere(name):
    case = CASES[name]
    far = np.array([-1e6, -3e4, -100.0, 100.0, 3e4, 1e6])
    x = np.concatenate([grid(-3 * case.lo - 20, 3 * case.hi, 16, count=4001), far])
    if name == "exp":
        x = x[x <= case.hi]     # clamped from below only
    exact = case.exact(x)
    # outside, the clamped value is the function at the end of the interval
    bound = case.bound(exact, x, 2.0 ** -16) + np.abs(exact - case.exact(np.clip(x, case.lo, case.hi)))
    error = np.abs(run_private(case.fn, x, protocol="securenn") - exact)
    assert np.all(error <= bound)
    assert error.max() < {"sigmoid": 1.2e-4, "tanh": 2.5e-4, "exp": 2e-4}[name]


@pytest.mark.parametrize("interval", [(1.0, 10.0), (0.5, 1000.0), (2.0, 3.0)])
def test_reciprocal_on_other_intervals(interval):
    x = grid(*interval, 16, count=4001, log=True)
    got = run_private(lambda t: approx.reciprocal(t, interval), x, protocol="pond")
    check(CASES["reciprocal"], x, got, 16)


def test_reciprocal_refuses_bad_intervals():
    for interval in [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)]:
        with pytest.raises(ValueError, match="0 < lo < hi"):
            approx.reciprocal(np.ones(2), interval)


# ---- softmax ------------------------------------------------------------------------------------------
def softmax_bound(p, unit):
    return (30 * p + 3) * unit


@st.composite
def softmax_inputs(draw, spread):
    """(x, axis): rows along ``axis`` within ``spread`` of each other, at any common offset."""
    x = draw(grid_arrays(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6), 0.0, spread))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    offset = draw(st.integers(-50, 50))
    return x + offset, axis


@settings(max_examples=40)
@given(data=st.data(), protocol=st.sampled_from(["pond", "securenn"]))
def test_softmax_within_stated_error(data, protocol):
    # pond needs x - mean(x) in [-16, 6]: a spread of 6 guarantees it; securenn takes any spread
    x, axis = data.draw(softmax_inputs(6.0 if protocol == "pond" else 200.0))
    got = run_private(lambda t: approx.softmax(t, axis=axis), x, protocol=protocol)
    p = approx.softmax(x, axis=axis).value
    assert got.shape == x.shape
    assert np.all(np.abs(got - p) <= softmax_bound(p, 2.0 ** -16))


@pytest.mark.parametrize("frac_bits", [12, 16])
def test_softmax_dense(frac_bits):
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 6, (3000, 4)) + rng.integers(-50, 50, (3000, 1))
    x = np.rint(x * 2.0 ** frac_bits) * 2.0 ** -frac_bits
    got = run_private(lambda t: approx.softmax(t, axis=1), x, protocol="pond", frac_bits=frac_bits)
    p = approx.softmax(x, axis=1).value
    assert np.all(np.abs(got - p) <= softmax_bound(p, 2.0 ** -frac_bits))


# ---- outside the intervals: as documented, and nothing raises -----------------------------------------
def errors(fn, x, exact, protocol="pond"):
    return np.abs(run_private(fn, np.asarray(x, dtype=np.float64), protocol=protocol) - exact(np.asarray(x)))


def test_polynomials_diverge_just_outside_under_pond():
    near = errors(approx.sigmoid, [-10.1, 10.1, -10.5, 10.5], exact_sigmoid)
    assert np.all(near[:2] < 2e-3) and np.all(near[2:] > 0.05)
    near = errors(approx.tanh, [-5.05, 5.05, -5.25, 5.25], np.tanh)
    assert np.all(near[:2] < 4e-3) and np.all(near[2:] > 0.1)
    near = errors(approx.relu_polynomial, [-8.05, 8.05, -8.25, 8.25], lambda v: np.maximum(v, 0))
    assert np.all(near[:2] > 0.1) and np.all(near[2:] > 10)


@pytest.mark.parametrize("frac_bits", [12, 16])
@pytest.mark.parametrize("bound", [1, 21, 128])
def test_relu_on_other_intervals(bound, frac_bits):
    """relu(x, bound=B) = (x + B p(x / B)) / 2: accurate on [-B, B] within 0.0044 B + 10 B units,
    and diverging just outside like the default B = 8."""
    x = grid(-bound, bound, frac_bits, count=4001)
    got = run_private(lambda t: approx.relu_polynomial(t, bound), x, protocol="pond", frac_bits=frac_bits)
    error = np.abs(got - np.maximum(x, 0))
    assert error.max() <= 0.0044 * bound + 10 * bound * 2.0 ** -frac_bits
    assert error.max() > 0.004 * bound   # the polynomial's own error, not noise: the scaling is real
    outside = errors(lambda t: approx.relu_polynomial(t, bound), [-1.05 * bound, 1.05 * bound],
                     lambda v: np.maximum(v, 0))
    assert np.all(outside > 0.1 * bound)


def test_relu_refuses_a_bad_bound():
    for bound in (0, 2.5, -8, True, 2 ** 21):
        with pytest.raises(ValueError, match="relu's bound"):
            approx.relu_polynomial(np.ones(2), bound)


def test_exp_just_below_its_interval_stays_near_zero():
    x = grid(-24, -16, 16, count=2001)
    assert np.all(errors(approx.exp, x, np.exp) <= 2 * 2.0 ** -16)


def test_reciprocal_below_its_interval_falls_short():
    x = np.rint(np.array([0.04, 0.03, 0.01]) * 2 ** 16) * 2.0 ** -16
    got = run_private(approx.reciprocal, x, protocol="pond")
    assert np.all((got > 0) & (got < 1 / x))
    relative = 1 - got * x
    assert relative[0] < 1e-3 and relative[1] > 1e-3 and relative[2] > 0.1


@pytest.mark.parametrize("protocol", ["pond", "securenn"])
def test_far_outside_gives_finite_values_without_error(protocol):
    far = np.array([-1e6, -1000.0, -50.0, -17.0, 17.0, 50.0, 1000.0, 1e6])
    for case in CASES.values():
        x = np.abs(far) if case.log else far
        assert np.all(np.isfinite(run_private(case.fn, x, protocol=protocol)))
    wide = np.array([[0.0, 30.0, -30.0], [1e4, -1e4, 0.0]])
    assert np.all(np.isfinite(run_private(approx.softmax, wide, protocol=protocol)))


# ---- cost, public inputs, the polynomials themselves ----------------------------------------------
def cost(fn, x, protocol="pond"):
    """(rounds, elementwise products per input element) of fn on private x: rounds as the growth of
    the largest Lamport clock; products from the producer's traffic, which under Pond is exactly one
    triple share c1 (8 bytes) per product element."""
    def program():
        t = mp.private(lambda: x, owner="alice")
        t.reveal()                      # every party in step
        before = mp.stats()
        out = fn(t)
        return before, mp.stats(), out.shape

    results = mp.run(program, parties=["alice"], protocol=protocol)
    rounds = max(r[1]["rounds"] for r in results.values()) - max(r[0]["rounds"] for r in results.values())
    before, after, _ = results["producer"]
    return rounds, (after["payload_bytes_sent"] - before["payload_bytes_sent"]) / (8 * x.size)


@pytest.mark.parametrize("name", list(CASES))
def test_rounds_and_products_as_documented(name):
    case = CASES[name]
    x = grid(case.lo, case.hi, 16, count=64, log=case.log)
    assert cost(case.fn, x) == (case.rounds, case.products)
    if name in CLAMPED:
        # under securenn the polynomial runs on the exactly clamped input: its rounds plus the clamp's
        hi = None if name == "exp" else case.hi
        clamp_rounds = cost(lambda t: approx.clamp(t, int(case.lo), None if hi is None else int(hi)), x,
                            protocol="securenn")[0]
        assert cost(case.fn, x, protocol="securenn")[0] == case.rounds + clamp_rounds


def test_public_inputs_give_exact_public_results():
    x = np.linspace(-3, 3, 13)
    for case in CASES.values():
        v = np.abs(x) + 0.5 if case.log else x
        for operand in (v, mp.public(v)):
            got = case.fn(operand)
            assert isinstance(got, mp.PublicTensor)
            np.testing.assert_allclose(got.value, case.exact(v), rtol=1e-15)
    got = approx.softmax(mp.public(x[:12].reshape(3, 4)), axis=0)
    np.testing.assert_allclose(got.value.sum(axis=0), 1.0)


def test_polynomials_alone():
    # float64 only: the approximation part of each stated bound
    x = np.linspace(-10, 10, 400001)
    assert np.abs(approx.SIGMOID.reference(x) - exact_sigmoid(x)).max() < 3.21e-5
    x = np.linspace(-5, 5, 400001)
    assert np.abs(approx.TANH.reference(x) - np.tanh(x)).max() < 6.41e-5
    x = np.linspace(-8, 8, 400001)
    error = approx.ABS.reference(x) - np.abs(x)
    assert error.max() < 8 * 0.0087506 and -error.min() < 8 * 0.0087506   # 0.035 for relu = (x + |x|) / 2
    assert error.max() > 8 * 0.00875 and -error.min() > 8 * 0.00875      # equioscillation: minimax
    x = np.linspace(-16, 6, 400001)
    assert np.abs(approx.EXP_ROOT.reference(x) ** 8 / np.exp(x) - 1).max() < 5.5e-6
    x = np.linspace(-16, 16, 400001)
    polish = np.polynomial.chebyshev.chebval
    step = polish(polish(polynomial.STEP_FIRST.reference(x), polynomial._POLISH), polynomial._POLISH_TO_STEP)
    outside = np.abs(x) >= 0.25
    assert np.abs(step - (x > 0))[outside].max() < 5e-6
    assert step.min() > -1e-6 and step.max() < 1 + 1e-6
    assert len(approx.newton_steps(0.05, 100, 16)) == 1 + 8    # one local step, 8 private ones
