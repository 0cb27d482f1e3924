"""Large tensors in bounded memory: inputs, products, comparisons and reveals of more than
sharing.CHUNK elements go chunk by chunk, and give what NumPy gives on the plaintext.

The chunk sizes are made small here (``small_chunks``), so that arrays of a few dozen elements
take the chunked paths, chunk boundaries included; on both backends (the processes fork after the
patch, so the children see it too). The memory figures of the 1e8-element run are in
test_faults.py (``test_a_large_tensor_flows_in_bounded_memory``).
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers import FRAC_BITS, ULP, quantize, run_private
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import PRODUCT_BOUND, encodable_reals, real_arrays

import mpcnp as mp
from mpcnp import comparisons
from mpcnp.protocols import sharing

CHUNK = 16  # elements per chunk in these tests; comparisons go 4 at a time

# Shapes of 17 to 120 elements: one to several chunks, the last one partial or full.
big_shapes = st.one_of(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
                       st.sampled_from([(CHUNK + 1,), (2 * CHUNK,), (3, CHUNK), (CHUNK * 5 + 3,)])
                       ).filter(lambda s: CHUNK < int(np.prod(s)) <= 120)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(sharing, "CHUNK", CHUNK)
    monkeypatch.setattr(comparisons, "COMPARE_CHUNK", CHUNK // 4)


EXAMPLES = {"threads": 25, "processes": 6}


@pytest.mark.parametrize("owner", ["alice", "server0", "server1"])
def test_large_inputs_share_and_reveal_exactly(small_chunks, backend, owner):
    """Sharing and revealing are exact on encoded values: what comes back is the quantized input."""
    extra = [owner] if owner == "alice" else []

    @settings(max_examples=EXAMPLES[backend])
    @given(values=real_arrays(big_shapes))
    def check(values):
        results = mp.run(lambda: mp.private(lambda: values, owner=owner).reveal(), parties=extra,
                         backend=backend)
        for got in results.values():
            np.testing.assert_array_equal(got, quantize(values))

    check()


def test_large_input_messages_are_chunks(small_chunks):
    """The data travels as ceil(n / CHUNK) messages (the last one partial), after the shape."""
    n = 5 * CHUNK + 3

    def program():
        before = mp.stats()
        mp.private(lambda: np.ones(n), owner="alice")
        after = mp.stats()
        return after["messages_sent"] - before["messages_sent"], after["messages_received"] - before["messages_received"]

    results = mp.run(program, parties=["alice"])
    assert results["alice"][0] == 3 + 6  # the shape to server0, producer, server1; then 6 chunks
    assert results["server1"][1] == 1 + 6


def test_large_reveal_to_some_parties(small_chunks, backend):
    values = np.linspace(-5, 5, 3 * CHUNK + 1)

    def program():
        x = mp.private(lambda: values, owner="alice")
        return x.reveal(to=["bob", "server1"])

    results = mp.run(program, parties=["alice", "bob"], backend=backend)
    for party, value in results.items():
        if party in ("bob", "server1"):
            np.testing.assert_array_equal(value, quantize(values))
        else:
            assert value is None


def test_large_products(small_chunks, backend):
    """x * y and x * x chunk by chunk: within one unit of the product of the quantized inputs (the
    truncation's error, k = 1: exact truncation is never off by more)."""
    @settings(max_examples=EXAMPLES[backend])
    @given(data=st.data())
    def check(data):
        shape = data.draw(big_shapes)
        x = data.draw(real_arrays(shape, bound=PRODUCT_BOUND))
        y = data.draw(real_arrays(shape, bound=PRODUCT_BOUND))
        got = run_private(lambda a, b: mp.stack([a * b, a * a]), x, y, backend=backend)
        expected = np.stack([quantize(x) * quantize(y), quantize(x) ** 2])
        np.testing.assert_allclose(got, expected, rtol=0, atol=ULP * 1.01)

    check()


def test_large_comparisons(small_chunks, backend):
    """x > c, x >= y, x < public array, x == y and public != x, chunk by chunk, exact under securenn
    (on the quantized values, which is what is shared)."""
    @settings(max_examples=EXAMPLES[backend])
    @given(data=st.data())
    def check(data):
        shape = data.draw(big_shapes)
        x = data.draw(real_arrays(shape, bound=1e6))
        y = data.draw(real_arrays(shape, bound=1e6))
        y.reshape(-1)[::3] = x.reshape(-1)[::3]  # ties, where >= and > differ
        c = data.draw(encodable_reals(FRAC_BITS, bound=1e6))
        public = quantize(y)

        def program(a, b):
            return mp.stack([a > c, a >= b, a < public, a == b, public != a])

        got = run_private(program, x, y, backend=backend)
        qx, qy, qc = quantize(x), quantize(y), quantize(np.array(c))
        np.testing.assert_array_equal(got, np.stack([qx > qc, qx >= qy, qx < public, qx == qy,
                                                     public != qx]).astype(float))

    check()


def test_equality_goes_chunk_by_chunk(small_chunks, monkeypatch):
    # two DReLUs an element: half a comparison chunk at a time, so memory stays bounded
    n, sizes = 5 * CHUNK + 3, []
    real = comparisons.equal_zero
    monkeypatch.setattr(comparisons, "equal_zero", lambda ctx, d, negate: sizes.append(d.size) or real(ctx, d, negate))

    def program():
        a = mp.private(lambda: np.arange(n, dtype=float), owner="server0")
        return (a == 7.0).reveal(), (a != a).reveal()

    equal, unequal = mp.run(program)["server0"]
    np.testing.assert_array_equal(equal, (np.arange(n) == 7).astype(float))
    np.testing.assert_array_equal(unequal, np.zeros(n))
    assert max(sizes) == CHUNK // 8 and sum(sizes) == 2 * n * 3     # 3 parties, two comparisons


def test_a_refused_value_in_a_later_chunk_is_named_on_its_owner_only(small_chunks):
    """The owner's error names the index in the whole array (never the value: fixedpoint.encode's
    secret mode); every other party learns only that the owner's input was refused."""
    values = np.zeros((4, CHUNK))
    values[3, 5] = np.inf
    seen = {}

    def program():
        try:
            return mp.private(lambda: values, owner="alice").reveal()
        except mp.PartyError as exc:
            seen[mp.party()] = str(exc)
            raise

    with pytest.raises(mp.PartyError, match=r"a non-finite value at index \(3, 5\)") as info:
        mp.run(program, parties=["alice"], timeout=5)
    assert info.value.party == "alice" and isinstance(info.value.cause, ValueError)
    # a party still agreeing settings when alice fails learns it there, outside the program: so only
    # the parties that were inside it record the notice here (the notice is the same everywhere)
    assert set(seen) <= {"server0", "server1", "producer"}  # the notices: test_supervision.py
    for party, text in seen.items():
        assert "alice's input was refused" in text and "inf" not in text and "(3, 5)" not in text, party
