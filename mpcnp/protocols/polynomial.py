"""Pond's polynomial approximations on shares: Chebyshev series, the step and |x| polynomials, and
Newton's reciprocal.

Dahl et al., "Private Machine Learning in TensorFlow using Secure Computation" (arXiv 1810.08130)
evaluate nonlinear functions as polynomials over Beaver products. Here a polynomial is a Chebyshev
series p(x) = sum_k a_k T_k(t) in t = (x - c) / r, which maps the stated interval [c - r, c + r] onto
[-1, 1]. There |T_k(t)| <= 1, so every intermediate stays small and the fixed-point noise is amplified
by at most sum_k |a_k| k^2, a small number for these functions; the monomial coefficients of the same
polynomials grow like 2.5^k and would drown the result in truncation noise. The T_k come from a
product tree (``chebyshev_terms``): ceil(log2 degree) rounds, the products of a round batched into
one Beaver multiplication. The linear combination is local, with one rounding (``combine``).

Outside its interval a polynomial grows like (|t| + sqrt(t^2 - 1))^degree: the result soon becomes
meaningless (wrapped around the ring). The intervals and errors of the functions built on these are
documented in mpcnp.approx and docs/protocols.md. Every function takes and returns fixed-point
``Shared`` values with the run's frac_bits.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from numpy.polynomial import chebyshev

from mpcnp.protocols import pond
from mpcnp.protocols.shared import Shared, add_public, stack
from mpcnp.runtime.context import Context

__all__ = ["Series", "chebyshev_terms", "combine", "abs_series", "step", "relu", "newton_steps", "reciprocal",
           "STEP_BOUND", "STEP_BAND", "RELU_BOUND", "RECIPROCAL_INTERVAL", "ROOT_INTERVAL", "LOG_INTERVAL",
           "rsqrt_steps", "rsqrt", "log_atanh", "exact_log", "exact_root", "integer_combination"]


@dataclass(frozen=True)
class Series:
    """p(x) = sum_k coef[k] T_k((x - center) / radius), accurate for x in [center - radius, center + radius].

    ``radius`` is an integer so that t is computed by a division of the shares by a public integer
    (rounded to nearest, error half a unit). ``parity`` ("odd", "even" or None) says which T_k are
    needed.
    """

    center: float
    radius: int
    coef: tuple[float, ...]
    parity: str | None = None

    @staticmethod
    def interpolate(fn: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, degree: int,
                    parity: str | None = None) -> "Series":
        """Interpolate fn at the Chebyshev points of [lo, hi] (near-minimax for smooth fn)."""
        center, radius = (lo + hi) / 2, int((hi - lo) / 2)
        if radius != (hi - lo) / 2:
            raise ValueError(f"interval [{lo}, {hi}] must have an integer radius")
        coef = chebyshev.chebinterpolate(lambda t: fn(center + radius * t), degree)
        if parity is not None:
            coef[1 if parity == "even" else 2::2] = 0.0  # T_0, the constant, is always allowed
        return Series(center, radius, tuple(coef), parity)

    @property
    def lo(self) -> float:
        return self.center - self.radius

    @property
    def hi(self) -> float:
        return self.center + self.radius

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The polynomial in float64 (what the private evaluation approximates)."""
        return chebyshev.chebval((np.asarray(x, dtype=np.float64) - self.center) / self.radius, self.coef)

    def __call__(self, ctx: Context, x: Shared) -> Shared:
        """Evaluate on shares: ceil(log2 degree) rounds (``chebyshev_terms``)."""
        ulp = 2.0 ** -ctx.config.frac_bits
        # +r/2 units before the (flooring) division by r rounds t to nearest
        shifted = pond.add_constant(ctx, x, np.float64(self.radius * ulp / 2 - self.center))
        t = pond.divide_by(ctx, shifted, np.float64(self.radius))
        return combine(ctx, chebyshev_terms(ctx, t, len(self.coef) - 1, self.parity), self.coef)


