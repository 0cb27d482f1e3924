"""SecureNN's protocols over shares (mpcnp.protocols.securenn and maxpool) against Python integers.

Inputs are built as shares chosen by the test (server0's share given, server1's the difference), so
shares that wrap around 2^64 and shares that do not are both exercised; results are reconstructed from
what each server returns. Exactness is equality: these protocols have no rounding.
The composites above DReLU (SelectShare, MaxPool, DMaxPool, Division) are in
test_securenn_composites.py; the costs of every protocol in test_costs.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mpcnp import zp
from mpcnp.protocols import pond, securenn, sharing
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, current
from helpers import L, chi_square, chi_square_limit, mine, reconstruct, run_core as run, signed
from helpers import shares_of as _shares_of
from strategies import ring_elements

RNG = np.random.default_rng(20190712)   # test data only; the protocols draw from their PRF streams


def shares_of(values, share0=None, modulus: int = L):
    return _shares_of(values, RNG, share0, modulus)


def bit_shares(xs, rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Z_p shares of the low ``rows`` bits of the uint64 values xs, (rows, n), most significant first."""
    bits = zp.bits_msb_first(np.array([int(x) for x in xs], np.uint64), rows)
    share0 = RNG.integers(0, zp.P, bits.shape).astype(np.uint8)
    return share0, ((bits.astype(np.int64) - share0) % zp.P).astype(np.uint8)


# ---- PrivateCompare ------------------------------------------------------------------------------------
def private_compare(xs, rs, betas, backend: str = "threads", bits: int = 64) -> list[int]:
    x0, x1 = bit_shares(xs, bits)
    r = np.array([int(v) for v in rs], np.uint64)
    beta = np.array(betas, np.uint8)

    def program():
        ctx = current()
        shares = {SERVER0: x0, SERVER1: x1}.get(ctx.name)
        answer = securenn.private_compare(ctx, shares, r if ctx.is_server else None,
                                          beta if ctx.is_server else None, len(xs), bits)
        return None if answer is None else answer.tolist()

    return run(program, backend)[PRODUCER]


def compare_cases(bits: int = 64) -> tuple[list[int], list[int]]:
    top = (1 << bits) - 1
    xs, rs = [], []
    random_r = int(RNG.integers(0, top, dtype=np.uint64, endpoint=True))
    for r in (0, top, 1 << (bits - 1), (1 << (bits - 1)) - 1, 0x5555_5555_5555_5555 & top, random_r):
        for x in (r, r + 1, r - 1, ~r, 0, top, r ^ 1, r ^ (1 << (bits - 1))):
            xs.append(x & top)
            rs.append(r)
    return xs, rs


@pytest.mark.parametrize("bits", [64, 63])
@pytest.mark.parametrize("beta", [0, 1])
def test_private_compare_edges(beta, bits):
    # r = 2^bits - 1 with beta = 1 is the case the servers answer with a planted zero
    xs, rs = compare_cases(bits)
    answers = private_compare(xs, rs, [beta] * len(xs), bits=bits)
    assert answers == [beta ^ int(x > r) for x, r in zip(xs, rs)]


@settings(max_examples=100)
@given(st.lists(st.tuples(ring_elements, ring_elements, st.integers(0, 1)), min_size=1, max_size=6))
def test_private_compare_matches_python(cases):
    xs, rs, betas = zip(*cases)
    assert private_compare(xs, rs, betas) == [b ^ int(x > r) for x, r, b in cases]


# ---- ShareConvert --------------------------------------------------------------------------------------
SC_VALUES = [0, 1, L - 1, L - 2, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, 2, 12345]


def share_convert(values, share0=None, backend: str = "threads") -> tuple[list[int], list[int]]:
    s0, s1 = shares_of(values, share0)

    def program():
        ctx = current()
        y = securenn.share_convert(ctx, mine(ctx, s0, s1))
        return y.share

    results = run(program, backend)
    for server in (SERVER0, SERVER1):
        assert int(results[server].max()) <= L - 2          # shares live in Z_{L-1}
    return reconstruct(results, L - 1), [v % (L - 1) for v in values]


