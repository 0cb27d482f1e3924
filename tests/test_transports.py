"""The transports (mpcnp.net): round trips of every dtype and shape, FIFO per sender, json, counters
and the Lamport clock, timeouts and aborts, on memory, ipc and tcp+CURVE channels."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from mpcnp.net import (DTYPES, FrameError, MemoryNetwork, NetError,
                       PeerAborted, PeerTimeout, header_bytes)
from mpcnp.net.framing import HEADER_BYTES
from helpers import NET_BACKENDS, NAMES, WAIT, network, run_parties


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


@pytest.mark.parametrize("backend", NET_BACKENDS)
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


def test_closed_transport_refuses_work(net):
    net["server0"].close()
    with pytest.raises(NetError, match="closed"):
        net["server0"].send("server1", np.ones(1))
    with pytest.raises(NetError, match="closed"):
        net["server0"].recv("server1", 1.0)
