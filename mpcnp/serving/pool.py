"""Preprocessing: the producer deals a served model's data-independent randomness before the queries.

What is precomputed, per forward pass of one model at one batch size (a "recipe"):
- for each Beaver product whose operands are fresh values or the model's parameters (every Dense and
  Conv2d layer, and the products inside comparisons and pooling): the masks of its fresh operands and
  the shares of c = a (op) b. The parameters' own masks are drawn and opened once, when the model is
  loaded, and reused by every query (Pond's mask reuse);
- for each SecureNN comparison (ReLU, max pooling, argmax): the mask r and the Z_p shares of its
  63 low bits.
What stays online: the servers' openings of masked values, PrivateCompare (the servers' messages to
the producer and its answer: the producer is SecureNN's online helper) and whatever depends on it,
reveals, and any product of a value masked earlier in the same pass (dealt inline, as in mp.run).

How. The first batch of a recipe runs with a ``TracingDealer``, which deals inline and records each
request (kind, shapes, operation, and which operands are fresh or parameters). When the service is
idle the leader asks for one more item of a recipe: every party runs ``generate`` in step (SPMD):
masks and server0's shares come from the offline PRF streams each server shares with the producer
(session.offline_streams), and the producer sends server1 its shares of c and of r's bits. A later
batch of the recipe then takes one item through a ``PooledDealer`` (each item is used once) and
sends none of these messages. Pools are bounded (items per recipe and bytes in all) and discarded
with the session; a model replaced or unloaded drops its recipes.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from mpcnp import ring
from mpcnp.protocols import dealing
from mpcnp.protocols.dealing import BitMask, Dealer, Triple, low_bits
from mpcnp.protocols.shared import Shared
from mpcnp.protocols.sharing import BITS_Z_P, recv_array
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, Context

__all__ = ["TripleStep", "BitsStep", "Recipe", "TracingDealer", "PooledDealer", "generate", "Pools"]

FRESH, PARAMETER, SAME, INLINE = "fresh", "parameter", "same", "inline"


@dataclass
class TripleStep:
    """A Beaver product of a forward pass: op, operand and output shapes, where each operand's mask
    comes from (FRESH: drawn for it; PARAMETER: a loaded parameter's; SAME: y is x; INLINE: a mask
    drawn earlier in the pass, so the whole product is dealt inline) and, on the producer, the
    parameters' masks."""

    op: Any
    shapes: tuple[tuple, tuple, tuple]
    sources: tuple[str, str]
    parameter_masks: tuple[Any, Any] = (None, None)

    @property
    def pooled(self) -> bool:
        return INLINE not in self.sources

    def elements(self) -> int:
        """Ring elements a server keeps per item: fresh masks and its share of c."""
        (xs, ys, zs), (sx, sy) = self.shapes, self.sources
        return (int(np.prod(xs)) if sx == FRESH else 0) + (int(np.prod(ys)) if sy == FRESH else 0) + int(np.prod(zs))


@dataclass
class BitsStep:
    """A comparison mask of n elements whose ``rows`` low bits are dealt in Z_p."""

    n: int
    rows: int


@dataclass
class Recipe:
    """The requests of one forward pass, in order; ``nbytes`` once it is complete: the bytes a server
    keeps per item (the producer about as many)."""

    steps: list = field(default_factory=list)
    nbytes: int = 0

    def seal(self) -> "Recipe":
        self.nbytes = sum((8 * step.elements() if step.pooled else 0) if isinstance(step, TripleStep)
                          else 8 * step.n + step.rows * step.n for step in self.steps)
        return self


def _source(value: Shared, registry: set[int]) -> str:
    if value.mask is None:
        return FRESH
    return PARAMETER if id(value.mask) in registry else INLINE


class TracingDealer(Dealer):
    """Deals inline, as the base Dealer, and records the requests as a Recipe."""

    def __init__(self, registry: set[int]):
        self.registry = registry
        self.recipe = Recipe()

    def triple(self, ctx, x, y, op, shape) -> Triple:
        sources = (_source(x, self.registry), SAME if y is x else _source(y, self.registry))
        if sources[0] == INLINE or sources[1] == INLINE:
            sources = (INLINE, INLINE)
        masks = tuple(v.mask if s == PARAMETER and ctx.name == PRODUCER else None for v, s in zip((x, y), sources))
        self.recipe.steps.append(TripleStep(op, (tuple(x.shape), tuple(y.shape), tuple(shape)), sources, masks))
        return super().triple(ctx, x, y, op, shape)

    def bit_mask(self, ctx, n, rows) -> BitMask:
        self.recipe.steps.append(BitsStep(n, rows))
        return super().bit_mask(ctx, n, rows)


