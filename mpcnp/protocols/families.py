"""Protocol families: the one place where ``protocol="securenn"`` or ``"pond"`` becomes behaviour.

A family supplies the protocol-specific steps; every composite above it (comparisons, ``where``,
``relu``, ``max``, ``argmax``, ``maxpool2d``, clamping, division, the approximations) is written once
against this interface, in the tensor layer:

- ``exact``: whether comparisons are exact (then composites may clamp inputs into an approximation's
  interval with them);
- ``default_truncation``: the truncation mode of a run that does not choose one;
- ``ge_zero(ctx, d)``: fixed-point shares of [d >= 0] (0.0 or 1.0);
- ``relu(ctx, x, bound)``: fixed-point max(x, 0) (``bound``: the interval of an approximation);
- ``max_step(ctx, best, other, index, other_index)``: one step of the max tournament
  (``maxpool.tournament_max``), indices in fixed point;
- ``divide(ctx, x, y, integer_bits)``: x / y for a private positive divisor y.

A third family (say, replicated three-party sharing) is one more object here, registered in
``FAMILIES``. Every value is a fixed-point ``Shared`` with the run's frac_bits.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from mpcnp.protocols import maxpool, pond, polynomial, securenn
from mpcnp.protocols.shared import Shared, add_public, broadcast_shape
from mpcnp.runtime.context import Config, Context

__all__ = ["Family", "SecureNN", "Pond", "FAMILIES", "family", "of", "config"]

class Family(ABC):
    """The interface every protocol family implements (see the module docstring)."""

    name: str
    exact: bool
    default_truncation: str

    @abstractmethod
    def ge_zero(self, ctx: Context, d: Shared) -> Shared:
        """Fixed-point shares of [d >= 0]."""

    @abstractmethod
    def relu(self, ctx: Context, x: Shared, bound: int) -> Shared:
        """Fixed-point shares of max(x, 0)."""

    @abstractmethod
    def max_step(self, ctx: Context, best: Shared, other: Shared, index: Shared | None,
                 other_index: Shared | None) -> tuple[Shared, Shared | None]:
        """One tournament step: (the larger of best and other, its index), ties to best."""

    @abstractmethod
    def divide(self, ctx: Context, x: Shared, y: Shared, integer_bits: int) -> Shared:
        """Fixed-point shares of x / y for a private y > 0."""

    def __repr__(self) -> str:
        return f"<protocol family {self.name}>"


def _fixed_bit(ctx: Context, bit: Shared) -> Shared:
    """A shared 0/1 ring integer as fixed-point 0.0/1.0 shares: a local shift."""
    return bit << ctx.config.frac_bits


class SecureNN(Family):
    """Exact comparisons with the producer as SecureNN's helper (Wagh et al., PoPETs 2019), DReLU by
    one PrivateCompare (Falcon, PoPETs 2021)."""

    name = "securenn"
    exact = True
    default_truncation = "local"

    def ge_zero(self, ctx: Context, d: Shared) -> Shared:
        """[d >= 0] for every d in the ring (so for every difference of encodable values): DReLU,
        3 rounds, 213 bytes per element."""
        return _fixed_bit(ctx, securenn.drelu(ctx, d))

    def relu(self, ctx: Context, x: Shared, bound: int) -> Shared:
        """Exact for every encodable x (``bound`` is not needed): 3 rounds, 221 bytes per element."""
        value, _ = securenn.relu(ctx, x)
        return value

    def max_step(self, ctx, best, other, index, other_index):
        """Exact, ties to the first (maxpool.exact_step): 221 bytes and 3 rounds, 261 and 4 with the index."""
        return maxpool.exact_step(ctx, best, other, index, other_index)

    def divide(self, ctx: Context, x: Shared, y: Shared, integer_bits: int) -> Shared:
        """floor(x 2^f / y) / 2^f exactly, by SecureNN's long division (PETS Alg. 8) on
        x 2^f + 2^(integer_bits + f) y, which keeps the dividend nonnegative for |x / y| <
        2^integer_bits. Preconditions (real values, secret, so not checked): y > 0, |x / y| <
        2^integer_bits and |x| 2^(2f) + 2^(integer_bits + 2f) y < 2^63. Cost: integer_bits + f + 1
        sequential steps of one DReLU and one product (4 rounds, 237 bytes per element each)."""
        f = ctx.config.frac_bits
        shape = broadcast_shape(x.shape, y.shape)
        offset = np.uint64(1 << (integer_bits + f))
        divisor = y.broadcast_to(shape)
        numerator = (x.broadcast_to(shape) << f) + divisor * offset
        quotient = securenn.division(ctx, numerator, divisor, integer_bits + f + 1)
        return add_public(ctx, quotient, (1 << 64) - int(offset))  # minus the offset, mod 2^64


class Pond(Family):
    """Pond (Dahl et al., arXiv 1810.08130): comparisons, ReLU and division by polynomials, accurate
    on the intervals docs/api.md states."""

    name = "pond"
    exact = False
    default_truncation = "local"

    def ge_zero(self, ctx: Context, d: Shared) -> Shared:
        """1 - step(-d) (polynomial.step): accurate for d in [-16, 16] outside |d| < 0.25. Written as
        1 - step(-d) so that a <= b and a > b add up to exactly 1 (at d = 0 no approximation can
        tell < from <=)."""
        return add_public(ctx, -polynomial.step(ctx, -d), np.uint64(1 << ctx.config.frac_bits))

    def relu(self, ctx: Context, x: Shared, bound: int) -> Shared:
        """polynomial.relu: accurate on [-bound, bound] within 0.0044 bound."""
        return polynomial.relu(ctx, x, bound)

    def max_step(self, ctx, best, other, index, other_index):
        """The larger by polynomial.step and a product (approximate near ties and outside the step's
        interval), the index likewise."""
        gap = other - best
        take = polynomial.step(ctx, gap)
        new_best = best + pond.multiply(ctx, take, gap)
        if index is None:
            return new_best, None
        return new_best, index + pond.multiply(ctx, take, other_index - index)

    def divide(self, ctx: Context, x: Shared, y: Shared, integer_bits: int) -> Shared:
        """x * reciprocal(y), y in the reciprocal's interval (0.05, 100); ``integer_bits`` unused."""
        return pond.multiply(ctx, x, polynomial.reciprocal(ctx, y, *polynomial.RECIPROCAL_INTERVAL))


FAMILIES: dict[str, Family] = {family.name: family for family in (SecureNN(), Pond())}


def family(name: str) -> Family:
    """The family called ``name``; ValueError naming the choices otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(FAMILIES)}") from None


def of(ctx: Context) -> Family:
    """The family of the run ``ctx`` belongs to."""
    return FAMILIES[ctx.config.protocol]


def config(protocol: str = "securenn", frac_bits: int | None = None, truncation: str | None = None,
           timeout: float = 60.0) -> Config:
    """A run's Config with the protocol checked and its default truncation filled in."""
    chosen = family(protocol)
    return Config(protocol=chosen.name, frac_bits=frac_bits,
                  truncation=chosen.default_truncation if truncation is None else truncation, timeout=timeout)
