"""Models for private inference (layer 7), built only on the public tensor API (``import mpcnp as mp``).

A model is an architecture every party builds identically plus parameter values only its owner
holds. Inside ``mp.run``, ``model.private(owner)`` secret-shares the parameters (only the owner reads
them) and returns a model whose forward pass runs on private and public tensors alike;
``model.forward_plain(x)`` runs the same architecture on NumPy arrays, for comparison.
``model.predict(x, output="logits" | "class", to=...)`` ends a prediction: the logits, or only the
class, revealed to the party entitled to it. Training: losses (``CrossEntropyLoss``, ...), the
optimizers of ``nn.optim`` and ``fit`` / ``evaluate`` (``model.fit``, ``model.evaluate``).

Models trained elsewhere come in through ``from_sklearn`` and ``from_onnx`` (the optional extra
``pip install "mpcnp[ml]"``); ``calibrate`` sizes what Pond's approximations need from the owner's
own data. ``model.spec()`` describes an architecture as JSON data and ``from_spec`` builds it back (a
model service builds the uploaded models so). See docs/api.md, "Models" and "Training".
"""
from mpcnp.nn.activations import ReLU, Sigmoid, Softmax, Tanh
from mpcnp.nn.architecture import from_spec
from mpcnp.nn.calibrate import Calibration, calibrate
from mpcnp.nn.onnx_import import OnnxImportError, from_onnx
from mpcnp.nn.sklearn_import import from_sklearn
from mpcnp.nn.layers import Affine, BatchNorm, Conv2d, Dense
from mpcnp.nn.module import Module
from mpcnp.nn.sequential import Sequential, classify
from mpcnp.nn.shaping import AvgPool2d, Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, Reshape
from mpcnp.nn import optim
from mpcnp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from mpcnp.nn.training import evaluate, fit

__all__ = ["Module", "Sequential", "Dense", "Conv2d", "BatchNorm", "Affine", "ReLU", "Sigmoid", "Tanh",
           "Softmax", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Reshape", "Dropout",
           "classify", "from_spec", "calibrate", "Calibration", "from_sklearn", "from_onnx", "OnnxImportError",
           "Loss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "optim", "fit", "evaluate"]
