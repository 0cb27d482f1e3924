"""numerator * x^(-1/2) for private x >= 1: the inverse square root Adam's step needs.

Under securenn the input is first brought into [1, 16) by exact comparisons (a binary search on its
exponent), so it works for every encodable x >= 1; under pond, Newton's iteration from a constant
covers a stated interval [1, bound]. Newton's iteration for x^(-1/2), y <- y (3 - x y^2) / 2, needs
no division; each step squares the relative error (times 1.5).
"""
from __future__ import annotations

import math

import numpy as np

from mpcnp import fixedpoint
from mpcnp.protocols import families, pond
from mpcnp.protocols.shared import Shared, add_public, stack
from mpcnp.tensor import PrivateTensor, Tensor, as_private
from mpcnp.tracing import operation

__all__ = ["inverse_sqrt_times", "pond_alphas"]

LEVELS = (32, 16, 8, 4)       # securenn: shifts that bring x in [1, 2^46) into [1, 16)
GUESS_DEGREE = 3              # x^(-1/2) on [1, 16] within 12% by a Chebyshev interpolant
_GUESS = np.polynomial.chebyshev.chebinterpolate(lambda t: 1 / np.sqrt(8.5 + 7.5 * t), GUESS_DEGREE)
NEWTON_AFTER_GUESS = 3        # 12% -> 2.1% -> 6.6e-4 -> 6.5e-7


def _newton(x: Tensor, y: Tensor, alphas) -> Tensor:
    """Newton's steps y <- a y (3 - a^2 x y^2) / 2, one per scale factor a."""
    for a in alphas:
        t = x * (y * y)
        y = y * (t * (-a ** 3 / 2) + 1.5 * a)
    return y


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


def _normalize(ctx, x: Shared, numerator: Shared, levels) -> tuple[Shared, Shared]:
    """Where x >= 2^k: x /= 2^k and numerator /= 2^(k/2), for each k of ``levels`` in turn (securenn).

    The comparison is SecureNN's ReLU of x - 2^k, whose DReLU bit b (a ring 0/1) it keeps: then
    b x = relu(x - 2^k) + b 2^k exactly, and b * numerator is one untruncated product with the bit,
    exact however large the values (a fixed-point 0/1 times x would overflow the ring for x near
    2^46). The divisions are exact (pond.divide_exact) whatever the run's truncation mode, because
    local division of values this large would fail often.
    """
    family = families.of(ctx)
    unit = ctx.config.frac_bits
    for k in levels:
        threshold = fixedpoint.encode(np.float64(2.0 ** k), unit)
        bit = family.relu(ctx, add_public(ctx, x, -threshold), 1)
        above_x = bit + bit.drelu * threshold
        above_n = pond.product(ctx, bit.drelu, numerator, pond.MUL)
        both = stack([above_x, above_n])
        divisors = np.array([2 ** k, 2 ** (k // 2)], dtype=np.uint64).reshape((2,) + (1,) * len(x.shape))
        shrunk = pond.divide_exact(ctx, both, divisors)
        x = x - above_x + shrunk.map(lambda a: a[0])
        numerator = numerator - above_n + shrunk.map(lambda a: a[1])
    return x, numerator


@operation("inverse_sqrt_times")
def inverse_sqrt_times(x: PrivateTensor, numerator: Tensor, bound: float = 2.0 ** 16) -> Tensor:
    """numerator * x^(-1/2) for a private x >= 1 and a numerator of x's shape.

    securenn: for k = 32, 16, 8, 4 (each below the encodable range 2^(62 - frac_bits)), where
    x >= 2^k, x /= 2^k and numerator /= 2^(k/2) (``_normalize``: exact), so every x in
    [1, 2^(62 - frac_bits)) ends in [1, 16) (``bound`` is not needed). Then a degree-3 Chebyshev
    guess of x^(-1/2) (within 12%) and three Newton steps: relative error below 1e-6 plus fixed-point
    rounding (y in [1/4, 1] within a few units, the numerator's divisions two units per level).
    Cost per element: per level a ReLU (221 bytes, 3 rounds), a bit product (40 bytes) and an exact
    division of two values (80 bytes), 2 rounds; then 2 products for the guess and 9 for Newton;
    about 40 rounds in all.
    pond (no exact comparison): Newton's steps from 1 / sqrt(bound), scaled (``pond_alphas``), on
    y sqrt(bound) (whose precision does not shrink with y): right for x in [1, bound], bound below
    2^(62 - 2 frac_bits) (its products reach bound; ValueError beyond), relative error 2^-(frac_bits + 2) plus a few units of y sqrt(bound);
    log2(bound) / 2.3 + 4 steps of 3 products and a division. Outside that interval the result is
    wrong (y falls short below 1, overshoots above bound), not an error.
    """
    if not isinstance(x, PrivateTensor):
        raise TypeError(f"inverse_sqrt_times takes a private x, got {type(x).__name__}")
    if tuple(numerator.shape) != x.shape:
        raise ValueError(f"inverse_sqrt_times: numerator of shape {tuple(numerator.shape)} for x of shape {x.shape}")
    ctx = x._ctx
    frac_bits = ctx.config.frac_bits
    if not families.of(ctx).exact:
        if not 1 < bound < 2.0 ** (62 - 2 * frac_bits):
            raise ValueError(f"pond's inverse square root needs 1 < bound < 2^{62 - 2 * frac_bits} at "
                             f"frac_bits={frac_bits}, got {bound:g}")
        # in units of 1 / sqrt(bound): y' = y sqrt(bound) in [1, sqrt(bound)] keeps its precision
        # where y itself would be a few units, and x y'^2 / bound = x y^2 stays near 1
        y = x * 0.0 + 1.0
        for a in pond_alphas(bound, frac_bits):
            t = ((x * y) * y) / bound
            y = y * (t * (-a ** 3 / 2) + 1.5 * a)
        return (numerator * y) / math.sqrt(bound)
    levels = [k for k in LEVELS if 2.0 ** k < 2.0 ** (62 - frac_bits)]
    normal, scaled = _normalize(ctx, x._value, as_private(numerator, ctx)._value, levels)
    x, numerator = PrivateTensor(ctx, normal), PrivateTensor(ctx, scaled)
    t = (x - 8.5) / 7.5
    terms = [t]
    for k in range(2, GUESS_DEGREE + 1):
        terms.append(t * terms[-1] * 2.0 - (terms[-2] if k > 2 else 1.0))
    y = sum((term * float(c) for term, c in zip(terms, _GUESS[1:])), t * 0.0 + float(_GUESS[0]))
    return numerator * _newton(x, y, [1.0] * NEWTON_AFTER_GUESS)
