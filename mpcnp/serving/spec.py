"""A served model as data: its architecture as JSON (a ``ModelSpec``) and its parameters by name.

The model owner's client turns an ``mpcnp.nn`` model into a spec and a parameter dict (``describe``);
the servers store the spec beside their shares of the parameters and run the forward pass from it
(``forward``), with the same tensor functions as ``mp.run`` programs. The spec format::

    {"format": 1, "input_shape": [784], "output_shape": [10],
     "layers": [{"type": "Dense", "in_features": 784, "out_features": 128},
                {"type": "ReLU", "bound": null}, ...],
     "parameters": {"0.weight": [784, 128], "0.bias": [128], ...}}

Layer types and their fields: Dense (in_features, out_features; weight (in, out), bias (out,)),
Conv2d (in_channels, out_channels, kernel [kh, kw], stride [sh, sw], padding: an int or "same" /
"valid"; weight (out, in, kh, kw), bias (out,)), ReLU (bound: null or an integer, ``mp.relu``'s), MaxPool2d and
AvgPool2d (kernel, stride), Flatten, Reshape (shape, without the batch axis), Sigmoid, Tanh, Softmax
(axis), Dropout (the identity at inference). Parameters are named "INDEX.weight" / "INDEX.bias" after
the layer's position, as ``state_dict`` names them. ``input_shape`` and ``output_shape`` are those of
one sample (the batch axis comes first and is not written). The architecture is not secret: the three
core parties all run it; only the parameter values are.

``describe`` reads the layers through their public attributes only, so it works on any model built of
the layers above (nested ``Sequential`` models are flattened).
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpcnp import approx, functions
from mpcnp.tensor import PublicTensor, Tensor

__all__ = ["ModelSpec", "describe", "forward", "forward_plain", "check_spec", "check_model_name", "save", "load",
           "LAYER_TYPES", "OUTPUTS", "MAX_ELEMENTS"]

FORMAT = 1
OUTPUTS = ("logits", "class")
MAX_ELEMENTS = 1 << 28          # largest parameter or sample, in elements (2 GiB of shares)
_MAX_LAYERS = 1024
_WITH_PARAMETERS = ("Dense", "Conv2d")
LAYER_TYPES = {
    "Dense": ("in_features", "out_features"),
    "Conv2d": ("in_channels", "out_channels", "kernel", "stride", "padding"),
    "ReLU": ("bound",),
    "MaxPool2d": ("kernel", "stride"),
    "AvgPool2d": ("kernel", "stride"),
    "Flatten": (),
    "Reshape": ("shape",),
    "Sigmoid": (),
    "Tanh": (),
    "Softmax": ("axis",),
    "Dropout": (),
}
# ReLU commutes with these (max is monotone; the others only move elements): running it after them
# costs one comparison per pooled window instead of one per input element.
_RELU_COMMUTES_WITH = ("MaxPool2d", "Flatten", "Reshape")


@dataclass(frozen=True)
class ModelSpec:
    """A validated architecture (see the module docstring); ``parameters`` maps names to shapes."""

    layers: tuple[dict, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    parameters: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "layers": [dict(layer) for layer in self.layers],
                "parameters": {name: list(shape) for name, shape in self.parameters.items()}}

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
def _pair(value, what: str) -> list[int]:
    pair = [value, value] if np.isscalar(value) else list(value)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or a pair, got {value!r}")
    return [int(v) for v in pair]


def _flat_layers(model) -> list:
    layers = getattr(model, "layers", None)
    if layers is None:
        return [model]
    return [leaf for layer in layers for leaf in _flat_layers(layer)]


def _values(layer) -> dict[str, Any]:
    """A layer's parameter values by name: ``state_dict()`` where the layer has it, else ``params``."""
    if hasattr(layer, "state_dict"):
        return dict(layer.state_dict())
    return dict(getattr(layer, "params", {}) or {})


def _weight_shape(layer, values: dict) -> tuple[int, ...]:
    shapes = getattr(layer, "shapes", None)
    if shapes and "weight" in shapes:
        return tuple(shapes["weight"])
    if values.get("weight") is not None:
        return tuple(np.shape(values["weight"]))
    raise ValueError(f"{type(layer).__name__}: cannot tell its weight's shape")


