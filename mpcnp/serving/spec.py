"""A served model as data: its description as JSON (a ``ModelSpec``) and its parameters by name.

The model owner's client turns an ``mpcnp.nn`` model into a spec and a parameter dict (``describe``)
through the model's own methods only: ``folded()`` (BatchNorms folded into the layers before them),
``spec()`` (the architecture as JSON, mpcnp.nn's format), ``state_dict()`` and ``forward_plain``
(for the output shape). The servers build the nn model back from the spec (mpcnp.serving.build, with
``nn.from_spec``) and run it on their shares of the parameters. The format::

    {"format": 2, "input_shape": [784], "output_shape": [10],
     "model": {"type": "Sequential", "args": {"layers": [
                  {"type": "Dense", "args": {"in_features": 784, "out_features": 128}, "attrs": {}},
                  {"type": "ReLU", "args": {"bound": null}, "attrs": {}}, ...]},
               "attrs": {"class_scale": 1, "classes": null}},
     "parameters": {"0.weight": [784, 128], "0.bias": [128], ...}}

``model`` is ``Module.spec()`` of a ``Sequential`` (a lone layer is wrapped in one: its parameters
are then "0.NAME"); ``parameters`` are its ``state_dict`` names and shapes. ``input_shape`` and
``output_shape`` are those of one sample (the batch axis comes first and is not written). The
architecture is not secret: the three core parties all run it; only the parameter values are.

Format 1 (the servers' files and model files written before nn owned the description: a flat list
of layers with their fields) is read and turned into format 2: its fields are the constructors'
arguments and its parameter names those of a flat Sequential; a ReLU's default bound 8 becomes None
(see ``_format1_value``).

This module checks a spec's form (``parse``); whether the model it describes is one (its layers, their
arguments, their parameters, its output shape) only nn can tell: mpcnp.serving.build.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelSpec", "describe", "parse", "check_model_name", "save", "load", "OUTPUTS", "MAX_ELEMENTS",
           "FORMAT"]

FORMAT = 2
OUTPUTS = ("logits", "class")
MAX_ELEMENTS = 1 << 28          # largest parameter or sample, in elements (2 GiB of shares)
_FIELDS = ("format", "input_shape", "output_shape", "model", "parameters")


@dataclass(frozen=True)
class ModelSpec:
    """A spec of the right form (see the module docstring); ``model`` is the nn description,
    ``parameters`` maps names to shapes."""

    model: dict
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    parameters: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> dict:
        output_shape = None if self.output_shape is None else list(self.output_shape)
        return {"format": FORMAT, "input_shape": list(self.input_shape), "output_shape": output_shape,
                "model": self.model, "parameters": {name: list(shape) for name, shape in self.parameters.items()}}

    def digest_text(self) -> str:
        """A canonical text of the spec (sorted keys), what the parties compare."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def check_model_name(name: Any) -> str:
    """``name`` if it can name a model (it becomes a file name): 1-64 characters of letters, digits,
    ``_``, ``-`` and ``.``, not starting with ``.``; ValueError otherwise."""
    if (not isinstance(name, str) or not 1 <= len(name) <= 64 or name[0] == "."
            or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in name)):
        raise ValueError(f"a model name is 1-64 letters, digits, '_', '-' or '.', not starting with '.'; "
                         f"got {name!r}")
    return name


# ---- from an nn model ---------------------------------------------------------------------------------
def describe(model, input_shape=None) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """(spec, parameters) of an ``mpcnp.nn`` model whose weights are loaded (any object with the
    methods ``folded``, ``spec``, ``state_dict`` and ``forward_plain`` of nn's models).

    ``input_shape``: one sample's shape (no batch axis); needed when the first layer is not Dense
    (a convolution cannot tell the image size). Parameters come out as float64 arrays under the
    folded model's ``state_dict`` names. Raises ValueError for a model that cannot be described
    (missing weights, an attribute that is not JSON data) or that does not run on ``input_shape``.
    """
    for method in ("folded", "spec", "state_dict", "forward_plain"):
        if not callable(getattr(model, method, None)):
            raise ValueError(f"a model to serve is an mpcnp.nn model (Sequential, ...), not a "
                             f"{type(model).__name__} (it has no {method}())")
    served = model.folded()
    description = served.spec()
    params = {name: np.array(value, dtype=np.float64) for name, value in served.state_dict().items()}
    if description.get("type") != "Sequential":
        description = {"type": "Sequential", "args": {"layers": [description]}, "attrs": {}}
        params = {f"0.{name}": value for name, value in params.items()}
    if input_shape is None:
        first = _first_layer(description)
        if first.get("type") != "Dense":
            raise ValueError("give input_shape (one sample's shape, e.g. (1, 8, 8)): the model does not "
                             "start with a Dense layer, so its input shape cannot be told")
        input_shape = (first["args"]["in_features"],)
    input_shape = tuple(int(d) for d in input_shape)
    try:
        output = served.forward_plain(np.zeros((1,) + input_shape))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"the model does not run on inputs of shape {input_shape}: {exc}") from None
    obj = {"format": FORMAT, "input_shape": list(input_shape), "output_shape": list(np.shape(output)[1:]),
           "model": description, "parameters": {name: list(value.shape) for name, value in params.items()}}
    return parse(json.loads(json.dumps(obj))), params


