"""Secure aggregation for federated learning: three data owners compute gradients on their own
data, the servers average them privately, and only the model owner sees the average.

The data are scikit-learn's bundled breast-cancer measurements (569 patients, 30 features; no
download), standardised with public constants; three clinics hold 142 training patients each and the
model owner keeps 143 test patients. Each round:

1. every clinic computes the gradient of the logistic loss on its own patients, in plain NumPy,
   with the current model, and secret-shares it (``mp.private``): no single gradient is ever seen;
2. the servers add the shared gradients weighted by the clinics' patient counts (public) and reveal
   only the average, to the model owner (``reveal(to=...)``);
3. the model owner takes a gradient step in plaintext and sends the updated model back to every
   party in the clear (``mp.public(model, owner=...)``): a public value one party provides, with no
   detour through shares.

Beside it the same rounds run with the average computed in the clear: the models agree to within
the fixed point's rounding.

Run: python examples/secure_aggregation.py [--backend threads|processes] [--rounds 40]
(needs scikit-learn: pip install "mpcnp[ml]").
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import mpcnp as mp

CLINICS, OWNER = ("clinic-1", "clinic-2", "clinic-3"), "model-owner"
LR = 1.0


def data() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Each clinic's (features, labels) and the model owner's test set."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y.astype(np.float64), test_size=143, stratify=y,
                                                        random_state=0)
    parts = np.array_split(np.arange(len(x_train)), len(CLINICS))
    return {c: (x_train[rows], y_train[rows]) for c, rows in zip(CLINICS, parts)}, x_test, y_test


def local_gradient(model: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The gradient of the mean logistic loss on one clinic's patients; model = (weights..., bias)."""
    z = x @ model[:-1] + model[-1]
    d = (1 / (1 + np.exp(-z)) - y) / len(y)
    return np.append(x.T @ d, d.sum())


def federated(clinics: dict, rounds: int, backend: str) -> tuple[list[np.ndarray], float, int]:
    """The rounds inside mp.run. Returns (the model after each round, as every party has it),
    seconds, bytes sent by every party."""
    counts = {c: len(y) for c, (_, y) in clinics.items()}       # public: how many patients each has
    total = sum(counts.values())
    features = next(iter(clinics.values()))[0].shape[1]

    def program():
        model = mp.public(np.zeros(features + 1))
        history = []
        for _ in range(rounds):
            shared = [mp.private(lambda c=c: local_gradient(model.value, *clinics[c]) * counts[c], owner=c)
                      for c in CLINICS]
            average = sum(shared[1:], shared[0]) * (1.0 / total)
            seen = average.reveal(to=OWNER)                    # None on every party but the owner
            model = mp.public(lambda: model.value - LR * seen, owner=OWNER)
            history.append(model.value)
        return history, mp.stats()["bytes_sent"]

    start = time.perf_counter()
    results = mp.run(program, parties=[*CLINICS, OWNER], backend=backend, truncation="exact", timeout=300)
    seconds = time.perf_counter() - start
    histories = [h for h, _ in results.values()]
    assert all(np.array_equal(h[-1], histories[0][-1]) for h in histories), "every party has the same model"
    return results[OWNER][0], seconds, sum(sent for _, sent in results.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)

    clinics, x_test, y_test = data()
    history, seconds, sent = federated(clinics, args.rounds, args.backend)
    plain = np.zeros(x_test.shape[1] + 1)
    total = sum(len(y) for _, y in clinics.values())
    for _ in range(args.rounds):
        plain = plain - LR * sum(local_gradient(plain, x, y) * len(y) for x, y in clinics.values()) / total

    def accuracy(model):
        return float(np.mean(((x_test @ model[:-1] + model[-1]) > 0) == (y_test > 0.5)))

    print(f"federated logistic regression: {len(CLINICS)} clinics, {args.rounds} rounds of secure aggregation")
    for r in sorted({0, args.rounds // 4, args.rounds // 2, args.rounds - 1}):
        print(f"  round {r + 1:3d}: test accuracy {accuracy(history[r]):.1%}")
    print(f"  {seconds:.1f} s, {sent / 1e6:.2f} MB sent by all parties ({args.backend})")
    print(f"  in the clear, the same rounds: test accuracy {accuracy(plain):.1%}; largest difference "
          f"between the models {np.abs(history[-1] - plain).max():.1e}")
    print(f"  no party saw a clinic's gradient; only {OWNER} saw the averages")
    return {"private": accuracy(history[-1]), "plain": accuracy(plain), "seconds": seconds,
            "difference": float(np.abs(history[-1] - plain).max())}


if __name__ == "__main__":
    main()