def _describe_layer(layer, values: dict) -> dict:
    kind = type(layer).__name__
    if kind == "Dense":
        shape = _weight_shape(layer, values)
        return {"type": kind, "in_features": int(getattr(layer, "in_features", shape[0])),
                "out_features": int(getattr(layer, "out_features", shape[1]))}
    if kind == "Conv2d":
        shape = _weight_shape(layer, values)
        padding = layer.padding if isinstance(layer.padding, str) else _pair(layer.padding, "padding")
        return {"type": kind, "in_channels": int(shape[1]), "out_channels": int(shape[0]),
                "kernel": [int(shape[2]), int(shape[3])], "stride": _pair(layer.stride, "stride"),
                "padding": padding}
    if kind == "ReLU":
        bound = getattr(layer, "bound", None)
        return {"type": kind, "bound": None if bound is None else int(bound)}
    if kind in ("MaxPool2d", "AvgPool2d"):
        kernel = _pair(layer.kernel, "kernel")
        stride = kernel if layer.stride is None else _pair(layer.stride, "stride")
        return {"type": kind, "kernel": kernel, "stride": stride}
    if kind == "Flatten":
        if getattr(layer, "axis", 1) != 1:
            raise ValueError("Flatten: only axis=1 (keep the batch axis) can be served")
        return {"type": kind}
    if kind == "Reshape":
        return {"type": kind, "shape": [int(d) for d in layer.shape]}
    if kind == "Softmax":
        return {"type": kind, "axis": int(getattr(layer, "axis", -1))}
    if kind in ("Sigmoid", "Tanh", "Dropout"):
        return {"type": kind}
    raise ValueError(f"a {kind} layer cannot be served; supported: {', '.join(LAYER_TYPES)}")


def describe(model, input_shape=None) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """(spec, parameters) of an ``mpcnp.nn`` model whose weights are loaded.

    ``input_shape``: one sample's shape (no batch axis); needed when the first layer is not Dense
    (a convolution cannot tell the image size). Parameters come out as float64 arrays named
    "INDEX.weight" / "INDEX.bias". Raises ValueError for an unsupported layer, a missing weight or a
    model that does not run on ``input_shape``.
    """
    layers, parameters = [], {}
    for index, layer in enumerate(_flat_layers(model)):
        values = _values(layer)
        described = _describe_layer(layer, values)
        layers.append(described)
        if described["type"] in _WITH_PARAMETERS:
            for name in ("weight", "bias"):
                value = values.get(name)
                if value is None:
                    raise ValueError(f"layer {index} ({described['type']}) has no {name}: load the model's "
                                     "weights before uploading it")
                parameters[f"{index}.{name}"] = np.array(value, dtype=np.float64)
    if input_shape is None:
        if not layers or layers[0]["type"] != "Dense":
            raise ValueError("give input_shape (one sample's shape, e.g. (1, 8, 8)): the model does not "
                             "start with a Dense layer, so its input shape cannot be told")
        input_shape = (layers[0]["in_features"],)
    obj = {"format": FORMAT, "input_shape": [int(d) for d in input_shape], "layers": layers,
           "parameters": {name: list(value.shape) for name, value in parameters.items()}}
    return check_spec(obj), parameters


# ---- checking a spec (it comes from a client) -----------------------------------------------------------
def _positive_ints(value, count: int | None, what: str, zero: bool = False) -> list[int]:
    items = value if isinstance(value, list) else None
    low = 0 if zero else 1
    if (items is None or (count is not None and len(items) != count)
            or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= MAX_ELEMENTS
                       for v in items)):
        size = f"{count} " if count is not None else ""
        raise ValueError(f"{what} must be a list of {size}integers >= {low}, got {value!r}")
    return items