@pytest.mark.parametrize("share0", ["random", 0, 1, L - 1, 1 << 63, "value"])
def test_share_convert_edges(share0):
    # share0 = the value itself puts server1's share at 0; L - 1 and 2^63 make the shares wrap
    values = SC_VALUES + [int(v) for v in RNG.integers(0, L - 1, 6, dtype=np.uint64)]
    zeroth = None if share0 == "random" else (values if share0 == "value" else [share0] * len(values))
    got, expected = share_convert(values, zeroth)
    assert got == expected


class FixedMask:
    """The servers' common stream, except that ShareConvert's shares of r are the given ones."""

    def __init__(self, prf, r0: int, r1: int, n: int):
        self._prf, self._r, self._n = prf, (r0, r1), n

    def uint64(self, shape=()):
        if tuple(np.atleast_1d(shape)) == (2, self._n):
            self._prf.uint64(shape)   # keep both servers' streams in step
            return np.array([[self._r[0]] * self._n, [self._r[1]] * self._n], np.uint64)
        return self._prf.uint64(shape)

    def __getattr__(self, name):
        return getattr(self._prf, name)


@pytest.mark.parametrize("r0, r1", [(0, 0), (5, L - 5), (L - 1, 1), (1, L - 2), (L - 1, L - 1),
                                    (1 << 63, 1 << 63)])
def test_share_convert_chosen_masks(monkeypatch, r0, r1):
    # r = 0 (the case PrivateCompare on r - 1 cannot answer by itself), r = L - 1, with and without wrap
    real = sharing.common_stream
    monkeypatch.setattr(securenn, "common_stream", lambda ctx: FixedMask(real(ctx), r0, r1, len(SC_VALUES)))
    got, expected = share_convert(SC_VALUES)
    assert got == expected


@settings(max_examples=100)
@given(st.lists(st.tuples(ring_elements, ring_elements), min_size=1, max_size=6))
def test_share_convert_matches_python(pairs):
    values, share0 = zip(*pairs)
    got, expected = share_convert(values, share0)
    assert got == expected


# ---- ComputeMSB ------------------------------------------------------------------------------------------
def compute_msb(values, share0=None) -> list[int]:
    s0, s1 = shares_of(values, share0, modulus=L - 1)

    def program():
        ctx = current()
        return securenn.compute_msb(ctx, mine(ctx, s0, s1)).share

    return reconstruct(run(program))


@settings(max_examples=100)
@given(st.lists(st.tuples(ring_elements, ring_elements), min_size=1, max_size=6))
def test_compute_msb_matches_python(pairs):
    values = [v % (L - 1) for v, _ in pairs]
    share0 = [s % (L - 1) for _, s in pairs]
    assert compute_msb(values, share0) == [v >> 63 for v in values]


def test_compute_msb_edges():
    values = [0, 1, L - 2, (1 << 63) - 1, 1 << 63, (1 << 63) + 1]
    for share0 in (None, [0] * 6, values, [L - 2] * 6):
        assert compute_msb(values, share0) == [v >> 63 for v in values]


# ---- DReLU and ReLU (Falcon's and PETS') ---------------------------------------------------------------------
EXACT_BELOW = {"falcon": 1 << 63, "pets": 1 << 62}      # |a| below this (and a = -2^63 for falcon)
METHODS = {"falcon": (securenn.drelu, securenn.relu), "pets": (securenn.drelu_pets, securenn.relu_pets)}


def drelu_relu(values, share0=None, backend: str = "threads", method: str = "falcon"):
    """(DReLU bits, signed ReLU values) of the shared values, from the method's drelu and relu."""
    s0, s1 = shares_of(values, share0)
    drelu, relu = METHODS[method]

    def program():
        ctx = current()
        a = mine(ctx, s0, s1)
        bit = drelu(ctx, a)
        value, kept = relu(ctx, a)
        return None if bit.share is None else (bit.share, value.share, kept.share)

    results = run(program, backend)
    bits = reconstruct({s: results[s][0] for s in (SERVER0, SERVER1)})
    relus = reconstruct({s: results[s][1] for s in (SERVER0, SERVER1)})
    kept = reconstruct({s: results[s][2] for s in (SERVER0, SERVER1)})
    assert kept == bits
    return bits, [signed(v) for v in relus]


