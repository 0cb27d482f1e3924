"""SecureNN's bounded DReLU and ReLU (``securenn.falcon_msb`` with ``bits`` = k < 64, and its coarse
variant) against Python integers, and what the producer and the servers see.

For every a in Z_L the protocol computes bit k-1 of a + 2^(k-1) (mod 2^64), whatever the mask: that
is [a >= 0] exactly for -2^(k-1) <= a < 2^(k-1), and the tests check both the formula on the whole
ring (so the first values beyond the bound are wrong, and wrong in the documented way) and the edges
of the range. Shares are chosen by the test (server0's given or random, server1's the difference),
so shares that wrap around 2^64 and shares that do not are both exercised.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mpcnp import zp
from mpcnp.protocols import costs, families, securenn, sharing
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, current
from helpers import L, chi_square, chi_square_limit, mine, protocol_cost, reconstruct, run_core as run, signed
from helpers import shares_of as _shares_of
from strategies import ring_elements
from test_securenn import ChosenMask

RNG = np.random.default_rng(20210101)   # test data only; the protocols draw from their PRF streams
WIDTHS = [2, 3, 8, 9, 17, 24, 32, 33, 48, 63, 64]


def shares_of(values, share0=None):
    return _shares_of(values, RNG, share0)


def bounded(values, bits: int, share0=None, coarse: int = 0, backend: str = "threads"):
    """(DReLU bits, signed ReLU values, the ReLU's kept bits) of the shared values."""
    s0, s1 = shares_of(values, share0)

    def program():
        ctx = current()
        a = mine(ctx, s0, s1)
        bit = securenn.falcon_msb(ctx, a, bits=bits, coarse=coarse).bit
        step = securenn.falcon_msb(ctx, a, with_product=True, bits=bits, coarse=coarse)
        return None if bit.share is None else (bit.share, step.product.share, step.bit.share)

    results = run(program, backend)
    parts = [reconstruct({s: results[s][i] for s in (SERVER0, SERVER1)}) for i in range(3)]
    return parts[0], [signed(v) for v in parts[1]], parts[2]


def sign_of_offset(a: int, bits: int) -> int:
    """What the protocol computes for any ring element a: bit k-1 of a + 2^(k-1) mod 2^64."""
    return (((a % L) + (1 << (bits - 1))) % L >> (bits - 1)) & 1


def edges(bits: int) -> list[int]:
    """The range's edges -2^(k-1), 2^(k-1) - 1 and their neighbours inside, 0, +-1, powers of two,
    and the first values beyond: 2^(k-1), 2^(k-1) + 1, -2^(k-1) - 1 (taken mod 2^64)."""
    half = 1 << (bits - 1)
    inside = {0, 1, -1, half - 1, -half, -half + 1, half - 2}
    inside |= {p for k in range(bits - 1) for p in (1 << k, -(1 << k), (1 << k) - 1, -(1 << k) + 1)}
    beyond = {half, half + 1, -half - 1, 2 * half, -2 * half - 1, 3 * half}
    return sorted(v for v in inside | beyond if -(1 << 63) <= v < 1 << 63)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("share0", ["random", 0, L - 1, "value"])
def test_bounded_drelu_and_relu_at_the_edges(bits, share0):
    values = edges(bits)
    zeroth = None if share0 == "random" else (values if share0 == "value" else [share0] * len(values))
    bits_got, relus, kept = bounded(values, bits, zeroth)
    half = 1 << (bits - 1)
    assert bits_got == kept == [sign_of_offset(v, bits) for v in values]
    assert relus == [signed((b * v) % L) for b, v in zip(bits_got, values)]
    for v, b, y in zip(values, bits_got, relus):
        if -half <= v < half:                       # inside the bound: exact
            assert (b, y) == (int(v >= 0), max(v, 0)), v
    if bits < 64:                                   # the first values beyond are wrong
        beyond = {v: b for v, b in zip(values, bits_got)}
        assert beyond[half] == 0 and beyond[-half - 1] == 1


@settings(max_examples=60)
@given(data=st.data())
def test_bounded_drelu_matches_python_on_the_whole_ring(data):
    bits = data.draw(st.sampled_from(WIDTHS))
    half = 1 << (bits - 1)
    value = st.one_of(st.integers(-half, half - 1), ring_elements.map(signed),
                      st.integers(-4, 4).map(lambda d: half + d), st.integers(-4, 4).map(lambda d: -half + d))
    pairs = data.draw(st.lists(st.tuples(value, ring_elements), min_size=1, max_size=8))
    values, share0 = zip(*pairs)
    got, relus, _ = bounded(values, bits, share0)
    assert got == [sign_of_offset(v, bits) for v in values]
    assert relus == [signed((b * v) % L) for b, v in zip(got, values)]


@pytest.mark.parametrize("beta", [0, 1])
@pytest.mark.parametrize("bits", [2, 24, 33])
def test_bounded_drelu_with_chosen_masks(monkeypatch, beta, bits):
    # masks that put x' = x mod 2^(k-1) and r' at the edges: x' = 2^(k-1) - 1 with beta = 1 (the
    # planted zero), r' = x' (no carry), r' = x' + 1, r' = 0, r' = 2^(k-1) - 1, bit k-1 of r and of x
    # both ways, and r whose high bits are set (they must not matter)
    half = 1 << (bits - 1)
    values, masks = [], []
    for a in (0, 1, -1, half - 1, -half, 5 % half, -(5 % half)):
        for r in (0, 1, half - 1, half, half + 1, 2 * half - 1, L - 1, -a, half - 1 - a, -1 - a, half - a,
                  L - half, (L - 1) ^ (half - 1)):
            values.append(a)
            masks.append(r % L)
    ChosenMask(monkeypatch, masks, beta)
    got, relus, _ = bounded(values, bits)
    assert got == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]


