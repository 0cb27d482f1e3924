"""What the tensor types' comparisons, ==, abs, ** and maxima compute on a private operand, on this
party's shares: the run's protocol family's comparisons (mpcnp.protocols.families) and products.

Layer 6 of mpcnp, below mpcnp.tensor: these functions take and return ``Shared`` values, never
tensors, so that the tensor types' operators can call them; ``mpcnp.tensor`` dispatches by operand
type (public operands compute on their plaintext with NumPy) and wraps the results.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from mpcnp.protocols import families, maxpool, pond, sharing
from mpcnp.protocols.shared import Shared, complement
from mpcnp.runtime.context import Context

__all__ = ["ge_zero", "in_chunks", "COMPARE_CHUNK", "equal_zero", "absolute", "exponent", "power",
           "MAX_POWER", "reduce_max"]


def ge_zero(ctx: Context, difference: Shared, negate: bool) -> Shared:
    """A comparison a (op) b as private 0.0/1.0: [d >= 0] for the ``difference`` d of its operands
    (the protocol family's ``ge_zero``), or 1 - [d >= 0] = [d < 0] when ``negate``.

    Under securenn, exact whenever a - b does not overflow the ring, i.e. for every pair of
    encodable values (DReLU is exact on all of Z_2^64): 3 rounds, 213 bytes per element. Under pond,
    approximate: accurate for |a - b| in [0.25, 16] (mpcnp.approx.step).
    """
    return _negated(ctx, families.of(ctx).ge_zero(ctx, difference), negate)


# A comparison's temporaries take about 30 times its operand (SecureNN's PrivateCompare: a byte per bit
# and element, several times over), so large comparisons go in chunks 8 times smaller than others.
COMPARE_CHUNK = sharing.CHUNK // 8


def in_chunks(ctx: Context, shape: tuple[int, ...], difference_in: Callable[[slice], Shared],
              compare: Callable[[Context, Shared], Shared], chunk: int | None = None) -> Shared:
    """``compare`` (``ge_zero`` or ``equal_zero`` with its negation bound) of a comparison of
    ``shape`` on ``chunk`` (default ``COMPARE_CHUNK``) elements at a time, where
    ``difference_in(part)`` is the difference of the operands' elements ``part`` of the C-order
    flattening: the temporaries (difference, bit, negation, a DReLU's bit matrices) take a chunk
    each, memory for the operands and the result only. One comparison's rounds per chunk."""
    n, chunk = math.prod(shape), chunk or COMPARE_CHUNK
    out = np.empty(n, np.uint64) if ctx.is_server else None
    bits = np.empty(n, np.uint64) if ctx.is_server else None
    every_bit = True  # each chunk's ring bit (what an exact where selects with), if all have one
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        result = compare(ctx, difference_in(part))
        every_bit = every_bit and result.bit is not None
        if out is not None:
            out[part] = result.share
            if every_bit:
                bits[part] = result.bit.share
    value = Shared(None if out is None else out.reshape(shape), shape)
    if every_bit:
        value.bit = Shared(None if bits is None else bits.reshape(shape), shape)
    return value


def equal_zero(ctx: Context, difference: Shared, negate: bool) -> Shared:
    """a == b (or a != b when ``negate``) as private 0.0/1.0 through the protocol family's
    ``equal_zero`` of the ``difference`` a - b.

    securenn: exact for every pair of encodable values, the two DReLUs of [d >= 0] and [-d >= 0] in
    one batch: 3 rounds, 426 bytes per element; the result keeps its ring bit, so ``where`` on it is
    exact. pond: [|a - b| <= 0.5] by two steps: 1 for |a - b| <= 0.25, 0 for 0.75 <= |a - b| <= 15.5,
    unknown between and meaningless beyond (the step's interval); 12 rounds.
    """
    return _negated(ctx, families.of(ctx).equal_zero(ctx, difference), negate)


def _negated(ctx: Context, bit: Shared, negate: bool) -> Shared:
    """The fixed-point 0.0/1.0 ``bit``, or 1 - bit when ``negate``: local."""
    return complement(ctx, bit, 1 << ctx.config.frac_bits) if negate else bit


def absolute(ctx: Context, x: Shared, bound: float | None = None) -> Shared:
    """|x| = 2 relu(x) - x with the family's ReLU (``bound``: Pond's interval [-bound, bound], None
    for 8; under securenn a promise on |x|, as for ``mp.relu``).
    securenn: exact for every encodable x, 221 bytes per element, 3 rounds. pond: within
    0.0088 bound + 20 bound units on [-bound, bound], meaningless outside."""
    positive = families.of(ctx).relu(ctx, x, bound)
    result = positive * 2 - x
    result.drelu = positive.drelu       # the sign, for the gradient (mpcnp.vjp)
    return result


MAX_POWER = 64


def exponent(k) -> int:
    """The exponent of x ** k as an int: TypeError unless ``k`` is a public integer (an int, or a
    float of integral value), ValueError outside [0, MAX_POWER]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer, float, np.floating)) or k != int(k):
        raise TypeError(f"x ** k takes a public integer k, got {k!r}: use mp.sqrt(x) for k = 1/2, "
                        "mp.rsqrt(x) for -1/2, mp.exp(k * mp.log(x)) for other real powers")
    k = int(k)
    if k < 0:
        raise ValueError(f"x ** {k}: negative powers are reciprocals, use mp.reciprocal(x ** {-k})")
    if k > MAX_POWER:
        raise ValueError(f"x ** {k}: powers above {MAX_POWER} leave the fixed-point range for any |x| "
                         "away from 1; use mp.exp(k * mp.log(x))")
    return k


def power(ctx: Context, x: Shared, k: int) -> Shared:
    """x ** k for an integer 1 <= k <= MAX_POWER, by repeated squaring: floor(log2 k) squarings
    and popcount(k) - 1 more products (Beaver products, ``pond.multiply``), each truncated (within
    a unit); the error grows like k |x|^(k - 1) units, and every intermediate power must stay
    inside the product headroom |v| < 2^(62 - 2f) (docs/api.md)."""
    result, square = None, x
    while True:
        if k & 1:
            result = square if result is None else pond.multiply(ctx, result, square)
        k >>= 1
        if not k:
            # a new value even for k = 1, as NumPy (times the integer 1: an exact local copy)
            return pond.scale(ctx, result, np.float64(1)) if result is x else result
        square = pond.multiply(ctx, square, square)


def reduce_max(ctx: Context, x: Shared, axes: tuple[int, ...], keepdims: bool, smallest: bool, index: bool,
               levels: list | None = None) -> Shared:
    """The maximum (minimum if ``smallest``) of ``x`` over ``axes`` (normalised), or with ``index``
    its position (argmax/argmin over one axis, or all of them for the flattened array, as a private
    fixed-point value). A tournament with the family's max step (``maxpool.reduce_max``, which
    appends its decisions to ``levels`` when given); a minimum is -max(-x), exact.
    Ties: the first extremal element wins, as in NumPy."""
    value = -x if smallest else x
    best, position = maxpool.reduce_max(ctx, value, axes, families.of(ctx).max_step, with_index=index,
                                        index_unit=1 << ctx.config.frac_bits, levels=levels)
    if index:
        return position
    best = -best if smallest else best
    if keepdims:
        best = best.map(lambda a: a.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape))))
    return best
