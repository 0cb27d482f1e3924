"""Comparisons, where, ReLU, max-pooling, max, argmax and division of private tensors.

Layer 6 of mpcnp, beside tensor.py: dispatch once on the run's protocol. ``protocol="securenn"`` uses
the exact SecureNN protocols (mpcnp.protocols.securenn, PETS 2019 section 4) with the producer as
helper; ``protocol="pond"`` uses the polynomial approximations of ``mpcnp.approx`` (``approx.step`` for
comparisons, ``approx.relu`` for ReLU), accurate on the input range their docstrings state.

Exactness under SecureNN: ``securenn.drelu`` (one PrivateCompare on the opened masked value) is exact
on all of Z_L, so a comparison of a and b is exact whenever a - b does not overflow the ring,
|a - b| < 2^(63 - frac_bits) in real terms: for every pair of encodable values (encoding refuses
|v| >= 2^(62 - frac_bits)). Results of comparisons are private 0.0/1.0 in fixed point: the 0/1 bit
scaled by 2^frac_bits, locally.
"""
from __future__ import annotations

import numpy as np

from mpcnp.protocols import maxpool, securenn
from mpcnp.protocols.dealer import add_public
from mpcnp.protocols.pond import Shared
from mpcnp.runtime.context import SERVER0, Context
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, as_private, plain, shape_proxy

__all__ = ["less", "less_equal", "greater", "greater_equal", "where", "relu", "maxpool2d", "max", "argmax",
           "divide"]


def _pond(ctx: Context) -> bool:
    return ctx.config.protocol == "pond"


def _fixed_bits(ctx: Context, bit: Shared, negate: bool = False) -> PrivateTensor:
    """A shared 0/1 ring bit (or 1 - bit) as a private 0.0/1.0 fixed-point tensor: local."""
    share = bit.share
    if share is not None:
        if negate:
            share = add_public(ctx, np.negative(share), 1)
        share = share << np.uint64(ctx.config.frac_bits)
    return PrivateTensor(ctx, Shared(None if share is None else np.asarray(share), bit.shape))


# ---- comparisons ------------------------------------------------------------------------------------
def _compare(a, b, numpy_op, difference_of, negate: bool) -> Tensor:
    """``numpy_op(a, b)`` as [d >= 0] = DReLU(d), or [d < 0] = 1 - DReLU(d) when ``negate``, for the
    difference d = ``difference_of(a, b)``; public operands give a PublicTensor."""
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        return PublicTensor(numpy_op(plain(a), plain(b)).astype(np.float64))
    ctx = (a if isinstance(a, PrivateTensor) else b)._ctx
    difference = difference_of(a, b)
    if _pond(ctx):
        from mpcnp import approx
        # approx.step(v) ~ [v > 0]; [d < 0] ~ step(-d) and [d >= 0] ~ 1 - step(-d), so that a <= b and
        # a > b still add up to exactly 1 (at d = 0 no approximation can tell < from <=)
        stepped = approx.step(-difference)
        return stepped if negate else 1 - stepped
    return _fixed_bits(ctx, securenn.drelu(ctx, difference._value), negate)


def less(a, b) -> Tensor:
    """a < b elementwise (NumPy broadcasting): private 0.0/1.0. SecureNN: 1 - DReLU(a - b), 3 rounds,
    213 bytes per element. Exact for |a - b| < 2^(63 - frac_bits), so for all encodable operands."""
    return _compare(a, b, np.less, lambda x, y: x - y, negate=True)


def less_equal(a, b) -> Tensor:
    """a <= b elementwise: DReLU(b - a). Exactness and cost as ``less``."""
    return _compare(a, b, np.less_equal, lambda x, y: y - x, negate=False)


def greater(a, b) -> Tensor:
    """a > b elementwise: 1 - DReLU(b - a). Exactness and cost as ``less``."""
    return _compare(a, b, np.greater, lambda x, y: y - x, negate=True)


def greater_equal(a, b) -> Tensor:
    """a >= b elementwise: DReLU(a - b). Exactness and cost as ``less``."""
    return _compare(a, b, np.greater_equal, lambda x, y: x - y, negate=False)


