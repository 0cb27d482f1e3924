"""The vector-Jacobian products of the tensor layer's operations, keyed by the operation's name.

A rule ``rule(g, out, *args, **kwargs)`` gets the gradient ``g`` of an operation's result, the result
``out`` (with what the forward pass kept for the gradient: relu's DReLU bit, the max tournament's
decisions) and the operands exactly as the operation got them; it yields (operand, thunk) pairs, and
the backward pass (mpcnp.autograd) calls a thunk only for an operand that needs a gradient. Rules are
written with tensor operations, so a private g gives private gradients and every party runs them
alike (SPMD).

Costs. Products reuse Beaver masks (pond.open_masks): the forward pass masked its private operands,
and transposes, reshapes, im2col and the like carry a mask along, so the backward pass of x @ w opens
only g (once, for both of its products) and the producer's output-sized triples; conv2d likewise.
relu multiplies g by the forward's DReLU bit, a ring 0/1 integer, in an untruncated product
(exact, 40 bytes per element, 1 round; no second comparison). maxpool2d and max route g down the
forward's tournament with its decisions, one bit product per comparison (ceil(log2 n) rounds).
Under pond no bit exists: relu's and the tournament's gradients evaluate pond's step polynomial
(mpcnp.approx.step: accurate for |x| in [0.25, 16], relu's input scaled into it by 16 / bound when
the bound exceeds 16), a polynomial step, so those gradients are approximate too.
sigmoid, tanh, exp, rsqrt and softmax use their outputs (2, 2, 1, 3 and 2 elementwise products);
log and sqrt divide with ``mp.rsqrt`` of the input (whose domain holds theirs); abs multiplies by
the sign from its ReLU's kept bit; x ** k by k x^(k - 1).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.approx import rsqrt
from mpcnp.functions import add_bias, conv2d, matmul, pool_windows
from mpcnp.protocols import families, pond
from mpcnp.protocols.polynomial import RELU_BOUND
from mpcnp.protocols.shared import Shared
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, as_private

__all__ = ["RULES", "NO_GRADIENT", "as_tensor", "unbroadcast", "rule"]

# Operations whose results are constant almost everywhere (comparisons, indices): never recorded.
NO_GRADIENT = frozenset({"lt", "le", "gt", "ge", "eq", "ne", "argmax", "argmin", "step", "sign", "private"})
RULES: dict[str, Callable[..., Iterator]] = {}
Pairs = Iterator[tuple[object, Callable[[], Tensor]]]


def rule(*names: str):
    """Register a vector-Jacobian product for the operations ``names``."""
    def register(fn):
        for name in names:
            RULES[name] = fn
        return fn
    return register


# ---- helpers --------------------------------------------------------------------------------------
def as_tensor(x) -> Tensor:
    """A tensor as is; anything else (array, scalar) as a PublicTensor."""
    return x if isinstance(x, Tensor) else PublicTensor(x)


def _shape(x) -> tuple[int, ...]:
    return x.shape if isinstance(x, Tensor) else np.shape(x)


def unbroadcast(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``g`` summed over the axes that broadcasting added to ``shape`` or stretched from 1."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(shape)


def _linear(t: Tensor, fn: Callable[[np.ndarray], np.ndarray], shape, carry_mask: bool = True) -> Tensor:
    """A linear map ``fn`` of the value, with result ``shape``: on public values, or on this party's
    share and, when ``carry_mask``, its Beaver mask and opened value (fn(x) - fn(a) = fn(x - a)), so
    a later product opens nothing new for it. Off the servers only the shape is made."""
    if isinstance(t, PublicTensor):
        return PublicTensor(fn(t.value))
    value = t._value
    result = Shared(None if value.share is None else np.asarray(fn(value.share)), tuple(shape))
    if carry_mask and value.mask is not None:
        result.mask = fn(value.mask)
        result.opened = None if value.opened is None else fn(value.opened)
    return PrivateTensor(t._ctx, result)


def _broadcast_to(g: Tensor, shape) -> Tensor:
    if isinstance(g, PublicTensor):
        return PublicTensor(np.broadcast_to(g.value, shape))
    return PrivateTensor(g._ctx, g._value.broadcast_to(shape))


def _times_bit(g: Tensor, bit: Shared, ctx) -> PrivateTensor:
    """g times a shared ring 0/1 bit, untruncated: exact. Local for a public g, else one product."""
    if isinstance(g, PublicTensor):
        return PrivateTensor(ctx, bit * fixedpoint.encode(g.value, ctx.config.frac_bits))
    return PrivateTensor(ctx, pond.product(ctx, bit, g._value, pond.MUL))


def _normal_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return np.lib.array_utils.normalize_axis_tuple(axis, ndim)


# ---- elementwise arithmetic ----------------------------------------------------------------------
@rule("add")
def _add(g, out, a, b) -> Pairs:
    yield a, lambda: unbroadcast(g, _shape(a))
    yield b, lambda: unbroadcast(g, _shape(b))


@rule("sub")
def _sub(g, out, a, b) -> Pairs:
    yield a, lambda: unbroadcast(g, _shape(a))
    yield b, lambda: unbroadcast(-g, _shape(b))


@rule("rsub")
def _rsub(g, out, x, other) -> Pairs:        # other - x
    yield x, lambda: unbroadcast(-g, _shape(x))
    yield other, lambda: unbroadcast(g, _shape(other))


@rule("neg")
def _neg(g, out, x) -> Pairs:
    yield x, lambda: -g


@rule("mul")
def _mul(g, out, a, b) -> Pairs:
    yield a, lambda: unbroadcast(g * b, _shape(a))
    yield b, lambda: unbroadcast(g * a, _shape(b))


@rule("truediv")
def _truediv(g, out, x, divisor) -> Pairs:    # the divisor is public (private ones are refused)
    yield x, lambda: unbroadcast(g / divisor, _shape(x))


@rule("where")
def _where(g, out, cond, a, b) -> Pairs:
    chosen = functools.cache(lambda: g * cond)
    yield a, lambda: unbroadcast(chosen(), _shape(a))
    yield b, lambda: unbroadcast(g - chosen(), _shape(b))


# ---- reductions and layout -------------------------------------------------------------------------
@rule("sum")
def _sum(g, out, x, axis=None, keepdims: bool = False) -> Pairs:
    axes = _normal_axes(axis, x.ndim)
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    yield x, lambda: _broadcast_to(g.reshape(kept), x.shape)


@rule("mean")
def _mean(g, out, x, axis=None, keepdims: bool = False) -> Pairs:
    axes = _normal_axes(axis, x.ndim)
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    count = int(np.prod([x.shape[i] for i in axes], dtype=np.int64))
    yield x, lambda: _broadcast_to((g * (1.0 / count)).reshape(kept), x.shape)


@rule("reshape")
def _reshape(g, out, x, *shape) -> Pairs:     # flatten() is recorded as reshape with no shape
    yield x, lambda: g.reshape(x.shape)


@rule("transpose")
def _transpose(g, out, x, *axes) -> Pairs:
    if not axes or axes == (None,):
        perm = tuple(reversed(range(x.ndim)))
    else:
        perm = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    inverse = tuple(int(i) for i in np.argsort([p % x.ndim for p in perm]))
    yield x, lambda: g.transpose(inverse)


def _scatter(a: np.ndarray, shape, index) -> np.ndarray:
    full = np.zeros(shape, a.dtype)
    np.add.at(full, index, a)     # sums repeated positions, as the gradient of a gather must
    return full


@rule("getitem")
def _getitem(g, out, x, index) -> Pairs:
    yield x, lambda: _linear(g, lambda a: _scatter(a, x.shape, index), x.shape, carry_mask=False)


@rule("concat")
def _concat(g, out, seq, axis: int = 0) -> Pairs:
    axis = axis % g.ndim
    start = 0
    for part in seq:
        stop = start + _shape(part)[axis]
        yield part, (lambda start=start, stop=stop: g[(slice(None),) * axis + (slice(start, stop),)])
        start = stop


@rule("stack")
def _stack(g, out, seq, axis: int = 0) -> Pairs:
    axis = axis % g.ndim
    for i, part in enumerate(seq):
        yield part, (lambda i=i: g[(slice(None),) * axis + (i,)])


@rule("pad")
def _pad(g, out, x, pad_width) -> Pairs:
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    inside = tuple(slice(int(before), int(before) + n) for (before, _), n in zip(widths, x.shape))
    yield x, lambda: g[inside]


# ---- products ---------------------------------------------------------------------------------------
def _swap(t: Tensor) -> Tensor:
    """The last two axes exchanged (a view: a private tensor keeps its Beaver mask)."""
    return t.transpose(tuple(range(t.ndim - 2)) + (t.ndim - 1, t.ndim - 2))


def _matmul_pairs(g, a, b) -> Pairs:
    """d(a @ b) with NumPy's shape rules: 1-d operands promoted, batch axes broadcast."""
    ta, tb = as_tensor(a), as_tensor(b)
    A = ta if ta.ndim >= 2 else ta.reshape(1, ta.shape[0])
    B = tb if tb.ndim >= 2 else tb.reshape(tb.shape[0], 1)
    batch = tuple(np.broadcast_shapes(A.shape[:-2], B.shape[:-2]))
    G = g.reshape(batch + (A.shape[-2], B.shape[-1]))    # one tensor for both products: one mask
    yield a, lambda: unbroadcast(G @ _swap(B), A.shape).reshape(ta.shape)
    yield b, lambda: unbroadcast(_swap(A) @ G, B.shape).reshape(tb.shape)


