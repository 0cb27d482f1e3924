"""The operations the matrix measures: how to parse a size, make inputs, run the op on private
tensors and on plaintext, and how accurate the result must be.

Inputs are drawn already on the fixed-point grid (multiples of 2^-16), so sharing them is exact and
the error against NumPy on the same values is the protocol's own: one truncation's unit for a
product, nothing for SecureNN's exact comparisons, the documented approximation error for Pond's
polynomials. Ranges: [-1, 1] for products, [-8, 8] (Pond's default ReLU interval) for comparisons.

Size labels (``parse``): matmul "N" (N x N by N x N) or "MxNxV"; multiply "N" (1e6 allowed);
conv2d "H,F,I,O" (an H x H image with I channels, O filters of F x F, valid, as SecureNN's Table 8);
drelu / relu "N" or "AxB" (A * B elements); maxpool2d "HxWxC" with 2 x 2 windows or "HxWxC/K" with
K x K windows; network and network_nn "A/1" (network and batch).

Two forms of SecureNN's networks A-D: ``network`` on the functional API (benchmarks/networks_functional.py)
with every input fresh in every repetition, weights included, as SecureNN's published traffic counts
them; ``network_nn`` built with ``mpcnp.nn`` (benchmarks/networks.py, with Sequential's rewrites and,
under Pond, ReLU bounds calibrated on the owner's data), its weights shared once before the
repetitions, so that after the warm-up their Beaver masks are reused, as a deployed model's are.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import mpcnp as mp
from benchmarks import networks, networks_functional
from mpcnp import nn
from mpcnp.runtime.context import SERVER0

nets = networks_functional


@functools.lru_cache(maxsize=None)
def _nn_model(name: str, protocol: str) -> nn.Sequential:
    """benchmarks/networks.py's network with its random weights; under Pond its ReLU bounds sized on
    64 images of the owner's, as that module does (every party builds the same architecture). Built
    once per process: the NumPy reference then times the forward pass alone."""
    model = networks.random_model(name, seed=0)
    if protocol == "pond":
        nn.calibrate(model, np.random.default_rng(2).uniform(0, 1, networks.input_shape(name, 64)))
    return model


def _nn_images(rng: np.random.Generator, dims: dict) -> list[np.ndarray]:
    return [np.round(rng.uniform(0, 1, networks.input_shape(dims["name"], dims["batch"])) / ULP) * ULP]

FRAC_BITS = 16
ULP = 2.0 ** -FRAC_BITS


def grid(rng: np.random.Generator, shape, bound: float) -> np.ndarray:
    """Uniform values in [-bound, bound] on the 2^-16 grid (encoded exactly)."""
    top = int(bound * 2 ** FRAC_BITS)
    return rng.integers(-top, top + 1, size=shape).astype(np.float64) * ULP


SIZE_FORMATS = {
    "matmul": "N or MxNxV", "multiply": "N", "conv2d": "H,F,I,O", "drelu": "N or AxB", "relu": "N or AxB",
    "maxpool2d": "HxWxC or HxWxC/K", "network": "A/1 .. D/128 (network/batch)",
    "network_nn": "A/1 .. D/128 (network/batch)"}


def _count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise ValueError(f"expected a positive whole number, got {text!r}")
    return int(value)


def _dims(label: str, pattern: str, names: tuple[str, ...], op: str) -> dict[str, int]:
    match = re.fullmatch(pattern, label)
    if match is None:
        raise ValueError("no match")
    return {name: _count(value) for name, value in zip(names, match.groups()) if value is not None}


def _matmul_dims(label: str) -> dict[str, int]:
    if "x" not in label:
        n = _count(label)
        return {"m": n, "n": n, "v": n}
    return _dims(label, r"(\d+)x(\d+)x(\d+)", ("m", "n", "v"), "matmul")


def _elements(label: str, op: str) -> dict[str, int]:
    if "x" in label:
        a, b = _dims(label, r"(\d+)x(\d+)", ("a", "b"), op).values()
        return {"n": a * b}
    return {"n": _count(label)}


def _maxpool_dims(label: str) -> dict[str, int]:
    dims = _dims(label, r"(\d+)x(\d+)x(\d+)(?:/(\d+))?", ("h", "w", "c", "k"), "maxpool2d")
    dims.setdefault("k", 2)
    if dims["h"] % dims["k"] or dims["w"] % dims["k"]:
        raise ValueError(f"H and W must be multiples of the window {dims['k']}")
    return dims


def _network_dims(label: str) -> dict[str, Any]:
    match = re.fullmatch(r"([A-D])/(\d+)", label)
    if match is None:
        raise ValueError("the network is one of A, B, C, D")
    return {"name": match[1], "batch": _count(match[2])}


def _conv_shapes(d) -> tuple[tuple, tuple, tuple]:
    out = d["h"] - d["f"] + 1
    return (1, d["i"], d["h"], d["h"]), (d["o"], d["i"], d["f"], d["f"]), (1, d["o"], out, out)


def _plain_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w)


def _plain_maxpool(x: np.ndarray, k: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


@dataclass(frozen=True)
class Operation:
    """One operation of the matrix.

    ``inputs(rng, dims)`` gives the plaintext operands; ``private(dims, *tensors)`` and
    ``plain(dims, *arrays)`` compute it on private tensors and in NumPy; ``ring_macs(dims)`` is the
    plaintext op's count of multiply-adds (the floor's compute term); ``tolerance(protocol,
    truncation, dims)`` is (atol, guaranteed): the largest error the docs promise, or None where
    they promise none (Pond's comparisons near a tie), and whether it holds always or only but for
    local truncation's documented failure rate.
    """

    name: str
    summary: str
    read_size: Callable[[str], dict]
    inputs: Callable[[np.random.Generator, dict], list]
    private: Callable[..., Any]
    plain: Callable[..., np.ndarray]
    ring_macs: Callable[[dict], int]
    tolerance: Callable[[str, str, dict], tuple[float | None, bool]]
    sizes: tuple[str, ...]          # the full run's sizes
    quick: tuple[str, ...]          # --quick's sizes
    # untimed setup on every party inside the run, prepare(dims, protocol) -> state (a model shared
    # once); the operation is then private(dims, state, *tensors)
    prepare: Callable[[dict, str], Any] | None = None

    def parse(self, label: str) -> dict[str, Any]:
        """The dimensions a size label stands for; ValueError naming the operation and its formats."""
        try:
            return self.read_size(label)
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot read size {label!r} ({exc}); formats: "
                             f"{SIZE_FORMATS[self.name]}") from None


def _product_tolerance(protocol: str, truncation: str, dims) -> tuple[float, bool]:
    # one truncation of the exact ring product: within one unit; local truncation fails (garbage)
    # with probability about |v| 2^(2f - 64) per element, exact truncation never
    return 1.0 * ULP + 1e-12, truncation == "exact"


def _exact_comparison(protocol: str, truncation: str, dims) -> tuple[float | None, bool]:
    # SecureNN: exact (no truncation involved); Pond: approx.step is wrong near 0 by design
    return (0.0, True) if protocol == "securenn" else (None, False)


def _relu_tolerance(protocol: str, truncation: str, dims) -> tuple[float | None, bool]:
    if protocol == "securenn":
        return 0.0, True
    # approx.relu's documented error on [-B, B] at B = 8: 0.0044 B + 10 B units (its truncations)
    return 0.0044 * 8 + 10 * 8 * ULP, truncation == "exact"


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation(
        "matmul", "private matrix product (Pond: Beaver triple, then truncation)", _matmul_dims,
        lambda rng, d: [grid(rng, (d["m"], d["n"]), 1.0), grid(rng, (d["n"], d["v"]), 1.0)],
        lambda d, a, b: a @ b, lambda d, a, b: a @ b,
        lambda d: d["m"] * d["n"] * d["v"], _product_tolerance,
        ("64", "256", "784x128x10", "1x500x100", "1024"), ("16", "1x50x10")),
    Operation(
        "multiply", "private elementwise product", lambda s: _elements(s, "multiply"),
        lambda rng, d: [grid(rng, d["n"], 1.0), grid(rng, d["n"], 1.0)],
        lambda d, a, b: a * b, lambda d, a, b: a * b,
        lambda d: d["n"], _product_tolerance, ("1e4", "1e6"), ("1000",)),
    Operation(
        "conv2d", "private 2-D convolution, conv-shaped triples", lambda s: _dims(
            s, r"(\d+),(\d+),(\d+),(\d+)", ("h", "f", "i", "o"), "conv2d"),
        lambda rng, d: [grid(rng, _conv_shapes(d)[0], 1.0), grid(rng, _conv_shapes(d)[1], 1.0)],
        lambda d, x, w: mp.conv2d(x, w), lambda d, x, w: _plain_conv(x, w),
        lambda d: math.prod(_conv_shapes(d)[2]) * d["f"] ** 2 * d["i"], _product_tolerance,
        ("28,5,1,20", "28,3,1,20", "8,5,16,50"), ("12,3,2,4",)),
    Operation(
        "drelu", "x >= 0 (SecureNN: DReLU; Pond: polynomial step)", lambda s: _elements(s, "drelu"),
        lambda rng, d: [grid(rng, d["n"], 8.0)],
        lambda d, x: x >= 0, lambda d, x: (x >= 0).astype(np.float64),
        lambda d: d["n"], _exact_comparison, ("64x16", "128x128", "576x20"), ("100",)),
    Operation(
        "relu", "max(x, 0) (SecureNN: exact; Pond: polynomial on [-8, 8])", lambda s: _elements(s, "relu"),
        lambda rng, d: [grid(rng, d["n"], 8.0)],
        lambda d, x: mp.relu(x), lambda d, x: np.maximum(x, 0.0),
        lambda d: d["n"], _relu_tolerance, ("64x16", "128x128", "576x20", "1e5"), ("100", "1000")),
    Operation(
        "maxpool2d", "max pooling of 1 x C x H x W, K x K windows", _maxpool_dims,
        lambda rng, d: [grid(rng, (1, d["c"], d["h"], d["w"]), 8.0)],
        lambda d, x: mp.maxpool2d(x, d["k"]), lambda d, x: _plain_maxpool(x, d["k"]),
        lambda d: d["c"] * d["h"] * d["w"], _exact_comparison,
        ("24x24x16", "24x24x20", "8x8x50/4"), ("8x8x4",)),
    Operation(
        "network", "SecureNN's networks A-D, inference (functional API)", _network_dims,
        lambda rng, d: nets.inputs(rng, d["name"], d["batch"]),
        lambda d, x, *params: nets.forward(d["name"], x, params, mp),
        lambda d, x, *params: nets.forward_plain(d["name"], x, params),
        lambda d: nets.macs(d["name"], d["batch"]), lambda p, t, d: (None, False),
        ("A/1", "A/128", "B/1", "B/128", "C/1", "C/128", "D/1", "D/128"), ()),
    Operation(
        "network_nn", "SecureNN's networks A-D, inference (mpcnp.nn, weights shared once)", _network_dims,
        _nn_images, lambda d, model, x: model(x), lambda d, x: _nn_model(d["name"], "securenn").forward_plain(x),
        lambda d: nets.macs(d["name"], d["batch"]), lambda p, t, d: (None, False),
        ("A/1", "A/128", "B/1", "B/128", "C/1", "C/128", "D/1", "D/128"), (),
        prepare=lambda d, protocol: _nn_model(d["name"], protocol).private(SERVER0)),
)}


def operation(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ValueError(f"unknown operation {name!r}; choose from {', '.join(OPERATIONS)}") from None
