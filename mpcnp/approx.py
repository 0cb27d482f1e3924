"""Nonlinear functions of private tensors by approximation: sigmoid, tanh, exp, reciprocal, softmax,
Pond's step and polynomial ReLU, and division by a private value.

Dahl et al., "Private Machine Learning in TensorFlow using Secure Computation" (arXiv 1810.08130)
evaluate such functions as polynomials over Beaver products; exp, reciprocal and softmax follow the
same idea with range reduction and Newton's method. The polynomials themselves are evaluated on
shares by ``mpcnp.protocols.polynomial`` (Chebyshev series on a product tree).

Accuracy. Each docstring states an interval and the largest absolute error on it, measured by
tests/test_approx.py on dense grids through the private computation; "unit" means 2^-f, f =
frac_bits. An error has an approximation part (fixed) and a fixed-point part (a number of units,
so it halves with every extra fractional bit). Outside its interval a polynomial grows like
(|t| + sqrt(t^2 - 1))^degree: the result soon becomes meaningless (wrapped around the ring), but
nothing raises. Where the protocol family's comparisons are exact (securenn), sigmoid, tanh and exp
first clamp their input to the interval with them and are then accurate everywhere.

Truncation failures. Local truncation of a product v fails with probability about |v| 2^(2f - 64)
per element (fixedpoint.truncate_share); here |v| <= 1 for the polynomial terms, so a function with P
products fails with probability about P 2^(2f - 64) per element: 2^-27 for step at f = 16, but
2^-19 at f = 20, where large arrays will see failures. Larger values are noted where they occur.

Public inputs (PublicTensor, arrays, scalars) get the exact NumPy function, as a PublicTensor.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from mpcnp.functions import max as maximum, stack
from mpcnp.protocols import families, polynomial
from mpcnp.protocols.polynomial import Series, abs_series
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, as_private, plain
from mpcnp.tracing import operation

__all__ = ["sigmoid", "tanh", "exp", "reciprocal", "softmax", "divide", "step", "relu_polynomial", "clamp",
           "sqrt", "rsqrt", "log"]

Operand = Tensor | np.ndarray | float


def _public(fn: Callable[[np.ndarray], np.ndarray], x) -> PublicTensor:
    with np.errstate(over="ignore", divide="ignore"):
        return PublicTensor(fn(plain(x)))


def _exact(x: PrivateTensor) -> bool:
    """Whether the run's comparisons are exact, so that inputs can be clamped into an interval."""
    return families.of(x._ctx).exact


def _evaluate(series: Series, x: PrivateTensor) -> PrivateTensor:
    return PrivateTensor(x._ctx, series(x._ctx, x._value))


@operation("clamp")
def clamp(x: PrivateTensor, lo: int, hi: int | None = None) -> PrivateTensor:
    """x clipped to [lo, hi] (hi None: no upper bound) with the family's comparisons (exact ones).

    x * [lo < x < hi] + lo [x <= lo] + hi [x >= hi]: both comparisons in one batched DReLU (3 rounds),
    then one product whose value lies in [lo, hi], so that its truncation failure rate stays small
    however large x is: 4 rounds in all. Integer bounds multiply exactly.
    """
    if hi is None:
        inside = x > lo
        return x * inside + (1 - inside) * lo
    bounds = np.array([hi, -lo], dtype=np.float64).reshape((2,) + (1,) * x.ndim)
    outside = stack([x, -x]) >= bounds
    above, below = outside[0], outside[1]
    return x * (1 - above - below) + above * hi + below * lo


# ---- sigmoid, tanh ------------------------------------------------------------------------------
def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(v / 2)


SIGMOID = Series.interpolate(_sigmoid, -10.0, 10.0, 31, parity="odd")
TANH = Series.interpolate(np.tanh, -5.0, 5.0, 31, parity="odd")


@operation("sigmoid")
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
    return _evaluate(SIGMOID, clamp(x, -10, 10) if _exact(x) else x)


@operation("tanh")
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
    return _evaluate(TANH, clamp(x, -5, 5) if _exact(x) else x)


# ---- Pond's relu and step ------------------------------------------------------------------------
RELU_BOUND = polynomial.RELU_BOUND
ABS = abs_series(RELU_BOUND)
STEP_BOUND, STEP_BAND = polynomial.STEP_BOUND, polynomial.STEP_BAND


