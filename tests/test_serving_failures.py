"""Model serving when something fails, over real sockets with the services as processes: a client
killed mid-query, a server killed and restarted with the model it kept on disk, the producer killed
under waiting clients, a bad configuration."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import ROOT, SERVICE_WAIT, check_prediction, client, cnn, make_cluster, mlp, processes

import mpcnp as mp
from mpcnp.net import keygen, write_key_file
from mpcnp.serving import spec

pytestmark = pytest.mark.processes


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
        dying.wait(SERVICE_WAIT)
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
            bob.wait_ready(SERVICE_WAIT)
            check_prediction(model, x, logits=bob.predict("mlp", x))
        codes = services.stop()                              # every service stops cleanly, and...
        assert codes == {"server0": 0, "server1": 0, "producer": 0}, services.logs()
        services.start()                                     # ...a restarted cluster serves the model
        with client(services.path, "carol") as carol:
            assert carol.models() == ["mlp"]
            check_prediction(model, x, classes=carol.predict("mlp", x, output="class"))
        out = subprocess.run([sys.executable, "-m", "mpcnp", "client", "--config", str(services.path), "--name",
                              "dave", "models"], capture_output=True, text=True, cwd=ROOT, timeout=SERVICE_WAIT)
        assert out.returncode == 0 and json.loads(out.stdout)["model"] == "mlp", out.stderr


def test_the_serve_command_refuses_a_bad_configuration(tmp_path):
    path = make_cluster(tmp_path / "cluster")
    other = tmp_path / "other.key"
    write_key_file(other, *keygen())
    out = subprocess.run([sys.executable, "-m", "mpcnp", "serve", "--config", str(path), "--name", "server0",
                          "--key", str(other)], capture_output=True, text=True, cwd=ROOT, timeout=SERVICE_WAIT)
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
                                text=True, cwd=ROOT, timeout=SERVICE_WAIT)
        assert upload.returncode == 0, upload.stderr
        with client(services.path, "bob") as bob, client(services.path, "carol") as carol:
            check_prediction(model, x, logits=bob.predict("cnn", x))
            assert services.signal("producer", signal.SIGKILL) == -signal.SIGKILL
            errors = []
            waiting = [threading.Thread(target=lambda c=c: errors.append(_error_of(c, x))) for c in (bob, carol)]
            for w in waiting:
                w.start()
            for w in waiting:
                w.join(SERVICE_WAIT)
            assert len(errors) == 2
            for error in errors:      # each within its 15 s timeout, saying what happened
                assert error.code == "unavailable" and "producer" in str(error), error
            services.start("producer")
            bob.wait_ready(SERVICE_WAIT)
            np.save(tmp_path / "x.npy", x)
            out = subprocess.run(cli + ["--name", "carol", "predict", "cnn", str(tmp_path / "x.npy"), "--output", "class",
                                        "--out", str(tmp_path / "y.npy")], capture_output=True, text=True, cwd=ROOT,
                                 timeout=SERVICE_WAIT)
            assert out.returncode == 0, out.stderr
            check_prediction(model, x, classes=np.load(tmp_path / "y.npy"))
        assert services.signal("producer", signal.SIGINT) == 0        # Ctrl-C is a clean stop too


def _error_of(c: mp.Client, x) -> mp.ServiceError:
    started = time.monotonic()
    try:
        c.predict("cnn", x, timeout=15)
    except mp.ServiceError as exc:
        assert time.monotonic() - started < 15 + 1
        return exc
    raise AssertionError("a prediction succeeded without the producer")
