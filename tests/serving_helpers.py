"""What the model-serving tests share (tests/test_serving.py, test_serving_failures.py,
test_serving_parts.py): small models and the error bound of their private forward pass, clusters on
free loopback ports, and the three services as processes or as threads of the test."""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

import mpcnp as mp
from mpcnp import nn
from mpcnp.runtime.context import CORE_PARTIES
from mpcnp.serving import config
from mpcnp.serving.service import Service, Settings

ULP = 2.0 ** -16
WAIT = 30.0             # bounds a failing test; never a duration asserted
ROOT = Path(__file__).resolve().parent.parent


# ---- models -------------------------------------------------------------------------------------------
def load_random(model: nn.Sequential, rng, scale: float = 0.5) -> nn.Sequential:
    return model.load([{name: rng.normal(scale=scale, size=shape) for name, shape in layer.shapes.items()}
                       if layer.params else {} for layer in model.layers])


def mlp(rng) -> nn.Sequential:
    return load_random(nn.Sequential(nn.Dense(64, 16), nn.ReLU(), nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 10)),
                       rng, 0.3)


def cnn(rng) -> nn.Sequential:
    return load_random(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                     nn.Dense(64, 10)), rng, 0.3)


def error_bound(model: nn.Sequential, x: np.ndarray) -> float:
    """How far a private forward pass (exact truncation) may be from ``forward_plain``, in absolute value.

    Per Dense or Conv2d layer, with e the input's error: e * (the largest column sum of |W|) from the
    input's error, plus (the largest |input| times the fan-in) * ULP / 2 from the weights' rounding,
    plus ULP for the truncation (within one unit) and ULP / 2 for the bias's rounding. ReLU, max pooling
    and reshapes are 1-Lipschitz; average pooling adds 2 units (exact division). The input's own rounding
    starts e at ULP / 2. The products of two rounding errors (below ULP^2 per term) are covered by the
    final factor 1.01 and one more unit.
    """
    e, a = ULP / 2, np.asarray(x, dtype=np.float64)
    for layer in model.layers:
        if isinstance(layer, (nn.Dense, nn.Conv2d)):
            w = layer.params["weight"]
            dense = isinstance(layer, nn.Dense)
            columns = np.abs(w).sum(axis=0) if dense else np.abs(w).reshape(len(w), -1).sum(axis=1)
            fan_in = w.shape[0] if dense else int(np.prod(w.shape[1:]))
            e = e * columns.max() + np.abs(a).max() * fan_in * ULP / 2 + 1.5 * ULP
        elif isinstance(layer, nn.AvgPool2d):
            e += 2 * ULP
        a = layer.forward_plain(a)
    return 1.01 * e + ULP


def check_prediction(model, x, logits=None, classes=None) -> None:
    """``logits`` within ``error_bound`` of the plaintext model's; ``classes`` equal to its argmax on
    every row whose two largest logits are further apart than twice the bound (no rounding can change
    those)."""
    expected = model.forward_plain(x)
    tolerance = error_bound(model, x)
    if logits is not None:
        assert logits.shape == expected.shape and np.abs(logits - expected).max() <= tolerance
    if classes is not None:
        top2 = np.sort(expected, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * tolerance
        np.testing.assert_array_equal(classes[clear], expected.argmax(axis=-1)[clear])


# ---- clusters and services ----------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """Ports the kernel just gave out as free (bound to port 0, then released), all different."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def make_cluster(directory: Path, clients=("alice", "bob", "carol", "dave", "erin")) -> Path:
    ports = free_ports(5)
    addresses = {name: f"127.0.0.1:{port}" for name, port in zip(CORE_PARTIES, ports)}
    path = config.write_cluster(directory, addresses, list(clients))
    obj = json.loads(path.read_text())
    obj["client_ports"] = {"server0": ports[3], "server1": ports[4]}
    obj["client_dir"] = "clients"
    (directory / "clients").mkdir()
    path.write_text(json.dumps(obj))
    return path


TEST_ARGS = ["--timeout", "2", "--threads", "1", "--log-level", "warning"]


class Processes:
    """The three services as ``python -m mpcnp serve`` processes, logs in ``directory``."""

    def __init__(self, path: Path, directory: Path, args=()):
        self.path, self.directory, self.args = path, directory, list(args)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, *names: str) -> None:
        for name in names or CORE_PARTIES:
            log = open(self.directory / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "mpcnp", "serve", "--config", str(self.path), "--name", name,
                 "--store", str(self.directory / f"store-{name}"), *TEST_ARGS, *self.args],
                stdout=log, stderr=log, cwd=ROOT)
            log.close()

    def signal(self, name: str, signum: int) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signum)
        return proc.wait(WAIT)

    def stop(self) -> dict[str, int]:
        codes = {}
        for name in list(self.procs):
            codes[name] = self.signal(name, signal.SIGTERM)
        return codes

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.directory.glob("*.log")))


@contextlib.contextmanager
def processes(tmp_path: Path, args=()):
    path = make_cluster(tmp_path / "cluster")
    services = Processes(path, tmp_path, args)
    services.start()
    try:
        yield services
    finally:
        codes = services.stop()
        assert all(code == 0 for code in codes.values()), (codes, services.logs())


@contextlib.contextmanager
def threads(tmp_path: Path, **settings):
    """The three services as threads of this process (so that a test can look inside them)."""
    path = make_cluster(tmp_path / "cluster")
    serving = config.load(path)
    chosen = Settings(**{"timeout": 2.0, "truncation": "exact", **settings})
    services = {name: Service(serving, name, store=tmp_path / f"store-{name}", settings=chosen) for name in CORE_PARTIES}
    runners = [threading.Thread(target=s.run, daemon=True) for s in services.values()]
    for runner in runners:
        runner.start()
    try:
        yield path, services
    finally:
        for service in services.values():
            service.stop()
        for runner in runners:
            runner.join(WAIT)
        assert not any(r.is_alive() for r in runners), "a service did not stop"


def client(path, name, **kwargs) -> mp.Client:
    c = mp.Client(path, name, timeout=WAIT, **kwargs)
    c.wait_ready(WAIT)
    return c


