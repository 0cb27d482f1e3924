"""Private prediction, end to end, on the embedded in-process default (``python -m mpcnp demo``).

A model owner trains a small network (PETS network A: dense 784-128, ReLU, dense 128-128, ReLU,
dense 128-10) on a synthetic digit-like data set it generates itself (no download); a client holds
images it wants classified. Neither shows its data: the weights and the images are secret-shared
between server0 and server1, the producer deals the correlated randomness, and only the client
receives the predictions. The run is repeated with exact SecureNN ReLU and with Pond's polynomial
ReLU on two input intervals (the default [-8, 8], and one the model owner sizes on its training
data), and each is compared with the plaintext model.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mpcnp as mp
from mpcnp import nn

SIDE = 28
CLASSES = 10


def synthetic_digits(count: int, rng: np.random.Generator, templates: np.ndarray):
    """Images near one of ten smooth random templates, shifted and noisy; labels 0..9."""
    labels = rng.integers(0, CLASSES, count)
    images = templates[labels]
    shifts = rng.integers(-2, 3, size=(count, 2))
    images = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(images, shifts)])
    images = images + 0.3 * rng.standard_normal(images.shape)
    return images.reshape(count, SIDE * SIDE), labels


def make_templates(rng: np.random.Generator) -> np.ndarray:
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, SIDE), np.linspace(-1, 1, SIDE)), axis=-1)
    templates = []
    for _ in range(CLASSES):
        centres = rng.uniform(-0.7, 0.7, size=(4, 2))
        blobs = [np.exp(-((grid - c) ** 2).sum(-1) / 0.05) for c in centres]
        templates.append(np.clip(sum(blobs), 0, 1))
    return np.array(templates)


def train(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, epochs: int = 4) -> list[dict]:
    """Plain NumPy training of network A (softmax cross-entropy, SGD with momentum)."""
    sizes = [SIDE * SIDE, 128, 128, CLASSES]
    params = [{"weight": rng.standard_normal((a, b)) * np.sqrt(2.0 / a), "bias": np.zeros(b)}
              for a, b in zip(sizes, sizes[1:])]
    velocity = [{k: np.zeros_like(v) for k, v in p.items()} for p in params]
    onehot = np.eye(CLASSES)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            activations = [x[idx]]
            for i, p in enumerate(params):
                z = activations[-1] @ p["weight"] + p["bias"]
                activations.append(np.maximum(z, 0) if i < len(params) - 1 else z)
            logits = activations[-1]
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            grad = (probs - onehot[idx]) / len(idx)
            for i in reversed(range(len(params))):
                gw, gb = activations[i].T @ grad, grad.sum(0)
                if i:
                    grad = (grad @ params[i]["weight"].T) * (activations[i] > 0)
                for name, g in (("weight", gw), ("bias", gb)):
                    velocity[i][name] = 0.9 * velocity[i][name] - 0.05 * g
                    params[i][name] += velocity[i][name]
    return params


def network_a(relu_bound: int = 8, params=None) -> nn.Sequential:
    """PETS network A, with the three dense layers' ``params`` (from ``train``) when given;
    ``relu_bound``: the input interval [-bound, bound] of Pond's polynomial ReLU."""
    model = nn.Sequential(nn.Dense(784, 128), nn.ReLU(relu_bound), nn.Dense(128, 128), nn.ReLU(relu_bound),
                          nn.Dense(128, CLASSES))
    return model if params is None else model.load([params[0], {}, params[1], {}, params[2]])


def largest_relu_input(model: nn.Sequential, x: np.ndarray) -> float:
    """The largest magnitude any ReLU of the plaintext model sees on ``x``."""
    largest = 0.0
    for layer in model.layers:
        if isinstance(layer, nn.ReLU):
            largest = max(largest, float(np.abs(x).max()))
        x = layer.forward_plain(x)
    return largest


def private_prediction(params, images, protocol: str, backend: str,
                       relu_bound: int = 8) -> tuple[np.ndarray, dict, float]:
    """Logits revealed to the client only; the model owner's weights and the client's images stay
    private. Returns (logits on the client, communication of each party, seconds)."""
    def program():
        model = network_a(relu_bound, params if mp.party() == "model-owner" else None)
        private_model = model.private(owner="model-owner")
        x = mp.private(lambda: images, owner="client")
        logits = private_model(x).reveal(to="client")
        return logits, mp.stats()

    start = time.perf_counter()
    results = mp.run(program, parties=["model-owner", "client"], protocol=protocol, backend=backend)
    seconds = time.perf_counter() - start
    return results["client"][0], {p: r[1] for p, r in results.items()}, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpcnp demo", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="how many client images to classify")
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)  # plaintext data and training only: nothing secret is drawn here
    templates = make_templates(rng)
    x_train, y_train = synthetic_digits(6000, rng, templates)
    x_test, y_test = synthetic_digits(args.images, rng, templates)
    start = time.perf_counter()
    params = train(x_train, y_train, rng)
    plain_model = network_a(params=params)
    plain_logits = plain_model.forward_plain(x_test)
    print(f"model owner trained network A in {time.perf_counter() - start:.1f} s; plaintext accuracy "
          f"{np.mean(plain_logits.argmax(1) == y_test):.1%} on {args.images} client images")
    print(f"{'protocol':<12}{'accuracy':>8}{'agrees':>9}{'max |logit err|':>17}{'time':>9}"
          f"{'MB sent':>10}{'rounds':>8}")
    # Pond's ReLU needs an interval holding every input: the model owner sizes it on its own training
    # data (the client's images are private), with a margin for inputs unlike those.
    largest = largest_relu_input(plain_model, x_train)
    fitted = int(np.ceil(1.5 * largest))
    for label, protocol, bound in (("securenn", "securenn", 8), ("pond B=8", "pond", 8),
                                   (f"pond B={fitted}", "pond", fitted)):
        logits, stats, seconds = private_prediction(params, x_test, protocol, args.backend, bound)
        accuracy = np.mean(logits.argmax(1) == y_test)
        agree = np.mean(logits.argmax(1) == plain_logits.argmax(1))
        error = np.max(np.abs(logits - plain_logits))
        megabytes = sum(s["bytes_sent"] for s in stats.values()) / 1e6
        rounds = max(s["rounds"] for s in stats.values())
        print(f"{label:<12}{accuracy:>8.1%}{agree:>9.1%}{error:>17.2e}{seconds:>8.2f}s"
              f"{megabytes:>10.2f}{rounds:>8}")
    print(f"SecureNN's ReLU is exact. Pond's is a polynomial accurate on [-B, B] (error 0.0044 B);\n"
          f"ReLU inputs reach {largest:.1f} on the owner's training data: B=8 gives garbage, "
          f"B={fitted} (1.5x that) works")
    print("only the client saw the logits; the weights never left the model owner in the clear")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
