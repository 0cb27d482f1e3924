"""SecureNN's layers above DReLU (SelectShare, MaxPool, DMaxPool, Division) against Python integers,
and the cost of every SecureNN protocol against PROTOCOLS.md section 6.

Shares are built as in test_securenn.py. Costs: bytes are the payload bytes sent, summed over the three
parties; rounds are the depth of the protocol, the longest chain of messages each sent after the
previous was received, read off the Lamport clocks (``rounds`` in mp.stats) as the largest per-party
increase from a point where every clock is equal (two all-to-all exchanges equalise them).
"""
from __future__ import annotations

import numpy as np
import pytest

import mpcnp as mp
from mpcnp.protocols import maxpool, securenn, zp
from mpcnp.protocols.pond import Shared
from mpcnp.runtime.context import SERVER0, SERVER1, barrier, current
from test_securenn import L, RNG, mine, reconstruct, run, shares_of, signed


# ---- SelectShare, MaxPool, DMaxPool, Division ------------------------------------------------------------
def test_select_share():
    alpha = [0, 1, 1, 0, 1]
    xs, ys = [5, L - 3, 7, 1 << 63, 0], [9, 2, L - 1, 4, 1 << 62]
    a, x, y = shares_of(alpha), shares_of(xs), shares_of(ys)

    def program():
        ctx = current()
        return securenn.select_share(ctx, mine(ctx, *a), mine(ctx, *x), mine(ctx, *y)).share

    assert reconstruct(run(program)) == [yv if b else xv for b, xv, yv in zip(alpha, xs, ys)]


def windows_with_ties() -> np.ndarray:
    """(n, windows) signed values: ties at the max, in several places, the largest and smallest
    encodable magnitudes (differences up to 2^63 - 2), and random windows."""
    big = (1 << 62) - 1
    fixed = np.array([[3, 3, 3, 3], [1, 5, 5, 2], [5, 1, 2, 5], [-4, -4, -9, -4], [0, 0, 0, 1], [7, 6, 5, 4],
                      [-big, big, -big, 0], [big, -big, big, big]]).T
    rand = RNG.integers(-3, 4, (4, 10))
    return np.concatenate([fixed, rand], axis=1)