@operation("relu_polynomial")
def relu_polynomial(x: Operand, bound: int = RELU_BOUND) -> Tensor:
    """max(x, 0) elementwise, as Pond does it: (x + |x|) / 2 with |x| a polynomial (what ``mp.relu``
    computes under protocol "pond").

    Private x: |x| = B p(x / B) for the integer ``bound`` B (default 8), p the minimax even polynomial
    of degree 32 for |t| on [-1, 1]; relu being positively homogeneous, the error scales with B.
    Accurate on [-B, B] within 0.0044 B + 10 B units (measured max 0.036 at B = 8 and frac_bits=16,
    0.048 at 12, 0.035 at 20; 0.14 at B = 32). The error equioscillates across the interval, relu(0)
    comes out as 0.0044 B, and no input is exact: SecureNN's ReLU is exact everywhere.
    Cost: 5 rounds, 16 elementwise products, whatever B.
    Outside [-B, B] the polynomial diverges (at B = 8: error 0.6 at |x| = 8.05, 50 at 8.25): choose B
    above the largest input, e.g. from the plaintext model on training data.
    """
    abs_series(bound)  # a bad bound is refused for public inputs too
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: np.maximum(v, 0.0), x)
    return PrivateTensor(x._ctx, polynomial.relu(x._ctx, x._value, bound))


@operation("step")
def step(x: Operand) -> Tensor:
    """1.0 where x > 0 and 0.0 where x < 0, elementwise: Pond's comparison (x > y is step(x - y)).

    Private x: sign(x) approximated on [-16, 16] by an odd polynomial of degree 63 in x / 16, sharpened
    by two odd degree-7 polishing polynomials, then (1 + sign) / 2.
    Accurate on [-16, 16] outside the band |x| < 0.25 within 5e-6 + 3 units (measured max: 1-2 units
    at frac_bits 12 and 16, 5.7e-6 at 20). Inside the band the output rises from 0 to 1 (0.5 at x = 0)
    and stays in [0, 1] up to a unit, but is not monotone there (fixed-point noise): treat it as
    unknown. Cost: 12 rounds (6 + 3 + 3), 46 elementwise products (36 + 5 + 5).
    Outside [-16, 16] the degree-63 polynomial explodes at once: the result is meaningless even at
    |x| = 16.1. Every protocol can use this polynomial; exact comparisons are the operators <, >=, ...
    under protocol "securenn".
    """
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: (v > 0).astype(np.float64), x)
    return PrivateTensor(x._ctx, polynomial.step(x._ctx, x._value))


# ---- exp ----------------------------------------------------------------------------------------
EXP_LO, EXP_HI = -16, 6
EXP_SQUARINGS = 3
# e^x = q(x)^8 with q(x) = e^(x/8) interpolated by degree 8 on [-16, 6]: relative error 5.5e-6 after squaring
EXP_ROOT = Series.interpolate(lambda v: np.exp(v / 2 ** EXP_SQUARINGS), EXP_LO, EXP_HI, 8)


@operation("exp")
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
    y = _evaluate(EXP_ROOT, clamp(x, EXP_LO) if _exact(x) else x)
    for _ in range(EXP_SQUARINGS):
        y = y * y
    return y


# ---- reciprocal ---------------------------------------------------------------------------------
RECIPROCAL_INTERVAL = polynomial.RECIPROCAL_INTERVAL
newton_steps = polynomial.newton_steps


