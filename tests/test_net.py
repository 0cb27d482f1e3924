"""Tests of the channel layer (mpcnp.net): both transports through the same test bodies."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import socket
import struct
import tempfile
import threading
import time

import numpy as np
import pytest
import zmq

from mpcnp.net import (DTYPES, CurveConfig, FrameError, HandshakeError, MemoryNetwork, NetError,
                       PeerAborted, PeerTimeout, ZmqTransport, header_bytes)
from mpcnp.net.cluster import (keygen, load_cluster, parse_cluster, read_key_file,
                               write_key_file)
from mpcnp.net.framing import ARRAY, HEADER_BYTES, JSON, MAGIC, VERSION

NAMES = ("server0", "server1", "producer")
BACKENDS = ("memory", "ipc", "curve")
WAIT = 20.0  # generous: only bounds a failing test, never asserts a duration


def curve_configs(names, keys=None):
    keys = keys or {n: keygen() for n in names}
    return {n: CurveConfig(keys[n][0], keys[n][1], {p: keys[p][0] for p in names if p != n})
            for n in names}


@contextlib.contextmanager
def network(backend, names=NAMES, absent=(), **options):
    """{name: Transport} of a fully connected network on ``backend``; closed on exit.

    ``absent`` parties are configured (address, key) but never come up.
    """
    if backend == "memory":
        net = MemoryNetwork(names)
        try:
            yield {n: net.transport(n) for n in names}
        finally:
            net.close()
        return
    tmp = tempfile.mkdtemp(prefix="mpcnp-test-", dir="/tmp")
    configs = curve_configs(names + absent)
    transports = {}
    try:
        for n in names:
            transports[n] = (ZmqTransport(n, f"ipc://{tmp}/{n}", **options) if backend == "ipc" else
                             ZmqTransport(n, "tcp://127.0.0.1:0", curve=configs[n], **options))
        endpoints = {n: t.endpoint for n, t in transports.items()}
        endpoints.update({n: f"ipc://{tmp}/{n}" if backend == "ipc" else "tcp://127.0.0.1:9"
                          for n in absent})
        for t in transports.values():
            t.connect(endpoints)
        yield transports
    finally:
        for t in transports.values():
            t.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def rogue(transport, routing_id, keys=None):
    """A bare DEALER sending to ``transport`` as ``routing_id``, CURVE with ``keys`` if given."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = routing_id.encode()
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey = (k.encode() for k in keys)
        sock.curve_serverkey = transport.curve.public_key.encode()
    sock.connect(transport.endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


@pytest.fixture(params=BACKENDS)
def net(request):
    with network(request.param) as transports:
        yield transports


def run_parties(programs):
    """Run {name: fn()} each in its own thread; returns {name: result}, re-raises the first error."""
    results, errors = {}, {}

    def body(name, fn):
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors[name] = exc

    threads = [threading.Thread(target=body, args=item) for item in programs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a party hung"
    if errors:
        raise next(iter(errors.values()))
    return results


def sample(dtype, shape, rng):
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# ---- round trips -----------------------------------------------------------------------------
SHAPES = [(), (0,), (7,), (3, 4), (0, 5), (2, 1, 3), (1,) * 10]


def test_every_dtype_and_shape_round_trips(net):
    rng = np.random.default_rng(0)
    sent = []
    for dtype in DTYPES.values():
        for shape in SHAPES:
            a = sample(dtype, shape, rng)
            sent.append(a)
            net["server0"].send("server1", a)
    base = sample(np.dtype(np.int64), (6, 8), rng)
    for a in (base[:, ::2], base.T, base[::-1], np.asfortranarray(base), base.astype(">u4")):
        sent.append(a)
        net["server0"].send("server1", a)
    sent.append(np.float32(2.5))
    net["server0"].send("server1", np.float32(2.5))
    for a in sent:
        got = net["server1"].recv("server0", WAIT)
        a = np.asarray(a)
        assert got.dtype == a.dtype.newbyteorder("=") and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
        assert not got.flags.writeable and got.flags.c_contiguous and got.flags.aligned


@pytest.mark.parametrize("backend", BACKENDS)
def test_100_mb_array_spans_several_frames(backend):
    data = np.random.default_rng(1).integers(0, 2**63, 100_000_000 // 8 + 5, dtype=np.uint64)
    with network(backend) as net:
        net["producer"].send("server0", data)
        got = net["server0"].recv("producer", WAIT)
        assert np.array_equal(got, data)


@pytest.mark.parametrize("backend", ["ipc", "curve"])
def test_small_chunks_with_odd_sizes(backend):
    with network(backend, chunk_bytes=64 * 1024) as net:
        arrays = [np.arange(n, dtype=np.uint8) for n in (65535, 65536, 65537, 1_000_003)]
        arrays.append(np.arange(300_001, dtype=np.float64).reshape(1, 300_001))
        for a in arrays:
            net["server1"].send("server0", a)
        for a in arrays:
            np.testing.assert_array_equal(net["server0"].recv("server1", WAIT), a)


def test_fifo_per_sender_with_interleaved_senders(net):
    for i in range(40):
        net["server0"].send("server1", np.array([i]))
        net["producer"].send("server1", np.array([1000 + i]))
        net["producer"].send_json("server1", {"i": i})
    got_p = [(int(net["server1"].recv("producer", WAIT)[0]), net["server1"].recv_json("producer", WAIT))
             for _ in range(40)]
    got_0 = [int(net["server1"].recv("server0", WAIT)[0]) for _ in range(40)]
    assert got_p == [(1000 + i, {"i": i}) for i in range(40)]
    assert got_0 == list(range(40))


def test_json_messages_and_kind_mismatch(net):
    obj = {"shape": [2, 3], "name": "relu", "scale": 0.5, "ok": True, "none": None, "text": "é"}
    net["server0"].send_json("producer", obj)
    assert net["producer"].recv_json("server0", WAIT) == obj
    net["server0"].send_json("producer", [1, 2])
    with pytest.raises(FrameError, match="diverged") as info:
        net["producer"].recv("server0", WAIT)
    assert info.value.peer == "server0"
    net["server0"].send("producer", np.ones(2))
    np.testing.assert_array_equal(net["producer"].recv("server0", WAIT), np.ones(2))


def test_memory_transport_is_zero_copy():
    net = MemoryNetwork(NAMES)
    a = np.arange(10)
    net.transport("server0").send("server1", a)
    got = net.transport("server1").recv("server0", WAIT)
    assert np.shares_memory(got, a) and not got.flags.writeable and a.flags.writeable


def test_bad_arguments(net):
    t = net["server0"]
    with pytest.raises(ValueError, match="'nobody'.*server1"):
        t.send("nobody", np.ones(1))
    with pytest.raises(ValueError, match="nobody"):
        t.recv("nobody", 1.0)
    with pytest.raises(ValueError, match="'server0'"):
        t.send("server0", np.ones(1))
    for bad in (np.ones(2, complex), np.array(["a"]), np.array([None]), [1, 2]):
        with pytest.raises(TypeError):
            t.send("server1", bad)


# ---- counters -------------------------------------------------------------------------------
def test_counters_are_payload_plus_documented_header(net):
    arrays = [np.zeros((), np.int8), np.zeros((3, 5), np.uint64), np.zeros((2, 0, 4), np.float32)]
    obj = {"x": [1, 2, 3]}
    for a in arrays:
        net["server0"].send("server1", a)
    net["server0"].send_json("server1", obj)
    payload = sum(a.nbytes for a in arrays) + len(json.dumps(obj, separators=(",", ":")))
    total = payload + sum(header_bytes(a.ndim) for a in arrays) + header_bytes(1)
    assert header_bytes(0) == HEADER_BYTES == 16 and header_bytes(3) == 40
    expect = {"bytes_sent": total, "payload_bytes_sent": payload, "messages_sent": 4,
              "bytes_received": 0, "payload_bytes_received": 0, "messages_received": 0, "rounds": 0}
    for _ in arrays:
        net["server1"].recv("server0", WAIT)
    net["server0"].abort("server0", "not counted")  # aborts are not counted
    assert net["server0"].stats.as_dict() == expect
    got = net["server1"].stats.as_dict()
    assert got["payload_bytes_received"] == payload - len(json.dumps(obj, separators=(",", ":")))
    assert got["bytes_received"] == got["payload_bytes_received"] + 16 + 32 + 40
    assert got["messages_received"] == 3 and got["rounds"] == 1
    net["server1"].stats.reset()
    assert net["server1"].stats.as_dict() == dict.fromkeys(expect, 0)


def test_rounds_are_a_lamport_clock(net):
    s0, s1, p = net["server0"], net["server1"], net["producer"]

    def exchange(me, other):
        def body():
            me.send(other.name, np.ones(1))
            me.recv(other.name, WAIT)
            return me.stats.rounds
        return body

    assert run_parties({"server0": exchange(s0, s1), "server1": exchange(s1, s0)}) == \
        {"server0": 1, "server1": 1}
    for t in net.values():
        t.stats.reset()

    def relay():
        s1.recv("producer", WAIT)
        s1.send("server0", np.ones(1))
        return s1.stats.rounds

    rounds = run_parties({"producer": lambda: p.send("server1", np.ones(1)) or p.stats.rounds,
                          "server1": relay,
                          "server0": lambda: s0.recv("server1", WAIT) is not None and s0.stats.rounds})
    assert rounds == {"producer": 0, "server1": 1, "server0": 2}
    for t in net.values():
        t.stats.reset()

    def ping(me, other, first):
        def body():
            for i in range(4):
                if (i % 2 == 0) == first:
                    me.send(other, np.ones(1))
                else:
                    me.recv(other, WAIT)
            return me.stats.rounds
        return body

    assert run_parties({"server0": ping(s0, "producer", True),
                        "producer": ping(p, "server0", False)}) == {"server0": 4, "producer": 3}


# ---- failures ---------------------------------------------------------------------------------
def test_timeout_names_the_silent_peer(net):
    start = time.monotonic()
    with pytest.raises(PeerTimeout, match="no message from server1 within 0.3 s") as info:
        net["server0"].recv("server1", 0.3)
    assert time.monotonic() - start >= 0.3
    assert (info.value.peer, info.value.timeout) == ("server1", 0.3)
    with pytest.raises(PeerTimeout):
        net["server0"].recv("server1", 0)
    net["server1"].send("server0", np.ones(1))
    np.testing.assert_array_equal(net["server0"].recv("server1", WAIT), np.ones(1))


def test_abort_reaches_a_party_waiting_on_another_peer(net):
    def waiter():
        with pytest.raises(PeerAborted) as info:
            net["server0"].recv("server1", WAIT)
        return info.value

    def failer():
        time.sleep(0.2)
        net["producer"].abort("producer", "ValueError: boom")

    got = run_parties({"server0": waiter, "producer": failer})["server0"]
    assert (got.origin, got.reason) == ("producer", "ValueError: boom")
    assert "producer failed: ValueError: boom" in str(got)
    with pytest.raises(PeerAborted):
        net["server0"].send("server1", np.ones(1))
    net["producer"].close()
    net["producer"].abort("producer", "again")  # never raises, even closed


def test_abort_to_a_dead_peer_does_not_block():
    with network("curve") as net:
        net["server1"].close()
        start = time.monotonic()
        net["server0"].abort("server0", "x")
        assert time.monotonic() - start < WAIT


def test_exceptions_pickle_with_their_attributes():
    for exc in (PeerTimeout("producer", 5.0), PeerAborted("server1", "boom"),
                FrameError("client", "bad magic"), HandshakeError("server0", "refused")):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc) and str(copy) == str(exc) and copy.__dict__ == exc.__dict__
        assert isinstance(copy, NetError)


def header(kind=ARRAY, code=8, ndim=1, shape=(1,), magic=MAGIC, version=VERSION):
    """A hand-made header (framing.py layout), to craft malformed messages."""
    return struct.pack(f"<4sBBBBQ{len(shape)}Q", magic, version, kind, code, ndim, 0, *shape)


GARBAGE = {
    "random bytes": [os.urandom(37)],
    "empty frame": [b""],
    "bad magic": [header(magic=b"XXXX") + bytes(8)],
    "bad version": [header(version=9) + bytes(8)],
    "unknown kind": [header(kind=7) + bytes(8)],
    "unknown dtype code": [header(code=99) + bytes(8)],
    "impossible ndim": [header(ndim=200, shape=(1,)) + bytes(8)],
    "truncated shape": [header(ndim=3, shape=(1,))],
    "size mismatch": [header(shape=(1000,)) + bytes(8)],
    "truncated payload, several frames": [header(shape=(100_000,)), bytes(400_000), bytes(10)],
    "impossible shape": [header(ndim=3, shape=(0, 2**62, 2**62))],
    "json not 1-d uint8": [header(kind=JSON, code=8) + bytes(8)],
    "invalid json": [header(kind=JSON, code=2, shape=(3,)) + b"{{{"],
}


@pytest.mark.parametrize("what", GARBAGE)
def test_malformed_frames_raise_frame_error_and_others_go_on(what):
    with network("ipc", absent=("client",)) as net, rogue(net["server0"], "client") as client:
        client.send_multipart(GARBAGE[what])  # plain ipc: the routing id names the sender
        client.send(header(shape=(1,)) + np.array([42], np.uint64).tobytes())
        with pytest.raises(FrameError) as info:
            net["server0"].recv("client", WAIT)
        assert info.value.peer == "client" and "client" in str(info.value)
        assert net["server0"].recv("client", WAIT)[0] == 42  # the peer's next message is fine
        net["producer"].send("server0", np.arange(3))
        np.testing.assert_array_equal(net["server0"].recv("producer", WAIT), np.arange(3))


def test_unknown_routing_id_is_dropped(caplog):
    with network("ipc") as net:
        with rogue(net["server0"], "mallory") as mallory:
            mallory.send(header() + bytes(8))
            with caplog.at_level(logging.WARNING, logger="mpcnp.net"):
                with pytest.raises(PeerTimeout):
                    net["server0"].recv("producer", 1.0)
        assert "dropped a message from unknown routing id b'mallory'" in caplog.text
        net["producer"].send("server0", np.ones(1))
        np.testing.assert_array_equal(net["server0"].recv("producer", WAIT), np.ones(1))


# ---- CURVE ----------------------------------------------------------------------------------
@contextlib.contextmanager
def curve_pair(view0, view1, used):
    """server0 and server1 over tcp+CURVE running with the key pairs ``used``, server0 knowing
    server1's public key as in ``view0``, server1 knowing server0's as in ``view1``."""
    s0 = ZmqTransport("server0", "tcp://127.0.0.1:0",
                      curve=CurveConfig(*used["server0"], {"server1": view0["server1"][0]}))
    s1 = ZmqTransport("server1", "tcp://127.0.0.1:0",
                      curve=CurveConfig(*used["server1"], {"server0": view1["server0"][0]}))
    try:
        for t in (s0, s1):
            t.connect({"server0": s0.endpoint, "server1": s1.endpoint})
        yield s0, s1
    finally:
        s0.close()
        s1.close()


def test_curve_with_right_keys_works():
    keys = {n: keygen() for n in ("server0", "server1")}
    with curve_pair(keys, keys, keys) as (s0, s1):
        s0.wait_ready(WAIT)
        s1.wait_ready(WAIT)
        s1.send("server0", np.arange(4))
        np.testing.assert_array_equal(s0.recv("server1", WAIT), np.arange(4))


def test_curve_refuses_a_client_with_a_wrong_key():
    keys = {n: keygen() for n in ("server0", "server1")}
    impostor = dict(keys, server1=keygen())  # server1 runs with a key server0 does not know
    with curve_pair(keys, impostor, impostor) as (s0, s1):
        s1.send("server0", np.arange(4))
        with pytest.raises(HandshakeError, match="server0 refused our key") as info:
            s1.wait_ready(WAIT)
        assert info.value.peer == "server0"
        with pytest.raises(HandshakeError):
            s1.recv("server0", WAIT)
        with pytest.raises(NetError):  # server0 cannot reach server1's server key either
            s0.recv("server1", 1.0)


def test_curve_client_pinned_to_a_wrong_server_key():
    keys = {n: keygen() for n in ("server0", "server1")}
    wrong_view = dict(keys, server0=keygen())  # server1 expects another key from server0
    with curve_pair(keys, wrong_view, keys) as (s0, s1):
        s1.send("server0", np.arange(4))
        with pytest.raises((HandshakeError, PeerTimeout)) as info:
            s1.wait_ready(3.0)
        assert info.value.peer == "server0"
        with pytest.raises(NetError):  # and server1 refuses server0's key, unknown to it
            s0.recv("server1", 1.0)


def test_wait_ready_keeps_messages_and_honours_an_abort():
    """While a party waits for a peer still starting, what the others send is kept for later
    receives, and an abort notice (a peer that failed meanwhile) ends the wait naming the culprit."""
    with network("curve", absent=("client",)) as net:
        net["producer"].send("server0", np.arange(3))
        with pytest.raises(PeerTimeout) as info:
            net["server0"].wait_ready(1.0)
        assert info.value.peer == "client"
        np.testing.assert_array_equal(net["server0"].recv("producer", WAIT), np.arange(3))
        net["producer"].abort("client", "HandshakeError: refused our key")
        with pytest.raises(PeerAborted) as aborted:
            net["server0"].wait_ready(WAIT)
        assert (aborted.value.origin, aborted.value.reason) == ("client", "HandshakeError: refused our key")


def test_server_reports_refused_keys_when_a_peer_stays_silent(caplog):
    with network("curve", absent=("client",)) as net:
        stranger_keys = tuple(k.decode() for k in zmq.curve_keypair())
        with caplog.at_level(logging.WARNING, logger="mpcnp.net"):
            with rogue(net["server0"], "client", stranger_keys) as stranger:
                stranger.send(header() + bytes(8))
                with pytest.raises(PeerTimeout, match="unknown keys were refused"):
                    net["server0"].recv("client", 1.0)
        assert "unknown key" in caplog.text


def test_curve_peer_claiming_another_name_is_a_frame_error():
    with network("curve", absent=("client",)) as net:
        producer_keys = (net["producer"].curve.public_key, net["producer"].curve.secret_key)
        with rogue(net["server0"], "client", producer_keys) as impostor:
            impostor.send(header() + bytes(8))  # authenticated as producer, claims client
            with pytest.raises(FrameError, match="claims to come from client") as info:
                net["server0"].recv("producer", WAIT)
        assert info.value.peer == "producer"


def test_random_bytes_on_the_port_do_not_break_the_party():
    with network("curve") as net:
        host, port = net["server0"].endpoint.rsplit("//", 1)[1].rsplit(":", 1)
        for junk in (os.urandom(4096), b"\xff" + bytes(8) + b"\x7f" + os.urandom(200), b"GET / HTTP/1.0\r\n\r\n"):
            with socket.create_connection((host, int(port))) as raw:
                raw.sendall(junk)
        net["server1"].send("server0", np.arange(5))
        np.testing.assert_array_equal(net["server0"].recv("server1", WAIT), np.arange(5))


def test_tcp_without_curve_needs_an_explicit_opt_in():
    with pytest.raises(ValueError, match="CURVE"):
        ZmqTransport("server0", "tcp://127.0.0.1:0")
    ZmqTransport("server0", "tcp://127.0.0.1:0", insecure=True).close()
    with pytest.raises(ValueError):
        ZmqTransport("server0", "udp://127.0.0.1:0")


def test_close_releases_the_port_and_threads():
    config = curve_configs(NAMES)["server0"]
    t = ZmqTransport("server0", "tcp://127.0.0.1:0", curve=config)
    endpoint = t.endpoint
    t.close()
    t.close()
    again = ZmqTransport("server0", endpoint, curve=config)
    assert again.endpoint == endpoint
    again.close()
    assert not [th for th in threading.enumerate() if th.name.startswith("mpcnp-net")]


def test_closed_transport_refuses_work(net):
    net["server0"].close()
    with pytest.raises(NetError, match="closed"):
        net["server0"].send("server1", np.ones(1))
    with pytest.raises(NetError, match="closed"):
        net["server0"].recv("server1", 1.0)


# ---- cluster file and keys -------------------------------------------------------------------
def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_key_files(tmp_path):
    public = write_key_file(tmp_path / "k.json")
    assert oct(os.stat(tmp_path / "k.json").st_mode & 0o777) == "0o600"
    assert read_key_file(tmp_path / "k.json")[0] == public
    with pytest.raises(FileExistsError):
        write_key_file(tmp_path / "k.json")
    with pytest.raises(ValueError, match="does not belong"):
        write_key_file(tmp_path / "other.json", keygen()[0], keygen()[1])
    public, secret = keygen()
    assert secret not in repr(CurveConfig(public, secret, {"server1": keygen()[0]}))
    with pytest.raises(ValueError, match="does not belong"):
        CurveConfig(keygen()[0], secret)


def test_cluster_file_with_keys(tmp_path, monkeypatch):
    keys = {n: keygen() for n in NAMES}
    write_key_file(tmp_path / "s1.key", *keys["server1"])
    entries = {n: {"address": f"127.0.0.1:{4000 + i}", "public_key": keys[n][0]}
               for i, n in enumerate(NAMES)}
    entries["server1"]["secret_key_file"] = "s1.key"
    entries["client"] = {"address": "[::1]:4100", "public_key": keygen()[0]}
    cluster = load_cluster(write_json(tmp_path / "cluster.json", entries))
    assert cluster.names == (*NAMES, "client")
    assert cluster.endpoints()["client"] == "tcp://[::1]:4100"
    assert cluster.curve_config("server1").public_key == keys["server1"][0]
    monkeypatch.setenv("MPCNP_SECRET_KEY", keys["server0"][1])
    assert cluster.curve_config("server0").peer_keys["server1"] == keys["server1"][0]
    with pytest.raises(ValueError, match="does not match the public_key of producer"):
        cluster.curve_config("producer")
    monkeypatch.delenv("MPCNP_SECRET_KEY")
    with pytest.raises(ValueError, match="no secret key for producer"):
        cluster.curve_config("producer")
    insecure = parse_cluster({"server0": "h:1", "server1": "h:2", "producer": "h:3", "insecure": True})
    assert insecure.insecure and insecure.curve_config("server0") is None


PLAIN = {"server0": "h:1", "server1": "h:2", "producer": "h:3", "insecure": True}
KEYS = {n: keygen()[0] for n in NAMES}
KEYED = {n: {"address": PLAIN[n], "public_key": KEYS[n]} for n in NAMES}
BAD_CLUSTERS = {
    "plain tcp": (dict(PLAIN, insecure=False), "insecure"),
    "unknown field": (dict(KEYED, server0={"address": "h:1", "adress": "x"}), "unknown field 'adress'"),
    "bad address": (dict(PLAIN, server0="h"), "bad address"),
    "bad port": (dict(PLAIN, server0="h:70000"), "out of range"),
    "missing core": ({"server0": "h:1", "server1": "h:2", "insecure": True}, "core party producer"),
    "same address": (dict(PLAIN, server1="h:1"), "same address"),
    "bad name": (dict(PLAIN, **{"": "h:4"}), "non-empty"),
    "insecure not bool": (dict(PLAIN, insecure="yes"), "true or false"),
    "not an object": ([1, 2], "JSON object"),
    "some keys only": (dict(KEYED, producer="h:3"), "producer has no public_key"),
    "shared key": (dict(KEYED, producer={"address": "h:3", "public_key": KEYS["server0"]}),
                   "same public_key"),
    "bad key": (dict(KEYED, producer={"address": "h:3", "public_key": "not-a-key"}), "Z85"),
}


@pytest.mark.parametrize("case", BAD_CLUSTERS)
def test_bad_cluster_files_are_rejected_with_the_reason(case):
    obj, message = BAD_CLUSTERS[case]
    with pytest.raises(ValueError, match=message):
        parse_cluster(obj)


@pytest.mark.parametrize("text, message", [('{"server0": "h:1", "server0": "h:2"}', "appears twice"),
                                           ('{"server0": ', "not valid JSON")])
def test_bad_cluster_json(tmp_path, text, message):
    (tmp_path / "cluster.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_cluster(tmp_path / "cluster.json")


def test_transports_from_a_cluster_file(tmp_path):
    keys = {n: keygen() for n in NAMES}
    ports = []
    for n in NAMES:
        write_key_file(tmp_path / f"{n}.key", *keys[n])
        with socket.socket() as probe:  # a free port (the race with other programs is harmless)
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    entries = {n: {"address": f"127.0.0.1:{port}", "public_key": keys[n][0],
                   "secret_key_file": f"{n}.key", "bind": f"tcp://127.0.0.1:{port}"}
               for n, port in zip(NAMES, ports)}
    cluster = load_cluster(write_json(tmp_path / "cluster.json", entries))
    transports = {n: cluster.transport(n) for n in NAMES}
    try:
        for t in transports.values():
            t.wait_ready(WAIT)
        transports["producer"].send("server1", np.arange(3))
        np.testing.assert_array_equal(transports["server1"].recv("producer", WAIT), np.arange(3))
    finally:
        for t in transports.values():
            t.close()