def chebyshev_terms(ctx: Context, t: Shared, degree: int, parity: str | None = None) -> dict[int, Shared]:
    """T_k(t) for 1 <= k <= degree (only odd or only even k if ``parity`` says so).

    Product tree from 2 T_j T_m = T_(m+j) + T_(m-j): with every T_k for k <= m = 2^i known, round
    i + 1 multiplies the needed T_j (j <= m) by T_m in one batched product and gets T_(m+j) locally.
    Cost: ceil(log2 degree) rounds; one elementwise product per term computed, including the T_(2^i)
    used as multipliers (degree 31: 30 products, odd k only 19; degree 32, even k only: 16).
    Precondition: |t| <= 1, else the terms grow like (|t| + sqrt(t^2 - 1))^k.
    """
    wanted = {k for k in range(1, degree + 1)
              if parity is None or (k % 2 == 1) == (parity == "odd")}
    terms = {1: t}
    m = 1
    while m < degree:
        ks = [k for k in range(m + 1, min(2 * m, degree) + 1) if k in wanted or (k == 2 * m < degree)]
        if ks:
            products = pond.multiply(ctx, stack([terms[k - m] for k in ks]), terms[m])
            for i, k in enumerate(ks):
                doubled = products.map(lambda a, i=i: a[i]) * 2
                terms[k] = doubled - terms[2 * m - k] if k < 2 * m else pond.add_constant(ctx, doubled, -1.0)
        m *= 2
    return {k: terms[k] for k in sorted(wanted)}


def combine(ctx: Context, terms: dict[int, Shared], coef: Sequence[float]) -> Shared:
    """coef[0] + sum_k coef[k] terms[k], locally, with one rounding (half a unit): the coefficients are
    scaled by 2^(f + 2) to integers (exact products), the terms summed, the sum divided by 2^(f + 2).
    Rounding the coefficients costs at most (number of terms) 2^-(f + 3), in practice under a unit; the
    division fails (local truncation) with probability about |result| 2^(2f + 2 - 64)."""
    frac_bits = ctx.config.frac_bits
    ks = [k for k in terms if coef[k] != 0.0]
    scale = 2 ** (frac_bits + 2)
    first = terms[ks[0]]
    weights = np.rint(np.asarray([coef[k] for k in ks]) * scale).reshape((len(ks),) + (1,) * len(first.shape))
    weighted = pond.scale(ctx, stack([terms[k] for k in ks]), weights)
    total = weighted.map(lambda a: np.sum(a, axis=0, dtype=np.uint64))
    half_unit = 2.0 ** -(frac_bits + 1) * scale  # makes the flooring division round to nearest
    rounded = pond.divide_by(ctx, pond.add_constant(ctx, total, np.float64(half_unit)), np.float64(scale))
    return pond.add_constant(ctx, rounded, np.float64(coef[0]))


# ---- |x| and relu ------------------------------------------------------------------------------------
RELU_BOUND = 8
# Minimax even polynomial of degree 32 for |t| on [-1, 1], Chebyshev coefficients of T_0, T_2, ..., T_32;
# max error 0.0087505 (equioscillating, as Bernstein's constant 0.2802 / 32 predicts). Computed offline
# by Lawson's iteratively reweighted least squares with numpy (3000 iterations, 40002 points dense at 0
# and +-1); tests/test_approx.py re-checks the error on a dense grid.
_ABS_EVEN = (0.6365621637826477, 0.42452868325545434, -0.08499895997070063, 0.0364960133670495,
             -0.020329900045630483, 0.012983440635647485, -0.009029604257034272, 0.0066594999984061366,
             -0.005128319420801884, 0.0040834144799024195, -0.003340129595889559, 0.0027943065089417124,
             -0.0023835834335218403, 0.002069008203165518, -0.0018253288743378259, 0.001635951608716599,
             -0.009527023634682361)


@functools.lru_cache(maxsize=None)
def abs_series(bound: int) -> Series:
    """|x| on [-bound, bound] as bound * p(x / bound): the minimax p above, error 0.0087505 * bound."""
    if not isinstance(bound, (int, np.integer)) or isinstance(bound, bool) or not 1 <= bound <= 2 ** 20:
        raise ValueError(f"relu's bound must be an integer in [1, 2^20], got {bound!r}")
    bound = int(bound)
    return Series(0.0, bound, tuple(c for a in _ABS_EVEN for c in (bound * a, 0.0))[:-1], "even")


