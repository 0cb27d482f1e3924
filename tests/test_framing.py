"""The wire format: exceptions that travel, malformed frames refused with FrameError naming the
sender, unknown senders dropped."""
from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest

from mpcnp.net import (FrameError, HandshakeError, NetError,
                       PeerAborted, PeerTimeout)
from mpcnp.net.framing import JSON
from helpers import WAIT, header, network, rogue


def test_exceptions_pickle_with_their_attributes():
    for exc in (PeerTimeout("producer", 5.0), PeerAborted("server1", "boom"),
                FrameError("client", "bad magic"), HandshakeError("server0", "refused")):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc) and str(copy) == str(exc) and copy.__dict__ == exc.__dict__
        assert isinstance(copy, NetError)


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
