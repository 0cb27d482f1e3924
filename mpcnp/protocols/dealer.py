"""Plumbing of SecureNN's protocols: the servers' common stream and the producer's dealt shares.

PRF compression (PROTOCOLS.md section 2). A value the producer creates is dealt as shares whose
server0 half both server0 and the producer draw from their pair stream; only server1's half is sent.
A *random* value the producer needs no message at all: both halves come from pair streams
(``sharing.random_shares``). Conventions as in ``securenn``: Shared values hold Z_L shares on the servers and
None elsewhere; every function runs on every party.
"""
from __future__ import annotations

import numpy as np

from mpcnp.protocols import sharing, zp
from mpcnp.protocols.pond import Shared
from mpcnp.runtime.context import SERVER0, Context


def common_stream(ctx: Context):
    """The PRF stream the two servers share (the producer never sees it)."""
    return ctx.prf(ctx.other_server)


def deal(ctx: Context, value: np.ndarray | None, n: int, odd: bool = False) -> np.ndarray | None:
    """Shares over Z_L (or Z_{L-1} if ``odd``) of the producer's (n,) ``value``; the server's share.
    PRF-compressed (sharing.deal). Cost: 8n bytes, producer to server1."""
    if odd:
        return sharing.deal(ctx, value, (n,), zp.odd_uniform, zp.odd_sub)
    return sharing.deal(ctx, value, (n,))


def deal_bits(ctx: Context, x: np.ndarray | None, n: int, rows: int = zp.BITS) -> np.ndarray | None:
    """Z_p shares of the ``rows`` low bits of the producer's (n,) uint64 ``x``, as (rows, n) uint8 with
    row 0 the most significant; PRF-compressed. Cost: rows * n bytes, producer to server1.
    """
    return sharing.deal(ctx, x, (rows, n), lambda prf, shape: zp.uniform(prf, zp.P, shape), zp.bit_shares,
                        np.uint8)


def add_public(ctx: Context, share: np.ndarray, value) -> np.ndarray:
    """Shares of (shared + public ``value``): the public value enters server0's share only. On server1
    the result is ``share`` itself."""
    return share + np.asarray(value, dtype=np.uint64) if ctx.name == SERVER0 else share


def xor_public(ctx: Context, share: np.ndarray, bit: np.ndarray) -> np.ndarray:
    """Shares of (b XOR c) from shares of a 0/1 ring integer b and a public 0/1 array c: b where
    c = 0, 1 - b where c = 1. Local."""
    return np.where(bit == 1, add_public(ctx, np.negative(share), 1), share)


def shared(share, shape) -> Shared:
    """A Shared whose share is an ndarray of ``shape`` (NumPy turns 0-d results into scalars)."""
    return Shared(None if share is None else np.asarray(share).reshape(shape), tuple(shape))


def flat(value: Shared) -> np.ndarray | None:
    """The share as a 1-d array (None off the servers)."""
    return None if value.share is None else value.share.reshape(-1)


def trivial(ctx: Context, value, shape) -> np.ndarray:
    """Shares of a public integer array: the value on server0, zeros on server1."""
    if ctx.name == SERVER0:
        return np.array(np.broadcast_to(np.asarray(value, np.uint64), shape))
    return np.zeros(shape, np.uint64)


__all__ = ["common_stream", "deal", "deal_bits", "add_public", "xor_public", "shared", "flat", "trivial"]
