"""Pond: communication against the cost table, what each party sees, conv2d and pooling.

Costs are measured with mp.stats() on every party around one operation: bytes are the payload bytes
summed over parties (the table counts ring elements, not our framing), rounds the growth of the
largest Lamport clock (the communication depth of the operation).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpcnp as mp
from mpcnp import fixedpoint
from mpcnp.runtime.context import Context
from helpers import FRAC_BITS, ULP, assert_within, public_factor_tolerance, quantize, run_private
from strategies import PRODUCT_BOUND, real_arrays

CORE = ("server0", "server1", "producer")


def measure(op, *make_inputs, parties=("alice",)):
    """Run ``op`` on private inputs and return (bytes summed over parties, rounds, result)."""
    def program():
        inputs = [make() for make in make_inputs]
        before = mp.stats()
        out = op(*inputs)
        after = mp.stats()
        return before, after, out.reveal(to="alice")

    results = mp.run(program, parties=list(parties))
    total = sum(r[1]["payload_bytes_sent"] - r[0]["payload_bytes_sent"] for r in results.values())
    received = sum(r[1]["payload_bytes_received"] - r[0]["payload_bytes_received"] for r in results.values())
    assert total == received
    rounds = max(r[1]["rounds"] for r in results.values()) - max(r[0]["rounds"] for r in results.values())
    sent_by = {p: r[1]["payload_bytes_sent"] - r[0]["payload_bytes_sent"] for p, r in results.items()}
    return total, rounds, sent_by, results["alice"][2]


def alice(shape, scale=1.0):
    return lambda: mp.private(lambda: np.full(shape, scale), owner="alice")


@pytest.mark.parametrize("m,n,v", [(1, 1, 1), (3, 5, 2), (16, 32, 8)])
def test_matmul_cost(m, n, v):
    total, rounds, sent_by, out = measure(lambda x, w: x @ w, alice((m, n), 0.5), alice((n, v), 2.0))
    assert total == 8 * (2 * m * n + 2 * n * v + m * v)
    assert sent_by["producer"] == 8 * m * v      # only c1
    assert rounds <= 2                           # PETS: 2; the c1 message and the exchange overlap
    np.testing.assert_allclose(out, np.full((m, v), n * 1.0), atol=ULP)


def test_mask_reuse_makes_repeated_products_cheaper():
    m, n, v = 4, 6, 3

    def program():
        w = mp.private(lambda: np.ones((n, v)), owner="alice")
        x1 = mp.private(lambda: np.ones((m, n)), owner="alice")
        x2 = mp.private(lambda: np.ones((m, n)) * 2, owner="alice")
        first_before = mp.stats()
        y1 = x1 @ w
        first_after = mp.stats()
        y2 = x2 @ w         # w was masked by the first product: only x2 and c1 travel
        second_after = mp.stats()
        y3 = x2 @ w.T.T     # view ops carry the mask along: nothing new to open but c1
        third_after = mp.stats()
        return [b["payload_bytes_sent"] - a["payload_bytes_sent"] for a, b in
                ((first_before, first_after), (first_after, second_after), (second_after, third_after))], \
            (y1 + y2 + y3).reveal()

    results = mp.run(program, parties=["alice"])
    costs = np.sum([r[0] for r in results.values()], axis=0)
    assert costs.tolist() == [8 * (2 * m * n + 2 * n * v + m * v), 8 * (2 * m * n + m * v), 8 * m * v]
    np.testing.assert_allclose(results["alice"][1], np.full((m, v), n * 5.0), atol=3 * ULP)


@pytest.mark.parametrize("shape", [(1,), (7,), (10, 10)])
def test_elementwise_multiply_costs_40_bytes_per_element(shape):
    total, rounds, sent_by, _ = measure(lambda x, y: x * y, alice(shape), alice(shape))
    size = int(np.prod(shape))
    assert total == 40 * size
    assert sent_by["producer"] == 8 * size
    assert rounds <= 2


def test_public_operands_cost_nothing():
    total, rounds, _, out = measure(lambda x: (x * 2.5 + 1) @ np.ones((3, 2)) / 3, alice((2, 3)))
    assert total == 0 and rounds == 0
    np.testing.assert_allclose(out, np.full((2, 2), 3.5 * 3 / 3), atol=2 * ULP)


# ---- views ----------------------------------------------------------------------------------------
def record_views(monkeypatch):
    """Record every array each party receives (a copy), by wrapping Context.recv."""
    seen = {}
    original = Context.recv

    def recording(self, frm):
        array = original(self, frm)
        seen.setdefault(self.name, []).append((frm, np.array(array, copy=True)))
        return array

    monkeypatch.setattr(Context, "recv", recording)
    return seen


def uniform_bits(values: np.ndarray) -> bool:
    """Each of the 64 bit positions set about half the time: within 8.5 sigma, so that the 64 bits of
    a few dozen arrays per test raise a false alarm with probability below 2^-40 (union bound)."""
    bits = (values.reshape(-1, 1) >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    return bool(np.all(np.abs(bits.mean(axis=0) - 0.5) < 8.5 * 0.5 / np.sqrt(values.size)))


@pytest.mark.parametrize("secret", [0.0, 1.0, -3.5, 2.0 ** 20])
def test_views_during_a_multiply_are_uniform_and_independent_of_the_secret(monkeypatch, secret):
    size = 4096
    x_plain, y_plain = np.full(size, secret), np.full(size, -secret / 2)
    seen = record_views(monkeypatch)

    def program():
        x = mp.private(lambda: x_plain, owner="alice")
        y = mp.private(lambda: y_plain, owner="alice")
        start = len(seen.get(mp.party(), []))
        (x * y).share   # noqa: B018 - the multiply itself; nothing is revealed
        return start, len(seen.get(mp.party(), []))

    windows = mp.run(program, parties=["alice"])
    encodings = [fixedpoint.encode(x_plain), fixedpoint.encode(y_plain)]
    for party in CORE:
        start, end = windows[party]
        during = seen.get(party, [])[start:end]
        if party == "producer":
            assert during == []                      # the producer receives nothing in a multiply
            continue
        assert during, party
        received = np.concatenate([a.reshape(-1) for _, a in during])
        assert received.dtype == np.uint64
        assert uniform_bits(received), party
        # a uniform 64-bit value equals a given one with probability 2^-64
        assert not np.isin(received, np.unique(np.concatenate(encodings))).any(), party


def test_producer_never_holds_user_data(monkeypatch):
    seen = record_views(monkeypatch)

    def program():
        x = mp.private(lambda: np.arange(12.0).reshape(3, 4), owner="alice")
        w = mp.private(lambda: np.ones((4, 2)), owner="alice")
        y = x @ w * x[:, :2]
        return y.share if mp.party() == "producer" else None

    results = mp.run(program, parties=["alice"])
    assert results["producer"] is None
    # all the producer ever received were PRF keys (uint8) and shapes (int64): no ring data
    assert all(a.dtype != np.uint64 for _, a in seen["producer"])


# ---- conv2d and pooling -------------------------------------------------------------------------
def direct_conv2d(x, w, stride, pad):
    """A direct reference: loops over output positions."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    oh = (xp.shape[2] - kh) // stride + 1
    ow = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out


