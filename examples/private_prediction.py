"""Private prediction: a model owner's scikit-learn network classifies a client's digit images, and
neither sees the other's data.

The model owner trains an MLP with scikit-learn on the digits bundled with it (8x8 images, no
download) and imports it with ``nn.from_sklearn``. The client holds test images it wants
classified. Inside ``mp.run`` the owner secret-shares the weights and the client its images between
server0 and server1, the producer deals correlated randomness, and only the client receives the
result: the logits, or only the class. Each row below is one private run, compared with the
owner's plaintext model on the same images:

- securenn: exact comparisons (ReLU, argmax), so every prediction equals the plaintext one;
- pond: polynomial approximations, accurate on intervals the owner sized on its own training data
  with ``nn.calibrate``; "pond, uncalibrated" shows what happens without that.

Run: python examples/private_prediction.py [--images N] [--backend threads|processes]
(needs scikit-learn: pip install "mpcnp[ml]").
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import mpcnp as mp
from mpcnp import nn

OWNER, CLIENT = "model-owner", "client"


def owner_trains() -> tuple[MLPClassifier, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The model owner's plaintext work: data, a fitted MLP (64 hidden ReLUs), the test split."""
    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(images / 16.0, labels, test_size=0.25,
                                                        stratify=labels, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(x_train, y_train)
    return estimator, x_train, x_test, y_train, y_test


def private_prediction(model: nn.Sequential, images: np.ndarray, output: str, protocol: str,
                       backend: str) -> tuple[np.ndarray, float, int, int]:
    """``model`` (the owner's) applied to ``images`` (the client's), privately; only the client
    learns the result. Returns (the result, seconds, bytes sent by all parties, rounds)."""
    architecture = model.architecture()     # all that the parties other than the owner know

    def program():
        private_model = (model if mp.party() == OWNER else architecture).private(OWNER)
        x = mp.private(lambda: images, owner=CLIENT)
        result = private_model.predict(x, output=output, to=CLIENT)   # None on every other party
        return result, mp.stats()

    start = time.perf_counter()
    results = mp.run(program, parties=[OWNER, CLIENT], protocol=protocol, backend=backend, timeout=300)
    seconds = time.perf_counter() - start
    sent = sum(stats["bytes_sent"] for _, stats in results.values())
    rounds = max(stats["rounds"] for _, stats in results.values())
    return results[CLIENT][0], seconds, sent, rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=450, help="how many test images the client sends")
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    args = parser.parse_args(argv)

    estimator, x_train, x_test, _, y_test = owner_trains()
    x_test, y_test = x_test[:args.images], y_test[:args.images]
    model = nn.from_sklearn(estimator)
    plain_class = model.predict_plain(x_test, "class")
    plain_logits = model.forward_plain(x_test)
    print(f"model owner: MLP 64-64-10 trained with scikit-learn, plaintext accuracy "
          f"{np.mean(plain_class == y_test):.1%} on the client's {len(x_test)} images")

    uncalibrated = model.architecture()
    uncalibrated.load_state_dict(model.state_dict())
    calibration = nn.calibrate(model, x_train)   # sizes Pond's intervals on the owner's own data
    print(f"Pond calibration on the owner's {len(x_train)} training images: ReLU bound "
          f"{calibration.relu_bounds['1']} (inputs reach {calibration.observed['1']:.1f}), class scale "
          f"{calibration.class_scale:.3f} (logits spread up to {calibration.logit_spread:.1f})")

    # frac_bits 16 (mp.run's default) cannot hold values below half a unit: sharing makes them 0, and
    # mpcnp tells the owner with a PrecisionWarning; said here once, in words, instead of on every run
    values = np.concatenate([v.ravel() for v in model.state_dict().values()])
    tiny = int(np.count_nonzero((values != 0) & (np.abs(values) < 2.0 ** -17)))
    print(f"{tiny} of the model's {values.size} parameters are nonzero but below 2^-17 (half a unit at "
          f"frac_bits 16): they are shared as 0")

    print(f"\n{'protocol':<22}{'output':<8}{'accuracy':>9}{'agrees':>8}{'max |err|':>11}{'time':>8}"
          f"{'MB sent':>9}{'rounds':>8}")
    runs = [("securenn", "class", model), ("securenn", "logits", model), ("pond", "class", model),
            ("pond", "logits", model), ("pond, uncalibrated", "class", uncalibrated)]
    for label, output, which in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mp.PrecisionWarning)   # the tiny parameters, counted above
            result, seconds, sent, rounds = private_prediction(which, x_test, output, label.split(",")[0],
                                                               args.backend)
        predicted = result if output == "class" else result.argmax(axis=1)
        error = "" if output == "class" else f"{np.abs(result - plain_logits).max():.1e}"
        print(f"{label:<22}{output:<8}{np.mean(predicted == y_test):>9.1%}"
              f"{np.mean(predicted == plain_class):>8.1%}{error:>11}{seconds:>7.2f}s{sent / 1e6:>9.2f}"
              f"{rounds:>8}")
    print("\nagrees: the share of images classified as the owner's plaintext model does. Only the client "
          "received\nthe predictions; the weights and the images never left their owners in the clear.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
