"""numerator * x^(-1/2) for private x > 0: the inverse square root Adam's step needs.

Under securenn the input is first brought into [1, 16) by exact comparisons (a binary search on its
exponent), so it works for every x from one unit 2^-f up to 2^(62 - 2f), the headroom of a product;
under pond, Newton's iteration from a constant covers a stated interval. Newton's iteration for
x^(-1/2), y <- y (3 - x y^2) / 2, needs no division; each step squares the relative error (times 1.5).
"""
from __future__ import annotations

import math

import numpy as np

from mpcnp import fixedpoint
from mpcnp.protocols import families, pond
from mpcnp.protocols.polynomial import chebyshev_terms, combine
from mpcnp.protocols.shared import Shared, add_public, stack
from mpcnp.tensor import PrivateTensor, Tensor, as_private
from mpcnp.tracing import operation

__all__ = ["inverse_sqrt_times", "pond_alphas", "domain"]

DOWN = (32, 16, 8, 4)        # securenn: where x >= 2^k, x /= 2^k (those needed for the domain)
GUESS = (1.0, 16.0)          # the interval the guess covers
GUESS_DEGREE = 6             # x^(-1/2) on [1, 16] within 2.1% by a Chebyshev interpolant
_GUESS_COEF = np.polynomial.chebyshev.chebinterpolate(lambda t: 1 / np.sqrt(8.5 + 7.5 * t), GUESS_DEGREE)
NEWTON_AFTER_GUESS = 2       # 2.1% -> 6.6e-4 -> 6.5e-7


def domain(frac_bits: int) -> tuple[float, float]:
    """The x that securenn's ``inverse_sqrt_times`` takes: one unit up to the product headroom."""
    return 2.0 ** -frac_bits, 2.0 ** (62 - 2 * frac_bits)


def pond_alphas(ratio: float, frac_bits: int) -> list[float]:
    """Scale factors of Newton's steps from y = 1 / sqrt(hi) for x in [hi / ratio, hi]. With
    r = y sqrt(x) in [lo, hi'], a step maps r to a r (3 - a^2 r^2) / 2, which peaks at 1 for
    r = 1 / a; a is chosen to lift the lower end as far as possible (overshooting the peak where that
    helps: about 2.25 times per step while r is small), until r is within 2^-(frac_bits + 2) of 1."""
    lo, hi, alphas = 1 / math.sqrt(ratio), 1.0, []
    phi = lambda a, r: a * r * (3 - a * a * r * r) / 2  # noqa: E731
    while 1 - lo > 2.0 ** -(frac_bits + 2):
        grid = np.linspace(1 / hi, math.sqrt(3) / hi * 0.999, 2001)
        a = float(grid[np.argmax(np.minimum(phi(grid, lo), phi(grid, hi)))])
        lo, hi = min(phi(a, lo), phi(a, hi)), (1.0 if lo <= 1 / a <= hi else phi(a, hi))
        alphas.append(a)
    return alphas


