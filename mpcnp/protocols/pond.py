"""Pond: multiplication of shared tensors with triples dealt by the producer (PROTOCOLS.md section 4).

Dahl et al., "Private Machine Learning in TensorFlow using Secure Computation", arXiv 1810.08130
(Pond), on the SPDZ-style Beaver multiplication; costs as in SecureNN (PETS 2019) Table 1 with PRF
compression of the triples.

A product z = x (op) y of shared x, y for a bilinear op (elementwise multiply, matmul, conv2d):
  the producer deals a, b, c = a (op) b. server0's a0, b0, c0 and server1's a1, b1 come from the PRF
  streams each server shares with the producer; the producer sends only c1 = c - c0 to server1.
  Servers open e = x - a and f = y - b, then z_j = c_j + e (op) b_j + a_j (op) f (+ e (op) f on
  server0), and truncate locally by frac_bits.
Masks are reusable: a value masked once keeps (a_j, e) on the servers and a on the producer, so using
it in another product (weights over many batches) opens nothing new for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, Context, PartyError


@dataclass(eq=False)
class Shared:
    """A secret-shared ring value as one party sees it: its share (None off the servers), its shape,
    and its Beaver mask once it has been masked (then reused by every later product)."""

    share: np.ndarray | None
    shape: tuple[int, ...]
    mask: np.ndarray | None = field(default=None, repr=False)     # a_j on server j, a on the producer
    opened: np.ndarray | None = field(default=None, repr=False)   # e = x - a, on both servers


@dataclass(frozen=True)
class Bilinear:
    """A bilinear ring operation z = x (op) y and its output-shape rule."""

    name: str
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray]
    out_shape: Callable[[tuple, tuple], tuple]


MUL = Bilinear("mul", np.multiply, lambda xs, ys: np.broadcast_shapes(xs, ys))
MATMUL = Bilinear("matmul", ring.matmul, lambda xs, ys: ring.matmul_shape(xs, ys))


def conv2d_op(stride, padding) -> Bilinear:
    """conv2d of an NCHW input with an (out, in, kh, kw) kernel as a bilinear op."""
    return Bilinear(f"conv2d(stride={stride}, padding={padding})",
                    lambda x, w: ring.conv2d(x, w, stride=stride, padding=padding),
                    lambda xs, ws: ring.conv2d_shape(xs, ws, stride=stride, padding=padding))


def _draw_mask(ctx: Context, value: Shared) -> None:
    """Give ``value`` a fresh mask: server j draws a_j from its stream with the producer, the producer
    draws both and keeps a = a0 + a1. No communication."""
    if ctx.name == PRODUCER:
        value.mask = ctx.prf(SERVER0).uint64(value.shape) + ctx.prf(SERVER1).uint64(value.shape)
    elif ctx.is_server:
        value.mask = ctx.prf(PRODUCER).uint64(value.shape)


def _exchange(ctx: Context, parts: list[np.ndarray]) -> list[np.ndarray]:
    """Servers swap arrays in one message each and return the sums (the opened values). 1 round."""
    if not parts:
        return []
    other = SERVER1 if ctx.name == SERVER0 else SERVER0
    mine = np.concatenate([p.reshape(-1) for p in parts]) if len(parts) > 1 else parts[0]
    ctx.send(other, mine)
    theirs = ctx.recv(other)
    if theirs.dtype != np.uint64 or theirs.size != mine.size:
        raise PartyError(other, f"sent {theirs.size} {theirs.dtype} values to open, expected {mine.size} uint64")
    total = mine.reshape(-1) + theirs.reshape(-1)
    opened, start = [], 0
    for p in parts:
        opened.append(total[start:start + p.size].reshape(p.shape))
        start += p.size
    return opened


def open_masks(ctx: Context, values: list[Shared]) -> None:
    """Mask every value that has no mask yet and open e = x - a for all of them in one exchange."""
    fresh = []
    for value in values:
        if value.mask is None and not any(value is f for f in fresh):
            _draw_mask(ctx, value)
            fresh.append(value)
    if ctx.is_server:
        opened = _exchange(ctx, [v.share - v.mask for v in fresh])
        for value, e in zip(fresh, opened):
            value.opened = e


def product(ctx: Context, x: Shared, y: Shared, op: Bilinear) -> Shared:
    """Shares of x (op) y with 2 * frac_bits fractional bits (not yet truncated).

    Cost: 1 exchange between the servers of the masks not opened before (|x| + |y| ring elements each
    way when both are fresh) and the producer's c1 (|z| elements) to server1: 2 rounds by PETS' count,
    8 (2|x| + 2|y| + |z|) bytes; the two messages are independent, so the counted depth is 1.
    """
    shape = tuple(op.out_shape(x.shape, y.shape))
    open_masks(ctx, [x, y])
    if ctx.name == PRODUCER:
        c = op.apply(x.mask, y.mask)
        c0 = ctx.prf(SERVER0).uint64(shape)
        ctx.send(SERVER1, c - c0)
        return Shared(None, shape)
    if not ctx.is_server:
        return Shared(None, shape)
    if ctx.name == SERVER0:
        c = ctx.prf(PRODUCER).uint64(shape)
    else:
        c = ctx.recv(PRODUCER)
        if c.dtype != np.uint64 or c.shape != shape:
            raise PartyError(PRODUCER, f"sent a triple share of {c.dtype} {c.shape}, expected uint64 {shape}")
    e, f = x.opened, y.opened
    z = c + op.apply(e, y.mask) + op.apply(x.mask, f)
    if ctx.name == SERVER0:
        z += op.apply(e, f)
    return Shared(z, shape)


def truncate(ctx: Context, value: Shared) -> Shared:
    """Local truncation by frac_bits (SecureML): no communication; see fixedpoint.truncate_share."""
    if not ctx.is_server:
        return Shared(None, value.shape)
    f = ctx.config.frac_bits
    return Shared(fixedpoint.truncate_share(value.share, ctx.server_index, f), value.shape)


def multiply(ctx: Context, x: Shared, y: Shared, op: Bilinear = MUL) -> Shared:
    """x (op) y for shared fixed-point x, y: a Beaver product then local truncation."""
    return truncate(ctx, product(ctx, x, y, op))
