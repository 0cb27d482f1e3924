"""The gradient machinery (mpcnp.autograd): accumulation, no_grad and detach, the mistakes it names,
in-place updates, what backward costs (ReLU's and max pooling's kept bits: no second comparison),
a small network against handwritten NumPy backpropagation, custom gradients, unbiased rounding.
Tolerances as in test_autograd.py: units u = 2^-16, one per truncated product."""
from __future__ import annotations

import numpy as np
import pytest

import mpcnp as mp
from helpers import ULP, assert_within, private_gradients, quantize


# ---- the machinery --------------------------------------------------------------------------------------
def run(program, **kwargs):
    return mp.run(program, parties=["alice"], truncation="exact", **kwargs)


def test_grad_accumulates_until_reset_and_leaves_only():
    def program():
        x = mp.private(lambda: np.array([1.0, 2.0]), owner="alice")
        x.requires_grad = True
        y = x * 3.0
        (y * y).sum().backward()                     # 18 x
        first = x.grad.reveal()
        (x * 2.0).sum().backward()                   # + 2
        second = x.grad.reveal()
        x.grad = None
        (x * 1.0).sum().backward()
        return first, second, x.grad.reveal(), y.grad, y.requires_grad, x.grad_fn

    first, second, third, y_grad, y_requires, x_fn = run(program)["alice"]
    np.testing.assert_allclose(first, [18.0, 36.0], atol=2 * ULP)
    np.testing.assert_allclose(second, [20.0, 38.0], atol=2 * ULP)
    np.testing.assert_array_equal(third, [1.0, 1.0])
    assert y_grad is None and y_requires and x_fn is None


def test_no_grad_records_nothing_and_detach_cuts_the_graph():
    def program():
        w = mp.private(lambda: np.ones(2), owner="alice")
        w.requires_grad = True
        with mp.no_grad():
            inside = w * 2.0
        cut = (w * 2.0).detach()
        return inside.requires_grad, inside.grad_fn, cut.requires_grad, (w * 2.0).requires_grad

    assert run(program)["alice"] == (False, None, False, True)


@pytest.mark.parametrize("mistake, error", [
    ("twice", "a second time"),
    ("in place", "updated in place"),
    ("in place with grad", "in-place update of a tensor that requires grad"),
    ("not scalar", "1-element result"),
    ("no parameter", "does not require grad"),
    ("no rule", r"no gradient for reciprocal \(called at .*test_autograd_engine.py:\d+\)"),
    ("public leaf", "PublicTensor carries no gradient"),
])
def test_mistakes_are_named(mistake, error):
    def program():
        w = mp.private(lambda: np.array([1.0, 2.0]), owner="alice")
        w.requires_grad = mistake != "no parameter"
        loss = (w * w).sum()
        if mistake == "twice":
            loss.backward()
            loss.backward()
        elif mistake == "in place":
            with mp.no_grad():
                w -= 1.0
            loss.backward()
        elif mistake == "in place with grad":
            w += 1.0
        elif mistake == "not scalar":
            (w * w).backward()
        elif mistake == "no parameter":
            loss.backward()
        elif mistake == "no rule":
            mp.reciprocal(w).sum().backward()
        elif mistake == "public leaf":
            mp.public(np.ones(2)).requires_grad = True

    with pytest.raises(mp.PartyError, match=error):
        run(program, timeout=10)


def test_in_place_updates_keep_the_object():
    def program():
        w = mp.private(lambda: np.array([1.0, 2.0]), owner="alice")
        alias = w
        with mp.no_grad():
            w -= np.array([0.5, 0.5])
            w *= 2.0
            w += 1.0
        return alias is w, alias.reveal()

    same, value = run(program)["alice"]
    assert same
    np.testing.assert_array_equal(value, [2.0, 4.0])


def payload_of_backward(build):
    """Payload bytes of ``loss.backward()`` summed over the parties, for loss = build()."""
    def program():
        loss = build()
        before = mp.stats()["payload_bytes_sent"]
        loss.backward()
        return mp.stats()["payload_bytes_sent"] - before

    return sum(mp.run(program, truncation="exact").values())