def relu(ctx: Context, x: Shared, bound: int = RELU_BOUND) -> Shared:
    """max(x, 0) as Pond does it: (x + |x|) / 2 with |x| = B p(x / B) (``abs_series``), accurate on
    [-B, B] within 0.0044 B + 10 B units. Cost: 5 rounds, 16 elementwise products."""
    return pond.divide_by(ctx, x + abs_series(bound)(ctx, x), np.float64(2))


# ---- step ---------------------------------------------------------------------------------------------
STEP_BOUND = 16
# sign(t) on [-1, 1] away from 0 in two stages: an odd degree-63 interpolant of erf(STEP_SHARPNESS t),
# whose values outside |t| < STEP_BAND / 16 lie within 0.3 of +-1, then twice the polish
# s -> (35 s - 35 s^3 + 21 s^5 - 5 s^7) / 16, which fixes +-1 with zero derivatives up to the third
# (|1 - s| -> 4.4 |1 - s|^4) and maps [-1, 1] into itself, so noise inside the band stays bounded.
STEP_SHARPNESS = 110.0
STEP_BAND = 0.25
STEP_FIRST = Series.interpolate(lambda v: np.vectorize(math.erf)(STEP_SHARPNESS * v / STEP_BOUND),
                                -STEP_BOUND, STEP_BOUND, 63, parity="odd")
_POLISH = chebyshev.poly2cheb([0.0, 35 / 16, 0.0, -35 / 16, 0.0, 21 / 16, 0.0, -5 / 16])
_POLISH_TO_STEP = (_POLISH + np.eye(8)[0]) / 2  # the last polish also maps sign to (1 + sign) / 2


def step(ctx: Context, x: Shared) -> Shared:
    """1.0 where x > 0 and 0.0 where x < 0: Pond's comparison (x > y is step(x - y)).

    sign(x) approximated on [-16, 16] by an odd polynomial of degree 63 in x / 16, sharpened by two
    odd degree-7 polishing polynomials, then (1 + sign) / 2. Accurate on [-16, 16] outside the band
    |x| < 0.25 within 5e-6 + 3 units; inside the band the output rises from 0 to 1 (0.5 at 0) but is
    not monotone (treat it as unknown); outside [-16, 16] it is meaningless at once.
    Cost: 12 rounds (6 + 3 + 3), 46 elementwise products (36 + 5 + 5).
    """
    sign = STEP_FIRST(ctx, x)
    sign = combine(ctx, chebyshev_terms(ctx, sign, 7, "odd"), _POLISH)
    return combine(ctx, chebyshev_terms(ctx, sign, 7, "odd"), _POLISH_TO_STEP)


# ---- reciprocal ----------------------------------------------------------------------------------------
RECIPROCAL_INTERVAL = (0.05, 100.0)  # the default interval of mp.reciprocal and of Pond's division
_TOP_MAP = 1 + 1 / math.sqrt(2)  # beta x y <= this keeps beta x y (2 - beta x y) >= 1/2


def newton_steps(lo: float, hi: float, frac_bits: int) -> list[float]:
    """The scale factors beta of the Newton steps for x in [lo, hi] (see ``reciprocal``).

    With x y in [m, 1], a step maps u = beta x y to u (2 - u) <= 1. beta = 2 / (1 + m) would make the
    ends meet (m -> ~4 m) but also make the result tiny at the top end, where y = x y / x would then
    drown in the fixed-point rounding; so beta is capped at 1.707, which keeps x y >= 1/2 there
    (m -> ~3.4 m). Steps continue until 1 - m < 2^-(f + 2).
    """
    m, betas = lo / hi, []
    while 1 - m > 2.0 ** -(frac_bits + 2):
        beta = min(2 / (1 + m), _TOP_MAP)
        betas.append(beta)
        m = min(beta * m * (2 - beta * m), beta * (2 - beta))
    return betas


