"""SecureNN's composites above DReLU (SelectShare, MaxPool, DMaxPool, Division) against Python
integers, on shares chosen by the test (tests/helpers.py). Their costs are in test_costs.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from mpcnp.protocols import maxpool, securenn
from mpcnp.runtime.context import SERVER0, SERVER1, current
from helpers import L, mine, reconstruct, run_core as run, signed
from helpers import shares_of as _shares_of

RNG = np.random.default_rng(20190713)   # test data only


def shares_of(values, share0=None):
    return _shares_of(values, RNG, share0)


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
