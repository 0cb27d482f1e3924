"""The ``bound`` of mp.relu, mp.maxpool2d and their relatives under securenn, and of nn.ReLU,
nn.MaxPool2d and nn.calibrate: a promise on the inputs that makes the comparisons cheaper.

Inside the promise every result must equal NumPy's exactly (the bounded comparisons are exact there,
the ReLU's product is exact: tolerance 0); the first values beyond the power of two above the bound
are wrong in the documented way; bad bounds are refused by name; and the promise does cut the bytes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import mpcnp as mp
from mpcnp import nn
from mpcnp.protocols.families import bound_bits
from helpers import CLIENT, FRAC_BITS, ULP, assert_within, error_bound, quantize, random_state, run_model, run_private
from strategies import real_arrays

BOUNDS = [ULP * 3, 0.5, 3.0, 64.0, 1000.5, 2.0 ** 20]


def inside(bound: float, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)):
    """Encodable reals with |x| < bound once quantized, the largest bound - 1 unit (real_arrays also
    draws +-1, clipped here for bounds below 1)."""
    top = quantize(np.float64(bound)) - ULP
    return real_arrays(shape, bound=top).map(lambda a: np.clip(quantize(a), -top, top))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_bounded_relu_family_matches_numpy_inside_the_bound(data):
    bound = data.draw(st.sampled_from(BOUNDS))
    x = quantize(data.draw(inside(bound)))
    assert np.all(np.abs(x) < bound)
    got = run_private(lambda t: mp.stack([mp.relu(t, bound=bound), mp.abs(t, bound=bound),
                                          mp.maximum(t, 0.0, bound=bound), mp.minimum(t, 0.0, bound=bound)]), x)
    np.testing.assert_array_equal(got, np.stack([np.maximum(x, 0), np.abs(x), np.maximum(x, 0), np.minimum(x, 0)]))


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_bounded_maxpool_matches_numpy_inside_the_bound(data):
    bound = data.draw(st.sampled_from(BOUNDS[1:]))
    n, c, h, w = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)),
                  data.draw(st.integers(2, 5)), data.draw(st.integers(2, 5)))
    x = data.draw(inside(bound, (n, c, h, w)))
    x[..., 0, 0] = x[..., 0, 1]            # a tie in the first window: the first maximal one wins
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(2, 3))[:, :, ::2, ::2]
    np.testing.assert_array_equal(run_private(lambda t: mp.maxpool2d(t, 2, bound=bound), x),
                                  windows.max(axis=(-2, -1)))


@pytest.mark.parametrize("bound", [0.5, 3.0, 64.0, 1000.5])
def test_relu_is_exact_up_to_the_power_of_two_above_the_bound_and_wrong_just_beyond(bound):
    # k = bound_bits: exact for |x| < 2^(k-1-f) (the power of two above the bound), and there the
    # comparison reads bit k-1 of x + 2^(k-1): x = 2^(k-1-f) counts as negative, x = -2^(k-1-f) - 1 unit
    # as positive, whatever the masks (documented: silently wrong beyond)
    edge = 2.0 ** (bound_bits(bound, FRAC_BITS) - 1 - FRAC_BITS)
    assert bound < edge <= 2 * bound
    x = np.array([edge - ULP, -edge, -edge + ULP, bound, -bound, 0.0, edge, -edge - ULP])
    got = run_private(lambda t: mp.relu(t, bound=bound), x)
    np.testing.assert_array_equal(got[:6], np.maximum(x[:6], 0))
    np.testing.assert_array_equal(got[6:], [0.0, -edge - ULP])
    np.testing.assert_array_equal(run_private(mp.relu, x), np.maximum(x, 0))    # no bound: exact


def test_a_bound_cuts_the_bytes_of_relu_and_maxpool():
    x = np.random.default_rng(3).uniform(-4, 4, (1, 2, 8, 8))

    def program(bound):
        def run():
            t = mp.private(lambda: x, owner="alice")
            before = mp.stats()["payload_bytes_sent"]
            mp.relu(t, bound=bound)
            middle = mp.stats()["payload_bytes_sent"]
            mp.maxpool2d(t, 2, bound=bound)
            return middle - before, mp.stats()["payload_bytes_sent"] - middle
        results = mp.run(run, parties=["alice"])
        return np.sum([results[p] for p in ("server0", "server1", "producer")], axis=0) / [x.size, x.size / 4 * 3]

    exact, bounded = program(None), program(4.0)
    k = bound_bits(4.0, FRAC_BITS)                          # 19: 3k + 29 = 86 bytes per ReLU
    np.testing.assert_allclose(exact, [221, 221])
    np.testing.assert_allclose(bounded, [3 * k + 29, 3 * bound_bits(8.0, FRAC_BITS) + 29])


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "8", True])
def test_bad_bounds_are_refused_by_name(bad):
    x = np.ones((1, 1, 2, 2))
    with pytest.raises(mp.PartyError, match="relu's bound must be a positive finite number"):
        run_private(lambda t: mp.relu(t, bound=bad), x)
    with pytest.raises(mp.PartyError, match="maxpool2d's bound must be a positive finite number"):
        run_private(lambda t: mp.maxpool2d(t, 2, bound=bad), x)
    with pytest.raises(ValueError, match="MaxPool2d bound must be None or a positive finite number"):
        nn.MaxPool2d(2, bound=bad)
    with pytest.raises(ValueError, match="ReLU bound must be None or an integer"):
        nn.ReLU(bound=bad if bad != 0 else 0.5)


def small_cnn() -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dense(12, 8),
                          nn.ReLU(), nn.Dense(8, 3))
    return model.load_state_dict(random_state(model, 5))


def test_calibrate_sets_securenn_bounds_that_keep_the_model_exact():
    model = small_cnn()
    assert model[1].bound is None and model[2].bound is None      # the default: exact everywhere
    rng = np.random.default_rng(6)
    owner_data, client_data = rng.normal(size=(64, 1, 6, 6)), quantize(rng.normal(size=(8, 1, 6, 6)) * 0.8)
    exact = run_model(model, client_data)[CLIENT]
    report = nn.calibrate(model, owner_data, margin=1.5)
    windows = model[2].windows(model[0].forward_plain(owner_data))
    assert model[2].bound == math.ceil(1.5 * np.abs(windows).max()) == report.pool_bounds["2"]
    assert model[1].bound is not None and model[5].bound is not None
    assert f"bound {model[2].bound:g}" in str(report)
    assert "bound=" in repr(model[2]) and "bound=" in repr(model[1])
    # the client's data stays inside the calibrated bounds: the bounded model gives the same logits
    assert np.abs(model[0].forward_plain(client_data)).max() < min(model[1].bound, model[2].bound)
    # (both runs within the plaintext's error bound: exact truncation rounds each product randomly)
    bounded, expected, tolerance = run_model(model, client_data)[CLIENT], model.forward_plain(client_data), \
        error_bound(model, client_data)
    assert_within(exact, expected, tolerance)
    assert_within(bounded, expected, tolerance)


def test_a_scaled_max_pool_keeps_its_promise():
    # pond_scale 8 divides the inputs (one truncation, up to a unit off) before the bounded
    # comparisons, whose promise is the bound over 8 plus that unit: values next to the bound, of both
    # signs, still pick the right maximum
    pool = nn.MaxPool2d(2, bound=4.0)
    pool.pond_scale = 8
    x = quantize(np.array([[[[4.0 - ULP, -4.0 + ULP], [0.5, -(4.0 - ULP)]]]]))
    got = run_private(lambda t: pool(t), x)
    assert_within(got, np.array([[[[4.0 - ULP]]]]), 8 * ULP)    # the scaling back multiplies a unit by 8
