"""numerator * x^(-1/2) for private x > 0: the inverse square root Adam's step needs.

Under securenn the input is first brought into [1, 16) by exact comparisons (a binary search on its
exponent), so it works for every x from one unit 2^-f up to 2^(62 - 2f), the headroom of a product;
under pond, Newton's iteration from a constant covers a stated interval. Newton's iteration for
x^(-1/2), y <- y (3 - x y^2) / 2, needs no division; each step squares the relative error (times 1.5).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from mpcnp import fixedpoint
from mpcnp.protocols import families, pond
from mpcnp.protocols.polynomial import chebyshev_terms, combine
from mpcnp.protocols.shared import Shared, add_public
from mpcnp.tensor import PrivateTensor, Tensor, as_private
from mpcnp.tracing import operation

__all__ = ["inverse_sqrt_times", "pond_alphas", "domain", "schedule", "guess"]

WIDTH = 6                    # securenn: x is normalized into [1, 2^WIDTH) or narrower
BLUR_BITS = 6                # securenn: each level's threshold 2^t may be blurred by 2^(t - BLUR_BITS)
REACH = 1 + 2.0 ** -BLUR_BITS  # so x lands in [1, 2^width REACH), which the guess covers
NEWTON_TARGET = 1e-6         # Newton's steps continue until the relative error is below this


@functools.lru_cache(maxsize=None)
def guess(width: int) -> tuple[np.ndarray, int, int]:
    """x^(-1/2) on [1, 2^width REACH]: (Chebyshev coefficients in t = (x - c) / r, degree, Newton
    steps after it): the lowest degree within 15% (degree 7, 12.3%, on [1, 65]), then as many steps
    as bring 1.5 e^2 below NEWTON_TARGET."""
    hi = 2.0 ** width * REACH
    center, radius = (1 + hi) / 2, (hi - 1) / 2
    grid = np.linspace(-1, 1, 20001)
    for degree in range(2, 16):
        coef = np.polynomial.chebyshev.chebinterpolate(lambda t: 1 / np.sqrt(center + radius * t), degree)
        error = float(np.abs(np.polynomial.chebyshev.chebval(grid, coef) * np.sqrt(center + radius * grid) - 1).max())
        if error <= 0.15:
            break
    steps = 0
    while error > NEWTON_TARGET:
        error, steps = 1.5 * error * error, steps + 1
    return coef, degree, steps


def schedule(frac_bits: int) -> tuple[list[tuple[int, int]], int, int]:
    """securenn's normalization for x in [2^-f, 2^(62 - 2f)): the levels (t, k), each multiplying x by
    2^k where x <= 2^t (k even, about half the remaining range, so every level halves it), then the
    final shift s (even) with x / 2^s in [1, 2^width). At frac_bits 16: levels (6, 24), (18, 12),
    (24, 6), then / 2^24 into [1, 64)."""
    low, high = -frac_bits, 62 - 2 * frac_bits
    levels = []
    while high - low > WIDTH:
        k = math.ceil((high - low) / 2)
        k += k % 2
        levels.append((high - k, k))
        low = high - k
    shift = low - low % 2
    return levels, shift, high - shift


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


def _normalize(ctx, x: Shared, numerator: Shared) -> tuple[Shared, Shared, int]:
    """x into [1, 2^width REACH) by exact power-of-two factors, numerator times their square roots
    (securenn). Returns (x, numerator, width).

    Each level compares x with 2^t by SecureNN's ReLU of 2^t - x, which keeps its DReLU bit b (a ring
    0/1). The comparison is bounded and blurred (``families.SecureNN.relu``): x stays below
    2^high REACH (high = 62 - 2f, the domain's end), so |2^t - x| does too and 48 bits hold it at
    frac_bits 16; and the level may also pick an x in (2^t, 2^t REACH), which it then sends below
    2^high REACH, not 2^high, a slack the guess covers. So only bits t + f - BLUR_BITS to high + f of
    2^t - x are compared (31, 19 and 13 of them at frac_bits 16, instead of 63 each: 285 bytes per
    element for the three ReLUs instead of 663). The binary search needs all its levels: the domain
    spans 62 - f octaves (46 at 16) and each level halves what is left until the guess's width.
    Then b x = b 2^t - relu(2^t - x) locally, and x + b x (2^k - 1) multiplies the small values by
    2^k exactly (an integral factor: no truncation, no precision lost). b * numerator is one
    untruncated product with the bit, exact however large the values (a fixed-point 0/1 times x near
    2^46 would overflow the ring). Last, x and the numerator are shifted down by s and s / 2 bits by
    exact truncations (whatever the run's mode: local truncation of values this large would often
    fail), which round without bias.
    """
    family, f = families.of(ctx), ctx.config.frac_bits
    levels, shift, width = schedule(f)
    reach = 2.0 ** (62 - 2 * f) * REACH
    for t, k in levels:
        threshold = fixedpoint.encode(np.float64(2.0 ** t), f)
        below = family.relu(ctx, add_public(ctx, -x, threshold), reach, blur=2.0 ** (t - BLUR_BITS))  # b (2^t - x)
        chosen_x = below.drelu * threshold - below                         # b x
        chosen_n = pond.product(ctx, below.drelu, numerator, pond.MUL)   # b numerator
        x = x + chosen_x * np.uint64((1 << k) - 1)
        numerator = numerator + chosen_n * np.uint64((1 << (k // 2)) - 1)
    return pond.truncate_exact(ctx, x, shift), pond.truncate_exact(ctx, numerator, shift // 2), width


SCALE = 256                  # y and x y^2 are carried times 256: 8 more significant bits


def _product(ctx, a: Shared, b: Shared, extra_bits: int) -> Shared:
    """a * b / 2^extra_bits: one Beaver product, one truncation by frac_bits + extra_bits."""
    return pond.truncate(ctx, pond.product(ctx, a, b, pond.MUL), ctx.config.frac_bits + extra_bits, consume=True)


def _guess(ctx, x: Shared, width: int) -> Shared:
    """256 x^(-1/2) for x in [1, 2^width] (``guess``): a Chebyshev series, ceil(log2 degree) rounds."""
    coef, degree, _ = guess(width)
    hi = 2.0 ** width
    t = pond.scale(ctx, pond.add_constant(ctx, x, np.float64(-(1 + hi) / 2)), np.float64(2 / (hi - 1)))
    return combine(ctx, chebyshev_terms(ctx, t, degree), SCALE * coef)


@operation("inverse_sqrt_times")
def inverse_sqrt_times(x: PrivateTensor, numerator: Tensor, interval: tuple[float, float] | None = None) -> Tensor:
    """numerator * x^(-1/2) for a private x > 0 and a numerator of x's shape.

    securenn: x is normalized into [1, 2^width) by exact power-of-two factors (``_normalize``, on the
    levels of ``schedule``: 3 at frac_bits 16 to 24, 4 below), the numerator by their square roots;
    then a Chebyshev guess of x^(-1/2) (``guess``: degree 7 within 12% on [1, 64]) and Newton steps
    (3) on 256 x^(-1/2): relative error below 1e-6 plus fixed-point rounding (a few units of 256 y;
    the final shifts a unit each). Right for every x in [2^-f, 2^(62 - 2f)) (``interval`` is not
    needed). The numerator must stay below 2^(62 - f) / 2^(k/2) summed over the levels (2^25 at
    frac_bits 16), and the result times 256 within a product's headroom: |numerator x^(-1/2)| <
    2^(54 - 2f). Cost per element at frac_bits 16: 3 levels of a bounded, blurred ReLU (125, 89 and
    71 bytes, 3 rounds each) and a bit product (40 bytes, 1 round), two exact truncations, then
    6 products for the guess and 9 for Newton; 958 bytes and 42 rounds in all (with exact truncation
    at 4.25 bytes per element; 1336 bytes with exact 63-bit comparisons).
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
    x, numerator, width = _normalize(ctx, x._value, as_private(numerator, ctx)._value)
    # Newton on Y = 256 y with T = 256 x y^2: near convergence y in [1/8, 1] and x y^2 near 1 would
    # keep only 13 to 16 significant bits, a relative error of 1e-4 after rounding. Each division by
    # a power of two joins the truncation of the product before it.
    y = _guess(ctx, x, width)
    for _ in range(guess(width)[2]):
        t = _product(ctx, pond.multiply(ctx, x, y), y, 8)                          # 256 x y^2
        y = _product(ctx, y, add_public(ctx, -t, fixedpoint.encode(np.float64(3 * SCALE), frac_bits)), 9)
    return PrivateTensor(ctx, _product(ctx, numerator, y, 8))
