"""Calibration: size the bounds of the nonlinear layers from the model owner's own data.

Under ``protocol="pond"`` every nonlinear layer is a polynomial accurate on an interval, and garbage
outside it (``mp.relu``, ``mp.maxpool2d``, ``mp.argmax`` and the others state theirs); under
``protocol="securenn"`` a bound on a ReLU's or a max pool's inputs makes its comparisons cheaper
(about 100 instead of 221 bytes each), exact inside the bound and silently wrong for some inputs
beyond. The owner, before any run, passes plaintext data it holds (its training data, say) through
the plaintext model, in the order the private pass runs its layers (``Sequential.plan``), and
``calibrate`` sets:

- every ReLU's ``bound`` to margin x the largest input magnitude it saw, rounded up to an integer
  (Pond's ReLU is accurate on [-bound, bound] within 0.0044 bound; SecureNN's exact for |x| < bound);
- every MaxPool2d's ``bound`` likewise from its window values (SecureNN's comparisons; Pond does
  not use it) and its ``pond_scale`` to the smallest power of two that brings margin x the largest
  spread within a window to 16 (Pond's comparisons, ``approx.step``, need gaps in [-16, 16]);
- the model's ``class_scale`` to 16 / (margin x the largest spread of a sample's logits), so that
  ``classify``'s comparisons see gaps in [-16, 16] (one logit per sample: its largest magnitude),
  while keeping the band (-0.25, 0.25) where the step is unsure as narrow as that allows;

and checks Sigmoid, Tanh and a Softmax that runs against their fixed intervals, raising ValueError
naming the layer when the owner's own data already leaves them. These values are hyperparameters of
the architecture: every party uses them, so they are public (they reveal the activations' ranges on
the owner's data, at this margin's resolution). A ``pond_scale`` or ``class_scale`` other than 1
costs SecureNN a unit or so of precision (a public product and truncation). Inputs unlike the
owner's data may still leave the intervals: the margin is the safety factor, and
``mp.run(..., validate=True)`` on test data names the first input beyond a bound. A model that must
stay exact under SecureNN whatever its inputs is simply not calibrated (every bound None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mpcnp.nn.activations import MAX_RELU_BOUND, POND_INTERVALS, ReLU, Sigmoid, Softmax, Tanh
from mpcnp.nn.module import Module, plain_input
from mpcnp.nn.sequential import OUTPUTS, Sequential
from mpcnp.nn.shaping import MaxPool2d

__all__ = ["calibrate", "Calibration", "STEP_RANGE"]

STEP_RANGE = 16.0            # Pond's step is accurate for inputs in [-16, 16] (mpcnp.approx.step)
SOFTMAX_INTERVAL = (-16.0, 6.0)  # Pond's softmax: x - mean(x) along the axis must lie here
MAX_CLASS_SCALE = 2.0 ** 10  # beyond, scaled logits grow without making the step any surer


@dataclass
class Calibration:
    """What ``calibrate`` saw and set: per layer (its name, as "3" or "1.2"), the largest input
    magnitude (or window spread, for max pooling) on the owner's data and the value chosen."""

    margin: float
    samples: int
    observed: dict[str, float] = field(default_factory=dict)
    relu_bounds: dict[str, int] = field(default_factory=dict)
    pool_scales: dict[str, int] = field(default_factory=dict)
    pool_bounds: dict[str, float] = field(default_factory=dict)
    logit_spread: float = 0.0
    class_scale: float = 1.0

    def __str__(self) -> str:
        lines = [f"calibrated on {self.samples} samples with margin {self.margin}:"]
        for name, seen in self.observed.items():
            chosen = (f"ReLU bound {self.relu_bounds[name]}" if name in self.relu_bounds
                      else f"MaxPool pond_scale {self.pool_scales[name]}, bound {self.pool_bounds[name]:g}"
                      if name in self.pool_scales else "in range")
            lines.append(f"  layer {name}: largest {seen:.3g} -> {chosen}")
        lines.append(f"  logits: largest spread {self.logit_spread:.3g} -> class_scale {self.class_scale:.4g}")
        return "\n".join(lines)


