"""Model serving over real ZeroMQ sockets on loopback: the three core services (as processes started
with ``python -m mpcnp serve``, or as threads of this process where a test looks inside them), model
owners and clients that come and go.

Every comparison with the plaintext model uses the error bound of test_serving_parts.error_bound's
reasoning (exact truncation: within one unit per layer, carried through the later layers' weights),
computed here by ``bound``; the services run with exact truncation so that no answer is ever garbage.
"""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import chi_square, chi_square_limit

import mpcnp as mp
from mpcnp import nn
from mpcnp.net import keygen, write_key_file
from mpcnp.runtime.context import CORE_PARTIES, SERVERS
from mpcnp.serving import config, gateway, spec
from mpcnp.serving import service as service_module
from mpcnp.serving import session as session_module
from mpcnp.serving.service import Service, Settings

pytestmark = pytest.mark.processes

ULP = 2.0 ** -16
WAIT = 30.0             # bounds a failing test; never a duration asserted
ROOT = Path(__file__).resolve().parent.parent


# ---- models -------------------------------------------------------------------------------------------
def mlp(rng) -> nn.Sequential:
    model = nn.Sequential(nn.Dense(64, 16), nn.ReLU(), nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 10))
    return _load(model, rng)


def cnn(rng) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dense(64, 10))
    return _load(model, rng)


def _load(model, rng):
    return model.load([{name: rng.normal(scale=0.3, size=shape) for name, shape in layer.shapes.items()}
                       if layer.params else {} for layer in model.layers])


def bound(model: nn.Sequential, x: np.ndarray) -> float:
    """|private - plaintext| bound with exact truncation (the reasoning of test_serving_parts.error_bound):
    per Dense/Conv2d layer, the input's error times the largest |W| column sum, plus the weights' and
    bias's rounding (half a unit each, times the input's magnitude), plus one unit of truncation."""
    e, a = ULP / 2, np.asarray(x, dtype=np.float64)
    for layer in model.layers:
        if isinstance(layer, (nn.Dense, nn.Conv2d)):
            w = layer.params["weight"]
            columns = np.abs(w).sum(axis=0) if isinstance(layer, nn.Dense) else np.abs(w).reshape(len(w), -1).sum(1)
            fan_in = w.shape[0] if isinstance(layer, nn.Dense) else int(np.prod(w.shape[1:]))
            e = e * columns.max() + np.abs(a).max() * fan_in * ULP / 2 + 1.5 * ULP
        a = layer.forward_plain(a)
    return 1.01 * e + ULP


