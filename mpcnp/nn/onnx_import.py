"""``from_onnx``: an ONNX graph that is a chain of layers, as an ``nn.Sequential`` with the graph's
initializers loaded as the owner's values. Needs the optional ``onnx`` package (``pip install
"mpcnp[ml]"``).

Supported operators (default domain), each taking the previous node's output as its one computed
input and constants (initializers or Constant nodes) for the rest:
Gemm (transA = 0), MatMul (constant right operand), Add, Sub, Mul and Div by a constant, Conv (2-D,
group 1, no dilation), Relu, Sigmoid, Tanh, MaxPool and AveragePool (2-D, no padding, ceil_mode 0),
GlobalAveragePool, BatchNormalization (inference), Flatten, Reshape, Softmax, Identity and Dropout.
Anything else (another operator, an attribute value outside these, two computed inputs as in a skip
connection) raises ``OnnxImportError`` naming the node, its operator and what is supported.

Constants next to a Gemm, MatMul or Conv that act per output (a bias Add, a per-channel Mul) are
folded into its weights in float64; other Add / Sub / Mul / Div become an ``nn.Affine`` layer.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from mpcnp.nn.activations import ReLU, Sigmoid, Softmax, Tanh
from mpcnp.nn.layers import Affine, BatchNorm, Conv2d, Dense
from mpcnp.nn.module import Module
from mpcnp.nn.sequential import Sequential
from mpcnp.nn.shaping import AvgPool2d, Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, Reshape

__all__ = ["from_onnx", "OnnxImportError", "SUPPORTED_OPS"]


class OnnxImportError(ValueError):
    """An ONNX graph that ``from_onnx`` cannot import (the message names the node and the reason)."""


class _Node:
    """One node being imported: its label, attributes and constant inputs, and error helpers."""

    def __init__(self, node, index: int, attributes: dict, constants: dict, ranks: dict, opset: int) -> None:
        self.node, self.op = node, node.op_type
        self.label = f"ONNX node {node.name or '#' + str(index)!r} ({node.op_type})"
        self.attributes, self.constants, self.ranks, self.opset = attributes, constants, ranks, opset

    def fail(self, why: str) -> OnnxImportError:
        return OnnxImportError(f"{self.label}: {why}")

    def attrs(self, **allowed: Any) -> dict:
        """The node's attributes with these defaults; an attribute not listed is unsupported."""
        unknown = sorted(set(self.attributes) - set(allowed))
        if unknown:
            raise self.fail(f"attribute {unknown[0]} is not supported (supported: {', '.join(allowed) or 'none'})")
        return {**allowed, **self.attributes}

    def require(self, ok: bool, attribute: str, value, supported: str) -> None:
        if not ok:
            raise self.fail(f"attribute {attribute}={value!r} is not supported ({supported})")

    def constant(self, position: int, required: bool = True) -> np.ndarray | None:
        names = self.node.input
        if position >= len(names) or not names[position]:
            if required:
                raise self.fail(f"input {position} is missing")
            return None
        if names[position] not in self.constants:
            raise self.fail(f"input {position} ({names[position]!r}) must be a constant (an initializer)")
        return self.constants[names[position]]

    def rank(self) -> int | None:
        return self.ranks.get(self.node.input[0])


def _loaded(layer: Module, **values: np.ndarray) -> Module:
    return layer.load_state_dict({name: np.asarray(v, dtype=np.float64) for name, v in values.items()})


def _gemm(n: _Node) -> list[Module]:
    a = n.attrs(alpha=1.0, beta=1.0, transA=0, transB=0)
    n.require(a["transA"] == 0, "transA", a["transA"], "only 0: the input must be the left operand")
    weight = n.constant(1)
    weight = (weight.T if a["transB"] else weight) * a["alpha"]
    if weight.ndim != 2:
        raise n.fail(f"the weight must be 2-D, got shape {weight.shape}")
    c = n.constant(2, required=False)
    bias = np.zeros(weight.shape[1]) if c is None else a["beta"] * _per_output(n, c, weight.shape[1], 2)
    return [_loaded(Dense(*weight.shape), weight=weight, bias=bias)]


