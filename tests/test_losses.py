"""Losses (mpcnp.losses, nn's loss classes) and the inverse square root of Adam, against NumPy.

Values and gradients are compared with float64 NumPy on the same quantized inputs; gradients with
central differences of the float64 loss (helpers.numeric_gradient), which knows nothing of the
closed forms. Tolerances (units u = 2^-16) are conservative restatements of the docstrings: exp
within (40 e^z + 3) u per element (what mp.exp guarantees; the losses' own exp series does better,
2^-20 + a few units), the Chebyshev series for log and 1/s within 2^-20 plus their rounding (t is
rounded to half a unit, times the interval's radius), each truncated product one unit, an exact
division two.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import mpcnp as mp
from mpcnp import nn
from mpcnp.inverse_sqrt import (DEFAULT_REL_ERROR, GUESS_BYTES, REACH, ROUNDING, STEP_BYTES, domain, guess,
                                 plan, pond_alphas, schedule)
from mpcnp.protocols import pond, sharing
from mpcnp.protocols.shared import add_public
from mpcnp.runtime.context import current
from helpers import ULP, assert_within, numeric_gradient, private_gradients, quantize, run_core, run_private
from strategies import grid_arrays

FEW = settings(max_examples=12)
SERIES = 2.0 ** -20


def np_cross_entropy(x, t):
    z = x - x.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - (z * t).sum(axis=1)


def np_bce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


@st.composite
def classification(draw, spread: float = 8.0):
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 10))
    logits = draw(grid_arrays((n, k), -spread, spread))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return logits, labels


def public_ce(logits, target):
    return mp.losses.cross_entropy(mp.public(logits), target)


# ---- cross-entropy ------------------------------------------------------------------------------------
@FEW
@given(classification(), st.sampled_from(["labels", "private labels", "one-hot"]),
       st.sampled_from(["mean", "sum", "none"]), st.sampled_from(["securenn", "pond"]))
def test_cross_entropy_value(case, form, reduction, protocol):
    logits, labels = case
    n, k = logits.shape
    onehot = np.eye(k)[labels]
    target = {"labels": labels, "one-hot": onehot, "private labels": labels.astype(np.float64)}[form]
    mask = [True, form == "private labels"]
    got = run_private(lambda x, t: mp.losses.cross_entropy(x, t, reduction=reduction), logits, target,
                      protocol=protocol, private_mask=mask)
    per_sample = np_cross_entropy(logits, onehot)
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    # per sample: s = sum of K exps within (40 e^z + 3) u each, so log s within (40 + 3K) u; the series
    # 2^-20 + r/2 units (r = (3K - 1)/2 under pond); z * target adds K units
    radius = (3 * k if protocol == "pond" else k) / 2
    bound = SERIES + (45 + 4 * k + radius) * ULP
    assert_within(got, expected, bound * (n if reduction == "sum" else 1) + 2 * ULP)


@FEW
@given(classification(), st.sampled_from(["securenn", "pond"]))
def test_cross_entropy_gradient_is_softmax_minus_onehot(case, protocol):
    logits, labels = case
    n, k = logits.shape
    fn = lambda x: mp.losses.cross_entropy(x, labels)  # noqa: E731
    g = quantize(np.array(1.75))
    [grad] = private_gradients(fn, (logits,), [True], g, protocol=protocol)
    # p within (80 + 3K) p u + 4u + 2^-20 (exp's error through e and s, the series), then / n
    # (exact division: 2u) and times g (one truncation)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    bound = g * (((80 + 3 * k) * p + 4) * ULP + SERIES) / n + 3 * ULP
    assert_within(grad, numeric_gradient(fn, (logits,), 0, g, h=2.0 ** -14), bound)


def test_cross_entropy_is_stable_for_huge_logits_under_securenn():
    logits = np.array([[3000.0, -4000.0, 2990.0], [0.0, 1e6, 0.0]])
    got = run_private(lambda x: mp.losses.cross_entropy(x, np.array([0, 2]), reduction="none"), logits)
    assert_within(got, np_cross_entropy(logits, np.eye(3)[[0, 2]]), 60 * ULP + 1e6 * 0 + SERIES)


def test_one_hot_private_and_public():
    labels = np.array([0.0, 3.0, 1.0, 3.0])
    np.testing.assert_array_equal(run_private(lambda y: mp.losses.one_hot(y, 4), labels), np.eye(4)[[0, 3, 1, 3]])
    np.testing.assert_array_equal(mp.losses.one_hot(labels, 4).value, np.eye(4)[[0, 3, 1, 3]])
    for bad in (np.array([0.0, 4.0]), np.array([0.5]), np.array([-1.0]), np.zeros((2, 2))):
        with pytest.raises(ValueError, match="labels"):
            mp.losses.one_hot(bad, 4)


# ---- binary cross-entropy, squared error -----------------------------------------------------------------
@FEW
@given(st.data(), st.sampled_from(["mean", "sum", "none"]))
def test_binary_cross_entropy(data, reduction):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    x = data.draw(grid_arrays(shape, -30.0, 30.0))
    y = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0])))
    got = run_private(lambda a, b: mp.losses.binary_cross_entropy_with_logits(a, b, reduction=reduction), x, y)
    per = np_bce(x, y)
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    # exact relu and |x|; exp within 43 u (conservatively), the log series 2^-20 + u; x y one unit
    assert_within(got, expected, (SERIES + 48 * ULP) * (per.size if reduction == "sum" else 1) + 2 * ULP)
    fn = lambda a: mp.losses.binary_cross_entropy_with_logits(a, y)  # noqa: E731
    [grad] = private_gradients(fn, (x,), [True], np.array(1.0))
    # (sigmoid within 3.2e-5 + 8u, minus y) / count (2u), then a truncation
    assert_within(grad, numeric_gradient(fn, (x,), 0, np.array(1.0), h=2.0 ** -14),
                  (3.2e-5 + 8 * ULP) / per.size + 3 * ULP)


@FEW
@given(st.data(), st.sampled_from(["mean", "sum", "none"]))
def test_mean_squared_error(data, reduction):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    out, target = data.draw(grid_arrays(shape, -20, 20)), data.draw(grid_arrays(shape, -20, 20))
    per = (out - target) ** 2
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    got = run_private(lambda a, b: mp.losses.mse_loss(a, b, reduction=reduction), out, target)
    assert_within(got, expected, (per.size if reduction == "sum" else 1) * ULP * 1.01 + 2 * ULP)
    fn = lambda a, b: mp.losses.mse_loss(a, b, reduction=reduction)  # noqa: E731
    c = np.array(1.0) if reduction != "none" else quantize(np.ones(shape) * 0.5)
    grads = private_gradients(fn, (out, target), [True, True], c)
    for i, grad in enumerate(grads):      # 2 d / count: an exact division and a truncation
        assert_within(grad, numeric_gradient(fn, (out, target), i, c), 4 * ULP)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"target of shape \(3,\) for output of shape \(2,\)"):
        mp.losses.mse_loss(mp.public(np.zeros(2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"target of shape \(5,\) for logits of shape \(2, 3\)"):
        mp.losses.cross_entropy(mp.public(np.zeros((2, 3))), np.zeros(5))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="max")


def test_loss_objects_call_the_functions():
    x, labels = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]), np.array([1, 2])
    expected = np_cross_entropy(x, np.eye(3)[labels]).mean()
    np.testing.assert_allclose(nn.CrossEntropyLoss()(mp.public(x), labels).value, expected)
    np.testing.assert_allclose(nn.MSELoss(reduction="sum")(mp.public(x), x * 0).value, (x * x).sum())
    assert nn.CrossEntropyLoss.task == "classes" and nn.BCEWithLogitsLoss.task == "binary" and nn.MSELoss.task is None


# ---- Adam's inverse square root --------------------------------------------------------------------------
def securenn_tolerance(expected, rel_error, frac_bits):
    """The documented bound: (rel_error + ROUNDING) relative plus two units (the numerator's shift
    and the last truncation, each within one unit)."""
    return np.abs(expected) * ((rel_error or DEFAULT_REL_ERROR) + ROUNDING) + 2.0 * 2.0 ** -frac_bits


@pytest.mark.parametrize("rel_error", [None, 1e-3])
@pytest.mark.parametrize("frac_bits", [8, 12, 16, 20, 24])
def test_inverse_square_root_over_its_whole_domain_under_securenn(frac_bits, rel_error):
    unit = 2.0 ** -frac_bits
    lo, hi = domain(frac_bits)
    # log-spaced x from one unit to just below the product headroom, and the edges of each level:
    # each level's threshold 2^t, a unit either side, and x in the band (2^t, 2^t REACH) its blurred
    # comparison may move (eight copies each, so that both outcomes occur)
    thresholds = [2.0 ** t for t, _ in schedule(frac_bits)[0]]
    edges = [v for t in thresholds for v in (t - unit, t, t + unit)]
    band = [v for t in thresholds for v in (t * (1 + (REACH - 1) / 2), t * REACH - unit) for _ in range(8)]
    x = quantize(np.concatenate([[unit, 2 * unit, 1 - unit, 1.0, 1 + unit, 15.99, 16.0, 2.0 ** 16, hi - unit],
                                 edges, band, np.exp(np.linspace(np.log(lo), np.log(hi) - 0.01, 150))]), frac_bits)
    x = x[x < hi]                # 2^16 is beyond the domain from frac_bits 24 on
    num = quantize(np.minimum(np.sqrt(x), 2.0 ** 10) * np.linspace(-2, 3, x.size), frac_bits)
    got = run_private(lambda a, b: mp.inverse_sqrt_times(a, b, rel_error=rel_error), x, num, frac_bits=frac_bits)
    expected = num / np.sqrt(x)
    assert_within(got, expected, securenn_tolerance(expected, rel_error, frac_bits))


@FEW
@given(data=st.data(), rel_error=st.sampled_from([None, 1e-3, 1e-2]))
def test_inverse_square_root_on_drawn_values(data, rel_error):
    lo, hi = domain(16)
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6))
    x = data.draw(grid_arrays(shape, lo, hi - ULP, log=True))
    ratio = data.draw(grid_arrays(shape, -4.0, 4.0))
    num = quantize(ratio * np.minimum(np.sqrt(x), 2.0 ** 10))
    got = run_private(lambda a, b: mp.inverse_sqrt_times(a, b, rel_error=rel_error), x, num)
    expected = num / np.sqrt(x)
    assert_within(got, expected, securenn_tolerance(expected, rel_error, 16))


def test_the_plan_meets_its_target_at_least_cost():
    # width 6 (frac_bits 14 to 24): the degree-4 guess is within 0.21 of x^(-1/2) on [1, 68], each
    # step takes an error e to about 0.75 e^2: three steps for 1e-6, two for 1e-3
    for rel_error, steps in ((1e-6, 3), (1e-3, 2)):
        chosen = plan(6, rel_error)
        assert (chosen.degree, len(chosen.steps)) == (4, steps) and chosen.error <= rel_error
        assert chosen.bytes == GUESS_BYTES[4] + steps * STEP_BYTES
    assert guess(6, 4)[1] < 0.21 and guess(6, 3)[1] > 0.27
    # ROUNDING covers the last step's rounding and the normalized x's (20 bits: 2^-21 relative in y)
    from mpcnp.inverse_sqrt import REACH as reach, _step_rounding
    for width in (4, 6):
        for rel_error in (1e-6, 1e-3, 0.1):
            chosen = plan(width, rel_error)
            b_int = chosen.steps[-1][1] if chosen.steps else 16
            assert _step_rounding(b_int / 16, 1 + chosen.error, 2.0 ** width * reach) + 2.0 ** -21 <= ROUNDING
    # every cheaper choice misses the target
    for rel_error in (1e-6, 1e-4, 1e-3, 1e-2, 0.1):
        chosen = plan(6, rel_error)
        for degree in range(1, 5):
            for count in range(7):
                if GUESS_BYTES[degree] + count * STEP_BYTES < chosen.bytes:
                    assert plan_error(6, degree, count) > rel_error


def test_a_value_plus_a_public_one_keeps_its_mask_and_opens_nothing_new():
    # add_public keeps x's mask: the inverse square root's guess's t = x - c reuses x's opening: the product t t costs only the producer's c (8 bytes
    # per element) and is (x - c)^2 exactly (untruncated); a value offset before x is masked has no
    # mask to keep (it gets its own when a product needs one)
    values, c = np.arange(-8, 8) * 1000 + 7, 12345

    def program():
        ctx = current()
        x = mp.private(lambda: values * 2.0 ** -16, owner="server0")._value    # ring integers = values
        early = add_public(ctx, x, np.uint64(3))
        pond.open_masks(ctx, [x])
        t = add_public(ctx, x, np.uint64(-c % 2 ** 64))
        before = mp.stats()["payload_bytes_sent"]
        square = pond.product(ctx, t, t, pond.MUL)
        sent = mp.stats()["payload_bytes_sent"] - before
        return sent, early.mask is None, sharing.reveal(ctx, square.share, square.shape, "server0")

    results = run_core(program)
    assert sum(sent for sent, _, _ in results.values()) == 8 * values.size
    sent, early_unmasked, square = results["server0"]
    assert early_unmasked
    assert square.view(np.int64).tolist() == ((values - c) ** 2).tolist()


def plan_error(width, degree, count):
    """The error ``plan`` computes for a guess of ``degree`` and ``count`` steps (its own loop)."""
    from mpcnp.inverse_sqrt import REACH as reach, _best_step, _step_rounding
    deviation = guess(width, degree)[1]
    lo, hi = 1 - deviation, 1 + deviation
    for _ in range(count):
        _, b_int, low, high = _best_step(lo, hi)
        deviation = max(1 - low, high - 1)
        slack = _step_rounding(b_int / 16, high, 2.0 ** width * reach)
        lo, hi = low - slack, high + slack
    return deviation


@pytest.mark.parametrize("rel_error", [None, 1e-3])
@pytest.mark.parametrize("interval", [(1.0, 2.0 ** 8), (2.0 ** -10, 2.0 ** 20)])
def test_inverse_square_root_on_its_interval_under_pond(interval, rel_error):
    lo, hi = interval
    x = quantize(np.exp(np.linspace(np.log(lo), np.log(hi), 60)))
    num = quantize(np.linspace(-2, 2, x.size) * np.sqrt(x) / np.sqrt(hi) * 64)
    got = run_private(lambda a, b: mp.inverse_sqrt_times(a, b, interval=interval, rel_error=rel_error), x, num,
                      protocol="pond")
    expected = num / np.sqrt(x)
    # Newton's steps stop within max(2^-18, rel_error) relative; t = x y^2 near 1 is rounded to about
    # three units, which moves y by half that relatively; y sqrt(hi) carries a few units, which the
    # numerator times 1 / sqrt(hi) multiplies; the final division two units
    stop = max(2.0 ** -17, rel_error or 0.0)
    assert_within(got, expected, np.abs(expected) * (stop + 3 * ULP) + np.abs(num) / np.sqrt(hi) * 8 * ULP
                  + 3 * ULP)
    assert len(pond_alphas(hi / lo, 16)) <= np.log2(hi / lo) / 2.3 + 5
    assert len(pond_alphas(hi / lo, 16, 1e-3)) < len(pond_alphas(hi / lo, 16))


def test_inverse_square_root_refuses_what_it_cannot_do():
    with pytest.raises(mp.PartyError, match="numerator of shape"):
        run_private(lambda a, b: mp.inverse_sqrt_times(a, b), np.ones(3), np.ones(2))
    with pytest.raises(mp.PartyError, match="needs interval"):
        run_private(lambda a, b: mp.inverse_sqrt_times(a, b, interval=(1.0, 2.0 ** 40)), np.ones(3), np.ones(3),
                    protocol="pond")
    with pytest.raises(TypeError, match="private x"):
        mp.inverse_sqrt_times(mp.public(np.ones(2)), np.ones(2))
    for rel_error in (0.0, 1.0, -1e-3, True, "1e-3"):
        with pytest.raises(mp.PartyError, match="rel_error must be a real in"):
            run_private(lambda a, b: mp.inverse_sqrt_times(a, b, rel_error=rel_error), np.ones(3), np.ones(3))