def reciprocal(ctx: Context, x: Shared, lo: float, hi: float, scale: int = 1) -> Shared:
    """``scale`` / x for x in [lo, hi], ``scale`` a power of two: Newton's iteration
    y <- beta y (2 - beta x y) from the constant guess 1 / hi (``newton_steps``); the first step is
    local. Accurate on [lo, hi] within 2.5 (1 + 1/x) units (scale 1). Cost: 2 rounds and 2
    elementwise products per step after the first (x is masked once and reused).
    Where scale / hi would be below 16 units (hi = 100 at frac_bits 8), the iteration computes a
    larger power of two over x and divides by the surplus at the end (one more division by a public
    integer): with y only a few units large, rounding makes the steps overshoot and diverge.
    """
    f = ctx.config.frac_bits
    boost = 2 ** max(0, math.ceil(math.log2(16 * hi * 2.0 ** -f / scale)))
    total = scale * boost
    betas = newton_steps(lo, hi, f)
    c = betas[0] / hi  # the first step, from the constant guess y = 1 / hi, is local
    y = pond.add_constant(ctx, pond.scale(ctx, x, np.float64(-total * c * c)), np.float64(2 * total * c))
    for beta in betas[1:]:
        u = pond.multiply(ctx, x, y)
        if total != 1:
            u = pond.divide_by(ctx, u, np.float64(total))
        correction = pond.add_constant(ctx, pond.scale(ctx, u, np.float64(-beta * beta)), np.float64(2 * beta))
        y = pond.multiply(ctx, y, correction)
    return y if boost == 1 else pond.divide_by(ctx, y, np.float64(boost))


# ---- square roots and the logarithm ---------------------------------------------------------------------
ROOT_INTERVAL = (0.05, 100.0)   # Pond's rsqrt and sqrt (Newton from a constant)
LOG_INTERVAL = (0.05, 20.0)     # Pond's log (2 atanh((x - 1) / (x + 1)); symmetric in z for lo = 1 / hi)
_NEWTON_TOP = 0.5               # keep x y^2 >= 1/2 at the top end, as the reciprocal does


def _rsqrt_gain(u):
    return u * (3 - u) ** 2 / 4   # x y^2 after one step y <- y (3 - x y^2) / 2


def rsqrt_steps(lo: float, hi: float, frac_bits: int) -> list[float]:
    """Pre-scales c of Newton's steps for 1 / sqrt(x), x in [lo, hi] (see ``rsqrt``): with u = x y^2 in
    [m, 1], a step maps c u to g(c u) = c u (3 - c u)^2 / 4 <= 1; c > 1 is chosen so the ends meet,
    g(c m) = g(c), capped where g(c) = 1/2. Steps continue until 1 - m < 2^-(f + 2)."""
    low, high = 1.0, 3.0   # the cap: the c > 1 with g(c) = 1/2, by bisection
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _rsqrt_gain(mid) > _NEWTON_TOP else (low, mid)
    cap = low
    m, scales = lo / hi, []
    while 1 - m > 2.0 ** -(frac_bits + 2):
        top = min(cap, 1 / m)
        if _rsqrt_gain(top * m) <= _rsqrt_gain(top):
            c = top
        else:
            a, b = 1.0, top
            for _ in range(60):
                mid = (a + b) / 2
                a, b = (mid, b) if _rsqrt_gain(mid * m) < _rsqrt_gain(mid) else (a, mid)
            c = a
        scales.append(c)
        m = min(_rsqrt_gain(c * m), _rsqrt_gain(c))
    return scales


