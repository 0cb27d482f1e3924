"""Losses of private tensors, each with its own gradient: cross-entropy and binary cross-entropy on
logits, mean squared error. The functional forms; ``mpcnp.nn``'s loss classes call them.

Each loss is one recorded operation (``custom_gradient``) whose gradient is the closed form, cheaper
and more accurate than backpropagating through its pieces: softmax(x) - onehot for cross-entropy,
sigmoid(x) - y for binary cross-entropy, 2 (output - target) for squared error, each divided by the
number of terms for ``reduction="mean"``. The loss value itself needs a logarithm on a bounded
interval, evaluated as a Chebyshev series (mpcnp.protocols.polynomial) whose interval follows from
the exact max shift; its error is stated with each loss.

Preconditions that cannot be checked (the values are secret): private integer labels lie in
[0, classes); under pond, logits differ by at most 16 within a sample (its max and comparisons are
its step polynomial, accurate on [-16, 16]) and binary logits lie in [-16, 16].
"""
from __future__ import annotations

import functools
import math

import numpy as np

from mpcnp.approx import sigmoid
from mpcnp.autograd import custom_gradient
from mpcnp.functions import max as maximum, relu, stack
from mpcnp.protocols import families, pond
from mpcnp.protocols.polynomial import Series, chebyshev_terms, combine
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, as_private, plain

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "mse_loss", "one_hot", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")
SERIES_ERROR = 2.0 ** -20    # the series' own error on their intervals; fixed point adds a few units
_FUNCTIONS = {"log": np.log, "reciprocal": lambda v: 1.0 / v, "exp": np.exp}
EXP_LO = -16                 # exp(z) for z <= 0 is a series on [-16, 0] (below: clamped under securenn)


@functools.lru_cache(maxsize=None)
def _series(name: str, lo: int, hi: int) -> Series:
    """``name`` (log, reciprocal or exp) on [lo, hi] (hi - lo even) as the lowest-degree Chebyshev
    interpolant within SERIES_ERROR there (checked on a dense grid)."""
    fn, grid = _FUNCTIONS[name], np.linspace(lo, hi, 4001)
    for degree in range(2, 96):
        series = Series.interpolate(fn, lo, hi, degree)
        if np.abs(series.reference(grid) - fn(grid)).max() <= SERIES_ERROR:
            return series
    raise ValueError(f"no Chebyshev series of degree below 96 reaches {SERIES_ERROR:g} for {name} on [{lo}, {hi}]")


def _on_interval(x: PrivateTensor, lo: int, hi: int, names: tuple[str, ...]) -> list[PrivateTensor]:
    """The functions ``names`` of x in [lo, hi] (hi - lo rounded up to even), each within
    SERIES_ERROR + a few units there, from one set of Chebyshev terms: log and reciprocal of a
    softmax's sums cost one product tree (ceil(log2 degree) rounds) and a local combination each."""
    hi = lo + 2 * max(1, math.ceil((hi - lo) / 2))
    series = [_series(name, lo, hi) for name in names]
    ctx, unit = x._ctx, 2.0 ** -x._ctx.config.frac_bits
    radius, center = series[0].radius, series[0].center
    # t = (x - c) / r rounded to nearest (+ r/2 units before the flooring division), as Series does
    t = pond.divide_by(ctx, pond.add_constant(ctx, x._value, np.float64(radius * unit / 2 - center)),
                       np.float64(radius))
    degree = max(len(s.coef) - 1 for s in series)
    terms = chebyshev_terms(ctx, t, degree)
    return [PrivateTensor(ctx, combine(ctx, {k: terms[k] for k in range(1, len(s.coef))}, s.coef))
            for s in series]


def _exp_nonpositive(z: PrivateTensor, top: int) -> PrivateTensor:
    """e^z for z <= top (0 after an exact max shift, up to 2 after Pond's): a Chebyshev series on
    [-16, top] (degree 15 on [-16, 0], within 2^-20 + a few units; 4 product rounds). Under securenn z
    is first clamped at -16 exactly as relu(z + 16) - 16 (one ReLU, 3 rounds), where e^z is below a
    unit anyway; under pond z must stay above -16 (logits within 16 of each other)."""
    if families.of(z._ctx).exact:
        z = relu(z - EXP_LO) + EXP_LO
    [e] = _on_interval(z, EXP_LO, top, ("exp",))
    return e


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()        # an exact division: within two units of a large sum's mean
    return per_sample.sum() if reduction == "sum" else per_sample


