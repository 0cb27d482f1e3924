"""The module-level functions of the API on private and public tensors: linear algebra, layout,
selection, ReLU and maxima (the latter through the run's protocol family). The approximations
(sigmoid, exp, reciprocal, ...) and division by a private value are in ``mpcnp.approx``.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.protocols import families, maxpool, pond, shared
from mpcnp.runtime.context import current
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, absolute, as_private, plain
from mpcnp.tracing import grad_enabled, operation

__all__ = ["matmul", "concat", "stack", "pad", "conv2d", "avgpool2d", "truncation",
           "where", "relu", "maxpool2d", "max", "argmax", "min", "argmin",
           "abs", "sign", "maximum", "minimum", "clip", "dense_relu", "conv2d_relu"]


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
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (kh, kw, sh, sw)):
        raise TypeError(f"{name}: kernel and stride must be whole numbers (or pairs of them), got "
                        f"kernel {kernel!r}, stride {stride!r}")
    if np.min([kh, kw, sh, sw]) < 1:  # (mp.min shadows the builtin here)
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
    ``avgpool2d``) divide ``"local"``ly or ``"exact"``ly; the run's ``truncation`` setting (exact under
    securenn, local under pond by default) holds outside any block.

    Local truncation (SecureML) is free but yields garbage with probability about |v| * 2^(2f - 64)
    per element of a product v, and local division about |x| * 2^(f - 64) per element of x; exact
    truncation (protocols.pond.truncate_exact) is always within one unit in the last place and exact
    division (pond.divide_exact) within two, for products inside the headroom |x y| < 2^(62 - 2f),
    at 4.25 bytes per element and one round (the wrap bit, see the cost table; 8.25 for division).
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

    A private ``cond`` holds 0.0/1.0, as comparisons give; the protocol family selects
    (``Family.select``). securenn: exact for every encodable a and b, by SecureNN's SelectShare with
    the comparison's ring bit: one Beaver product of the bit, untruncated (40 bytes per element when
    both factors are fresh, 1 round). A private cond not straight from a comparison (computed, say,
    as a product of two) is read as [cond >= 0.5] by one more comparison (213 bytes, 3 rounds).
    pond: b + cond * (a - b), one truncated product, within a unit for |a - b| < 2^(62 - 2f).
    A public ``cond`` (true where nonzero) selects locally and exactly.
    """
    if isinstance(cond, PrivateTensor):
        ctx = cond._ctx
        chosen = families.of(ctx).select(ctx, cond._value, as_private(a, ctx)._value, as_private(b, ctx)._value)
        return PrivateTensor(ctx, chosen)
    chosen = (plain(cond) != 0).astype(np.float64)
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        return PublicTensor(np.where(chosen != 0, plain(a), plain(b)))
    return a * chosen + b * (1.0 - chosen)  # integral public factors multiply shares exactly


@operation("relu")
def relu(x, bound: float | None = None) -> Tensor:
    """max(x, 0) elementwise. ``bound``: None or a positive number, a bound on |x|.

    securenn: without a bound, exact for every encodable value, 3 rounds and 221 bytes per element.
    With one, a promise that |x| < bound for every element: the comparison looks only at the
    k = floor(log2(bound 2^f)) + 2 low bits that this range needs (``families.bound_bits``), 3 rounds
    and 3k + 29 bytes per element (101 for bound 64 at frac_bits 16), exact for |x| < bound, and for
    x beyond (|x| >= 2^(k-1-f), the power of two above the bound) the result may be 0 instead of
    x or x instead of 0, silently; ``mp.run(..., validate=True)`` names an input beyond the bound.
    pond: a polynomial accurate on [-bound, bound], error 0.0044 bound (mpcnp.approx.relu_polynomial;
    None: 8; an integer up to 2^20; size it above the largest input).
    """
    families.check_bound(bound, "relu's bound")
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.maximum(plain(x), 0.0))
    ctx = x._ctx
    return PrivateTensor(ctx, families.of(ctx).relu(ctx, x._value, bound))


