"""NumPy's ufuncs on tensors: the tensor operator each binary ufunc stands for (``ndarray (op)
tensor`` reaches a tensor as a ufunc call), and what to write instead of a ufunc that cannot compute
on a private tensor's shares. Data and messages only; ``Tensor.__array_ufunc__`` (mpcnp.tensor) uses
them."""
from __future__ import annotations

import numpy as np

__all__ = ["OPERATORS", "refusal"]

# The operator's method names: the tensor's own for ``tensor (op) x`` and its reflection for
# ``x (op) tensor``.
OPERATORS = {
    "add": ("__add__", "__radd__"), "subtract": ("__sub__", "__rsub__"), "multiply": ("__mul__", "__rmul__"),
    "matmul": ("__matmul__", "__rmatmul__"), "divide": ("__truediv__", "__rtruediv__"),
    "less": ("__lt__", "__gt__"), "less_equal": ("__le__", "__ge__"), "greater": ("__gt__", "__lt__"),
    "greater_equal": ("__ge__", "__le__"), "equal": ("__eq__", "__eq__"), "not_equal": ("__ne__", "__ne__"),
    "power": ("__pow__", "__rpow__"),
}
_HINTS = {
    "exp": "mp.exp(x)", "log": "mp.log(x)", "sqrt": "mp.sqrt(x) (or mp.rsqrt(x) for 1 / sqrt(x))",
    "absolute": "abs(x) or mp.abs(x)", "fabs": "abs(x) or mp.abs(x)", "sign": "mp.sign(x)",
    "maximum": "mp.maximum(a, b)", "minimum": "mp.minimum(a, b)", "fmax": "mp.maximum(a, b)",
    "fmin": "mp.minimum(a, b)", "clip": "mp.clip(x, lo, hi)", "tanh": "mp.tanh(x)",
    "reciprocal": "mp.reciprocal(x)", "square": "x * x or x ** 2", "negative": "-x",
    "positive": "x", "add": "x + y (x.sum() for a sum)", "maximum.reduce": "x.max()",
    "minimum.reduce": "x.min()", "true_divide": "x / c for a public c, mp.divide(x, y) for a private y",
    "divide": "x / c for a public c, mp.divide(x, y) for a private y", "logaddexp": "mp.log(mp.exp(a) + mp.exp(b))",
}


def refusal(ufunc: np.ufunc, method: str) -> TypeError:
    """The error for ``ufunc`` (called by ``method``) on a private tensor, naming what to use instead."""
    name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
    # a method's own hint first (np.maximum.reduce: x.max()), else the ufunc's
    hint = _HINTS.get(name) or _HINTS.get(ufunc.__name__,
                                          "the mpcnp functions of docs/api.md (mp.exp, mp.log, mp.sqrt, mp.abs, ...)")
    return TypeError(f"numpy.{name} cannot compute on a private tensor (its shares are not its values): "
                     f"use {hint}")
