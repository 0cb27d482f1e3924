"""Protocol families: the one place where ``protocol="securenn"`` or ``"pond"`` becomes behaviour.

A family supplies the protocol-specific steps; every composite above it (comparisons, ``where``,
``relu``, ``max``, ``argmax``, ``maxpool2d``, clamping, division, the approximations) is written once
against this interface, in the tensor layer:

- ``exact``: whether comparisons are exact (then composites may clamp inputs into an approximation's
  interval with them);
- ``default_truncation``: the truncation mode of a run that does not choose one;
- ``ge_zero(ctx, d, bound=None)``: fixed-point shares of [d >= 0] (0.0 or 1.0);
- ``equal_zero(ctx, d)``: fixed-point shares of [d == 0];
- ``select(ctx, cond, a, b)``: a where the fixed-point 0.0/1.0 ``cond`` is 1, else b (``where``);
- ``relu(ctx, x, bound=None, blur=None)``: fixed-point max(x, 0);
- ``max_step(ctx, best, other, index, other_index, bound=None)``: one step of the max tournament
  (``maxpool.tournament_max``), indices in fixed point;
- ``divide(ctx, x, y, integer_bits)``: x / y for a private positive divisor y.

``bound`` (a positive real, or None): for ``ge_zero`` and ``relu`` a bound on |input|, for ``max_step``
on |value| of the candidates. Pond's ReLU takes it as the interval [-bound, bound] of its polynomial
(None: RELU_BOUND, 8). SecureNN takes it as a promise: with one, its comparisons look only at the
bits that the bounded range needs (``securenn.drelu`` with ``bits``), exact for inputs of the
promised range and silently wrong for some beyond; without, they are exact on the whole ring.
``blur`` (a positive real, with a bound; ``relu`` only): a threshold that may be blurred, for
composites that tolerate it (the inverse square root's normalization): SecureNN may then count
inputs in (-blur, 0) as >= 0 (returning x instead of 0 there) and compares fewer bits; Pond ignores it.

A third family (say, replicated three-party sharing) is one more object here, registered in
``FAMILIES``. Every value is a fixed-point ``Shared`` with the run's frac_bits.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import math

import numpy as np

from mpcnp.protocols import maxpool, pond, polynomial, securenn
from mpcnp.protocols import shared
from mpcnp.protocols.shared import Shared, add_public, broadcast_shape
from mpcnp.runtime.context import Config, Context

__all__ = ["Family", "SecureNN", "Pond", "FAMILIES", "family", "of", "config", "check_bound", "bound_bits"]


def check_bound(bound, what: str = "bound") -> float | None:
    """``bound`` as a float if it is None or a positive finite real; ValueError naming ``what``
    otherwise (a bool, a string, zero, a negative number, NaN or infinity)."""
    if bound is None:
        return None
    if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)) \
            or not math.isfinite(bound) or not bound > 0:
        raise ValueError(f"{what} must be a positive finite number (or None for no bound), got {bound!r}")
    return float(bound)


def bound_bits(bound: float | None, frac_bits: int) -> int:
    """The k of SecureNN's bounded comparisons for private values |x| < ``bound``: the smallest k with
    2^(k-1) > bound 2^frac_bits (the bound in ring units), at least 2 and at most 64 (None: 64, the
    whole ring). The comparison is then exact for |x| < 2^(k-1-frac_bits), the power of two above
    the bound."""
    bound = check_bound(bound)
    if bound is None:
        return 64
    units = bound * 2.0 ** frac_bits
    if units >= 2.0 ** 63:
        return 64
    return max(2, math.floor(math.log2(units)) + 2)

class Family(ABC):
    """The interface every protocol family implements (see the module docstring)."""

    name: str
    exact: bool
    default_truncation: str

    @abstractmethod
    def ge_zero(self, ctx: Context, d: Shared, bound: float | None = None) -> Shared:
        """Fixed-point shares of [d >= 0] (``bound``: see the module docstring)."""

    @abstractmethod
    def equal_zero(self, ctx: Context, d: Shared) -> Shared:
        """Fixed-point shares of [d == 0]."""

    @abstractmethod
    def select(self, ctx: Context, cond: Shared, a: Shared, b: Shared) -> Shared:
        """Fixed-point shares of a where cond (fixed-point 0.0/1.0) is 1, b where it is 0; NumPy
        broadcasting."""

    @abstractmethod
    def relu(self, ctx: Context, x: Shared, bound: float | None = None, blur: float | None = None) -> Shared:
        """Fixed-point shares of max(x, 0) (``bound``: see the module docstring)."""

    def truncated_relu(self, ctx: Context, product: Shared, shift: int, bound: float | None = None) -> Shared:
        """``relu`` of a product truncated by ``shift`` bits (``pond.truncate``, the run's mode):
        relu(x (op) w) for the untruncated shares of x (op) w. ``bound`` as ``relu``'s, on the
        truncated value."""
        return self.relu(ctx, pond.truncate(ctx, product, shift, consume=True) if shift else product, bound)

    @abstractmethod
    def max_step(self, ctx: Context, best: Shared, other: Shared, index: Shared | None,
                 other_index: Shared | None, bound: float | None = None) -> tuple[Shared, Shared | None]:
        """One tournament step: (the larger of best and other, its index), ties to best (``bound`` on
        the candidates' magnitudes: see the module docstring)."""

    @abstractmethod
    def divide(self, ctx: Context, x: Shared, y: Shared, integer_bits: int) -> Shared:
        """Fixed-point shares of x / y for a private y > 0."""

    def __repr__(self) -> str:
        return f"<protocol family {self.name}>"


def _relu_bits(ctx: Context, bound: float | None, blur: float | None) -> tuple[int, int]:
    """(k, s) of SecureNN's ReLU for a ``bound`` and a ``blur`` (see ``SecureNN.relu``)."""
    f = ctx.config.frac_bits
    if blur is None:
        return bound_bits(bound, f), 0
    if check_bound(bound) is None:
        raise ValueError("a blurred ReLU needs a bound")
    bits = bound_bits(bound + check_bound(blur, "blur"), f)
    return bits, min(max(0, math.floor(math.log2(blur * 2.0 ** f))), bits - 2)


def _fixed_bit(ctx: Context, bit: Shared) -> Shared:
    """A shared 0/1 ring integer as fixed-point 0.0/1.0 shares (a local shift) that keeps the ring
    bit along (``Shared.bit``), for an exact ``select`` later."""
    fixed = bit << ctx.config.frac_bits
    fixed.bit = bit
    return fixed


class SecureNN(Family):
    """Exact comparisons with the producer as SecureNN's helper (Wagh et al., PoPETs 2019), DReLU by
    one PrivateCompare (Falcon, PoPETs 2021)."""

    name = "securenn"
    exact = True
    default_truncation = "exact"  # the protocol sold as exact: no truncation failures by default

    def ge_zero(self, ctx: Context, d: Shared, bound: float | None = None) -> Shared:
        """[d >= 0] for every d in the ring (so for every difference of encodable values): DReLU,
        3 rounds, 213 bytes per element. With ``bound``: the DReLU of k = ``bound_bits`` bits, exact
        for |d| < bound (3k + 5 + 2w bytes, w the bytes of the smallest unsigned integer holding k bits:
        85 at k = 24)."""
        return _fixed_bit(ctx, securenn.drelu(ctx, d, bound_bits(bound, ctx.config.frac_bits)))

    def at_least(self, ctx: Context, x: Shared, thresholds: np.ndarray) -> Shared:
        """Ring bits [x >= T_j] for public ring values T_j, shape (J,) + x.shape, exact for every x - T_j
        in the ring: one mask for all J (``securenn.drelu_thresholds``): 3 rounds, 79 + 134 J bytes per
        element (J separate comparisons: 213 J). What exact range reductions (sqrt, log) compare."""
        return securenn.drelu_thresholds(ctx, x, thresholds)

    def equal_zero(self, ctx: Context, d: Shared) -> Shared:
        """[d == 0] = [d >= 0] + [-d >= 0] - 1, exact for every d in the ring: both DReLUs in one
        batch, 3 rounds, 426 bytes per element. Keeps the ring bit."""
        both = securenn.drelu(ctx, shared.stack([d, -d]))
        bit = add_public(ctx, both.map(lambda a: a[0]) + both.map(lambda a: a[1]), np.uint64((1 << 64) - 1))
        return _fixed_bit(ctx, bit)

    def select(self, ctx: Context, cond: Shared, a: Shared, b: Shared) -> Shared:
        """Exact for every a, b: SelectShare (PETS Alg. 2), b + bit (a - b) with the condition's ring
        bit, one Beaver product of the bit, untruncated (40 bytes per element, 1 round). A condition
        that carries no bit (not straight from a comparison) is read as [cond >= 0.5] first, by one
        DReLU (213 bytes, 3 rounds more): exact for 0.0/1.0."""
        bit = cond.bit
        if bit is None:
            half = np.uint64((1 << 64) - (1 << (ctx.config.frac_bits - 1)))  # -0.5 in fixed point
            bit = securenn.drelu(ctx, add_public(ctx, cond, half))
        return securenn.select_share(ctx, bit, b, a)

    def relu(self, ctx: Context, x: Shared, bound: float | None = None, blur: float | None = None) -> Shared:
        """Exact for every encodable x without ``bound``: 3 rounds, 221 bytes per element. With
        ``bound``, a promise that |x| < bound: the ReLU of k = ``bound_bits`` bits, 3k + 29 bytes
        (101 at k = 24, bound 64 at frac_bits 16), exact for |x| < bound and wrong for some x beyond
        (0 or x instead of the other). With ``blur`` as well, k = ``bound_bits(bound + blur)`` and the
        s = floor(log2(blur 2^f)) low bits are not compared (``securenn.falcon_msb``'s ``coarse``):
        3 (k - s) + 29 bytes, x in (-blur, 0) may come out as x. The result keeps DReLU(x) as its
        ``drelu`` (for the gradient)."""
        value, bit = securenn.relu(ctx, x, *_relu_bits(ctx, bound, blur))
        value.drelu = bit
        return value

    def relu_times(self, ctx: Context, x: Shared, times: Shared, bound: float | None = None,
                   blur: float | None = None) -> tuple[Shared, Shared]:
        """``relu`` (keeping its ``drelu``) and DReLU(x) * times (``times`` a shared value of x's shape,
        the product untruncated) in the ReLU's 3 rounds: 24 bytes per element more than ``relu``
        (``securenn.relu_times``)."""
        value, bit, together = securenn.relu_times(ctx, x, times, *_relu_bits(ctx, bound, blur))
        value.drelu = bit
        return value, together

    def truncated_relu(self, ctx: Context, product: Shared, shift: int, bound: float | None = None) -> Shared:
        """Under exact truncation, the truncation's round is the ReLU's first (``securenn.truncate_relu``):
        3 rounds instead of 4, 241.25 bytes per element instead of 225.25 (unbounded). With ``bound``
        on the truncated value, the comparison covers ``bound_bits`` + ``shift`` bits of the product
        (at most 64). The result keeps DReLU as its ``drelu``, as ``relu``'s."""
        if ctx.truncation != "exact" or not shift:
            return super().truncated_relu(ctx, product, shift, bound)
        bits = min(64, bound_bits(bound, ctx.config.frac_bits) + shift)
        value, bit = securenn.truncate_relu(ctx, product, shift, bits)
        value.drelu = bit
        return value

    def max_step(self, ctx, best, other, index, other_index, bound=None):
        """Exact, ties to the first (maxpool.exact_step): 221 bytes and 3 rounds, 245 and 3 with the
        index. With ``bound`` on the candidates, their difference is below 2 bound: the ReLU of
        ``bound_bits(2 bound)`` bits (3k + 29 bytes, 24 more with the index)."""
        bits = 64 if bound is None else bound_bits(2 * check_bound(bound), ctx.config.frac_bits)
        return maxpool.exact_step(ctx, best, other, index, other_index, bits=bits)

    def divide(self, ctx: Context, x: Shared, y: Shared, integer_bits: int) -> Shared:
        """floor(x 2^f / y) / 2^f exactly, by SecureNN's long division restoring the remainder
        (``securenn.fixed_division``). Preconditions (real values, secret, so not checked): y > 0,
        |x / y| < 2^integer_bits and y < 2^(62 - integer_bits - f). Cost: integer_bits + f + 1
        sequential steps of one DReLU with the bit's product folded in (3 rounds, 221 bytes per element each)."""
        shape = broadcast_shape(x.shape, y.shape)
        return securenn.fixed_division(ctx, x.broadcast_to(shape), y.broadcast_to(shape), integer_bits,
                                       ctx.config.frac_bits)


class Pond(Family):
    """Pond (Dahl et al., arXiv 1810.08130): comparisons, ReLU and division by polynomials, accurate
    on the intervals docs/api.md states."""

    name = "pond"
    exact = False
    default_truncation = "local"

    def ge_zero(self, ctx: Context, d: Shared, bound: float | None = None) -> Shared:
        """1 - step(-d) (polynomial.step): accurate for d in [-16, 16] outside |d| < 0.25 (``bound``
        is not used). Written as 1 - step(-d) so that a <= b and a > b add up to exactly 1 (at d = 0
        no approximation can tell < from <=)."""
        return add_public(ctx, -polynomial.step(ctx, -d), np.uint64(1 << ctx.config.frac_bits))

    def equal_zero(self, ctx: Context, d: Shared) -> Shared:
        """[-0.5 <= d <= 0.5] = [d >= -0.5] + [d <= 0.5] - 1 by two steps in one batch (``ge_zero``):
        1 (within the step's error) for |d| <= 0.25, 0 for 0.75 <= |d| <= 15.5, unknown in between,
        so that values meant to be equal compare equal despite rounding. 12 rounds."""
        half = np.uint64(1 << (ctx.config.frac_bits - 1))
        steps = polynomial.step(ctx, shared.stack([add_public(ctx, -d, (1 << 64) - int(half)),
                                                   add_public(ctx, d, (1 << 64) - int(half))]))
        ones = add_public(ctx, -(steps.map(lambda a: a[0]) + steps.map(lambda a: a[1])),
                          np.uint64(1 << ctx.config.frac_bits))
        return ones

    def select(self, ctx: Context, cond: Shared, a: Shared, b: Shared) -> Shared:
        """b + cond (a - b): one truncated product (40 bytes per element, 1 round, plus the
        truncation), within the truncation's error for a 0.0/1.0 cond and |a - b| inside the product
        headroom 2^(62 - 2f); a cond between 0 and 1 weighs a and b."""
        moved = pond.multiply(ctx, cond, a - b)
        return moved + b.broadcast_to(moved.shape)

    def relu(self, ctx: Context, x: Shared, bound: float | None = None, blur: float | None = None) -> Shared:
        """polynomial.relu: accurate on [-bound, bound] within 0.0044 bound (an integer in [1, 2^20];
        None: polynomial.RELU_BOUND, 8; ``blur`` is not used)."""
        return polynomial.relu(ctx, x, polynomial.RELU_BOUND if bound is None else bound)

    def max_step(self, ctx, best, other, index, other_index, bound=None):
        """The larger by polynomial.step and a product (approximate near ties and outside the step's
        interval), the index likewise (``bound`` is not used)."""
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
           timeout: float = 60.0, validate: bool = False) -> Config:
    """A run's Config with the protocol checked and its default truncation filled in."""
    chosen = family(protocol)
    if not isinstance(validate, bool):
        raise TypeError(f"validate must be True or False, got {validate!r}")
    return Config(protocol=chosen.name, frac_bits=frac_bits,
                  truncation=chosen.default_truncation if truncation is None else truncation, timeout=timeout,
                  validate=validate)
