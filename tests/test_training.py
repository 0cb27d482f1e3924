"""Optimizers, fit and evaluate, and public values from one party, against NumPy.

Optimizer steps are compared with the same update in float64 on the same gradients: each public real
factor (lr, momentum, betas) is rounded to 16 significant bits and its product truncated, one unit
each; Adam's inverse square root adds its relative error (tests/test_losses.py). Training runs are
compared with plaintext training in NumPy on the same data in the same order.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import mpcnp as mp
from mpcnp import nn
from mpcnp.nn import training
from helpers import ULP, assert_within, quantize


class Linear:
    """x @ w + b with private parameters: the smallest model fit accepts."""

    def __init__(self, w, b, squeeze: bool = False):
        self.w, self.b, self.squeeze = w, b, squeeze

    def __call__(self, x):
        out = x @ self.w + self.b
        return out.reshape(-1) if self.squeeze else out

    def parameters(self):
        return [self.w, self.b]


def run(program, **kwargs):
    kwargs.setdefault("truncation", "exact")
    return mp.run(program, parties=["alice", "bob"], **kwargs)


# ---- optimizers -----------------------------------------------------------------------------------------
def private_steps(make_optimizer, params, grads, **run_kwargs):
    """The parameters after one optimizer step per list of gradients (grads[step][i] for params[i];
    None: no gradient for that parameter at that step)."""
    def program():
        ps = [mp.private(lambda v=v: v, owner="alice") for v in params]
        opt = make_optimizer(ps)
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = None if g is None else mp.private(lambda g=g: g, owner="bob")
            opt.step()
            opt.zero_grad()
        return [p.reveal() for p in ps], [p.grad for p in ps]

    values, cleared = run(program, **run_kwargs)["alice"]
    assert cleared == [None] * len(params)
    return values


def test_sgd_with_momentum_and_weight_decay():
    rng = np.random.default_rng(3)
    params = [quantize(rng.normal(size=(4, 3))), quantize(rng.normal(size=3))]
    grads = [[quantize(rng.normal(size=p.shape)) for p in params] for _ in range(4)]
    lr, momentum, decay = 0.05, 0.9, 0.01
    got = private_steps(lambda ps: nn.optim.SGD(ps, lr=lr, momentum=momentum, weight_decay=decay), params, grads)
    expected, buffers = [p.copy() for p in params], [None, None]
    for step in grads:
        for i, g in enumerate(step):
            g = g + decay * expected[i]
            buffers[i] = g if buffers[i] is None else momentum * buffers[i] + g
            expected[i] = expected[i] - lr * buffers[i]
    # per step: weight decay, momentum and lr products each within a unit (plus their factors'
    # rounding to 16 significant bits); the buffer carries earlier errors scaled by momentum < 1
    for g, e in zip(got, expected):
        assert_within(g, e, 4 * 3 * 10 * ULP)


@pytest.mark.parametrize("protocol", ["securenn", "pond"])
def test_adam(protocol):
    rng = np.random.default_rng(4)
    params = [quantize(rng.normal(size=(5, 2))), quantize(rng.normal(size=2))]
    grads = [[quantize(rng.normal(size=p.shape) * scale) for p in params] for scale in (1.0, 0.01, 0.3, 0.05, 2.0)]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-3
    got = private_steps(lambda ps: nn.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps, grad_bound=4.0),
                        params, grads, protocol=protocol)
    expected, _ = adam_reference(params, grads, lr, b1, b2, eps)
    # each step moves a parameter by at most lr * |m^| / sqrt(v^) <= ~lr * 3; the private step is
    # within 1e-3 of it relatively (Adam's rel_error for the inverse square root, plus 2e-6 of its
    # rounding; the moments, kept in units of 2^-16 on S g with S = 2^12, add less), plus two units
    # for the inverse square root's shifts; five steps (with lr = 0.01 the units dominate: the
    # relative error is checked with larger steps below)
    for g, e in zip(got, expected):
        assert_within(g, e, 5 * (lr * 3 * 1.01e-3 + 2 * ULP))


def adam_reference(params, grads, lr, b1, b2, eps):
    """Adam in float64: the parameters after the steps and, per element, the sum of the steps' sizes."""
    expected = [p.copy() for p in params]
    moved = [np.zeros_like(p) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, step in enumerate(grads, start=1):
        for i, g in enumerate(step):
            if g is None:                    # no gradient: no update, moments kept (t counts every step)
                continue
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            update = lr * (m[i] / (1 - b1 ** t)) / np.sqrt(v[i] / (1 - b2 ** t) + eps ** 2)
            expected[i] -= update
            moved[i] += np.abs(update)
    return expected, moved


@pytest.mark.parametrize("rel_error", [1e-3, 1e-6])
def test_adam_updates_are_within_their_relative_error(rel_error):
    rng = np.random.default_rng(5)
    params = [quantize(rng.normal(size=(6, 5))), quantize(rng.normal(size=5))]
    grads = [[quantize(np.clip(rng.normal(size=p.shape) * scale, -4, 4)) for p in params]
             for scale in (1.0, 0.05, 0.5, 2.0, 0.01)]
    lr, b1, b2, eps = 1.0, 0.9, 0.999, 1e-3
    got = private_steps(lambda ps: nn.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps, grad_bound=4.0,
                                                 rel_error=rel_error), params, grads)
    expected, moved = adam_reference(params, grads, lr, b1, b2, eps)
    # steps of about lr: each update within (rel_error + 2e-6) of its size (the inverse square root),
    # plus 2^-16 of it for the factor lr sqrt(c2) / c1 rounded to 16 significant bits, plus per step
    # a unit for that product, two for the inverse square root and one for the moments
    for g, e, size in zip(got, expected, moved):
        assert_within(g, e, size * (rel_error + 2e-6 + 2.0 ** -16) + 5 * 4 * ULP)


