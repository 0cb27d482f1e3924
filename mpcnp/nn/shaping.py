"""Layers without parameters that pool or reshape: MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten,
Reshape, Dropout (the identity at inference).

Pooling takes NCHW inputs. Average pooling is local on shares (a window sum and a division by the
window size). Max pooling compares: SecureNN's tournament, exact, kh * kw - 1 comparisons per window
(221 bytes each, fewer with a ``bound``) in ceil(log2(kh * kw)) sequential levels; Pond's step
polynomial, accurate for gaps in [-16, 16] (``mp.maxpool2d``).
"""
from __future__ import annotations

import math

import numpy as np

import mpcnp as mp
from mpcnp.nn.layers import int_pair
from mpcnp.nn.module import Module, plain_input

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Reshape", "Dropout"]


class _Pool2d(Module):
    """Pooling over kernel windows (an int or (kh, kw)) at ``stride`` (default: the kernel)."""

    def __init__(self, kernel, stride=None) -> None:
        super().__init__()
        self.kernel = int_pair(kernel, "kernel")
        self.stride = self.kernel if stride is None else int_pair(stride, "stride")
        if min(self.kernel + self.stride) < 1:
            raise ValueError(f"{type(self).__name__}: kernel and stride must be positive, got {kernel!r}, "
                             f"{stride!r}")

    def windows(self, x: np.ndarray) -> np.ndarray:
        """The (N, C, OH, OW, kh, kw) windows of a NumPy input, with a clear error for bad shapes."""
        x = plain_input(x)
        if x.ndim != 4 or x.shape[2] < self.kernel[0] or x.shape[3] < self.kernel[1]:
            raise ValueError(f"{type(self).__name__}{self.kernel} expects NCHW inputs at least as large as the "
                             f"window, got shape {x.shape}")
        view = np.lib.stride_tricks.sliding_window_view(x, self.kernel, axis=(2, 3))
        return view[:, :, ::self.stride[0], ::self.stride[1]]

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """The maximum of each window. ``pond_scale`` (a power of two, default 1): the inputs are divided
    by it before Pond's comparisons and the result multiplied back, so that the window gaps fall in
    the [-16, 16] where Pond's step is accurate; ``nn.calibrate`` sets it from the owner's data. A
    value other than 1 also costs log2(pond_scale) bits of precision under SecureNN.
    ``bound`` (None or a positive number; ``nn.calibrate`` sets it): a promise that every window
    value has |x| < bound, which SecureNN's comparisons honour (``mp.maxpool2d``: cheaper, and
    wrong for some windows beyond the bound, silently); Pond does not use it."""

    def __init__(self, kernel, stride=None, bound: float | None = None) -> None:
        super().__init__(kernel, stride)
        self.pond_scale = 1
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating))
                                  or not (math.isfinite(bound) and bound > 0)):
            raise ValueError(f"MaxPool2d bound must be None or a positive finite number, got {bound!r}")
        self.bound = None if bound is None else float(bound)

    def forward(self, x):
        if self.pond_scale == 1:
            return mp.maxpool2d(x, self.kernel, self.stride, bound=self.bound)
        # the scaling's truncation may move a value by a unit: the promise widens by as much
        unit = 2.0 ** -x.frac_bits if isinstance(x, mp.PrivateTensor) else 0.0
        bound = None if self.bound is None else self.bound / self.pond_scale + unit
        return mp.maxpool2d(x * (1.0 / self.pond_scale), self.kernel, self.stride, bound=bound) * self.pond_scale

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.bound is None else f", bound={self.bound:g}")

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return self.windows(x).max(axis=(4, 5))


class AvgPool2d(_Pool2d):
    """The mean of each window: local (a sum, then a division by kh * kw)."""

    def forward(self, x):
        return mp.avgpool2d(x, self.kernel, self.stride)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return self.windows(x).mean(axis=(4, 5))


class GlobalAvgPool2d(Module):
    """The mean over H and W of NCHW inputs, kept as (N, C, 1, 1) (ONNX's GlobalAveragePool and
    PyTorch's AdaptiveAvgPool2d(1)): local."""

    def forward(self, x):
        _check_nchw(x)
        # a sum and a division rather than Tensor.mean, which refuses an empty batch
        return x.sum(axis=(2, 3), keepdims=True) / (x.shape[2] * x.shape[3])

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        _check_nchw(x)
        return x.mean(axis=(2, 3), keepdims=True)


def _check_nchw(x) -> None:
    if len(x.shape) != 4 or x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"GlobalAvgPool2d expects non-empty NCHW inputs, got shape {tuple(x.shape)}")


class _Reshaping(Module):
    """A layer that only reshapes: ``shape_of(input shape)`` gives the output shape, the same for
    private, public and plaintext inputs."""

    def shape_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def forward(self, x):
        return x.reshape(*self.shape_of(tuple(x.shape)))

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        return x.reshape(self.shape_of(x.shape))


class Flatten(_Reshaping):
    """(d0, ..., dk) -> (d0 * ... * d(axis-1), d(axis) * ... * dk), as ONNX's Flatten; the default
    axis 1 keeps the batch: (N, ...) -> (N, prod(...))."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)

    def shape_of(self, shape: tuple[int, ...]) -> tuple[int, int]:
        if not 0 <= self.axis <= len(shape):
            raise ValueError(f"Flatten(axis={self.axis}) needs an input of at least {self.axis} dimensions, "
                             f"got shape {tuple(shape)}")
        return math.prod(shape[:self.axis]), math.prod(shape[self.axis:])

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Reshape(_Reshaping):
    """(N, ...) -> (N, *shape): ``shape`` is per sample (the batch is kept); one entry may be -1
    (inferred) and an entry 0 copies the input's size at that position (ONNX's rule)."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        if sum(d == -1 for d in self.shape) > 1 or any(d < -1 for d in self.shape):
            raise ValueError(f"Reshape: at most one -1 and no other negative size, got {shape!r}")

    def shape_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) < 1:
            raise ValueError("Reshape needs a batch dimension")
        sample = shape[1:]
        target = []
        for i, d in enumerate(self.shape):
            if d == 0:
                if i >= len(sample):
                    raise ValueError(f"Reshape{self.shape}: entry {i} is 0 (copy) but the input {shape} has no "
                                     f"size there")
                d = sample[i]
            target.append(d)
        size, known = math.prod(sample), math.prod(d for d in target if d != -1)
        if -1 in target:
            if known == 0 or size % known:
                raise ValueError(f"cannot reshape a sample of shape {sample} into {self.shape}")
            target[target.index(-1)] = size // known
        if math.prod(target) != size:
            raise ValueError(f"cannot reshape a sample of shape {sample} ({size} values) into {tuple(target)}")
        return (shape[0],) + tuple(target)

    def extra_repr(self) -> str:
        return f"{self.shape}"


class Dropout(Module):
    """The identity at inference (``p``, the training-time drop rate, is only recorded)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return x

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return plain_input(x).copy()

    def extra_repr(self) -> str:
        return f"p={self.p}"
