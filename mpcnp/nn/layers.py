"""The layers with parameters: Dense, Conv2d, BatchNorm (inference) and Affine.

Each takes private or public inputs in ``forward`` (via ``import mpcnp as mp`` only) and has a
NumPy float64 ``forward_plain`` written independently of mpcnp's kernels, so that tests compare the
private computation with a separate reference. Costs are those of the operations used: a private
input times private weights is one Beaver product (PETS Table 1: 2 rounds by the paper's count,
8 (2mn + 2nv + mv) bytes for an m x n by n x v matmul; the weights' mask is opened once and reused by
every later batch); biases and public weights are local.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import mpcnp as mp
from mpcnp.nn.module import Module, plain_input

__all__ = ["Dense", "Conv2d", "BatchNorm", "Affine", "conv_padding"]


def int_pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints (a kernel, a stride) as a pair; ValueError naming ``name`` otherwise."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else \
        tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_features(layer: str, x, axis: int, expected: int, what: str) -> None:
    if len(x.shape) < 2 or x.shape[axis] != expected:
        raise ValueError(f"{layer} expects inputs with {expected} {what} on axis {axis} (batch first), "
                         f"got shape {tuple(x.shape)}")


class Dense(Module):
    """y = x @ weight + bias, weight (in_features, out_features), bias (out_features,).

    Input (N, ..., in_features). Cost with private x and private weight: one Beaver matmul then a
    truncation; the bias addition is local.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.declare("weight", (self.in_features, self.out_features))
        self.declare("bias", (self.out_features,))

    def forward(self, x):
        _check_features("Dense", x, -1, self.in_features, "features")
        return x @ self.param("weight") + self.param("bias")

    def forward_relu(self, x, bound: float | None = None):
        """relu(forward(x)) in one step (``mp.dense_relu``: the product's truncation fused into the ReLU)."""
        _check_features("Dense", x, -1, self.in_features, "features")
        return mp.dense_relu(x, self.param("weight"), self.param("bias"), bound=bound)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        _check_features("Dense", x, -1, self.in_features, "features")
        return x @ self.param("weight") + self.param("bias")

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


def conv_padding(padding, size: tuple[int, int], kernel: tuple[int, int],
                 stride: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) for ``padding``: an int, a pair (ph, pw), a pair of pairs
    ((top, bottom), (left, right)), "valid", or "same" (output ceil(size / stride); an odd total is
    split with the extra row or column after, as TensorFlow and ONNX's SAME_UPPER do)."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0), (0, 0)
        if padding.lower() != "same":
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list)) for p in padding):
        (top, bottom), (left, right) = (int_pair(p, "padding") for p in padding)
    else:
        ph, pw = int_pair(padding, "padding")
        top, bottom, left, right = ph, ph, pw, pw
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return (top, bottom), (left, right)


