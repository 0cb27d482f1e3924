"""The runtime: mp.run on both backends, failures, counters, and a real three-process cluster."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mpcnp as mp
from helpers import finish
from mpcnp.digest import MESSAGE_BYTES
from mpcnp.net import header_bytes
from mpcnp.runtime.clusterfile import free_ports

BACKENDS = ["threads", pytest.param("processes", marks=pytest.mark.processes)]
CORE = ("server0", "server1", "producer")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def sum_and_reveal():
    a = mp.private(lambda: np.array([[1.5, -2.0, 3.25]]), owner="alice")
    b = mp.private(lambda: np.array([[0.5, 0.75, -1.0]]), owner="bob")
    return (a + b).reveal(to="carol")


def test_two_owners_sum_revealed_to_a_third(backend):
    results = mp.run(sum_and_reveal, parties=["alice", "bob", "carol"], backend=backend)
    assert set(results) == {*CORE, "alice", "bob", "carol"}
    np.testing.assert_array_equal(results["carol"], [[2.0, -1.25, 2.25]])
    assert all(results[p] is None for p in results if p != "carol")


def test_party_names_and_args_reach_fn(backend):
    def fn(x, *, scale):
        return mp.party(), x * scale

    results = mp.run(fn, 2, scale=3, parties=["client"], backend=backend)
    assert results == {name: (name, 6) for name in (*CORE, "client")}


def test_closures_and_lambdas_run_unpickled(backend):
    local_state = {"secret": np.arange(3.0)}  # never pickled: processes fork
    results = mp.run(lambda: mp.private(lambda: local_state["secret"], owner="server1").reveal(),
                     backend=backend)
    np.testing.assert_array_equal(results["server0"], np.arange(3.0))


def test_input_sharing_is_one_message_of_the_data(backend):
    """The owner sends its data once, to server1 (server0's share comes from their PRF stream);
    server0 and the producer get only the shape (docs/protocols.md, "Sharing")."""
    shape = (5, 7)

    def fn():
        before = mp.stats()
        mp.private(lambda: np.ones(shape), owner="alice")
        after = mp.stats()
        return {k: after[k] - before[k] for k in after}

    costs = mp.run(fn, parties=["alice"], backend=backend)
    data = 8 * np.prod(shape)
    shape_message = 8 * len(shape)
    assert costs["alice"]["payload_bytes_sent"] == data + 2 * shape_message
    assert costs["alice"]["bytes_sent"] == data + 2 * shape_message + 3 * header_bytes(len(shape)) - \
        2 * (header_bytes(len(shape)) - header_bytes(1))
    assert costs["server1"]["payload_bytes_received"] == data
    assert costs["server0"]["payload_bytes_received"] == shape_message
    assert costs["producer"]["payload_bytes_received"] == shape_message
    for party in CORE:
        assert costs[party]["payload_bytes_sent"] == 0


def test_counters_equal_array_bytes_plus_framing(backend):
    def fn():
        x = mp.private(lambda: np.ones((3, 4)), owner="server0")
        before = mp.stats()
        x.reveal(to="server1")
        after = mp.stats()
        return {k: after[k] - before[k] for k in after}

    costs = mp.run(fn, backend=backend)
    # before the reveal every party sends its program digest to the two others (mpcnp.digest)
    digests = 2 * MESSAGE_BYTES
    assert costs["server0"]["bytes_sent"] == 3 * 4 * 8 + header_bytes(2) + digests
    assert costs["server0"]["messages_sent"] == 1 + 2
    assert costs["server1"]["bytes_received"] == 3 * 4 * 8 + header_bytes(2) + digests
    assert costs["producer"]["bytes_received"] == digests


@pytest.mark.parametrize("culprit", CORE + ("alice",))
def test_an_exception_on_any_party_is_a_party_error_everywhere(backend, culprit):
    def fn():
        x = mp.private(lambda: np.ones(4), owner="alice")
        if mp.party() == culprit:
            raise KeyError("lost the plot")
        return (x * x).reveal()

    start = time.monotonic()
    with pytest.raises(mp.PartyError) as info:
        mp.run(fn, parties=["alice"], backend=backend, timeout=5)
    assert time.monotonic() - start < 5
    assert info.value.party == culprit
    assert "lost the plot" in str(info.value)
    assert isinstance(info.value.cause, KeyError)


def test_surviving_parties_see_the_party_error(backend):
    """Parties waiting on the failed one raise PartyError themselves, naming it."""
    seen = {}

    def fn():
        try:
            x = mp.private(lambda: np.ones(2), owner="server0")
            y = x * x  # server1 needs the producer's c1 here: every party is inside fn afterwards
            if mp.party() == "server1":
                raise RuntimeError("server1 gives up")
            return (y * x).reveal()
        except mp.PartyError as exc:
            seen[mp.party()] = exc.party  # visible in the threads backend only
            raise

    with pytest.raises(mp.PartyError, match="server1"):
        mp.run(fn, backend=backend, timeout=5)
    if backend == "threads":
        assert seen == {"server0": "server1", "producer": "server1"}


def test_silent_party_times_out(backend):
    def fn():
        x = mp.private(lambda: np.ones(2), owner="server0")
        if mp.party() == "producer":
            time.sleep(30)
        return (x * x).reveal()

    timeout = 1.5
    start = time.monotonic()
    with pytest.raises(mp.PartyError) as info:
        mp.run(fn, backend=backend, timeout=timeout)
    assert time.monotonic() - start < timeout + 2
    assert info.value.party == "producer"
    assert isinstance(info.value.cause, TimeoutError)


@pytest.mark.processes
def test_killed_party_process_leaves_no_children(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()

    def fn():
        (pids / mp.party()).write_text(str(os.getpid()))
        x = mp.private(lambda: np.ones(2), owner="server0")
        if mp.party() == "server1":
            os.kill(os.getpid(), signal.SIGKILL)
        return (x * x).reveal()

    timeout = 5
    start = time.monotonic()
    with pytest.raises(mp.PartyError, match="SIGKILL") as info:
        mp.run(fn, backend="processes", timeout=timeout)
    assert time.monotonic() - start < timeout + 2
    assert info.value.party == "server1"
    for pid_file in pids.iterdir():
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _socket_directory() -> tuple[str, int]:
    """Inside a processes-backend party: the directory of this party's ipc socket and its mode."""
    from mpcnp.runtime.context import current
    endpoint = current().transport.endpoint
    assert endpoint.startswith("ipc://"), endpoint
    directory = os.path.dirname(endpoint[len("ipc://"):])
    return directory, os.stat(directory).st_mode & 0o777


@pytest.mark.processes
@pytest.mark.parametrize("fails", [False, True])
def test_processes_channels_live_in_a_private_directory_that_goes_away(fails, monkeypatch):
    """The processes backend's sockets sit in one 0700 directory per run (so no other local user can
    reach them), and the directory is gone when run returns, after a killed party too."""
    def fn():
        where = _socket_directory()
        mp.private(np.ones(2), owner="server0").reveal()
        if fails and mp.party() == "producer":
            os.kill(os.getpid(), signal.SIGKILL)
        return where

    if fails:
        # a directory of our own: other programs' runs may come and go in the system's temporary one
        private = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
        monkeypatch.setattr(tempfile, "tempdir", str(private))
        with pytest.raises(mp.PartyError, match="SIGKILL"):
            mp.run(fn, backend="processes", timeout=5)
        assert not list(private.iterdir())
        private.rmdir()
        return
    results = mp.run(fn, backend="processes", timeout=5)
    assert len({directory for directory, _ in results.values()}) == 1
    directory, mode = results["server0"]
    assert mode == 0o700
    assert not os.path.exists(directory)


@pytest.mark.processes
def test_unpicklable_result_is_reported():
    with pytest.raises(mp.PartyError, match="cannot travel back"):
        mp.run(lambda: (lambda: 1), backend="processes", timeout=5)


def test_bad_arguments_fail_fast():
    with pytest.raises(ValueError, match="appear once"):
        mp.run(lambda: 1, parties=["alice", "alice"])
    with pytest.raises(ValueError, match="core party"):
        mp.run(lambda: 1, parties=["server0"])
    with pytest.raises(ValueError, match="unknown backend"):
        mp.run(lambda: 1, backend="gpu")
    with pytest.raises(ValueError, match="unknown protocol"):
        mp.run(lambda: 1, protocol="spdz")
    with pytest.raises(ValueError, match="frac_bits"):
        mp.run(lambda: 1, frac_bits=40)
    with pytest.raises(RuntimeError, match="not inside an mpcnp party"):
        mp.party()
    with pytest.raises(TypeError, match="parties must be a sequence"):
        mp.run(lambda: 1, parties=None)


@pytest.mark.parametrize("program, words", [
    (lambda: mp.private(np.ones(2)).reveal(to=5), "reveal(to=...) takes None"),
    (lambda: mp.softmax(mp.private(np.ones((2, 2))), axis=5), "softmax: axis 5 is out of bounds"),
    (lambda: mp.softmax(np.ones((2, 2)), axis=-3), "softmax: axis -3 is out of bounds"),
    (lambda: mp.maxpool2d(mp.private(np.ones((1, 1, 4, 4))), 1.5), "maxpool2d: kernel and stride"),
    (lambda: mp.avgpool2d(mp.private(np.ones((1, 1, 4, 4))), 2, stride=0.5), "avgpool2d: kernel and stride"),
])
def test_argument_errors_name_the_argument(program, words):
    with pytest.raises(mp.PartyError, match=re.escape(words)):
        mp.run(program, timeout=5)


def test_unknown_party_names_are_named(backend):
    with pytest.raises(mp.PartyError, match="unknown party 'mallory'"):
        mp.run(lambda: mp.private(np.ones(2)).reveal(to="mallory"), backend=backend, timeout=5)
    with pytest.raises(mp.PartyError, match="unknown party 'mallory'"):
        mp.run(lambda: mp.private(np.ones(2), owner="mallory"), backend=backend, timeout=5)


def test_runs_are_independent(backend):
    """Fresh keys per run: two runs sharing the same input give different shares."""
    def fn():
        return mp.private(lambda: np.zeros(4), owner="alice").share

    first = mp.run(fn, parties=["alice"], backend=backend)["server0"]
    second = mp.run(fn, parties=["alice"], backend=backend)["server0"]
    assert not np.array_equal(first, second)


# ---- a cluster of real processes started by `python -m mpcnp party` ------------------------------------
PROGRAM = textwrap.dedent("""
    import sys
    import numpy as np
    import mpcnp as mp

    def main(n):
        x = mp.private(lambda: np.arange(n, dtype=float), owner="server0")
        y = mp.private(lambda: np.full(n, 0.5), owner="server1")
        return (x * y + x).reveal(to="producer")

    result = mp.run(main, int(sys.argv[1]), timeout=float(sys.argv[2]))
    print("RESULT", mp.party() if False else list(result)[0], result[list(result)[0]] is not None, flush=True)
    if result.get("producer") is not None:
        print("VALUE", list(result["producer"]), flush=True)
""")


def make_cluster(tmp_path: Path, names=CORE) -> tuple[Path, dict]:
    ports = free_ports(len(names))
    entries, keys = {}, {}
    for name, port in zip(names, ports):
        key_file = tmp_path / f"{name}.key"
        out = subprocess.run([sys.executable, "-m", "mpcnp", "keygen", "--out", str(key_file)],
                             check=True, capture_output=True, text=True)
        public = json.loads(out.stdout)["public_key"]
        entries[name] = {"address": f"127.0.0.1:{port}", "public_key": public}
        keys[name] = key_file
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps(entries))
    return config, keys


