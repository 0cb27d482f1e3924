"""``Shared``: a secret-shared ring value as one party sees it, and the local operations on it.

Every protocol function runs on every party (SPMD). The servers hold additive shares (uint64 over
Z_2^64 unless a protocol says otherwise); every other party holds ``None`` in their place, with the
shape. The operations here propagate ``None`` off the servers, so protocol steps need no role
guards for local arithmetic: ``x - y``, ``x * 3``, ``x.map(fn)`` are ``None`` on the producer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mpcnp.runtime.context import SERVER0, Context

__all__ = ["Shared", "shape_proxy", "broadcast_shape", "add_public", "xor_public", "complement", "trivial",
           "concat", "stack"]


def shape_proxy(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only uint64 array of ``shape`` using one element of memory: view ops on it give shapes."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint64), tuple(shape), (0,) * len(shape),
                                           writeable=False)


def broadcast_shape(*shapes: tuple) -> tuple[int, ...]:
    """The broadcast of ``shapes`` (NumPy rules); ValueError naming them where they do not broadcast."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ValueError(f"operands could not be broadcast together with shapes {listed}") from None


@dataclass(eq=False)
class Shared:
    """This party's view of a shared value: its share (None off the servers), its shape, its Beaver
    mask once it has been masked (then reused by every later product, pond.open_masks) and, for a
    fixed-point 0.0/1.0 value that a comparison produced, the shares of the same value as a ring
    integer 0/1 (``bit``: what SelectShare needs for an exact ``where``). Every party holds ``bit``
    or none does: it is set by the same program steps everywhere."""

    share: np.ndarray | None
    shape: tuple[int, ...]
    mask: np.ndarray | None = field(default=None, repr=False)     # a_j on server j, a on the producer
    opened: np.ndarray | None = field(default=None, repr=False)   # e = x - a, on both servers
    bit: "Shared | None" = field(default=None, repr=False)        # this value / 2^f as ring 0/1 shares
    # A ReLU's result keeps the DReLU bit of its input (shares of a ring 0/1, securenn.relu) for
    # backpropagation, which multiplies by it instead of comparing again; a max step keeps its own.
    drelu: "Shared | None" = field(default=None, repr=False)

    @staticmethod
    def of(share, shape) -> "Shared":
        """A Shared of ``shape`` whose share is an ndarray (NumPy turns 0-d results into scalars)."""
        shape = tuple(shape)
        return Shared(None if share is None else np.asarray(share).reshape(shape), shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def flat(self) -> np.ndarray | None:
        """The share as a 1-d array (None off the servers)."""
        return None if self.share is None else self.share.reshape(-1)

    def map(self, fn: Callable[[np.ndarray], np.ndarray], view: bool = False) -> "Shared":
        """``fn`` (a linear function of the share: reshape, transpose, index, sum, pad, ...) applied
        share-wise; off the servers only the shape is computed. ``view``: ``fn`` only rearranges
        elements, so the Beaver mask (and opened value) are carried along: no new mask later, and so
        is a comparison's ``bit``."""
        if self.share is None:
            result = Shared(None, tuple(fn(shape_proxy(self.shape)).shape))
        else:
            share = np.asarray(fn(self.share))
            result = Shared(share, share.shape)
        if view and self.mask is not None:
            result.mask = fn(self.mask)
            result.opened = None if self.opened is None else fn(self.opened)
        if view and self.bit is not None:
            result.bit = self.bit.map(fn, view=True)
        return result

    def broadcast_to(self, shape) -> "Shared":
        """The value broadcast to ``shape`` (NumPy rules), as a writable array of its own."""
        shape = tuple(shape)
        if self.share is None:
            return Shared(None, broadcast_shape(self.shape, shape))
        return Shared(np.broadcast_to(self.share, shape).copy(), shape)

    # ---- share-wise arithmetic (local) ------------------------------------------------------------
    def _combine(self, other: "Shared", op) -> "Shared":
        shape = broadcast_shape(self.shape, other.shape)
        if self.share is None:
            return Shared(None, shape)
        return Shared(np.asarray(op(self.share, other.share)), shape)

    def __add__(self, other: "Shared") -> "Shared":
        return self._combine(_shared(other), np.add)

    def __sub__(self, other: "Shared") -> "Shared":
        return self._combine(_shared(other), np.subtract)

    def __neg__(self) -> "Shared":
        return Shared(None if self.share is None else np.negative(self.share), self.shape)

    def __mul__(self, factor) -> "Shared":
        """Shares times a public ring integer (scalar or broadcasting uint64 array): exact, local."""
        factor = np.asarray(factor, dtype=np.uint64)
        shape = broadcast_shape(self.shape, factor.shape)
        return Shared(None if self.share is None else np.asarray(self.share * factor), shape)

    __rmul__ = __mul__

    def __lshift__(self, bits: int) -> "Shared":
        return Shared(None if self.share is None else self.share << np.uint64(bits), self.shape)


def _shared(value) -> Shared:
    if not isinstance(value, Shared):
        raise TypeError(f"expected a Shared, got {type(value).__name__}: public values enter shares "
                        "through add_public (server0 only)")
    return value


def add_public(ctx: Context, x: Shared, value) -> Shared:
    """Shares of x + ``value`` for a public ring integer array ``value`` (broadcasting): the value
    enters server0's share only; on server1 the share is x's own (shares are never written in
    place, so it is not copied unless the shape grows).

    Where the shape stays x's, the result keeps x's Beaver mask (pond.open_masks): its opening is x's
    plus ``value``, which both servers compute, so a product with it opens nothing new (the same
    masked value seen through a public shift)."""
    value = np.asarray(value, dtype=np.uint64)
    shape = broadcast_shape(x.shape, value.shape)
    if x.share is None:
        result = Shared(None, shape)
    elif ctx.name == SERVER0:
        result = Shared(np.asarray(x.share + value), shape)
    else:
        result = Shared(x.share if x.share.shape == shape else np.broadcast_to(x.share, shape).copy(), shape)
    if x.mask is not None and shape == tuple(x.shape):
        result.mask = x.mask
        result.opened = None if x.opened is None else x.opened + value
    return result


def xor_public(ctx: Context, bit: Shared, c) -> Shared:
    """Shares of (b XOR c) from shares of a 0/1 ring integer b and a public 0/1 array c: b where
    c = 0, 1 - b where c = 1. Local."""
    if bit.share is None:
        return bit
    flipped = add_public(ctx, -bit, 1)
    return Shared(np.where(np.asarray(c) == 1, flipped.share, bit.share), bit.shape)


def complement(ctx: Context, value: Shared, unit: int) -> Shared:
    """Shares of 1 - c for a fixed-point 0.0/1.0 value c (``unit`` = 2^frac_bits), its ring ``bit``
    complemented along with it. Local."""
    result = add_public(ctx, -value, np.uint64(unit))
    if value.bit is not None:
        result.bit = add_public(ctx, -value.bit, np.uint64(1))
    return result


def trivial(ctx: Context, value, shape) -> Shared:
    """Shares of a public ring integer array (broadcast to ``shape``): the value on server0, zeros
    on server1, None elsewhere. Local, and revealing nothing since the value is public."""
    shape = tuple(shape)
    if not ctx.is_server:
        return Shared(None, shape)
    if ctx.name == SERVER0:
        return Shared(np.array(np.broadcast_to(np.asarray(value, np.uint64), shape)), shape)
    return Shared(np.zeros(shape, np.uint64), shape)


def _join(parts: Sequence[Shared], join) -> Shared:
    if parts[0].share is None:
        return Shared(None, join([shape_proxy(p.shape) for p in parts]).shape)
    share = join([p.share for p in parts])
    return Shared(share, share.shape)


def concat(parts: Sequence[Shared], axis: int = 0) -> Shared:
    """np.concatenate of the shares (shapes only off the servers)."""
    return _join(parts, lambda arrays: np.concatenate(arrays, axis=axis))


def stack(parts: Sequence[Shared], axis: int = 0) -> Shared:
    """np.stack of the shares (shapes only off the servers)."""
    return _join(parts, lambda arrays: np.stack(arrays, axis=axis))
