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


# Matrix sizes around the C kernels' register tile (8 x 16) and its edges, and small ones in general.
matmul_sizes = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 33]), st.integers(0, 40))


@st.composite
def ring_views(draw, shape) -> np.ndarray:
    """uint64 arrays of ``shape`` laid out every which way: axes stored in any order, steps of 2,
    negative strides (values edge-heavy as in ``ring_arrays``)."""
    shape = tuple(shape)
    steps = [draw(st.sampled_from([1, 1, 2, -1, -2])) for _ in shape]
    order = draw(st.permutations(range(len(shape))))
    full = tuple(abs(s) * d for s, d in zip(steps, shape))
    base = draw(ring_arrays(tuple(full[i] for i in order)))
    view = base.transpose(np.argsort(order))[tuple(slice(None, None, s) for s in steps)]
    assert view.shape == shape
    return view


# ---- reals for fixed point --------------------------------------------------------------------------
def encodable_reals(frac_bits: int = 16, bound: float | None = None) -> st.SearchStrategy[float]:
    """Finite reals with |v| < min(bound, 2^(62 - frac_bits)), edges included: 0, +-1 ulp, the limit."""
    limit = float(2 ** (62 - frac_bits))
    top = limit if bound is None else min(bound, limit)
    ulp = 2.0 ** -frac_bits
    largest = np.nextafter(top, 0.0)
    return st.one_of(
        st.sampled_from([0.0, ulp, -ulp, largest, -largest, 1.0, -1.0]),
        st.floats(-largest, largest, allow_nan=False, allow_infinity=False),
        st.integers(-8, 8).map(lambda k: k * ulp),
    )


def real_arrays(shape, frac_bits: int = 16, bound: float | None = None) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` (a shape or strategy) with encodable, edge-heavy values."""
    return hnp.arrays(np.float64, shape, elements=encodable_reals(frac_bits, bound))


def grid_reals(lo: float, hi: float, frac_bits: int = 16, log: bool = False) -> st.SearchStrategy[float]:
    """Multiples of 2^-frac_bits in [lo, hi] (exactly what encoding shares, so none leaves the interval
    when encoded): the ends, 0 if inside, uniform draws, and log-uniform ones if ``log`` (0 < lo)."""
    first, last = int(np.ceil(lo * 2 ** frac_bits)), int(np.floor(hi * 2 ** frac_bits))
    units = [st.sampled_from(sorted({first, last, min(max(0, first), last)})), st.integers(first, last)]
    if log:
        units.append(st.floats(np.log(lo), np.log(hi))
                     .map(lambda v: min(max(int(np.rint(np.exp(v) * 2 ** frac_bits)), first), last)))
    return st.one_of(*units).map(lambda k: k * 2.0 ** -frac_bits)


def grid_arrays(shape, lo: float, hi: float, frac_bits: int = 16, log: bool = False):
    """float64 arrays of ``shape`` (a shape or strategy) drawn by ``grid_reals``."""
    return hnp.arrays(np.float64, shape, elements=grid_reals(lo, hi, frac_bits, log))


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


# ---- operands of private tensor operations ------------------------------------------------------
# Products of encoded values carry 2f fractional bits before truncation: |x * y| must stay well below
# 2^(63 - 2f) and local truncation fails with probability |x * y| * 2^(2f - 64) per element, so
# multiplicative tests draw |v| <= PRODUCT_BOUND (|x * y| <= 2^10: failure rate 2^-22 at f = 16).
PRODUCT_BOUND = 32.0


def broadcastable_pair(max_dims: int = 3, max_side: int = 4):
    """Two shapes that broadcast together (NumPy rules), size-0 and size-1 dimensions included."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_dims,
                                             min_side=0, max_side=max_side).map(lambda s: s.input_shapes)


def matmul_shapes(max_side: int = 5):
    """(shape_a, shape_b) valid for matmul: 1-D, 2-D and batched with broadcasting."""
    side = st.integers(0, max_side)

    def build(draw_values):
        n, k, m, batch_a, batch_b, kind = draw_values
        if kind == "vec-mat":
            return (k,), (k, m)
        if kind == "mat-vec":
            return (n, k), (k,)
        if kind == "vec-vec":
            return (k,), (k,)
        return batch_a + (n, k), batch_b + (k, m)

    batches = st.sampled_from([((), ()), ((2,), ()), ((), (3,)), ((2, 1), (3,)), ((1,), (2,))])
    return st.tuples(side, side, side, batches, st.sampled_from(["mat", "vec-mat", "mat-vec", "vec-vec"])) \
        .map(lambda t: build((t[0], t[1], t[2], t[3][0], t[3][1], t[4])))


# ---- layers of mpcnp.nn -----------------------------------------------------------------------------
# Batches of 0, 1 and a few samples; small spatial sizes around the window sizes; paddings of every kind.
batch_sizes = st.integers(0, 3)
PADDINGS = [0, 1, (1, 0), (0, 2), "same", "valid", ((0, 1), (1, 0)), ((2, 0), (0, 1))]


@st.composite
def conv_cases(draw):
    """(input shape NCHW, out_channels, kernel (kh, kw), stride (sh, sw), padding) that Conv2d accepts."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from(PADDINGS))
    pads = {0: (0, 0, 0, 0), 1: (1, 1, 1, 1), (1, 0): (1, 1, 0, 0), (0, 2): (0, 0, 2, 2), "valid": (0, 0, 0, 0),
            ((0, 1), (1, 0)): (0, 1, 1, 0), ((2, 0), (0, 1)): (2, 0, 0, 1)}.get(padding, (0, 0, 0, 0))
    height = draw(st.integers(max(1, kernel[0] - pads[0] - pads[1]), 6))
    width = draw(st.integers(max(1, kernel[1] - pads[2] - pads[3]), 6))
    shape = (draw(batch_sizes), draw(st.integers(1, 3)), height, width)
    return shape, draw(st.integers(1, 3)), kernel, stride, padding


@st.composite
def pool_cases(draw):
    """(input shape NCHW, kernel (kh, kw), stride (sh, sw) or None) with the window inside the input."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    shape = (draw(batch_sizes), draw(st.integers(1, 2)), draw(st.integers(kernel[0], 6)),
             draw(st.integers(kernel[1], 6)))
    return shape, kernel, stride