@operation("dense_relu")
def dense_relu(x, weight, bias=None, bound: float | None = None) -> Tensor:
    """relu(x @ weight + bias): a dense layer and its ReLU in one step (``nn.Sequential`` runs every
    Dense followed by a ReLU so). The same value as the two operations, with the product's truncation fused into the
    ReLU under securenn with exact truncation (``families.SecureNN.truncated_relu``): 3 rounds for
    the truncation and the ReLU instead of 4, 16 bytes per element more. Elsewhere the same steps as
    ``relu(x @ weight + bias, bound)``. ``bound``: as ``relu``'s."""
    return _product_relu(x, weight, pond.MATMUL, bias, bound, lambda: relu(add_bias(matmul(x, weight), bias), bound))


@operation("conv2d_relu")
def conv2d_relu(x, weight, bias=None, stride=1, padding=0, bound: float | None = None) -> Tensor:
    """relu(conv2d(x, weight, stride, padding) + bias[:, None, None]), fused as ``dense_relu``."""
    unfused = lambda: relu(add_bias(conv2d(x, weight, stride, padding), bias, channels=True), bound)  # noqa: E731
    return _product_relu(x, weight, pond.conv2d_op(stride, padding), bias, bound, unfused, channels=True)


def add_bias(y, bias, channels: bool = False):
    """y + bias, the bias of a dense layer (broadcast over the last axis) or, with ``channels``, of a
    convolution (one per channel of NCHW y); y itself for no bias. Any tensors or arrays: the
    pre-activation of ``dense_relu`` and ``conv2d_relu`` wherever it is needed again (their gradient,
    their validation)."""
    return y if bias is None else y + _bias_shaped(bias, channels)


def _bias_shaped(bias, channels: bool):
    """A dense layer's bias as is, a convolution's (one per channel) as (C, 1, 1) against NCHW."""
    return bias.reshape(-1, 1, 1) if channels else bias


def _product_relu(x, w, op: pond.Bilinear, bias, bound, unfused, channels: bool = False) -> Tensor:
    """relu(x (op) w + bias) from the untruncated product, for a private x or w (else ``unfused``)."""
    families.check_bound(bound, "relu's bound")
    if not (isinstance(x, PrivateTensor) or isinstance(w, PrivateTensor)):
        return unfused()
    ctx = current()
    if isinstance(x, PrivateTensor) and isinstance(w, PrivateTensor):
        product, shift = pond.product(ctx, x._value, w._value, op), ctx.config.frac_bits
    elif isinstance(x, PrivateTensor):
        product, shift = pond.scaled_product(ctx, x._value, plain(w), op)
    else:
        product, shift = pond.scaled_product(ctx, w._value, plain(x), op, reverse=True)
    if bias is not None:
        # the bias at the product's scale, times 2^shift (exact): truncating the sum then adds the bias
        # to the truncated product exactly
        b = _bias_shaped(bias, channels)
        if isinstance(b, PrivateTensor):
            product = product + (b._value << shift)
        else:
            encoded = fixedpoint.encode(plain(b), ctx.config.frac_bits)
            product = shared.add_public(ctx, product, encoded << np.uint64(shift))
    return PrivateTensor(ctx, families.of(ctx).truncated_relu(ctx, product, shift, bound))


@operation("max")
def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """The maximum over ``axis`` (None: all; an int or a tuple), as numpy.max (``x.max``).

    A tournament of ceil(log2 n) sequential levels, n - 1 comparisons per result element. securenn:
    exact, each comparison a ReLU (max(a, b) = b + relu(a - b): 221 bytes, 3 rounds). pond: the
    larger chosen by the polynomial step, approximate near ties.
    """
    return x.max(axis=axis, keepdims=keepdims) if isinstance(x, Tensor) else PublicTensor(x).max(axis, keepdims)


@operation("min")
def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """The minimum over ``axis``, as numpy.min (``x.min``): -max(-x), exactly as ``max``."""
    return x.min(axis=axis, keepdims=keepdims) if isinstance(x, Tensor) else PublicTensor(x).min(axis, keepdims)


