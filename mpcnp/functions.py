"""The module-level functions of the API on private and public tensors: linear algebra, layout,
selection, ReLU and maxima (the latter through the run's protocol family). The approximations
(sigmoid, exp, reciprocal, ...) and division by a private value are in ``mpcnp.approx``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.protocols import families, maxpool, pond, shared
from mpcnp.runtime.context import current
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, as_private, plain
from mpcnp.tracing import operation

__all__ = ["matmul", "concat", "stack", "pad", "conv2d", "avgpool2d", "truncation",
           "where", "relu", "maxpool2d", "max", "argmax"]


@operation("matmul")
def matmul(a, b):
    """a @ b with NumPy's shape rules, for any mix of private and public operands."""
    if isinstance(a, Tensor):
        return a @ b
    if isinstance(b, Tensor):
        return b.__rmatmul__(a)
    return PublicTensor(np.matmul(plain(a), plain(b)))


def _join(seq: Sequence, join_arrays, join_shared) -> Tensor:
    seq = list(seq)
    if not seq:
        raise ValueError("need at least one tensor to join")
    if not any(isinstance(t, PrivateTensor) for t in seq):
        return PublicTensor(join_arrays([plain(t) for t in seq]))
    ctx = current()
    return PrivateTensor(ctx, join_shared([as_private(t, ctx)._value for t in seq]))


