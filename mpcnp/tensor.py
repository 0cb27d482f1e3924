"""PrivateTensor and PublicTensor: NumPy-like arrays whose private values live as shares.

Layer 6 of mpcnp. Every party holds its own tensor objects for the same program values (SPMD): the
servers hold additive shares (uint64, fixed point with the run's ``frac_bits``), every other party
only the shape. Operators dispatch here, once, by operand type, to the protocols: private with private
goes to Pond's triples; private with public is local; public with public is plain float64 NumPy;
comparisons, ==, abs, ** and maxima of a private operand go to mpcnp.comparisons (the run's protocol
family), NumPy's ufuncs by mpcnp.ufuncs.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from mpcnp import comparisons, fixedpoint, ufuncs
from mpcnp.comparisons import MAX_POWER
from mpcnp.tracing import before_reveal, grad_enabled, gradient_recorder, operation
from mpcnp.protocols import pond, sharing
from mpcnp.protocols.shared import Shared, shape_proxy, trivial
from mpcnp.runtime.context import Context, current

__all__ = ["Tensor", "PrivateTensor", "PublicTensor", "as_private", "plain", "shape_proxy", "equal", "absolute",
           "power", "reduce", "MAX_POWER"]


def plain(value) -> np.ndarray:
    """A public operand (PublicTensor, ndarray, scalar, nested list) as float64."""
    if isinstance(value, PublicTensor):
        return value.value
    if isinstance(value, PrivateTensor):
        raise TypeError("expected a public value, got a PrivateTensor")
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"unsupported operand of type {type(value).__name__} (dtype {array.dtype})")
    return array.astype(np.float64, copy=False)


class Tensor:
    """What private and public tensors share: a shape, NumPy-like properties and operator dispatch."""

    __array_priority__ = 1000
    shape: tuple[int, ...]

    # Gradients (mpcnp.autograd), plain attributes: ``requires_grad`` set by the user on a leaf (a
    # parameter) and by the gradient recorder on every result computed from one; ``grad`` the
    # gradient a leaf accumulates in ``backward``; ``grad_fn`` the recorded operation that made a
    # result (None on leaves).
    requires_grad: bool = False
    grad = None
    grad_fn = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def T(self):
        return self.transpose()

    @operation("reshape", method=True)
    def flatten(self):
        return self.reshape(-1)

    @operation("mean", method=True)
    def mean(self, axis=None, keepdims: bool = False):
        total = self.sum(axis=axis, keepdims=keepdims)
        count = self.size // max(1, total.size)
        if count == 0:
            raise ValueError(f"mean over an empty axis of a tensor of shape {self.shape}")
        return total / count

    @operation("sub", method=True)
    def __sub__(self, other):
        return self + (-other if isinstance(other, Tensor) else -plain(other))

    @operation("rsub", method=True)
    def __rsub__(self, other):
        return (-self) + other

    @operation("add", method=True)
    def __radd__(self, other):
        return self + other

    # ---- comparisons: private ones by the run's protocol family ----------------------------------------------
    @operation("lt", method=True)
    def __lt__(self, other):
        return compare(self, other, np.less, lambda a, b: a - b, negate=True)

    @operation("le", method=True)
    def __le__(self, other):
        return compare(self, other, np.less_equal, lambda a, b: b - a, negate=False)

    @operation("gt", method=True)
    def __gt__(self, other):
        return compare(self, other, np.greater, lambda a, b: b - a, negate=True)

    @operation("ge", method=True)
    def __ge__(self, other):
        return compare(self, other, np.greater_equal, lambda a, b: a - b, negate=False)

    def __rtruediv__(self, other):
        raise TypeError("division by a tensor is not supported with '/': use x * mp.reciprocal(y) or "
                        "mp.divide(x, y), whose docstrings state their input ranges and errors")

    # ---- NumPy habits: ==, !=, abs, **, maxima and minima, truth value, ufuncs -----------------------
    __hash__ = object.__hash__  # == is elementwise, as in NumPy; hashing stays by identity

    @operation("eq", method=True)
    def __eq__(self, other):
        return equal(self, other, negate=False)

    @operation("ne", method=True)
    def __ne__(self, other):
        return equal(self, other, negate=True)

    @operation("abs", method=True)
    def __abs__(self):
        return absolute(self)

    @operation("pow", method=True)
    def __pow__(self, k):
        return power(self, k)

    def __rpow__(self, base):
        raise TypeError("a tensor cannot be an exponent: x ** k takes a public integer k; for c ** x "
                        "use mp.exp(x * math.log(c))")

    @operation("max", method=True)
    def max(self, axis=None, keepdims: bool = False):
        return reduce(self, axis, keepdims, smallest=False, index=False)

    @operation("min", method=True)
    def min(self, axis=None, keepdims: bool = False):
        return reduce(self, axis, keepdims, smallest=True, index=False)

    @operation("argmax", method=True)
    def argmax(self, axis=None):
        return reduce(self, axis, False, smallest=False, index=True)

    @operation("argmin", method=True)
    def argmin(self, axis=None):
        return reduce(self, axis, False, smallest=True, index=True)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """``ndarray (op) tensor`` reaches here: operators go to the tensor's own (reflected)
        method; any other NumPy ufunc on a private tensor is a TypeError naming mpcnp's function;
        on public tensors only, ufuncs compute on the plaintext."""
        names = ufuncs.OPERATORS.get(ufunc.__name__)
        if names is not None and method == "__call__" and not kwargs and len(inputs) == 2:
            first, second = inputs
            if isinstance(first, Tensor):
                return getattr(first, names[0])(second)
            return getattr(second, names[1])(first)
        if not any(isinstance(item, PrivateTensor) for item in inputs):
            values = [item.value if isinstance(item, PublicTensor) else item for item in inputs]
            return PublicTensor(getattr(ufunc, method)(*values, **kwargs))
        raise ufuncs.refusal(ufunc, method)


class PublicTensor(Tensor):
    """A value every party knows: float64 plaintext, encoded only when it meets a share."""

    def __init__(self, value):
        self.value = plain(value).copy()
        self.shape = self.value.shape

    def __repr__(self) -> str:
        return f"PublicTensor(shape={self.shape})"

    @property
    def requires_grad(self) -> bool:
        return False

    @requires_grad.setter
    def requires_grad(self, wanted: bool) -> None:
        # Operations on public tensors alone are plain NumPy and are not recorded: a public leaf would
        # silently get no gradient.
        if wanted:
            raise TypeError("a PublicTensor carries no gradient: gradients are recorded through private "
                            "operations; share the value with mp.private(value, owner=...) to train it")

    def reveal(self, to=None) -> np.ndarray | None:
        ctx = current()
        return self.value.copy() if ctx.name in sharing.resolve_receivers(ctx, to) else None

    def __bool__(self) -> bool:
        return bool(self.value)

    @operation("neg", method=True)
    def __neg__(self):
        return PublicTensor(-self.value)

    @operation("add", method=True)
    def __add__(self, other):
        return other + self if isinstance(other, PrivateTensor) else PublicTensor(self.value + plain(other))

    @operation("mul", method=True)
    def __mul__(self, other):
        return other * self if isinstance(other, PrivateTensor) else PublicTensor(self.value * plain(other))

    __rmul__ = __mul__

    @operation("matmul", method=True)
    def __matmul__(self, other):
        if isinstance(other, PrivateTensor):
            return other.__rmatmul__(self)
        return PublicTensor(np.matmul(self.value, plain(other)))

    @operation("rmatmul", method=True)
    def __rmatmul__(self, other):
        return PublicTensor(np.matmul(plain(other), self.value))

    @operation("truediv", method=True)
    def __truediv__(self, other):
        if isinstance(other, PrivateTensor):
            return other.__rtruediv__(self)
        return PublicTensor(self.value / plain(other))

    def __rtruediv__(self, other):
        return PublicTensor(plain(other) / self.value)

    @operation("sum", method=True)
    def sum(self, axis=None, keepdims: bool = False):
        return PublicTensor(self.value.sum(axis=axis, keepdims=keepdims))

    @operation("reshape", method=True)
    def reshape(self, *shape):
        return PublicTensor(self.value.reshape(*shape))

    @operation("transpose", method=True)
    def transpose(self, *axes):
        return PublicTensor(self.value.transpose(*axes))

    @operation("getitem", method=True)
    def __getitem__(self, index):
        return PublicTensor(self.value[_check_index(index)])


def _check_index(index):
    """Basic slicing and integer indexing (docs/api.md): no boolean masks, which would leak nothing here
    but are not part of the contract, and no tensors as indices."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if isinstance(item, Tensor):
            raise TypeError("tensors cannot be used as indices; reveal the index first")
    return index


