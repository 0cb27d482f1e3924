"""CurveZMQ between parties: the right keys work, wrong keys are refused and reported, a peer cannot
claim another name, strangers do not break a party, plain tcp needs an explicit opt-in."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading

import numpy as np
import pytest
import zmq

from mpcnp.net import (CurveConfig, FrameError, HandshakeError, NetError,
                       PeerAborted, PeerTimeout, ZmqTransport, keygen)
from helpers import NAMES, WAIT, curve_configs, header, network, rogue


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
