"""numerator * x^(-1/2) for private x > 0: the inverse square root Adam's step needs.

Under securenn the input is first brought into [1, 2^width REACH) by exact comparisons (a binary
search on its exponent), so it works for every x from one unit 2^-f up to 2^(62 - 2f), the headroom
of a product; then a polynomial guess of x^(-1/2) and steps of Newton's iteration y <- A y - B x y^3
(A = 3/2, B = 1/2 is Newton's own; other A, B also rescale y), as few as the relative error asked
for allows (``plan``). Under pond, Newton's iteration from a constant covers a stated interval.

Fixed point under securenn. After the normalization every value has a format of its own, whatever the
run's frac_bits: x with X_BITS = 20 fractional bits (x < 2^7), y with Y_BITS = 24 (y <= 1.3), and
every sum of terms is truncated by 32 bits at most (the narrow exact truncation), so that the
products' 2^62 headroom and the weights' precision both hold for frac_bits 8 to 24.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mpcnp import fixedpoint
from mpcnp.protocols import families, pond
from mpcnp.protocols.polynomial import integer_combination
from mpcnp.protocols.shared import Shared, add_public, stack
from mpcnp.tensor import PrivateTensor, Tensor, as_private
from mpcnp.tracing import operation

__all__ = ["inverse_sqrt_times", "pond_alphas", "domain", "schedule", "guess", "plan", "Plan",
           "DEFAULT_REL_ERROR", "ROUNDING"]

WIDTH = 6                    # securenn: x is normalized into [1, 2^WIDTH) or narrower
BLUR_BITS = 4                # securenn: each level's threshold 2^t may be blurred by 2^(t - BLUR_BITS)
REACH = 1 + 2.0 ** -BLUR_BITS  # so x lands in [1, 2^width REACH), which the guess covers
DEFAULT_REL_ERROR = 1e-6     # the approximation's relative error unless the caller asks for another
ROUNDING = 2e-6              # securenn: relative error the fixed-point rounding adds (``plan``)

X_BITS, Y_BITS = 20, 24      # fractional bits of the normalized x and of y
T_BITS = X_BITS + 6          # t = (x - c) / 64 is x - c read with 6 more fractional bits
SUM_BITS = Y_BITS + 32       # every weighted sum giving y has 56 fractional bits, truncated by 32
U_BITS, V_BITS = 24, 28      # x y and y^2 inside a Newton step: their product x y^3 has 52 bits
_STEP_SHIFT = X_BITS + Y_BITS - U_BITS   # both are truncated by 20 bits, in one call
assert _STEP_SHIFT == 2 * Y_BITS - V_BITS
MAX_DEGREE, MAX_STEPS = 4, 6

# bytes per element of the parts of ``plan``'s choice (all parties): a product's c is 8, an opening 16
# (8 each way), an exact truncation by at most 32 bits 4 and two packed bits (4.25)
_C, _OPEN, _TRUNC = 8.0, 16.0, 4.25
GUESS_BYTES = {1: _TRUNC, 2: _C + 2 * _TRUNC, 3: 2 * _C + _OPEN + 2 * _TRUNC, 4: 3 * _C + _OPEN + 2 * _TRUNC}
GUESS_ROUNDS = {1: 1, 2: 3, 3: 4, 4: 4}
STEP_BYTES, STEP_ROUNDS = _OPEN + 3 * _C + 2 * _OPEN + 3 * _TRUNC, 4


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


def pond_alphas(ratio: float, frac_bits: int, rel_error: float | None = None) -> list[float]:
    """Scale factors of Newton's steps from y = 1 / sqrt(hi) for x in [hi / ratio, hi]. With
    r = y sqrt(x) in [lo, hi'], a step maps r to a r (3 - a^2 r^2) / 2, which peaks at 1 for
    r = 1 / a; a is chosen to lift the lower end as far as possible (overshooting the peak where that
    helps: about 2.25 times per step while r is small), until r is within 2^-(frac_bits + 2) of 1
    (or within ``rel_error``, if that is larger)."""
    stop = max(2.0 ** -(frac_bits + 2), rel_error or 0.0)
    lo, hi, alphas = 1 / math.sqrt(ratio), 1.0, []
    phi = lambda a, r: a * r * (3 - a * a * r * r) / 2  # noqa: E731
    while 1 - lo > stop:
        grid = np.linspace(1 / hi, math.sqrt(3) / hi * 0.999, 2001)
        a = float(grid[np.argmax(np.minimum(phi(grid, lo), phi(grid, hi)))])
        lo, hi = min(phi(a, lo), phi(a, hi)), (1.0 if lo <= 1 / a <= hi else phi(a, hi))
        alphas.append(a)
    return alphas


# ---- the guess and the steps: chosen offline, in float64, with their error bounds ---------------------
def _interval(width: int) -> tuple[float, float]:
    """(center c, end H) of the guess's interval [1, H], H = 2^width REACH; c = (1 + H) / 2 is a
    multiple of 2^-X_BITS (it is subtracted from x exactly)."""
    hi = 2.0 ** width * REACH
    return (1 + hi) / 2, hi


def _remez(width: int, degree: int) -> np.ndarray:
    """Coefficients in t = (x - c) / 64 of the polynomial p of ``degree`` with the least max |p(x)
    sqrt(x) - 1| on [1, H] (the relative error of p as x^(-1/2)): Remez's exchange on a dense grid."""
    center, hi = _interval(width)
    x = center + (hi - 1) / 2 * np.cos(np.linspace(np.pi, 0, 8001))
    t, w = (x - center) / 64, np.sqrt(x)
    basis = np.vander(t, degree + 1, increasing=True) * w[:, None]
    ref = np.rint(np.linspace(0, x.size - 1, degree + 2)).astype(int)
    for _ in range(60):
        signs = (-1.0) ** np.arange(degree + 2)
        solution = np.linalg.solve(np.column_stack([basis[ref], signs]), np.ones(degree + 2))
        coef, level = solution[:-1], abs(solution[-1])
        error = basis @ coef - 1
        # the extremum of each run of one sign, then as many alternating ones as the reference needs
        runs = np.split(np.arange(x.size), np.flatnonzero(np.diff(np.sign(error)) != 0) + 1)
        peaks = [int(run[np.argmax(np.abs(error[run]))]) for run in runs]
        while len(peaks) > degree + 2:
            peaks.pop(0 if abs(error[peaks[0]]) < abs(error[peaks[-1]]) else -1)
        if len(peaks) < degree + 2 or np.abs(error).max() <= level * (1 + 1e-9):
            break
        ref = np.array(peaks)
    return coef


def _term_bits(degree: int) -> list[int]:
    """Fractional bits of the guess's terms 1, t, t^2, ... as they enter its sum (see ``_guess``)."""
    bits = [0, T_BITS]                                         # the constant 1, t
    if degree >= 2:
        bits.append(2 * T_BITS - 32)                           # t^2, truncated by 32 bits
    if degree >= 3:
        bits.append(T_BITS + bits[2])                          # t t^2, untruncated
    if degree >= 4:
        bits.append(2 * bits[2])                               # t^2 t^2, untruncated
    return bits


@functools.lru_cache(maxsize=None)
def guess(width: int, degree: int) -> tuple[tuple[int, ...], float]:
    """x^(-1/2) on [1, 2^width REACH] by a polynomial of ``degree`` (1 to 4) in t = (x - c) / 64:
    (the integer weights of its terms in a sum with SUM_BITS fractional bits, its relative error
    bound). The bound is that of the rounded weights on a dense grid, plus the rounding of t^2 and of
    the sum (a unit each, times the weights that multiply them), plus 1e-6 for the grid's gaps."""
    center, hi = _interval(width)
    coef = _remez(width, degree)
    bits = _term_bits(degree)
    weights = tuple(int(round(a * 2.0 ** (SUM_BITS - b))) for a, b in zip(coef, bits))
    rounded = np.array([k * 2.0 ** (b - SUM_BITS) for k, b in zip(weights, bits)])
    x = np.linspace(1, hi, 200001)
    t = (x - center) / 64
    error = np.abs(np.polynomial.polynomial.polyval(t, rounded) * np.sqrt(x) - 1).max()
    # t^2 is off by a unit 2^-(2 T_BITS - 32); it enters as a2 t^2 + a3 t t^2 + a4 (t^2)^2
    if degree >= 2:
        tops = np.abs(rounded[2]) + (np.abs(rounded[3]) * np.abs(t) if degree >= 3 else 0) + \
            (2.02 * np.abs(rounded[4]) * t * t if degree >= 4 else 0)
        slope = tops * 2.0 ** -(2 * T_BITS - 32)
    else:
        slope = np.zeros_like(t)
    error += float(((slope + 2.0 ** -Y_BITS) * np.sqrt(x)).max()) + 1e-6
    return weights, float(error)


def _step_rounding(b: float, top: float, hi: float) -> float:
    """Relative error a Newton step's fixed point adds, for r = y sqrt(x) <= ``top`` and x in [1, hi]:
    x y and y^2 are a unit 2^-U_BITS and 2^-V_BITS off, B times their product moves y by
    B (y^2 2^-U_BITS + x y 2^-V_BITS), and the final truncation by a unit 2^-Y_BITS; relative to
    x^(-1/2): B (r^2 2^-U_BITS + r x 2^-V_BITS) + sqrt(x) 2^-Y_BITS."""
    return 1.01 * (b * (top * top * 2.0 ** -U_BITS + top * hi * 2.0 ** -V_BITS) + math.sqrt(hi) * 2.0 ** -Y_BITS)


def _deviation(a: float, b: float, lo: float, hi: float) -> tuple[float, float]:
    """The image [min, max] of [lo, hi] under r -> a r - b r^3 (its ends and its peak)."""
    points = [lo, hi]
    peak = math.sqrt(a / (3 * b))
    if lo < peak < hi:
        points.append(peak)
    values = [a * r - b * r ** 3 for r in points]
    return min(values), max(values)


def _best_step(lo: float, hi: float) -> tuple[int, int, float, float]:
    """The step (A 2^32, B 2^4) that brings r in [lo, hi] closest to 1 (least max |r' - 1|) and the
    image [min, max] it gives: for each B on its grid the best A, by ternary search (the deviation
    is convex in A)."""
    best = None
    for b_int in range(4, 16):
        b = b_int / 16

        def worst(a):
            low, high = _deviation(a, b, lo, hi)
            return max(1 - low, high - 1)
        left, right = 0.5, 3.0
        for _ in range(100):
            m1, m2 = left + (right - left) / 3, right - (right - left) / 3
            left, right = (left, m2) if worst(m1) <= worst(m2) else (m1, right)
        a_int = round(left * 2.0 ** 32)
        low, high = _deviation(a_int * 2.0 ** -32, b, lo, hi)
        if best is None or max(1 - low, high - 1) < max(1 - best[2], best[3] - 1):
            best = (a_int, b_int, low, high)
    return best


@dataclass(frozen=True)
class Plan:
    """securenn's evaluation for a relative error target: the guess's ``degree`` and integer
    ``weights`` (``guess``), the Newton ``steps`` as (A 2^32, B 2^4), the relative error bound
    ``error`` of the result before the last step's rounding (``ROUNDING`` covers that and the
    normalized x's), and the bytes and rounds per element of the guess and steps."""

    degree: int
    weights: tuple[int, ...]
    steps: tuple[tuple[int, int], ...]
    error: float
    bytes: float
    rounds: int


@functools.lru_cache(maxsize=None)
def plan(width: int, rel_error: float = DEFAULT_REL_ERROR) -> Plan:
    """The cheapest guess and steps (bytes per element, then rounds) whose relative error, with
    every intermediate rounding, is at most ``rel_error``. Each step is chosen for the interval of
    r = y sqrt(x) it receives (``_best_step``); an error e becomes about 0.75 e^2. On [1, 68]
    (width 6): 1e-6 takes a degree-4 guess (within 0.20) and 3 steps, 1e-3 the same guess and 2.
    ValueError if no plan of MAX_STEPS steps reaches ``rel_error``."""
    best = None
    for degree in range(1, MAX_DEGREE + 1):
        weights, deviation = guess(width, degree)
        lo, hi, steps = 1 - deviation, 1 + deviation, []
        for count in range(MAX_STEPS + 1):
            if deviation <= rel_error:
                cost = (GUESS_BYTES[degree] + count * STEP_BYTES, GUESS_ROUNDS[degree] + count * STEP_ROUNDS)
                if best is None or cost < (best.bytes, best.rounds):
                    best = Plan(degree, weights, tuple(steps), deviation, *cost)
                break
            a_int, b_int, low, high = _best_step(lo, hi)
            steps.append((a_int, b_int))
            deviation = max(1 - low, high - 1)
            # the next step receives this one's rounding as well (the last one's is in ROUNDING)
            slack = _step_rounding(b_int / 16, high, 2.0 ** width * REACH)
            lo, hi = low - slack, high + slack
    if best is None:
        raise ValueError(f"inverse_sqrt_times: no plan reaches rel_error={rel_error}")
    return best


# ---- securenn: the evaluation on shares -------------------------------------------------------------------
def _normalize(ctx, x: Shared, numerator: Shared) -> tuple[Shared, Shared, int]:
    """x into [1, 2^width REACH) with X_BITS fractional bits by exact power-of-two factors, the
    numerator (at frac_bits) times their square roots (securenn). Returns (x, numerator, width).

    Each level compares x with 2^t by SecureNN's ReLU of 2^t - x, which keeps its DReLU bit b (a ring
    0/1). The comparison is bounded and blurred (``families.SecureNN.relu``): x stays below
    2^high REACH (high = 62 - 2f, the domain's end), so |2^t - x| does too and 48 bits hold it at
    frac_bits 16; and the level may also pick an x in (2^t, 2^t REACH), which it then sends below
    2^high REACH, not 2^high, a slack the guess covers. So only bits t + f - BLUR_BITS to high + f of
    2^t - x are compared (29, 17 and 11 of them at frac_bits 16, instead of 63 each: 267 bytes per
    element for the three ReLUs instead of 663). The binary search needs all its levels: the domain
    spans 62 - f octaves (46 at 16) and each level halves what is left until the guess's width.
    Then b x = b 2^t - relu(2^t - x) locally, and x + b x (2^k - 1) multiplies the small values by
    2^k exactly (an integral factor: no truncation, no precision lost). b * numerator is an
    untruncated product with the bit, exact however large the values (a fixed-point 0/1 times x near
    2^46 would overflow the ring), folded into the comparison (``relu_times``: 24 bytes, no round).
    Last, x is shifted down by s + f - X_BITS bits (12 to 30 for frac_bits 8 to 24) and the
    numerator by s / 2, by exact truncations (whatever the run's mode: local truncation of values
    this large would often fail), which round without bias.
    """
    family, f = families.of(ctx), ctx.config.frac_bits
    levels, shift, width = schedule(f)
    reach = 2.0 ** (62 - 2 * f) * REACH
    for t, k in levels:
        threshold = fixedpoint.encode(np.float64(2.0 ** t), f)
        # b (2^t - x) and b numerator in one comparison's rounds
        below, chosen_n = family.relu_times(ctx, add_public(ctx, -x, threshold), numerator, reach,
                                            blur=2.0 ** (t - BLUR_BITS))
        chosen_x = below.drelu * threshold - below                         # b x
        x = x + chosen_x * np.uint64((1 << k) - 1)
        numerator = numerator + chosen_n * np.uint64((1 << (k // 2)) - 1)
    return pond.truncate_exact(ctx, x, shift + f - X_BITS), pond.truncate_exact(ctx, numerator, shift // 2), width


def _weighted(ctx, terms: list[Shared], weights: list[int], constant: int = 0) -> Shared:
    """constant + sum of weights[i] terms[i] (ring integers, exact: ``polynomial.integer_combination``),
    truncated by 32 bits: the weighted sums of the guess and of a Newton step, SUM_BITS fractional bits
    down to Y_BITS."""
    total = integer_combination(ctx, terms, constant, weights)
    return pond.truncate_exact(ctx, total, SUM_BITS - Y_BITS)


def _guess(ctx, x: Shared, width: int, degree: int) -> Shared:
    """y ~ x^(-1/2) (Y_BITS) for x in [1, 2^width REACH] (X_BITS, opened already), the polynomial of
    ``guess`` in t = (x - c) / 64: t is x - c read with T_BITS fractional bits and keeps x's Beaver
    mask (``add_public``), so no value is opened for it; t^2 is truncated by 32 bits and opened,
    t t^2 and t^2 t^2 enter the sum untruncated. Cost (degree 4): 3 products, one opening, two
    truncations (48.5 bytes per element), 4 rounds."""
    weights, _ = guess(width, degree)
    center, _ = _interval(width)
    t = add_public(ctx, x, np.uint64(-round(center * 2 ** X_BITS) % (1 << 64)))   # x - c, x's mask kept
    terms = [t]
    if degree >= 2:
        square = pond.truncate_exact(ctx, pond.product(ctx, t, t, pond.MUL), 2 * T_BITS - _term_bits(2)[2])
        terms.append(square)
    if degree >= 3:
        terms.append(pond.product(ctx, t, square, pond.MUL))
    if degree >= 4:
        terms.append(pond.product(ctx, square, square, pond.MUL))
    return _weighted(ctx, terms, list(weights[1:]), weights[0])


def _newton(ctx, x: Shared, y: Shared, a_int: int, b_int: int) -> Shared:
    """One step y <- A y - B x y^3 (A = a_int 2^-32, B = b_int 2^-4) on x (X_BITS, opened already)
    and y (Y_BITS): x y and y^2 in one round (y opened once for both), truncated together to U_BITS
    and V_BITS, then their product (x y^3, 52 bits) and the weighted sum. Cost: 3 products, 3
    openings, 3 truncations: 84.75 bytes per element, 4 rounds."""
    xy = pond.product(ctx, x, y, pond.MUL)
    yy = pond.product(ctx, y, y, pond.MUL)
    both = pond.truncate_exact(ctx, stack([xy, yy]), _STEP_SHIFT)
    u, v = both.map(lambda a: a[0]), both.map(lambda a: a[1])
    cube = pond.product(ctx, u, v, pond.MUL)
    return _weighted(ctx, [y, cube], [a_int, -b_int])


@operation("inverse_sqrt_times")
def inverse_sqrt_times(x: PrivateTensor, numerator: Tensor, interval: tuple[float, float] | None = None,
                       rel_error: float | None = None) -> Tensor:
    """numerator * x^(-1/2) for a private x > 0 and a numerator of x's shape.

    ``rel_error``: the relative error the approximation may have (default 1e-6 under securenn;
    under pond, Newton's steps run until 2^-(f+2) unless a larger ``rel_error`` is given); a looser
    target takes fewer steps (``plan``). A real in (0, 1); ValueError otherwise.

    securenn: x is normalized into [1, 2^width REACH) by exact power-of-two factors (``_normalize``,
    on the levels of ``schedule``: 3 at frac_bits 14 to 24, 4 below), the numerator by their square
    roots; then a polynomial guess of x^(-1/2) and Newton's steps, chosen by ``plan`` for
    ``rel_error`` (1e-6: a degree-4 guess within 0.20 and 3 steps; 1e-3: the same guess and 2
    steps). Right for every x in [2^-f, 2^(62 - 2f)) (``interval`` is not needed): the result is
    within (rel_error + ROUNDING) |numerator| x^(-1/2) plus two units 2^-f (the numerator's shift
    and the last truncation) of the exact value; ROUNDING = 2e-6 bounds the fixed point's share (the
    normalized x's 20 bits, y's 24). The numerator must stay below 2^(62 - f) / 2^(k/2) summed over
    the levels (2^25 at frac_bits 16), and |numerator x^(-1/2)| < 2^(38 - f) (the last product's
    headroom with y's 24 bits). Cost per element at frac_bits 16: 3 levels of a bounded, blurred
    ReLU (119, 83 and 65 bytes, 3 rounds each) with the numerator's product by its bit folded in (24
    bytes), two exact truncations, x's opening, then the guess (48.5 bytes), 84.75 bytes per Newton
    step and the last product (44.25 bytes): 710.5 bytes and 29 rounds at rel_error 1e-6, 626 bytes
    and 25 rounds at 1e-3
    (``costs``: inverse_sqrt rows), all truncations exact whatever the run's mode.
    pond (no exact comparison): Newton's steps from 1 / sqrt(hi), scaled (``pond_alphas``), on
    y sqrt(hi) (whose precision does not shrink with y): right for x in ``interval`` = (lo, hi)
    (0 < lo < hi < 2^(62 - 2f): its products reach hi; ValueError otherwise), relative error
    max(2^-(f + 2), rel_error) plus a few units of y sqrt(hi); log2(hi / lo) / 2.3 + 4 steps of 3
    products and a division. Outside the interval the result is wrong (y falls short below lo,
    overshoots above hi), not an error.
    """
    if not isinstance(x, PrivateTensor):
        raise TypeError(f"inverse_sqrt_times takes a private x, got {type(x).__name__}")
    if tuple(numerator.shape) != x.shape:
        raise ValueError(f"inverse_sqrt_times: numerator of shape {tuple(numerator.shape)} for x of shape {x.shape}")
    if rel_error is not None and (isinstance(rel_error, bool) or not isinstance(rel_error, (int, float))
                                  or not 0 < rel_error < 1):
        raise ValueError(f"inverse_sqrt_times: rel_error must be a real in (0, 1), got {rel_error!r}")
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
        for a in pond_alphas(hi / lo, frac_bits, rel_error):
            t = ((x * y) * y) * (1 / hi)
            y = y * (t * (-a ** 3 / 2) + 1.5 * a)
        return (numerator * y) * (1 / math.sqrt(hi))
    x, numerator, width = _normalize(ctx, x._value, as_private(numerator, ctx)._value)
    chosen = plan(width, DEFAULT_REL_ERROR if rel_error is None else float(rel_error))
    pond.open_masks(ctx, [x])      # x's one opening serves the guess (through t) and every step
    y = _guess(ctx, x, width, chosen.degree)
    for a_int, b_int in chosen.steps:
        y = _newton(ctx, x, y, a_int, b_int)
    return PrivateTensor(ctx, pond.truncate_exact(ctx, pond.product(ctx, numerator, y, pond.MUL), Y_BITS))