def rsqrt(ctx: Context, x: Shared, lo: float, hi: float) -> Shared:
    """1 / sqrt(x) for x in [lo, hi] by Newton's iteration y <- y (3 - x y^2) / 2 from the constant
    guess 1 / sqrt(hi), each step pre-scaled (``rsqrt_steps``): y <- sqrt(c) y (3 - c x y^2) / 2. The
    first step is local. The iteration runs on B y for a power of two B that keeps B / sqrt(hi) at
    16 units or more (B = 1 from frac_bits 12 on at the default interval). Cost per step after the
    first: 3 sequential products (x y, then (x y) y, then y times the correction), 3 rounds.
    """
    f = ctx.config.frac_bits
    boost = 2 ** max(0, math.ceil(math.log2(16 * 2.0 ** -f * math.sqrt(hi))))
    scales = rsqrt_steps(lo, hi, f)
    c = scales[0]
    # y1 = sqrt(c) y0 (3 - c x y0^2) / 2 with y0 = 1 / sqrt(hi): affine in x, local
    y0 = boost / math.sqrt(hi)
    y = pond.add_constant(ctx, pond.scale(ctx, x, np.float64(-0.5 * c ** 1.5 * y0 / hi)),
                          np.float64(1.5 * math.sqrt(c) * y0))
    for c in scales[1:]:
        u = pond.multiply(ctx, pond.multiply(ctx, x, y), y)
        if boost != 1:
            u = pond.divide_by(ctx, u, np.float64(boost * boost))
        correction = pond.add_constant(ctx, pond.scale(ctx, u, np.float64(-0.5 * c ** 1.5)),
                                       np.float64(1.5 * math.sqrt(c)))
        y = pond.multiply(ctx, y, correction)
    return y if boost == 1 else pond.divide_by(ctx, y, np.float64(boost))


_ATANH_REACH = (LOG_INTERVAL[1] - 1) / (LOG_INTERVAL[1] + 1)   # |z| on LOG_INTERVAL
_ATANH_COEF = tuple(np.where(np.arange(32) % 2 == 1,
                             chebyshev.chebinterpolate(lambda t: 2 * np.arctanh(_ATANH_REACH * t), 31), 0.0))


def log_atanh(ctx: Context, x: Shared) -> Shared:
    """log x = 2 atanh(z), z = (x - 1) / (x + 1) = 1 - 2 / (x + 1), for x in LOG_INTERVAL = [0.05, 20]
    (z in [-0.905, 0.905]): 16 / (x + 1) by ``reciprocal`` on [1.05, 21] (the factor 16 keeps four
    more bits, which the series' slope 2 / (1 - z^2) <= 11 at the ends would otherwise amplify), then
    an odd Chebyshev series of degree 31 in z / 0.905 (approximation error 1.2e-7)."""
    lo, hi = LOG_INTERVAL
    sixteenth = reciprocal(ctx, pond.add_constant(ctx, x, np.float64(1.0)), lo + 1, hi + 1, scale=16)
    z = pond.add_constant(ctx, -pond.divide_by(ctx, sixteenth, np.float64(8)), np.float64(1.0))
    t = pond.scale(ctx, z, np.float64(1 / _ATANH_REACH))
    return combine(ctx, chebyshev_terms(ctx, t, 31, "odd"), _ATANH_COEF)


# The mantissa polynomials of the exact range reduction (approximation errors 4e-8, 2.7e-7, 2.4e-7).
_LOG_MANTISSA = tuple(chebyshev.chebinterpolate(lambda t: np.log((t + 3) / 2), 8))   # log m, t = 2m - 3
RSQRT_MANTISSA = Series.interpolate(lambda v: 1 / np.sqrt(v / 2), 2, 8, 12)            # of v = 2m, m in [1, 4]
SQRT_MANTISSA = Series.interpolate(lambda v: np.sqrt(v / 2), 2, 8, 10)


def _thermometer(ctx: Context, x: Shared, exponents: range, base_log2: int, at_least: Callable) -> Shared:
    """Ring bits [x >= 2^(base_log2 j)] for j in ``exponents``, shape (J,) + x.shape: all the
    comparisons in one batch of ``at_least(ctx, x, thresholds)`` (exact comparisons of x with public
    ring thresholds, giving ring bits: ``securenn.drelu_thresholds``)."""
    f = ctx.config.frac_bits
    return at_least(ctx, x, np.array([1 << (base_log2 * j + f) for j in exponents], dtype=np.uint64))


