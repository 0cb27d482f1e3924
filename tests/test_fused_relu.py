"""mp.dense_relu and mp.conv2d_relu (a product's truncation fused with the ReLU after it) against NumPy,
their gradients, the round they save in nn.Sequential, and their fallbacks (pond, local truncation).

Inputs are quantized (``quantize``) so that the ring holds them exactly: a product of two private
values is then exact before its truncation, which is within one unit (ULP) of the real product, and
ReLU keeps that (tolerance 1 unit). A public real weight adds its rounding to f significant bits
(``public_factor_tolerance``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpcnp as mp
from mpcnp import nn, validation
from helpers import (ULP, assert_within, private_gradients, protocol_cost, public_factor_tolerance, quantize,
                     run_private)
from strategies import PRODUCT_BOUND, conv_cases, real_arrays

HEADROOM = 2.0 ** (62 - 2 * 16)       # a product of two private values must stay below it (frac_bits 16)


def dense(x, w, b):
    return x @ w + (0.0 if b is None else b)


def conv(x, w, stride, padding):
    return mp.conv2d(mp.public(x), mp.public(w), stride=stride, padding=padding).value


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_dense_relu_matches_numpy(data):
    m, k, n = (data.draw(st.integers(0, 4)) for _ in range(3))
    x = quantize(data.draw(real_arrays((m, k), bound=PRODUCT_BOUND)))
    w = quantize(data.draw(real_arrays((k, n), bound=PRODUCT_BOUND)))
    b = quantize(data.draw(real_arrays((n,), bound=PRODUCT_BOUND)))
    private_w, with_bias = data.draw(st.booleans()), data.draw(st.booleans())
    bound = data.draw(st.sampled_from([None, 2.0 ** 20]))  # above every pre-activation drawn here
    arrays, mask = ([x, w], [True, private_w])
    if with_bias:
        arrays, mask = arrays + [b], mask + [data.draw(st.booleans())]
    got = run_private(lambda *t: mp.dense_relu(*t, bound=bound), *arrays, private_mask=mask)
    expected = np.maximum(dense(x, w, b if with_bias else None), 0.0)
    tolerance = ULP * 1.01 if private_w else public_factor_tolerance(x, w, np.matmul)
    assert_within(got, expected, tolerance)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_dense_relu_at_the_edge_of_the_headroom(sign):
    # pre-activations just inside |x w| < 2^(62 - 2f), and a unit either side of zero
    x = np.array([[2.0 ** 14, ULP, -ULP, 1.0]])
    w = quantize(np.array([[sign * (2.0 ** 15 - 1), 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -ULP]]))
    expected = np.maximum(x @ w, 0.0)
    assert np.abs(x @ w).max() < HEADROOM
    for backend in ("threads", "processes"):
        assert_within(run_private(mp.dense_relu, x, w, backend=backend), expected, ULP * 1.01)


@settings(max_examples=25, deadline=None)
@given(case=conv_cases(), data=st.data())
def test_conv2d_relu_matches_numpy(case, data):
    shape, out_channels, kernel, stride, padding = case
    if not isinstance(padding, (int, str)) and isinstance(padding[0], tuple):
        padding = 1      # mp.conv2d takes even paddings (nn.Conv2d pads unevenly with mp.pad first)
    x = quantize(data.draw(real_arrays(shape, bound=4.0)))
    w = quantize(data.draw(real_arrays((out_channels, shape[1]) + kernel, bound=4.0)))
    b = quantize(data.draw(real_arrays((out_channels,), bound=4.0)))
    got = run_private(lambda t, u, c: mp.conv2d_relu(t, u, c, stride=stride, padding=padding), x, w, b)
    expected = np.maximum(conv(x, w, stride, padding) + b.reshape(-1, 1, 1), 0.0)
    assert_within(got, expected, ULP * 1.01)


@pytest.mark.parametrize("protocol,truncation", [("securenn", "local"), ("pond", "exact"), ("pond", "local")])
def test_where_nothing_is_fused_the_result_is_the_unfused_one(protocol, truncation):
    # securenn with local truncation: the truncation costs no round, so relu(x @ w + b) as written;
    # pond: its polynomial ReLU on [-8, 8] (within 0.0044 * 8 + 10 * 8 units, as mp.relu's)
    rng = np.random.default_rng(7)
    x, w, b = (quantize(rng.uniform(-1, 1, shape)) for shape in ((6, 5), (5, 4), (4,)))
    expected = np.maximum(dense(x, w, b), 0.0)
    got = run_private(mp.dense_relu, x, w, b, protocol=protocol, truncation=truncation)
    tolerance = ULP * 1.01 if protocol == "securenn" else 0.0044 * 8 + 90 * ULP
    assert_within(got, expected, tolerance)


def test_a_bounded_dense_relu_is_exact_inside_and_names_a_bad_bound():
    x = quantize(np.array([[3.0, -2.5], [0.5, ULP]]))
    w = quantize(np.array([[1.0, -1.0], [2.0, 0.5]]))
    assert_within(run_private(lambda t, u: mp.dense_relu(t, u, bound=64), x, w), np.maximum(x @ w, 0), ULP * 1.01)
    with pytest.raises(Exception, match="bound"):
        run_private(lambda t, u: mp.dense_relu(t, u, bound=-1), x, w)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_dense_relu_gradients_match_numpy(data):
    m, k, n = (data.draw(st.integers(1, 3)) for _ in range(3))
    x, w, b = (quantize(data.draw(real_arrays(s, bound=2.0))) for s in ((m, k), (k, n), (n,)))
    c = quantize(data.draw(real_arrays((m, n), bound=2.0)))
    pre = dense(x, w, b)
    x[:, 0] += np.where(np.abs(pre).min(axis=1) < 4 * ULP, 1.0, 0.0) if k else 0.0   # off the kink
    pre = dense(x, w, b)
    gz = c * (pre >= 0)
    gx, gw, gb = private_gradients(mp.dense_relu, [x, w, b], [True, True, True], c)
    # each gradient is a product of private values: a unit per truncation, summed over k, m or n terms
    assert_within(gx, gz @ w.T, ULP * (k + 2))
    assert_within(gw, x.T @ gz, ULP * (m + 2))
    assert_within(gb, gz.sum(axis=0), ULP * (m + 2))


def test_conv2d_relu_gradients_equal_the_unfused_ones():
    rng = np.random.default_rng(3)
    x, w, b = (quantize(rng.uniform(-1, 1, s)) for s in ((2, 2, 5, 5), (3, 2, 3, 3), (3,)))
    c = quantize(rng.uniform(-1, 1, (2, 3, 5, 5)))

    def unfused(t, u, v):
        return mp.relu(mp.conv2d(t, u, padding=1) + v.reshape(-1, 1, 1))

    fused = private_gradients(lambda t, u, v: mp.conv2d_relu(t, u, v, padding=1), [x, w, b], [True] * 3, c)
    plain = private_gradients(unfused, [x, w, b], [True] * 3, c)
    for got, ref in zip(fused, plain):
        assert_within(got, ref, ULP * 40)     # two runs' truncations, summed over up to 50 terms


def test_sequential_saves_a_round_per_dense_and_relu_and_agrees_with_the_layers():
    model = nn.Sequential(nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 4), nn.ReLU(), nn.Dense(4, 2))
    rng = np.random.default_rng(11)
    model.load_state_dict({name: quantize(rng.uniform(-1, 1, shape)) for name, shape in model.parameter_shapes().items()})
    x = quantize(rng.uniform(-1, 1, (3, 6)))
    results = {}

    def setup(layered: bool):
        def prepare(ctx):
            private, t = model.private("server0"), mp.private(lambda: x, owner="server0")

            def call():
                y = t
                for layer in (private.layers if layered else [private]):
                    y = layer(y)
                results[(layered, ctx.name)] = y.reveal()
            return call
        return prepare

    _, fused_rounds = protocol_cost(setup(False), 1)
    _, layered_rounds = protocol_cost(setup(True), 1)
    assert fused_rounds == layered_rounds - 2
    fused, layered = results[(False, "server0")], results[(True, "server0")]
    assert_within(fused, model.forward_plain(x), 8 * ULP)
    assert_within(fused, layered, 8 * ULP)


def _validated(fn, **kwargs):
    """mp.run(fn, validate=True) with its warning silenced: the result, or the ValidationError raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", validation.ValidationWarning)
        try:
            return mp.run(fn, validate=True, parties=["alice"], **kwargs)
        except mp.PartyError as exc:
            assert isinstance(exc.cause, validation.ValidationError), exc
            return exc.cause