def _normalize(ctx, x: Shared, numerator: Shared) -> tuple[Shared, Shared]:
    """x into [1, 16) by exact shifts, numerator by the square roots of the same factors (securenn).

    Each comparison is SecureNN's ReLU, whose DReLU bit b (a ring 0/1) it keeps: b x then follows from
    the ReLU's value locally. First, where x <= 1, x *= U = 2^(f + f mod 2) (exact, an integral
    factor; then x >= 1 everywhere); then for each needed k of DOWN, where x >= 2^k, x /= 2^k. The
    shifts are exact truncations (pond.truncate_exact) whatever the run's truncation mode: local
    truncation of values this large would often fail.
    """
    family, f = families.of(ctx), ctx.config.frac_bits
    up = f + f % 2
    one = fixedpoint.encode(np.float64(1.0), f)
    below = family.relu(ctx, add_public(ctx, -x, one), 1)          # b (1 - x)
    below_x = (below.drelu << f) - below                             # b x
    # b * numerator: one untruncated product with the bit, exact however large the values (a
    # fixed-point 0/1 times x near 2^46 would overflow the ring)
    chosen_n = pond.product(ctx, below.drelu, numerator, pond.MUL)
    x = x + below_x * np.uint64((1 << up) - 1)
    numerator = numerator + chosen_n * np.uint64((1 << (up // 2)) - 1)
    top = max(2.0 ** up, domain(f)[1])
    for k in (k for k in DOWN if 2.0 ** k < top):
        threshold = fixedpoint.encode(np.float64(2.0 ** k), f)
        above = family.relu(ctx, add_public(ctx, x, -threshold), 1)  # b (x - 2^k)
        above_x = above + above.drelu * threshold                    # b x
        chosen_n = pond.product(ctx, above.drelu, numerator, pond.MUL)
        # both shifted by k bits in one exact truncation (the numerator first raised by 2^(k/2)):
        # truncation rounds up with probability the dropped fraction, so it is unbiased
        shrunk = pond.truncate_exact(ctx, stack([above_x, chosen_n * np.uint64(1 << (k // 2))]), k)
        x = x - above_x + shrunk.map(lambda a: a[0])
        numerator = numerator - chosen_n + shrunk.map(lambda a: a[1])
    return x, numerator


SCALE = 256                  # y and x y^2 are carried times 256: 8 more significant bits


def _product(ctx, a: Shared, b: Shared, extra_bits: int) -> Shared:
    """a * b / 2^extra_bits: one Beaver product, one truncation by frac_bits + extra_bits."""
    return pond.truncate(ctx, pond.product(ctx, a, b, pond.MUL), ctx.config.frac_bits + extra_bits, consume=True)


def _guess(ctx, x: Shared) -> Shared:
    """256 x^(-1/2) on [1, 16] within 2.1%: a degree-6 Chebyshev series, 3 rounds."""
    lo, hi = GUESS
    radius, center = (hi - lo) / 2, (hi + lo) / 2
    t = pond.scale(ctx, pond.add_constant(ctx, x, np.float64(-center)), np.float64(1 / radius))
    return combine(ctx, chebyshev_terms(ctx, t, GUESS_DEGREE), SCALE * _GUESS_COEF)


@operation("inverse_sqrt_times")
def inverse_sqrt_times(x: PrivateTensor, numerator: Tensor, interval: tuple[float, float] | None = None) -> Tensor:
    """numerator * x^(-1/2) for a private x > 0 and a numerator of x's shape.

    securenn: x is normalized into [1, 16) by exact shifts (``_normalize``: where x <= 1 it is
    multiplied by 2^(f + f mod 2), then divided by 2^k where x >= 2^k for the k of 32, 16, 8, 4 the
    domain needs), the numerator by the square roots of the same factors (it must stay below
    2^(62 - f - k/2) for the largest such k: below 2^38 at frac_bits 16); then a degree-6 Chebyshev
    guess of x^(-1/2) (within 2.1%) and two Newton steps on 256 x^(-1/2): relative error below 1e-6
    plus fixed-point rounding (a few units of 256 y; the numerator's shifts a unit per level). The
    result times 256 must stay within a product's headroom: |numerator x^(-1/2)| < 2^(54 - 2f).
    Right for every x in [2^-f, 2^(62 - 2f)) (``interval`` is not needed). Cost per element: 4 levels
    at frac_bits 16 of a ReLU (221 bytes, 3 rounds), a bit product (40 bytes) and an exact division
    of two values (80 bytes); the guess (6 products, 3 rounds) and Newton (6 products); about 35
    rounds in all.
    pond (no exact comparison): Newton's steps from 1 / sqrt(hi), scaled (``pond_alphas``), on
    y sqrt(hi) (whose precision does not shrink with y): right for x in ``interval`` = (lo, hi)
    (0 < lo < hi < 2^(62 - 2f): its products reach hi; ValueError otherwise), relative error
    2^-(f + 2) plus a few units of y sqrt(hi); log2(hi / lo) / 2.3 + 4 steps of 3 products and a
    division. Outside the interval the result is wrong (y falls short below lo, overshoots above
    hi), not an error.
    """
    if not isinstance(x, PrivateTensor):
        raise TypeError(f"inverse_sqrt_times takes a private x, got {type(x).__name__}")
    if tuple(numerator.shape) != x.shape:
        raise ValueError(f"inverse_sqrt_times: numerator of shape {tuple(numerator.shape)} for x of shape {x.shape}")
    ctx = x._ctx
    frac_bits = ctx.config.frac_bits
    if not families.of(ctx).exact:
        limit = domain(frac_bits)[1]
        if interval is None or not 0 < interval[0] < interval[1] < limit:
            raise ValueError(f"pond's inverse square root needs interval=(lo, hi) with 0 < lo < hi < "
                             f"2^{62 - 2 * frac_bits} at frac_bits={frac_bits}, got {interval}")
        lo, hi = interval
        # in units of 1 / sqrt(hi): y' = y sqrt(hi) in [1, sqrt(hi / lo)] keeps its precision where y
        # itself would be a few units, and x y'^2 / hi = x y^2 stays near 1
        y = x * 0.0 + 1.0
        for a in pond_alphas(hi / lo, frac_bits):
            t = ((x * y) * y) * (1 / hi)
            y = y * (t * (-a ** 3 / 2) + 1.5 * a)
        return (numerator * y) * (1 / math.sqrt(hi))
    x, numerator = _normalize(ctx, x._value, as_private(numerator, ctx)._value)
    # Newton on Y = 256 y with T = 256 x y^2: near convergence y in [1/4, 1] and x y^2 near 1 would
    # keep only 14 to 16 significant bits, a relative error of 1e-4 after rounding. Each division by
    # a power of two joins the truncation of the product before it.
    y = _guess(ctx, x)
    for _ in range(NEWTON_AFTER_GUESS):
        t = _product(ctx, pond.multiply(ctx, x, y), y, 8)                          # 256 x y^2
        y = _product(ctx, y, add_public(ctx, -t, fixedpoint.encode(np.float64(3 * SCALE), frac_bits)), 9)
    return PrivateTensor(ctx, _product(ctx, numerator, y, 8))