def edge_values(method: str) -> list[int]:
    """0, +-1, +-2^k, +-(2^k + 1), +-(2^k - 1) for every k with 2^k below the method's bound, and the
    largest magnitudes it is exact for: +-(2^62 - 1), and for falcon also 2^62 .. 2^63 - 1, -2^63."""
    bound = EXACT_BELOW[method]
    powers = [1 << k for k in range(bound.bit_length() - 1)]
    values = {0, bound - 1, -(bound - 1)}
    for p in powers:
        values |= {p, -p, p + 1, -(p + 1), p - 1, -(p - 1)}
    if method == "falcon":
        values |= {-(1 << 63), -(1 << 63) + 1, (1 << 63) - 2, (1 << 62) + 1, -(1 << 62) - 1, 3 << 61, -(3 << 61)}
    return sorted(v for v in values if -(1 << 63) <= v < bound)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("share0", ["random", 0, L - 1, 1 << 63, "value"])
def test_drelu_and_relu_edges(share0, method):
    values = edge_values(method)
    zeroth = None if share0 == "random" else (values if share0 == "value" else [share0] * len(values))
    bits, relus = drelu_relu(values, zeroth, method=method)
    assert bits == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]


@pytest.mark.parametrize("method", list(METHODS))
def test_drelu_and_relu_on_the_numpy_kernels(monkeypatch, method):
    # the path taken without the compiled extension (test_zp.py compares the kernels bit for bit)
    for name in ("map_draws", "bit_shares", "compare_masks", "any_zero"):
        monkeypatch.setattr(zp, name, getattr(zp, name + "_numpy"))
    values = edge_values(method)[::3]
    bits, relus = drelu_relu(values, method=method)
    assert bits == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]


def test_pets_drelu_is_exact_only_below_2_62():
    # the ranges the edge cases assume are tight: 2a overflows at 2^62 and the PETS chain flips
    bits, _ = drelu_relu([(1 << 62) - 1, 1 << 62, -(1 << 62) - 1], method="pets")
    assert bits == [1, 0, 1]
    assert drelu_relu([(1 << 62) - 1, 1 << 62, -(1 << 62) - 1])[0] == [1, 1, 0]


def signed_values(method: str):
    bound = EXACT_BELOW[method]
    return st.integers(-(1 << 63) if method == "falcon" else -bound + 1, bound - 1)


@pytest.mark.parametrize("method", list(METHODS))
@settings(max_examples=60)
@given(data=st.data())
def test_drelu_and_relu_match_python(method, data):
    pairs = data.draw(st.lists(st.tuples(signed_values(method), ring_elements), min_size=1, max_size=8))
    values, share0 = zip(*pairs)
    bits, relus = drelu_relu(values, share0, method=method)
    assert bits == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]


class ChosenMask:
    """Stand-ins for DReLU's randomness: the producer's mask r (sharing.random_shares, as the inline
    dealer calls it) and the servers' common bit beta (their stream's first uint8 draw of n bytes) take the
    given values."""

    def __init__(self, monkeypatch, r: list[int], beta: int):
        real_shares, real_common = sharing.random_shares, sharing.common_stream
        r = np.array(r, np.uint64)
        r0 = RNG.integers(0, L - 1, r.size, dtype=np.uint64, endpoint=True)

        def random_shares(ctx, n):
            real_shares(ctx, n)
            return {PRODUCER: r, SERVER0: r0, SERVER1: r - r0}.get(ctx.name)

        class Common:
            def __init__(self, prf):
                self._prf = prf

            def uint8(self, shape=()):
                drawn = self._prf.uint8(shape)
                return np.full_like(drawn, beta) if drawn.shape == r.shape else drawn

            def __getattr__(self, name):
                return getattr(self._prf, name)

        monkeypatch.setattr(sharing, "random_shares", random_shares)
        monkeypatch.setattr(securenn, "common_stream", lambda ctx: Common(real_common(ctx)))


