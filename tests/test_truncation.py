"""Exact truncation by the wrap bit (mpcnp.protocols.pond.truncate_exact, docs/protocols.md 3.2): on
chosen shares against Python integers, what each party sees, the per-run setting, products at the
edges of the documented headroom at every frac_bits, and a million products (1e8 with MPCNP_SLOW=full).

Exactness here is the documented one: a product or a truncation lies in {floor(v), floor(v) + 1} in
units, i.e. within one unit; local truncation's failure rate is measured in test_pond.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

import mpcnp as mp
from mpcnp import fixedpoint
from mpcnp.protocols import pond
from mpcnp.runtime.context import Context, current
from helpers import mine, reconstruct, run_core, shares_of, signed
from strategies import ring_elements

RNG = np.random.default_rng(20250310)   # test data only; the protocols draw from their PRF streams
CORE = ("server0", "server1", "producer")


def run_on_shares(fn, values, share0):
    """fn(ctx, Shared) on the servers' chosen shares of ``values``; the reconstructed results."""
    s0, s1 = shares_of(values, RNG, share0)

    def program():
        ctx = current()
        out = fn(ctx, mine(ctx, s0, s1))
        return out.share

    return [signed(v) for v in reconstruct(run_core(program))]


# Values near the offset's edges (+-2^62, 0) and anywhere inside; server0's share near the signed
# range's ends too, where the shares wrap.
in_range = st.one_of(st.integers(-(1 << 62) + 1, -(1 << 62) + 64), st.integers((1 << 62) - 64, (1 << 62) - 1),
                     st.integers(-64, 64), st.integers(-(1 << 62) + 1, (1 << 62) - 1))


@given(st.lists(st.tuples(in_range, ring_elements), min_size=1, max_size=24), st.integers(1, 61))
def test_truncation_on_chosen_shares_is_within_one_unit(pairs, bits):
    values, share0 = [v for v, _ in pairs], [s for _, s in pairs]
    got = run_on_shares(lambda ctx, x: pond.truncate_exact(ctx, x, bits), values, share0)
    for v, g in zip(values, got):
        assert g - (v >> bits) in (0, 1), (v, bits, g)


@given(st.lists(st.tuples(in_range, ring_elements), min_size=1, max_size=24),
       st.sampled_from([1, 2, 3, 7, 10, 641, 2 ** 20 + 1, 2 ** 61 + 3]))
def test_division_on_chosen_shares_is_within_two_units(pairs, divisor):
    values, share0 = [v for v, _ in pairs], [s for _, s in pairs]
    got = run_on_shares(lambda ctx, x: pond.divide_exact(ctx, x, np.array(divisor)), values, share0)
    for v, g in zip(values, got):
        assert abs(g - v / divisor) < 2, (v, divisor, g)


def test_the_precondition_is_sharp():
    """At |x| >= 2^62 the offset value leaves [0, 2^63) and the wrap bit is no longer m0 OR m1: the
    documented bound is where the guarantee ends (a chosen split shows a wrong result)."""
    value, share0 = 1 << 62, 1 << 62     # x'_0 = 2^63, x'_1 = 0: one top bit set, yet no wrap
    got = run_on_shares(lambda ctx, x: pond.truncate_exact(ctx, x, 16), [value], [share0])
    assert got[0] - (value >> 16) not in (0, 1)


def test_empty_and_scalar_shapes():
    def program():
        x = mp.private(lambda: np.zeros((0, 3)), owner="server0")
        y = mp.private(lambda: np.array(2.5), owner="server0")
        return (x * x).reveal().shape, (y * y).reveal()

    shape, square = mp.run(program)["server0"]
    assert shape == (0, 3) and square == 6.25