@rule("matmul")
def _matmul(g, out, a, b) -> Pairs:
    yield from _matmul_pairs(g, a, b)


@rule("rmatmul")
def _rmatmul(g, out, x, other) -> Pairs:      # other @ x
    yield from _matmul_pairs(g, other, x)


def _im2col_t(a: np.ndarray, kh: int, kw: int, sh: int, sw: int, pads) -> np.ndarray:
    """(C kh kw, N OH OW): each column one window of the padded NCHW ``a`` (ring.conv2d's order)."""
    if any(p for pair in pads for p in pair):
        a = np.pad(a, ((0, 0), (0, 0)) + tuple(pads))
    view = ring.windows(a, kh, kw, sh, sw)             # (N, C, OH, OW, kh, kw)
    n, c, oh, ow = view.shape[:4]
    return view.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * oh * ow)


def _col2im(blocks: np.ndarray, x_shape, sh: int, sw: int, pads) -> np.ndarray:
    """The adjoint of taking windows: (N, C, kh, kw, OH, OW) window values summed back onto the
    NCHW positions they came from, padding dropped."""
    n, c, kh, kw, oh, ow = blocks.shape
    (pt, pb), (pl, pr) = pads
    full = np.zeros((n, c, x_shape[2] + pt + pb, x_shape[3] + pl + pr), blocks.dtype)
    for p in range(kh):
        for q in range(kw):
            full[:, :, p:p + sh * (oh - 1) + 1:sh, q:q + sw * (ow - 1) + 1:sw] += blocks[:, :, p, q]
    return np.ascontiguousarray(full[:, :, pt:pt + x_shape[2], pl:pl + x_shape[3]])