def _matmul(n: _Node) -> list[Module]:
    n.attrs()
    if n.node.input[0] in n.constants:
        raise n.fail("the computed input must be the left operand (x @ W with W constant)")
    weight = n.constant(1)
    if weight.ndim != 2:
        raise n.fail(f"the constant operand must be 2-D, got shape {weight.shape}")
    return [_loaded(Dense(*weight.shape), weight=weight, bias=np.zeros(weight.shape[1]))]


def _elementwise(n: _Node) -> list[Module]:
    """Add, Sub, Mul, Div with one constant operand, as an Affine layer."""
    n.attrs()
    first_constant = n.node.input[0] in n.constants
    c = n.constant(0 if first_constant else 1).astype(np.float64)
    if n.op == "Div" and first_constant:
        raise n.fail("division by a computed value is not supported (only x / constant)")
    if n.op == "Div" and np.any(c == 0):
        raise n.fail("division by a constant holding zeros")
    if n.op in ("Add", "Sub"):
        if n.op == "Sub" and first_constant:    # c - x
            return [_loaded(Affine(c.shape), weight=-np.ones(c.shape), bias=c)]
        return [_loaded(Affine(c.shape, scale=False), bias=c if n.op == "Add" else -c)]
    return [_loaded(Affine(c.shape, shift=False), weight=c if n.op == "Mul" else 1.0 / c)]


def _conv(n: _Node) -> list[Module]:
    a = n.attrs(auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None)
    weight = n.constant(1)
    if weight.ndim != 4:
        raise n.fail(f"only 2-D convolutions are supported (weight of 4 dimensions), got shape {weight.shape}")
    n.require(a["group"] == 1, "group", a["group"], "only 1")
    n.require(a["dilations"] in (None, [1, 1]), "dilations", a["dilations"], "only [1, 1]")
    n.require(a["kernel_shape"] in (None, list(weight.shape[2:])), "kernel_shape", a["kernel_shape"],
              f"the weight's {list(weight.shape[2:])}")
    padding = _padding(n, a)
    bias = n.constant(2, required=False)
    layer = Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride=tuple(a["strides"] or (1, 1)),
                   padding=padding)
    return [_loaded(layer, weight=weight, bias=np.zeros(weight.shape[0]) if bias is None else bias)]


def _padding(n: _Node, a: dict):
    auto = a["auto_pad"].decode() if isinstance(a["auto_pad"], bytes) else a["auto_pad"]
    if auto == "VALID":
        return 0
    if auto == "SAME_UPPER":
        return "same"
    n.require(auto == "NOTSET", "auto_pad", auto, "NOTSET, VALID or SAME_UPPER")
    pads = a["pads"] or [0, 0, 0, 0]
    n.require(len(pads) == 4, "pads", pads, "4 values for a 2-D convolution")
    top, left, bottom, right = pads
    return (top, bottom), (left, right)


def _pool(n: _Node) -> list[Module]:
    a = n.attrs(auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None, strides=None,
                **({"storage_order": 0} if n.op == "MaxPool" else {"count_include_pad": 0}))
    kernel = a["kernel_shape"]
    n.require(kernel is not None and len(kernel) == 2, "kernel_shape", kernel, "a 2-D window")
    auto = a["auto_pad"].decode() if isinstance(a["auto_pad"], bytes) else a["auto_pad"]
    n.require(auto in ("NOTSET", "VALID"), "auto_pad", auto, "NOTSET or VALID")
    n.require(not any(a["pads"] or ()), "pads", a["pads"], "no padding")
    n.require(a["ceil_mode"] == 0, "ceil_mode", a["ceil_mode"], "only 0")
    n.require(a["dilations"] in (None, [1, 1]), "dilations", a["dilations"], "only [1, 1]")
    n.require(a.get("storage_order", 0) == 0, "storage_order", a.get("storage_order"), "only 0")
    stride = tuple(a["strides"] or (1, 1))
    return [(MaxPool2d if n.op == "MaxPool" else AvgPool2d)(tuple(kernel), stride)]


def _batchnorm(n: _Node) -> list[Module]:
    a = n.attrs(epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1)
    n.require(a["training_mode"] == 0, "training_mode", a["training_mode"], "only 0: inference")
    n.require(a["spatial"] == 1, "spatial", a["spatial"], "only 1")
    scale, bias, mean, var = (n.constant(i) for i in range(1, 5))
    return [_loaded(BatchNorm(scale.shape[0], eps=a["epsilon"]), weight=scale, bias=bias, running_mean=mean,
                    running_var=var)]