def start_party(config: Path, name: str, key: Path, script: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mpcnp", "party", "--config", str(config), "--name", name,
                             "--key", str(key), str(script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.processes
def test_cluster_of_three_party_processes(tmp_path):
    config, keys = make_cluster(tmp_path)
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    procs = {name: start_party(config, name, keys[name], script, "4", "20") for name in CORE}
    # A stranger writes garbage to server0's port mid-start: ZeroMQ refuses it, the run goes on.
    port = json.loads(config.read_text())["server0"]["address"].rsplit(":", 1)[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=1) as stranger:
                stranger.sendall(os.urandom(4096))
            break
        except OSError:
            time.sleep(0.05)
    outputs = finish(procs, timeout=60)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outputs)
    value_line = [l for l in outputs["producer"][0].splitlines() if l.startswith("VALUE")]
    assert value_line, outputs["producer"]
    np.testing.assert_allclose(eval(value_line[0][6:]), np.arange(4) * 1.5, atol=2 ** -15)


@pytest.mark.processes
def test_cluster_refuses_a_peer_with_the_wrong_key(tmp_path):
    config, keys = make_cluster(tmp_path)
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    # server1 runs with a cluster file of its own that lists a key the others do not know.
    impostor = json.loads(config.read_text())
    impostor_key = tmp_path / "impostor.key"
    out = subprocess.run([sys.executable, "-m", "mpcnp", "keygen", "--out", str(impostor_key)],
                         check=True, capture_output=True, text=True)
    impostor["server1"]["public_key"] = json.loads(out.stdout)["public_key"]
    impostor_config = tmp_path / "impostor.json"
    impostor_config.write_text(json.dumps(impostor))
    # 10 s: three interpreters start on two shared cores; the honest pair must reach each other in time
    procs = {"server0": start_party(config, "server0", keys["server0"], script, "4", "10"),
             "producer": start_party(config, "producer", keys["producer"], script, "4", "10"),
             "server1": start_party(impostor_config, "server1", impostor_key, script, "4", "10")}
    outputs = finish(procs, timeout=40)
    for name in ("server0", "producer"):
        assert procs[name].returncode == 1, outputs
        assert f"mpcnp party {name}: party 'server1' failed" in outputs[name][1], outputs


def test_party_command_refuses_a_key_that_does_not_match(tmp_path):
    config, keys = make_cluster(tmp_path)
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = start_party(config, "server0", keys["server1"], script, "4", "4")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "does not match" in err


def test_a_malformed_message_blames_its_sender(backend):
    """A party that sends something the protocol cannot use is named, not the party that noticed."""
    def fn():
        if mp.party() == "alice":
            from mpcnp.runtime.context import current
            for peer in ("server0", "producer"):
                current().send(peer, np.array([-3], dtype=np.int64))  # a "shape" no array can have
            current().send("server1", np.zeros(2, dtype=np.uint64))
            return None
        return mp.private(np.ones(2), owner="alice").reveal()

    with pytest.raises(mp.PartyError, match="malformed shape") as info:
        mp.run(fn, parties=["alice"], backend=backend, timeout=5)
    assert info.value.party == "alice"


def test_root_cause_follows_blame_to_the_end_of_the_chain():
    from mpcnp.runtime.lifecycle import ABORTED, OBSERVED, OK, OWN, Outcome, root_cause

    silent = TimeoutError("silent")
    outcomes = [Outcome("server0", OBSERVED, error=mp.PartyError("server1", silent), when=1.0),
                Outcome("server1", OBSERVED, error=mp.PartyError("producer", silent), when=1.1),
                Outcome("producer", ABORTED, error=mp.PartyError("producer", "stopped"), when=2.0),
                Outcome("alice", OK, value=1)]
    assert root_cause(outcomes).party == "producer"
    # an exception in a party's own code outranks any timeout it caused
    outcomes.append(Outcome("bob", OWN, error=mp.PartyError("bob", KeyError("x")), when=3.0))
    assert root_cause(outcomes).party == "bob"
    # a cycle of blame stops instead of looping
    loop = [Outcome("server0", OBSERVED, error=mp.PartyError("server1", silent), when=1.0),
            Outcome("server1", OBSERVED, error=mp.PartyError("server0", silent), when=1.0)]
    assert root_cause(loop).party in ("server0", "server1")
    assert root_cause([Outcome("server0", OK, value=None)]) is None