def test_adam_keeps_the_moments_of_a_parameter_without_a_gradient():
    # the second step updates only the first parameter, the third both again: the moments leave and
    # re-enter the batched vector
    rng = np.random.default_rng(6)
    params = [quantize(rng.normal(size=(3, 2))), quantize(rng.normal(size=2))]
    grads = [[quantize(rng.normal(size=p.shape)) for p in params] for _ in range(3)]
    grads[1][1] = None
    lr, b1, b2, eps = 0.5, 0.9, 0.999, 1e-3
    got = private_steps(lambda ps: nn.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps, grad_bound=4.0), params, grads)
    expected, moved = adam_reference(params, grads, lr, b1, b2, eps)
    for g, e, size in zip(got, expected, moved):
        assert_within(g, e, size * (1e-3 + 2e-6 + 2.0 ** -16) + 3 * 4 * ULP)


def test_optimizers_refuse_bad_arguments():
    with pytest.raises(TypeError, match="not a private tensor"):
        nn.optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        nn.optim.SGD([], lr=0.1)

    def program():
        w = mp.private(lambda: np.zeros(2), owner="alice")
        nn.optim.SGD([w], lr=-1.0)

    with pytest.raises(mp.PartyError, match="lr must be a finite number >= 0"):
        run(program)


# ---- fit and evaluate ---------------------------------------------------------------------------------------
def separable(n: int = 96, features: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = quantize(rng.normal(size=(n, features)))
    y = (x @ np.array([1.5, -2.0, 0.5])[:features] + 0.3 > 0).astype(np.float64)
    return x, y


def numpy_logistic_regression(x, y, epochs, batch_size, lr, seed):
    w, b = np.zeros((x.shape[1], 1)), np.zeros(1)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order, total = rng.permutation(len(x)), 0.0
        for start in range(0, len(x), batch_size):
            i = order[start:start + batch_size]
            z = (x[i] @ w + b).reshape(-1)
            total += (np.maximum(z, 0) - z * y[i] + np.log1p(np.exp(-np.abs(z)))).sum()
            d = (1 / (1 + np.exp(-z)) - y[i]) / len(i)
            w -= lr * x[i].T @ d.reshape(-1, 1)
            b -= lr * d.sum(keepdims=True)
        losses.append(total / len(x))
    return w, b, losses


@pytest.mark.parametrize("split", ["rows", "columns"])
def test_fit_matches_plaintext_training_and_reports_only_where_asked(split):
    x, y = separable()
    epochs, batch, lr, seed = 3, 16, 0.5, 7

    def program():
        model = Linear(mp.private(lambda: np.zeros((3, 1)), owner="alice"),
                       mp.private(lambda: np.zeros(1), owner="alice"), squeeze=True)
        if split == "rows":       # alice holds the first 40 samples, bob the rest
            rows = mp.concat([mp.private(lambda: x[:40], owner="alice"), mp.private(lambda: x[40:], owner="bob")])
        else:                     # alice holds the first feature of every sample, bob the others
            rows = mp.concat([mp.private(lambda: x[:, :1], owner="alice"),
                              mp.private(lambda: x[:, 1:], owner="bob")], axis=1)
        labels = mp.private(lambda: y, owner="bob")
        history = nn.fit(model, rows, labels, epochs=epochs, batch_size=batch, loss=nn.BCEWithLogitsLoss(),
                         optimizer=nn.optim.SGD(model.parameters(), lr=lr), seed=seed, report_to="alice",
                         metrics=("loss", "accuracy"), progress=False)
        silent = nn.fit(model, rows, labels, epochs=0, loss=nn.BCEWithLogitsLoss(),
                        optimizer=nn.optim.SGD(model.parameters(), lr=lr), progress=False)
        return history, silent, model.w.reveal(to="alice"), model.b.reveal(to="alice")

    results = run(program)
    assert all(results[p][0] is None for p in results if p != "alice")
    assert all(r[1] is None for r in results.values())
    history, _, w, b = results["alice"]
    w_ref, b_ref, losses = numpy_logistic_regression(x, y, epochs, batch, lr, seed)
    # 18 SGD steps, each within a few units per weight (sigmoid's 3.2e-5 + 8u times |x| <= 3 summed
    # over a batch and divided by it, the products' truncations): well within 2e-3
    assert_within(w, w_ref, 2e-3)
    assert_within(b, b_ref, 2e-3)
    assert_within(np.array(history["loss"]), np.array(losses), 1e-3)
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["accuracy"]) == epochs and history["accuracy"][-1] > 0.9