@pytest.mark.parametrize("beta", [0, 1])
def test_drelu_with_chosen_masks(monkeypatch, beta):
    # every pairing of edge values a with masks r that put x = a + r and r themselves at the edges:
    # x' = 2^63 - 1 with beta = 1 (PrivateCompare's planted zero), r' = x' (no carry), r' = x' + 1,
    # x = 0, x = L - 1, r = 0, r = L - 1, MSB(r) and MSB(x) both ways
    a_values = [0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 62, -(1 << 62), 12345]
    values, masks = [], []
    for a in a_values:
        for r in (0, 1, L - 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, -a, (1 << 63) - 1 - a, -1 - a,
                  (1 << 63) - a, (1 << 62) - a, L - 2 - a):
            values.append(a)
            masks.append(r % L)
    ChosenMask(monkeypatch, masks, beta)
    bits, relus = drelu_relu(values)
    assert bits == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]


def received_by(party: str, call, n: int) -> list:
    """The messages (sender, array) ``party`` receives, in order, while ``call(ctx, a)`` runs on the
    constant a = 5 (shared as 5 and 0) of n elements."""
    seen = []

    def program():
        ctx = current()
        if ctx.name == party:
            real_recv = ctx.recv

            def recv(frm):
                message = real_recv(frm)
                seen.append((frm, message))
                return message
            ctx.recv = recv
        call(ctx, Shared(np.full(n, 5, np.uint64) if ctx.name == SERVER0 else
                         (np.zeros(n, np.uint64) if ctx.is_server else None), (n,)))

    run(program)
    return seen


def first_messages_to_server1(call, n: int) -> dict:
    """The first message server1 receives from each party while ``call(ctx, a)`` runs (``received_by``)."""
    first = {}
    for frm, message in received_by(SERVER1, call, n):
        first.setdefault(frm, message)
    return first


def test_servers_see_a_uniform_opened_value():
    # x = a + r for a constant a: what each server sees must not depend on a
    n = 20000
    seen = first_messages_to_server1(lambda ctx, a: securenn.drelu(ctx, a), n)
    top_bytes = (seen[SERVER0] >> np.uint64(56)).astype(np.intp)      # server0's x_0 = a_0 + r_0
    assert chi_square(np.bincount(top_bytes, minlength=256)) < chi_square_limit(255)


# ---- many public thresholds under one mask (drelu_thresholds) --------------------------------------
def at_least(values, thresholds, backend: str = "threads") -> np.ndarray:
    """[a >= T_j] (J, n) from ``securenn.drelu_thresholds`` for signed ring values and thresholds."""
    s0, s1 = shares_of(values)
    ts = np.array([int(t) % L for t in thresholds], np.uint64)

    def program():
        ctx = current()
        bits = securenn.drelu_thresholds(ctx, mine(ctx, s0, s1), ts)
        return bits.share

    results = run(program, backend)
    return np.array(reconstruct(results), dtype=object).reshape(len(thresholds), len(values))


@settings(max_examples=40)
@given(data=st.data())
def test_many_thresholds_under_one_mask_match_python(data):
    # every difference a - T_j in the ring, read as signed, as drelu's
    values = data.draw(st.lists(st.integers(-(1 << 62), (1 << 62) - 1), min_size=1, max_size=6))
    thresholds = data.draw(st.lists(st.one_of(st.sampled_from(values), st.integers(-(1 << 62), (1 << 62) - 1)),
                                    min_size=1, max_size=5))
    got = at_least(values, thresholds)
    assert got.tolist() == [[int(v >= t) for v in values] for t in thresholds]


def test_many_thresholds_at_the_edges_and_empty():
    values = [0, 1, -1, (1 << 62) - 1, -(1 << 62), 5, 4, 6]
    thresholds = [0, 5, 1 << 61, -(1 << 61), -1, 1]
    got = at_least(values, thresholds)
    assert got.tolist() == [[int(v >= t) for v in values] for t in thresholds]
    assert at_least(values, [0, 1], backend="processes").tolist() == [[int(v >= t) for v in values] for t in (0, 1)]

    def program():
        ctx = current()
        empty = Shared(np.zeros(0, np.uint64) if ctx.is_server else None, (0,))
        return securenn.drelu_thresholds(ctx, empty, np.arange(3, dtype=np.uint64)).shape

    assert run(program)[SERVER0] == (3, 0)


