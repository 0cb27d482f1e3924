"""Input sharing, zero sharing and reveal between the two servers (PROTOCOLS.md section 2).

Additive sharing over Z_2^64: x = x0 + x1, x0 held by server0 and x1 by server1.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, SERVERS, Context, PartyError

Share = np.ndarray  # uint64 on the servers; None elsewhere


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
    server1 (PROTOCOLS.md section 2); every other party learns the shape in a message of 8 * ndim
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


def _uniform(prf: ring.PRF, shape) -> np.ndarray:
    return prf.uint64(shape)


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


def deal(ctx: Context, value: np.ndarray | None, shape,
         draw: Callable[[ring.PRF, tuple], np.ndarray] = _uniform,
         subtract: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.subtract,
         dtype=np.uint64) -> Share | None:
    """Shares of the producer's ``value`` (ignored elsewhere); returns this server's share.

    PRF-compressed (PROTOCOLS.md section 2): server0's share is drawn, on both ends, from its stream
    with the producer; only server1's share ``value - share0`` travels. ``draw``, ``subtract`` and
    the shares' ``dtype`` give the ring (Z_L by default). Cost: one message of |value| elements,
    producer to server1.
    """
    if ctx.name == PRODUCER:
        ctx.send(SERVER1, subtract(value, draw(ctx.prf(SERVER0), shape)))
        return None
    if ctx.name == SERVER0:
        return draw(ctx.prf(PRODUCER), shape)
    if ctx.name == SERVER1:
        return recv_array(ctx, PRODUCER, dtype, shape)
    return None


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


__all__ = ["share_input", "recv_array", "random_shares", "deal", "exchange", "zero_share", "rerandomize", "reveal",
           "resolve_receivers"]