@pytest.mark.parametrize("frac_bits", [16, 20])
def test_training_an_mlp_at_high_precision_does_not_blow_up(frac_bits):
    # exact truncation keeps products right at frac_bits 20 too, where 1e8 products of magnitude 1
    # would see a local truncation failure; the loss must fall as plaintext training's does
    rng = np.random.default_rng(1)
    x = quantize(rng.normal(size=(64, 4)))
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    w1, w2 = quantize(rng.normal(size=(4, 16)) * 0.7), quantize(rng.normal(size=(16, 3)) * 0.3)

    class MLP:
        def __init__(self, ps):
            self.ps = ps

        def __call__(self, t):
            return mp.relu(t @ self.ps[0] + self.ps[1]) @ self.ps[2] + self.ps[3]

        def parameters(self):
            return self.ps

    def program():
        model = MLP([mp.private(lambda v=v: v, owner="alice") for v in (w1, np.zeros(16), w2, np.zeros(3))])
        history = nn.fit(model, mp.private(lambda: x, owner="bob"), labels, epochs=6, batch_size=16,
                         loss=nn.CrossEntropyLoss(), optimizer=nn.optim.SGD(model.parameters(), lr=0.2, momentum=0.5),
                         seed=0, report_to="alice", progress=False)
        return history["loss"] if history else None, [p.reveal(to="alice") for p in model.ps]

    losses, params = run(program, frac_bits=frac_bits)["alice"]
    assert all(np.all(np.isfinite(p)) and np.abs(p).max() < 20 for p in params)
    assert losses[-1] < 0.75 * losses[0]


def test_evaluate_counts_and_losses_like_numpy():
    rng = np.random.default_rng(2)
    x = quantize(rng.normal(size=(30, 4)))
    w = quantize(rng.normal(size=(4, 3)))
    labels = rng.integers(0, 3, 30)
    logits = x @ w
    correct = (logits.argmax(axis=1) == labels).mean()
    z = logits - logits.max(axis=1, keepdims=True)
    ce = (np.log(np.exp(z).sum(axis=1)) - z[np.arange(30), labels]).mean()

    def program():
        model = Linear(mp.private(lambda: w, owner="alice"), mp.private(lambda: np.zeros(3), owner="alice"))
        data = mp.private(lambda: x, owner="bob")
        return (nn.evaluate(model, data, labels, loss=nn.CrossEntropyLoss(), batch_size=8, to="alice"),
                nn.evaluate(model, data, mp.private(lambda: np.eye(3)[labels], owner="bob"), to=["alice", "bob"]),
                nn.evaluate(model, data, mp.private(lambda: labels.astype(float), owner="bob"), to="bob"))

    results = run(program)
    scores, onehot, private_labels = results["alice"]
    assert scores["accuracy"] == correct and onehot == {"accuracy": correct} and private_labels is None
    assert results["bob"][2] == {"accuracy": correct}
    assert abs(scores["loss"] - ce) < 1e-3
    assert results["server0"] == (None, None, None)