def _check_layer(index: int, layer) -> dict:
    where = f"layer {index}"
    if not isinstance(layer, dict) or layer.get("type") not in LAYER_TYPES:
        kind = layer.get("type") if isinstance(layer, dict) else layer
        raise ValueError(f"{where}: unknown layer type {kind!r}; supported: {', '.join(LAYER_TYPES)}")
    kind, fields = layer["type"], LAYER_TYPES[layer["type"]]
    extra = sorted(set(layer) - set(fields) - {"type"})
    missing = [f for f in fields if f not in layer]
    if extra or missing:
        raise ValueError(f"{where} ({kind}): fields must be exactly {', '.join(fields) or 'none'} "
                         f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
    for name in ("in_features", "out_features", "in_channels", "out_channels", "bound"):
        if name in layer and not (name == "bound" and layer[name] is None):
            _positive_ints([layer[name]], 1, f"{where} ({kind}) {name}")
    for name in ("kernel", "stride"):
        if name in layer:
            _positive_ints(layer[name], 2, f"{where} ({kind}) {name}")
    if "padding" in layer and not (layer["padding"] in ("same", "valid")
                                   or _positive_ints(layer["padding"], 2, f"{where} padding", zero=True)):
        raise ValueError(f"{where}: bad padding {layer['padding']!r}")
    if "shape" in layer:
        _positive_ints(layer["shape"], None, f"{where} (Reshape) shape")
    if "axis" in layer and not (isinstance(layer["axis"], int) and not isinstance(layer["axis"], bool)):
        raise ValueError(f"{where} (Softmax): axis must be an integer")
    return dict(layer)


def _parameter_shapes(layers: list[dict]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for index, layer in enumerate(layers):
        if layer["type"] == "Dense":
            shapes[f"{index}.weight"] = (layer["in_features"], layer["out_features"])
            shapes[f"{index}.bias"] = (layer["out_features"],)
        elif layer["type"] == "Conv2d":
            shapes[f"{index}.weight"] = (layer["out_channels"], layer["in_channels"], *layer["kernel"])
            shapes[f"{index}.bias"] = (layer["out_channels"],)
    return shapes


def check_spec(obj: Any) -> ModelSpec:
    """The ModelSpec of a decoded spec, or ValueError saying what is wrong with it (unknown layer or
    field, bad value, parameters that do not match the layers, a model that does not run on its input
    shape). ``output_shape`` is computed (a given one must agree)."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"a model spec is a JSON object with \"format\": {FORMAT}")
    unknown = sorted(set(obj) - {"format", "input_shape", "output_shape", "layers", "parameters"})
    if unknown:
        raise ValueError(f"model spec: unknown fields {unknown}")
    layers = obj.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= _MAX_LAYERS:
        raise ValueError(f"model spec: layers must be a list of 1 to {_MAX_LAYERS} layers")
    layers = [_check_layer(i, layer) for i, layer in enumerate(layers)]
    input_shape = tuple(_positive_ints(obj.get("input_shape"), None, "input_shape"))
    if not input_shape or math.prod(input_shape) > MAX_ELEMENTS:
        raise ValueError(f"input_shape {input_shape} must have 1 to {MAX_ELEMENTS} elements")
    shapes = _parameter_shapes(layers)
    given = obj.get("parameters", {})
    if not isinstance(given, dict) or {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()} != shapes:
        raise ValueError(f"model spec: the parameters must be exactly {shapes}, got {given!r}")
    for name, shape in shapes.items():
        if math.prod(shape) > MAX_ELEMENTS:
            raise ValueError(f"parameter {name} of shape {shape} is too large")
    spec = ModelSpec(tuple(layers), input_shape, (), shapes)
    zeros = {name: np.zeros(shape) for name, shape in shapes.items()}
    try:
        out = forward(spec, zeros, PublicTensor(np.zeros((1,) + input_shape)))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"the model does not run on inputs of shape {input_shape}: {exc}") from None
    output_shape = tuple(out.shape[1:])
    if "output_shape" in obj and tuple(obj["output_shape"] or ()) != output_shape:
        raise ValueError(f"output_shape {obj['output_shape']} disagrees with the layers' {list(output_shape)}")
    return ModelSpec(tuple(layers), input_shape, output_shape, shapes)


# ---- the forward pass ----------------------------------------------------------------------------------
def plan(spec: ModelSpec, output: str = "logits") -> list[tuple[int, dict]]:
    """(index, layer) in the order the forward pass runs them: Dropout dropped, each ReLU moved after
    the MaxPool2d / Flatten / Reshape layers that follow it (the same function, fewer comparisons), and
    for ``output="class"`` a final Softmax or Sigmoid dropped (the class is the same without it)."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    steps = [(i, layer) for i, layer in enumerate(spec.layers) if layer["type"] != "Dropout"]
    moved = True
    while moved:
        moved = False
        for k in range(len(steps) - 1):
            if steps[k][1]["type"] == "ReLU" and steps[k + 1][1]["type"] in _RELU_COMMUTES_WITH:
                steps[k], steps[k + 1] = steps[k + 1], steps[k]
                moved = True
    if output == "class" and steps and steps[-1][1]["type"] in ("Softmax", "Sigmoid"):
        steps.pop()
    return steps


def _apply(layer: dict, index: int, params: dict, x):
    kind = layer["type"]
    if kind == "Dense":
        return x @ params[f"{index}.weight"] + params[f"{index}.bias"]
    if kind == "Conv2d":
        padding = layer["padding"] if isinstance(layer["padding"], str) else tuple(layer["padding"])
        y = functions.conv2d(x, params[f"{index}.weight"], stride=tuple(layer["stride"]), padding=padding)
        return y + params[f"{index}.bias"].reshape(-1, 1, 1)
    if kind == "ReLU":
        return functions.relu(x, layer["bound"])
    if kind == "MaxPool2d":
        return functions.maxpool2d(x, tuple(layer["kernel"]), tuple(layer["stride"]))
    if kind == "AvgPool2d":
        return functions.avgpool2d(x, tuple(layer["kernel"]), tuple(layer["stride"]))
    if kind == "Flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "Reshape":
        return x.reshape(x.shape[0], *layer["shape"])
    if kind == "Sigmoid":
        return approx.sigmoid(x)
    if kind == "Tanh":
        return approx.tanh(x)
    if kind == "Softmax":
        return approx.softmax(x, axis=layer["axis"])
    raise ValueError(f"unknown layer type {kind!r}")


def forward(spec: ModelSpec, params: dict, x: Tensor, output: str = "logits") -> Tensor:
    """The model on a batch ``x`` (N, *input_shape), private or public, with ``params`` (name ->
    PrivateTensor, PublicTensor or array). ``output="logits"``: the last layer's values (N,
    *output_shape); ``"class"``: each sample's class, (N,): the argmax over the last axis (SecureNN:
    exact; the first maximal one on ties), or [logit > 0] for one logit per sample."""
    for index, layer in plan(spec, output):
        x = _apply(layer, index, params, x)
    if output == "logits":
        return x
    if len(x.shape) == 1 or x.shape[-1] == 1:
        return (x > 0).reshape(x.shape[0])
    if len(x.shape) != 2:
        raise ValueError(f"output='class' needs logits of shape (N, classes), got {tuple(x.shape)}")
    return functions.argmax(x, axis=-1)


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
    """(spec, parameters) of a model file written by ``save``; ValueError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            spec = check_spec(json.loads(data["spec"].tobytes().decode("utf-8")))
            params = {key[2:]: np.array(data[key], dtype=np.float64) for key in data.files if key.startswith("p:")}
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:  # ValueError: JSON, pickled data
        raise ValueError(f"{path} is not a model file (mpcnp.serving.spec.save writes them): {exc}") from None
    if set(params) != set(spec.parameters) or any(params[n].shape != s for n, s in spec.parameters.items()):
        raise ValueError(f"{path}: its parameters do not match its spec")
    return spec, params


def forward_plain(spec: ModelSpec, params: dict[str, np.ndarray], x: np.ndarray, output: str = "logits") -> np.ndarray:
    """The model on a NumPy batch, in float64 (the same functions on public tensors)."""
    result = forward(spec, {name: PublicTensor(value) for name, value in params.items()},
                     PublicTensor(np.asarray(x, dtype=np.float64)), output)
    return result.value if output == "logits" else result.value.astype(np.int64)