def _first_layer(description: dict) -> dict:
    while description.get("type") == "Sequential" and description["args"]["layers"]:
        description = description["args"]["layers"][0]
    return description


# ---- the form of a spec (it comes from a client, or from a file) -------------------------------------------
def _ints(value, what: str, low: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              and low <= v <= MAX_ELEMENTS for v in value):
        raise ValueError(f"{what} must be a list of integers >= {low}, got {str(value)[:80]}")
    if math.prod(value) > MAX_ELEMENTS:
        raise ValueError(f"{what} {value} has more than {MAX_ELEMENTS} elements")
    return tuple(value)


def parse(obj: Any) -> ModelSpec:
    """The ModelSpec of a decoded spec (format 2, or format 1 turned into 2), or ValueError saying
    what is wrong with its form. The description in ``model`` is not checked here, and a format-1
    spec without an output shape has ``output_shape`` None."""
    if isinstance(obj, dict) and obj.get("format") == 1:
        obj = _upgrade(obj)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"a model spec is a JSON object with \"format\": {FORMAT} (or 1)")
    if set(obj) != set(_FIELDS):
        raise ValueError(f"a model spec has the fields {', '.join(_FIELDS)}, got {sorted(obj)}")
    input_shape = _ints(obj["input_shape"], "input_shape", 1)
    if not input_shape:
        raise ValueError("input_shape must not be empty")
    # None only from format 1, where it was optional: mpcnp.serving.build.check computes it
    output_shape = None if obj["output_shape"] is None else _ints(obj["output_shape"], "output_shape", 0)
    if not isinstance(obj["model"], dict):
        raise ValueError("model must be a JSON object (an nn model's spec())")
    given = obj["parameters"]
    if not isinstance(given, dict):
        raise ValueError("parameters must map names to shapes")
    parameters = {str(name): _ints(shape, f"parameter {name}", 1) for name, shape in given.items()}
    return ModelSpec(obj["model"], input_shape, output_shape, parameters)


def _upgrade(obj: dict) -> dict:
    """A format-1 spec as format 2 (see the module docstring); ValueError if it is not one."""
    unknown = sorted(set(obj) - {"format", "input_shape", "output_shape", "layers", "parameters"})
    if unknown:
        raise ValueError(f"model spec (format 1): unknown fields {unknown}")
    layers = obj.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) and "type" in layer for layer in layers):
        raise ValueError("a format-1 model spec has a list of layers, each with a \"type\"")
    described = [{"type": layer["type"], "args": {k: _format1_value(layer, k, v) for k, v in layer.items()
                                                  if k != "type"}, "attrs": {}} for layer in layers]
    return {"format": FORMAT, "input_shape": obj.get("input_shape"), "output_shape": obj.get("output_shape"),
            "model": {"type": "Sequential", "args": {"layers": described}, "attrs": {}},
            "parameters": obj.get("parameters")}


def _format1_value(layer: dict, name: str, value: Any) -> Any:
    """A format-1 field as the constructor's argument. A ReLU's bound was Pond's interval and SecureNN
    ignored it (8 unless calibrated); a bound is now also SecureNN's promise on |x|. The default 8
    becomes None, the same function under both protocols (Pond's interval is then 8); a calibrated
    bound stays, a promise sized on the owner's data."""
    return None if (layer["type"], name, value) == ("ReLU", "bound", 8) else value


# ---- model files (the command line's upload) -----------------------------------------------------------
def save(path, model, input_shape=None) -> ModelSpec:
    """Write ``model`` (an nn model with its weights) to ``path`` as a model file: an .npz holding the
    spec (entry "spec", UTF-8 JSON) and the parameters in the clear (entries "p:NAME"). It is the
    model owner's plaintext: keep it private (it is created with mode 0600)."""
    spec, params = describe(model, input_shape)
    arrays = {"spec": np.frombuffer(spec.digest_text().encode("utf-8"), dtype=np.uint8)}
    arrays.update({f"p:{name}": value for name, value in params.items()})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    return spec


def load(path) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """(spec, parameters) of a model file written by ``save`` (of this version or an earlier one);
    ValueError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            spec = parse(json.loads(data["spec"].tobytes().decode("utf-8")))
            params = {key[2:]: np.array(data[key], dtype=np.float64) for key in data.files if key.startswith("p:")}
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:  # ValueError: JSON, pickled data
        raise ValueError(f"{path} is not a model file (mpcnp.serving.spec.save writes them): {exc}") from None
    if set(params) != set(spec.parameters) or any(params[n].shape != s for n, s in spec.parameters.items()):
        raise ValueError(f"{path}: its parameters do not match its spec")
    return spec, params
