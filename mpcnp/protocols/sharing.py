"""Moving shares: input sharing, the producer's dealing, opening between the servers, zero sharing,
re-randomisation and reveal (docs/protocols.md, "Randomness" and "Sharing").

Additive sharing over Z_2^64: x = x0 + x1, x0 held by server0 and x1 by server1. Functions here take
and return this party's share arrays (``None`` off the servers); ``Shared`` wraps them with a shape.

PRF compression. A value the producer creates is dealt as shares whose server0 half both server0 and
the producer draw from their pair stream; only server1's half is sent (``deal``). A *random* value
the producer needs costs no message at all: both halves come from pair streams (``random_shares``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from mpcnp import fixedpoint, ring, zp
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, SERVERS, Context, PartyError

Share = np.ndarray  # this party's share: an array on the servers; None elsewhere


@dataclass(frozen=True)
class Ring:
    """How ``deal`` shares a value: server0's share drawn by ``draw(prf, shape)``, server1's computed
    as ``subtract(value, share0)``, both of ``dtype``."""

    name: str
    dtype: type
    draw: Callable[[ring.PRF, tuple], np.ndarray]
    subtract: Callable[[np.ndarray, np.ndarray], np.ndarray]


Z_L = Ring("Z_2^64", np.uint64, lambda prf, shape: prf.uint64(shape), np.subtract)
Z_ODD = Ring("Z_(2^64 - 1)", np.uint64, zp.odd_uniform, zp.odd_sub)
# The (rows, n) Z_p shares of the low bits of an (n,) uint64 value, row 0 the most significant.
BITS_Z_P = Ring("bits in Z_67", np.uint8, lambda prf, shape: zp.uniform(prf, zp.P, shape), zp.bit_shares)


def _send_shape(ctx: Context, to: Iterable[str], shape: tuple[int, ...]) -> None:
    message = np.array(shape, dtype=np.int64)
    for peer in to:
        ctx.send(peer, message)


def _recv_shape(ctx: Context, owner: str) -> tuple[int, ...]:
    message = ctx.recv(owner)
    if message.dtype != np.int64 or message.ndim != 1 or (message < 0).any():
        raise PartyError(owner, f"sent a malformed shape ({message.dtype}, {message.tolist()})")
    return tuple(int(d) for d in message)


def share_input(ctx: Context, value, owner: str) -> tuple[Share | None, tuple[int, ...]]:
    """Secret-share ``owner``'s array between the servers; returns (this party's share, shape).

    Only ``owner`` evaluates ``value`` (array-like, or a zero-argument callable) and encodes it in
    fixed point; invalid values raise ValueError there. Cost: server0's share is drawn from the PRF
    stream it shares with the owner, so the data costs one message of |x| ring elements, owner to
    server1; every other party learns the shape in a message of 8 * ndim
    bytes (server1 reads it from its share). 0 rounds of interaction beyond that single hop.
    """
    ctx.check_party(owner)
    need_shape = [p for p in ctx.parties if p not in (owner, SERVER1)]
    if ctx.name == owner:
        plain = value() if callable(value) else value
        x = fixedpoint.encode(plain, ctx.config.frac_bits)
        shape = x.shape
        _send_shape(ctx, need_shape, shape)
        if owner == SERVER1:
            x0 = ctx.prf(SERVER0).uint64(shape)
            return x - x0, shape
        x0 = ctx.own_prf.uint64(shape) if owner == SERVER0 else ctx.prf(SERVER0).uint64(shape)
        ctx.send(SERVER1, x - x0)
        return (x0 if owner == SERVER0 else None), shape
    if ctx.name == SERVER1:
        if owner == SERVER0 or owner not in SERVERS:
            x1 = ctx.recv(owner)
            if x1.dtype != np.uint64:
                raise PartyError(owner, f"sent a share of dtype {x1.dtype}, not uint64")
            return x1, x1.shape
    shape = _recv_shape(ctx, owner)
    if ctx.name == SERVER0:
        return ctx.prf(owner).uint64(shape), shape
    return None, shape


def recv_array(ctx: Context, frm: str, dtype, shape) -> np.ndarray:
    """The next message from ``frm``, checked to be an array of ``dtype`` and ``shape``."""
    value = ctx.recv(frm)
    if value.dtype != dtype or value.shape != tuple(shape):
        raise PartyError(frm, f"sent {value.dtype} of shape {value.shape}, expected {np.dtype(dtype)} "
                              f"of shape {tuple(shape)}")
    return value


def random_shares(ctx: Context, shape) -> Share | None:
    """A uniform value r known to the producer, shared by the servers, with no message.

    Server j's share comes from its PRF stream with the producer, which draws both and returns
    r = r0 + r1; the servers return r_j; other parties None. Cost: 0 bytes, 0 rounds.
    """
    if ctx.name == PRODUCER:
        value = ctx.prf(SERVER0).uint64(shape)
        value += ctx.prf(SERVER1).uint64(shape)
        return value
    if ctx.is_server:
        return ctx.prf(PRODUCER).uint64(shape)
    return None


def deal(ctx: Context, value: np.ndarray | None, shape, ring: Ring = Z_L) -> Share | None:
    """Shares in ``ring`` of the producer's ``value`` (ignored elsewhere); returns this server's share.

    PRF-compressed: server0's share is drawn, on both ends, from its stream with the producer; only
    server1's share travels. Cost: one message of the shares' elements, producer to server1.
    """
    shape = tuple(shape)
    if ctx.name == PRODUCER:
        ctx.send(SERVER1, ring.subtract(value, ring.draw(ctx.prf(SERVER0), shape)))
        return None
    if ctx.name == SERVER0:
        return ring.draw(ctx.prf(PRODUCER), shape)
    if ctx.name == SERVER1:
        return recv_array(ctx, PRODUCER, ring.dtype, shape)
    return None


def deal_bits(ctx: Context, x: np.ndarray | None, n: int, rows: int = zp.BITS) -> Share | None:
    """Z_p shares of the ``rows`` low bits of the producer's (n,) uint64 ``x``, as (rows, n) uint8 with
    row 0 the most significant. Cost: rows * n bytes, producer to server1."""
    return deal(ctx, x, (rows, n), BITS_Z_P)


def common_stream(ctx: Context) -> ring.PRF:
    """The PRF stream the two servers share (the producer never sees it). Servers only."""
    return ctx.prf(ctx.other_server)


def exchange(ctx: Context, parts: list[np.ndarray],
             combine: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.add) -> list[np.ndarray]:
    """Open values between the servers: each sends its ``parts`` (one message each, all in the same
    round) and returns ``combine(own, theirs)`` for each (Z_L addition by default). Cost: 8 bytes
    per element each way, 1 round."""
    other = ctx.other_server
    for part in parts:
        ctx.send(other, part)
    return [combine(part, recv_array(ctx, other, part.dtype, part.shape)) for part in parts]


def zero_share(ctx: Context, shape: tuple[int, ...]) -> Share | None:
    """Shares of zero between the servers from their common PRF stream: no communication."""
    if ctx.name == SERVER0:
        return ctx.prf(SERVER1).uint64(shape)
    if ctx.name == SERVER1:
        return np.negative(ctx.prf(SERVER0).uint64(shape))
    return None


def rerandomize(ctx: Context, share: Share | None) -> Share | None:
    """Fresh shares of the same value (adds the zero sharing of ``zero_share``, drawn the same way,
    in one new array); local. ``share`` itself is left alone."""
    if share is None:
        return None
    mask = ctx.prf(ctx.other_server).uint64(np.shape(share))
    if ctx.name == SERVER0:
        mask += share
        return mask
    return np.subtract(share, mask, out=mask)


def resolve_receivers(ctx: Context, to) -> tuple[str, ...]:
    """``to`` of reveal (None, a name or a sequence of names) as a tuple of party names."""
    if to is None:
        return ctx.parties
    names = (to,) if isinstance(to, str) else tuple(to)
    for name in names:
        ctx.check_party(name)
    return tuple(dict.fromkeys(names))


def reveal(ctx: Context, share: Share | None, shape: tuple[int, ...], to) -> np.ndarray | None:
    """Open a shared ring value to the parties ``to``; ring values there, None elsewhere.

    Shares are re-randomised first, so what a receiver sees besides the result is uniform. Cost: each
    server sends its share to every receiver but itself (|x| ring elements each); 1 round.
    """
    receivers = resolve_receivers(ctx, to)
    if ctx.is_server:
        share = rerandomize(ctx, share)
        for peer in receivers:
            if peer != ctx.name:
                ctx.send(peer, share)
    if ctx.name not in receivers:
        return None
    parts = {server: (share if server == ctx.name else recv_array(ctx, server, np.uint64, shape))
             for server in SERVERS}
    return parts[SERVER0] + parts[SERVER1]


__all__ = ["Ring", "Z_L", "Z_ODD", "BITS_Z_P", "share_input", "recv_array", "random_shares", "deal", "deal_bits",
           "common_stream", "exchange", "zero_share", "rerandomize", "reveal", "resolve_receivers"]
