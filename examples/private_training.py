"""Private training: two hospitals train a logistic regression on their pooled patients without
showing them to anyone, and only the model owner receives the trained model.

The data are scikit-learn's bundled breast-cancer measurements (569 patients, 30 features; no
download), standardised with public constants and split into a training set (426 patients) and a
test set (143). Hospital A holds the first 200 training patients, hospital B the other 226, each
with its own diagnoses. Inside ``mp.run`` each hospital secret-shares its rows between server0 and
server1 and the servers stack them (``mp.concat``, local on the shares); the model owner shares a
zero-initialised model; ``model.fit`` trains it privately (binary cross-entropy, SGD) on batches
drawn from a public permutation. Nothing is revealed during training; at the end the model owner
alone receives the weights (``model.reveal(to=...)``) and measures them on its own test patients.

Beside it the same training runs in plaintext NumPy, with the same initial weights, learning rate,
batches and order: the two accuracies should agree within a point.

Run: python examples/private_training.py [--backend threads|processes] [--epochs 4]
(needs scikit-learn: pip install "mpcnp[ml]").
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import mpcnp as mp
from mpcnp import nn

HOSPITALS, OWNER = ("hospital-a", "hospital-b"), "model-owner"
SPLIT = 200          # hospital A's rows of the training set; hospital B holds the rest
BATCH, LR, SEED = 32, 0.5, 0


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features and 0/1 labels, split into training and test sets."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)   # public constants of the published data set
    return train_test_split(x, y.astype(np.float64), test_size=0.25, stratify=y, random_state=0)


def plaintext_training(x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """The same training in NumPy float64: zero weights, batches from the permutations fit draws
    (numpy.random.default_rng(SEED).permutation once per epoch), the gradient sigmoid(z) - y."""
    w, b = np.zeros((x.shape[1], 1)), np.zeros(1)
    rng = np.random.default_rng(SEED)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            rows = order[start:start + BATCH]
            z = x[rows] @ w + b
            d = (1 / (1 + np.exp(-z)) - y[rows, np.newaxis]) / len(rows)
            w -= LR * x[rows].T @ d
            b -= LR * d.sum(axis=0)
    return w, b


def private_training(x: np.ndarray, y: np.ndarray, epochs: int, backend: str) -> tuple[dict, float, int]:
    """The training inside mp.run; only the model owner receives the weights.
    Returns (the owner's state dict, seconds, bytes sent by every party)."""
    model = nn.Sequential(nn.Dense(x.shape[1], 1))
    model.load_state_dict({"0.weight": np.zeros((x.shape[1], 1)), "0.bias": np.zeros(1)})

    def program():
        private_model = (model if mp.party() == OWNER else model.architecture()).private(OWNER)
        rows = mp.concat([mp.private(lambda: x[:SPLIT], owner=HOSPITALS[0]),
                          mp.private(lambda: x[SPLIT:], owner=HOSPITALS[1])])
        labels = mp.concat([mp.private(lambda: y[:SPLIT, np.newaxis], owner=HOSPITALS[0]),
                            mp.private(lambda: y[SPLIT:, np.newaxis], owner=HOSPITALS[1])])
        private_model.fit(rows, labels, epochs=epochs, batch_size=BATCH, loss=nn.BCEWithLogitsLoss(),
                          optimizer=nn.optim.SGD(private_model.parameters(), lr=LR), seed=SEED,
                          progress=False)
        return private_model.reveal(to=OWNER), mp.stats()["bytes_sent"]

    start = time.perf_counter()
    results = mp.run(program, parties=[*HOSPITALS, OWNER], backend=backend, truncation="exact", timeout=300)
    seconds = time.perf_counter() - start
    return results[OWNER][0], seconds, sum(sent for _, sent in results.values())


def accuracy(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(((x @ w + b).reshape(-1) > 0) == (y > 0.5)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = data()
    state, seconds, sent = private_training(x_train, y_train, args.epochs, args.backend)
    private = accuracy(state["0.weight"], state["0.bias"], x_test, y_test)
    plain = accuracy(*plaintext_training(x_train, y_train, args.epochs), x_test, y_test)
    print(f"logistic regression, {len(x_train)} patients from two hospitals, {args.epochs} epochs of "
          f"batches of {BATCH}, lr {LR}")
    print(f"  private training: test accuracy {private:.1%}  ({seconds:.1f} s, {sent / 1e6:.1f} MB sent "
          f"by all parties, {args.backend})")
    print(f"  plaintext NumPy:  test accuracy {plain:.1%}  (same initial weights, batches and order)")
    print(f"  difference {abs(private - plain) * 100:.2f} points; only {OWNER} saw the weights, "
          "nobody saw a patient")
    return {"private": private, "plain": plain, "seconds": seconds, "bytes": sent}


if __name__ == "__main__":
    main()
