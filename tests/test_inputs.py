"""Inputs that would lose information: integers beyond 2^53 are encoded exactly (no float64 on the
way), nonzero values that round to 0 raise a PrecisionWarning on their owner alone, and the errors
for values that cannot be shared name positions and limits but never a value (every party sees
them)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import mpcnp as mp
from mpcnp import fixedpoint as fp


@given(st.lists(st.integers(-(1 << 53) - 1000, (1 << 53) + 1000) | st.integers(-(1 << 54) + 1, (1 << 54) - 1),
                min_size=1, max_size=8))
def test_integers_are_encoded_exactly_beyond_2_53(values):
    encoded = fp.encode(np.array(values, np.int64), 8)
    assert [int(v) >> 8 for v in encoded.view(np.int64)] == values


def test_a_big_integer_shared_privately_keeps_every_digit():
    big = (1 << 53) + 1   # float64 would make it 2^53

    def program():
        x = mp.private(lambda: np.array([big, -big, 7], np.int64), owner="alice")
        return (x * 1).share   # the ring value itself

    results = mp.run(program, parties=["alice"], frac_bits=8)
    ring = (results["server0"].astype(object) + results["server1"].astype(object)) % (1 << 64)
    signed = [v - (1 << 64) if v >= 1 << 63 else v for v in ring]
    assert signed == [big << 8, -big << 8, 7 << 8]


def test_integers_beyond_the_range_are_refused_without_the_value():
    with pytest.raises(ValueError, match=r"integer at index \(1,\) exceeds the largest encodable magnitude 2\^54"):
        fp.encode(np.array([0, 1 << 54]), 8, secret=True)
    with pytest.raises(ValueError, match=r"integer 18014398509481984 at index"):
        fp.encode(np.array([0, 1 << 54]), 8)   # a public value may be named


def test_values_that_round_to_zero_warn_on_their_owner_only():
    def program():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = mp.private(lambda: np.array([1e-9, -3e-6, 0.0, 1.0, 2.0 ** -17]), owner="alice")
            x.reveal(to="alice")
        return [(w.category, str(w.message)) for w in caught]

    # one process per party: warnings.catch_warnings swaps process-wide state, so on the threads
    # backend a party's recorder also catches what another thread warns (a ResourceWarning, say)
    results = mp.run(program, parties=["alice"], backend="processes")
    [(category, message)] = results["alice"]
    assert category is mp.PrecisionWarning
    # 1e-9, -3e-6 and 2^-17 (exactly half a unit rounds to even, 0)
    assert message.startswith("3 of 5 input values are nonzero but below half a unit 2^-17 at frac_bits=16")
    assert all(results[p] == [] for p in ("server0", "server1", "producer"))


def test_no_warning_for_exact_zeros_representable_values_or_the_odd_tiny_value():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp.encode(np.array([0.0, -0.0, 2.0 ** -16, 1e-4]), 16, secret=True)
        fp.encode(np.concatenate([np.ones(100), [1e-9]]), 16, secret=True)   # 1 in 101: below 1%
    with pytest.warns(mp.PrecisionWarning, match="1 of 100 input values"):
        fp.encode(np.concatenate([np.ones(99), [1e-9]]), 16, secret=True)   # 1 in 100
        fp.encode(np.array([1e-9]), 16)   # public constants (a polynomial's tiny coefficient) stay quiet


@pytest.mark.parametrize("bad, what", [(np.nan, "a non-finite value"), (np.inf, "a non-finite value"),
                                       (3.3e18, "a value")])
def test_errors_that_reach_the_other_parties_name_no_value(bad, what):
    def program():
        mp.private(lambda: np.array([0.0, 1.0, bad]), owner="alice")

    with pytest.raises(mp.PartyError) as info:
        mp.run(program, parties=["alice"])
    message = str(info.value)
    assert info.value.party == "alice" and what in message and "at index (2,)" in message
    assert "3.3e" not in message and "nan" not in message.lower().replace("non-finite", "") and "inf " not in message