def threshold_pairs_statistic(n: int = 2000) -> float:
    """Chi-square of the pairs (server0's digit for threshold 3, for threshold 9) of every compared
    element and bit position, as the producer receives them in ``drelu_thresholds``."""
    seen = [message for frm, message in received_by(
        PRODUCER, lambda ctx, a: securenn.drelu_thresholds(ctx, a, np.array([3, 9], np.uint64)), n)
        if frm == SERVER0 and message.ndim == 2]
    [digits] = seen                                           # (63, 2 n): threshold-major columns
    first, second = digits[:, :n].astype(np.intp), digits[:, n:].astype(np.intp)
    return chi_square(np.bincount((first * zp.P + second).reshape(-1), minlength=zp.P * zp.P))


def test_two_thresholds_of_one_element_look_independent_to_the_producer():
    # the shared bits of r enter both comparisons; each digit's own offset, multiplier and rotation
    # must make server0's digits for the two thresholds independent uniform pairs on Z_p^2
    assert threshold_pairs_statistic() < chi_square_limit(zp.P * zp.P - 1)


def test_the_pairs_test_detects_randomness_shared_by_the_thresholds(monkeypatch):
    # the same offsets, multipliers and rotation for both thresholds of an element: the digits of
    # the two comparisons become dependent, and the statistic says so
    for name in ("uniform", "uniform_nonzero"):
        real = getattr(zp, name)

        def repeated(prf, *args, real=real, **kwargs):
            drawn = real(prf, *args, **kwargs)
            if drawn.ndim and drawn.shape[-1] == 4000:
                drawn[..., 2000:] = drawn[..., :2000]
            return drawn
        monkeypatch.setattr(zp, name, repeated)
    assert threshold_pairs_statistic() > chi_square_limit(zp.P * zp.P - 1)


# ---- a product of the bit folded into the comparison (falcon_msb's times) ---------------------------
def relu_times(values, others, bits: int = 64, twice: bool = False, shift: int = 0):
    """(ReLU, DReLU, DReLU * other) of the shared values as Python integers (signed, signed, mod L),
    from ``securenn.relu_times``; ``twice``: a second call with the same other, opened by the first;
    ``shift``: ``falcon_msb`` with the truncation by ``shift`` bits fused too (the ReLU is then of
    the truncated value)."""
    s0, s1 = shares_of(values)
    t0, t1 = shares_of(others)

    def program():
        ctx = current()
        a, other = mine(ctx, s0, s1), mine(ctx, t0, t1)
        for _ in range(2 if twice else 1):
            if shift:
                step = securenn.falcon_msb(ctx, a, with_product=True, bits=bits, times=other,
                                           truncated=pond.PendingTruncation(ctx, a, shift))
                value, bit, together = step.product, step.bit, step.times
            else:
                value, bit, together = securenn.relu_times(ctx, a, other, bits)
        return None if bit.share is None else (value.share, bit.share, together.share)

    results = run(program)
    value, bit, together = ([(int(x) + int(y)) % L for x, y in zip(results[SERVER0][i], results[SERVER1][i])]
                            for i in range(3))
    return [signed(v) for v in value], bit, together


@settings(max_examples=40)
@given(data=st.data())
def test_the_bit_times_another_value_comes_with_the_relu(data):
    bits = data.draw(st.sampled_from([64, 24]))
    top = 1 << (bits - 1)
    pairs = data.draw(st.lists(st.tuples(st.integers(-top, top - 1), ring_elements), min_size=1, max_size=8))
    twice = data.draw(st.booleans())
    values, others = zip(*pairs)
    relus, bits_out, together = relu_times(values, others, bits, twice)
    assert bits_out == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]
    assert together == [int(v >= 0) * int(o) % L for v, o in zip(values, others)]


def test_the_bit_times_another_value_at_the_edges_and_with_a_fused_truncation():
    values = edge_values("falcon")
    others = [(1 << 64) - 1, 0, 1 << 63, 12345] * len(values)
    relus, bits_out, together = relu_times(values, others[:len(values)])
    assert relus == [max(v, 0) for v in values] and bits_out == [int(v >= 0) for v in values]
    assert together == [int(v >= 0) * o for v, o in zip(values, others)]
    # a product's truncation by 16 bits, its ReLU and the bit times another value, in one comparison
    values = [0, 1, -1, (1 << 40) + 5, -(1 << 40) - 5, (1 << 61) - 1, -(1 << 61)]
    relus, bits_out, together = relu_times(values, [7] * len(values), shift=16)
    assert bits_out == [int(v >= 0) for v in values]
    assert [abs(r - (max(v, 0) >> 16)) <= 1 for r, v in zip(relus, values)] == [True] * len(values)
    assert together == [7 * int(v >= 0) for v in values]


