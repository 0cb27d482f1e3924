"""The Transport interface shared by every backend.

A Transport is one party's endpoint towards all of its peers. Between two parties messages are FIFO
and matched by program order; messages from different senders are independent (a recv from one peer
buffers whatever arrives meanwhile from the others). The base class does everything that does not
depend on the medium: argument checks, the dtype whitelist, json encoding, counting (stats.py), the
sticky abort state; a backend supplies ``_deliver``, ``_next``, ``abort`` and ``close``.

A transport is driven by one thread, its party's; only ``abort`` may also be called from elsewhere
on the in-memory backend.

Whenever a transport waits on a peer it tells its ``observer`` (a WaitObserver: ``waiting(peer)``,
then ``beat(peer)`` about every 100 ms on transports that poll, then ``resumed()``), which is how a
runtime's supervisor sees who waits on whom without asking the party anything.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from mpcnp.net.errors import FrameError, NetError, PeerAborted
from mpcnp.net.framing import ARRAY, JSON, KIND_NAMES, as_wire_array, decode_json, encode_json
from mpcnp.net.stats import Stats


# Waits longer than this are split into slices: a condition or poll given a huge timeout (1e12 s)
# overflows the platform's time_t.
MAX_WAIT_SLICE = 3600.0


class WaitObserver:
    """Told when a transport waits on a peer; this base class ignores everything."""

    def waiting(self, peer: str) -> None:
        """A wait on ``peer`` begins (a receive, a start-up handshake, a send held by flow control)."""

    def beat(self, peer: str) -> None:
        """Still waiting on ``peer`` (about every 100 ms, from transports that poll)."""

    def resumed(self) -> None:
        """The wait is over."""


IGNORE = WaitObserver()


def check_party_name(name: Any) -> str:
    """``name`` if it is a usable party name, else ValueError (it becomes a ZeroMQ routing id)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a party name must be a non-empty string, got {name!r}")
    if len(name.encode("utf-8")) > 255 or name[0] == "\0":
        raise ValueError(f"party name {name!r} must be 1-255 UTF-8 bytes, not starting with NUL")
    return name


