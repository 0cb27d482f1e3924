"""nn models as JSON data: ``Module.spec`` and ``nn.from_spec`` give back the same architecture for
every layer, hyperparameters set after construction included; ``from_spec`` refuses untrusted
descriptions with errors that say where; ``folded`` computes the same function with the BatchNorms
folded; ``with_parameters`` and ``Sequential.infer`` (what ``predict`` reveals)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import error_bound

import mpcnp as mp
from mpcnp import nn


def _every_layer() -> nn.Sequential:
    pool = nn.MaxPool2d(2, 1)
    pool.pond_scale = 4                 # as nn.calibrate sets it
    model = nn.Sequential(
        nn.Conv2d(1, 3, (3, 2), stride=(1, 2), padding=((1, 1), (0, 1))), nn.BatchNorm(3, eps=1e-3), nn.ReLU(16),
        pool, nn.Dropout(0.25), nn.BatchNorm(3), nn.AvgPool2d(2), nn.Affine((3, 1, 1), scale=False),
        nn.Sequential(nn.GlobalAvgPool2d(), nn.Flatten(), nn.Sequential(nn.Reshape((3, 1)), nn.Flatten(axis=1))),
        nn.Dense(3, 4), nn.Tanh(), nn.Affine((4,), axis=1), nn.Sigmoid(), nn.Dense(4, 3), nn.Softmax(axis=1))
    model.class_scale, model.classes = 2.0, np.array(["a", "b", "c"])
    return model


def _load(model: nn.Sequential, seed: int) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return model.load_state_dict({name: rng.uniform(0.5, 2.0, shape) if name.endswith("running_var") else
                                  rng.normal(scale=0.5, size=shape) for name, shape in model.parameter_shapes().items()})


def test_every_layer_comes_back_from_its_json_spec():
    model = _every_layer()
    text = json.dumps(model.spec())
    built = nn.from_spec(json.loads(text))
    assert repr(built) == repr(model) and json.dumps(built.spec()) == text
    assert built[3].pond_scale == 4 and built.class_scale == 2.0 and list(built.classes) == ["a", "b", "c"]
    assert built.parameter_shapes() == model.parameter_shapes()
    assert all(value is None for value in built.parameters())     # the architecture only
    x = np.random.default_rng(1).normal(size=(2, 1, 6, 6))
    np.testing.assert_array_equal(_load(built, 7).forward_plain(x), _load(model, 7).forward_plain(x))


def test_a_layer_whose_state_is_not_json_data_cannot_be_described():
    dense = nn.Dense(2, 2)
    dense.note = object()
    with pytest.raises(ValueError, match="Dense.note is a object"):
        dense.spec()
    dense.note = float("nan")
    with pytest.raises(ValueError, match="Dense.note is nan"):
        dense.spec()

    class Scaled(nn.ReLU):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self._factor = factor

    with pytest.raises(ValueError, match="argument 'factor' is not an attribute"):
        Scaled(2.0).spec()


def _in(obj, depth=1):
    for _ in range(depth):
        obj = {"type": "Sequential", "args": {"layers": [obj]}}
    return obj


@pytest.mark.parametrize("obj, message", [
    ([], r"the model: a layer is a JSON object with a \"type\""),
    ({"type": "Model"}, "the model: unknown layer type 'Model'; known: Affine, AvgPool2d"),
    ({"type": "Module"}, "unknown layer type 'Module'"),
    ({"type": "_Folded"}, "unknown layer type '_Folded'"),
    ({"type": "Dense", "args": {"in_features": 2}}, r"missing \['out_features'\]"),
    ({"type": "Dense", "args": {"in_features": 2, "out_features": 2, "bias": False}}, r"unexpected \['bias'\]"),
    ({"type": "Dense", "args": {"in_features": [2], "out_features": 2}}, r"the model \(Dense\): int\(\)"),
    ({"type": "Dense", "args": {"in_features": 2, "out_features": 2}, "weights": [1]}, "got keys"),
    ({"type": "Dense", "args": [2, 2]}, r"\"args\" and \"attrs\" \(objects\)"),
    (_in({"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 1, "kernel": "big"}}, 2),
     r"layer 0.0 \(Conv2d\): kernel must be an int or a pair"),
    (_in({"type": "ReLU", "args": {"bound": 0}}), r"layer 0 \(ReLU\): ReLU bound must be"),
    (_in({"type": "Dropout", "args": {"p": "half"}}), r"layer 0 \(Dropout\)"),
    (_in({"type": "MaxPool2d", "args": {"kernel": 2}, "attrs": {"pond_scale": "x"}}), "pond_scale must be like 1"),
    (_in({"type": "MaxPool2d", "args": {"kernel": 2}, "attrs": {"pond_scale": 1e999}}), "pond_scale must be like"),
    (_in({"type": "MaxPool2d", "args": {"kernel": 2}, "attrs": {"kernel": [3, 3]}}), "no attribute 'kernel'"),
    (_in({"type": "MaxPool2d", "args": {"kernel": 2}, "attrs": {"_shapes": {}}}), "no attribute '_shapes'"),
    (_in({"type": "MaxPool2d", "args": {"kernel": 2}, "attrs": {"forward": 1}}), "no attribute 'forward'"),
    ({"type": "Sequential", "args": {"layers": {}}}, "its only argument is \"layers\", a list"),
    ({"type": "Sequential", "args": {"layers": []}, "attrs": {"class_scale": 0}}, "class_scale must be a positive"),
    ({"type": "Sequential", "args": {"layers": []}, "attrs": {"classes": [[1]]}}, "classes must be null or a list"),
    (_in({"type": "Tanh"}, 17), "nest at most 16 deep"),
    ({"type": "Sequential", "args": {"layers": [{"type": "Tanh"}] * 1025}}, "at most 1024 layers"),
])
def test_from_spec_refuses_bad_descriptions_saying_where(obj, message):
    with pytest.raises(ValueError, match=message):
        nn.from_spec(obj)


def test_folded_computes_the_same_function_without_batch_norms():
    model = _load(_every_layer(), 3)
    folded = model.folded()
    kinds = [type(layer).__name__ for layer in folded]
    # the first BatchNorm folds into the convolution; the second (after pooling) becomes an Affine
    assert "BatchNorm" not in kinds and kinds[:4] == ["Conv2d", "ReLU", "MaxPool2d", "Dropout"]
    assert kinds[4] == "Affine" and folded.class_scale == 2.0 and folded[2].pond_scale == 4
    x = np.random.default_rng(4).normal(size=(3, 1, 6, 6))
    np.testing.assert_allclose(folded.forward_plain(x), model.forward_plain(x), rtol=1e-9, atol=1e-12)
    assert model[1].eps == 1e-3 and isinstance(model[1], nn.BatchNorm)          # the model itself is untouched
    with pytest.raises(ValueError, match="has no value"):
        _every_layer().folded()


def test_with_parameters_checks_names_and_shapes():
    model = nn.Sequential(nn.Dense(2, 3))
    with pytest.raises(KeyError, match=r"missing \['0.bias'\]"):
        model.with_parameters({"0.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="expected shape"):
        model.with_parameters({"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(3)})
    loaded = model.with_parameters({"0.weight": np.ones((2, 3)), "0.bias": np.zeros(3)})
    np.testing.assert_array_equal(loaded.forward_plain(np.ones((1, 2))), [[2.0, 2.0, 2.0]])
    assert model.parameters() == [None, None]


@pytest.mark.parametrize("output", ["logits", "class"])
def test_infer_is_what_predict_reveals(output):
    rng = np.random.default_rng(6)
    # a Softmax only where the class skips it (its approximation's error would dwarf the comparison)
    layers = [nn.Dense(4, 5), nn.ReLU(), nn.Dense(5, 3)] + ([nn.Softmax()] if output == "class" else [])
    model = _load(nn.Sequential(*layers), 8)
    model.class_scale = 4.0
    x = rng.normal(size=(5, 4))

    def program():
        data = mp.private(lambda: x, owner="alice")
        private = model.private("alice")
        return private.infer(data, output).reveal(), private.predict(data, output)

    inferred, predicted = mp.run(program, parties=["alice"], truncation="exact")["alice"]
    if output == "class":
        inferred = np.rint(inferred).astype(np.int64)
        np.testing.assert_array_equal(inferred, model.predict_plain(x, "class"))
        np.testing.assert_array_equal(inferred, predicted)
    else:   # two passes, each within its truncations' error of the plaintext logits
        bound = error_bound(model, x)
        assert np.all(np.abs(inferred - model.forward_plain(x)) <= bound)
        assert np.all(np.abs(predicted - model.forward_plain(x)) <= bound)