def _per_term(d: Tensor, reduction: str) -> Tensor:
    """The gradient of ``_reduce`` for each term: d, or d / count for a mean, as d times 1 / count:
    a truncation, which rounds without bias (an exact division by the integer count rounds down,
    and training adds up these errors), relative error 2^-(f + 1) from rounding 1 / count."""
    return d * (1.0 / d.size) if reduction == "mean" and d.size > 1 else d


def one_hot(labels, classes: int) -> Tensor:
    """Integer labels (N,) as (N, classes) rows of 0.0/1.0.

    Public labels: checked (integers in [0, classes), else ValueError) and converted in NumPy.
    Private labels: row i is [y_i > c - 1/2] - [y_i > c + 1/2] for c = 0..classes-1, from one batched
    comparison of N (classes + 1) elements (securenn: exact, 213 bytes each; pond: its step, right
    when classes <= 16). A private label outside [0, classes) gives a row of zeros: it cannot be
    checked without revealing it.
    """
    if not isinstance(labels, PrivateTensor):
        values = plain(labels)
        if values.ndim != 1 or not np.all(values == np.round(values)) or \
                (values.size and (values.min() < 0 or values.max() >= classes)):
            raise ValueError(f"labels must be a 1-d array of integers in [0, {classes}), got shape "
                             f"{values.shape} with values in [{values.min(initial=0)}, {values.max(initial=0)}]")
        return PublicTensor(np.eye(classes)[values.astype(np.int64)])
    if len(labels.shape) != 1:
        raise ValueError(f"labels must be 1-d (one integer per sample), got shape {labels.shape}")
    above = labels.reshape(-1, 1) > (np.arange(classes + 1) - 0.5)
    return above[:, :-1] - above[:, 1:]


# ---- cross-entropy on logits -------------------------------------------------------------------------
def cross_entropy(logits: Tensor, target, reduction: str = "mean") -> Tensor:
    """Cross-entropy of the softmax of ``logits`` (N, K) against ``target``: integer labels (N,) or
    rows (N, K) of probabilities (one-hot), private or public; a private 0-d tensor for "mean" and
    "sum", (N,) per-sample losses for "none".

    With z = x - max(x) per row (securenn: the exact max; pond: its tournament, within 0.25 per level
    below it), e = exp(z) (``_exp_nonpositive``), s = sum(e) in [1, K] (pond [1, 3K]): the loss of a
    row is log(s) - sum(z * target), and p = e / s. log(s) and 1 / s are Chebyshev series on that
    interval sharing one product tree (each within 2^-20 + a few units). Gradient: (p - target) / N
    for "mean", one local product with g: no backpropagation through log or softmax.
    Cost: the max (ceil(log2 K) levels of a ReLU), a ReLU and a degree-15 series per element for exp
    (4 product rounds), the series on N sums (degree 23 for K = 10: 5 product rounds), and p and
    z * target in one product; integer private labels add ``one_hot``.
    """
    _check_reduction(reduction)
    if len(logits.shape) != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, classes), got {logits.shape}")
    n, classes = logits.shape
    target_shape = target.shape if isinstance(target, Tensor) else np.shape(target)
    if tuple(target_shape) == (n,):
        target = one_hot(target, classes)
    elif tuple(target_shape) != (n, classes):
        raise ValueError(f"cross_entropy: target of shape {tuple(target_shape)} for logits of shape "
                         f"{logits.shape}: give integer labels ({n},) or one-hot rows ({n}, {classes})")
    if not isinstance(logits, PrivateTensor):
        logits = as_private(logits, target._ctx) if isinstance(target, PrivateTensor) else logits
    return _cross_entropy(logits, target, reduction=reduction)