# ---- where and relu ---------------------------------------------------------------------------------
def where(cond, a, b) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (NumPy broadcasting), for any mix of private and public.

    A private ``cond`` must hold 0.0/1.0 (as comparisons give): b + cond * (a - b), one multiplication
    (2 rounds by PETS' count, 40 bytes per element when both factors are fresh), exact up to local
    truncation's error of one unit in the last place and its failure rate (fixedpoint.truncate_share).
    A public ``cond`` (true where nonzero) selects locally and exactly.
    """
    if isinstance(cond, PrivateTensor):
        return b + cond * (a - b)
    chosen = (plain(cond) != 0).astype(np.float64)
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        return PublicTensor(np.where(chosen != 0, plain(a), plain(b)))
    return a * chosen + b * (1.0 - chosen)  # integral public factors multiply shares exactly


def relu(x, bound: int = 8) -> Tensor:
    """max(x, 0) elementwise. SecureNN: exact for every encodable value (securenn.relu: PETS Alg. 7 on
    the default DReLU, the product folded into it), 3 rounds and 221 bytes per element; ``bound`` is
    not needed. Pond: ``approx.relu``, a polynomial accurate on [-bound, bound] (error 0.0044 bound)."""
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.maximum(plain(x), 0.0))
    ctx = x._ctx
    if _pond(ctx):
        from mpcnp import approx
        return approx.relu(x, bound)
    value, _ = securenn.relu(ctx, x._value)
    return PrivateTensor(ctx, value)


# ---- max, argmax, maxpool2d --------------------------------------------------------------------------
def _candidates(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``array`` with ``axes`` moved to the front and merged into one leading axis (C order)."""
    moved = np.moveaxis(array, axes, tuple(range(len(axes))))
    count = int(np.prod([array.shape[a] for a in axes], dtype=np.int64))
    return moved.reshape((count,) + moved.shape[len(axes):])


def _tournament(x: PrivateTensor, candidates, with_index: bool) -> tuple[PrivateTensor, PrivateTensor | None]:
    """The maximum over axis 0 of ``candidates(array)`` (and its position there, fixed point)."""
    ctx = x._ctx
    if x.share is None:
        shape = candidates(shape_proxy(x.shape)).shape
        values = Shared(None, shape)
    else:
        share = candidates(x.share)
        values = Shared(np.ascontiguousarray(share), share.shape)
    if values.shape[0] == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    if _pond(ctx):
        return _approximate_tournament(PrivateTensor(ctx, values), with_index)
    best, index = maxpool.tournament_max(ctx, values, with_index)
    if index is None:
        return PrivateTensor(ctx, best), None
    return PrivateTensor(ctx, best), _fixed_bits(ctx, index)


def _approximate_tournament(values: PrivateTensor, with_index: bool):
    """Pond's tournament: candidates paired as in maxpool.tournament_max, the larger chosen with
    approx.step and a multiplication (approximate near ties)."""
    from mpcnp import approx
    from mpcnp.functions import concat
    index = np.arange(values.shape[0], dtype=np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
    while values.shape[0] > 1:
        count, half = values.shape[0], values.shape[0] // 2
        left, right = values[0:2 * half:2], values[1:2 * half:2]
        left_index = index[0:2 * half:2]
        gap = right - left
        take = approx.step(gap)
        best = left + take * gap
        best_index = left_index + take * (index[1:2 * half:2] - left_index)
        if count % 2:
            best = concat([best, values[count - 1:]])
            best_index = concat([best_index, index[count - 1:]])
        values, index = best, best_index
    return values[0], (index[0] if with_index else None)


def _axes(ndim: int, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return np.lib.array_utils.normalize_axis_tuple(axis, ndim)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """The maximum over ``axis`` (None: all; an int or a tuple), as numpy.max.

    SecureNN: a tournament, ceil(log2 n) sequential levels of one ReLU (max(a, b) = b + relu(a - b),
    3 rounds each), n - 1 comparisons of 221 bytes per result element; exact. Pond: the same
    tournament with approx.step.
    """
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.max(plain(x), axis=axis, keepdims=keepdims))
    axes = _axes(x.ndim, axis)
    best, _ = _tournament(x, lambda a: _candidates(a, axes), with_index=False)
    if keepdims:
        best = best.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return best


def argmax(x, axis=None) -> Tensor:
    """The index of the maximum along ``axis`` (None: of the flattened array), as numpy.argmax, as a
    private fixed-point value. Ties: the first maximal element wins, as in NumPy (SecureNN exactly;
    Pond only when the values differ by more than approx.step's transition width).
    SecureNN cost: as ``max``, with 261 bytes per comparison and 4 rounds per level (one more product
    for the index).
    """
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.argmax(plain(x), axis=axis).astype(np.float64))
    axes = _axes(x.ndim, axis)
    if axis is not None and len(axes) != 1:
        raise TypeError("argmax takes one axis (an int) or None")
    _, index = _tournament(x, lambda a: _candidates(a, axes), with_index=True)
    return index


def maxpool2d(x, kernel, stride=None) -> Tensor:
    """Max pooling of NCHW ``x`` over kernel windows (an int or pair); stride defaults to the kernel.

    SecureNN: every window of the tensor is batched into each step of a tournament over the kh * kw
    window elements (maxpool.tournament_max: a 2x2 pool takes 2 sequential steps of 3 rounds), 221
    bytes per comparison, kh * kw - 1 comparisons per window; exact, with the first maximal element
    winning ties. Pond: the same tournament with approx.step.
    """
    from mpcnp.functions import pool_windows
    _, view = pool_windows(kernel, stride, "maxpool2d")  # checks shapes when applied

    def windows(a: np.ndarray) -> np.ndarray:
        return _candidates(view(a), (4, 5))   # (kh * kw, N, C, OH, OW)

    if not isinstance(x, PrivateTensor):
        return PublicTensor(windows(plain(x)).max(axis=0))
    best, _ = _tournament(x, windows, with_index=False)
    return best


# ---- division -----------------------------------------------------------------------------------------
def divide(x, y, integer_bits: int = 12) -> Tensor:
    """x / y elementwise for a private positive divisor y, by SecureNN's long division (PETS Alg. 8).

    Returns floor(x * 2^f / y) / 2^f (f = frac_bits): x / y rounded down to a multiple of 2^-f, exactly.
    Preconditions (real values, not checked: they are secret): y > 0; |x / y| < 2^integer_bits; and
    |x| 2^(2f) + 2^(integer_bits + 2f) y < 2^63 (at f = 16 and integer_bits = 12: y < 2^18 and
    |x| < 2^30). Outside them the result is wrong, not an error.
    Cost: integer_bits + f + 1 sequential steps of one DReLU and one product (4 rounds, 237 bytes per
    element each). A public y divides locally (x / y). Protocol "pond": x * approx.reciprocal(y), with
    the interval and error that function states (``integer_bits`` is then ignored).
    """
    if not isinstance(y, PrivateTensor):
        return x / plain(y) if isinstance(x, Tensor) else PublicTensor(plain(x) / plain(y))
    ctx = y._ctx
    if _pond(ctx):
        from mpcnp import approx
        return x * approx.reciprocal(y)
    if not 0 <= integer_bits <= 40:
        raise ValueError(f"integer_bits must be in [0, 40], got {integer_bits}")
    x = as_private(x, ctx)
    f = ctx.config.frac_bits
    shape = tuple(np.broadcast_shapes(x.shape, y.shape))
    offset = 1 << (integer_bits + f)  # x / y + 2^integer_bits >= 0: the long division sees a nonnegative x
    numerator = divisor = None
    if ctx.is_server:
        divisor = np.broadcast_to(y.share, shape).copy()
        numerator = (np.broadcast_to(x.share, shape) << np.uint64(f)) + divisor * np.uint64(offset)
    quotient = securenn.division(ctx, Shared(numerator, shape), Shared(divisor, shape), integer_bits + f + 1)
    share = quotient.share
    if share is not None and ctx.name == SERVER0:
        share = share - np.uint64(offset)
    return PrivateTensor(ctx, Shared(None if share is None else np.asarray(share), shape))
