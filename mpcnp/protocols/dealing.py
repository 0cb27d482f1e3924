"""Where the producer's data-independent randomness comes from: Beaver triples and comparison masks.

Two protocol steps use correlated randomness that does not depend on the data:
- a Beaver product x (op) y (``pond.product``): masks a, b of the operands that have none yet, and
  shares of c = a (op) b;
- the one-comparison DReLU (``securenn.falcon_msb``): a uniform mask r and Z_p shares of its low bits.

A ``Dealer`` supplies both. The base class deals them on the spot, inside the protocol: masks from the
pair streams each server shares with the producer (no message), c and r's bits computed by the producer
and PRF-compressed (``sharing.deal``: server1's share is one message, at the point the protocol needs
it). These are the costs of docs/protocols.md. A subclass may hand out the same values from material
prepared ahead of time (mpcnp.serving keeps pools of it, so that a query's latency is its online
phase); the protocol code is the same either way.

The dealer is per party (a context variable of the party's thread or process), ``Dealer()`` unless a
block says otherwise with ``using``.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import numpy as np

from mpcnp.protocols import sharing
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import PRODUCER, Context

__all__ = ["Triple", "BitMask", "Dealer", "current", "using", "low_bits"]


def low_bits(value: np.ndarray, rows: int, skip: int = 0) -> np.ndarray:
    """``value`` >> skip mod 2^rows (uint64), the part of a mask whose bits PrivateCompare compares."""
    if skip:
        value = value >> np.uint64(skip)
    return value if rows >= 64 else value & np.uint64((1 << rows) - 1)


class Triple:
    """A Beaver triple for x (op) y as one party holds it: the operands' masks are set (a_j, b_j on
    server j, a and b on the producer); ``share()`` gives this party's share of c = a (op) b (the
    producer's message to server1 is sent then, by the base dealer), None off the servers."""

    def __init__(self, ctx: Context, x: Shared, y: Shared, op: Any, shape: tuple[int, ...]):
        self.ctx, self.x, self.y, self.op, self.shape = ctx, x, y, op, shape

    def share(self) -> np.ndarray | None:
        ctx = self.ctx
        value = self.op.apply(self.x.mask, self.y.mask) if ctx.name == PRODUCER else None
        return sharing.deal(ctx, value, self.shape)


class BitMask:
    """A comparison mask as one party holds it: ``value`` is r_j on server j, r on the producer (None
    elsewhere); ``bits()`` gives server j's (rows, n) Z_p shares of the ``rows`` bits of r above its
    ``skip`` lowest, row 0 the most significant (None elsewhere; the base dealer sends server1's share
    then)."""

    def __init__(self, ctx: Context, value: np.ndarray | None, n: int, rows: int, skip: int = 0):
        self.ctx, self.value, self.n, self.rows, self.skip = ctx, value, n, rows, skip

    def bits(self) -> np.ndarray | None:
        ctx = self.ctx
        value = low_bits(self.value, self.rows, self.skip) if ctx.name == PRODUCER else None
        return sharing.deal_bits(ctx, value, self.n, rows=self.rows)


class Dealer:
    """Deals on the spot (see the module docstring); subclasses deal from prepared material."""

    def triple(self, ctx: Context, x: Shared, y: Shared, op: Any, shape: tuple[int, ...]) -> Triple:
        """The triple for x (op) y (``op`` a ``pond.Bilinear``, ``shape`` the product's): masks x and y
        if they have none (from the pair streams with the producer: 0 bytes). Cost: c's message when
        ``share()`` is called, |z| ring elements from the producer to server1."""
        for value in (x, y):
            if value.mask is None:
                value.mask = sharing.random_shares(ctx, value.shape)
        return Triple(ctx, x, y, op, shape)

    def bit_mask(self, ctx: Context, n: int, rows: int, skip: int = 0) -> BitMask:
        """A uniform mask r of n ring elements (0 bytes: pair streams), the ``rows`` bits above its
        ``skip`` lowest dealt when ``bits()`` is called: rows * n bytes from the producer to server1.
        (``skip`` is used only by coarse comparisons, ``securenn.falcon_msb``.)"""
        return BitMask(ctx, sharing.random_shares(ctx, (n,)), n, rows, skip)


_INLINE = Dealer()
_current: contextvars.ContextVar[Dealer] = contextvars.ContextVar("mpcnp_dealer", default=_INLINE)


def current() -> Dealer:
    """The dealer of the calling party."""
    return _current.get()


@contextlib.contextmanager
def using(dealer: Dealer) -> Iterator[Dealer]:
    """Within the block, the calling party's protocol steps take their randomness from ``dealer``."""
    token = _current.set(dealer)
    try:
        yield dealer
    finally:
        _current.reset(token)