def test_binary_accuracy():
    out = np.array([2.0, -1.0, 0.5, -3.0, 0.25])
    target = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    assert training.count_correct(mp.public(out), target, "binary").value == 3.0
    assert run(lambda: training.count_correct(mp.private(lambda: out, owner="alice"),
                                              mp.private(lambda: target, owner="bob"), "binary").reveal())["bob"] == 3.0


def test_seed_is_agreed_and_progress_shows_on_one_party(capsys, monkeypatch):
    x, y = separable(20)

    def program(progress):
        model = Linear(mp.private(lambda: np.zeros((3, 1)), owner="alice"),
                       mp.private(lambda: np.zeros(1), owner="alice"), squeeze=True)
        seed = training._agreed_seed(None)
        nn.fit(model, x, y, epochs=2, batch_size=8, loss=nn.BCEWithLogitsLoss(), progress=progress,
               optimizer=nn.optim.SGD(model.parameters(), lr=0.1), report_to="bob")
        return seed

    seeds = run(program, progress=True)
    assert len(set(seeds.values())) == 1                      # every party drew the same permutation seed
    assert capsys.readouterr().err.count("epoch 2/2") >= 1    # tqdm's bar, on bob only
    monkeypatch.setattr(training, "_tqdm", None)
    run(program, progress="alice")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: 3 batches in") and "loss" not in lines[0]
    run(program, progress=True)                               # on bob, who gets the loss
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and ", loss 0." in lines[1]


@pytest.mark.parametrize("kwargs, error", [
    (dict(loss=None), "needs loss="),
    (dict(batch_size=0), "batch_size >= 1"),
    (dict(metrics=("f1",)), "unknown metrics"),
    (dict(report_to="carol"), "unknown party 'carol'"),
    (dict(rows=5), "x has 5 rows but y has 6"),
])
def test_fit_refuses_bad_arguments(kwargs, error):
    def program():
        model = Linear(mp.private(lambda: np.zeros((2, 1)), owner="alice"),
                       mp.private(lambda: np.zeros(1), owner="alice"), squeeze=True)
        args = dict(loss=nn.BCEWithLogitsLoss(), optimizer=nn.optim.SGD(model.parameters(), lr=0.1))
        args.update({k: v for k, v in kwargs.items() if k != "rows"})
        nn.fit(model, np.zeros((kwargs.get("rows", 6), 2)), np.zeros(6), **args)

    with pytest.raises(mp.PartyError, match=error):
        run(program)


# ---- public values from one party -------------------------------------------------------------------------
def test_a_public_value_from_one_party_reaches_everyone_in_the_clear():
    def program():
        model = mp.public(lambda: np.arange(6.0).reshape(2, 3), owner="alice")
        scalar = mp.public(2.5, owner="bob")
        return model.value, scalar.value, type(model).__name__

    results = run(program)
    for value, scalar, kind in results.values():
        np.testing.assert_array_equal(value, np.arange(6.0).reshape(2, 3))
        assert scalar == 2.5 and kind == "PublicTensor"


def test_a_public_value_is_checked_on_its_owner():
    with pytest.raises(mp.PartyError, match="alice") as info:
        run(lambda: mp.public(lambda: np.array([1.0, np.nan]), owner="alice"), timeout=10)
    assert "non-finite" in str(info.value)
    with pytest.raises(mp.PartyError, match="unknown party 'carol'"):
        run(lambda: mp.public(1.0, owner="carol"))


# ---- the examples: the acceptance lines ---------------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str):
    """An example script as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_private_logistic_regression_within_a_point_of_plaintext():
    result = example("private_training").main([])
    assert abs(result["private"] - result["plain"]) <= 0.01 and result["private"] > 0.9


def test_private_mlp_on_digits_within_two_points_and_above_95_percent():
    result = example("private_mlp_training").main([])
    assert abs(result["private"] - result["plain"]) <= 0.02 and result["private"] >= 0.95
    assert result["revealed"] == result["private"]   # the weights the owner received score the same


def test_secure_aggregation_matches_aggregation_in_the_clear():
    result = example("secure_aggregation").main(["--rounds", "20"])
    # 20 rounds of averages rounded to a few units each: the models stay within 1e-3
    assert result["difference"] < 1e-3 and result["private"] == result["plain"]


@pytest.mark.processes
def test_the_examples_on_the_processes_backend():
    assert example("secure_aggregation").main(["--rounds", "5", "--backend", "processes"])["difference"] < 1e-3
    result = example("private_training").main(["--epochs", "1", "--backend", "processes"])
    assert abs(result["private"] - result["plain"]) <= 0.01
