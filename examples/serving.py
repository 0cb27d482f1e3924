"""Private model serving on this machine: three services, a model owner who leaves, clients who come later.

    python examples/serving.py            (needs scikit-learn: pip install "mpcnp[ml]")

1. ``python -m mpcnp cluster`` writes a cluster file and a Curve key per party and client.
2. The three core services start as processes (``python -m mpcnp serve``), CurveZMQ over 127.0.0.1.
3. The model owner trains a digits classifier with scikit-learn (an MLP on the bundled 8x8 digits,
   no download), secret-shares it into the servers with ``Client.upload`` and disconnects: from then
   on no one holds the weights in the clear, and the owner is not needed.
4. Three clients query at different times; each shares its images itself and alone learns the
   answers. server1 is stopped and restarted in between: it serves the model again from its store.
5. The services stop on SIGTERM.

Each answer is compared with the owner's plaintext model (which the example can do only because it
plays every role).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import mpcnp as mp
from mpcnp import nn
from mpcnp.serving.config import write_local_cluster

try:
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
except ImportError:
    sys.exit("this example needs scikit-learn: pip install \"mpcnp[ml]\" (or pip install scikit-learn)")

PARTIES = ("server0", "server1", "producer")


def start(directory: Path, path: Path, name: str) -> subprocess.Popen:
    log = open(directory / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "mpcnp", "serve", "--config", str(path), "--name", name,
                             "--store", str(directory / f"store-{name}"), "--threads", "1"],
                            stdout=log, stderr=log)


def main() -> int:
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(digits.data / 16.0, digits.target, test_size=0.2,
                                                        random_state=0)
    with tempfile.TemporaryDirectory(prefix="mpcnp-serving-") as tmp:
        directory = Path(tmp)
        # on several hosts: python -m mpcnp cluster --out DIR server0=HOST:PORT ... --clients ...
        path = write_local_cluster(directory / "cluster", ["owner", "alice", "bob", "carol"])
        services = {name: start(directory, path, name) for name in PARTIES}
        print(f"services started; logs in {directory}")
        try:
            # the model owner: trains, uploads, leaves
            started = time.perf_counter()
            warnings.filterwarnings("ignore", category=ConvergenceWarning)   # a good model all the same
            sklearn_model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(x_train, y_train)
            model = nn.from_sklearn(sklearn_model)
            with mp.Client(path, "owner") as owner:
                owner.wait_ready(60)
                owner.upload("digits", model)
            print(f"owner: trained an MLP (test accuracy {sklearn_model.score(x_test, y_test):.3f}), "
                  f"uploaded it as 'digits' and left ({time.perf_counter() - started:.1f} s)")

            def query(name: str, images: np.ndarray, output: str) -> None:
                with mp.Client(path, name) as client:
                    began = time.perf_counter()
                    answer = client.predict("digits", images, output=output)
                    elapsed = (time.perf_counter() - began) * 1e3
                plain = model.forward_plain(images)
                if output == "class":
                    agree = np.mean(answer == plain.argmax(axis=1))
                    print(f"{name}: {len(images)} images -> classes {answer[:10].tolist()}{'...' if len(answer) > 10 else ''}"
                          f" in {elapsed:.1f} ms; agreement with the plaintext model {agree:.0%}")
                else:
                    print(f"{name}: {len(images)} images -> logits in {elapsed:.1f} ms; largest difference from "
                          f"the plaintext model {np.abs(answer - plain).max():.1e}")

            query("alice", x_test[:1], "class")
            time.sleep(1.0)
            query("bob", x_test[1:101], "class")
            print("server1: stopped (SIGTERM) and started again with its store")
            services["server1"].send_signal(signal.SIGTERM)
            services["server1"].wait(30)
            services["server1"] = start(directory, path, "server1")
            with mp.Client(path, "carol") as carol:
                carol.wait_ready(60)
                print(f"carol: the service lists {carol.models()} (no new upload)")
            query("carol", x_test[101:111], "logits")
        finally:
            for name, proc in services.items():
                proc.send_signal(signal.SIGTERM)
            codes = {name: proc.wait(30) for name, proc in services.items()}
            print(f"services stopped: exit codes {json.dumps(codes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