class Conv2d(Module):
    """2-D convolution (cross-correlation) of NCHW inputs: weight (out, in, kh, kw), bias (out,).

    ``kernel``: an int or (kh, kw); ``stride``: an int or (sh, sw); ``padding``: an int, (ph, pw),
    ((top, bottom), (left, right)), "valid" or "same" (see ``conv_padding``). Cost with private
    input and weight: one Beaver product with conv-shaped masks (input- and kernel-sized, not
    im2col-sized) and a truncation; asymmetric padding is a local zero pad first.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel = int_pair(kernel, "kernel")
        self.stride = int_pair(stride, "stride")
        if min(self.kernel) < 1 or min(self.stride) < 1:
            raise ValueError(f"Conv2d: kernel and stride must be positive, got {kernel!r} and {stride!r}")
        conv_padding(padding, (1, 1), self.kernel, self.stride)  # validates now, not at the first call
        self.padding = padding
        self.declare("weight", (self.out_channels, self.in_channels) + self.kernel)
        self.declare("bias", (self.out_channels,))

    def _pads(self, x) -> tuple[tuple[int, int], tuple[int, int]]:
        if len(x.shape) != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects NCHW inputs with {self.in_channels} channels, got shape "
                             f"{tuple(x.shape)}")
        pads = conv_padding(self.padding, tuple(x.shape[2:]), self.kernel, self.stride)
        for n, (lo, hi), k in zip(x.shape[2:], pads, self.kernel):
            if n + lo + hi < k:
                raise ValueError(f"Conv2d: kernel {self.kernel} is larger than the padded input "
                                 f"{tuple(x.shape[2:])} + padding {pads}")
        return pads

    def forward(self, x):
        x, padding = self._padded(x)
        y = mp.conv2d(x, self.param("weight"), stride=self.stride, padding=padding)
        return y + self.param("bias").reshape(-1, 1, 1)

    def forward_relu(self, x, bound: float | None = None):
        """relu(forward(x)) in one step (``mp.conv2d_relu``: the product's truncation fused into the ReLU)."""
        x, padding = self._padded(x)
        return mp.conv2d_relu(x, self.param("weight"), self.param("bias"), stride=self.stride, padding=padding,
                              bound=bound)

    def _padded(self, x):
        """(the input, the padding mp.conv2d applies): mp.conv2d pads inside its kernel ("same" by the
        same rule as conv_padding; the Beaver mask covers the input, not the padded input) unless the
        padding is uneven, which ``mp.pad`` applies first."""
        (top, bottom), (left, right) = self._pads(x)
        if isinstance(self.padding, str) or (top == bottom and left == right):
            return x, (self.padding if isinstance(self.padding, str) else (top, left))
        return mp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))), 0

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        pads = self._pads(x)
        padded = np.pad(x, ((0, 0), (0, 0)) + pads)
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.kernel, axis=(2, 3))
        windows = windows[:, :, ::self.stride[0], ::self.stride[1]]       # (N, C, OH, OW, kh, kw)
        y = np.einsum("nchwij,ocij->nohw", windows, self.param("weight"))
        return y + self.param("bias").reshape(-1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
                f"padding={self.padding!r}")


def _channel_shape(x, axis: int, count: int) -> tuple[int, ...]:
    """The shape that broadcasts a (count,) vector along ``axis`` of ``x``."""
    ndim = len(x.shape)
    axis = axis % ndim if ndim else 0
    if ndim < 2 or x.shape[axis] != count:
        raise ValueError(f"expected {count} features on axis {axis} of an input of shape {tuple(x.shape)}")
    return (count,) + (1,) * (ndim - axis - 1)