@pytest.mark.parametrize("algorithm", ["maxpool", "tournament"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_maxpool_value_index_and_tie_rule(algorithm, n):
    values = windows_with_ties()
    values = values[:n] if n <= 4 else np.concatenate([values, RNG.integers(-3, 4, (1, values.shape[1]))])
    s0, s1 = shares_of(values.reshape(-1))
    shape = values.shape

    def program():
        ctx = current()
        x = mine(ctx, s0.reshape(shape), s1.reshape(shape))
        if algorithm == "maxpool":
            best, index = maxpool.maxpool(ctx, x)
        else:
            best, index = maxpool.tournament_max(ctx, x, with_index=True)
        return None if best.share is None else (best.share, index.share)

    results = run(program)
    best = reconstruct({s: results[s][0] for s in (SERVER0, SERVER1)})
    index = reconstruct({s: results[s][1] for s in (SERVER0, SERVER1)})
    assert [signed(v) for v in best] == values.max(axis=0).tolist()
    assert index == values.argmax(axis=0).tolist()        # the first maximal element wins, as NumPy


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_dmaxpool_is_one_hot_at_the_argmax(n):
    values = RNG.integers(-5, 6, (n, 12))
    s0, s1 = shares_of(values.reshape(-1))

    def program():
        ctx = current()
        _, index = maxpool.maxpool(ctx, mine(ctx, s0.reshape(values.shape), s1.reshape(values.shape)))
        return maxpool.dmaxpool(ctx, index, n).share

    hot = np.array(reconstruct(run(program))).reshape(n, -1)
    np.testing.assert_array_equal(hot, np.eye(n, dtype=int)[values.argmax(axis=0)].T)


def test_division_matches_python():
    bits = 10
    ys = [1, 2, 3, 7, 1000, (1 << 40) + 3, 5, 1 << 54, (1 << 54) - 1]
    xs = [0, 1023 * 2 + 1, 5, 7 * 1000, 999, ((1 << 40) + 3) * 700 + 12, 5 * 1024 - 1, (1 << 63) - 1,
          (1 << 63) - 1 - (1 << 54)]
    # the last two at the preconditions' edge: x < 2^63 and 2^(bits - 1) y <= 2^63
    assert all(0 <= x < (y << bits) and x < 1 << 63 and y << (bits - 1) <= 1 << 63 for x, y in zip(xs, ys))
    x, y = shares_of(xs), shares_of(ys)

    def program():
        ctx = current()
        return securenn.division(ctx, mine(ctx, *x), mine(ctx, *y), bits).share

    assert reconstruct(run(program)) == [xv // yv for xv, yv in zip(xs, ys)]


# ---- costs ---------------------------------------------------------------------------------------------------
def measure(protocol, n: int) -> tuple[float, int]:
    """(payload bytes per element summed over the parties, depth in rounds) of the call that
    ``protocol(ctx)`` prepares (inputs are made before the clocks are equalised, the call after)."""
    def program():
        ctx = current()
        setup = protocol(ctx)
        barrier(ctx)  # every Lamport clock equal from here
        before = mp.stats()
        setup()
        after = mp.stats()
        return after["payload_bytes_sent"] - before["payload_bytes_sent"], after["rounds"] - before["rounds"]

    results = run(program)
    return sum(b for b, _ in results.values()) / n, max(r for _, r in results.values())


N = 40


def fresh(ctx, shape=(N,)) -> Shared:
    return Shared(ctx.own_prf.uint64(shape) if ctx.is_server else None, shape)


def pc_setup(bits: int):
    def setup(ctx):
        shares = np.zeros((bits, N), np.uint8) if ctx.is_server else None
        r = np.arange(N, dtype=np.uint64) if ctx.is_server else None
        beta = r.astype(np.uint8) & 1 if ctx.is_server else None
        return lambda: securenn.private_compare(ctx, shares, r, beta, N, bits)
    return setup


def odd_fresh(ctx) -> Shared:
    return Shared(zp.odd_reduce(ctx.own_prf.uint64(N)) if ctx.is_server else None, (N,))


# protocol: (setup returning the call to measure, elements, our bytes per element, our rounds,
#            PETS Table 2 / PROTOCOLS.md section 6 bytes and rounds, why ours is lower)
COSTS = {
    "private_compare": (pc_setup(64), N, 128, 1, 128, 1, "same"),
    "private_compare, 63 bits": (pc_setup(63), N, 126, 1, 128, 1, "one byte per bit and server"),
    "share_convert": (lambda c: (lambda a=fresh(c): securenn.share_convert(c, a)), N, 224, 4, 304, 4,
                      "producer's messages PRF-compressed (steps 2, 4)"),
    "compute_msb": (lambda c: (lambda a=odd_fresh(c): securenn.compute_msb(c, a)), N, 224, 4, 360, 5,
                    "PRF compression; the producer deals beta' XOR LSB(x), replacing the multiplication"),
    "drelu": (lambda c: (lambda a=fresh(c): securenn.drelu(c, a)), N, 213, 3, 664, 8,
              "one 63-bit PrivateCompare on the opened a + r (Falcon); r's Z_L shares cost no message"),
    "drelu, pets": (lambda c: (lambda a=fresh(c): securenn.drelu(c, a, "pets")), N, 448, 7, 664, 8,
                    "share_convert + compute_msb as above"),
    "relu": (lambda c: (lambda a=fresh(c): securenn.relu(c, a)), N, 221, 3, 704, 10,
             "drelu as above; the producer also deals z r, so the product with a = x - r is local"),
    "relu, pets": (lambda c: (lambda a=fresh(c): securenn.relu(c, a, "pets")), N, 488, 8, 704, 10,
                   "drelu, pets as above, then the product"),
    "select_share": (lambda c: (lambda a=fresh(c), x=fresh(c), y=fresh(c): securenn.select_share(c, a, x, y)),
                     N, 40, 1, 40, 2, "the producer's c1 and the opening are independent: 1 counted round"),
    "maxpool over 2": (lambda c: (lambda x=fresh(c, (2, N)): maxpool.maxpool(c, x)), N, 261, 4, 744, 9,
                       "max = other + relu(best - other) as above; one 40-byte product for the index"),
    "maxpool over 4": (lambda c: (lambda x=fresh(c, (4, N)): maxpool.maxpool(c, x)), N, 3 * 261, 3 * 4,
                       3 * 744, 3 * 9, "3 sequential steps of the above"),
    "tournament over 4": (lambda c: (lambda x=fresh(c, (4, N)): maxpool.tournament_max(c, x)), N, 3 * 221, 2 * 3,
                          3 * 744, 3 * 9, "3 comparisons (relu as above) in 2 levels, no index"),
    "tournament over 4, index": (lambda c: (lambda x=fresh(c, (4, N)): maxpool.tournament_max(c, x, True)), N,
                                 3 * 261, 2 * 4, 3 * 744, 3 * 9, "3 comparisons in 2 levels, as maxpool's steps"),
    "dmaxpool over 8": (lambda c: (lambda i=fresh(c): maxpool.dmaxpool(c, i, 8)), N, 8 * (8 + 2), 2,
                        16 * (8 + 1), 2, "server0's share of the one-hot vector PRF-compressed"),
    "division, 3 bits": (lambda c: (lambda x=fresh(c), y=fresh(c): securenn.division(c, x, y, 3)), N,
                         253 + 2 * 237, 3 * 4, 3 * (664 + 40), 3 * 10,
                         "drelu as above; the divisor's Beaver mask is opened once, in the first step"),
}


@pytest.mark.parametrize("name", list(COSTS))
def test_costs_match_the_documented_table(name):
    setup, n, ours_bytes, ours_rounds, pets_bytes, pets_rounds, _why = COSTS[name]
    per_element, depth = measure(setup, n)
    assert (per_element, depth) == (ours_bytes, ours_rounds)
    assert per_element <= pets_bytes and depth <= pets_rounds
