"""Elementwise and row-wise activations: ReLU, Sigmoid, Tanh, Softmax.

Under ``protocol="securenn"`` ReLU is exact (``mp.relu``: 3 rounds, 221 bytes per element, or with a
``bound`` a promise on |x| and about 3k + 29 bytes for k = log2(bound 2^f) + 2) and Sigmoid, Tanh and
Softmax clamp their inputs exactly and are then accurate everywhere. Under ``protocol="pond"`` each is
a polynomial accurate on an interval (stated by ``mp.relu``, ``mp.sigmoid``, ``mp.tanh``,
``mp.softmax``): ReLU's interval [-bound, bound] is a hyperparameter of the layer, sized on the
owner's data by ``nn.calibrate``; the others' intervals are fixed and ``nn.calibrate`` checks the
owner's data against them.
"""
from __future__ import annotations

import numpy as np

import mpcnp as mp
from mpcnp.nn.module import Module, plain_input

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax", "POND_INTERVALS"]

# The input intervals on which Pond's polynomials are accurate (mpcnp.approx's docstrings).
POND_INTERVALS = {"Sigmoid": (-10.0, 10.0), "Tanh": (-5.0, 5.0)}
MAX_RELU_BOUND = 2 ** 20


class ReLU(Module):
    """max(x, 0). ``bound``: None (the default) or an integer in [1, 2^20], a bound on |x| that
    ``nn.calibrate`` sizes on the owner's data. Pond: its polynomial's interval [-bound, bound] (None:
    8; error 0.0044 bound inside, garbage outside). SecureNN: without a bound exact for every input;
    with one, a promise that |x| < bound, which makes each comparison cheaper (``mp.relu``: 101
    instead of 221 bytes for bound 64 at frac_bits 16) and wrong for some inputs beyond, silently
    (``mp.run(..., validate=True)`` names them)."""

    def __init__(self, bound: int | None = None) -> None:
        super().__init__()
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, np.integer))
                                  or not 1 <= bound <= MAX_RELU_BOUND):
            raise ValueError(f"ReLU bound must be None or an integer in [1, 2^20], got {bound!r}")
        self.bound = None if bound is None else int(bound)

    def forward(self, x):
        return mp.relu(x, bound=self.bound)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(plain_input(x), 0.0)

    def extra_repr(self) -> str:
        return "" if self.bound is None else f"bound={self.bound}"


class Sigmoid(Module):
    """1 / (1 + e^-x) (``mp.sigmoid``: Pond accurate on [-10, 10])."""

    def forward(self, x):
        return mp.sigmoid(x)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        return 0.5 + 0.5 * np.tanh(x / 2)   # = 1 / (1 + e^-x), without overflow for large -x


class Tanh(Module):
    """tanh(x) (``mp.tanh``: Pond accurate on [-5, 5])."""

    def forward(self, x):
        return mp.tanh(x)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(plain_input(x))


class Softmax(Module):
    """e^x / sum(e^x) along ``axis`` (``mp.softmax``: under Pond needs x - mean(x) in [-16, 6] along
    the axis)."""

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = int(axis)

    def forward(self, x):
        return mp.softmax(x, axis=self.axis)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        if x.size == 0:
            return x.copy()
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        return e / e.sum(axis=self.axis, keepdims=True)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