class Transport(ABC):
    """One party's endpoint towards all its peers.

    Attributes: ``name`` (this party), ``peers`` (the other parties), ``stats`` (a Stats),
    ``observer`` (a WaitObserver, told of every wait).
    """

    name: str
    peers: tuple[str, ...]
    stats: Stats
    observer: WaitObserver

    def __init__(self, name: str, peers: tuple[str, ...] = ()) -> None:
        self.name = check_party_name(name)
        self.stats = Stats()
        self.observer = IGNORE
        self._aborted: tuple[str | None, str, str] | None = None
        self._closed = False
        self._set_peers(peers)

    def _set_peers(self, peers) -> None:
        peers = tuple(check_party_name(p) for p in peers)
        if self.name in peers:
            raise ValueError(f"{self.name} cannot be its own peer")
        if len(set(peers)) != len(peers):
            raise ValueError(f"duplicate party names in {peers}")
        self.peers = peers
        self._peer_set = frozenset(peers)

    def _check_peer(self, peer: str) -> None:
        """Raise the error that makes ``peer`` unusable now, if any (called off the fast path)."""
        if peer not in self._peer_set:
            known = ", ".join(self.peers) or "none yet"
            raise ValueError(f"unknown party {peer!r}: the peers of {self.name} are {known}")
        if self._closed:
            raise NetError(f"the transport of {self.name} is closed")
        self._raise_if_aborted()

    # ---- sending (the checks are written out: these run for every message) ---------------------
    def send(self, to: str, array: np.ndarray) -> None:
        """Queue ``array`` for party ``to``; returns without waiting for delivery.

        Any whitelisted dtype (framing.DTYPES), shape and contiguity (non-contiguous: one copy).
        The caller must not modify ``array`` afterwards: both backends send it without copying.
        Raises ValueError for an unknown ``to``, TypeError for another type or dtype, PeerAborted
        if an abort notice was already received, NetError once closed.
        """
        if to not in self._peer_set or self._closed or self._aborted is not None:
            self._check_peer(to)
        wire = as_wire_array(array)
        self._deliver(to, ARRAY, self.stats.clock, wire)
        self.stats.count_sent(wire.nbytes, wire.ndim)

    def send_json(self, to: str, obj: Any) -> None:
        """Send small metadata ``obj`` (anything json.dumps accepts) to ``to``; counted like arrays."""
        self._check_peer(to)
        wire = encode_json(obj)
        self._deliver(to, JSON, self.stats.clock, wire)
        self.stats.count_sent(wire.nbytes, 1)

    # ---- receiving ----------------------------------------------------------------------------
    def recv(self, frm: str, timeout: float | None) -> np.ndarray:
        """The next array from ``frm`` (read-only, C-contiguous, aligned).

        Waits at most ``timeout`` seconds (None or inf: forever). Raises PeerTimeout(frm, timeout);
        PeerAborted(sender, accused, reason) once an abort notice arrived from any peer;
        PeerLost(frm, ...) when the connection to frm closed for good; FrameError(frm, ...)
        for a malformed message from frm, or a json message where an array was expected;
        HandshakeError when a peer refused our key; ValueError for an unknown ``frm``; NetError
        once closed.
        """
        return self._receive(frm, timeout, ARRAY)

    def recv_json(self, frm: str, timeout: float | None) -> Any:
        """The next json message from ``frm``; errors as for recv."""
        return decode_json(self._receive(frm, timeout, JSON), frm)

    def _receive(self, frm: str, timeout: float | None, expected: int) -> np.ndarray:
        """The payload of the next message from ``frm``, which must be of kind ``expected``; counted."""
        if frm not in self._peer_set or self._closed:
            self._check_peer(frm)
        deadline = None if timeout is None or timeout == float("inf") else time.monotonic() + timeout
        kind, stamp, payload = self._next(frm, timeout, deadline)
        if kind != expected:
            raise FrameError(frm, f"expected a {KIND_NAMES[expected]} message, got {KIND_NAMES[kind]} "
                                  "(the parties' programs diverged)")
        self.stats.count_received(payload.nbytes, payload.ndim, stamp)
        return payload

    def _raise_if_aborted(self) -> None:
        if self._aborted is not None:
            raise PeerAborted(*self._aborted)

    def _note_abort(self, sender: str | None, accused: str, reason: str) -> PeerAborted:
        """Keep the first abort notice (later ones are consequences of it) and return it as an error."""
        if self._aborted is None:
            self._aborted = (sender, accused, reason)
        return PeerAborted(*self._aborted)

    def wait_ready(self, timeout: float | None) -> None:
        """Block until the channels to every peer are up; raise NetError if they cannot be. In
        memory they always are."""

    def evidence(self, peer: str) -> str | None:
        """This party's own evidence that ``peer`` failed, if it has any: its connection closed and
        did not come back, its handshake failed or never completed (never on the in-memory
        transport, whose peers cannot vanish). Lets a party check an abort notice's accusation for
        itself."""
        return None

    # ---- backend --------------------------------------------------------------------------------
    @abstractmethod
    def _deliver(self, to: str, kind: int, stamp: int, wire: np.ndarray) -> None:
        """Hand one message to the medium (wire: C-contiguous, whitelisted dtype)."""

    @abstractmethod
    def _next(self, frm: str, timeout: float | None,
              deadline: float | None) -> tuple[int, int, np.ndarray]:
        """(kind, stamp, read-only payload) of the next array/json message from frm, or raise."""

    @abstractmethod
    def abort(self, accused: str, reason: str) -> None:
        """Tell every peer, best effort and without blocking, that ``accused`` failed with ``reason``
        (the peers learn that this party says so: they know the sender from the channel).

        Never raises and never blocks (a dead peer or a full queue just loses the notice).
        """

    @abstractmethod
    def close(self) -> None:
        """Release everything the transport holds; idempotent."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, peers={self.peers})"
