"""PrivateTensor and PublicTensor: NumPy-like arrays whose private values live as shares.

Layer 6 of mpcnp. Every party holds its own tensor objects for the same program values (SPMD): the
servers hold additive shares (uint64, fixed point with the run's ``frac_bits``), every other party
only the shape. Operators dispatch here, once, by operand type, to the protocols: private with private
goes to Pond's triples; private with public is local; public with public is plain float64 NumPy;
comparisons go to the run's protocol family (mpcnp.protocols.families).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mpcnp import fixedpoint
from mpcnp.tracing import before_reveal, operation
from mpcnp.protocols import families, pond, sharing
from mpcnp.protocols.shared import Shared, add_public, shape_proxy, trivial
from mpcnp.runtime.context import SERVER0, Context, current

__all__ = ["Tensor", "PrivateTensor", "PublicTensor", "private", "public", "as_private", "plain",
           "shape_proxy"]


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

    __array_priority__ = 1000  # ndarray (op) Tensor defers to the Tensor's reflected operator
    __array_ufunc__ = None
    shape: tuple[int, ...]

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


class PublicTensor(Tensor):
    """A value every party knows: float64 plaintext, encoded only when it meets a share."""

    def __init__(self, value):
        self.value = plain(value).copy()
        self.shape = self.value.shape

    def __repr__(self) -> str:
        return f"PublicTensor(shape={self.shape})"

    def reveal(self, to=None) -> np.ndarray | None:
        ctx = current()
        return self.value.copy() if ctx.name in sharing.resolve_receivers(ctx, to) else None

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

    def __repr__(self) -> str:
        return f"PrivateTensor(shape={self.shape}, party={self._ctx.name!r})"

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



def compare(a, b, numpy_op, difference_of, negate: bool) -> Tensor:
    """``numpy_op(a, b)`` as private 0.0/1.0: [d >= 0] for the difference d = ``difference_of(a, b)``
    (the protocol family's ``ge_zero``), or 1 - [d >= 0] = [d < 0] when ``negate``. Public operands
    give a PublicTensor.

    Under securenn, exact whenever a - b does not overflow the ring, i.e. for every pair of
    encodable values (DReLU is exact on all of Z_2^64): 3 rounds, 213 bytes per element. Under pond,
    approximate: accurate for |a - b| in [0.25, 16] (mpcnp.approx.step).
    """
    if not isinstance(a, PrivateTensor) and not isinstance(b, PrivateTensor):
        return PublicTensor(numpy_op(plain(a), plain(b)).astype(np.float64))
    ctx = (a if isinstance(a, PrivateTensor) else b)._ctx
    difference = difference_of(a, b)
    at_least = families.of(ctx).ge_zero(ctx, difference._value)
    if negate:
        at_least = add_public(ctx, -at_least, np.uint64(1 << ctx.config.frac_bits))
    return PrivateTensor(ctx, at_least)


def as_private(value, ctx: Context) -> PrivateTensor:
    """A private tensor as is; a public value as a trivial sharing (server0 holds its encoding, server1
    zeros): local, and revealing nothing since the value is public."""
    if isinstance(value, PrivateTensor):
        return value
    encoded = fixedpoint.encode(plain(value), ctx.config.frac_bits)
    return PrivateTensor(ctx, trivial(ctx, encoded, encoded.shape))


@operation("private", private=lambda *args, **kwargs: True)
def private(value, owner: str = SERVER0) -> PrivateTensor:
    """Secret-share ``owner``'s value (array-like, or a zero-argument callable evaluated only there).

    Non-finite or out-of-range values raise ValueError on the owner, which every party then sees as a
    PartyError. Cost: one message of the array's ring elements from the owner to server1.
    """
    ctx = current()
    share, shape = sharing.share_input(ctx, value, owner)
    return PrivateTensor(ctx, Shared(share, shape))


def public(value) -> PublicTensor:
    """A value every party passes identically (float64 plaintext)."""
    return PublicTensor(value)