@rule("conv2d")
def _conv2d(g, out, x, w, stride=1, padding=0) -> Pairs:
    """y = W cols(x) per image (im2col): dW = g cols(x)^T over the batch, dx = col2im(W^T g). cols(x)
    carries x's mask from the forward product, W^T carries w's, and both products share g's."""
    tx, tw = as_tensor(x), as_tensor(w)
    pads, (sh, sw) = ring.conv2d_geometry(tx.shape, tw.shape, stride, padding)
    n, c = tx.shape[:2]
    o, _, kh, kw = tw.shape
    oh, ow = g.shape[2:]
    depth = c * kh * kw
    G = g.reshape(n, o, oh * ow)

    def grad_x():
        cols = _swap(tw.reshape(o, depth)) @ G                    # (N, C kh kw, OH OW)
        return _linear(cols, lambda a: _col2im(a.reshape(n, c, kh, kw, oh, ow), tx.shape, sh, sw, pads),
                       tx.shape, carry_mask=False)

    def grad_w():
        cols = _linear(tx, lambda a: _im2col_t(a, kh, kw, sh, sw, pads), (depth, n * oh * ow))
        per_output = _linear(G, lambda a: a.transpose(1, 0, 2).reshape(o, n * oh * ow), (o, n * oh * ow))
        return (per_output @ _swap(cols)).reshape(tw.shape)

    yield x, grad_x
    yield w, grad_w


