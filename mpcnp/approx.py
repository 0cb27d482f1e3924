"""Pond's nonlinear functions on private tensors: Chebyshev polynomials and Newton iterations.

Dahl et al., "Private Machine Learning in TensorFlow using Secure Computation" (arXiv 1810.08130)
evaluate sigmoid, tanh and ReLU as polynomials over Beaver products; exp, reciprocal and softmax follow
the same idea with range reduction and Newton's method. Built only on the tensor API: private products
(PROTOCOLS.md section 4, each followed by a local truncation), public operations and sums.

Polynomials are Chebyshev series p(x) = sum_k a_k T_k(t) in t = (x - c) / r, which maps the stated
interval [c - r, c + r] onto [-1, 1]. There |T_k(t)| <= 1, so every intermediate stays small and
the fixed-point noise is amplified by at most sum_k |a_k| k^2, a small number for these functions;
the monomial coefficients of the same polynomials grow like 2.5^k and would drown the result in
truncation noise. The T_k come from a product tree (``chebyshev_terms``): ceil(log2 degree) rounds,
the products of a round batched into one Beaver multiplication. The linear combination is local,
with one rounding (``combine``).

Accuracy. Each docstring states an interval and the largest absolute error on it, measured by
tests/test_approx.py on dense grids through the private computation; "unit" means 2^-f, f =
frac_bits. An error has an approximation part (fixed) and a fixed-point part (a number of units,
so it halves with every extra fractional bit). Outside its interval a polynomial grows like
(|t| + sqrt(t^2 - 1))^degree: the result soon becomes meaningless (wrapped around the ring), but
nothing raises. Under protocol="securenn", sigmoid, tanh and exp first clamp their input to the
interval with the exact comparisons of ``mpcnp.comparisons`` and are then accurate everywhere.

Truncation failures. Local truncation of a product v fails with probability about |v| 2^(2f - 64)
per element (fixedpoint.truncate_share); here |v| <= 1 for the polynomial terms, so a function with P
products fails with probability about P 2^(2f - 64) per element: 2^-27 for step at f = 16, but
2^-19 at f = 20, where large arrays will see failures. Larger values are noted where they occur.

Public inputs (PublicTensor, arrays, scalars) get the exact NumPy function, as a PublicTensor.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from numpy.polynomial import chebyshev

from mpcnp.functions import stack
from mpcnp.runtime.context import current
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, plain

__all__ = ["sigmoid", "tanh", "relu", "step", "exp", "reciprocal", "softmax", "Series", "chebyshev_terms"]

Operand = Tensor | np.ndarray | float


@dataclass(frozen=True)
class Series:
    """p(x) = sum_k coef[k] T_k((x - center) / radius), accurate for x in [center - radius, center + radius].

    ``radius`` is an integer so that t is computed by a local division of the shares (rounded to
    nearest, error half a unit). ``parity`` ("odd", "even" or None) says which T_k are needed.
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

    def __call__(self, x: PrivateTensor) -> PrivateTensor:
        """Evaluate on a private tensor: ceil(log2 degree) rounds (``chebyshev_terms``)."""
        ulp = 2.0 ** -current().config.frac_bits
        # +r/2 units before the (flooring) division by r rounds t to nearest
        t = (x + (self.radius * ulp / 2 - self.center)) / self.radius
        return combine(chebyshev_terms(t, len(self.coef) - 1, self.parity), self.coef)


def chebyshev_terms(t: PrivateTensor, degree: int, parity: str | None = None) -> dict[int, PrivateTensor]:
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
            products = stack([terms[k - m] for k in ks]) * terms[m]
            for i, k in enumerate(ks):
                rest = terms[2 * m - k] if k < 2 * m else 1.0
                terms[k] = products[i] * 2 - rest
        m *= 2
    return {k: terms[k] for k in sorted(wanted)}


def combine(terms: dict[int, PrivateTensor], coef: Sequence[float]) -> PrivateTensor:
    """coef[0] + sum_k coef[k] terms[k], locally, with one rounding (half a unit): the coefficients are
    scaled by 2^(f + 2) to integers (exact products), the terms summed, the sum divided by 2^(f + 2).
    Rounding the coefficients costs at most (number of terms) 2^-(f + 3), in practice under a unit; the
    division fails with probability about |result| 2^(2f + 2 - 64)."""
    frac_bits = current().config.frac_bits
    ks = [k for k in terms if coef[k] != 0.0]
    scale = 2 ** (frac_bits + 2)
    first = terms[ks[0]]
    weights = np.rint(np.asarray([coef[k] for k in ks]) * scale).reshape((len(ks),) + (1,) * first.ndim)
    total = (stack([terms[k] for k in ks]) * weights).sum(axis=0)
    half_unit = 2.0 ** -(frac_bits + 1) * scale  # makes the flooring division round to nearest
    return (total + half_unit) / scale + coef[0]


