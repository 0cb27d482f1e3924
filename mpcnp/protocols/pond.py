"""Pond: fixed-point linear algebra on shares, with triples dealt by the producer (docs/protocols.md, "Pond").

Dahl et al., "Private Machine Learning in TensorFlow using Secure Computation", arXiv 1810.08130
(Pond), on the SPDZ-style Beaver multiplication; costs as in SecureNN (PETS 2019) Table 1 with PRF
compression of the triples.

A product z = x (op) y of shared x, y for a bilinear op (elementwise multiply, matmul, conv2d):
  the producer deals a, b, c = a (op) b. server0's a0, b0, c0 and server1's a1, b1 come from the PRF
  streams each server shares with the producer; the producer sends only c1 = c - c0 to server1.
  Servers open e = x - a and f = y - b, then z_j = c_j + e (op) b_j + a_j (op) f (+ e (op) f on
  server0), and truncate locally by frac_bits.
Masks are reusable: a value masked once keeps (a_j, e) on the servers and a on the producer, so using
it in another product (weights over many batches) opens nothing new for it; x plus a public value
keeps x's mask too (``shared.add_public``: its opening is e plus that value).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.protocols import dealing, sharing
from mpcnp.protocols.shared import Shared, add_public, broadcast_shape
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, Context

# Integral public factors below this multiply shares exactly, untruncated (the caller keeps the
# product within the encodable range, as for any product).
INT_FACTOR_LIMIT = 2.0 ** 31


@dataclass(frozen=True)
class Bilinear:
    """A bilinear ring operation z = x (op) y and its output-shape rule."""

    name: str
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray]
    out_shape: Callable[[tuple, tuple], tuple]


MUL = Bilinear("mul", np.multiply, broadcast_shape)
MATMUL = Bilinear("matmul", ring.matmul, lambda xs, ys: ring.matmul_shape(xs, ys))


def conv2d_op(stride, padding) -> Bilinear:
    """conv2d of an NCHW input with an (out, in, kh, kw) kernel as a bilinear op."""
    return Bilinear(f"conv2d(stride={stride}, padding={padding})",
                    lambda x, w: ring.conv2d(x, w, stride=stride, padding=padding),
                    lambda xs, ws: ring.conv2d_shape(xs, ws, stride=stride, padding=padding))


def draw_mask(ctx: Context, value: Shared) -> None:
    """Give ``value`` a fresh mask: a_j on server j, a = a0 + a1 on the producer. No communication."""
    value.mask = sharing.random_shares(ctx, value.shape)


def open_masks(ctx: Context, values: list[Shared]) -> None:
    """Mask every value that has no mask yet and open e = x - a, in one exchange, for every value
    not opened yet (a dealer may have given masks that are still to be opened)."""
    for value in values:
        if value.mask is None:
            draw_mask(ctx, value)
    if ctx.is_server:
        fresh = []
        for value in values:
            if value.opened is None and not any(value is f for f in fresh):
                fresh.append(value)
        # separate messages: no copying of the parts into one buffer
        opened = sharing.exchange(ctx, [v.share - v.mask for v in fresh])
        for value, e in zip(fresh, opened):
            value.opened = e


def product(ctx: Context, x: Shared, y: Shared, op: Bilinear) -> Shared:
    """Shares of x (op) y with 2 * frac_bits fractional bits (not yet truncated).

    Cost: 1 exchange between the servers of the masks not opened before (|x| + |y| ring elements each
    way when both are fresh) and the producer's c1 (|z| elements) to server1: 2 rounds by PETS' count,
    8 (2|x| + 2|y| + |z|) bytes; the two messages are independent, so the counted depth is 1.
    """
    shape = tuple(op.out_shape(x.shape, y.shape))
    triple = dealing.current().triple(ctx, x, y, op, shape)   # masks x and y if they have none
    open_masks(ctx, [x, y])
    c = triple.share()
    if not ctx.is_server:
        return Shared(None, shape)
    e, f = x.opened, y.opened
    # accumulate in place: every fresh multi-megabyte result costs page faults
    z = op.apply(e, y.mask)
    z += op.apply(x.mask, f)
    z += c
    if ctx.name == SERVER0:
        z += op.apply(e, f)
    return Shared(z, shape)


def truncate(ctx: Context, value: Shared, bits: int | None = None, consume: bool = False) -> Shared:
    """Shares of floor(x / 2^bits) (bits defaults to frac_bits), by the party's truncation mode
    ``ctx.truncation``: "local" (SecureML: free, rarely garbage) or "exact" (never garbage).
    ``consume``: ``value`` is a fresh product the caller hands over; its share may be overwritten."""
    bits = ctx.config.frac_bits if bits is None else bits
    if ctx.truncation == "exact":
        return truncate_exact(ctx, value, bits)
    if not ctx.is_server:
        return Shared(None, value.shape)
    share = fixedpoint.truncate_share(value.share, ctx.server_index, bits, in_place=consume)
    return Shared(share, value.shape)


def divide(ctx: Context, value: Shared, divisor: np.ndarray) -> Shared:
    """Shares of x / d for public positive integers ``divisor`` (broadcast against x), by the party's
    truncation mode: "local" (fixedpoint.divide_share: free, rarely garbage) or "exact"."""
    if ctx.truncation == "exact":
        return divide_exact(ctx, value, divisor)
    shape = broadcast_shape(value.shape, np.shape(divisor))
    if not ctx.is_server:
        return Shared(None, shape)
    return Shared(fixedpoint.divide_share(value.share, ctx.server_index, divisor), shape)


_OFFSET = np.uint64(1 << 62)


def _offset_and_wrap(ctx: Context, value: Shared, narrow: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """The wrap bit of x + 2^62 for |x| < 2^62: on the servers (x'_j, shares of w), else None.
    ``narrow``: shares of w mod 2^32 (uint32), all a truncation by at most 32 bits needs, since w is
    multiplied by 2^(64 - bits) there.

    With x' = x + 2^62 in [0, 2^63) and x'_0 = x_0 + 2^62, x'_1 = x_1, the shares x'_0 + x'_1 (as
    integers) wrap past 2^64 exactly when m_0 OR m_1 for m_j = MSB(x'_j): if neither is set the sum
    is below 2^64; if one is, the sum is at least 2^63 and, being x' + w 2^64 with x' < 2^63, must
    have wrapped (the known-MSB argument of Huang, Lu, Hong, Ding, "Cheetah", USENIX Security 2022).
    So w = m_0 + m_1 - m_0 m_1, and server j knows m_j whole, which makes the product cheap: with
    random bits a (server0 and the producer) and b (server1 and the producer) from their PRF
    streams, server0 sends e = m_0 XOR a and server1 f = m_1 XOR b (one bit each, packed), the
    producer deals shares c_j of c = a b, and with s = 1 - 2e, t = 1 - 2f (public),
    m_0 = e + a s and m_1 = f + b t give
      m_0 m_1 = e f + e t b + a s f + s t c = [m_0 f + s t c_0] + [e m_1 - e f + s t c_1],
    the first bracket server0's (a s = m_0 - e) and the second server1's (b t = m_1 - f). Hence
      w_0 = m_0 (1 - f) - s t c_0,   w_1 = m_1 (1 - e) + e f - s t c_1.
    docs/protocols.md, section 3.2, has the argument and why nobody learns anything.
    Cost: 8 bytes per element (server1's c_1; 4 when ``narrow``) and 2 bits (e and f), 1 counted round.
    """
    return _exchanged(ctx, *_start_offset_and_wrap(ctx, value, narrow))


def _exchanged(ctx: Context, outgoing: np.ndarray | None, finish: Callable):
    """The second half of a two-half step (``_start_offset_and_wrap``) after sending its first half's
    message on its own."""
    if outgoing is not None:
        ctx.send(ctx.other_server, outgoing)
    return finish(None)


def _start_offset_and_wrap(ctx: Context, value: Shared, narrow: bool) -> tuple[np.ndarray | None, Callable]:
    """``_offset_and_wrap`` in two halves: (this server's packed bits e or f for the other server, None
    elsewhere; the function that, given the other server's bits (None: received from it here), takes
    the producer's c_1 and returns the result). The producer deals c_1 in that second half."""
    n = value.size
    packed = (n + 7) // 8
    ring, dtype = (sharing.Z_2_32, np.uint32) if narrow else (sharing.Z_L, np.uint64)
    if ctx.name == PRODUCER:
        a = np.unpackbits(ctx.prf(SERVER0).uint8(packed), count=n)
        b = np.unpackbits(ctx.prf(SERVER1).uint8(packed), count=n)
        np.bitwise_and(a, b, out=a)
        return None, lambda _: sharing.deal(ctx, a.astype(dtype), (n,), ring)   # None: dealt to the servers
    if not ctx.is_server:
        return None, lambda _: None
    shifted = value.share.reshape(-1)
    shifted = shifted + _OFFSET if ctx.name == SERVER0 else shifted
    msb = np.packbits(shifted.view(np.int64) < 0)    # the top bits, eight to a byte
    mine = msb ^ ctx.prf(PRODUCER).uint8(packed)       # e on server0, f on server1
    return mine, lambda theirs: _finish_wrap(ctx, value, shifted, msb, mine, theirs, ring, dtype)


def _finish_wrap(ctx: Context, value: Shared, shifted: np.ndarray, msb: np.ndarray, mine: np.ndarray,
                 theirs: np.ndarray | None, ring, dtype) -> tuple[np.ndarray, np.ndarray]:
    n = value.size
    c = sharing.deal(ctx, None, (n,), ring)
    if theirs is None:
        theirs = sharing.recv_array(ctx, ctx.other_server, np.uint8, ((n + 7) // 8,))
    e, f = (mine, theirs) if ctx.name == SERVER0 else (theirs, mine)
    # the bits of w_j + s t c_j, packed: m_0 (1 - f) on server0; m_1 (1 - e) + e f = (m_1 AND NOT e)
    # OR (e AND f) on server1 (the two terms never both 1)
    bits = msb & ~f if ctx.name == SERVER0 else (msb & ~e) | (e & f)
    wrap = np.unpackbits(bits, count=n).astype(dtype)
    # s t c_j = c_j where e = f and -c_j where they differ: with m = 0 or all ones there,
    # s t c_j = (c_j XOR m) - m (two's complement negation), so w_j = bits + m - (c_j XOR m)
    m = np.unpackbits(e ^ f, count=n).astype(dtype)
    np.negative(m, out=m)
    wrap += m
    np.bitwise_xor(c, m, out=m)
    wrap -= m
    return shifted.reshape(value.shape), wrap.reshape(value.shape)


def truncate_exact(ctx: Context, value: Shared, bits: int) -> Shared:
    """Truncation by ``bits`` that is always within one unit: no wrap failures. Needs |x| < 2^62.

    With the wrap bit w of x' = x + 2^62 (``_offset_and_wrap``),
    floor(x / 2^bits) - c = (x'0 >> bits) + (x'1 >> bits) - w 2^(64 - bits) - 2^(62 - bits), where c
    in {0, 1} is the dropped carry out of the low bits; server0 adds one unit, so the result is within
    one unit of x / 2^bits, like local truncation, and never off by more. Beyond |x| < 2^62 (a product
    beyond |x y| < 2^(62 - 2f) in real terms) the offset value leaves [0, 2^63) and the result is wrong.
    Only w mod 2^bits matters, so for bits <= 32 (every frac_bits) the wrap bit is shared mod 2^32.
    Cost: that of the wrap bit, 4 bytes and 2 bits per element (8 and 2 for bits > 32), 1 counted round.
    """
    pending = PendingTruncation(ctx, value, bits)
    return _exchanged(ctx, pending.outgoing, pending.finish)


class PendingTruncation:
    """``truncate_exact`` in two halves, so that its one message can travel with another protocol's:
    ``outgoing`` is this server's packed bits for the other server (None elsewhere), ``finish(incoming)``
    takes the other server's (None: received from it here) and the producer's c_1 (the producer deals
    it then) and returns the truncated shares (``securenn.truncate_relu`` sends the bits with its
    comparison's opening)."""

    def __init__(self, ctx: Context, value: Shared, bits: int):
        if not 0 < bits < 62:
            raise ValueError(f"exact truncation needs 0 < bits < 62, got {bits}")
        self._ctx, self._value, self._bits = ctx, value, bits
        self.outgoing, self._finish = _start_offset_and_wrap(ctx, value, narrow=bits <= 32)

    def finish(self, incoming: np.ndarray | None = None) -> Shared:
        return _shift_down(self._ctx, self._value, self._bits, self._finish(incoming))


def _shift_down(ctx: Context, value: Shared, bits: int, parts: tuple | None) -> Shared:
    if parts is None:
        return Shared(None, value.shape)
    shifted, wrap = parts
    result = np.right_shift(shifted, np.uint64(bits))
    wide = wrap.astype(np.uint64)
    result -= np.left_shift(wide, np.uint64(64 - bits), out=wide)
    if ctx.name == SERVER0:
        result -= np.uint64((1 << (62 - bits)) - 1)
    return Shared(result, value.shape)


def divide_exact(ctx: Context, value: Shared, divisor: np.ndarray) -> Shared:
    """x / d for public integers 1 <= d < 2^62 (broadcast against x), always within two units: no
    wrap failures. Needs |x| < 2^62.

    With the wrap bit w of x' = x + 2^62 (``_offset_and_wrap``), x'_j = q_j d + r_j and
    2^64 = Q d + R: q_0 + q_1 - w Q = (x' - r_0 - r_1 + w R) / d, which falls short of x' / d by a
    value in (-1, 2); taking floor(2^62 / d) off leaves x / d within two units. The truncation of
    ``truncate_exact`` is the case d = 2^bits (R = 0), done there with shifts.
    Cost: that of the wrap bit, 8 bytes and 2 bits per element of x, 1 counted round.
    """
    divisor = fixedpoint.check_divisor(divisor).astype(np.uint64)
    shape = broadcast_shape(value.shape, divisor.shape)
    parts = _offset_and_wrap(ctx, value)
    if parts is None:
        return Shared(None, shape)
    shifted, wrap = parts
    top = np.uint64((1 << 64) - 1)
    wraps = top // divisor + (top % divisor == divisor - np.uint64(1))  # floor(2^64 / d)
    result = shifted // divisor - wrap * wraps
    if ctx.name == SERVER0:
        result -= np.uint64(1 << 62) // divisor
    return Shared(result, shape)


def multiply(ctx: Context, x: Shared, y: Shared, op: Bilinear = MUL) -> Shared:
    """x (op) y for shared fixed-point x, y: a Beaver product then truncation by frac_bits.

    An elementwise product of two values of one shape with more than ``sharing.CHUNK`` elements is
    computed chunk by chunk (``sharing.chunkwise``: one round per chunk, memory for the result and
    one chunk; the values get masks per chunk that are not kept for reuse)."""
    if op is MUL and x.shape == y.shape and x.size > sharing.CHUNK:
        return sharing.chunkwise(ctx, lambda a, b: multiply(ctx, a, b, MUL), x, y)
    return truncate(ctx, product(ctx, x, y, op), consume=True)


# ---- public operands: local --------------------------------------------------------------------------
def add_constant(ctx: Context, x: Shared, value: np.ndarray) -> Shared:
    """x + a public real array ``value`` (broadcasting), encoded at frac_bits: local."""
    return add_public(ctx, x, fixedpoint.encode(value, ctx.config.frac_bits))


def scale(ctx: Context, x: Shared, factor: np.ndarray, op: Bilinear = MUL, reverse: bool = False) -> Shared:
    """x (op) a public real ``factor`` (``factor (op) x`` if ``reverse``), locally.

    Integral factors below INT_FACTOR_LIMIT multiply shares exactly; real ones are rounded to
    frac_bits significant bits (fixedpoint.encode_factor) and the product truncated: error one unit
    in the last place plus |result| 2^-(frac_bits + 1). The shares are re-randomised before the
    truncation: a factor whose encoding ends in zero bits (any dyadic factor, x * 0.25) leaves zeros
    in the low bits of the shares, and exact truncation then rounds up to half a unit too high on
    average instead of without bias (its carry needs uniform low bits); training adds up millions of
    such roundings.
    """
    product, shift = scaled_product(ctx, x, factor, op, reverse)
    return truncate(ctx, product, shift, consume=True) if shift else product


def scaled_product(ctx: Context, x: Shared, factor: np.ndarray, op: Bilinear = MUL,
                   reverse: bool = False) -> tuple[Shared, int]:
    """``scale`` before its truncation: (shares of x (op) the encoded factor, the bits to truncate
    by), the shares re-randomised when there are bits to truncate (see ``scale``). Local."""
    factor = np.asarray(factor, dtype=np.float64)
    if np.all(np.abs(factor) < INT_FACTOR_LIMIT) and np.all(factor == np.round(factor)):
        encoded, shift = factor.astype(np.int64).view(np.uint64), 0
    else:
        encoded, shift = fixedpoint.encode_factor(factor, ctx.config.frac_bits)
    shape = tuple(op.out_shape(*((encoded.shape, x.shape) if reverse else (x.shape, encoded.shape))))
    share = None
    if x.share is not None:
        share = op.apply(encoded, x.share) if reverse else op.apply(x.share, encoded)
    if not shift:
        return Shared(share, shape), 0
    return Shared(sharing.rerandomize(ctx, share), shape), shift


def divide_by(ctx: Context, x: Shared, divisor: np.ndarray) -> Shared:
    """x / a public nonzero real ``divisor`` (broadcasting). Integers below 2^62 divide by
    ``divide`` (exact under exact truncation, signs applied first); other reals multiply by their
    reciprocal (``scale``). ZeroDivisionError for a zero divisor."""
    divisor = np.asarray(divisor, dtype=np.float64)
    if np.any(divisor == 0):
        raise ZeroDivisionError("division of a private tensor by zero")
    if not (np.all(divisor == np.round(divisor)) and np.all(np.abs(divisor) < 2.0 ** 62)):
        return scale(ctx, x, 1.0 / divisor)
    broadcast_shape(x.shape, divisor.shape)  # a mismatch names both shapes
    signed = x if np.all(divisor > 0) else scale(ctx, x, np.where(divisor < 0, -1.0, 1.0))
    return divide(ctx, signed, np.abs(divisor).astype(np.int64))