def test_relu_backward_is_one_bit_product_not_a_comparison():
    n = 50

    def build():
        x = mp.private(lambda: np.linspace(-3, 3, n))
        x.requires_grad = True
        return (mp.relu(x) * mp.private(lambda: np.ones(n))).sum()

    # the bit and g are opened (8 bytes each way each) and the producer sends server1 its share of
    # the product: 40 bytes per element, where a DReLU alone would be 213
    assert payload_of_backward(build) == 40 * n


def test_maxpool_backward_reuses_the_forward_decisions():
    def build():
        x = mp.private(lambda: np.arange(64.0).reshape(1, 1, 8, 8) % 7)
        x.requires_grad = True
        return (mp.maxpool2d(x, 2) * mp.private(lambda: np.ones((1, 1, 4, 4)))).sum()

    # 16 windows of 4: a level of 16 pairs, then one of 32, each a bit product of 40 bytes per pair
    assert payload_of_backward(build) == 40 * (16 + 32)


def test_a_small_network_against_handwritten_numpy_backprop():
    rng = np.random.default_rng(5)
    x = quantize(rng.normal(size=(6, 4)))
    w1, b1 = quantize(rng.normal(size=(4, 5)) * 0.5), quantize(rng.normal(size=5) * 0.1)
    w2 = quantize(rng.normal(size=(5, 3)) * 0.5)
    target = quantize(rng.normal(size=(6, 3)))

    def program():
        params = [mp.private(lambda v=v: v, owner="alice") for v in (w1, b1, w2)]
        for p in params:
            p.requires_grad = True
        h = mp.relu(mp.private(lambda: x, owner="alice") @ params[0] + params[1])
        out = mp.sigmoid(h @ params[2])
        ((out - target) * (out - target)).mean().backward()
        return [p.grad.reveal() for p in params]

    got = run(program)["alice"]
    z1 = x @ w1 + b1
    h = np.maximum(z1, 0)
    s = 1 / (1 + np.exp(-(h @ w2)))
    d_out = 2 * (s - target) / s.size
    d_z2 = d_out * s * (1 - s)
    d_h = d_z2 @ w2.T * (z1 >= 0)
    expected = [x.T @ d_h, d_h.sum(axis=0), h.T @ d_z2]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=2e-3)   # sigmoid's 1e-4 carried through two layers


def test_custom_gradient():
    @mp.custom_gradient
    def clipped_identity(x):
        def grad(g):
            return (g * 0.5,)
        return x, grad

    def program():
        x = mp.private(lambda: np.array([1.0, -2.0]), owner="alice")
        x.requires_grad = True
        y = clipped_identity(x)
        (y * 3.0).sum().backward()
        return y is x, x.grad.reveal()

    same, grad = run(program)["alice"]
    assert not same                               # the result never grafts a node onto its input
    np.testing.assert_array_equal(grad, [1.5, 1.5])


def test_gradients_of_means_round_without_bias():
    # g / count is rounded by a truncation, which rounds up with probability the dropped fraction: the
    # errors of 4096 independent roundings (each gradient element c_i / 4) average to 0 within 0.1
    # unit (their spread is below 0.5 / 64 units, so this fails with probability far below 2^-40).
    # An exact division by the integer count comes out a unit short on average (pond.divide_exact),
    # which would drift parameters trained over many steps.
    x = np.linspace(-1, 1, 4096 * 4).reshape(4096, 4)
    c = quantize(np.random.default_rng(8).uniform(-1, 1, 4096))
    cases = [(lambda t: t.mean(axis=1), np.repeat(c / 4, 4).reshape(x.shape)),
             (lambda t: mp.avgpool2d(t.reshape(1, 1, 128, 128), 2).reshape(-1),
              np.kron(c.reshape(64, 64), np.ones((2, 2))).reshape(x.shape) / 4)]
    for fn, expected in cases:
        [grad] = private_gradients(fn, (x,), [True], c)
        assert_within(grad, expected, 1.01 * ULP)
        assert abs(np.mean(grad - expected)) < 0.1 * ULP