class BatchNorm(Module):
    """Batch normalisation at inference: (x - running_mean) / sqrt(running_var + eps) * weight + bias
    along axis 1 (the channels of NCHW, the features of (N, F)).

    Parameters (PyTorch's names): weight, bias, running_mean, running_var, each (num_features,).
    In a ``Sequential``, a BatchNorm right after a Dense or Conv2d (Dropout between them allowed) is
    folded into that layer when the model is made private: the owner computes the folded weights in
    float64 before sharing, so it costs nothing at run time. Elsewhere ``private`` turns it into its
    affine map (an ``Affine``: scale and shift computed by the owner in float64, shared; one Beaver
    product per element). A public model applies the same affine map locally.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = int(num_features), float(eps)
        if not self.eps > 0:
            raise ValueError(f"BatchNorm: eps must be positive, got {eps}")
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.declare(name, (self.num_features,))

    def check_values(self, values: dict[str, np.ndarray], prefix: str = "") -> None:
        if np.any(values["running_var"] + self.eps <= 0):
            raise ValueError(f"parameter {prefix + 'running_var'!r}: running_var + eps must be positive")

    def affine_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) with BatchNorm(x) = x * scale + shift along axis 1, in float64."""
        scale = self.param("weight") / np.sqrt(self.param("running_var") + self.eps)
        return scale, self.param("bias") - self.param("running_mean") * scale

    def forward(self, x):
        scale, shift = self.affine_values()
        shape = _channel_shape(x, 1, self.num_features)
        return x * scale.reshape(shape) + shift.reshape(shape)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        x = plain_input(x)
        shape = _channel_shape(x, 1, self.num_features)
        centred = x - self.param("running_mean").reshape(shape)
        normalised = centred / np.sqrt(self.param("running_var").reshape(shape) + self.eps)
        return normalised * self.param("weight").reshape(shape) + self.param("bias").reshape(shape)

    def private(self, owner: str) -> "Affine":
        """Its affine map as an ``Affine`` along axis 1, scale and shift computed by ``owner``."""
        affine = Affine((self.num_features,), axis=1)
        affine._assign({"weight": _lazy(self, 0), "bias": _lazy(self, 1)})
        return affine.private(owner)

    def fold_into(self, layer: Module) -> Module:
        """``layer`` (a Dense or Conv2d producing num_features outputs) followed by this BatchNorm, as
        one layer of the same kind whose values are computed lazily, in float64, where they are read
        (only the owner reads them: ``private``)."""
        if not isinstance(layer, (Dense, Conv2d)):
            raise TypeError(f"BatchNorm folds only into Dense or Conv2d, not {type(layer).__name__}")
        outputs = layer.out_features if isinstance(layer, Dense) else layer.out_channels
        if outputs != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) cannot follow a layer with {outputs} outputs")

        def folded(name: str) -> Any:
            if layer._values["weight"] is None or self._values["weight"] is None:
                return None

            def compute() -> np.ndarray:
                scale, shift = self.affine_values()
                if name == "bias":
                    return layer.param("bias") * scale + shift
                weight = layer.param("weight")
                return weight * (scale if isinstance(layer, Dense) else scale.reshape(-1, 1, 1, 1))
            return compute

        return layer._with_values({"weight": folded("weight"), "bias": folded("bias")})

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _lazy(norm: BatchNorm, which: int):
    """The owner's scale (0) or shift (1) of ``norm``, computed when read; None without values."""
    if norm._values["weight"] is None:
        return None
    return lambda: norm.affine_values()[which]


class Affine(Module):
    """y = x * weight + bias, elementwise (either part optional).

    ``shape`` is the parameters' shape. With ``axis`` None they broadcast against the input as NumPy
    does (e.g. (C, 1, 1) per channel of NCHW, () one scalar); with ``axis`` given, ``shape`` must be
    (n,) and they apply along that axis. Cost with private x and weight: one Beaver product (the
    weight's mask opened once) and a truncation; the bias is local.
    """

    def __init__(self, shape: tuple[int, ...], axis: int | None = None, scale: bool = True,
                 shift: bool = True) -> None:
        super().__init__()
        self.shape, self.axis = tuple(int(d) for d in shape), axis
        if axis is not None and len(self.shape) != 1:
            raise ValueError(f"Affine along an axis needs a shape (n,), got {shape}")
        if not scale and not shift:
            raise ValueError("Affine needs a scale, a shift or both")
        self.scale, self.shift = scale, shift
        if scale:
            self.declare("weight", self.shape)
        if shift:
            self.declare("bias", self.shape)

    def _apply(self, x, weight, bias):
        if self.axis is not None:
            shape = _channel_shape(x, self.axis, self.shape[0])
            weight = None if weight is None else weight.reshape(shape)
            bias = None if bias is None else bias.reshape(shape)
        y = x if weight is None else x * weight
        return y if bias is None else y + bias

    def forward(self, x):
        return self._apply(x, self.param("weight") if self.scale else None,
                           self.param("bias") if self.shift else None)

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.forward(plain_input(x)), dtype=np.float64)

    def extra_repr(self) -> str:
        return f"{self.shape}, axis={self.axis}, scale={self.scale}, shift={self.shift}"
