"""PrivateTensor and PublicTensor: NumPy-like arrays whose private values live as shares.

Layer 6 of mpcnp. Every party holds its own tensor objects for the same program values (SPMD): the
servers hold additive shares (uint64, fixed point with the run's ``frac_bits``), every other party
only the shape. Operators dispatch here, once, by operand type, to the protocols: private with private
goes to Pond's triples; private with public is local; public with public is plain float64 NumPy.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mpcnp import fixedpoint
from mpcnp.protocols import pond, sharing
from mpcnp.runtime.context import SERVER0, Context, current

__all__ = ["Tensor", "PrivateTensor", "PublicTensor", "private", "public", "as_private"]

_INT_LIMIT = 2.0 ** 31  # integral public factors below this multiply shares exactly, untruncated


def shape_proxy(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only uint64 array of ``shape`` using one element of memory: view ops on it give shapes."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint64), tuple(shape), (0,) * len(shape),
                                           writeable=False)


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


def broadcast_shape(a: tuple, b: tuple) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ValueError(f"operands could not be broadcast together with shapes {a} and {b}") from None


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

    def flatten(self):
        return self.reshape(-1)

    def mean(self, axis=None, keepdims: bool = False):
        total = self.sum(axis=axis, keepdims=keepdims)
        count = self.size // max(1, total.size)
        if count == 0:
            raise ValueError(f"mean over an empty axis of a tensor of shape {self.shape}")
        return total / count

    def __sub__(self, other):
        return self + (-other if isinstance(other, Tensor) else -plain(other))

    def __rsub__(self, other):
        return (-self) + other

    def __radd__(self, other):
        return self + other

    def __rtruediv__(self, other):
        raise TypeError("division by a tensor is not supported with '/': use x * mp.reciprocal(y), whose "
                        "docstring states its input range and error")


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

    def __neg__(self):
        return PublicTensor(-self.value)

    def __add__(self, other):
        return other + self if isinstance(other, PrivateTensor) else PublicTensor(self.value + plain(other))

    def __mul__(self, other):
        return other * self if isinstance(other, PrivateTensor) else PublicTensor(self.value * plain(other))

    __rmul__ = __mul__

    def __matmul__(self, other):
        if isinstance(other, PrivateTensor):
            return other.__rmatmul__(self)
        return PublicTensor(np.matmul(self.value, plain(other)))

    def __rmatmul__(self, other):
        return PublicTensor(np.matmul(plain(other), self.value))

    def __truediv__(self, other):
        if isinstance(other, PrivateTensor):
            return other.__rtruediv__(self)
        return PublicTensor(self.value / plain(other))

    def __rtruediv__(self, other):
        return PublicTensor(plain(other) / self.value)

    def sum(self, axis=None, keepdims: bool = False):
        return PublicTensor(self.value.sum(axis=axis, keepdims=keepdims))

    def reshape(self, *shape):
        return PublicTensor(self.value.reshape(*shape))

    def transpose(self, *axes):
        return PublicTensor(self.value.transpose(*axes))

    def __getitem__(self, index):
        return PublicTensor(self.value[_check_index(index)])


def _check_index(index):
    """Basic slicing and integer indexing (API.md): no boolean masks, which would leak nothing here
    but are not part of the contract, and no tensors as indices."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if isinstance(item, Tensor):
            raise TypeError("tensors cannot be used as indices; reveal the index first")
    return index