def test_the_other_value_is_opened_under_a_uniform_mask_and_must_have_the_shape():
    n = 20000

    def call(ctx, constant):
        securenn.relu_times(ctx, constant, constant)
        with pytest.raises(ValueError, match="times of shape"):
            securenn.falcon_msb(ctx, constant, times=constant.map(lambda a: a[:-1]))

    seen = first_messages_to_server1(call, n)
    opened = seen[SERVER0].view(np.uint64)[n:]          # x_0, then times_0 - m_0
    assert opened.size == n
    assert chi_square(np.bincount((opened >> np.uint64(56)).astype(np.intp), minlength=256)) < chi_square_limit(255)


@pytest.mark.processes
@pytest.mark.parametrize("method", list(METHODS))
def test_drelu_on_processes_backend(method):
    values = [0, 1, -1, (1 << 62) - 1, -((1 << 62) - 1), 1 << 40, -(1 << 40)]
    if method == "falcon":
        values += [(1 << 63) - 1, -(1 << 63), 1 << 62]
    bits, relus = drelu_relu(values, [L - 1] * len(values), backend="processes", method=method)
    assert bits == [int(v >= 0) for v in values]
    assert relus == [max(v, 0) for v in values]
    got, expected = share_convert(SC_VALUES, backend="processes")
    assert got == expected


# ---- the producer's view of PrivateCompare ---------------------------------------------------------------------
def producer_view(n: int, bits: int = 64) -> np.ndarray:
    """What the producer receives in PrivateCompare: (2, bits, n) Z_p values, for n copies of one
    x > r whose first differing bit is fixed (bit 40): without the permutation the zero would never
    move."""
    r = 0x0123_4567_89AB_CDEF & ~(1 << 40)
    x = r | (1 << 40)
    x0, x1 = bit_shares([x] * n, bits)

    def program():
        ctx = current()
        received = []
        if ctx.name == PRODUCER:
            real_recv = ctx.recv
            ctx.recv = lambda frm: received.append(real_recv(frm)) or received[-1]
        shares = {SERVER0: x0, SERVER1: x1}.get(ctx.name)
        rs = np.full(n, r, np.uint64) if ctx.is_server else None
        answer = securenn.private_compare(ctx, shares, rs, np.zeros(n, np.uint8) if ctx.is_server else None, n,
                                          bits)
        return None if answer is None else (answer, np.stack(received))

    answer, received = run(program)[PRODUCER]
    assert answer.tolist() == [1] * n
    return received


def zero_positions(received: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = (received[0].astype(int) + received[1]) % zp.P
    zeros = d == 0
    assert (zeros.sum(axis=0) == 1).all()                 # exactly one zero per compared element
    return zeros.argmax(axis=0), d[~zeros]


@pytest.mark.parametrize("bits", [64, 63])
def test_producer_sees_a_uniform_zero_position_and_uniform_nonzero_values(bits):
    received = np.concatenate([producer_view(1600, bits) for _ in range(4)], axis=2)   # 4 runs, fresh keys
    positions, others = zero_positions(received)
    assert chi_square(np.bincount(positions, minlength=bits)) < chi_square_limit(bits - 1)
    assert chi_square(np.bincount(others, minlength=zp.P)[1:]) < chi_square_limit(zp.P - 2)
    for share in received:                                 # each server's message alone is uniform on Z_p
        assert chi_square(np.bincount(share.reshape(-1), minlength=zp.P)) < chi_square_limit(zp.P - 1)


def test_the_view_test_detects_a_missing_permutation(monkeypatch):
    monkeypatch.setattr(zp, "compare_masks", zp.compare_masks_numpy)
    monkeypatch.setattr(zp, "rotate", lambda d, g: d)
    positions, _ = zero_positions(producer_view(640))
    assert chi_square(np.bincount(positions, minlength=64)) > chi_square_limit(63)
