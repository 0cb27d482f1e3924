"""A served model's spec checked and built as an ``mpcnp.nn`` model, on the servers and the producer.

A spec comes from a client (an upload) or from a server's file; ``check`` tells whether it describes a
model this service can run, with a ValueError naming what is wrong: a form that is not a spec's
(mpcnp.serving.spec.parse), a description nn cannot build (``nn.from_spec``), parameters other than
the model's, a BatchNorm left unfolded (its square root cannot run on shares: the client folds it,
``model.folded()``), or a model that does not run on the spec's input shape or gives another output
shape. ``architecture`` builds the model without values; the service gives it its private parameters
(``with_parameters``) and runs it with nn's own forward pass, rewrites and class output
(``Sequential.infer``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mpcnp import nn
from mpcnp.serving.spec import MAX_ELEMENTS, ModelSpec, parse
from mpcnp.tensor import PublicTensor

__all__ = ["check", "architecture", "serves_classes"]


def architecture(spec: ModelSpec) -> nn.Sequential:
    """The nn model ``spec`` describes, without parameter values; ValueError if it is not one this
    service runs (see the module docstring; the output shape is checked by ``check``)."""
    model = nn.from_spec(spec.model)
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"a served model is a Sequential, not a {type(model).__name__}")
    unfolded = [name for name, layer in model.named_layers() if isinstance(layer, nn.BatchNorm)]
    if unfolded:
        raise ValueError(f"layer {unfolded[0]} is a BatchNorm: upload model.folded(), in which each BatchNorm "
                         "is folded into the layer before it or turned into an Affine (mp.Client does)")
    shapes = model.parameter_shapes()
    if shapes != spec.parameters:
        raise ValueError(f"the model's parameters are {shapes}, the spec lists {spec.parameters}")
    for name, shape in shapes.items():
        if int(np.prod(shape)) > MAX_ELEMENTS:
            raise ValueError(f"parameter {name} of shape {shape} is too large")
    return model


def check(obj: Any) -> ModelSpec:
    """The ModelSpec of a decoded spec that describes a model this service runs (ValueError
    otherwise, see the module docstring): built and run once on public zeros."""
    spec = parse(obj)
    model = architecture(spec)
    zeros = model.with_parameters({name: np.zeros(shape) for name, shape in spec.parameters.items()})
    try:
        out = zeros.forward(PublicTensor(np.zeros((1,) + spec.input_shape)))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"the model does not run on inputs of shape {spec.input_shape}: {exc}") from None
    if spec.output_shape is None:
        return dataclasses.replace(spec, output_shape=tuple(out.shape[1:]))
    if tuple(out.shape[1:]) != spec.output_shape:
        raise ValueError(f"output_shape {list(spec.output_shape)} disagrees with the model's {list(out.shape[1:])}")
    return spec


def serves_classes(spec: ModelSpec) -> bool:
    """Whether ``output="class"`` applies: one logit per sample, or one row of logits (``nn.classify``)."""
    return len(spec.output_shape) <= 1
