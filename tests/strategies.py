"""Hypothesis strategies shared by the test suite (one place, reused everywhere)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

U64_MAX = (1 << 64) - 1

# ---- ring (uint64) values -------------------------------------------------------------------------
# Values concentrated at the edges of Z_2^64 as well as uniform ones: 0, 1, 2^63 +- small, 2^64 - small.
ring_elements = st.one_of(
    st.integers(0, 16),
    st.integers(U64_MAX - 16, U64_MAX),
    st.integers((1 << 63) - 16, (1 << 63) + 16),
    st.integers(0, U64_MAX),
)


def ring_arrays(shape) -> st.SearchStrategy[np.ndarray]:
    """uint64 arrays of ``shape`` (a shape or a strategy of shapes) with edge-heavy elements."""
    return hnp.arrays(np.uint64, shape, elements=ring_elements)
