"""numerator * x^(-1/2) for private x >= 1: the inverse square root Adam's step needs.

Under securenn the input is first brought into [1, 16) by exact comparisons (a binary search on its
exponent), so it works for every encodable x >= 1; under pond, Newton's iteration from a constant
covers a stated interval [1, bound]. Newton's iteration for x^(-1/2), y <- y (3 - x y^2) / 2, needs
no division; each step squares the relative error (times 1.5).
"""
from __future__ import annotations

import math

import numpy as np

from mpcnp.functions import stack, where
from mpcnp.protocols import families
from mpcnp.tensor import PrivateTensor, Tensor
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


@operation("inverse_sqrt_times")
def inverse_sqrt_times(x: PrivateTensor, numerator: Tensor, bound: float = 2.0 ** 16) -> Tensor:
    """numerator * x^(-1/2) for a private x >= 1 and a numerator of x's shape.

    securenn: for k = 32, 16, 8, 4 (each below the encodable range 2^(62 - frac_bits)), where
    x >= 2^k, x /= 2^k and numerator /= 2^(k/2): one comparison and one selection of the pair per
    level, exact, so every x in [1, 2^(62 - frac_bits)) ends in [1, 16) (``bound`` is not needed).
    Then a degree-3 Chebyshev guess of x^(-1/2) (within 12%) and three Newton steps: relative error
    below 1e-6 plus fixed-point rounding (y in [1/4, 1] within a few units). Cost per element: per
    level a comparison (213 bytes, 3 rounds), an exact division of the pair and a product (about 240
    bytes, 3 rounds); then 2 products for the guess and 9 for Newton (2 rounds each with exact
    truncation); about 40 rounds in all.
    pond (no exact comparison): Newton's steps from 1 / sqrt(bound), scaled (``pond_alphas``): right
    for x in [1, bound], log2(bound) / 2.3 + 4 steps of 3 products. Outside that interval the result
    is wrong (y falls short below 1, overshoots above bound), not an error.
    """
    if not isinstance(x, PrivateTensor):
        raise TypeError(f"inverse_sqrt_times takes a private x, got {type(x).__name__}")
    if tuple(numerator.shape) != x.shape:
        raise ValueError(f"inverse_sqrt_times: numerator of shape {tuple(numerator.shape)} for x of shape {x.shape}")
    ctx = x._ctx
    frac_bits = ctx.config.frac_bits
    if not families.of(ctx).exact:
        alphas = pond_alphas(bound, frac_bits)
        return numerator * _newton(x, x * 0.0 + 1 / math.sqrt(bound), alphas)
    limit = 2.0 ** (62 - frac_bits)
    for k in LEVELS:
        if 2.0 ** k >= limit:
            continue
        above = x >= 2.0 ** k
        pair = stack([x, numerator])
        divisors = np.array([2 ** k, 2 ** (k // 2)], dtype=np.float64).reshape((2,) + (1,) * x.ndim)
        pair = where(above, pair / divisors, pair)
        x, numerator = pair[0], pair[1]
    t = (x - 8.5) / 7.5
    terms = [t]
    for k in range(2, GUESS_DEGREE + 1):
        terms.append(t * terms[-1] * 2.0 - (terms[-2] if k > 2 else 1.0))
    y = sum((term * float(c) for term, c in zip(terms, _GUESS[1:])), t * 0.0 + float(_GUESS[0]))
    return numerator * _newton(x, y, [1.0] * NEWTON_AFTER_GUESS)