@pytest.mark.parametrize("bits, coarse", [(24, 4), (47, 19), (10, 8), (64, 30)])
def test_coarse_drelu_is_exact_outside_its_blurred_band(bits, coarse):
    half, band = 1 << (bits - 1), 1 << coarse
    exact = [0, 1, -half, -half + 1, -band, -band - 1, band, half - band, half - band - 1, 12345 % (half - band)]
    blurred = [-1, -band + 1, -(band // 2), half - 1, half - band + 1]
    values = exact + blurred * 8
    got, relus, kept = bounded(values, bits, coarse=coarse)
    assert got[:len(exact)] == [int(v >= 0) for v in exact]
    assert relus[:len(exact)] == [max(v, 0) for v in exact]
    assert set(got) | set(kept) <= {0, 1} and kept[:len(exact)] == got[:len(exact)]
    assert relus == [b * v for b, v in zip(kept, values)]     # value and bit agree, blurred or not


def test_coarse_drelu_really_skips_the_low_bits():
    # a = -1 with 4 bits skipped counts as >= 0 unless r's 4 skipped bits are all zero (or no carry):
    # probability about 15/16 per element; 64 elements all right would happen with probability 2^-250
    got, _, _ = bounded([-1] * 64, 24, coarse=4)
    assert sum(got) > 0


def test_bounded_drelu_refuses_bad_widths():
    def program():
        ctx = current()
        a = Shared(np.zeros(3, np.uint64) if ctx.is_server else None, (3,))
        for bits, coarse in ((1, 0), (65, 0), (24, 23), (24, -1)):
            with pytest.raises(ValueError, match="bits"):
                securenn.falcon_msb(ctx, a, bits=bits, coarse=coarse)
    run(program)


@pytest.mark.processes
def test_bounded_drelu_on_processes_backend():
    values = edges(24)
    got, relus, _ = bounded(values, 24, [L - 1] * len(values), backend="processes")
    assert got == [sign_of_offset(v, 24) for v in values]
    assert relus == [signed((b * v) % L) for b, v in zip(got, values)]


# ---- costs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits, coarse", [(24, 0), (9, 0), (17, 3), (40, 0), (64, 0)])
def test_bounded_costs_follow_the_table(bits, coarse):
    width = {9: 2, 17: 4, 24: 4, 40: 8, 64: 8}[bits]
    n = 40

    def fresh(ctx):
        return Shared(ctx.own_prf.uint64(n) if ctx.is_server else None, (n,))

    drelu = protocol_cost(lambda c: (lambda a=fresh(c): securenn.falcon_msb(c, a, bits=bits, coarse=coarse)), n)
    relu = protocol_cost(lambda c: (lambda a=fresh(c): securenn.falcon_msb(c, a, True, bits, coarse)), n)
    assert drelu == (costs.COSTS["drelu_bounded"].bytes(n=1, k=bits, s=coarse, w=width), 3)
    assert relu == (costs.COSTS["relu_bounded"].bytes(n=1, k=bits, s=coarse), 3)


# ---- what the parties see -----------------------------------------------------------------------------------
def views(value: int, n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(the producer's PrivateCompare messages, (2, k-1, n), the opened x_0 server1 received) in a
    bounded DReLU of n copies of ``value``."""
    seen = {}

    def program():
        ctx = current()
        if ctx.name in (PRODUCER, SERVER1):
            real_recv = ctx.recv

            def recv(frm):
                message = real_recv(frm)
                seen.setdefault((ctx.name, frm), message)
                return message
            ctx.recv = recv
        share = np.full(n, value % L, np.uint64)
        a = Shared(share if ctx.name == SERVER0 else (np.zeros(n, np.uint64) if ctx.is_server else None), (n,))
        securenn.drelu(ctx, a, bits=bits)

    run(program)
    return np.stack([seen[(PRODUCER, SERVER0)], seen[(PRODUCER, SERVER1)]]), seen[(SERVER1, SERVER0)]


@pytest.mark.parametrize("bits", [24, 10])
def test_producer_sees_uniform_values_whatever_the_input(bits):
    # for a value and its negation: at most one zero per element, at a uniform position among the
    # k-1 compared bits, present half of the time (beta is hidden), nonzero values uniform on Z_p^*
    rows = bits - 1
    for value in (5, -5):
        received = np.concatenate([views(value, 2000, bits)[0] for _ in range(3)], axis=2)
        assert received.shape[:2] == (2, rows)
        d = (received[0].astype(int) + received[1]) % zp.P
        zeros = d == 0
        per_element = zeros.sum(axis=0)
        assert per_element.max() <= 1
        assert chi_square(np.bincount(per_element, minlength=2)) < chi_square_limit(1)
        assert chi_square(np.bincount(zeros.argmax(axis=0)[per_element == 1], minlength=rows)) < chi_square_limit(rows - 1)
        assert chi_square(np.bincount(d[~zeros], minlength=zp.P)[1:]) < chi_square_limit(zp.P - 2)
        for share in received:
            assert chi_square(np.bincount(share.reshape(-1), minlength=zp.P)) < chi_square_limit(zp.P - 1)


def test_servers_see_a_uniform_narrow_opening():
    # k = 24 opens x mod 2^32 (4 bytes per server): its top byte is uniform for a constant input
    _, opened = views(5, 20000, 24)
    assert opened.dtype == np.uint32
    top = (opened >> np.uint32(24)).astype(np.intp)
    assert chi_square(np.bincount(top, minlength=256)) < chi_square_limit(255)


def test_the_view_test_detects_a_fixed_zero_position(monkeypatch):
    # without the rotation the zero sits at the first differing bit, which a constant input fixes
    monkeypatch.setattr(zp, "compare_masks", zp.compare_masks_numpy)
    monkeypatch.setattr(zp, "rotate", lambda d, g: d)
    received = views(5, 2000, 24)[0]
    d = (received[0].astype(int) + received[1]) % zp.P
    zeros = d == 0
    positions = zeros.argmax(axis=0)[zeros.any(axis=0)]
    assert chi_square(np.bincount(positions, minlength=23)) > chi_square_limit(22)


# ---- the family's bound and blur ----------------------------------------------------------------------------
def family_relu(values, bound, blur=None, frac_bits: int = 16):
    """(signed ReLU values, DReLU bits) of the ring integers ``values`` by the SecureNN family's
    relu with ``bound`` and ``blur`` (reals, in fixed point at ``frac_bits``)."""
    s0, s1 = shares_of(values)

    def program():
        ctx = current()
        out = families.FAMILIES["securenn"].relu(ctx, mine(ctx, s0, s1), bound, blur=blur)
        return None if out.share is None else (out.share, out.drelu.share)

    results = run(program, frac_bits=frac_bits)
    parts = [reconstruct({s: results[s][i] for s in (SERVER0, SERVER1)}) for i in range(2)]
    return [signed(v) for v in parts[0]], parts[1]


@pytest.mark.parametrize("bound, blur", [(3.0, None), (1000.0, None), (1000.0, 0.25), (2.0 ** 30, 2.0 ** 10)])
def test_the_familys_bound_is_exact_inside_and_its_blur_only_blurs(bound, blur):
    # f = 16: in units, exact for |x| < bound 2^16 except x in (-blur 2^16, 0), which may give x
    units, band = int(bound * 2 ** 16), int((blur or 0) * 2 ** 16)
    exact = [0, 1, -1 - band, units - 1, -units + 1, units // 3, -units // 3, -band - 5]
    blurred = [-1, -band + 1, -(band // 2)] if band > 1 else []
    values = exact + blurred * 8
    relus, bits = family_relu(values, bound, blur)
    assert relus[:len(exact)] == [max(v, 0) for v in exact]
    assert bits[:len(exact)] == [int(v >= 0) for v in exact]
    assert relus == [b * v for b, v in zip(bits, values)]
    if blurred:     # the blur is real: x = -1 comes out as x unless r's skipped bits carry (probability 2^-s each)
        assert sum(bits[len(exact):]) > 0


def test_a_blur_needs_a_bound():
    def program():
        ctx = current()
        a = Shared(np.zeros(3, np.uint64) if ctx.is_server else None, (3,))
        with pytest.raises(ValueError, match="needs a bound"):
            families.FAMILIES["securenn"].relu(ctx, a, None, blur=1.0)
    run(program)
