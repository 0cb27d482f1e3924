"""Running mpcnp.nn models privately in tests, and bounding their error from frac_bits."""
from __future__ import annotations

import numpy as np

import mpcnp as mp
from mpcnp import nn
from helpers import ULP, quantize

OWNER, CLIENT = "owner", "client"

# Largest error of each private activation on exact inputs under securenn (mpcnp.approx's docstrings:
# sigmoid within 4.5e-5 + 3.2e-5 + 8 units, tanh 9.1e-5 + 6.4e-5 + 14 units), and its Lipschitz constant.
ACTIVATION_ERRORS = {nn.ReLU: (0.0, 1.0), nn.Sigmoid: (7.7e-5 + 8 * ULP, 0.25), nn.Tanh: (1.55e-4 + 14 * ULP, 1.0)}


def random_state(model: nn.Module, seed: int, scale: float = 0.5) -> dict:
    """Quantized random values (multiples of 2^-16: encoding is exact); variances positive."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in model.parameter_shapes().items():
        value = rng.normal(0, scale, shape)
        state[name] = quantize(np.abs(value) + 0.5 if name.endswith("running_var") else value)
    return state


def run(model: nn.Sequential, x: np.ndarray, output: str = "logits", protocol: str = "securenn",
        backend: str = "threads", non_owner_model: nn.Sequential | None = None) -> dict:
    """OWNER shares ``model`` (the others hold its architecture, or ``non_owner_model``); CLIENT's ``x``
    goes through it with exact truncation; returns every party's ``predict(..., to=CLIENT)``."""
    others = model.architecture() if non_owner_model is None else non_owner_model

    def program():
        with mp.truncation("exact"):
            private = (model if mp.party() == OWNER else others).private(OWNER)
            return private.predict(mp.private(lambda: x, owner=CLIENT), output=output, to=CLIENT)

    return mp.run(program, parties=[OWNER, CLIENT], protocol=protocol, backend=backend)


def _magnitude(layer: nn.Module, weight: np.ndarray) -> nn.Module:
    """``layer``'s architecture with ``weight`` and a zero bias: applies |W| (or ones) to errors."""
    copy = layer.architecture()
    bias = np.zeros(weight.shape[1] if isinstance(layer, nn.Dense) else weight.shape[0])
    return copy.load_state_dict({"weight": weight, "bias": bias})


def error_bound(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """A bound on |private - plaintext| for every output of ``model`` on quantized ``x`` under
    securenn with exact truncation, propagated elementwise from frac_bits:
    - Dense, Conv2d (folded with a BatchNorm after it, if any): |W| applied to the input's error, plus
      1 unit (truncation), plus half a unit per weight and bias as encoded (W |x| with W = 1, + 1)/2;
    - a BatchNorm left alone: its affine map (|scale| e, + 1 unit, + (|x| + 1) / 2 units encoding);
      an Affine likewise (no truncation without a scale);
    - ReLU, Sigmoid, Tanh: Lipschitz constant times e, plus the activation's own error;
    - MaxPool: the largest error of the window; AvgPool: the mean, + 2 units (exact division);
    - layout layers move errors.
    """
    error = np.zeros_like(x)
    layers = [layer for layer in model.layers if not isinstance(layer, nn.Dropout)]
    for i, layer in enumerate(layers):
        folded_before = i > 0 and isinstance(layers[i - 1], (nn.Dense, nn.Conv2d))
        if isinstance(layer, (nn.Dense, nn.Conv2d)):
            weight = layer.param("weight")
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm):
                scale, _ = layers[i + 1].affine_values()
                weight = weight * (scale if isinstance(layer, nn.Dense) else scale.reshape(-1, 1, 1, 1))
            error = (_magnitude(layer, np.abs(weight)).forward_plain(error) + ULP
                     + 0.5 * ULP * (_magnitude(layer, np.ones(weight.shape)).forward_plain(np.abs(x)) + 1))
        elif isinstance(layer, nn.BatchNorm) and not folded_before:
            scale, _ = layer.affine_values()
            shape = (-1,) + (1,) * (x.ndim - 2)
            error = np.abs(scale).reshape(shape) * error + ULP + 0.5 * ULP * (np.abs(x) + 1)
        elif isinstance(layer, nn.Affine):
            weight = np.abs(layer.param("weight")) if layer.scale else 1.0
            error = weight * error + (ULP + 0.5 * ULP * np.abs(x) if layer.scale else 0) + 0.5 * ULP
        elif type(layer) in ACTIVATION_ERRORS:
            own, lipschitz = ACTIVATION_ERRORS[type(layer)]
            error = lipschitz * error + own
        elif isinstance(layer, (nn.MaxPool2d, nn.Flatten, nn.Reshape)):
            error = layer.forward_plain(error)
        elif isinstance(layer, (nn.AvgPool2d, nn.GlobalAvgPool2d)):
            error = layer.forward_plain(error) + 2 * ULP
        elif not isinstance(layer, nn.BatchNorm):
            raise TypeError(f"no error bound for {layer!r}")
        x = layer.forward_plain(x)
    return error


def winning_gaps(logits: np.ndarray) -> np.ndarray:
    """How far each sample is from changing class: the top logit minus the runner-up, or for one
    logit per sample its distance to 0."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return np.abs(logits.reshape(len(logits)))
    ranked = np.sort(logits, axis=-1)
    return ranked[:, -1] - ranked[:, -2]