@operation("argmax")
def argmax(x, axis=None) -> Tensor:
    """The index of the maximum along ``axis`` (None: of the flattened array), as numpy.argmax, as a
    private fixed-point value (``x.argmax``). Ties: the first maximal element wins, as in NumPy
    (securenn exactly; pond only when the values differ by more than the step's transition width,
    0.25). securenn cost: as ``max``, with 245 bytes per comparison and 3 rounds per level.
    """
    return x.argmax(axis=axis) if isinstance(x, Tensor) else PublicTensor(x).argmax(axis)


@operation("argmin")
def argmin(x, axis=None) -> Tensor:
    """The index of the minimum along ``axis`` (None: of the flattened array), as numpy.argmin
    (``x.argmin``): argmax of -x, so the first minimal element wins ties, exactly as ``argmax``."""
    return x.argmin(axis=axis) if isinstance(x, Tensor) else PublicTensor(x).argmin(axis)


@operation("maxpool2d")
def maxpool2d(x, kernel, stride=None, bound: float | None = None) -> Tensor:
    """Max pooling of NCHW ``x`` over kernel windows (an int or pair); stride defaults to the kernel.

    Every window of the tensor is batched into each level of a tournament over the kh * kw window
    elements (a 2x2 pool takes 2 sequential levels), kh * kw - 1 comparisons per window. securenn:
    exact, 221 bytes and 3 rounds per comparison, the first maximal element winning ties. With
    ``bound`` (None or a positive number), a promise that every window value has |x| < bound: the
    differences compared are below 2 bound, and each comparison is the bounded ReLU of
    k = floor(log2(2 bound 2^f)) + 2 bits (3k + 29 bytes: 104 for bound 64 at frac_bits 16), exact
    for values inside the bound and possibly wrong (either candidate) beyond, silently;
    ``mp.run(..., validate=True)`` names a value beyond the bound. pond: the same tournament with
    the polynomial step (``bound`` is not used).
    """
    _, view = pool_windows(kernel, stride, "maxpool2d")  # checks shapes when applied
    families.check_bound(bound, "maxpool2d's bound")

    if not isinstance(x, PrivateTensor):
        return PublicTensor(maxpool.candidates(view(plain(x)), (4, 5)).max(axis=0))
    ctx = x._ctx
    windows = x._value.map(view)   # (N, C, OH, OW, kh, kw); the tournament runs over kh * kw
    levels = [] if x.requires_grad and grad_enabled() else None    # kept for the gradient (mpcnp.vjp)
    family = families.of(ctx)
    step = family.max_step if bound is None else functools.partial(family.max_step, bound=bound)
    best, _ = maxpool.reduce_max(ctx, windows, (4, 5), step, levels=levels)
    best = PrivateTensor(ctx, best)
    if levels is not None:
        best._levels = levels
    return best


# ---- abs, sign, maximum, minimum, clip: ReLUs and comparisons of the family ----------------------------
def _private_context(*operands):
    """The context of the first private operand, or None if all are public."""
    for operand in operands:
        if isinstance(operand, PrivateTensor):
            return operand._ctx
    return None


def _relus(ctx, parts: list, bound: float | None) -> list[PrivateTensor]:
    """relu of each tensor of ``parts`` (one shape), all in one batch of the family's ReLU."""
    batch = stack([as_private(p, ctx) for p in parts])
    out = families.of(ctx).relu(ctx, batch._value, bound)
    return [PrivateTensor(ctx, out.map(lambda a, i=i: a[i], view=True)) for i in range(len(parts))]


@operation("abs")
def abs(x, bound: float | None = None) -> Tensor:  # noqa: A001 - NumPy's name
    """|x| elementwise, as ``abs(x)``: 2 relu(x) - x. securenn: exact for every encodable x, 221 bytes
    per element, 3 rounds (a ``bound`` is a promise on |x|, as for ``mp.relu``). pond: the polynomial
    ReLU on [-bound, bound] (``mp.relu``; None: 8), within 0.0088 bound + 20 bound units there
    (relu(0) is 0.0044 bound, so |0| is 0.0088 bound) and meaningless outside."""
    return absolute(x if isinstance(x, Tensor) else PublicTensor(x), bound)