class PrivateTensor(Tensor):
    """A secret-shared array: shares on server0 and server1, only the shape elsewhere."""

    def __init__(self, ctx: Context, value: Shared):
        self._ctx = ctx
        self._value = value
        self.shape = tuple(value.shape)

    @property
    def share(self) -> np.ndarray | None:
        """This party's additive share (uint64), or None off the servers."""
        return self._value.share

    @property
    def frac_bits(self) -> int:
        """The fractional bits of the fixed-point encoding (the run's ``frac_bits``): one unit is
        2^-frac_bits."""
        return self._ctx.config.frac_bits

    def __repr__(self) -> str:
        return f"PrivateTensor(shape={self.shape}, party={self._ctx.name!r})"

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a private tensor is secret, so Python's if, and, or, not "
                        "cannot use it: select with mp.where(cond, a, b), or reveal() the value to "
                        "the parties allowed to learn it")

    def _new(self, value: Shared) -> "PrivateTensor":
        return PrivateTensor(self._ctx, value)

    def reveal(self, to=None) -> np.ndarray | None:
        """float64 values on the parties ``to`` (None: every party), None on the others."""
        before_reveal(self, sharing.resolve_receivers(self._ctx, to))
        ring_values = sharing.reveal(self._ctx, self.share, self.shape, to)
        if ring_values is None:
            return None
        return fixedpoint.decode(ring_values, self._ctx.config.frac_bits)

    # ---- local linear operations ---------------------------------------------------------------
    def _linear(self, fn: Callable[[np.ndarray], np.ndarray], view: bool = False) -> "PrivateTensor":
        """Apply a linear NumPy function share-wise. A view op (reshape, transpose, index) also carries
        the Beaver mask along, so the result needs no new mask in a later product."""
        return self._new(self._value.map(fn, view))

    @operation("neg", method=True)
    def __neg__(self):
        return self._new(-self._value)

    @operation("add", method=True)
    def __add__(self, other):
        if isinstance(other, PrivateTensor):
            return self._new(self._value + other._value)
        return self._new(pond.add_constant(self._ctx, self._value, plain(other)))

    @operation("sub", method=True)
    def __sub__(self, other):
        if isinstance(other, PrivateTensor):
            return self._new(self._value - other._value)
        return super().__sub__(other)

    @operation("sum", method=True)
    def sum(self, axis=None, keepdims: bool = False):
        return self._linear(lambda a: np.sum(a, axis=axis, keepdims=keepdims, dtype=np.uint64))

    @operation("reshape", method=True)
    def reshape(self, *shape):
        return self._linear(lambda a: a.reshape(*shape), view=True)

    @operation("transpose", method=True)
    def transpose(self, *axes):
        return self._linear(lambda a: a.transpose(*axes), view=True)

    @operation("getitem", method=True)
    def __getitem__(self, index):
        index = _check_index(index)
        return self._linear(lambda a: a[index], view=True)

    # ---- products ------------------------------------------------------------------------------
    def _product(self, other, op: pond.Bilinear, reverse: bool = False) -> "PrivateTensor":
        """self (op) other, or other (op) self if ``reverse``: a Beaver product for a private other,
        local for a public one (pond.scale)."""
        if isinstance(other, PrivateTensor):
            x, y = (other, self) if reverse else (self, other)
            return self._new(pond.multiply(self._ctx, x._value, y._value, op))
        return self._new(pond.scale(self._ctx, self._value, plain(other), op, reverse))

    @operation("mul", method=True)
    def __mul__(self, other):
        return self._product(other, pond.MUL)

    @operation("mul", method=True)
    def __rmul__(self, other):
        return self._product(other, pond.MUL, reverse=True)

    @operation("matmul", method=True)
    def __matmul__(self, other):
        return self._product(other, pond.MATMUL)

    @operation("rmatmul", method=True)
    def __rmatmul__(self, other):
        return self._product(other, pond.MATMUL, reverse=True)

    @operation("truediv", method=True)
    def __truediv__(self, other):
        if isinstance(other, PrivateTensor):
            raise TypeError("division by a private tensor is not supported with '/': use "
                            "x * mp.reciprocal(y) or mp.divide(x, y), whose docstrings state their "
                            "input ranges and errors")
        return self._new(pond.divide_by(self._ctx, self._value, plain(other)))

    # ---- gradients and in-place updates (mpcnp.autograd) ---------------------------------------
    def backward(self, gradient=None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf with ``requires_grad`` this
        tensor was computed from (reverse mode, PyTorch's contract). ``gradient``: the gradient of
        the final result with respect to ``self`` (public or private, self's shape); None for a
        1-element ``self`` (a loss) means 1. The recorded operations are released afterwards."""
        recorder = gradient_recorder()
        if recorder is None:
            raise RuntimeError("backward() works inside mp.run, whose parties record gradients")
        recorder.backward(self, gradient)

    def detach(self) -> "PrivateTensor":
        """The same value as a new tensor that requires no gradient and records none. Local."""
        return self._new(self._value)

    def _update(self, result: "PrivateTensor") -> "PrivateTensor":
        if self.requires_grad and grad_enabled():
            raise RuntimeError("in-place update of a tensor that requires grad: do it inside mp.no_grad() "
                               "(as an optimizer step does), or write y = x - ... for a new tensor")
        if result.shape != self.shape:
            raise ValueError(f"in-place update of a tensor of shape {self.shape} with a result of shape "
                             f"{result.shape}")
        self._value = result._value
        return self

    def __iadd__(self, other):
        """``x += y`` updates x in place (NumPy's and PyTorch's meaning): every reference to x, a
        model's parameter say, sees the new value. Cost as ``x + y``."""
        return self._update(self + other)

    def __isub__(self, other):
        """``x -= y`` in place, as ``__iadd__``."""
        return self._update(self - other)

    def __imul__(self, other):
        """``x *= y`` in place, as ``__iadd__``; cost as ``x * y``."""
        return self._update(self * other)



def compare(a, b, numpy_op, difference_of, negate: bool) -> Tensor:
    """``numpy_op(a, b)`` as 0.0/1.0: on the plaintext when both operands are public (a PublicTensor),
    else private, ``comparisons.ge_zero`` of the difference ``difference_of(a, b)`` (exactness and
    cost there), large operands of one shape (or scalars) chunk by chunk."""
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        return PublicTensor(numpy_op(plain(a), plain(b)).astype(np.float64))
    return _private_comparison(a, b, difference_of, lambda ctx, d: comparisons.ge_zero(ctx, d, negate))


def equal(a, b, negate: bool) -> Tensor:
    """``a == b`` (or ``a != b`` when ``negate``) as 0.0/1.0: on the plaintext when both operands are
    public, else private, ``comparisons.equal_zero`` of a - b (exactness and cost there), large
    operands chunk by chunk as ``compare``'s (half as many elements a chunk: two DReLUs each)."""
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        op = np.not_equal if negate else np.equal
        return PublicTensor(op(plain(a), plain(b)).astype(np.float64))
    return _private_comparison(a, b, lambda p, q: p - q if isinstance(p, Tensor) else -(q - p),
                               lambda ctx, d: comparisons.equal_zero(ctx, d, negate), comparisons.COMPARE_CHUNK // 2)


def _private_comparison(a, b, difference_of, compare, chunk: int | None = None) -> PrivateTensor:
    """``compare(ctx, d)`` of the difference d = ``difference_of(a, b)`` of operands one of which is
    private; operands of more than ``sharing.CHUNK`` elements of one shape (or scalars) go through
    ``comparisons.in_chunks`` (``chunk`` elements at a time), so that memory stays bounded."""
    x = a if isinstance(a, PrivateTensor) else b
    if math.prod(x.shape) > sharing.CHUNK and all(np.shape(v) in (x.shape, ()) for v in (a, b)):
        flat = [v.flatten() if isinstance(v, Tensor) else (v if np.ndim(v) == 0 else np.reshape(v, -1))
                for v in (a, b)]

        def difference_in(part: slice) -> Shared:
            return difference_of(*(v if np.ndim(v) == 0 else v[part] for v in flat))._value
        return x._new(comparisons.in_chunks(x._ctx, x.shape, difference_in, compare, chunk))
    return x._new(compare(x._ctx, difference_of(a, b)._value))


def absolute(x: Tensor, bound: float | None = None) -> Tensor:
    """|x|: NumPy's of a public x, else ``comparisons.absolute`` (``bound``, accuracy and cost there)."""
    if not isinstance(x, PrivateTensor):
        return PublicTensor(np.abs(plain(x)))
    return x._new(comparisons.absolute(x._ctx, x._value, bound))


def power(x: Tensor, k) -> Tensor:
    """x ** k for a public integer 0 <= k <= MAX_POWER (``comparisons.exponent`` checks it): NumPy's of
    a public x; 1 everywhere for k = 0, as in NumPy; else ``comparisons.power`` (error and cost there)."""
    if isinstance(k, Tensor):
        raise TypeError("the exponent of ** must be a public integer, not a tensor")
    k = comparisons.exponent(k)
    if not isinstance(x, PrivateTensor):
        return PublicTensor(plain(x) ** k)
    if k == 0:
        return as_private(np.ones(x.shape), x._ctx)
    return x._new(comparisons.power(x._ctx, x._value, k))


def reduce(x: Tensor, axis, keepdims: bool, smallest: bool, index: bool) -> Tensor:
    """The maximum (minimum if ``smallest``) of ``x`` over ``axis``, or with ``index`` its position
    (argmax/argmin: one axis or None for the flattened array): NumPy's of a public x, else
    ``comparisons.reduce_max`` (ties and cost there)."""
    axes = tuple(range(x.ndim)) if axis is None else np.lib.array_utils.normalize_axis_tuple(axis, x.ndim)
    if index and axis is not None and len(axes) != 1:
        raise TypeError(f"{'argmin' if smallest else 'argmax'} takes one axis (an int) or None")
    if not isinstance(x, PrivateTensor):
        value = plain(x)
        if index:
            found = (np.argmin if smallest else np.argmax)(value, axis=axis)
            return PublicTensor(np.asarray(found, dtype=np.float64))
        return PublicTensor((np.min if smallest else np.max)(value, axis=axis, keepdims=keepdims))
    # the tournament's decisions are kept for the gradient (mpcnp.vjp routes it down them)
    levels = [] if x.requires_grad and grad_enabled() and not index else None
    result = x._new(comparisons.reduce_max(x._ctx, x._value, axes, keepdims, smallest, index, levels))
    if levels is not None:
        result._levels = levels
    return result


def as_private(value, ctx: Context) -> PrivateTensor:
    """A private tensor as is; a public value as a trivial sharing (server0 holds its encoding, server1
    zeros): local, and revealing nothing since the value is public."""
    if isinstance(value, PrivateTensor):
        return value
    encoded = fixedpoint.encode(plain(value), ctx.config.frac_bits)
    return PrivateTensor(ctx, trivial(ctx, encoded, encoded.shape))