@custom_gradient
def _cross_entropy(logits, target, reduction: str):
    if not isinstance(logits, PrivateTensor):     # public logits and target: NumPy
        x, t = plain(logits), plain(target)
        z = x - x.max(axis=1, keepdims=True)
        s = np.exp(z).sum(axis=1, keepdims=True)
        per_sample = PublicTensor((np.log(s) - (z * t).sum(axis=1, keepdims=True)).reshape(-1))
        return _reduce(per_sample, reduction), lambda g: (None, None)
    exact = families.of(logits._ctx).exact
    classes = logits.shape[1]
    top = classes if exact else 3 * classes
    z = logits - maximum(logits, axis=1, keepdims=True)
    e = _exp_nonpositive(z, 0 if exact else 2)
    s = e.sum(axis=1, keepdims=True)
    log_s, inverse = _on_interval(s, 1, top, ("log", "reciprocal"))
    if isinstance(target, PrivateTensor):      # both products in one exchange
        both = stack([e, z]) * stack([inverse * np.ones((1, classes)), target])
        p, chosen = both[0], both[1]
    else:
        p, chosen = e * inverse, z * target
    per_sample = (log_s - chosen.sum(axis=1, keepdims=True)).reshape(-1)

    def grad(g):
        d = p - target                  # (softmax - target) / N for a mean, as in _per_term
        if reduction == "mean" and len(d) > 1:
            d = d * (1.0 / len(d))
        return (d * (g.reshape(-1, 1) if reduction == "none" else g), None)

    return _reduce(per_sample, reduction), grad


# ---- binary cross-entropy on logits --------------------------------------------------------------------
def binary_cross_entropy_with_logits(logits: Tensor, target, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of sigmoid(``logits``) against ``target`` (0/1 or probabilities, the
    logits' shape), private or public.

    Per element: relu(x) - x y + log(1 + e^-|x|), |x| = 2 relu(x) - x, the exp and the log Chebyshev
    series on [-16, 0] and [1, 3] (within 2^-20 + a few units). securenn: exact relu, accurate for
    every x; pond: relu's polynomial with bound 16 (error 0.07) and no clamp, so |x| <= 16. Gradient:
    (sigmoid(x) - y) / count for "mean" (sigmoid within 3.2e-5 + 8 units), one product with g.
    Cost per element: relu (1 comparison), exp, the series, sigmoid, two products.
    """
    _check_reduction(reduction)
    target_shape = target.shape if isinstance(target, Tensor) else np.shape(target)
    if tuple(target_shape) != tuple(logits.shape):
        raise ValueError(f"binary_cross_entropy_with_logits: target of shape {tuple(target_shape)} for "
                         f"logits of shape {logits.shape}: they must match")
    if not isinstance(logits, PrivateTensor) and isinstance(target, PrivateTensor):
        logits = as_private(logits, target._ctx)
    return _binary_cross_entropy(logits, target, reduction=reduction)


@custom_gradient
def _binary_cross_entropy(logits, target, reduction: str):
    if not isinstance(logits, PrivateTensor):
        x, y = plain(logits), plain(target)
        per_element = PublicTensor(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
        return _reduce(per_element, reduction), lambda g: (None, None)
    # Pond's polynomial needs the interval; under securenn a bound would be a promise on the logits
    positive = relu(logits, bound=None if families.of(logits._ctx).exact else 16)
    magnitude = positive * 2 - logits
    [log_term] = _on_interval(_exp_nonpositive(-magnitude, 0) + 1.0, 1, 2, ("log",))
    softplus = positive + log_term
    per_element = softplus - logits * target

    def grad(g):
        return (_per_term(sigmoid(logits) - target, reduction) * g, None)

    return _reduce(per_element, reduction), grad


# ---- mean squared error --------------------------------------------------------------------------------
def mse_loss(output: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean (or sum) of (output - target)^2 over every element, output and target of one shape.
    One product for the value; gradient 2 (output - target) / count, local given g."""
    _check_reduction(reduction)
    target_shape = target.shape if isinstance(target, Tensor) else np.shape(target)
    if tuple(target_shape) != tuple(output.shape):
        raise ValueError(f"mse_loss: target of shape {tuple(target_shape)} for output of shape "
                         f"{output.shape}: they must match")
    return _squared_error(output, target, reduction=reduction)


@custom_gradient
def _squared_error(output, target, reduction: str):
    d = output - target
    per_element = d * d

    def grad(g):
        twice = _per_term(d * 2.0, reduction) * g
        return (twice, -twice)

    return _reduce(per_element, reduction), grad
