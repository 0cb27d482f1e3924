"""Model serving over real ZeroMQ sockets on loopback: the three core services (as processes started
with ``python -m mpcnp serve``, or as threads of this process where a test looks inside them), model
owners and clients that come and go: answers, what servers and other clients see, access control,
bad requests. Failures are in test_serving_failures.py.

Answers are compared with the plaintext model within helpers.error_bound (exact truncation:
within one unit per layer, carried through the later layers' weights); the services run with exact
truncation so that no answer is ever garbage.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from helpers import chi_square, chi_square_limit
from helpers import (SERVICE_WAIT, check_prediction, client, cnn, error_bound, load_random, mlp, processes,
                     threads)

import mpcnp as mp
from mpcnp import nn
from mpcnp.net import write_key_file
from mpcnp.runtime.context import SERVERS
from mpcnp.serving import gateway, wire
from mpcnp.serving import service as service_module
from mpcnp.serving import session as session_module

pytestmark = pytest.mark.processes


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
            u.join(3 * SERVICE_WAIT)
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
            w.join(SERVICE_WAIT)
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
                other.join(SERVICE_WAIT)
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
    assert all(np.all(np.abs(a - answers[0]) <= 2 * error_bound(model, carol_x)) for a in answers)


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
        with mp.Client(path, "mallory", key=key_file, timeout=SERVICE_WAIT) as mallory:
            with pytest.raises(mp.ServiceError, match="refused this client's key") as refused:
                mallory.models()
            assert refused.value.code == "refused"
        with mp.Client(path, "mallory", key=key_file, timeout=SERVICE_WAIT) as mallory:
            # a request sent once a refusal dropped the connection but before the client read of it:
            # ZeroMQ then has nowhere to queue it, and the send must not wait forever
            monitor = next(m for m, server in mallory._monitors.items() if server == "server0")
            assert monitor.poll(SERVICE_WAIT * 1000)               # the refusal came, unread
            errors = []
            sending = threading.Thread(target=lambda: errors.append(_send_error(mallory, "server0")), daemon=True)
            sending.start()
            sending.join(SERVICE_WAIT)
            assert errors and errors[0].code == "refused", errors
        with client(path, "bob") as bob:                 # the others are served as before
            assert bob.models() == ["mlp"]
        (path.parent / "clients" / "mallory.pub").write_text(json.dumps({"public_key": public}))
        deadline = time.monotonic() + SERVICE_WAIT
        with mp.Client(path, "mallory", key=key_file, timeout=SERVICE_WAIT) as mallory:
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
            # a class needs one row of logits per sample; this model gives a (1, 4, 4) image each
            image = load_random(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2)),
                                np.random.default_rng(9))
            alice.upload("image", image, input_shape=(1, 8, 8))
            with pytest.raises(mp.ServiceError, match=r"logits of shape \(1, 4, 4\) per sample") as error:
                alice.predict("image", np.zeros((1, 8, 8)), output="class")
            assert error.value.code == "bad_request"
            x = np.random.default_rng(8).normal(size=(2, 64))
            check_prediction(model, x, logits=alice.predict("mlp", x, timeout=float("inf")))


def _send_error(c: mp.Client, server: str) -> mp.ServiceError | None:
    """The error of a send to ``server``, sending again (queued while ZeroMQ still holds the refused
    connection) until one fails; None if none does within SERVICE_WAIT."""
    deadline = time.monotonic() + SERVICE_WAIT
    while time.monotonic() < deadline:
        try:
            c._send(server, wire.encode({"op": "models", "id": "1"}), deadline, SERVICE_WAIT)
        except mp.ServiceError as exc:
            return exc
        time.sleep(0.05)
    return None