def same_padding(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


@settings(max_examples=30)
@given(st.data())
def test_conv2d_against_direct_reference(data):
    n, c, o = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    k, stride = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    h, wd = data.draw(st.integers(k, 6)), data.draw(st.integers(k, 6))
    padding = data.draw(st.sampled_from([0, 1, "valid", "same"]))
    x = data.draw(real_arrays((n, c, h, wd), bound=PRODUCT_BOUND))
    w = data.draw(real_arrays((o, c, k, k), bound=PRODUCT_BOUND))
    if padding == "same":
        pad = same_padding(h, k, stride) + same_padding(wd, k, stride)
    else:
        p = 0 if padding == "valid" else padding
        pad = (p, p, p, p)
    expected = direct_conv2d(quantize(x), quantize(w), stride, pad)
    conv = lambda a, b: mp.conv2d(a, b, stride=stride, padding=padding)
    np.testing.assert_allclose(run_private(conv, x, w), expected, rtol=0, atol=ULP * 1.01)
    # a public operand is used as given, rounded to 16 significant bits (see public_factor_tolerance)
    reference = lambda u, v: direct_conv2d(u, v, stride, pad)
    assert_within(run_private(conv, x, w, private_mask=[True, False]), reference(quantize(x), w),
                  public_factor_tolerance(quantize(x), w, reference))
    assert_within(run_private(conv, x, w, private_mask=[False, True]), reference(x, quantize(w)),
                  public_factor_tolerance(quantize(w), x, lambda v, u: reference(u, v)))
    np.testing.assert_allclose(run_private(conv, x, w, private_mask=[False, False]), reference(x, w),
                               rtol=1e-12, atol=1e-12)  # public with public: float64 throughout


def test_conv2d_cost_is_input_and_kernel_sized():
    """Conv-shaped triples open x- and w-sized masks: 8 (2|x| + 2|w| + |z|) bytes, below PETS'
    im2col-sized 8 (2 m^2 f^2 i + 2 f^2 o i + m^2 o)."""
    total, rounds, _, _ = measure(lambda x, w: mp.conv2d(x, w), alice((1, 1, 28, 28)), alice((20, 1, 5, 5)))
    m, f, i, o = 24, 5, 1, 20
    assert total == 8 * (2 * 28 * 28 + 2 * 20 * 25 + 20 * 24 * 24)
    assert total <= 8 * (2 * m * m * f * f * i + 2 * f * f * o * i + m * m * o)
    assert rounds <= 2


@settings(max_examples=30)
@given(st.data())
def test_avgpool2d(data):
    k = data.draw(st.integers(1, 3))
    stride = data.draw(st.none() | st.integers(1, 3))
    x = data.draw(real_arrays((1, 2, data.draw(st.integers(k, 7)), data.draw(st.integers(k, 7))),
                              bound=2.0 ** 30))
    s = stride or k
    qx = quantize(x)
    windows = np.lib.stride_tricks.sliding_window_view(qx, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    expected = windows.mean(axis=(-2, -1))
    np.testing.assert_allclose(run_private(lambda a: mp.avgpool2d(a, k, stride), x), expected,
                               rtol=2 ** -50, atol=2 * ULP * 1.01)  # exact division: two units


# ---- truncation ---------------------------------------------------------------------------------
def wrong_products(mode: str, n: int = 20_000):
    """How many of n products 2^14 * (+-2^14) come out wrong: |v| 2^(2f) = 2^60, so local
    truncation fails with probability about 2^60 / 2^64 = 1/16 per element."""
    def program():
        x = mp.private(lambda: np.full(n, 2.0 ** 14), owner="alice")
        y = mp.private(lambda: np.where(np.arange(n) % 2, 1.0, -1.0) * 2.0 ** 14, owner="alice")
        with mp.truncation(mode):
            before = mp.stats()
            z = x * y
            after = mp.stats()
        return z.reveal(to="alice"), after["payload_bytes_sent"] - before["payload_bytes_sent"]

    results = mp.run(program, parties=["alice"])
    expected = np.where(np.arange(n) % 2, 1.0, -1.0) * 2.0 ** 28
    wrong = int(np.sum(np.abs(results["alice"][0] - expected) > ULP))
    return wrong, sum(r[1] for r in results.values())


def test_local_truncation_fails_at_the_documented_rate():
    wrong, _ = wrong_products("local")
    assert abs(wrong - 20_000 / 16) < 7.5 * np.sqrt(20_000 / 16)   # a false alarm below 2^-40


def test_exact_truncation_never_fails_and_costs_one_bit_product():
    wrong, total = wrong_products("exact")
    assert wrong == 0
    assert total == 40 * 20_000 + 40 * 20_000  # the product itself, then the bit product


@given(st.data())
def test_exact_truncation_within_one_unit(data):
    a, b = data.draw(st.tuples(real_arrays((7,), bound=2.0 ** 15), real_arrays((7,), bound=2.0 ** 15)))
    qa, qb = quantize(a), quantize(b)

    def program():
        x, y = mp.private(lambda: a, owner="alice"), mp.private(lambda: b, owner="alice")
        with mp.truncation("exact"):
            return (x * y).reveal(to="alice"), (x * 0.3).reveal(to="alice")

    product, scaled = mp.run(program, parties=["alice"])["alice"]
    np.testing.assert_allclose(product, qa * qb, rtol=0, atol=ULP * 1.01)
    assert_within(scaled, qa * 0.3, public_factor_tolerance(qa, np.array(0.3), np.multiply))


def wrong_quotients(mode: str, n: int = 20_000):
    """How many of n quotients (+-2^44) / d come out wrong, for d cycling through 3, 7, 10, 1000:
    |x| = 2^(44 + 16) = 2^60, so local division fails with probability about 1/16 per element."""
    divisors = np.resize(np.array([3, 7, 10, 1000]), n)
    values = np.where(np.arange(n) % 2, 1.0, -1.0) * 2.0 ** 44

    def program():
        x = mp.private(lambda: values, owner="alice")
        with mp.truncation(mode):
            before = mp.stats()
            z = x / divisors
            after = mp.stats()
        return z.reveal(to="alice"), after["payload_bytes_sent"] - before["payload_bytes_sent"]

    results = mp.run(program, parties=["alice"])
    wrong = int(np.sum(np.abs(results["alice"][0] - values / divisors) > 2 * ULP))
    return wrong, sum(r[1] for r in results.values())


def test_local_division_fails_at_the_documented_rate():
    wrong, total = wrong_quotients("local")
    assert abs(wrong - 20_000 / 16) < 7.5 * np.sqrt(20_000 / 16)   # a false alarm below 2^-40
    assert total == 0


def test_exact_division_never_fails_and_costs_one_bit_product():
    wrong, total = wrong_quotients("exact")
    assert wrong == 0
    assert total == 40 * 20_000


@given(st.data())
def test_exact_division_within_two_units(data):
    """Exact division by public integers: x / d within two units in the last place (divide_exact),
    for any encodable x, negative divisors and divisors broadcast against x."""
    shape = data.draw(st.sampled_from([(0,), (1,), (5,), (2, 3)]))
    a = data.draw(real_arrays(shape))
    divisor = data.draw(st.sampled_from([1, 3, -7, 2 ** 20, np.array([3, -10, 641]), np.array([[5], [-9]])]))

    def program():
        with mp.truncation("exact"):
            return (mp.private(lambda: a, owner="alice") / divisor).reveal(to="alice")

    try:
        np.broadcast_shapes(a.shape, np.shape(divisor))
    except ValueError:
        with pytest.raises(mp.PartyError, match="could not be broadcast"):
            mp.run(program, parties=["alice"])
        return
    # The reference in exact rationals: float64 cannot hold x / d to a unit at |x| near 2^46. The
    # revealed value is the ring value rounded to float64 (within half a spacing), so the tolerance is
    # two units plus a float64 spacing of the result.
    units = np.rint(a * 2.0 ** FRAC_BITS).astype(np.int64)   # exactly what encoding shares
    exact = np.vectorize(lambda u, d: float(Fraction(int(u), int(d) << FRAC_BITS)), otypes=[np.float64])
    expected = exact(units, divisor) if a.size else np.zeros(np.broadcast_shapes(a.shape, np.shape(divisor)))
    got = mp.run(program, parties=["alice"])["alice"]
    assert got.shape == expected.shape
    assert np.all(np.abs(got - expected) <= 2 * ULP + np.spacing(np.abs(expected)))


def test_unknown_truncation_is_refused():
    with pytest.raises(mp.PartyError, match="unknown truncation"):
        mp.run(lambda: mp.truncation("sloppy").__enter__())