# ---- pooling, maxima, relu ----------------------------------------------------------------------------
def _pool_geometry(kernel, stride) -> tuple[tuple[int, int], tuple[int, int]]:
    (kh, kw), _ = pool_windows(kernel, stride, "pooling")
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if np.isscalar(stride) else tuple(stride))
    return (kh, kw), (int(sh), int(sw))


@rule("avgpool2d")
def _avgpool2d(g, out, x, kernel, stride=None) -> Pairs:
    (kh, kw), (sh, sw) = _pool_geometry(kernel, stride)
    n, c, oh, ow = g.shape

    def spread(a):
        blocks = np.broadcast_to(a[:, :, np.newaxis, np.newaxis], (n, c, kh, kw, oh, ow))
        return _col2im(blocks, x.shape, sh, sw, ((0, 0), (0, 0)))

    yield x, lambda: _linear(g * (1.0 / (kh * kw)), spread, x.shape, carry_mask=False)


def _interleave(first: Shared, second: Shared, last: Shared | None, count: int) -> Shared:
    """Rows first[0], second[0], first[1], second[1], ... (then last): a level's candidates again."""
    shape = (count,) + first.shape[1:]
    if first.share is None:
        return Shared(None, shape)
    rows = np.empty(shape, np.uint64)
    rows[0:2 * first.shape[0]:2] = first.share
    rows[1:2 * first.shape[0]:2] = second.share
    if last is not None:
        rows[2 * first.shape[0]:] = last.share
    return Shared(rows, shape)


