"""Joint prediction: three data providers each hold some of the features of the same patients, a model
owner holds a linear model, and a fourth party, the doctor, learns the diagnoses and nothing else.

The data are scikit-learn's bundled breast-cancer measurements (569 patients, 30 features; no
download), split by columns: a lab holds features 0-9, an imaging centre 10-19, a hospital 20-29.
The model owner has fitted a logistic regression on patients of its own (standardised features) and
folds the standardisation into the weights before sharing them. Inside ``mp.run`` each provider
secret-shares its block, the servers join the blocks with ``mp.concat`` (local on the shares), apply
the owner's private model, and reveal only the class (benign or malignant) to the doctor. The
comparison of the logit with 0 is exact under securenn; under Pond it goes through the step
polynomial, scaled by ``nn.calibrate`` on the owner's patients.

Run: python examples/joint_prediction.py [--backend threads|processes]
(needs scikit-learn: pip install "mpcnp[ml]").
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import mpcnp as mp
from mpcnp import nn

PROVIDERS = {"lab": slice(0, 10), "imaging": slice(10, 20), "hospital": slice(20, 30)}
OWNER, DOCTOR = "model-owner", "doctor"


def owner_fits(x: np.ndarray, y: np.ndarray) -> nn.Sequential:
    """The owner's logistic regression on standardised features, as an nn model on raw features:
    w' = w / std and b' = b - (mean / std) . w, computed in float64 before anything is shared."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    estimator = LogisticRegression(max_iter=1000).fit((x - mean) / std, y)
    model = nn.from_sklearn(estimator)
    state = model.state_dict()
    state["0.bias"] = state["0.bias"] - (mean / std) @ state["0.weight"]
    state["0.weight"] = state["0.weight"] / std[:, np.newaxis]
    return model.load_state_dict(state)


def joint_prediction(model: nn.Sequential, blocks: dict[str, np.ndarray], protocol: str,
                     backend: str) -> tuple[np.ndarray, float, int, int]:
    """Each provider's block shared, joined by the servers, classified with the owner's private model;
    only the doctor learns the classes. Returns (classes, seconds, bytes sent by all parties, rounds)."""
    architecture = model.architecture()

    def program():
        private_model = (model if mp.party() == OWNER else architecture).private(OWNER)
        parts = [mp.private(lambda name=name: blocks[name], owner=name) for name in PROVIDERS]
        features = mp.concat(parts, axis=1)      # local on the shares: no communication
        return private_model.predict(features, output="class", to=DOCTOR), mp.stats()

    start = time.perf_counter()
    results = mp.run(program, parties=[*PROVIDERS, OWNER, DOCTOR], protocol=protocol, backend=backend,
                     timeout=300)
    seconds = time.perf_counter() - start
    sent = sum(stats["bytes_sent"] for _, stats in results.values())
    assert all(results[p][0] is None for p in results if p != DOCTOR)   # nobody else learns a thing
    return results[DOCTOR][0], seconds, sent, max(stats["rounds"] for _, stats in results.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    args = parser.parse_args(argv)

    x, y = load_breast_cancer(return_X_y=True)
    x_owner, x_patients, y_owner, y_patients = train_test_split(x, y, test_size=0.4, stratify=y, random_state=0)
    model = owner_fits(x_owner, y_owner)
    calibration = nn.calibrate(model, x_owner)
    plain = model.predict_plain(x_patients, "class")
    blocks = {name: x_patients[:, columns] for name, columns in PROVIDERS.items()}
    print(f"{len(x_patients)} patients; features split between {', '.join(PROVIDERS)}; the model owner's "
          f"plaintext accuracy {np.mean(plain == y_patients):.1%}; Pond's class scale {calibration.class_scale:.3g}")
    print(f"\n{'protocol':<10}{'accuracy':>9}{'agrees':>8}{'time':>8}{'MB sent':>9}{'rounds':>8}")
    for protocol in ("securenn", "pond"):
        classes, seconds, sent, rounds = joint_prediction(model, blocks, protocol, args.backend)
        print(f"{protocol:<10}{np.mean(classes == y_patients):>9.1%}{np.mean(classes == plain):>8.1%}"
              f"{seconds:>7.2f}s{sent / 1e6:>9.2f}{rounds:>8}")
    print(f"\nagrees: the share of patients classified as the owner's plaintext model does. Only the doctor "
          f"learned the\ndiagnoses ({', '.join(load_breast_cancer().target_names)}); no provider saw another's "
          f"features, nobody saw the model.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