def integer_combination(ctx: Context, values: Shared | Sequence[Shared], base: int,
                        weights: Sequence[int]) -> Shared:
    """base + sum_j weights[j] values[j], exactly in the ring, for integer weights and base (negative
    ones too): ``values`` one Shared stacked on a leading axis or a sequence of Shareds of one shape
    (not stacked: no copy). Locally, no truncation (the caller's scale)."""
    if isinstance(values, Shared):
        shape, shares = tuple(values.shape[1:]), None if values.share is None else list(values.share)
    else:
        shape, shares = tuple(values[0].shape), None if values[0].share is None else [v.share for v in values]
    if shares is None:
        return Shared(None, shape)
    ring = [np.uint64(int(w) % (1 << 64)) for w in weights]
    total = shares[0] * ring[0]
    scratch = np.empty_like(total)
    for share, weight in zip(shares[1:], ring[1:]):
        total += np.multiply(share, weight, out=scratch)
    return add_public(ctx, Shared(total, shape), np.uint64(base % (1 << 64)))


def exact_log(ctx: Context, x: Shared, at_least: Callable) -> Shared:
    """log x for every encodable x >= 2^-f, with exact comparisons (``at_least``: ring bits of
    [x >= T_j] for public thresholds, as ``_thermometer`` takes). x = m 2^k with m in [1, 2): k = -f + sum_j [x >= 2^j] (j = 1 - f .. 61 - f: 61
    comparisons in one batch); m = x 2^(61 - f - k) / 2^(61 - f), one product with a ring integer
    built locally from the bits, truncated exactly (the product is m 2^61 < 2^62); log m by a
    Chebyshev series of degree 8 in 2m - 3; plus k log 2, the bits times log 2 with 20 extra bits."""
    f = ctx.config.frac_bits
    exponents = range(1 - f, 62 - f)
    bits = _thermometer(ctx, x, exponents, 1, at_least)
    scale = integer_combination(ctx, bits, 1 << 61, [-(1 << (61 - f - j)) for j in exponents])
    m = pond.truncate_exact(ctx, pond.product(ctx, x, scale, pond.MUL), 61 - f)
    t = pond.add_constant(ctx, m * 2, np.float64(-3.0))
    log_m = combine(ctx, chebyshev_terms(ctx, t, len(_LOG_MANTISSA) - 1), _LOG_MANTISSA)
    extra = 20
    k_log2 = integer_combination(ctx, bits, 0, [round(math.log(2) * 2 ** (f + extra))] * len(exponents))
    k_log2 = pond.add_constant(ctx, pond.truncate(ctx, k_log2, extra), np.float64(-f * math.log(2)))
    return log_m + k_log2


def exact_root(ctx: Context, x: Shared, at_least: Callable, inverse: bool) -> Shared:
    """sqrt x (or 1 / sqrt x if ``inverse``) for 2^-f <= x < 2^(2 E1 + 2), E1 = floor((60 - f) / 2)
    (all encodable x for even f, x < 2^(61 - f) for odd f), with exact comparisons: x = m 4^e with m
    in [1, 4) (in [2, 4) at the bottom for odd f), e = E0 + sum_j [x >= 4^j] (j = E0 + 1 .. E1, E0 =
    -ceil(f / 2)); m = x 4^(E1 - e) / 4^E1 by one product, truncated exactly; the root of m by a
    Chebyshev series in 2m; then the result times 2^e as one product with a ring integer, truncated
    exactly."""
    f = ctx.config.frac_bits
    low, high = -((f + 1) // 2), (60 - f) // 2
    exponents = range(low + 1, high + 1)
    bits = _thermometer(ctx, x, exponents, 2, at_least)
    scale = integer_combination(ctx, bits, 4 ** (high - low), [-3 * 4 ** (high - j) for j in exponents])
    m = pond.truncate_exact(ctx, pond.product(ctx, x, scale, pond.MUL), 2 * high)
    series = RSQRT_MANTISSA if inverse else SQRT_MANTISSA
    root = series(ctx, m * 2)
    if inverse:   # times 2^-e = 2^(high - e) / 2^high
        power = integer_combination(ctx, bits, 2 ** (high - low), [-(2 ** (high - j)) for j in exponents])
        return pond.truncate_exact(ctx, pond.product(ctx, root, power, pond.MUL), high)
    power = integer_combination(ctx, bits, 1, [2 ** (j - 1 - low) for j in exponents])   # 2^(e - low)
    return pond.truncate_exact(ctx, pond.product(ctx, root, power, pond.MUL), -low)