def _public(fn: Callable[[np.ndarray], np.ndarray], x) -> PublicTensor:
    with np.errstate(over="ignore", divide="ignore"):
        return PublicTensor(fn(plain(x)))


def _securenn() -> bool:
    return current().config.protocol == "securenn"


def clamp(x: PrivateTensor, lo: int, hi: int | None = None) -> PrivateTensor:
    """x clipped to [lo, hi] (hi None: no upper bound) with SecureNN's exact comparisons.

    x * [lo < x < hi] + lo [x <= lo] + hi [x >= hi]: both comparisons in one batched DReLU (3 rounds,
    see protocols.securenn.drelu), then one product whose value lies in [lo, hi], so that its
    truncation failure rate stays small however large x is: 4 rounds in all. Integer bounds multiply exactly. Protocol "securenn" only.
    """
    from mpcnp import comparisons
    if hi is None:
        inside = comparisons.greater(x, lo)
        return x * inside + (1 - inside) * lo
    bounds = np.array([hi, -lo], dtype=np.float64).reshape((2,) + (1,) * x.ndim)
    outside = comparisons.greater_equal(stack([x, -x]), bounds)
    above, below = outside[0], outside[1]
    return x * (1 - above - below) + above * hi + below * lo


# ---- sigmoid, tanh ------------------------------------------------------------------------------
def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(v / 2)


SIGMOID = Series.interpolate(_sigmoid, -10.0, 10.0, 31, parity="odd")
TANH = Series.interpolate(np.tanh, -5.0, 5.0, 31, parity="odd")


def sigmoid(x: Operand) -> Tensor:
    """The logistic function 1 / (1 + e^-x), elementwise.

    Private x: 0.5 + an odd Chebyshev series of degree 31 interpolating sigmoid on [-10, 10].
    Accurate on [-10, 10] within 3.2e-5 + 8 units (approximation + fixed point; measured max 1.05e-4
    at frac_bits=16, 1.3e-3 at 12, 3.4e-5 at 20). Cost: 5 rounds, 19 elementwise products.
    Protocol "pond": outside [-10, 10] the polynomial diverges (error 9e-4 at |x| = 10.1, 0.2 at
    10.5, meaningless beyond 11). Protocol "securenn": x is first clamped to [-10, 10] (``clamp``:
    one batched comparison and one product, 4 more rounds), so the error is below
    4.5e-5 + 3.2e-5 + 8 units everywhere.
    """
    if not isinstance(x, PrivateTensor):
        return _public(_sigmoid, x)
    return SIGMOID(clamp(x, -10, 10) if _securenn() else x)


def tanh(x: Operand) -> Tensor:
    """Hyperbolic tangent, elementwise.

    Private x: an odd Chebyshev series of degree 31 interpolating tanh on [-5, 5].
    Accurate on [-5, 5] within 6.4e-5 + 14 units (approximation + fixed point; measured max 1.7e-4
    at frac_bits=16, 2.4e-3 at 12, 6.8e-5 at 20). Cost: 5 rounds, 19 elementwise products.
    Protocol "pond": outside [-5, 5] the polynomial diverges (error 2e-3 at |x| = 5.05, 0.4 at 5.25,
    meaningless beyond 5.5). Protocol "securenn": x is first clamped to [-5, 5] (4 more rounds, one
    comparison and one product), so the error is below 9.1e-5 + 6.4e-5 + 14 units everywhere.
    """
    if not isinstance(x, PrivateTensor):
        return _public(np.tanh, x)
    return TANH(clamp(x, -5, 5) if _securenn() else x)


# ---- relu, step ---------------------------------------------------------------------------------
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


ABS = abs_series(RELU_BOUND)


