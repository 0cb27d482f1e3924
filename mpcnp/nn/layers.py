"""The layers of mpcnp.nn: each has a private-or-public ``__call__`` and a NumPy ``forward_plain``."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

import mpcnp as mp


class Module(ABC):
    """A layer: ``params`` (name -> ndarray, or None where the values are unknown to this party)."""

    params: dict[str, np.ndarray | None] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    @abstractmethod
    def __call__(self, x):
        """The forward pass on private or public tensors."""

    @abstractmethod
    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        """The same forward pass on a NumPy array."""

    def private(self, owner: str) -> "Module":
        """A copy whose parameters are private tensors shared by ``owner`` (call inside mp.run)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.params = {name: mp.private(lambda v=value: _require(v, name), owner=owner)
                        for name, value in self.params.items()}
        return clone

    def load(self, params: dict[str, np.ndarray]) -> "Module":
        """Set parameter values (the owner's copy), checking names and shapes."""
        for name, value in params.items():
            if name not in self.params:
                raise KeyError(f"{type(self).__name__} has no parameter {name!r}")
            expected = self.shapes[name]
            value = np.asarray(value, dtype=np.float64)
            if value.shape != expected:
                raise ValueError(f"{type(self).__name__}.{name}: expected shape {expected}, got {value.shape}")
            self.params[name] = value
        return self


def _require(value, name):
    if value is None:
        raise ValueError(f"parameter {name!r} has no value on its owner: call load() there")
    return value


class Dense(Module):
    """y = x @ weight + bias, with weight (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int):
        self.shapes = {"weight": (in_features, out_features), "bias": (out_features,)}
        self.params = {"weight": None, "bias": None}

    def __call__(self, x):
        return x @ self.params["weight"] + self.params["bias"]

    def forward_plain(self, x):
        return x @ self.params["weight"] + self.params["bias"]


class Conv2d(Module):
    """NCHW convolution with weight (out, in, k, k) and bias (out,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding=0):
        self.shapes = {"weight": (out_channels, in_channels, kernel, kernel), "bias": (out_channels,)}
        self.params = {"weight": None, "bias": None}
        self.stride, self.padding = stride, padding

    def __call__(self, x):
        y = mp.conv2d(x, self.params["weight"], stride=self.stride, padding=self.padding)
        return y + self.params["bias"].reshape(-1, 1, 1)

    def forward_plain(self, x):
        y = mp.conv2d(mp.public(x), mp.public(self.params["weight"]), stride=self.stride,
                      padding=self.padding).value
        return y + self.params["bias"].reshape(-1, 1, 1)


class ReLU(Module):
    """Exact under protocol="securenn"; under protocol="pond", Pond's polynomial, accurate for inputs
    in [-bound, bound] (``mp.relu``)."""

    def __init__(self, bound: int = 8):
        self.params, self.bound = {}, bound

    def __call__(self, x):
        return mp.relu(x, self.bound)

    def forward_plain(self, x):
        return np.maximum(x, 0.0)


class _Pool2d(Module):
    """Pooling over kernel x kernel windows of NCHW input; stride defaults to the kernel."""

    def __init__(self, kernel: int, stride: int | None = None):
        self.params, self.kernel, self.stride = {}, kernel, stride

    def __call__(self, x):
        return self._pool(x, self.kernel, self.stride)

    def forward_plain(self, x):
        return self._pool(x, self.kernel, self.stride).value


class MaxPool2d(_Pool2d):
    _pool = staticmethod(mp.maxpool2d)


class AvgPool2d(_Pool2d):
    _pool = staticmethod(mp.avgpool2d)


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def __init__(self):
        self.params = {}

    def __call__(self, x):
        return x.reshape(x.shape[0], -1)

    def forward_plain(self, x):
        return x.reshape(x.shape[0], -1)


class Sequential(Module):
    """Layers applied in order."""

    def __init__(self, *layers: Module):
        self.layers: Sequence[Module] = list(layers)
        self.params = {}

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_plain(self, x):
        for layer in self.layers:
            x = layer.forward_plain(np.asarray(x, dtype=np.float64))
        return x

    def private(self, owner: str) -> "Sequential":
        return Sequential(*(layer.private(owner) for layer in self.layers))

    def load(self, params: Sequence[dict]) -> "Sequential":
        """One dict of parameters per layer (empty for layers without any)."""
        if len(params) != len(self.layers):
            raise ValueError(f"expected parameters for {len(self.layers)} layers, got {len(params)}")
        for layer, values in zip(self.layers, params):
            if values:
                layer.load(values)
        return self