def _flatten(n: _Node) -> list[Module]:
    axis = n.attrs(axis=1)["axis"]
    if axis < 0:
        rank = n.rank()
        if rank is None:
            raise n.fail(f"axis {axis} needs the input's rank, which shape inference did not give")
        axis += rank
    return [Flatten(axis)]


def _reshape(n: _Node) -> list[Module]:
    a = n.attrs(allowzero=0, shape=None)
    shape = a["shape"] if a["shape"] is not None else n.constant(1).astype(np.int64).tolist()
    n.require(not (a["allowzero"] and 0 in shape), "allowzero", a["allowzero"], "0, or 1 with no 0 in the shape")
    if not shape or shape[0] not in (0, -1):
        raise n.fail(f"the target shape {shape} fixes the batch size; use 0 or -1 as its first entry")
    if shape[0] == -1 and -1 in shape[1:]:
        raise n.fail(f"the target shape {shape} has two -1")
    return [Reshape(shape[1:])]


def _softmax(n: _Node) -> list[Module]:
    axis = n.attrs(axis=-1 if n.opset >= 13 else 1)["axis"]
    if n.opset >= 13:
        return [Softmax(axis)]
    rank = n.rank()   # before opset 13 Softmax flattens from ``axis`` on: the same only on the last axis
    if axis == -1 or (rank is not None and axis == rank - 1):
        return [Softmax(-1)]
    raise n.fail(f"axis={axis} at opset {n.opset} normalises over all axes from {axis} on; supported: the last "
                 f"axis only")


def _dropout(n: _Node) -> list[Module]:
    a = n.attrs(ratio=0.5, seed=0, is_test=1)
    ratio = n.constant(1, required=False)
    training = n.constant(2, required=False)
    if training is not None and bool(np.asarray(training)):
        raise n.fail("training_mode is true; only inference is supported")
    return [Dropout(float(a["ratio"] if ratio is None else ratio))]


def _no_attributes(layer: Callable[[], Module]) -> Callable[[_Node], list[Module]]:
    def handler(n: _Node) -> list[Module]:
        n.attrs()
        return [layer()] if layer is not None else []
    return handler


_HANDLERS: dict[str, Callable[[_Node], list[Module]]] = {
    "Gemm": _gemm, "MatMul": _matmul, "Add": _elementwise, "Sub": _elementwise, "Mul": _elementwise,
    "Div": _elementwise, "Conv": _conv, "Relu": _no_attributes(ReLU), "Sigmoid": _no_attributes(Sigmoid),
    "Tanh": _no_attributes(Tanh), "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _no_attributes(GlobalAvgPool2d), "BatchNormalization": _batchnorm,
    "Flatten": _flatten, "Reshape": _reshape, "Softmax": _softmax, "Identity": _no_attributes(None),
    "Dropout": _dropout,
}
SUPPORTED_OPS = tuple(_HANDLERS)