def relu(x: Operand, bound: int = RELU_BOUND) -> Tensor:
    """max(x, 0) elementwise, as Pond does it: (x + |x|) / 2 with |x| a polynomial.

    Private x: |x| = B p(x / B) for the integer ``bound`` B (default 8), p the minimax even polynomial
    of degree 32 for |t| on [-1, 1]; relu being positively homogeneous, the error scales with B.
    Accurate on [-B, B] within 0.0044 B + 10 B units (measured max 0.036 at B = 8 and frac_bits=16,
    0.048 at 12, 0.035 at 20; 0.14 at B = 32). The error equioscillates across the interval, relu(0)
    comes out as 0.0044 B, and no input is exact: SecureNN's ReLU (mpcnp.comparisons.relu) is exact
    everywhere. Cost: 5 rounds, 16 elementwise products, whatever B.
    Outside [-B, B] the polynomial diverges (at B = 8: error 0.6 at |x| = 8.05, 50 at 8.25): choose B
    above the largest input, e.g. from the plaintext model on training data.
    """
    series = abs_series(bound)
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: np.maximum(v, 0.0), x)
    return (x + series(x)) / 2


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


def step(x: Operand) -> Tensor:
    """1.0 where x > 0 and 0.0 where x < 0, elementwise: Pond's comparison (x > y is step(x - y)).

    Private x: sign(x) approximated on [-16, 16] by an odd polynomial of degree 63 in x / 16, sharpened
    by two odd degree-7 polishing polynomials, then (1 + sign) / 2.
    Accurate on [-16, 16] outside the band |x| < 0.25 within 5e-6 + 3 units (measured max: 1-2 units
    at frac_bits 12 and 16, 5.7e-6 at 20). Inside the band the output rises from 0 to 1 (0.5 at x = 0)
    and stays in [0, 1] up to a unit, but is not monotone there (fixed-point noise): treat it as
    unknown. Cost: 12 rounds (6 + 3 + 3), 46 elementwise products (36 + 5 + 5).
    Outside [-16, 16] the degree-63 polynomial explodes at once: the result is meaningless even at
    |x| = 16.1. Every protocol uses this polynomial; exact comparisons are in mpcnp.comparisons.
    """
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: (v > 0).astype(np.float64), x)
    sign = STEP_FIRST(x)
    sign = combine(chebyshev_terms(sign, 7, "odd"), _POLISH)
    return combine(chebyshev_terms(sign, 7, "odd"), _POLISH_TO_STEP)


# ---- exp ----------------------------------------------------------------------------------------
EXP_LO, EXP_HI = -16, 6
EXP_SQUARINGS = 3
# e^x = q(x)^8 with q(x) = e^(x/8) interpolated by degree 8 on [-16, 6]: relative error 5.5e-6 after squaring
EXP_ROOT = Series.interpolate(lambda v: np.exp(v / 2 ** EXP_SQUARINGS), EXP_LO, EXP_HI, 8)


def exp(x: Operand) -> Tensor:
    """e^x elementwise.

    Private x: range reduction by squaring, e^x = (e^(x/8))^8, with e^(x/8) a degree-8 Chebyshev
    interpolant on [-16, 6] (relative error 5.5e-6 after the squarings).
    Accurate on [-16, 6] within (40 e^x + 3) units, i.e. 6.1e-4 e^x + 4.6e-5 at frac_bits=16:
    rounding x / 11 and the polynomial's noise are relative errors of e^(x/8), multiplied by 8 in the
    squarings; where e^x is below a unit the output is within a unit or two of 0. Measured: at most
    (30 e^x + 1.5) units at f = 12, 16 and 20; relative error 24 to 31 units for x >= 0.
    Cost: 6 rounds (3 for the polynomial, 3 squarings), 10 elementwise products. The squarings reach
    e^6 = 403: truncation failure rate 403 2^(2f - 64) per element (2^-23 at f = 16, 2^-15 at f = 20).
    Protocol "pond", outside: below -16 the output stays within a unit of 0 down to -32, but the
    polynomial's terms grow (truncation failures 1e-5 per element at -32, f = 16) and it is
    meaningless below -40; above 6 the relative error grows slowly (6e-3 at 12) while truncation
    failures become likely (2^-15 at 12). Protocol "securenn": x is first clamped from below at -16
    (``clamp``: one comparison and one product, 4 more rounds), so any x <= 6 is accurate.
    """
    if not isinstance(x, PrivateTensor):
        return _public(np.exp, x)
    y = EXP_ROOT(clamp(x, EXP_LO) if _securenn() else x)
    for _ in range(EXP_SQUARINGS):
        y = y * y
    return y


# ---- reciprocal ---------------------------------------------------------------------------------
RECIPROCAL_INTERVAL = (0.05, 100.0)
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


def _scaled_reciprocal(x: PrivateTensor, lo: float, hi: float, scale: int = 1) -> PrivateTensor:
    """scale / x for x in [lo, hi], ``scale`` a power of two (see ``reciprocal``)."""
    frac_bits = current().config.frac_bits
    betas = newton_steps(lo, hi, frac_bits)
    c = betas[0] / hi  # the first step, from the constant guess y = 1 / hi, is local
    y = x * (-scale * c * c) + 2 * scale * c
    for beta in betas[1:]:
        u = x * y if scale == 1 else (x * y) / scale
        y = y * (u * (-beta * beta) + 2 * beta)
    return y


