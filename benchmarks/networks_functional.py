"""SecureNN's networks A-D (PoPETs 2019, Figure 4 and Appendix C; MNIST shapes) written with the
functional API, with random weights, for the matrix's "network" rows.

The paper's accounting: every run masks the weights afresh, as SecureNN counts its bytes.
``benchmarks/networks.py`` builds the same networks with ``mpcnp.nn`` (the matrix's "network_nn"
rows: Sequential's rewrites, and the weights' masks reused as a deployed model reuses them).

- A: dense 784-128, ReLU, dense 128-128, ReLU, dense 128-10.
- B: conv 5x5 1->16, maxpool 2, ReLU; conv 5x5 16->16, maxpool 2, ReLU; dense 256-100, ReLU, dense 100-10.
- C: conv 5x5 1->20, maxpool 2, ReLU; conv 5x5 20->50, maxpool 2, ReLU; dense 800-500, ReLU, dense 500-10.
- D: conv 5x5 1->5, stride 2, "same" padding (14x14x5 = 980), ReLU; dense 980-100, ReLU, dense 100-10.

Max pooling comes before ReLU: the two commute exactly and pooling first compares a quarter as many
values. Inputs are MNIST-like images in [0, 1]; weights are uniform with scale 1 / sqrt(fan-in), so
activations stay of order one (inside Pond's ReLU interval [-8, 8]).
"""
from __future__ import annotations

import math

import numpy as np

FRAC_BITS = 16

# layer kinds: ("dense", in, out), ("conv", in, out, kernel, stride, padding), ("pool", 2), ("relu",)
LAYERS = {
    "A": [("dense", 784, 128), ("relu",), ("dense", 128, 128), ("relu",), ("dense", 128, 10)],
    "B": [("conv", 1, 16, 5, 1, 0), ("pool", 2), ("relu",), ("conv", 16, 16, 5, 1, 0), ("pool", 2),
          ("relu",), ("dense", 256, 100), ("relu",), ("dense", 100, 10)],
    "C": [("conv", 1, 20, 5, 1, 0), ("pool", 2), ("relu",), ("conv", 20, 50, 5, 1, 0), ("pool", 2),
          ("relu",), ("dense", 800, 500), ("relu",), ("dense", 500, 10)],
    "D": [("conv", 1, 5, 5, 2, "same"), ("relu",), ("dense", 980, 100), ("relu",), ("dense", 100, 10)],
}


def _on_grid(values: np.ndarray) -> np.ndarray:
    return np.round(values * 2 ** FRAC_BITS) / 2 ** FRAC_BITS


def inputs(rng: np.random.Generator, name: str, batch: int) -> list[np.ndarray]:
    """[images, then each parametrised layer's weight and bias], on the fixed-point grid."""
    shape = (batch, 784) if name == "A" else (batch, 1, 28, 28)
    arrays = [_on_grid(rng.uniform(0.0, 1.0, shape))]
    for layer in LAYERS[name]:
        if layer[0] == "dense":
            _, fan_in, out = layer
            weight_shape, bias_shape = (fan_in, out), (out,)
        elif layer[0] == "conv":
            _, cin, out, k = layer[:4]
            fan_in, weight_shape, bias_shape = cin * k * k, (out, cin, k, k), (out, 1, 1)
        else:
            continue
        scale = 1.0 / math.sqrt(fan_in)
        arrays += [_on_grid(rng.uniform(-scale, scale, weight_shape)), _on_grid(rng.uniform(-0.1, 0.1, bias_shape))]
    return arrays


def forward(name: str, x, params, mp):
    """The network on private (or public) tensors through the functional API ``mp``."""
    params = list(params)
    for layer in LAYERS[name]:
        if layer[0] == "dense":
            if x.ndim > 2:
                x = x.reshape(x.shape[0], -1)
            x = x @ params.pop(0) + params.pop(0)
        elif layer[0] == "conv":
            x = mp.conv2d(x, params.pop(0), stride=layer[4], padding=layer[5]) + params.pop(0)
        elif layer[0] == "pool":
            x = mp.maxpool2d(x, layer[1])
        else:
            x = mp.relu(x)
    return x


def _conv(x: np.ndarray, w: np.ndarray, stride: int, padding) -> np.ndarray:
    k = w.shape[2]
    if padding == "same":  # TensorFlow's split: the extra row and column go after
        out = math.ceil(x.shape[2] / stride)
        total = max((out - 1) * stride + k - x.shape[2], 0)
        pad = (total // 2, total - total // 2)
    else:
        pad = (padding, padding)
    x = np.pad(x, ((0, 0), (0, 0), pad, pad))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w)


def forward_plain(name: str, x: np.ndarray, params) -> np.ndarray:
    """The same network in float64 NumPy."""
    params = list(params)
    for layer in LAYERS[name]:
        if layer[0] == "dense":
            x = x.reshape(x.shape[0], -1) @ params.pop(0) + params.pop(0)
        elif layer[0] == "conv":
            x = _conv(x, params.pop(0), layer[4], layer[5]) + params.pop(0)
        elif layer[0] == "pool":
            n, c, h, w = x.shape
            k = layer[1]
            x = x.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))
        else:
            x = np.maximum(x, 0.0)
    return x


def macs(name: str, batch: int) -> int:
    """Multiply-adds of the plaintext forward pass (dense and conv layers)."""
    total, size = 0, 28
    for layer in LAYERS[name]:
        if layer[0] == "dense":
            total += batch * layer[1] * layer[2]
        elif layer[0] == "conv":
            _, cin, out, k, stride, padding = layer
            size = math.ceil(size / stride) if padding == "same" else (size - k) // stride + 1
            total += batch * out * size * size * cin * k * k
        elif layer[0] == "pool":
            size //= layer[1]
    return total
