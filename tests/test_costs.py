"""Every protocol's bytes and rounds, measured, against the one cost table (mpcnp.protocols.costs);
the README's table and ``python -m mpcnp costs`` against the same table.

Bytes are payload bytes summed over the parties; rounds the depth of the call, the largest increase
of a party's Lamport clock from a point where all clocks are equal (tests/helpers.protocol_cost).
Ours must equal the table, and the table must never be costlier than the paper.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mpcnp as mp
from mpcnp.protocols import costs, maxpool, pond, securenn
from mpcnp.protocols.shared import Shared
from mpcnp.tensor import PrivateTensor
from mpcnp import zp
from helpers import protocol_cost

N = 40


def fresh(ctx, shape=(N,)) -> Shared:
    """A shared value with uniformly random shares (its value does not matter for the cost)."""
    return Shared(ctx.own_prf.uint64(shape) if ctx.is_server else None, tuple(shape))


def odd_fresh(ctx) -> Shared:
    return Shared(zp.odd_reduce(ctx.own_prf.uint64(N)) if ctx.is_server else None, (N,))


def compare_setup(bits: int):
    def setup(ctx):
        shares = np.zeros((bits, N), np.uint8) if ctx.is_server else None
        r = np.arange(N, dtype=np.uint64) if ctx.is_server else None
        beta = r.astype(np.uint8) & 1 if ctx.is_server else None
        return lambda: securenn.private_compare(ctx, shares, r, beta, N, bits)
    return setup


def inverse_sqrt_setup(rel_error):
    def setup(ctx):
        x, numerator = PrivateTensor(ctx, fresh(ctx)), PrivateTensor(ctx, fresh(ctx))
        return lambda: mp.inverse_sqrt_times(x, numerator, rel_error=rel_error)
    return setup


def in_mode(mode: str, fn):
    def call(ctx):
        ctx.truncation = mode
        return fn(ctx)
    return call


M, K, V = 3, 5, 2
X_SHAPE, W_SHAPE = (1, 2, 6, 6), (4, 2, 3, 3)  # output (1, 4, 4, 4)

# row: (setup(ctx) -> the call to measure, elements the cost is per, the row's dimensions)
MEASURED = {
    "matmul": (lambda c: (lambda x=fresh(c, (M, K)), y=fresh(c, (K, V)): pond.product(c, x, y, pond.MATMUL)),
               1, dict(m=M, n=K, v=V)),
    "multiply": (in_mode("local", lambda c: (lambda x=fresh(c), y=fresh(c): pond.multiply(c, x, y))), N,
                 dict(n=1)),
    "conv2d": (lambda c: (lambda x=fresh(c, X_SHAPE), w=fresh(c, W_SHAPE):
                          pond.product(c, x, w, pond.conv2d_op(1, 0))), 1,
               dict(x=np.prod(X_SHAPE), w=np.prod(W_SHAPE), z=64, m=4, f=3, i=2, o=4)),
    "truncate_exact": (lambda c: (lambda x=fresh(c): pond.truncate_exact(c, x, 16)), 1, dict(n=N)),
    "divide_exact": (lambda c: (lambda x=fresh(c): pond.divide_exact(c, x, np.array(3))), 1, dict(n=N)),
    "private_compare": (compare_setup(64), N, dict(n=1)),
    "share_convert": (lambda c: (lambda a=fresh(c): securenn.share_convert(c, a)), N, dict(n=1)),
    "compute_msb": (lambda c: (lambda a=odd_fresh(c): securenn.compute_msb(c, a)), N, dict(n=1)),
    "drelu": (lambda c: (lambda a=fresh(c): securenn.drelu(c, a)), N, dict(n=1)),
    "drelu_bounded": (lambda c: (lambda a=fresh(c): securenn.drelu(c, a, bits=24)), N, dict(n=1, k=24, s=0, w=4)),
    "relu_bounded": (lambda c: (lambda a=fresh(c): securenn.relu(c, a, bits=24)), N, dict(n=1, k=24, s=0)),
    "drelu_thresholds": (lambda c: (lambda a=fresh(c): securenn.drelu_thresholds(c, a, np.arange(3, dtype=np.uint64))),
                         N, dict(n=1, J=3)),
    "drelu_pets": (lambda c: (lambda a=fresh(c): securenn.drelu_pets(c, a)), N, dict(n=1)),
    "relu": (lambda c: (lambda a=fresh(c): securenn.relu(c, a)), N, dict(n=1)),
    "relu_pets": (lambda c: (lambda a=fresh(c): securenn.relu_pets(c, a)), N, dict(n=1)),
    "relu_times": (lambda c: (lambda a=fresh(c), t=fresh(c): securenn.relu_times(c, a, t)), N, dict(n=1)),
    "truncate_relu": (lambda c: (lambda a=fresh(c): securenn.truncate_relu(c, a, 16)), 1, dict(n=N, k=64, w=8)),
    "select_share": (lambda c: (lambda a=fresh(c), x=fresh(c), y=fresh(c): securenn.select_share(c, a, x, y)),
                     N, dict(n=1)),
    "max_step": (lambda c: (lambda x=fresh(c, (2, N)): maxpool.tournament_max(c, x)), N, dict(n=1)),
    "maxpool_step": (lambda c: (lambda x=fresh(c, (2, N)): maxpool.maxpool(c, x)), N, dict(n=1)),
    "dmaxpool": (lambda c: (lambda i=fresh(c): maxpool.dmaxpool(c, i, 8)), N, dict(n=1, window=8)),
    # one quotient bit; a second step shows the per-step cost without the divisor's first opening
    "division_step": (lambda c: (lambda x=fresh(c), y=fresh(c): securenn.division(c, x, y, 1)), N, dict(n=1)),
    # the values do not matter for the cost (all its truncations are exact whatever the run's mode)
    "inverse_sqrt": (inverse_sqrt_setup(None), 1, dict(n=N)),
    "inverse_sqrt_adam": (inverse_sqrt_setup(1e-3), 1, dict(n=N)),
}


def test_a_value_opened_before_costs_its_fold_8_bytes_only():
    def setup(ctx):
        a, other = fresh(ctx), fresh(ctx)
        pond.open_masks(ctx, [other])
        return lambda: securenn.relu_times(ctx, a, other)
    assert protocol_cost(setup, N) == (costs.COSTS["relu_times"].bytes(n=1) - 16, 3)


def test_every_row_is_measured():
    assert set(MEASURED) == set(costs.COSTS)


@pytest.mark.parametrize("name", list(costs.COSTS))
def test_measured_bytes_and_rounds_equal_the_table(name):
    row = costs.COSTS[name]
    setup, per, dims = MEASURED[name]
    per_element, depth = protocol_cost(setup, per)
    expected = row.bytes(**dims) + (16 if name == "division_step" else 0)  # the divisor's first opening
    assert (per_element, depth) == (expected, row.rounds)
    if row.paper_formula is not None:
        assert expected <= row.paper_bytes(**dims) and row.rounds <= row.paper_rounds


def test_division_steps_after_the_first_cost_the_row():
    row = costs.COSTS["division_step"]
    one, rounds_one = protocol_cost(MEASURED["division_step"][0], N)
    three, rounds_three = protocol_cost(lambda c: (lambda x=fresh(c), y=fresh(c): securenn.division(c, x, y, 3)), N)
    assert three - one == 2 * row.bytes(n=1) and rounds_three - rounds_one == 2 * row.rounds


def test_longer_windows_are_sums_of_steps():
    step, index_step = costs.COSTS["max_step"], costs.COSTS["maxpool_step"]
    assert protocol_cost(lambda c: (lambda x=fresh(c, (4, N)): maxpool.tournament_max(c, x)), N) == \
        (3 * step.bytes(n=1), 2 * step.rounds)
    assert protocol_cost(lambda c: (lambda x=fresh(c, (4, N)): maxpool.tournament_max(c, x, with_index=True)), N) == \
        (3 * index_step.bytes(n=1), 2 * index_step.rounds)
    assert protocol_cost(lambda c: (lambda x=fresh(c, (4, N)): maxpool.maxpool(c, x)), N) == \
        (3 * index_step.bytes(n=1), 3 * index_step.rounds)


def test_a_bounded_fused_truncation_and_relu_costs_the_row_at_its_bits():
    # k = 40 bits of the product (a bound of 2^22 units before the truncation by 16), opened in 8 bytes;
    # k = 24 in 4 bytes
    row = costs.COSTS["truncate_relu"]
    for k, w in ((40, 8), (24, 4)):
        measured = protocol_cost(lambda c: (lambda a=fresh(c): securenn.truncate_relu(c, a, 16, bits=k)), 1)
        assert measured == (row.bytes(n=N, k=k, w=w), row.rounds)


def test_private_compare_on_63_bits_sends_a_byte_per_bit_and_server():
    assert protocol_cost(compare_setup(63), N) == (126, 1)


def test_the_readme_table_is_the_cost_table():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"<!-- costs -->\n(.*?)\n<!-- /costs -->", readme, re.S)
    assert found, "README.md lacks the cost table between <!-- costs --> markers"
    assert found.group(1).strip() == costs.markdown()


def test_the_command_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "mpcnp", "costs", "--markdown"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == costs.markdown()
    text = subprocess.run([sys.executable, "-m", "mpcnp", "costs"], capture_output=True, text=True,
                          check=True).stdout
    for row in costs.COSTS.values():
        assert row.what in text and row.formula in text


def test_formulas_refuse_what_they_cannot_evaluate():
    with pytest.raises(KeyError, match="dimension 'n'"):
        costs.COSTS["drelu"].bytes()
    with pytest.raises(ValueError, match="unsupported term"):
        costs._evaluate("2 ** n", {"n": 3})