def calibrate(model: Sequential, x, margin: float = 1.5, output: str = "class") -> Calibration:
    """Size ``model``'s bounds and Pond hyperparameters on the owner's plaintext data ``x`` (see the
    module docstring), setting them in place; returns what was seen and set.

    ``model``: a Sequential with the owner's values loaded; ``x``: a batch the forward pass takes,
    representative of the inputs to come (at least one sample); ``margin`` >= 1: the factor by which
    intervals exceed what ``x`` reaches; ``output``: the prediction's end to be checked, "class"
    (a trailing Softmax or Sigmoid is not run) or "logits". Raises ValueError naming the layer when
    ``x`` already leaves the fixed interval of a Sigmoid, Tanh or Softmax, or needs a ReLU bound
    beyond 2^20. Cost: one plaintext forward pass on ``x``.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"calibrate takes an nn.Sequential, got {type(model).__name__}")
    if not margin >= 1:
        raise ValueError(f"margin must be at least 1, got {margin}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    x = plain_input(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"calibrate needs at least one sample, got an input of shape {x.shape}")
    names = {id(layer): name for name, layer in _named_layers(model)}
    result = Calibration(margin=float(margin), samples=int(x.shape[0]))
    # the class is decided on the logits plan minus a trailing Softmax or Sigmoid: a prefix of it
    decided_after = len(model.plan("class"))
    logits = x
    for i, layer in enumerate(model.plan(output)):
        _observe(layer, names.get(id(layer), "?"), x, result)
        x = layer.forward_plain(x)
        if i + 1 == decided_after:
            logits = x
    _size_class_scale(model, logits, result)
    return result


def _observe(layer: Module, name: str, x: np.ndarray, result: Calibration) -> None:
    """Record what ``layer`` sees on ``x`` and set or check its Pond interval."""
    margin = result.margin
    if isinstance(layer, ReLU):
        largest = float(np.abs(x).max(initial=0.0))
        bound = max(1, math.ceil(margin * largest))
        if bound > MAX_RELU_BOUND:
            raise ValueError(f"layer {name} (ReLU): inputs reach {largest:.3g} on the calibration data; "
                             f"Pond's ReLU takes bounds up to 2^20 (use protocol='securenn' without "
                             f"calibration, or scale the layer before down)")
        layer.bound = bound
        result.observed[name], result.relu_bounds[name] = largest, bound
    elif isinstance(layer, MaxPool2d):
        windows = layer.windows(x)
        spread = float((windows.max(axis=(4, 5)) - windows.min(axis=(4, 5))).max(initial=0.0))
        needed = margin * spread / STEP_RANGE
        layer.pond_scale = 1 if needed <= 1 else 2 ** math.ceil(math.log2(needed))
        layer.bound = float(max(1, math.ceil(margin * float(np.abs(windows).max(initial=0.0)))))
        result.observed[name], result.pool_scales[name] = spread, layer.pond_scale
        result.pool_bounds[name] = layer.bound
    elif isinstance(layer, (Sigmoid, Tanh)):
        lo, hi = POND_INTERVALS[type(layer).__name__]
        largest = float(np.abs(x).max(initial=0.0))
        if largest > hi:
            raise ValueError(f"layer {name} ({type(layer).__name__}): inputs reach {largest:.3g} on the "
                             f"calibration data, outside [{lo:g}, {hi:g}] where Pond's polynomial is "
                             f"accurate (use protocol='securenn', which clamps exactly)")
        result.observed[name] = largest
    elif isinstance(layer, Softmax):
        centred = x - x.mean(axis=layer.axis, keepdims=True)
        lo, hi = SOFTMAX_INTERVAL
        if centred.size and (centred.min() < lo or centred.max() > hi):
            raise ValueError(f"layer {name} (Softmax): x - mean(x) spans [{centred.min():.3g}, "
                             f"{centred.max():.3g}] on the calibration data, outside [{lo:g}, {hi:g}] where "
                             f"Pond's softmax is accurate (use protocol='securenn', or output='class', "
                             f"which skips a final Softmax)")
        result.observed[name] = float(np.abs(centred).max(initial=0.0))


def _size_class_scale(model: Sequential, logits: np.ndarray, result: Calibration) -> None:
    """class_scale = 16 / (margin x the largest gap ``classify`` compares), capped at 2^10."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        spread = float(np.abs(logits).max(initial=0.0))
    else:
        spread = float((logits.max(axis=-1) - logits.min(axis=-1)).max(initial=0.0))
    scale = MAX_CLASS_SCALE if spread == 0 else min(MAX_CLASS_SCALE, STEP_RANGE / (result.margin * spread))
    model.class_scale = scale
    result.logit_spread, result.class_scale = spread, scale


def _named_layers(model: Sequential, prefix: str = ""):
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Sequential):
            yield from _named_layers(layer, f"{prefix}{i}.")
        else:
            yield f"{prefix}{i}", layer