@operation("reciprocal")
def reciprocal(x: Operand, interval: tuple[float, float] = RECIPROCAL_INTERVAL) -> Tensor:
    """1 / x elementwise, for positive x in ``interval`` = (lo, hi), default (0.05, 100).

    Private x: Newton's iteration y <- y (2 - x y) from the constant 1 / hi, each step scaled to
    converge fast while x y is far from 1 (y <- beta y (2 - beta x y), ``newton_steps``). The first
    step is local; the number of steps follows from hi / lo: 8 private steps for the default interval
    (hi / lo = 2000), i.e. 16 rounds and 16 elementwise products (x is masked once and reused); about
    log_3.4(hi / lo) + 3 steps in general.
    Accurate on the interval within 2.5 (1 + 1/x) units (3.5 (1 + 1/x) at frac_bits 8, where the
    iteration runs on a larger power of two over x): relative error 4e-5 for small x and 4e-5
    absolute for large x at frac_bits=16 (measured max 1.75 (1 + 1/x) units at 12 and 16, 0.98 at
    20); 1/100 = 0.01 itself only has 655 units, so large x lose relative precision.
    Outside: below lo, y falls short of 1/x (too few steps): relative error 1.5e-4 at 0.8 lo, 3e-3
    at 0.6 lo, 0.03 at 0.4 lo, 0.18 at 0.2 lo. Above 1.17 hi the first step overshoots, y turns
    negative and the output is meaningless. Nothing raises. Negative x: the caller computes
    -reciprocal(-x) (under securenn, with the sign from an exact comparison if it is secret).
    """
    lo, hi = float(interval[0]), float(interval[1])
    if not 0 < lo < hi:
        raise ValueError(f"reciprocal needs an interval 0 < lo < hi, got {interval}")
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: 1.0 / v, x)
    return PrivateTensor(x._ctx, polynomial.reciprocal(x._ctx, x._value, lo, hi))


# ---- softmax ------------------------------------------------------------------------------------
def _softmax_exact(v: np.ndarray, axis: int) -> np.ndarray:
    if v.size == 0:
        return v.copy()
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@operation("softmax")
def softmax(x: Operand, axis: int = -1) -> Tensor:
    """e^x / sum(e^x) along ``axis``.

    Private x: z = x - shift, e = exp(z), s = sum(e) along axis, then e * (2^k / s) / 2^k, where the
    reciprocal computes 2^k / s (2^k about the largest s, capped at 2^10 and at 2^(42 - 2f) to keep
    truncation failures rare) so that it keeps its relative precision.
    Protocol "securenn": shift = max(x) along axis, exact (mpcnp.max), and exp clamps z at
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
    ndim = x.ndim if isinstance(x, Tensor) else np.ndim(x)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"softmax: axis {axis!r} is out of bounds for a tensor of {ndim} dimensions")
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: _softmax_exact(v, axis), x)
    if x.size == 0:
        return x * 0
    n = x.shape[axis]
    if _exact(x):
        z = x - maximum(x, axis=axis, keepdims=True)
        lo, hi = 0.5, n + 0.5
    else:
        z = x - x.mean(axis=axis, keepdims=True)
        lo, hi = 0.5, n * math.exp(EXP_HI) * 1.01
    e = exp(z)
    ctx = x._ctx
    scale = 2 ** max(0, min(math.ceil(math.log2(hi)), 10, 42 - 2 * ctx.config.frac_bits))
    total = e.sum(axis=axis, keepdims=True)
    inverse = PrivateTensor(ctx, polynomial.reciprocal(ctx, total._value, lo, hi, scale))
    return (e * inverse) / scale


# ---- division by a private value -----------------------------------------------------------------
@operation("divide")
def divide(x, y, integer_bits: int = 12) -> Tensor:
    """x / y elementwise for a private positive divisor y, by the protocol family.

    securenn: SecureNN's long division (PETS Alg. 8, restoring the remainder), floor(x * 2^f / y) / 2^f
    (f = frac_bits): x / y rounded down to a multiple of 2^-f, exactly, for every x and y with
    2^-f <= y < 2^(62 - integer_bits - f) and |x / y| < 2^integer_bits (at the default 12: y below
    2^42 = 4.4e12 at f = 8, 2^34 = 1.7e10 at 16, 2^26 = 6.7e7 at 24; docs/api.md has the table).
    These preconditions are on secret values and not checked (``validate=True`` checks them); outside
    them the result is wrong, not an error. Cost: integer_bits + f + 1 sequential steps of one DReLU
    and one product folded into it (3 rounds, 221 bytes per element each).
    pond: x * reciprocal(y), with the interval (0.05, 100) and error that ``reciprocal`` states
    (``integer_bits`` is then ignored).
    A public y divides locally (x / y).
    """
    if not isinstance(y, PrivateTensor):
        return x / plain(y) if isinstance(x, Tensor) else PublicTensor(plain(x) / plain(y))
    ctx = y._ctx
    top = 61 - ctx.config.frac_bits
    integral = isinstance(integer_bits, (int, np.integer)) and not isinstance(integer_bits, bool)
    if not integral or not 0 <= integer_bits <= top:
        raise ValueError(f"integer_bits must be an integer in [0, {top}] at frac_bits={ctx.config.frac_bits}, "
                         f"got {integer_bits!r}")
    x = as_private(x, ctx)
    return PrivateTensor(ctx, families.of(ctx).divide(ctx, x._value, y._value, integer_bits))


# ---- square roots and the logarithm ---------------------------------------------------------------------
ROOT_INTERVAL, LOG_INTERVAL = polynomial.ROOT_INTERVAL, polynomial.LOG_INTERVAL


def _at_least(ctx, x, thresholds):
    """Ring bits [x >= T_j] from the (exact) family's comparisons, one mask for all thresholds."""
    return families.of(ctx).at_least(ctx, x, thresholds)


