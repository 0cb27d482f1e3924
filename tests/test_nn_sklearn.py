"""nn.from_sklearn on estimators fitted in the test on small data: the imported model's plaintext
forward equals scikit-learn's decision function, and its private predictions equal that plaintext on
every input under securenn (classes exactly; values within the error bound from frac_bits)."""
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from mpcnp import nn
from helpers import CLIENT, assert_within, error_bound, quantize, run_model, winning_gaps


def classification(classes: int, seed: int = 3):
    x, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=classes,
                               n_clusters_per_class=1, random_state=seed)
    return quantize(x), y


def decision(estimator, x):
    if hasattr(estimator, "decision_function"):
        return estimator.decision_function(x)
    if isinstance(estimator, MLPClassifier):   # the output layer before its softmax / logistic
        hidden = x
        for i, (w, b) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
            hidden = hidden @ w + b
            if i < len(estimator.coefs_) - 1:
                hidden = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh, "identity": lambda v: v,
                          "logistic": lambda v: 1 / (1 + np.exp(-v))}[estimator.activation](hidden)
        return hidden
    return estimator.predict(x)


CLASSIFIERS = [
    pytest.param(lambda: LogisticRegression(max_iter=500), 2, id="logistic-binary"),
    pytest.param(lambda: LogisticRegression(max_iter=500), 3, id="logistic-multinomial"),
    pytest.param(lambda: LinearSVC(), 2, id="linearsvc-binary"),
    pytest.param(lambda: LinearSVC(), 4, id="linearsvc-ovr"),
] + [pytest.param(lambda a=activation: MLPClassifier(hidden_layer_sizes=(8, 5), activation=a, max_iter=400,
                                                   random_state=0),
                  classes, id=f"mlp-{activation}-{classes}")
     for activation in ("relu", "logistic", "tanh", "identity") for classes in (2, 3)]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("make, classes", CLASSIFIERS)
def test_classifier_private_classes_equal_plaintext(make, classes):
    x, y = classification(classes)
    estimator = make().fit(x, y)
    model = nn.from_sklearn(estimator)
    np.testing.assert_allclose(model.forward_plain(x).reshape(decision(estimator, x).shape),
                               decision(estimator, x), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(estimator.classes_[model.predict_plain(x, "class")], estimator.predict(x))
    np.testing.assert_array_equal(model.classes, estimator.classes_)
    # every sample of this data set (seed 3) is farther from a decision boundary than the private
    # error bound, so the classes must all be equal
    assert winning_gaps(model.forward_plain(x)).min() > 2 * error_bound(model, x).max()
    np.testing.assert_array_equal(run_model(model, x, output="class")[CLIENT], model.predict_plain(x, "class"))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("make, targets", [
    pytest.param(LinearRegression, 1, id="linear"), pytest.param(lambda: Ridge(alpha=0.5), 2, id="ridge-2"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,), activation="tanh", max_iter=300, random_state=0), 1,
                 id="mlp-tanh"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,), max_iter=300, random_state=0), 2, id="mlp-relu-2")])
def test_regressor_private_values_equal_plaintext(make, targets):
    x, y = make_regression(n_samples=60, n_features=5, n_targets=targets, noise=0.1, random_state=1)
    x, y = quantize(x), y / np.abs(y).max()
    estimator = make().fit(x, y)
    model = nn.from_sklearn(estimator)
    np.testing.assert_allclose(model.forward_plain(x), estimator.predict(x), rtol=1e-9, atol=1e-9)
    assert_within(run_model(model, x)[CLIENT], estimator.predict(x), error_bound(model, x) + 1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unsupported_and_unfitted_estimators_are_named():
    with pytest.raises(TypeError, match="DecisionTreeClassifier is not supported; supported: MLPClassifier"):
        nn.from_sklearn(DecisionTreeClassifier().fit([[0], [1]], [0, 1]))
    with pytest.raises(ValueError, match="this LogisticRegression is not fitted"):
        nn.from_sklearn(LogisticRegression())
    multilabel = MLPClassifier(hidden_layer_sizes=(3,), max_iter=20, random_state=0)
    multilabel.fit(np.eye(4), np.eye(4)[:, :2].astype(int))
    with pytest.raises(ValueError, match="multilabel"):
        nn.from_sklearn(multilabel)
    poisson = MLPRegressor(hidden_layer_sizes=(3,), loss="poisson", max_iter=20, random_state=0)
    with pytest.raises(ValueError, match="output activation 'exp'"):
        nn.from_sklearn(poisson.fit(np.eye(4), np.arange(4.0)))