@operation("sign")
def sign(x) -> Tensor:
    """-1.0, 0.0 or 1.0 elementwise, as numpy.sign: [x >= 0] - [-x >= 0], both comparisons in one
    batch of the family's ``ge_zero``. securenn: exact, 426 bytes per element, 3 rounds. pond: the
    step's accuracy for 0.25 <= |x| <= 16 (5e-6 + 6 units), 0.0 at x = 0 exactly by symmetry, between
    -1 and 1 inside the band; 12 rounds."""
    ctx = _private_context(x)
    if ctx is None:
        return PublicTensor(np.sign(plain(x)))
    both = families.of(ctx).ge_zero(ctx, shared.stack([x._value, -x._value]))
    return PrivateTensor(ctx, both.map(lambda a: a[0]) - both.map(lambda a: a[1]))


@operation("maximum")
def maximum(a, b, bound: float | None = None) -> Tensor:
    """The elementwise larger of a and b (NumPy broadcasting), as numpy.maximum: b + relu(a - b).
    securenn: exact for every pair of encodable values, 221 bytes per element, 3 rounds (a ``bound``
    is a promise on |a - b|, as for ``mp.relu``). pond: the polynomial ReLU, within 0.0044 bound +
    10 bound units for |a - b| <= bound (None: 8)."""
    ctx = _private_context(a, b)
    if ctx is None:
        return PublicTensor(np.maximum(plain(a), plain(b)))
    [gain] = _relus(ctx, [a - b], bound)
    return gain + b


@operation("minimum")
def minimum(a, b, bound: float | None = None) -> Tensor:
    """The elementwise smaller of a and b, as numpy.minimum: a - relu(a - b); exact under securenn,
    as ``maximum``."""
    ctx = _private_context(a, b)
    if ctx is None:
        return PublicTensor(np.minimum(plain(a), plain(b)))
    [excess] = _relus(ctx, [a - b], bound)
    return a - excess


@operation("clip")
def clip(x, lo, hi, bound: float | None = None) -> Tensor:
    """x limited to [lo, hi] elementwise, as numpy.clip (lo or hi None: no limit on that side), for
    lo <= hi (public bounds are checked: ValueError otherwise). x + relu(lo - x) - relu(x - hi), both
    ReLUs in one batch. securenn: exact for every encodable x, 221 bytes per element and bound,
    3 rounds (a ``bound`` is a promise on |x - lo| and |x - hi|, as for ``mp.relu``). pond: the
    polynomial ReLU, accurate when |x - lo| and |x - hi| are at most ``bound`` (None: 8)."""
    if lo is None and hi is None:
        raise ValueError("clip needs lo or hi (or both)")
    for side in (lo, hi):
        if side is not None and not isinstance(side, PrivateTensor) and np.any(np.isnan(plain(side))):
            raise ValueError("clip's bounds must not be NaN")
    if lo is not None and hi is not None and not isinstance(lo, PrivateTensor) and not isinstance(hi, PrivateTensor):
        if np.any(plain(lo) > plain(hi)):
            raise ValueError("clip needs lo <= hi")
    ctx = _private_context(x, lo, hi)
    if ctx is None:
        return PublicTensor(np.clip(plain(x), None if lo is None else plain(lo), None if hi is None else plain(hi)))
    x = as_private(x, ctx)
    parts = ([] if lo is None else [lo - x]) + ([] if hi is None else [x - hi])
    shape = np.broadcast_shapes(*[p.shape for p in parts])
    relus = _relus(ctx, [p + np.zeros(shape) if p.shape != shape else p for p in parts], bound)
    result = x
    if lo is not None:
        result = result + relus.pop(0)
    if hi is not None:
        result = result - relus.pop(0)
    return result
