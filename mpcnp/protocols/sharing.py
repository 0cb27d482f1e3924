"""Moving shares: input sharing, the producer's dealing, opening between the servers, zero sharing,
re-randomisation and reveal (docs/protocols.md, "Randomness" and "Sharing").

Additive sharing over Z_2^64: x = x0 + x1, x0 held by server0 and x1 by server1. Functions here take
and return this party's share arrays (``None`` off the servers); ``Shared`` wraps them with a shape.

PRF compression. A value the producer creates is dealt as shares whose server0 half both server0 and
the producer draw from their pair stream; only server1's half is sent (``deal``). A *random* value
the producer needs costs no message at all: both halves come from pair streams (``random_shares``).

Large arrays. Inputs and reveals of more than ``CHUNK`` elements travel in messages of ``CHUNK``
elements, encoded, masked, sent and summed one chunk at a time, so that no party holds more than
the array and a chunk's temporaries (``chunkwise`` does the same for elementwise protocols). Each
chunk is one more round; below ``CHUNK`` nothing changes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from mpcnp import fixedpoint, ring, zp
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, SERVERS, Context, InputRefused, PartyError

Share = np.ndarray  # this party's share: an array on the servers; None elsewhere

# Elementwise work on more elements than this goes chunk by chunk (16 MiB of ring elements).
CHUNK = 1 << 21


@dataclass(frozen=True)
class Ring:
    """How ``deal`` shares a value: server0's share drawn by ``draw(prf, shape)``, server1's computed
    as ``subtract(value, share0)``, both of ``dtype``."""

    name: str
    dtype: type
    draw: Callable[[ring.PRF, tuple], np.ndarray]
    subtract: Callable[[np.ndarray, np.ndarray], np.ndarray]


Z_L = Ring("Z_2^64", np.uint64, lambda prf, shape: prf.uint64(shape), np.subtract)
# Z_2^32: where only a value mod 2^32 matters (the wrap bit of a truncation by at most 32 bits)
Z_2_32 = Ring("Z_2^32", np.uint32, lambda prf, shape: prf.fill(np.empty(shape, np.uint32)), np.subtract)
Z_ODD = Ring("Z_(2^64 - 1)", np.uint64, zp.odd_uniform, zp.odd_sub)
# The (rows, n) Z_p shares of the low bits of an (n,) uint64 value, row 0 the most significant.
BITS_Z_P = Ring("bits in Z_67", np.uint8, lambda prf, shape: zp.uniform(prf, zp.P, shape), zp.bit_shares)


def _send_shape(ctx: Context, to: Iterable[str], shape: tuple[int, ...]) -> None:
    message = np.array(shape, dtype=np.int64)
    for peer in to:
        ctx.send(peer, message)


def _recv_shape(ctx: Context, owner: str, message: np.ndarray | None = None) -> tuple[int, ...]:
    """The shape ``owner`` declares, checked: at most 32 dimensions, none negative, and an array no
    larger than half this host's memory (a larger one cannot be a real input; refusing it keeps a
    peer from making this party allocate what it has not got). Else PartyError naming the owner."""
    message = ctx.recv(owner) if message is None else message
    if message.dtype != np.int64 or message.ndim != 1 or message.size > 32 or (message < 0).any():
        raise PartyError(owner, f"sent a malformed shape ({message.dtype}, {message.tolist()[:33]})")
    shape = tuple(int(d) for d in message)
    nbytes = 8 * math.prod(shape)
    if nbytes > _MEMORY // 2:
        raise PartyError(owner, f"declared an input of shape {shape}, {nbytes} bytes: more than half "
                                f"of this host's memory ({_MEMORY} bytes)")
    return shape


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


_MEMORY = _host_memory()


def _chunks(n: int) -> Iterable[slice]:
    return (slice(start, min(n, start + CHUNK)) for start in range(0, n, CHUNK))


def _encode(plain, frac_bits: int) -> np.ndarray:
    try:
        return fixedpoint.encode(plain, frac_bits, secret=True)
    except (ValueError, TypeError) as exc:
        raise InputRefused(str(exc)) from None


def share_input(ctx: Context, value, owner: str) -> tuple[Share | None, tuple[int, ...]]:
    """Secret-share ``owner``'s array between the servers; returns (this party's share, shape).

    Only ``owner`` evaluates ``value`` (array-like, or a zero-argument callable) and encodes it in
    fixed point (integers exactly); invalid values raise InputRefused (a ValueError) there, naming
    positions but no value, and that message never leaves the owner (the others learn only that
    the input was refused); when 1% or more of the nonzero values round to 0, a
    ``fixedpoint.PrecisionWarning`` on the owner alone. Cost: server0's share is drawn from the PRF
    stream it shares with the owner, so the data costs one message of |x| ring elements, owner to
    server1; every other party learns the shape in a message of 8 * ndim bytes (server1 reads it
    from its share). 0 rounds of interaction beyond that single hop. Above ``CHUNK`` elements
    server1 also gets the shape, then the data in chunks (``_share_chunked``).
    """
    ctx.check_party(owner)
    need_shape = [p for p in ctx.parties if p not in (owner, SERVER1)]
    if ctx.name == owner:
        plain = value() if callable(value) else value
        array = np.asarray(plain)
        if array.size > CHUNK and array.dtype.kind in "biuf":
            return _share_chunked(ctx, array, owner, need_shape)
        x = _encode(array, ctx.config.frac_bits)
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
            if x1.dtype == np.int64:  # a shape: the share follows in chunks
                shape = _recv_shape(ctx, owner, x1)
                n = math.prod(shape)
                x1 = np.empty(n, np.uint64)
                for part in _chunks(n):
                    x1[part] = recv_array(ctx, owner, np.uint64, (part.stop - part.start,))
                return x1.reshape(shape), shape
            if x1.dtype != np.uint64:
                raise PartyError(owner, f"sent a share of dtype {x1.dtype}, not uint64")
            return x1, x1.shape
    shape = _recv_shape(ctx, owner)
    if ctx.name == SERVER0:
        return ctx.prf(owner).uint64(shape), shape
    return None, shape


def _share_chunked(ctx: Context, array: np.ndarray, owner: str,
                   need_shape: list[str]) -> tuple[Share | None, tuple[int, ...]]:
    """The owner's side of ``share_input`` for a large array: the shape to everyone (server1 too),
    then each chunk encoded, masked with the next PRF elements and sent to server1 (or kept, when
    the owner is a server). Memory: the input and one chunk's temporaries. A refused value found
    in a later chunk is reported with its index in the whole array."""
    shape = array.shape
    n = array.size
    _send_shape(ctx, need_shape + ([SERVER1] if owner != SERVER1 else []), shape)
    stream = ctx.own_prf if owner == SERVER0 else ctx.prf(SERVER0)
    flat = array.reshape(-1)
    own = np.empty(n, np.uint64) if owner in SERVERS else None
    for part in _chunks(n):
        try:
            x = fixedpoint.encode(flat[part], ctx.config.frac_bits, secret=True)
        except (ValueError, TypeError):
            _encode(array, ctx.config.frac_bits)  # raises, with the index in the whole array
            raise
        x0 = stream.uint64(part.stop - part.start)
        if owner == SERVER0:
            own[part] = x0
        np.subtract(x, x0, out=x)
        if owner == SERVER1:
            own[part] = x
        else:
            ctx.send(SERVER1, x)
    return (None if own is None else own.reshape(shape)), shape


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
    if isinstance(to, str):
        names = (to,)
    elif isinstance(to, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in to):
        names = tuple(to)
    else:
        raise TypeError(f"reveal(to=...) takes None (every party), a party name or a list of names, "
                        f"got {to!r}")
    for name in names:
        ctx.check_party(name)
    return tuple(dict.fromkeys(names))


def reveal(ctx: Context, share: Share | None, shape: tuple[int, ...], to) -> np.ndarray | None:
    """Open a shared ring value to the parties ``to``; ring values there, None elsewhere.

    Shares are re-randomised first, so what a receiver sees besides the result is uniform. Cost: each
    server sends its share to every receiver but itself (|x| ring elements each); 1 round (one per
    chunk of ``CHUNK`` elements, for larger values, which are re-randomised, sent and summed one
    chunk at a time).
    """
    receivers = resolve_receivers(ctx, to)
    n = math.prod(shape)
    if n > CHUNK:
        return _reveal_chunked(ctx, share, shape, receivers)
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


def _reveal_chunked(ctx: Context, share: Share | None, shape: tuple[int, ...],
                    receivers: tuple[str, ...]) -> np.ndarray | None:
    n = math.prod(shape)
    flat = np.ascontiguousarray(share).reshape(-1) if ctx.is_server else None
    out = np.empty(n, np.uint64) if ctx.name in receivers else None
    for part in _chunks(n):
        mine = None
        if flat is not None:
            mine = rerandomize(ctx, flat[part])
            for peer in receivers:
                if peer != ctx.name:
                    ctx.send(peer, mine)
        if out is not None:
            size = (part.stop - part.start,)
            first = mine if ctx.name == SERVER0 else recv_array(ctx, SERVER0, np.uint64, size)
            second = mine if ctx.name == SERVER1 else recv_array(ctx, SERVER1, np.uint64, size)
            np.add(first, second, out=out[part])
    return None if out is None else out.reshape(shape)


def chunkwise(ctx: Context, fn: Callable[..., Shared], *values: Shared) -> Shared:
    """``fn`` (an elementwise protocol on Z_L shares) applied to the values, ``CHUNK`` elements at a
    time: the values must have one shape; the results, uint64 of that shape, are written into one
    array. Memory: the output and one chunk's temporaries instead of the whole protocol's. A value
    given twice is one value in every chunk (a product x * x masks x once). A value's Beaver mask,
    if it has one, is used chunk by chunk; fresh masks are drawn per chunk and not kept."""
    shape = values[0].shape
    n = math.prod(shape)
    distinct = list({id(v): v for v in values}.values())
    flats = {id(v): _flat_parts(v) for v in distinct}
    out = np.empty(n, np.uint64) if ctx.is_server else None
    for part in _chunks(n):
        pieces = {key: _piece(parts, part) for key, parts in flats.items()}
        result = fn(*(pieces[id(v)] for v in values))
        if out is not None:
            out[part] = result.share
    return Shared(None if out is None else out.reshape(shape), shape)


def _flat_parts(value: Shared) -> tuple:
    flat = (lambda a: None if a is None else np.ascontiguousarray(a).reshape(-1))
    return flat(value.share), flat(value.mask), flat(value.opened)


def _piece(parts: tuple, part: slice) -> Shared:
    share, mask, opened = (None if a is None else a[part] for a in parts)
    piece = Shared(share, (part.stop - part.start,))
    piece.mask, piece.opened = mask, opened
    return piece


__all__ = ["CHUNK", "chunkwise", "Ring", "Z_L", "Z_2_32", "Z_ODD", "BITS_Z_P", "share_input", "recv_array",
           "random_shares", "deal", "deal_bits", "common_stream", "exchange", "zero_share", "rerandomize", "reveal",
           "resolve_receivers"]
