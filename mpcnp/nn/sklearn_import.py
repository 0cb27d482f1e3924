"""``from_sklearn``: a fitted scikit-learn model as an ``nn.Sequential`` computing its decision
function (the logits), with the owner's values loaded.

Supported: MLPClassifier and MLPRegressor (activations relu, logistic, tanh, identity),
LogisticRegression (binary and multinomial or one-vs-rest), LinearSVC, LinearRegression and Ridge.
The model reads the estimator's fitted attributes (coefs_ / intercepts_, coef_ / intercept_) and
never imports scikit-learn, which stays an optional extra (``pip install "mpcnp[ml]"``).

What the model outputs, per estimator (always what ``predict`` is decided on):
- MLPClassifier: the output layer before its softmax or logistic: (N, classes), or (N, 1) for two
  classes; MLPRegressor: the predictions, (N,) or (N, targets).
- LogisticRegression, LinearSVC: ``decision_function``: (N, classes), or (N,) for two classes.
- LinearRegression, Ridge: ``predict``: (N,) or (N, targets).
``model.predict(x, output="class")`` gives the index into ``estimator.classes_`` (the argmax, or
logit > 0 for two classes, as scikit-learn decides); the returned model keeps those labels in
``model.classes``.
"""
from __future__ import annotations

import numpy as np

from mpcnp.nn.activations import ReLU, Sigmoid, Tanh
from mpcnp.nn.layers import Dense
from mpcnp.nn.module import Module
from mpcnp.nn.sequential import Sequential
from mpcnp.nn.shaping import Reshape

__all__ = ["from_sklearn", "SUPPORTED_ESTIMATORS"]

_MLP = ("MLPClassifier", "MLPRegressor")
_LINEAR_CLASSIFIERS = ("LogisticRegression", "LinearSVC")
_REGRESSORS = ("LinearRegression", "Ridge")
SUPPORTED_ESTIMATORS = _MLP + _LINEAR_CLASSIFIERS + _REGRESSORS
_ACTIVATIONS = {"relu": ReLU, "logistic": Sigmoid, "tanh": Tanh, "identity": None}


def from_sklearn(estimator) -> Sequential:
    """A Sequential computing fitted ``estimator``'s decision function, its values loaded (see the
    module docstring). TypeError for an unsupported estimator, ValueError for an unfitted one or an
    unsupported setting (a multilabel MLPClassifier, an unknown activation)."""
    kind = type(estimator).__name__
    if kind not in SUPPORTED_ESTIMATORS or not type(estimator).__module__.startswith("sklearn."):
        raise TypeError(f"from_sklearn: {type(estimator).__module__}.{kind} is not supported; supported: "
                        f"{', '.join(SUPPORTED_ESTIMATORS)}")
    fitted = "coefs_" if kind in _MLP else "coef_"
    if not hasattr(estimator, fitted):
        raise ValueError(f"from_sklearn: this {kind} is not fitted (no {fitted}): call fit first")
    if kind in _MLP:
        model = _mlp(estimator, kind)
    else:
        model = _linear(estimator, kind)
    if hasattr(estimator, "classes_"):
        model.classes = np.asarray(estimator.classes_)
    return model


def _dense(weight, bias) -> Dense:
    weight = np.asarray(weight, dtype=np.float64)
    layer = Dense(*weight.shape)
    layer.load_state_dict({"weight": weight, "bias": np.broadcast_to(np.asarray(bias, np.float64),
                                                                     (weight.shape[1],))})
    return layer


def _mlp(estimator, kind: str) -> Sequential:
    activation = estimator.activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"from_sklearn: {kind} activation {activation!r} is not supported; supported: "
                         f"{', '.join(_ACTIVATIONS)}")
    if kind == "MLPClassifier" and getattr(estimator, "out_activation_", "softmax") == "logistic" \
            and estimator.n_outputs_ > 1:
        raise ValueError("from_sklearn: a multilabel MLPClassifier is not supported (one label per sample)")
    if kind == "MLPRegressor" and getattr(estimator, "out_activation_", "identity") != "identity":
        raise ValueError(f"from_sklearn: MLPRegressor with output activation {estimator.out_activation_!r} "
                         f"(loss={estimator.loss!r}) is not supported; supported: loss='squared_error'")
    layers: list[Module] = []
    count = len(estimator.coefs_)
    for i, (weight, bias) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
        layers.append(_dense(weight, bias))
        hidden = _ACTIVATIONS[activation]
        if i < count - 1 and hidden is not None:
            layers.append(hidden())
    if kind == "MLPRegressor" and estimator.n_outputs_ == 1:
        layers.append(Reshape(()))     # predict gives (N,) for one target
    return Sequential(*layers)


def _linear(estimator, kind: str) -> Sequential:
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64)
    if coef.ndim == 1:          # a regressor with one target: predict gives (N,)
        return Sequential(_dense(coef[:, np.newaxis], intercept.reshape(-1)[:1]), Reshape(()))
    if coef.ndim != 2:
        raise ValueError(f"from_sklearn: {kind}.coef_ of shape {coef.shape} is not understood")
    bias = np.broadcast_to(intercept, (coef.shape[0],))
    if kind in _LINEAR_CLASSIFIERS and coef.shape[0] == 1:
        return Sequential(_dense(coef.T, bias), Reshape(()))   # decision_function gives (N,)
    return Sequential(_dense(coef.T, bias))