@pytest.mark.parametrize("protocol", ["securenn", "pond"])
def test_validation_checks_the_fused_ops_and_passes_them_inside_their_ranges(protocol):
    x, w = np.array([[0.5, -1.5], [2.0, 1.0]]), np.array([[1.0, -0.5, 2.0], [0.5, 1.0, -1.0]])
    image, kernel = np.arange(16.0).reshape(1, 1, 4, 4) / 16, np.ones((2, 1, 3, 3)) / 9

    def program():
        t, u = mp.private(lambda: x, owner="alice"), mp.private(lambda: w, owner="alice")
        c = mp.private(lambda: image, owner="alice")
        return (mp.dense_relu(t, u, np.array([0.5, 0.0, -1.0])).reveal(), mp.dense_relu(t, w).reveal(),
                mp.conv2d_relu(c, kernel, np.array([0.0, -0.25]), padding=1).reveal())

    assert isinstance(_validated(program, protocol=protocol), dict)


def test_validation_names_a_fused_product_beyond_the_headroom_and_a_broken_bound():
    def beyond():
        t = mp.private(lambda: np.array([[4.0e4, 1.0]]), owner="alice")
        return mp.dense_relu(t, mp.private(lambda: np.array([[4.0e4], [1.0]]), owner="alice")).reveal()

    def broken():
        t = mp.private(lambda: np.array([[3.0, -1.0]]), owner="alice")
        return mp.dense_relu(t, np.array([[2.0], [0.0]]), bound=6).reveal()   # 3 * 2 = 6 breaks |x| < 6

    message = str(_validated(beyond))
    assert message.startswith("dense_relu at ") and "beyond the ring's headroom" in message
    message = str(_validated(broken))
    assert message.startswith("dense_relu at ") and "breaks the promised bound |x| < 6" in message