# ---- what each party sees ------------------------------------------------------------------------
def test_views_are_uniform_and_independent_of_the_secret(monkeypatch):
    """server1 receives e = m0 XOR a (packed bits) and c1; server0 receives f = m1 XOR b; the producer
    receives nothing. What a server receives is uniform and tells nothing of the other's top bit:
    knowing the secret and its own share, a server knows the other's share, hence its top bit, and
    must still find the received bit equal to it only half the time. Each bit position of what
    arrives, and that agreement, is 1 half the time within 8.5 sigma (a false alarm below 2^-40 over
    the 3 x 2 x 41 checks)."""
    seen = {}
    original = Context.recv

    def recording(self, frm):
        array = original(self, frm)
        seen.setdefault(self.name, []).append(np.array(array, copy=True))
        return array

    def near_half(fractions, draws) -> bool:
        return bool(np.all(np.abs(np.asarray(fractions) - 0.5) < 8.5 * 0.5 / np.sqrt(draws)))

    monkeypatch.setattr(Context, "recv", recording)
    n = 1 << 14
    for secret in (0.0, -1.0, 3.0e8):
        seen.clear()

        def program():
            x = mp.private(lambda: np.full(n, secret), owner="server0")
            start = len(seen.get(mp.party(), []))
            pond.truncate_exact(current(), x._value, 16)
            return start, len(seen.get(mp.party(), [])), x.share

        windows = mp.run(program)
        assert windows["producer"][0] == windows["producer"][1]
        for server in ("server0", "server1"):
            start, end, share = windows[server]
            during = seen[server][start:end]
            bits = [a for a in during if a.dtype == np.uint8]
            assert len(bits) == 1 and bits[0].shape == (n // 8,)
            received = np.unpackbits(bits[0])
            assert near_half(received.reshape(-1, 8).mean(axis=0), n // 8), (server, secret)
            other_share = fixedpoint.encode(np.full(n, secret)) - share
            other_top = (other_share + np.uint64(1 << 62 if server == "server1" else 0)) >> np.uint64(63)
            assert near_half((received ^ other_top.astype(np.uint8)).mean(), n), (server, secret)
            words = [a for a in during if a.dtype == np.uint32]   # c_1 = a b - c_0 mod 2^32
            assert len(words) == (1 if server == "server1" else 0)
            for word in words:
                ones = ((word.reshape(-1, 1) >> np.arange(32, dtype=np.uint32)) & np.uint32(1)).mean(axis=0)
                assert near_half(ones, n), (server, secret)


# ---- the per-run setting -------------------------------------------------------------------------
@pytest.mark.parametrize("protocol,given_mode,expected", [
    ("securenn", None, "exact"), ("pond", None, "local"), ("securenn", "local", "local"), ("pond", "exact", "exact")])
def test_the_run_chooses_truncation(protocol, given_mode, expected):
    def program():
        inside = current().truncation
        with mp.truncation("local" if inside == "exact" else "exact"):
            flipped = current().truncation
        return inside, flipped, current().truncation

    got = mp.run(program, protocol=protocol, truncation=given_mode)["server1"]
    assert got == (expected, "local" if expected == "exact" else "exact", expected)


def test_an_unknown_truncation_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown truncation 'round'"):
        mp.run(lambda: None, truncation="round")


# ---- products at the edges of the headroom ---------------------------------------------------------
@pytest.mark.parametrize("frac_bits", [8, 16, 20, 24])
@given(data=st.data())
def test_products_at_the_edge_of_the_headroom_are_within_one_unit(frac_bits, data):
    """|x y| < 2^(62 - 2f) in real terms (docs/api.md, "Products and headroom"), i.e. below 2^62 in
    units squared: x and y drawn as integers of units (below 2^53, so that they are exact float64
    inputs) whose product reaches up to the bound, signs and the extremes included."""
    f = frac_bits
    kx, ky = [], []
    for _ in range(6):
        a = data.draw(st.one_of(st.integers(1, 1 << 53), st.integers(1 << 30, 1 << 32), st.just(1 << 31)))
        limit = min(1 << 53, ((1 << 62) - 1) // a)
        b = data.draw(st.one_of(st.just(limit), st.integers(0, limit)))
        kx.append(a * data.draw(st.sampled_from([1, -1])))
        ky.append(b * data.draw(st.sampled_from([1, -1])))
    got = run_products(np.array(kx, np.float64) * 2.0 ** -f, np.array(ky, np.float64) * 2.0 ** -f, f)
    for g, a, b in zip(got, kx, ky):
        assert g - ((a * b) >> f) in (0, 1), (a, b, g)


def run_products(x: np.ndarray, y: np.ndarray, frac_bits: int, **run_kwargs) -> list[int]:
    """x * y under the run's default truncation (exact under securenn); the results in units."""
    def program():
        a = mp.private(lambda: x, owner="server0")
        b = mp.private(lambda: y, owner="server0")
        return (a * b).share

    return [signed(v) for v in reconstruct(run_core(program, frac_bits=frac_bits, **run_kwargs))]


# ---- many products: 0 wrong elements -----------------------------------------------------------------
def wrong_products(count: int, frac_bits: int, chunk: int = 1 << 20) -> int:
    """How many of ``count`` default-mode products of in-range values come out more than one unit
    off: magnitudes log-uniform up to the headroom, |x|, |y| < 2^((62 - 2f) / 2) each."""
    f = frac_bits
    half = (62 - 2 * f) / 2

    def draw(rng, n):
        magnitude = 2.0 ** rng.uniform(-f, half, n)
        return np.rint(np.where(rng.integers(0, 2, n) == 1, magnitude, -magnitude) * 2.0 ** f).astype(np.int64)

    def program():
        rng = np.random.default_rng(f)  # the same on every party: the owner's data and the check
        wrong = 0
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            kx, ky = draw(rng, n), draw(rng, n)
            x = mp.private(lambda: kx * 2.0 ** -f, owner="server0")
            y = mp.private(lambda: ky * 2.0 ** -f, owner="server0")
            z = (x * y).reveal(to="server0")
            if z is not None:
                units = np.rint(z * 2.0 ** f).astype(np.int64)
                # kx ky < 2^62 fits int64; >> is floor
                wrong += int(np.count_nonzero(~np.isin(units - ((kx * ky) >> f), (0, 1))))
        return wrong

    return mp.run(program, frac_bits=f, timeout=600)["server0"]


@pytest.mark.slow
@pytest.mark.parametrize("frac_bits", [16, 24])
def test_default_products_have_no_wrong_element(frac_bits):
    """A million products by default; the acceptance run, 1e8 (about 25 s each on two cores), with
    ``MPCNP_SLOW=full pytest -m slow tests/test_truncation.py``; MPCNP_PRODUCTS sets another count."""
    full = os.environ.get("MPCNP_SLOW") == "full"
    count = int(os.environ.get("MPCNP_PRODUCTS", 10 ** 8 if full else 10 ** 6))
    assert wrong_products(count, frac_bits) == 0
