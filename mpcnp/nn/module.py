"""``Module``: what every layer and model of mpcnp.nn shares: named parameters and their life cycle.

A module is an architecture (which every party builds identically) plus parameter values (which only
the model's owner holds). Values live in one per-instance dict, name -> value, where a value is

- a float64 ndarray (a plaintext model: the owner's, or a public one),
- None (the architecture alone: a party other than the owner, or a model not yet loaded),
- a PrivateTensor (inside ``mp.run``, after ``private(owner)``).

``state_dict`` / ``load_state_dict`` move plaintext values by name ("weight", or "0.weight" inside a
``Sequential``); ``private(owner)`` secret-shares them, the owner alone reading them; ``reveal(to)``
opens a private model's values to chosen parties. Layers implement ``forward`` (on private and
public tensors alike, through the public API ``import mpcnp as mp`` only) and ``forward_plain`` (the
same function in NumPy float64: the reference a private result is compared with). ``spec()``
describes the architecture as JSON data (``nn.from_spec`` builds it back) and ``folded()`` gives the
plaintext model a service runs.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Iterator

import numpy as np

import mpcnp as mp
from mpcnp.nn import training

__all__ = ["Module", "plain_input", "to_json"]


class Module:
    """Base class of layers and models. Subclasses declare parameters in ``__init__`` with
    ``self.declare(name, shape)`` and implement ``forward`` and ``forward_plain``."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    # ---- declaring and reading parameters -----------------------------------------------------
    def declare(self, name: str, shape: tuple[int, ...]) -> None:
        """Declare a parameter ``name`` of ``shape`` (no value yet)."""
        self._shapes[name] = tuple(int(d) for d in shape)
        self._values[name] = None

    def param(self, name: str):
        """The value of parameter ``name`` for a forward pass; ValueError if this party has none."""
        value = self._values[name]
        if value is None:
            raise ValueError(f"{type(self).__name__} parameter {name!r} has no value on this party: load the "
                             f"owner's values with load_state_dict, then share them with model.private(owner)")
        return value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """(name, value) for every parameter, in declaration order; names carry ``prefix``."""
        for name, value in self._values.items():
            yield prefix + name, value

    def parameter_shapes(self, prefix: str = "") -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter (known to every party from the architecture alone)."""
        return {prefix + name: shape for name, shape in self._shapes.items()}

    def parameters(self) -> list:
        """Every parameter's value (ndarray, PrivateTensor or None), in ``state_dict`` order."""
        return [value for _, value in self.named_parameters()]

    # ---- plaintext values ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Name -> a copy of the value (float64 ndarray). ValueError if a value is missing or private
        (a private model's values are opened with ``reveal``)."""
        state = {}
        for name, value in self.named_parameters():
            if value is None:
                raise ValueError(f"parameter {name!r} has no value on this party (the architecture only)")
            if isinstance(value, mp.PrivateTensor):
                raise ValueError(f"parameter {name!r} is private: open it with model.reveal(to=...)")
            state[name] = np.array(value, dtype=np.float64)
        return state

    def load_state_dict(self, state: dict) -> "Module":
        """Set every parameter from ``state`` (name -> array-like), checking that the names are exactly
        this model's and that each shape matches and each value is finite. Returns self."""
        shapes = self.parameter_shapes()
        missing = [name for name in shapes if name not in state]
        unexpected = [name for name in state if name not in shapes]
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing {missing or 'none'}, "
                           f"unexpected {unexpected or 'none'} (parameters: {', '.join(shapes) or 'none'})")
        checked = {}
        for name, shape in shapes.items():
            value = np.array(state[name], dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"parameter {name!r}: expected shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"parameter {name!r} holds non-finite values")
            checked[name] = value
        self.check_values(checked)
        self._assign(checked)
        return self

    def check_values(self, values: dict[str, np.ndarray], prefix: str = "") -> None:
        """Raise ValueError if ``values`` (every parameter, float64, shapes checked) are not valid for
        this layer beyond their shapes; names in messages carry ``prefix``. Default: all are valid."""

    def _assign(self, values: dict[str, Any]) -> None:
        """Set values by (prefixed) name; containers route names to their children."""
        for name, value in values.items():
            self._values[name] = value

    # ---- copies --------------------------------------------------------------------------------
    def architecture(self) -> "Module":
        """A copy with no parameter values: what parties other than the owner need (hyperparameters
        such as Pond's ReLU bounds included)."""
        clone = copy.deepcopy(self, memo={id(v): None for _, v in self.named_parameters()})
        clone._assign({name: None for name in clone.parameter_shapes()})
        return clone

    def _with_values(self, values: dict[str, Any]) -> "Module":
        """A copy of this architecture holding ``values`` (name -> value, every parameter)."""
        clone = self.architecture()
        clone._assign(values)
        return clone

    def with_parameters(self, values: dict[str, Any]) -> "Module":
        """A copy of this architecture holding ``values``: name -> PrivateTensor, PublicTensor or
        ndarray, exactly this model's parameter names, each of its declared shape (a service's
        private parameters, already shared). KeyError / ValueError otherwise."""
        shapes = self.parameter_shapes()
        if set(values) != set(shapes):
            raise KeyError(f"{type(self).__name__}.with_parameters: missing {sorted(set(shapes) - set(values))}, "
                           f"unexpected {sorted(set(values) - set(shapes))}")
        for name, value in values.items():
            if tuple(getattr(value, "shape", ())) != shapes[name]:
                raise ValueError(f"parameter {name!r}: expected shape {shapes[name]}, got {getattr(value, 'shape', ())}")
        return self._with_values(dict(values))

    def folded(self) -> "Module":
        """A plaintext copy for inference, the same function with what the owner can compute ahead
        computed (``Sequential`` folds each BatchNorm into the layer before it): what a service is
        given to run. Default: a copy. Needs every value (a plaintext model)."""
        return self._with_values(self.state_dict())

    # ---- the architecture as JSON (mpcnp.nn.architecture builds it back) -----------------------
    def spec(self) -> dict:
        """The architecture as a JSON-able dict: {"type": the class name, "args": the constructor's
        arguments, read back from the attributes of the same names, "attrs": the other public
        attributes (hyperparameters set after construction, e.g. ``nn.calibrate``'s scales)}. No
        parameter values. ValueError for a layer whose constructor arguments are not kept under
        their names or whose attributes are not JSON data."""
        kind = type(self).__name__
        args = {}
        for name, param in list(inspect.signature(type(self).__init__).parameters.items())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(self, name):
                raise ValueError(f"{kind} cannot be described: its constructor argument {name!r} is not an "
                                 f"attribute of the same name (override spec)")
            args[name] = to_json(getattr(self, name), f"{kind}.{name}")
        attrs = {name: to_json(value, f"{kind}.{name}") for name, value in vars(self).items()
                 if not name.startswith("_") and name not in args}
        return {"type": kind, "args": args, "attrs": attrs}

    # ---- private models -----------------------------------------------------------------------
    def private(self, owner: str) -> "Module":
        """A copy whose parameters are private tensors shared by ``owner`` (call inside ``mp.run``, on
        every party). Only ``owner`` reads the values; every other party needs only the architecture.
        Cost: one ``mp.private`` per parameter (its ring elements, owner to server1)."""
        shared = {name: mp.private(lambda name=name, value=value: _owned(name, value), owner=owner)
                  for name, value in self.named_parameters()}
        return self._with_values(shared)

    def reveal(self, to=None) -> dict[str, np.ndarray] | None:
        """A private model's parameters opened to ``to`` (None: every party; a name or a list): the
        state dict as ndarrays on the receivers, None on the others. Public values pass through."""
        opened = {}
        for name, value in self.named_parameters():
            if value is None:
                raise ValueError(f"parameter {name!r} has no value to reveal")
            opened[name] = (value.reveal(to=to) if isinstance(value, mp.PrivateTensor)
                            else mp.public(value).reveal(to=to))
        if any(v is None for v in opened.values()):
            return None
        return opened

    # ---- forward passes ------------------------------------------------------------------------
    def __call__(self, x):
        """The forward pass on a private or public tensor (or a NumPy array, as public)."""
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} defines no forward pass")

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} defines no plaintext forward pass")

    # ---- training (mpcnp.nn.training) ---------------------------------------------------------
    def fit(self, x, y, **kwargs) -> dict | None:
        """Train this private model on rows ``x``, ``y``: ``nn.fit(self, x, y, ...)`` (epochs,
        batch_size, loss, optimizer, progress, shuffle, seed, report_to, metrics; see there for
        what it reveals: nothing unless ``report_to`` names parties)."""
        return training.fit(self, x, y, **kwargs)

    def evaluate(self, x, y, **kwargs) -> dict | None:
        """Loss and/or accuracy on rows ``x``, ``y``, revealed to ``to``: ``nn.evaluate(self, ...)``."""
        return training.evaluate(self, x, y, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


def _owned(name: str, value) -> np.ndarray:
    """The owner's value of parameter ``name`` (evaluated on the owner only)."""
    if value is None:
        raise ValueError(f"parameter {name!r} has no value on its owner: call load_state_dict there first")
    if isinstance(value, mp.PrivateTensor):
        raise ValueError(f"parameter {name!r} is already private")
    return value() if callable(value) else value


def to_json(value: Any, what: str) -> Any:
    """``value`` as JSON data (tuples and arrays as lists, NumPy scalars as Python ones); ValueError
    naming ``what`` for anything else, a non-finite float included."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} is {value}: not JSON data")
        return value
    if isinstance(value, (list, tuple)):
        return [to_json(item, what) for item in value]
    raise ValueError(f"{what} is a {type(value).__name__}, which a model spec cannot hold")


def plain_input(x) -> np.ndarray:
    """A plaintext forward pass's input as float64 (ValueError for non-finite values)."""
    array = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("the input holds non-finite values")
    return array