class PrivateTensor(Tensor):
    """A secret-shared array: shares on server0 and server1, only the shape elsewhere."""

    def __init__(self, ctx: Context, value: pond.Shared):
        self._ctx = ctx
        self._value = value
        self.shape = tuple(value.shape)

    @property
    def share(self) -> np.ndarray | None:
        """This party's additive share (uint64), or None off the servers."""
        return self._value.share

    def __repr__(self) -> str:
        return f"PrivateTensor(shape={self.shape}, party={self._ctx.name!r})"

    def _new(self, share: np.ndarray | None, shape) -> "PrivateTensor":
        return PrivateTensor(self._ctx, pond.Shared(share, tuple(shape)))

    def reveal(self, to=None) -> np.ndarray | None:
        """float64 values on the parties ``to`` (None: every party), None on the others."""
        ring_values = sharing.reveal(self._ctx, self.share, self.shape, to)
        if ring_values is None:
            return None
        return fixedpoint.decode(ring_values, self._ctx.config.frac_bits)

    # ---- local linear operations ---------------------------------------------------------------
    def _linear(self, fn: Callable[[np.ndarray], np.ndarray], view: bool = False) -> "PrivateTensor":
        """Apply a linear NumPy function share-wise. A view op (reshape, transpose, index) also carries
        the Beaver mask along, so the result needs no new mask in a later product."""
        value = self._value
        if value.share is not None:
            share = fn(value.share)
            result = pond.Shared(share, share.shape)
        else:
            result = pond.Shared(None, fn(shape_proxy(self.shape)).shape)
        if view and value.mask is not None:
            result.mask = fn(value.mask)
            result.opened = None if value.opened is None else fn(value.opened)
        return PrivateTensor(self._ctx, result)

    def __neg__(self):
        return self._linear(np.negative)

    def _shares(self, other: "PrivateTensor", op) -> "PrivateTensor":
        shape = broadcast_shape(self.shape, other.shape)
        return self._new(None if self.share is None else op(self.share, other.share), shape)

    def __add__(self, other):
        if isinstance(other, PrivateTensor):
            return self._shares(other, np.add)
        encoded = fixedpoint.encode(plain(other), self._ctx.config.frac_bits)
        shape = broadcast_shape(self.shape, encoded.shape)
        if self._ctx.name == SERVER0:
            return self._new(self.share + encoded, shape)
        if self.share is None or self.share.shape == shape:
            return self._new(self.share, shape)  # shares are never written in place: no copy
        return self._new(np.broadcast_to(self.share, shape).copy(), shape)

    def __sub__(self, other):
        if isinstance(other, PrivateTensor):
            return self._shares(other, np.subtract)
        return super().__sub__(other)

    def sum(self, axis=None, keepdims: bool = False):
        return self._linear(lambda a: np.sum(a, axis=axis, keepdims=keepdims, dtype=np.uint64))

    def reshape(self, *shape):
        return self._linear(lambda a: a.reshape(*shape), view=True)

    def transpose(self, *axes):
        return self._linear(lambda a: a.transpose(*axes), view=True)

    def __getitem__(self, index):
        index = _check_index(index)
        return self._linear(lambda a: a[index], view=True)

    # ---- products ------------------------------------------------------------------------------
    def _public_product(self, other, op: pond.Bilinear, reverse: bool) -> "PrivateTensor":
        """self (op) public, locally. Integral factors multiply exactly; real ones are rounded to
        frac_bits significant bits (fixedpoint.encode_factor) and the product truncated: error one
        unit in the last place plus |result| * 2^-(frac_bits + 1)."""
        factor = plain(other)
        if np.all(np.abs(factor) < _INT_LIMIT) and np.all(factor == np.round(factor)):
            encoded, shift = factor.astype(np.int64).view(np.uint64), 0
        else:
            encoded, shift = fixedpoint.encode_factor(factor, self._ctx.config.frac_bits)
        shape = op.out_shape(*((encoded.shape, self.shape) if reverse else (self.shape, encoded.shape)))
        share = None
        if self.share is not None:
            share = op.apply(encoded, self.share) if reverse else op.apply(self.share, encoded)
        result = pond.Shared(share, shape)
        if shift:
            result = pond.truncate(self._ctx, result, shift, consume=True)
        return PrivateTensor(self._ctx, result)

    def _product(self, other, op: pond.Bilinear, reverse: bool = False) -> "PrivateTensor":
        if isinstance(other, PrivateTensor):
            x, y = (other, self) if reverse else (self, other)
            return PrivateTensor(self._ctx, pond.multiply(self._ctx, x._value, y._value, op))
        return self._public_product(other, op, reverse)

    def __mul__(self, other):
        return self._product(other, pond.MUL)

    def __rmul__(self, other):
        return self._product(other, pond.MUL, reverse=True)

    def __matmul__(self, other):
        return self._product(other, pond.MATMUL)

    def __rmatmul__(self, other):
        return self._product(other, pond.MATMUL, reverse=True)

    # ---- comparisons: exact (SecureNN) or approximate (Pond), by the run's protocol -------------
    def __lt__(self, other):
        from mpcnp import comparisons
        return comparisons.less(self, other)

    def __le__(self, other):
        from mpcnp import comparisons
        return comparisons.less_equal(self, other)

    def __gt__(self, other):
        from mpcnp import comparisons
        return comparisons.greater(self, other)

    def __ge__(self, other):
        from mpcnp import comparisons
        return comparisons.greater_equal(self, other)

    def __truediv__(self, other):
        if isinstance(other, PrivateTensor):
            raise TypeError("division by a private tensor is not supported with '/': use "
                            "x * mp.reciprocal(y), whose docstring states its input range and error")
        divisor = plain(other)
        if np.any(divisor == 0):
            raise ZeroDivisionError("division of a private tensor by zero")
        if np.all(divisor == np.round(divisor)) and np.all(np.abs(divisor) < 2.0 ** 62):
            return self._divide_integer(divisor)
        return self * (1.0 / divisor)

    def _divide_integer(self, divisor: np.ndarray) -> "PrivateTensor":
        """Division by public nonzero integers, signs applied first: local (fixedpoint.divide_share),
        or exact under ``mp.truncation("exact")`` (pond.divide_exact)."""
        broadcast_shape(self.shape, divisor.shape)  # a mismatch names both shapes
        sign = np.where(divisor < 0, -1, 1)
        signed = self if np.all(sign > 0) else self * sign
        magnitude = np.abs(divisor).astype(np.int64)
        return PrivateTensor(self._ctx, pond.divide(self._ctx, signed._value, magnitude))


def as_private(value, ctx: Context) -> PrivateTensor:
    """A private tensor as is; a public value as a trivial sharing (server0 holds its encoding, server1
    zeros): local, and revealing nothing since the value is public."""
    if isinstance(value, PrivateTensor):
        return value
    encoded = fixedpoint.encode(plain(value), ctx.config.frac_bits)
    share = encoded if ctx.name == SERVER0 else np.zeros_like(encoded) if ctx.is_server else None
    return PrivateTensor(ctx, pond.Shared(share, encoded.shape))


def private(value, owner: str = SERVER0) -> PrivateTensor:
    """Secret-share ``owner``'s value (array-like, or a zero-argument callable evaluated only there).

    Non-finite or out-of-range values raise ValueError on the owner, which every party then sees as a
    PartyError. Cost: one message of the array's ring elements from the owner to server1.
    """
    ctx = current()
    share, shape = sharing.share_input(ctx, value, owner)
    return PrivateTensor(ctx, pond.Shared(share, shape))


def public(value) -> PublicTensor:
    """A value every party passes identically (float64 plaintext)."""
    return PublicTensor(value)