def reciprocal(x: Operand, interval: tuple[float, float] = RECIPROCAL_INTERVAL) -> Tensor:
    """1 / x elementwise, for positive x in ``interval`` = (lo, hi), default (0.05, 100).

    Private x: Newton's iteration y <- y (2 - x y) from the constant 1 / hi, each step scaled to
    converge fast while x y is far from 1 (y <- beta y (2 - beta x y), ``newton_steps``). The first
    step is local; the number of steps follows from hi / lo: 8 private steps for the default interval
    (hi / lo = 2000), i.e. 16 rounds and 16 elementwise products (x is masked once and reused); about
    log_3.4(hi / lo) + 3 steps in general.
    Accurate on the interval within 2.5 (1 + 1/x) units: relative error 4e-5 for small x and 4e-5
    absolute for large x at frac_bits=16 (measured max 1.75 (1 + 1/x) units at 12 and 16, 0.98 at
    20); 1/100 = 0.01 itself only has 655 units, so large x lose relative precision.
    Outside: below lo, y falls short of 1/x (too few steps): relative error 1.5e-4 at 0.8 lo, 3e-3
    at 0.6 lo, 0.03 at 0.4 lo, 0.18 at 0.2 lo. Above 1.17 hi the first step overshoots, y turns
    negative and the output is meaningless. Nothing raises. Negative x: the caller computes
    -reciprocal(-x) (under securenn, with the sign from mpcnp.comparisons if it is secret).
    """
    lo, hi = float(interval[0]), float(interval[1])
    if not 0 < lo < hi:
        raise ValueError(f"reciprocal needs an interval 0 < lo < hi, got {interval}")
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: 1.0 / v, x)
    return _scaled_reciprocal(x, lo, hi)


# ---- softmax ------------------------------------------------------------------------------------
def _softmax_exact(v: np.ndarray, axis: int) -> np.ndarray:
    if v.size == 0:
        return v.copy()
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax(x: Operand, axis: int = -1) -> Tensor:
    """e^x / sum(e^x) along ``axis``.

    Private x: z = x - shift, e = exp(z), s = sum(e) along axis, then e * (2^k / s) / 2^k, where the
    reciprocal computes 2^k / s (2^k about the largest s, capped at 2^10 and at 2^(42 - 2f) to keep
    truncation failures rare) so that it keeps its relative precision.
    Protocol "securenn": shift = max(x) along axis, exact (mpcnp.comparisons.max), and exp clamps z at
    -16 exactly: accurate for every input; s lies in [1, n], n = x.shape[axis].
    Protocol "pond" (no exact max): shift = mean(x) along axis, so the inputs must have
    x - mean(x, axis) in [-16, 6] (true whenever max - min <= 6 along the axis); s in [1, 403 n].
    Outside, exp and then the reciprocal leave their intervals and the result is meaningless.
    Max abs error on an output p: (30 p + 3) units, i.e. 4.6e-4 p + 4.6e-5 at frac_bits=16
    (measured at most (20 p + 1.7) units at frac_bits 12 and 16 on random inputs with n = 1..100,
    both protocols; at 20 the cap on 2^k doubles the p term).
    Cost: max (securenn: ceil(log2 n) levels of 3 rounds) + exp (6 rounds, 10 products per element;
    securenn: + 4 rounds for the clamp) + reciprocal on the sums (2 rounds per step, log_3.4(2n) + 3
    steps under securenn, log_3.4(800 n) + 3 under pond) + 1 round for the final product.
    """
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: _softmax_exact(v, axis), x)
    if x.size == 0:
        return x * 0
    n = x.shape[axis]
    if _securenn():
        from mpcnp import comparisons
        z = x - comparisons.max(x, axis=axis, keepdims=True)
        lo, hi = 0.5, n + 0.5
    else:
        z = x - x.mean(axis=axis, keepdims=True)
        lo, hi = 0.5, n * math.exp(EXP_HI) * 1.01
    e = exp(z)
    frac_bits = current().config.frac_bits
    scale = 2 ** max(0, min(math.ceil(math.log2(hi)), 10, 42 - 2 * frac_bits))
    inverse = _scaled_reciprocal(e.sum(axis=axis, keepdims=True), lo, hi, scale)
    return (e * inverse) / scale