def from_onnx(model) -> Sequential:
    """An ONNX model (a path, serialized bytes or a ``onnx.ModelProto``) as a Sequential with its
    initializers loaded (the owner's values). Raises ``OnnxImportError`` for what is not supported
    (see the module docstring) and ImportError without the ``onnx`` package."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise ImportError('from_onnx needs the onnx package: pip install "mpcnp[ml]"') from exc
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"from_onnx takes a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxImportError(f"the graph must have one input and one output, got inputs {inputs} and outputs "
                              f"{[o.name for o in graph.output]}")
    used = [name for node in graph.node for name in node.input] + [graph.output[0].name]
    ranks = _ranks(onnx, model)
    current, layers = inputs[0], []
    for index, node in enumerate(graph.node):
        attributes = {a.name: _attribute(helper, a) for a in node.attribute}
        n = _Node(node, index, attributes, constants, ranks, opset)
        if node.domain not in ("", "ai.onnx"):
            raise n.fail(f"domain {node.domain!r} is not supported (only the default domain)")
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant(n)
            continue
        if node.op_type not in _HANDLERS:
            raise n.fail(f"operator not supported; supported: {', '.join(SUPPORTED_OPS)}")
        computed = [name for name in node.input if name and name not in constants]
        if computed != [current]:
            raise n.fail(f"its computed inputs are {computed}, but only a chain is supported: each node takes "
                         f"the previous node's output {current!r} and constants")
        extra = [name for name in node.output[1:] if name and name in used]
        if extra:
            raise n.fail(f"its extra output {extra[0]!r} is used; only the first output is supported")
        layers.extend(_HANDLERS[node.op_type](n))
        current = node.output[0]
    if current != graph.output[0].name:
        raise OnnxImportError(f"the graph's output {graph.output[0].name!r} is not the end of the chain of nodes "
                              f"({current!r})")
    return Sequential(*_fold_constants(layers))


def _attribute(helper, attribute):
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    return list(value) if isinstance(value, (list, tuple)) else value


def _constant(n: _Node) -> np.ndarray:
    from onnx import numpy_helper
    if "value" in n.attributes:
        return numpy_helper.to_array(n.attributes["value"])
    for name in ("value_float", "value_floats", "value_int", "value_ints"):
        if name in n.attributes:
            return np.asarray(n.attributes[name])
    raise n.fail(f"supported constants: value, value_float(s), value_int(s); got {sorted(n.attributes)}")


def _ranks(onnx, model) -> dict[str, int]:
    """Tensor name -> rank, where ONNX's shape inference knows it (used only to resolve axes)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - inference is a convenience; an axis that needs it fails clearly later
        return {}
    ranks = {}
    for info in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            ranks[info.name] = len(tensor.shape.dim)
    return ranks


def _per_output(n: _Node | None, value: np.ndarray, count: int, ndim: int) -> np.ndarray | None:
    """``value`` as a (count,) vector if it broadcasts along axis 1 of an ndim-dimensional output with
    ``count`` entries there (a bias or scale per output); else None (or an error if ``n`` is given)."""
    value = np.asarray(value, dtype=np.float64)
    padded = (1,) * (ndim - value.ndim) + value.shape if value.ndim <= ndim else None
    if padded is None or padded[0] != 1 or padded[1] not in (1, count) or any(d != 1 for d in padded[2:]):
        if n is not None:
            raise n.fail(f"a constant of shape {value.shape} does not apply per output of {count}")
        return None
    return np.broadcast_to(value.reshape(-1), (count,)).copy()


def _fold_constants(layers: list[Module]) -> list[Module]:
    """Merge each Affine into the Dense, Conv2d or Affine before it where it acts per output."""
    merged: list[Module] = []
    for layer in layers:
        combined = _merge(merged[-1], layer) if merged and isinstance(layer, Affine) else None
        if combined is None:
            merged.append(layer)
        else:
            merged[-1] = combined
    return merged


def _merge(before: Module, affine: Affine) -> Module | None:
    values = affine._values
    weight = values.get("weight") if affine.scale else None
    bias = values.get("bias") if affine.shift else None
    if isinstance(before, (Dense, Conv2d)):
        count, ndim = (before.out_features, 2) if isinstance(before, Dense) else (before.out_channels, 4)
        scale = np.ones(count) if weight is None else _per_output(None, weight, count, ndim)
        shift = np.zeros(count) if bias is None else _per_output(None, bias, count, ndim)
        if scale is None or shift is None:
            return None
        w = before.param("weight")
        w = w * scale if isinstance(before, Dense) else w * scale.reshape(-1, 1, 1, 1)
        return before._with_values({"weight": w, "bias": before.param("bias") * scale + shift})
    if isinstance(before, Affine) and before.axis is None:
        w1 = before._values["weight"] if before.scale else np.ones(())
        b1 = before._values["bias"] if before.shift else np.zeros(())
        w2 = np.ones(()) if weight is None else weight
        b2 = np.zeros(()) if bias is None else bias
        shape = np.broadcast_shapes(w1.shape, b1.shape, w2.shape, b2.shape)
        scale, shift = before.scale or affine.scale, before.shift or affine.shift
        values = {}
        if scale:
            values["weight"] = np.broadcast_to(w1 * w2, shape)
        if shift:
            values["bias"] = np.broadcast_to(b1 * w2 + b2, shape)
        return _loaded(Affine(shape, scale=scale, shift=shift), **values)
    return None
