"""An nn model built back from its JSON description (``Module.spec``): ``from_spec``.

The description may come from someone else (a client uploading a model to a service), so it is
checked as untrusted data: only the layer classes of mpcnp.nn, only their constructors' arguments
(each constructor checks its values), only the public attributes a fresh layer already has (of the
same kind of value), at most ``MAX_LAYERS`` layers nested at most ``MAX_DEPTH`` deep. Every problem
is a ValueError naming where it is ("layer 2.0 (Conv2d): ...").
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np

from mpcnp.nn import activations, layers, shaping
from mpcnp.nn.module import Module
from mpcnp.nn.sequential import Sequential

__all__ = ["from_spec", "LAYER_TYPES", "MAX_LAYERS", "MAX_DEPTH"]

MAX_LAYERS = 1024
MAX_DEPTH = 16
# Every public layer class of mpcnp.nn, by name: a description names one of these or nothing.
LAYER_TYPES: dict[str, type] = {
    name: cls for module in (layers, activations, shaping) for name, cls in vars(module).items()
    if isinstance(cls, type) and issubclass(cls, Module) and cls.__module__ == module.__name__
    and not name.startswith("_")}
LAYER_TYPES["Sequential"] = Sequential


def from_spec(obj: Any) -> Module:
    """The model (architecture only: no parameter values) that ``obj``, a ``Module.spec()`` decoded
    from JSON, describes. ValueError saying what is wrong and where, for anything else."""
    return _build(obj, "", [0])


def _build(obj: Any, path: str, count: list[int]) -> Module:
    """The layer at ``path`` ("" for the model, "2.0" for the first layer of its third)."""
    where = f"layer {path}" if path else "the model"
    depth = path.count(".") + bool(path)
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: models nest at most {MAX_DEPTH} deep")
    count[0] += 1
    if count[0] > MAX_LAYERS:
        raise ValueError(f"a model has at most {MAX_LAYERS} layers")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValueError(f"{where}: a layer is a JSON object with a \"type\", got {_short(obj)}")
    kind = obj["type"]
    cls = LAYER_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"{where}: unknown layer type {_short(kind)}; known: {', '.join(sorted(LAYER_TYPES))}")
    where = f"{where} ({kind})"
    unknown = sorted(set(obj) - {"type", "args", "attrs"})
    args, attrs = obj.get("args", {}), obj.get("attrs", {})
    if unknown or not isinstance(args, dict) or not isinstance(attrs, dict):
        raise ValueError(f"{where}: a layer has \"type\", \"args\" and \"attrs\" (objects), got keys {sorted(obj)}")
    if cls is Sequential:
        return _sequential(args, attrs, where, path, count)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [p.name for p in params if p.name in names and p.default is p.empty and p.name not in args]
    if set(args) - names or missing:
        raise ValueError(f"{where}: arguments are {sorted(names) or 'none'} (missing {missing or 'none'}, "
                         f"unexpected {sorted(set(args) - names) or 'none'})")
    try:
        layer = cls(**{name: _tuples(value) for name, value in args.items()})
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    for name, value in attrs.items():
        _set_attribute(layer, name, value, names, where)
    return layer


def _sequential(args: dict, attrs: dict, where: str, path: str, count: list[int]) -> Sequential:
    children = args.get("layers")
    if set(args) != {"layers"} or not isinstance(children, list):
        raise ValueError(f"{where}: its only argument is \"layers\", a list")
    model = Sequential(*[_build(child, f"{path}.{i}" if path else str(i), count) for i, child in enumerate(children)])
    if set(attrs) - {"class_scale", "classes"}:
        raise ValueError(f"{where}: attributes are class_scale and classes, got {sorted(attrs)}")
    scale = attrs.get("class_scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}: class_scale must be a positive number, got {_short(scale)}")
    classes = attrs.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(
            isinstance(c, (int, float, str)) and not isinstance(c, bool) for c in classes)):
        raise ValueError(f"{where}: classes must be null or a list of labels, got {_short(classes)}")
    model.class_scale = scale
    model.classes = None if classes is None else np.array(classes)
    return model


def _set_attribute(layer: Module, name: str, value: Any, arguments: set[str], where: str) -> None:
    """Set a hyperparameter that a fresh layer already has (e.g. MaxPool2d's pond_scale): never a
    constructor argument (the constructor checks those), a private name or a method, and only to a
    value of the same kind (a finite number for a number)."""
    if name.startswith("_") or name in arguments or name not in vars(layer):
        raise ValueError(f"{where}: no attribute {_short(name)} to set")
    current = vars(layer)[name]
    if value is None and current is None:
        return
    number = (int, float)
    same = (isinstance(current, number) and not isinstance(current, bool) and isinstance(value, number)
            and not isinstance(value, bool) and math.isfinite(value)) or \
        (type(current) in (bool, str) and type(value) is type(current)) or \
        (isinstance(current, (tuple, list)) and isinstance(value, list) and len(value) == len(current))
    if not same:
        raise ValueError(f"{where}: attribute {name} must be like {current!r}, got {_short(value)}")
    setattr(layer, name, tuple(value) if isinstance(current, tuple) else value)


def _tuples(value: Any) -> Any:
    """JSON lists as the tuples a constructor is given in Python (a kernel (3, 3), a padding ((1, 1), (0, 1)))."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