def _route(g: Tensor, out: PrivateTensor, count: int) -> PrivateTensor:
    """The gradient of the max tournament's (count, *batch) candidates from that of its winners: down
    each level, the pair's first candidate gets decision * g and the second g - decision * g.
    securenn: the decision is the forward's bit [first >= second], exact, 40 bytes per comparison;
    pond: its step polynomial again. ceil(log2 count) rounds."""
    levels = getattr(out, "_levels", None)
    if levels is None:
        raise RuntimeError("this maximum kept no record of its comparisons: it was computed while "
                           "gradients were not recorded")
    ctx = out._ctx
    counts = [count]
    while counts[-1] > 1:
        counts.append((counts[-1] + 1) // 2)
    grads = as_private(g, ctx)._value.map(lambda a: a[np.newaxis])
    for (first, second, decision), size in zip(reversed(levels), reversed(counts[:-1])):
        half = size // 2
        pairs = grads.map(lambda a, half=half: a[:half])
        if decision is not None:
            to_first = pond.product(ctx, decision, pairs, pond.MUL)
        else:
            keep = families.of(ctx).ge_zero(ctx, first - second)
            to_first = pond.multiply(ctx, keep, pairs)
        odd = grads.map(lambda a, half=half: a[half:]) if size % 2 else None
        grads = _interleave(to_first, pairs - to_first, odd, size)
    return PrivateTensor(ctx, grads)


@rule("maxpool2d")
def _maxpool2d(g, out, x, kernel, stride=None, bound=None) -> Pairs:
    (kh, kw), (sh, sw) = _pool_geometry(kernel, stride)
    n, c, oh, ow = g.shape

    def grad():
        candidates = _route(g, out, kh * kw)             # (kh kw, N, C, OH, OW)
        blocks = lambda a: a.reshape(kh, kw, n, c, oh, ow).transpose(2, 3, 0, 1, 4, 5)  # noqa: E731
        return _linear(candidates, lambda a: _col2im(blocks(a), x.shape, sh, sw, ((0, 0), (0, 0))),
                       x.shape, carry_mask=False)

    yield x, grad


@rule("max", "min")      # min = -max(-x): the same routing, by the tournament on -x
def _max(g, out, x, axis=None, keepdims: bool = False) -> Pairs:
    axes = _normal_axes(axis, x.ndim)
    rest = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    reduced = tuple(x.shape[i] for i in axes)

    def grad():
        candidates = _route(g.reshape(rest), out, int(np.prod(reduced, dtype=np.int64)))
        back = lambda a: np.moveaxis(a.reshape(reduced + rest), tuple(range(len(axes))), axes)  # noqa: E731
        return _linear(candidates, lambda a: np.ascontiguousarray(back(a)), x.shape, carry_mask=False)

    yield x, grad


def _step_of(x: PrivateTensor, bound: float | None) -> PrivateTensor:
    """Pond's [x >= 0] by its step polynomial, x scaled into the step's [-16, 16] when the ReLU's
    interval [-bound, bound] is wider (None: Pond's default, 8)."""
    ctx = x._ctx
    bound = RELU_BOUND if bound is None else bound
    d = x._value if bound <= 16 else pond.scale(ctx, x._value, np.float64(16 / bound))
    return PrivateTensor(ctx, families.of(ctx).ge_zero(ctx, d))


@rule("relu")
def _relu(g, out, x, bound: float | None = None) -> Pairs:
    yield x, lambda: _relu_gradient(g, out, lambda: x, bound)


def _relu_gradient(g, out, preactivation: Callable[[], Tensor], bound) -> Tensor:
    """g times ReLU's derivative at its input: the forward's DReLU bit (securenn), else the step of
    the input (``preactivation()``: relu's x, or a fused op's x (op) w + bias, computed again)."""
    bit = out._value.drelu
    if bit is not None:
        return _times_bit(g, bit, out._ctx)
    return g * _step_of(preactivation(), bound)


@rule("dense_relu")
def _dense_relu(g, out, x, weight, bias=None, bound: float | None = None) -> Pairs:
    gz = _relu_gradient(g, out, lambda: add_bias(matmul(x, weight), bias), bound)
    yield from _matmul_pairs(gz, x, weight)
    if bias is not None:
        yield bias, lambda: unbroadcast(gz, _shape(bias))


@rule("conv2d_relu")
def _conv2d_relu(g, out, x, weight, bias=None, stride=1, padding=0, bound: float | None = None) -> Pairs:
    gz = _relu_gradient(g, out, lambda: add_bias(conv2d(x, weight, stride, padding), bias, channels=True), bound)
    yield from _conv2d(gz, out, x, weight, stride, padding)
    if bias is not None:
        yield bias, lambda: unbroadcast(gz, (_shape(bias)[0], 1, 1)).reshape(_shape(bias))


# ---- smooth functions: from their outputs -------------------------------------------------------------
@rule("sigmoid")
def _sigmoid(g, out, x) -> Pairs:
    yield x, lambda: g * (out - out * out)


@rule("tanh")
def _tanh(g, out, x) -> Pairs:
    yield x, lambda: g * (1.0 - out * out)


@rule("exp")
def _exp(g, out, x) -> Pairs:
    yield x, lambda: g * out


@rule("log")
def _log(g, out, x) -> Pairs:
    """g / x as g rsqrt(x)^2: mp.rsqrt covers log's domain (securenn: every x from a unit up, by exact
    range reduction; pond: [0.05, 100], which holds log's [0.05, 20])."""
    def grad():
        r = rsqrt(x)
        return g * (r * r)

    yield x, grad


@rule("sqrt")
def _sqrt(g, out, x) -> Pairs:
    yield x, lambda: g * (rsqrt(x) * 0.5)       # 1 / (2 sqrt(x)) with sqrt's domain


@rule("rsqrt")
def _rsqrt(g, out, x) -> Pairs:
    yield x, lambda: g * ((out * out) * (out * -0.5))    # -x^(-3/2) / 2 from the result


@rule("pow")
def _pow(g, out, x, k) -> Pairs:
    k = int(k)
    # k y^(k - 1) first (an integral factor multiplies shares exactly), then one truncated product with g:
    # g's product carries y^(k - 1)'s error times k |g| plus a single unit, not k units
    yield x, lambda: g * 0.0 if k == 0 else (g * float(k) if k == 1 else g * (x ** (k - 1) * float(k)))


@rule("abs")
def _abs(g, out, x, bound: float | None = None) -> Pairs:
    """g sign(x): securenn's |x| = 2 relu(x) - x keeps the ReLU's DReLU bit b, and g (2 b - 1) =
    2 g b - g is one exact product with it; pond: its step polynomial, as relu's gradient."""
    def grad():
        bit = out._value.drelu
        if bit is not None:
            return _times_bit(g, bit, out._ctx) * 2.0 - g
        return g * (_step_of(x, bound) * 2.0 - 1.0)

    yield x, grad


@rule("softmax")
def _softmax(g, out, x, axis: int = -1) -> Pairs:
    def grad():
        weighted = g * out
        return weighted - out * weighted.sum(axis=axis, keepdims=True)

    yield x, grad