@operation("concat")
def concat(seq: Sequence, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (np.concatenate); private if any part is."""
    return _join(seq, lambda arrays: np.concatenate(arrays, axis=axis), lambda parts: shared.concat(parts, axis))


@operation("stack")
def stack(seq: Sequence, axis: int = 0) -> Tensor:
    """Join tensors along a new axis (np.stack); private if any part is."""
    return _join(seq, lambda arrays: np.stack(arrays, axis=axis), lambda parts: shared.stack(parts, axis))


@operation("pad")
def pad(x, pad_width) -> Tensor:
    """Zero padding as ``np.pad(x, pad_width)`` (constant mode, value 0)."""
    if isinstance(x, PrivateTensor):
        return x._linear(lambda a: np.pad(a, pad_width))
    return PublicTensor(np.pad(plain(x), pad_width))


@operation("conv2d")
def conv2d(x, w, stride=1, padding=0) -> Tensor:
    """2-D convolution (cross-correlation, as in deep learning) of NCHW ``x`` with (out, in, kh, kw) ``w``.

    ``stride`` an int or pair; ``padding`` an int, a pair, "valid" or "same" (output ceil(H / stride),
    TensorFlow's split of the padding). Private operands use Pond's conv-shaped triples: the masks
    opened are input- and kernel-sized, not im2col-sized (PETS Table 1: 2 rounds,
    8 (2 m^2 f^2 i + 2 f^2 o i + m^2 o) bytes at most, less here since masks are not im2col-expanded).
    """
    op = pond.conv2d_op(stride, padding)
    if isinstance(x, PrivateTensor):
        return x._product(w, op)
    if isinstance(w, PrivateTensor):
        return w._product(x, op, reverse=True)
    # Public conv in float64 through the same im2col rule, for exact agreement with private results.
    return PublicTensor(_float_conv2d(plain(x), plain(w), stride, padding))


def _float_conv2d(x: np.ndarray, w: np.ndarray, stride, padding) -> np.ndarray:
    ((ph0, ph1), (pw0, pw1)), (sh, sw) = ring.conv2d_geometry(x.shape, w.shape, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph0, ph1), (pw0, pw1)))
    return np.einsum("nchwij,ocij->nohw", ring.windows(xp, *w.shape[2:], sh, sw), w)


def pool_windows(kernel, stride, name: str):
    """For a pooling function ``name`` with ``kernel`` (an int or pair) and ``stride`` (None: the
    kernel): ((kh, kw), a function from an NCHW array to its (N, C, OH, OW, kh, kw) window view).
    ValueError for a kernel or stride below 1, an array not NCHW, or one smaller than the window."""
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else tuple(kernel)
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if np.isscalar(stride) else tuple(stride))
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"pooling kernel and stride must be positive, got kernel {kernel}, stride {stride}")

    def view(a: np.ndarray) -> np.ndarray:
        if a.ndim != 4:
            raise ValueError(f"{name} expects an NCHW tensor, got shape {a.shape}")
        if a.shape[2] < kh or a.shape[3] < kw:
            raise ValueError(f"pooling window {(kh, kw)} is larger than the input's {tuple(a.shape[2:])}")
        return ring.windows(a, kh, kw, sh, sw)

    return (kh, kw), view


@operation("avgpool2d")
def avgpool2d(x, kernel, stride=None) -> Tensor:
    """Average pooling of NCHW ``x`` over kernel windows (an int or pair); stride defaults to kernel.

    Local on shares: a sum of window elements and a division by the window size.
    """
    (kh, kw), view = pool_windows(kernel, stride, "avgpool2d")

    def window_sum(a: np.ndarray) -> np.ndarray:
        return view(a).sum(axis=(-2, -1), dtype=a.dtype)

    if isinstance(x, PrivateTensor):
        return x._linear(window_sum) / (kh * kw)
    return PublicTensor(window_sum(plain(x)) / (kh * kw))


@contextlib.contextmanager
def truncation(mode: str) -> Iterator[None]:
    """Within the block, products truncate and divisions by public integers (``x / 3``, ``mean``,
    ``avgpool2d``) divide ``"local"``ly or ``"exact"``ly; the run's ``truncation`` setting chooses
    outside any block.

    Local truncation (SecureML) is free but yields garbage with probability about |v| * 2^(2f - 64)
    per element of a product v, and local division about |x| * 2^(f - 64) per element of x; exact
    truncation (protocols.pond.truncate_exact) is always within one unit in the last place and exact
    division (pond.divide_exact) within two, each for one extra bit product (see the cost table).
    Every party must enter the block (SPMD).
    """
    fixedpoint.check_truncation(mode)
    ctx = current()
    previous, ctx.truncation = ctx.truncation, mode
    try:
        yield
    finally:
        ctx.truncation = previous


# ---- where, relu, max, argmax, maxpool2d: through the protocol family -------------------------------
@operation("where")
def where(cond, a, b) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (NumPy broadcasting), for any mix of private and public.

    A private ``cond`` must hold 0.0/1.0 (as comparisons give): b + cond * (a - b), one multiplication
    (40 bytes per element when both factors are fresh, 1 round) within the truncation's error.
    A public ``cond`` (true where nonzero) selects locally and exactly.
    """
    if isinstance(cond, PrivateTensor):
        return b + cond * (a - b)
    chosen = (plain(cond) != 0).astype(np.float64)
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        return PublicTensor(np.where(chosen != 0, plain(a), plain(b)))
    return a * chosen + b * (1.0 - chosen)  # integral public factors multiply shares exactly


@operation("relu")
def relu(x, bound: int = 8) -> Tensor:
    """max(x, 0) elementwise. securenn: exact for every encodable value, 3 rounds and 221 bytes per
    element (``bound`` is not needed). pond: a polynomial accurate on [-bound, bound], error
    0.0044 bound (mpcnp.approx.relu_polynomial; size ``bound`` above the largest input)."""
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.maximum(plain(x), 0.0))
    ctx = x._ctx
    return PrivateTensor(ctx, families.of(ctx).relu(ctx, x._value, bound))


def _candidates(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``array`` with ``axes`` moved to the front and merged into one leading axis (C order)."""
    moved = np.moveaxis(array, axes, tuple(range(len(axes))))
    count = int(np.prod([array.shape[a] for a in axes], dtype=np.int64))
    return moved.reshape((count,) + moved.shape[len(axes):])


def _tournament(x: PrivateTensor, candidates, with_index: bool) -> tuple[PrivateTensor, PrivateTensor | None]:
    """The maximum over axis 0 of ``candidates(array)`` (and its position there, in fixed point), by
    the protocol family's max step."""
    ctx = x._ctx
    values = x._value.map(lambda a: np.ascontiguousarray(candidates(a)))
    if values.shape[0] == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    best, index = maxpool.tournament_max(ctx, values, families.of(ctx).max_step, with_index,
                                         index_unit=1 << ctx.config.frac_bits)
    return PrivateTensor(ctx, best), None if index is None else PrivateTensor(ctx, index)


def _axes(ndim: int, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return np.lib.array_utils.normalize_axis_tuple(axis, ndim)


@operation("max")
def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """The maximum over ``axis`` (None: all; an int or a tuple), as numpy.max.

    A tournament of ceil(log2 n) sequential levels, n - 1 comparisons per result element. securenn:
    exact, each comparison a ReLU (max(a, b) = b + relu(a - b): 221 bytes, 3 rounds). pond: the
    larger chosen by the polynomial step, approximate near ties.
    """
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.max(plain(x), axis=axis, keepdims=keepdims))
    axes = _axes(x.ndim, axis)
    best, _ = _tournament(x, lambda a: _candidates(a, axes), with_index=False)
    if keepdims:
        best = best.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return best


@operation("argmax")
def argmax(x, axis=None) -> Tensor:
    """The index of the maximum along ``axis`` (None: of the flattened array), as numpy.argmax, as a
    private fixed-point value. Ties: the first maximal element wins, as in NumPy (securenn exactly;
    pond only when the values differ by more than the step's transition width, 0.25).
    securenn cost: as ``max``, with 261 bytes per comparison and 4 rounds per level.
    """
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.argmax(plain(x), axis=axis).astype(np.float64))
    axes = _axes(x.ndim, axis)
    if axis is not None and len(axes) != 1:
        raise TypeError("argmax takes one axis (an int) or None")
    _, index = _tournament(x, lambda a: _candidates(a, axes), with_index=True)
    return index


@operation("maxpool2d")
def maxpool2d(x, kernel, stride=None) -> Tensor:
    """Max pooling of NCHW ``x`` over kernel windows (an int or pair); stride defaults to the kernel.

    Every window of the tensor is batched into each level of a tournament over the kh * kw window
    elements (a 2x2 pool takes 2 sequential levels), kh * kw - 1 comparisons per window. securenn:
    exact, 221 bytes and 3 rounds per comparison, the first maximal element winning ties. pond: the
    same tournament with the polynomial step.
    """
    _, view = pool_windows(kernel, stride, "maxpool2d")  # checks shapes when applied

    def windows(a: np.ndarray) -> np.ndarray:
        return _candidates(view(a), (4, 5))   # (kh * kw, N, C, OH, OW)

    if not isinstance(x, PrivateTensor):
        return PublicTensor(windows(plain(x)).max(axis=0))
    best, _ = _tournament(x, windows, with_index=False)
    return best