def check_prediction(model, x, logits=None, classes=None) -> None:
    expected = model.forward_plain(x)
    tolerance = bound(model, x)
    if logits is not None:
        assert logits.shape == expected.shape and np.abs(logits - expected).max() <= tolerance
    if classes is not None:
        top2 = np.sort(expected, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * tolerance       # rows whose class no rounding can change
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


# ---- tests: answers ----------------------------------------------------------------------------------------
def test_concurrent_clients_get_the_plaintext_models_answers(tmp_path):
    rng = np.random.default_rng(0)
    models = {"mlp": (mlp(rng), (64,)), "cnn": (cnn(rng), (1, 8, 8))}
    with processes(tmp_path, ["--truncation", "exact"]) as services:
        with client(services.path, "alice") as owner:          # uploads, then leaves
            for name, (model, shape) in models.items():
                owner.upload(name, model, input_shape=shape)
        errors, done = [], []

        def user(name: str, seed: int) -> None:
            local = np.random.default_rng(seed)
            try:
                with client(services.path, name) as c:
                    assert c.models() == ["cnn", "mlp"]
                    for i in range(6):
                        which = ("mlp", "cnn")[(i + seed) % 2]
                        model, shape = models[which]
                        rows = int(local.integers(1, 4))
                        x = local.normal(size=(rows,) + shape)
                        if i % 3 == 2:
                            check_prediction(model, x, classes=c.predict(which, x, output="class"))
                        else:
                            check_prediction(model, x, logits=c.predict(which, x))
                    one = local.normal(size=models["mlp"][1])          # one sample, no batch axis
                    check_prediction(models["mlp"][0], one[None], logits=c.predict("mlp", one)[None])
                    done.append(name)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                errors.append((name, exc))

        users = [threading.Thread(target=user, args=(name, seed)) for seed, name in enumerate(["bob", "carol", "dave"])]
        for u in users:
            u.start()
        for u in users:
            u.join(3 * WAIT)
        assert not errors, errors
        assert sorted(done) == ["bob", "carol", "dave"]


def test_queries_that_arrive_together_are_one_batch_and_each_client_sees_only_its_rows(tmp_path, monkeypatch):
    sent = []
    real_answer_all = gateway.Gateway.answer_all

    def answer_all(self, answers):
        sent.extend((self.server, query.client, share.shape) for query, share in answers)
        real_answer_all(self, answers)

    monkeypatch.setattr(gateway.Gateway, "answer_all", answer_all)
    monkeypatch.setattr(service_module, "_RECENT", 3600.0)     # every client below counts as active
    rng = np.random.default_rng(1)
    model = mlp(rng)
    with threads(tmp_path, batch_window=2.0, timeout=10.0) as (path, services):
        with client(path, "alice") as owner:
            owner.upload("mlp", model)
        clients = {name: client(path, name) for name in ("bob", "carol", "dave")}
        inputs = {name: rng.normal(size=(rows, 64)) for name, rows in zip(clients, (1, 2, 3))}
        for name, c in clients.items():        # each queries once alone: server0 learns who is active
            check_prediction(model, inputs[name], logits=c.predict("mlp", inputs[name]))
        sent.clear()
        results = {}
        before = services["server0"].stats()
        workers = [threading.Thread(target=lambda n=n: results.__setitem__(n, clients[n].predict("mlp", inputs[n])))
                   for n in clients]
        for w in workers:
            w.start()
        for w in workers:
            w.join(WAIT)
        after = services["server0"].stats()
        for name, c in clients.items():
            check_prediction(model, inputs[name], logits=results[name])
            c.close()
    assert after["batches"] - before["batches"] == 1 and after["queries"] - before["queries"] == 3
    assert after["rows"] - before["rows"] == 6
    for server in SERVERS:       # each server sent each client its own rows, nothing else
        shapes = sorted((c, shape) for s, c, shape in sent if s == server)
        assert shapes == [("bob", (1, 10)), ("carol", (2, 10)), ("dave", (3, 10))]


# ---- tests: what servers and other clients see ------------------------------------------------------------------
class Views:
    """What each server receives: the clients' input shares (gateway) and the uint64 messages of the
    forward passes from its peers (session), and what each server sends a client."""

    def __init__(self, monkeypatch):
        self.inputs = {s: [] for s in SERVERS}
        self.messages = {s: [] for s in SERVERS}
        self.outputs = {s: [] for s in SERVERS}
        views = self
        real_predict, real_answer_all = gateway.Gateway._on_predict, gateway.Gateway.answer_all

        def on_predict(self, route, sender, header, arrays):
            views.inputs[self.server].append(np.array(arrays[0]))
            return real_predict(self, route, sender, header, arrays)

        def answer_all(self, answers):
            views.outputs[self.server].extend(np.array(share) for _, share in answers)
            return real_answer_all(self, answers)

        class Recording(session_module.Context):
            def recv(self, frm):
                message = super().recv(frm)
                if self.name in SERVERS and message.dtype == np.uint64:
                    views.messages[self.name].append(np.array(message).reshape(-1))
                return message

        monkeypatch.setattr(gateway.Gateway, "_on_predict", on_predict)
        monkeypatch.setattr(gateway.Gateway, "answer_all", answer_all)
        monkeypatch.setattr(session_module, "Context", Recording)


def top_bits_uniform(values: np.ndarray, bits: int) -> bool:
    counts = np.bincount((values >> np.uint64(64 - bits)).astype(np.intp), minlength=1 << bits)
    return bool(chi_square(counts) < chi_square_limit((1 << bits) - 1))


def test_no_server_and_no_other_client_learns_a_clients_input_or_output(tmp_path, monkeypatch):
    views = Views(monkeypatch)
    rng = np.random.default_rng(2)
    model = mlp(rng)
    with threads(tmp_path) as (path, services):
        with client(path, "alice") as owner:
            owner.upload("mlp", model)
        with client(path, "bob") as bob, client(path, "carol") as carol:
            # bob's input is constant (all zeros, then all 3.0), so his output is too: what every server
            # receives of it, and every message of the forward passes, must still look uniform
            for value in (0.0, 3.0):
                x = np.full((200, 64), value)
                check_prediction(model, x, logits=bob.predict("mlp", x))
            # carol's answer is the same whatever bob asks in the same batch
            carol_x = rng.normal(size=(4, 64))
            answers = [carol.predict("mlp", carol_x)]
            for value in (-5.0, 5.0):
                other = threading.Thread(target=bob.predict, args=("mlp", np.full((8, 64), value)))
                other.start()
                answers.append(carol.predict("mlp", carol_x))
                other.join(WAIT)
    for server in SERVERS:
        shares = np.concatenate([a.reshape(-1) for a in views.inputs[server][:2]])
        assert shares.size == 2 * 200 * 64 and top_bits_uniform(shares, 8), server
        messages = np.concatenate(views.messages[server])
        assert messages.size > 50000 and top_bits_uniform(messages, 8), server
        outputs = np.concatenate([a.reshape(-1) for a in views.outputs[server][:2]])
        assert top_bits_uniform(outputs, 4), server
    for answer in answers:
        check_prediction(model, carol_x, logits=answer)
    # the answers differ only by the truncation's rounding, never by what bob asked
    assert max(np.abs(a - answers[0]).max() for a in answers) <= 2 * bound(model, carol_x)


def test_the_view_test_detects_a_client_that_does_not_mask_its_input(tmp_path, monkeypatch):
    views = Views(monkeypatch)
    model = mlp(np.random.default_rng(3))
    with threads(tmp_path) as (path, _):
        with client(path, "alice") as owner:
            owner.upload("mlp", model)
        with client(path, "bob") as bob:
            class Zeros:                                      # no mask: server1 gets x itself
                def uint64(self, shape):
                    return np.zeros(shape, np.uint64)

            bob._prf = Zeros()
            bob.predict("mlp", np.full((200, 64), 3.0))
    assert not top_bits_uniform(views.inputs["server0"][0].reshape(-1), 8)
    assert not top_bits_uniform(views.inputs["server1"][0].reshape(-1), 8)


# ---- tests: access -------------------------------------------------------------------------------------------
def test_unknown_keys_are_refused_and_the_client_directory_admits_new_ones(tmp_path):
    model = mlp(np.random.default_rng(4))
    with threads(tmp_path) as (path, _):
        with client(path, "alice") as owner:
            owner.upload("mlp", model)
        key_file = tmp_path / "mallory.key"
        public = write_key_file(key_file)
        with mp.Client(path, "mallory", key=key_file, timeout=WAIT) as mallory:
            with pytest.raises(mp.ServiceError, match="refused this client's key") as refused:
                mallory.models()
            assert refused.value.code == "refused"
        with client(path, "bob") as bob:                 # the others are served as before
            assert bob.models() == ["mlp"]
        (path.parent / "clients" / "mallory.pub").write_text(json.dumps({"public_key": public}))
        deadline = time.monotonic() + WAIT
        with mp.Client(path, "mallory", key=key_file, timeout=WAIT) as mallory:
            while True:                                  # ZeroMQ retries the handshake on its own
                try:
                    assert mallory.models() == ["mlp"]
                    break
                except mp.ServiceError as exc:
                    assert exc.code == "refused" and time.monotonic() < deadline, exc
                    time.sleep(0.2)
            x = np.random.default_rng(5).normal(size=(2, 64))
            check_prediction(model, x, logits=mallory.predict("mlp", x))


def test_only_the_owner_replaces_or_deletes_a_model(tmp_path):
    rng = np.random.default_rng(6)
    first, second = mlp(rng), mlp(rng)
    with threads(tmp_path) as (path, _):
        with client(path, "alice") as alice, client(path, "bob") as bob:
            alice.upload("mlp", first)
            with pytest.raises(mp.ServiceError, match="belongs to alice: only its owner may replace") as error:
                bob.upload("mlp", second)
            assert error.value.code == "forbidden"
            with pytest.raises(mp.ServiceError, match="only its owner may delete"):
                bob.delete("mlp")
            x = rng.normal(size=(3, 64))
            check_prediction(first, x, logits=bob.predict("mlp", x))
            alice.upload("mlp", second)                       # the owner replaces it
            check_prediction(second, x, logits=bob.predict("mlp", x))
            alice.delete("mlp")
            assert bob.models() == []
            with pytest.raises(mp.ServiceError, match="no model 'mlp'") as error:
                bob.predict("mlp", x)
            assert error.value.code == "not_found"


def test_bad_requests_get_errors_that_name_the_problem(tmp_path):
    model = mlp(np.random.default_rng(7))
    with threads(tmp_path, max_rows=8) as (path, _):
        with client(path, "alice") as alice:
            alice.upload("mlp", model)
            with pytest.raises(ValueError, match=r"takes one sample of shape \(64,\)"):
                alice.predict("mlp", np.zeros((2, 63)))
            with pytest.raises(ValueError, match="non-finite|finite"):
                alice.predict("mlp", np.full((1, 64), np.nan))
            with pytest.raises(ValueError, match="output must be one of"):
                alice.predict("mlp", np.zeros(64), output="probabilities")
            with pytest.raises(mp.ServiceError, match="a query has 1 to 8 rows"):
                alice.predict("mlp", np.zeros((9, 64)))
            with pytest.raises(mp.ServiceError, match="no model 'nope'"):
                alice.predict("nope", np.zeros(64))
            with pytest.raises(ValueError, match="timeout must be a positive number"):
                alice.predict("mlp", np.zeros(64), timeout=0)
            # a raw request with a mismatched share is refused by the server itself
            header = {"op": "predict", "model": "mlp", "output": "logits", "rows": 2, "timeout": 5}
            with pytest.raises(mp.ServiceError, match=r"takes an input of shape \(2, 64\)"):
                alice._request({"server0": (header, [np.zeros((2, 63), np.uint64)])}, 5)
            x = np.random.default_rng(8).normal(size=(2, 64))
            check_prediction(model, x, logits=alice.predict("mlp", x, timeout=float("inf")))


# ---- tests: failures -----------------------------------------------------------------------------------------
KILLED_CLIENT = """
import sys, time, numpy as np, mpcnp as mp
from mpcnp.serving import wire
c = mp.Client(sys.argv[1], "erin", timeout=60)
c.wait_ready(60)
info = c.model_info("mlp")
header = {"op": "predict", "id": "q-erin", "model": "mlp", "output": "logits", "rows": 1, "timeout": 60}
share = np.zeros((1, 64), np.uint64)
if sys.argv[2] == "half":        # dies between its two shares: only server0 ever hears of the query
    c._sockets["server0"].send_multipart(wire.encode(header, [share]))
else:                            # dies before reading its answer
    for server in ("server0", "server1"):
        c._sockets[server].send_multipart(wire.encode(header, [share]))
print("sent", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["half", "whole"])
def test_a_killed_client_costs_only_its_own_query(tmp_path, how):
    rng = np.random.default_rng(9)
    model = mlp(rng)
    with processes(tmp_path, ["--truncation", "exact"]) as services:
        with client(services.path, "alice") as owner:
            owner.upload("mlp", model)
        dying = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, str(services.path), how],
                                 stdout=subprocess.PIPE, cwd=ROOT)
        assert dying.stdout.readline().strip() == b"sent"
        dying.kill()
        dying.wait(WAIT)
        started = time.monotonic()
        with client(services.path, "bob") as bob:
            for _ in range(5):
                x = rng.normal(size=(2, 64))
                check_prediction(model, x, logits=bob.predict("mlp", x))
        # the dead client's query may wait 60 s for a share that never comes; nobody else waits for it
        assert time.monotonic() - started < 40


def test_a_restarted_server_serves_the_model_it_kept_on_disk(tmp_path):
    rng = np.random.default_rng(10)
    model = mlp(rng)
    x = rng.normal(size=(3, 64))
    with processes(tmp_path, ["--truncation", "exact"]) as services:
        with client(services.path, "alice") as owner:
            owner.upload("mlp", model)
        with client(services.path, "bob") as bob:
            check_prediction(model, x, logits=bob.predict("mlp", x))
            assert services.signal("server1", signal.SIGKILL) == -signal.SIGKILL
            started = time.monotonic()
            with pytest.raises(mp.ServiceError) as error:
                bob.predict("mlp", x, timeout=20)
            assert time.monotonic() - started < 20 + 1
            assert error.value.code in ("unavailable", "timeout"), error.value
            services.start("server1")                        # same store: no new upload
            bob.wait_ready(WAIT)
            check_prediction(model, x, logits=bob.predict("mlp", x))
        codes = services.stop()                              # every service stops cleanly, and...
        assert codes == {"server0": 0, "server1": 0, "producer": 0}, services.logs()
        services.start()                                     # ...a restarted cluster serves the model
        with client(services.path, "carol") as carol:
            assert carol.models() == ["mlp"]
            check_prediction(model, x, classes=carol.predict("mlp", x, output="class"))
        out = subprocess.run([sys.executable, "-m", "mpcnp", "client", "--config", str(services.path), "--name",
                              "dave", "models"], capture_output=True, text=True, cwd=ROOT, timeout=WAIT)
        assert out.returncode == 0 and json.loads(out.stdout)["model"] == "mlp", out.stderr


def test_the_serve_command_refuses_a_bad_configuration(tmp_path):
    path = make_cluster(tmp_path / "cluster")
    other = tmp_path / "other.key"
    write_key_file(other, *keygen())
    out = subprocess.run([sys.executable, "-m", "mpcnp", "serve", "--config", str(path), "--name", "server0",
                          "--key", str(other)], capture_output=True, text=True, cwd=ROOT, timeout=WAIT)
    assert out.returncode == 2 and "does not match the public_key of server0" in out.stderr


def test_waiting_clients_learn_that_the_producer_died_and_it_rejoins(tmp_path):
    rng = np.random.default_rng(11)
    model = cnn(rng)
    x = rng.normal(size=(2, 1, 8, 8))
    with processes(tmp_path, ["--truncation", "exact"]) as services:
        model_file = tmp_path / "cnn.npz"
        spec.save(model_file, model, input_shape=(1, 8, 8))
        cli = [sys.executable, "-m", "mpcnp", "client", "--config", str(services.path)]
        with client(services.path, "alice"):
            pass                                                  # the session is up
        upload = subprocess.run(cli + ["--name", "alice", "upload", "cnn", str(model_file)], capture_output=True,
                                text=True, cwd=ROOT, timeout=WAIT)
        assert upload.returncode == 0, upload.stderr
        with client(services.path, "bob") as bob, client(services.path, "carol") as carol:
            check_prediction(model, x, logits=bob.predict("cnn", x))
            assert services.signal("producer", signal.SIGKILL) == -signal.SIGKILL
            errors = []
            waiting = [threading.Thread(target=lambda c=c: errors.append(_error_of(c, x))) for c in (bob, carol)]
            for w in waiting:
                w.start()
            for w in waiting:
                w.join(WAIT)
            assert len(errors) == 2
            for error in errors:      # each within its 15 s timeout, saying what happened
                assert error.code == "unavailable" and "producer" in str(error), error
            services.start("producer")
            bob.wait_ready(WAIT)
            np.save(tmp_path / "x.npy", x)
            out = subprocess.run(cli + ["--name", "carol", "predict", "cnn", str(tmp_path / "x.npy"), "--output", "class",
                                        "--out", str(tmp_path / "y.npy")], capture_output=True, text=True, cwd=ROOT,
                                 timeout=WAIT)
            assert out.returncode == 0, out.stderr
            check_prediction(model, x, classes=np.load(tmp_path / "y.npy"))


def _error_of(c: mp.Client, x) -> mp.ServiceError:
    started = time.monotonic()
    try:
        c.predict("cnn", x, timeout=15)
    except mp.ServiceError as exc:
        assert time.monotonic() - started < 15 + 1
        return exc
    raise AssertionError("a prediction succeeded without the producer")