def _root_top(frac_bits: int) -> float:
    """The exclusive upper end of the exact roots' domain: 2^(2 floor((60 - f) / 2) + 2)."""
    return 2.0 ** (2 * ((60 - frac_bits) // 2) + 2)


@operation("sqrt")
def sqrt(x: Operand) -> Tensor:
    """The square root, elementwise, for positive x.

    securenn: exact range reduction, x = m 4^e with m in [1, 4) from the exact comparisons
    [x >= 4^j] (30 in one batch, under one mask: ``securenn.drelu_thresholds``), the root of m by a Chebyshev series of degree 10, times 2^e (two
    products with exact truncation). Accurate for every x in [2^-f, 2^(62 - f)) (2^(61 - f) for odd
    f) within (3e-7 + 3 units) sqrt(x) + 3 units. Cost: 4,527 bytes per element, 17 rounds.
    pond: x * rsqrt(x) on [0.05, 100] (``rsqrt``), within 16 (1 + sqrt(x)) units; 22 rounds.
    x <= 0 gives a meaningless value, not NumPy's nan (tests/test_roots.py checks the bounds).
    """
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: np.sqrt(np.maximum(v, 0.0)), x)
    ctx = x._ctx
    if _exact(x):
        return PrivateTensor(ctx, polynomial.exact_root(ctx, x._value, _at_least, inverse=False))
    return x * PrivateTensor(ctx, polynomial.rsqrt(ctx, x._value, *ROOT_INTERVAL))


@operation("rsqrt")
def rsqrt(x: Operand) -> Tensor:
    """1 / sqrt(x), elementwise, for positive x.

    securenn: the exact range reduction of ``sqrt``, then a Chebyshev series of degree 12 for
    1 / sqrt(m) and one product by 2^-e: within (3e-7 + 4 units) / sqrt(x) + 4 units for every x in
    [2^-f, 2^(62 - f)) (2^(61 - f) for odd f); 4,584 bytes per element, 17 rounds.
    pond: Newton's iteration from a constant on [0.05, 100] (polynomial.rsqrt): within
    5 (1 + 1/sqrt(x)) units; 21 rounds at frac_bits 16.
    x <= 0 gives a meaningless value.
    """
    if not isinstance(x, PrivateTensor):
        return _public(lambda v: 1.0 / np.sqrt(v), x)
    ctx = x._ctx
    if _exact(x):
        return PrivateTensor(ctx, polynomial.exact_root(ctx, x._value, _at_least, inverse=True))
    return PrivateTensor(ctx, polynomial.rsqrt(ctx, x._value, *ROOT_INTERVAL))


@operation("log")
def log(x: Operand) -> Tensor:
    """The natural logarithm, elementwise, for positive x.

    securenn: x = m 2^k with m in [1, 2) from 61 exact comparisons [x >= 2^j] in one batch (one
    mask: ``securenn.drelu_thresholds``), log m by
    a Chebyshev series of degree 8, plus k log 2: within 6 units + 1e-7 for every x in
    [2^-f, 2^(62 - f)); 8,560 bytes per element, 13 rounds.
    pond: 2 atanh((x - 1) / (x + 1)) with the reciprocal of x + 1, on [0.05, 20]
    (polynomial.log_atanh): within 100 units + 2e-7; 15 rounds at frac_bits 16.
    x <= 0 gives a meaningless value, not NumPy's nan or -inf.
    """
    if not isinstance(x, PrivateTensor):
        return _public(np.log, x)
    ctx = x._ctx
    if _exact(x):
        return PrivateTensor(ctx, polynomial.exact_log(ctx, x._value, _at_least))
    return PrivateTensor(ctx, polynomial.log_atanh(ctx, x._value))