def _masks(ctx: Context, streams: dict[str, ring.PRF], shape) -> np.ndarray | None:
    """A mask from the offline streams: a_j on server j, a = a0 + a1 on the producer."""
    if ctx.name == PRODUCER:
        value = streams[SERVER0].uint64(shape)
        value += streams[SERVER1].uint64(shape)
        return value
    return streams[PRODUCER].uint64(shape) if ctx.is_server else None


class _Dealing:
    """``sharing.deal`` on the offline streams for a whole item: server0's shares are drawn on both
    ends as the item is generated; the producer's shares for server1 go in one message at the end
    (``finish``), uint64 parts first so that server1's views of it stay aligned."""

    def __init__(self, ctx: Context, streams: dict[str, ring.PRF]):
        self.ctx, self.streams = ctx, streams
        self.parts: list[list] = [[], []]          # uint64 parts, uint8 parts (the producer's)
        self.slots: list[list] = [[], []]          # (holder, index, shape) to fill (server1's)

    def deal(self, value, shape, ring_, holder: list, index: int) -> None:
        """Set ``holder[index]`` to this party's share of the producer's ``value`` (ring_ None: Z_2^64,
        else a sharing.Ring of uint8 values), now on server0, at ``finish`` on server1."""
        draw = (lambda prf, s: prf.uint64(s)) if ring_ is None else ring_.draw
        subtract = np.subtract if ring_ is None else ring_.subtract
        kind = 0 if ring_ is None else 1
        if self.ctx.name == PRODUCER:
            self.parts[kind].append(subtract(value, draw(self.streams[SERVER0], shape)))
        elif self.ctx.name == SERVER0:
            holder[index] = draw(self.streams[PRODUCER], shape)
        elif self.ctx.name == SERVER1:
            self.slots[kind].append((holder, index, tuple(shape)))

    def finish(self) -> None:
        """The producer's one message to server1 (nothing if the item deals nothing)."""
        if self.ctx.name == PRODUCER and (self.parts[0] or self.parts[1]):
            flat = [np.ascontiguousarray(p).reshape(-1).view(np.uint8) for p in self.parts[0] + self.parts[1]]
            self.ctx.send(SERVER1, np.concatenate(flat))
        elif self.ctx.name == SERVER1 and (self.slots[0] or self.slots[1]):
            sizes = [int(np.prod(shape)) * 8 for _, _, shape in self.slots[0]]
            sizes += [int(np.prod(shape)) for _, _, shape in self.slots[1]]
            buffer = recv_array(self.ctx, PRODUCER, np.uint8, (sum(sizes),))
            if buffer.ctypes.data % 8:      # a received frame may sit anywhere; uint64 views want alignment
                buffer = buffer.copy()
            offset = 0
            for (holder, index, shape), size, dtype in zip(self.slots[0] + self.slots[1], sizes,
                                                           [np.uint64] * len(self.slots[0]) + [np.uint8] * len(self.slots[1])):
                holder[index] = buffer[offset:offset + size].view(dtype).reshape(shape)
                offset += size


def generate(ctx: Context, recipe: Recipe, streams: dict[str, ring.PRF]) -> list:
    """One item of ``recipe`` (every core party calls it in step): per step, this party's material
    (a list), or None for a step dealt inline. Cost: one message from the producer to server1 of |z|
    ring elements per pooled product and rows * n bytes per comparison mask; one round."""
    item = []
    dealing = _Dealing(ctx, streams)
    for step in recipe.steps:
        if isinstance(step, TripleStep):
            if not step.pooled:
                item.append(None)
                continue
            (xs, ys, zs), (sx, sy) = step.shapes, step.sources
            a = _masks(ctx, streams, xs) if sx == FRESH else None
            b = a if sy == SAME else (_masks(ctx, streams, ys) if sy == FRESH else None)
            c = None
            if ctx.name == PRODUCER:
                left = a if sx == FRESH else step.parameter_masks[0]
                right = left if sy == SAME else (b if sy == FRESH else step.parameter_masks[1])
                c = step.op.apply(left, right)
            material = [a, b, None]
            dealing.deal(c, zs, None, material, 2)
        else:
            r = _masks(ctx, streams, (step.n,))
            value = low_bits(r, step.rows) if ctx.name == PRODUCER else None
            material = [r, None]
            dealing.deal(value, (step.rows, step.n), BITS_Z_P, material, 1)
        item.append(material)
    dealing.finish()
    return item


class _Ready(Triple):
    def __init__(self, ctx, x, y, op, shape, c):
        super().__init__(ctx, x, y, op, shape)
        self.c = c

    def share(self):
        return self.c


class _ReadyBits(BitMask):
    def __init__(self, ctx, value, n, rows, bits):
        super().__init__(ctx, value, n, rows)
        self._bits = bits

    def bits(self):
        return self._bits


