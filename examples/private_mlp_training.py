"""Private MLP training: two data owners' images and a third party's labels train a network with
exact ReLU backpropagation; nobody sees the images, the labels or the weights.

The data are scikit-learn's bundled digits (8x8 images, no download): 1347 training images, of which
owner A holds the first 700 and owner B the rest, and 450 test images. An annotator holds every
training label. Inside ``mp.run`` the servers stack the owners' shared images (``mp.concat``), the
model owner shares its initial weights (a 64-64-10 ReLU network), and ``model.fit`` trains it
privately (cross-entropy, SGD with momentum). SecureNN's ReLU keeps the DReLU bit it computed, and
the backward pass multiplies by it: ReLU's gradient is exact and costs no second comparison. The
loss of each epoch is revealed to the model owner only (``report_to``); at the end the model owner
receives the trained weights and the accuracy on the test images, computed privately on images a
fourth party holds (``model.evaluate(to=...)``).

Beside it the same training runs in plaintext NumPy, with the same initial weights, batches and
order: the accuracies should agree within two points.

Run: python examples/private_mlp_training.py [--backend threads|processes] [--epochs 15]
(needs scikit-learn: pip install "mpcnp[ml]").
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import mpcnp as mp
from mpcnp import nn

OWNERS, ANNOTATOR, TESTER, MODEL_OWNER = ("owner-a", "owner-b"), "annotator", "tester", "model-owner"
SPLIT, HIDDEN = 700, 64
FRAC_BITS = 16       # the default; 20 trains as well (units of 9.5e-7 instead of 1.5e-5)
BATCH, LR, MOMENTUM, SEED = 128, 0.2, 0.9, 0


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = load_digits(return_X_y=True)
    return train_test_split(images / 16.0, labels, test_size=0.25, stratify=labels, random_state=0)


def initial_model() -> nn.Sequential:
    """The model owner's network with He-initialised weights (its own seed)."""
    model = nn.Sequential(nn.Dense(64, HIDDEN), nn.ReLU(), nn.Dense(HIDDEN, 10))
    rng = np.random.default_rng(1)
    return model.load_state_dict({
        "0.weight": rng.normal(size=(64, HIDDEN)) * np.sqrt(2 / 64), "0.bias": np.zeros(HIDDEN),
        "2.weight": rng.normal(size=(HIDDEN, 10)) * np.sqrt(1 / HIDDEN), "2.bias": np.zeros(10)})


def plaintext_training(model: nn.Sequential, x: np.ndarray, y: np.ndarray, epochs: int) -> dict:
    """The same training in NumPy float64: softmax cross-entropy, ReLU's derivative [z >= 0], SGD with
    momentum (buffer b = momentum b + g), batches from numpy.random.default_rng(SEED)'s permutations."""
    p = {k: v.copy() for k, v in model.state_dict().items()}
    buffers = {k: None for k in p}
    rng = np.random.default_rng(SEED)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            rows = order[start:start + BATCH]
            z = x[rows] @ p["0.weight"] + p["0.bias"]
            h = np.maximum(z, 0)
            logits = h @ p["2.weight"] + p["2.bias"]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            d = (e / e.sum(axis=1, keepdims=True) - np.eye(10)[y[rows]]) / len(rows)
            dh = d @ p["2.weight"].T * (z >= 0)
            grads = {"2.weight": h.T @ d, "2.bias": d.sum(axis=0), "0.weight": x[rows].T @ dh, "0.bias": dh.sum(axis=0)}
            for k, g in grads.items():
                buffers[k] = g if buffers[k] is None else MOMENTUM * buffers[k] + g
                p[k] -= LR * buffers[k]
    return p


def private_training(model: nn.Sequential, x, y, x_test, y_test, epochs: int, backend: str):
    """The training inside mp.run. Returns (per-epoch losses, test accuracy, the weights: all on the
    model owner only), seconds, bytes sent by every party."""
    def program():
        private_model = (model if mp.party() == MODEL_OWNER else model.architecture()).private(MODEL_OWNER)
        images = mp.concat([mp.private(lambda: x[:SPLIT], owner=OWNERS[0]),
                            mp.private(lambda: x[SPLIT:], owner=OWNERS[1])])
        labels = mp.private(lambda: y.astype(np.float64), owner=ANNOTATOR)   # integer labels, one party
        history = private_model.fit(images, labels, epochs=epochs, batch_size=BATCH, loss=nn.CrossEntropyLoss(),
                                    optimizer=nn.optim.SGD(private_model.parameters(), lr=LR, momentum=MOMENTUM),
                                    seed=SEED, report_to=MODEL_OWNER, progress=MODEL_OWNER)
        scores = private_model.evaluate(mp.private(lambda: x_test, owner=TESTER), y_test, to=MODEL_OWNER)
        return history, scores, private_model.reveal(to=MODEL_OWNER), mp.stats()["bytes_sent"]

    start = time.perf_counter()
    results = mp.run(program, parties=[*OWNERS, ANNOTATOR, TESTER, MODEL_OWNER], backend=backend,
                     truncation="exact", frac_bits=FRAC_BITS, timeout=300)
    seconds = time.perf_counter() - start
    history, scores, state, _ = results[MODEL_OWNER]
    return history, scores["accuracy"], state, seconds, sum(r[3] for r in results.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = data()
    model = initial_model()
    history, private, state, seconds, sent = private_training(model, x_train, y_train, x_test, y_test,
                                                               args.epochs, args.backend)
    trained = model.architecture().load_state_dict(plaintext_training(model, x_train, y_train, args.epochs))
    plain = float(np.mean(trained.forward_plain(x_test).argmax(axis=1) == y_test))
    revealed = model.architecture().load_state_dict(state)
    check = float(np.mean(revealed.forward_plain(x_test).argmax(axis=1) == y_test))
    print(f"MLP 64-{HIDDEN}-10 on digits: {len(x_train)} images from two owners, labels from one annotator, "
          f"{args.epochs} epochs")
    print(f"  private training: test accuracy {private:.1%} (the revealed weights give {check:.1%}); "
          f"loss per epoch {', '.join(f'{v:.3f}' for v in history['loss'])}")
    print(f"                    {seconds:.1f} s, {sent / 1e6:.0f} MB sent by all parties ({args.backend})")
    print(f"  plaintext NumPy:  test accuracy {plain:.1%} (same initial weights, batches and order)")
    print(f"  difference {abs(private - plain) * 100:.2f} points; only {MODEL_OWNER} saw the losses, the "
          "accuracy and the weights")
    return {"private": private, "plain": plain, "revealed": check, "seconds": seconds, "bytes": sent}


if __name__ == "__main__":
    main()
