"""``Sequential``: layers applied in order, with exact rewrites that save comparisons, and the end of a
prediction (logits or only the class) revealed to the party entitled to it.

Parameters are named by position: "0.weight", "2.bias" (nested models: "1.0.weight").

Rewrites (``plan``), applied to every forward pass on tensors; ``forward_plain`` runs the layers as
written, so tests compare the rewritten private pass with the model as the user wrote it:
- Dropout is dropped (the identity at inference).
- A ReLU moves after any MaxPool2d, Flatten and Reshape that follow it: max and ReLU commute
  (ReLU(max S) = max ReLU(S) for any window S, ReLU being monotone), and the two layout layers only move
  elements. After a 2x2 max pool that is 4 comparisons per window instead of 7.
- Adjacent ReLUs merge into the first (ReLU is idempotent).
- A BatchNorm right after a Dense or Conv2d (Dropout between allowed) is folded into it by ``private``:
  the owner computes the folded weights in float64 before sharing; nothing is left to run.
- For ``output="class"``: a trailing Softmax or Sigmoid is skipped. Both are increasing, so the argmax
  is the same, and for one output column sigmoid(x) > 1/2 exactly when x > 0.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

import mpcnp as mp
from mpcnp.nn.activations import ReLU, Sigmoid, Softmax
from mpcnp.nn.layers import Affine, BatchNorm, Conv2d, Dense
from mpcnp.nn.module import Module, plain_input, to_json
from mpcnp.nn.shaping import Dropout, Flatten, MaxPool2d, Reshape
from mpcnp.runtime.context import current

__all__ = ["Sequential", "classify", "OUTPUTS"]

OUTPUTS = ("logits", "class")
_RELU_COMMUTES_WITH = (MaxPool2d, Flatten, Reshape)


class _Folded(Module):
    """Where a BatchNorm stood in a private model once folded into the layer before it: nothing runs."""

    def forward(self, x):
        return x

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        return plain_input(x).copy()


class Sequential(Module):
    """Layers applied in order.

    ``class_scale`` (positive, default 1): the logits are multiplied by it before the class is taken
    (``classify``), so that under Pond the gaps between logits fall where Pond's step is accurate,
    [-16, 16] outside (-0.25, 0.25); ``nn.calibrate`` sets it from the owner's data.
    ``classes``: the labels of the classes (class index -> label) when known (``from_sklearn`` sets
    them), else None.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not an nn.Module")
        self.layers: list[Module] = list(layers)
        self.class_scale: float = 1
        self.classes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    # ---- parameters by name -------------------------------------------------------------------
    def named_layers(self) -> Iterator[tuple[str, Module]]:
        """Every layer that is not a Sequential, nested ones flattened, with its position ("2.1": the
        second layer of the third), in order."""
        return _named_leaves(self.layers)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for i, layer in enumerate(self.layers):
            yield from layer.named_parameters(f"{prefix}{i}.")

    def parameter_shapes(self, prefix: str = "") -> dict[str, tuple[int, ...]]:
        shapes = {}
        for i, layer in enumerate(self.layers):
            shapes.update(layer.parameter_shapes(f"{prefix}{i}."))
        return shapes

    def check_values(self, values: dict[str, np.ndarray], prefix: str = "") -> None:
        for i, layer in enumerate(self.layers):
            mine = f"{i}."
            layer.check_values({name[len(mine):]: value for name, value in values.items() if name.startswith(mine)},
                               prefix + mine)

    def _assign(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            index, _, rest = name.partition(".")
            self.layers[int(index)]._assign({rest: value})

    # ---- private models -----------------------------------------------------------------------
    def private(self, owner: str) -> "Sequential":
        """A copy whose parameters are private tensors shared by ``owner``, BatchNorms folded into the
        Dense or Conv2d before them (by the owner, in float64, before sharing). Call inside ``mp.run``
        on every party; only ``owner`` needs values."""
        folds = {i: j for i in range(len(self.layers)) if (j := _foldable_target(self.layers, i)) is not None}
        folded_into = {j: i for i, j in folds.items()}
        shared: list[Module] = []
        for i, layer in enumerate(self.layers):
            if i in folds:
                shared.append(_Folded())
            elif i in folded_into:
                shared.append(self.layers[folded_into[i]].fold_into(layer).private(owner))
            else:
                shared.append(layer.private(owner))
        model = Sequential(*shared)
        model.class_scale, model.classes = self.class_scale, self.classes
        return model

    def folded(self) -> "Sequential":
        """A plaintext copy computing the same function, each BatchNorm folded as ``private`` folds it
        (into the Dense or Conv2d before it, or else turned into its ``Affine`` map), in float64:
        what a service is given to run. Parameter names follow the new positions."""
        self.state_dict()     # ValueError now if a value is missing or private
        folds = {i: j for i in range(len(self.layers)) if (j := _foldable_target(self.layers, i)) is not None}
        folded_into = {j: i for i, j in folds.items()}
        layers: list[Module] = []
        for i, layer in enumerate(self.layers):
            if i in folds:
                continue
            if i in folded_into:
                layer = self.layers[folded_into[i]].fold_into(layer)
                layers.append(layer._with_values({name: value() for name, value in layer.named_parameters()}))
            elif isinstance(layer, BatchNorm):
                scale, shift = layer.affine_values()
                layers.append(Affine((layer.num_features,), axis=1)._with_values({"weight": scale, "bias": shift}))
            else:
                layers.append(layer.folded())
        model = Sequential(*layers)
        model.class_scale, model.classes = self.class_scale, self.classes
        return model

    def spec(self) -> dict:
        """The architecture as JSON data (see ``Module.spec``): the layers' specs in order, and the
        model's ``class_scale`` and ``classes``."""
        return {"type": "Sequential", "args": {"layers": [layer.spec() for layer in self.layers]},
                "attrs": {"class_scale": to_json(self.class_scale, "Sequential.class_scale"),
                          "classes": to_json(self.classes, "Sequential.classes")}}

    # ---- forward passes -----------------------------------------------------------------------
    def plan(self, output: str = "logits") -> list[Module]:
        """The layers a forward pass runs, after the rewrites of the module docstring."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        layers = [layer for layer in _flatten(self.layers) if not isinstance(layer, (Dropout, _Folded))]
        moved = True
        while moved:    # bubble every ReLU past the layers it commutes with
            moved = False
            for i in range(len(layers) - 1):
                if isinstance(layers[i], ReLU) and isinstance(layers[i + 1], _RELU_COMMUTES_WITH):
                    layers[i], layers[i + 1] = layers[i + 1], layers[i]
                    moved = True
        merged: list[Module] = []
        for layer in layers:
            # a ReLU right after a ReLU goes; the first stays, with its bound (its input bounds the second's)
            if not (isinstance(layer, ReLU) and merged and isinstance(merged[-1], ReLU)):
                merged.append(layer)
        if output == "class" and merged and isinstance(merged[-1], (Softmax, Sigmoid)):
            merged.pop()   # classify decides on the logits; see the module docstring
        return merged

    def forward(self, x, output: str = "logits"):
        """The layers of ``plan`` on x; a Dense or Conv2d followed by a ReLU runs as one step
        (``forward_relu``: the product's truncation fused into the comparison, one round less under
        securenn with exact truncation), except in a validating run, which checks every layer alone."""
        layers, i = self.plan(output), 0
        fuse = not _validating()
        while i < len(layers):
            layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            if fuse and isinstance(layer, (Dense, Conv2d)) and isinstance(after, ReLU):
                x, i = layer.forward_relu(x, after.bound), i + 2
            else:
                x, i = layer(x), i + 1
        return x

    def forward_plain(self, x: np.ndarray) -> np.ndarray:
        """The layers as written, in NumPy float64 (no rewrites)."""
        x = plain_input(x)
        for layer in self.layers:
            x = layer.forward_plain(x)
        return x

    def predict_plain(self, x: np.ndarray, output: str = "logits") -> np.ndarray:
        """``forward_plain``, or for ``output="class"`` the class each sample gets (as ``classify``)."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        layers = [layer for layer in _flatten(self.layers) if not isinstance(layer, (Dropout, _Folded))]
        if output == "class" and layers and isinstance(layers[-1], (Softmax, Sigmoid)):
            layers = layers[:-1]     # as ``plan``: the class is decided on the logits
        logits = plain_input(x)
        for layer in layers:
            logits = layer.forward_plain(logits)
        if output == "logits":
            return logits
        if logits.ndim == 1 or logits.shape[-1] == 1:
            return (logits.reshape(logits.shape[0]) > 0).astype(np.int64)
        return np.argmax(logits, axis=-1)

    def predict(self, x, output: str = "logits", to=None):
        """The model on ``x`` (private or public), revealed to ``to`` (None: every party; a name or a
        list). ``output="logits"``: the last layer's values (float64). ``output="class"``: only the
        class of each sample (int64): ``classify`` on the logits, so the receivers learn the label and
        nothing more. Returns the array on the receivers, None on the others."""
        value = _reveal(self.infer(x, output), to)
        if output == "logits" or value is None:
            return value
        return np.rint(value).astype(np.int64)

    def infer(self, x, output: str = "logits"):
        """What ``predict`` reveals, as a tensor: the logits (``output="logits"``) or each sample's
        class (``"class"``: ``classify`` on the logits, shape (N,)), private for a private x or model."""
        logits = self.forward(x, output)
        return logits if output == "logits" else classify(logits, self.class_scale)

    def extra_repr(self) -> str:
        return ", ".join(repr(layer) for layer in self.layers)


def _validating() -> bool:
    """Whether the calling party's run checks every operation (False outside a run)."""
    try:
        return current().config.validate
    except RuntimeError:
        return False


def classify(logits, class_scale: float = 1):
    """The class of each sample from its logits: argmax over the last axis (the first maximal one on
    ties, as NumPy), or, for one logit per sample ((N,) or (N, 1)), 1 where it is > 0 else 0 (as
    scikit-learn's binary classifiers). A private tensor of shape (N,).

    SecureNN: exact (argmax: ceil(log2 k) levels of one comparison with the index's product folded in, 245 bytes per
    comparison; one logit: a comparison, 213 bytes). Pond: the logits times ``class_scale`` go through
    the step polynomial, right when every gap between a sample's logits, times ``class_scale``, lies in
    [-16, 16] and the winning gap outside (-0.25, 0.25); ``nn.calibrate`` sizes ``class_scale``.
    """
    if class_scale != 1:
        logits = logits * float(class_scale)
    if len(logits.shape) == 1 or logits.shape[-1] == 1:
        return (logits > 0).reshape(logits.shape[0])
    if len(logits.shape) != 2:
        raise ValueError(f"classify expects logits of shape (N, classes), got {tuple(logits.shape)}")
    count = logits.shape[-1]
    if count % 2:
        # Pond's argmax fails on an odd number of candidates with more than one sample (its first
        # tournament level joins a public index column to a batch of them); a last candidate 1 below
        # (scaled) the last class never wins, and its gap sits where Pond's step is accurate.
        logits = mp.concat([logits, logits[:, count - 1:] - 1.0], axis=1)
    return mp.argmax(logits, axis=-1)


def _reveal(value, to):
    if isinstance(value, (mp.PrivateTensor, mp.PublicTensor)):
        return value.reveal(to=to)
    return mp.public(value).reveal(to=to)


def _flatten(layers: list[Module]) -> list[Module]:
    return [layer for _, layer in _named_leaves(layers)]


def _named_leaves(layers: list[Module], prefix: str = "") -> Iterator[tuple[str, Module]]:
    """The layers of nested Sequentials in order, each with its position ("0", "2.1", ...)."""
    for i, layer in enumerate(layers):
        if isinstance(layer, Sequential):
            yield from _named_leaves(layer.layers, f"{prefix}{i}.")
        else:
            yield f"{prefix}{i}", layer


def _foldable_target(layers: list[Module], i: int) -> int | None:
    """The index of the Dense or Conv2d that BatchNorm ``layers[i]`` folds into (Dropouts between
    skipped), or None if ``layers[i]`` is no such BatchNorm."""
    if not isinstance(layers[i], BatchNorm):
        return None
    j = i - 1
    while j >= 0 and isinstance(layers[j], Dropout):
        j -= 1
    if j < 0 or not isinstance(layers[j], (Dense, Conv2d)):
        return None
    outputs = layers[j].out_features if isinstance(layers[j], Dense) else layers[j].out_channels
    return j if outputs == layers[i].num_features else None