class PooledDealer(Dealer):
    """Hands out one item of a recipe, step by step; a step the recipe deals inline is dealt inline.
    RuntimeError if the forward pass asks for something else than the recipe recorded."""

    def __init__(self, recipe: Recipe, item: list, registry: set[int]):
        self.steps, self.item, self.registry = recipe.steps, item, registry
        self.position = 0

    def _next(self, kind, what: str):
        if self.position >= len(self.steps) or not isinstance(self.steps[self.position], kind):
            raise RuntimeError(f"the forward pass asked for {what} at step {self.position}, which its recipe "
                               "does not have")
        step, material = self.steps[self.position], self.item[self.position]
        self.position += 1
        return step, material

    def triple(self, ctx, x, y, op, shape) -> Triple:
        step, material = self._next(TripleStep, f"a product {op.name} of {x.shape} and {y.shape}")
        sources = (_source(x, self.registry), SAME if y is x else _source(y, self.registry))
        if step.shapes != (tuple(x.shape), tuple(y.shape), tuple(shape)) or step.op.name != op.name or (
                step.pooled and sources != step.sources):
            raise RuntimeError(f"product {self.position - 1} ({op.name}) differs from its recipe")
        if not step.pooled:
            return super().triple(ctx, x, y, op, shape)
        a, b, c = material
        if step.sources[0] == FRESH:
            x.mask = a
        if step.sources[1] == FRESH:
            y.mask = b
        return _Ready(ctx, x, y, op, shape, c)

    def bit_mask(self, ctx, n, rows) -> BitMask:
        step, material = self._next(BitsStep, f"a comparison mask of {n} elements")
        if (step.n, step.rows) != (n, rows):
            raise RuntimeError(f"comparison mask {self.position - 1} differs from its recipe")
        r, bits = material
        return _ReadyBits(ctx, r, n, rows, bits)

    def check_done(self) -> None:
        if self.position != len(self.steps):
            raise RuntimeError(f"the forward pass used {self.position} of its recipe's {len(self.steps)} steps")


class Pools:
    """One party's recipes and items, by key (model, upload, output, bucket). Every core party holds
    the same recipes and item counts, since all run the same steps; the leader decides from its own."""

    def __init__(self, streams: dict[str, ring.PRF], items_per_recipe: int, max_bytes: int):
        self.streams = streams
        self.items_per_recipe, self.max_bytes = items_per_recipe, max_bytes
        self.registry: set[int] = set()
        self.recipes: OrderedDict[tuple, Recipe] = OrderedDict()   # least recently used first
        self.items: dict[tuple, deque] = {}

    def register(self, masks) -> None:
        """Masks of loaded parameters: products with them are pooled with the mask as it is."""
        self.registry.update(id(mask) for mask in masks if mask is not None)

    def forget(self, model: str, masks=()) -> None:
        """Drop every recipe of ``model`` and the registry entries of its old masks."""
        for key in [k for k in self.recipes if k[0] == model]:
            del self.recipes[key]
            del self.items[key]
        self.registry.difference_update(id(mask) for mask in masks if mask is not None)

    def nbytes(self) -> int:
        return sum(recipe.nbytes * len(self.items[key]) for key, recipe in self.recipes.items())

    @contextlib.contextmanager
    def dealer(self, key: tuple, pooled: bool) -> Iterator[Dealer]:
        """The dealer of a batch of ``key``: an item of its pool (``pooled``), else tracing (first
        batch of the key), else inline."""
        if pooled:
            dealer = PooledDealer(self.recipes[key], self.items[key].popleft(), self.registry)
        elif key not in self.recipes:
            dealer = TracingDealer(self.registry)
        else:
            dealer = Dealer()
        with dealing.using(dealer):
            yield dealer
        if isinstance(dealer, PooledDealer):
            dealer.check_done()
        if isinstance(dealer, TracingDealer):
            self.recipes[key] = dealer.recipe.seal()
            self.items[key] = deque()
        if key in self.recipes:
            self.recipes.move_to_end(key)

    def available(self, key: tuple) -> int:
        return len(self.items.get(key, ()))

    def wanted(self) -> tuple | None:
        """The recipe to add an item to next (most recently used first), or None when every pool is
        full or the byte budget is spent."""
        spent = self.nbytes()
        for key in reversed(self.recipes):
            size = self.recipes[key].nbytes
            if len(self.items[key]) < self.items_per_recipe and size and spent + size <= self.max_bytes:
                return key
        return None

    def refill(self, ctx: Context, key: tuple) -> None:
        """Add one item to ``key``'s pool (SPMD: every core party calls it)."""
        self.items[key].append(generate(ctx, self.recipes[key], self.streams))
