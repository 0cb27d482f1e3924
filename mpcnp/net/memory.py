"""In-memory channels for the threads backend: every party is a thread of one process.

Zero-copy: ``send`` hands the receiver a read-only view of the sender's array (the sender must not
modify the array afterwards, as on every transport). Each party owns an inbox: one FIFO per sender
behind one Condition; a sender appends to the receiver's FIFO and wakes it. Nothing else is shared
between the parties' threads. No encryption is needed: the data never leaves the process.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Iterable

import numpy as np

from mpcnp.net.base import MAX_WAIT_SLICE, Transport, check_party_name
from mpcnp.net.errors import NetError, PeerTimeout


class MemoryNetwork:
    """The channels between ``names`` (at least two distinct party names) within one process.

    ``transport(name)`` is that party's Transport (the same object on every call).
    Raises ValueError for fewer than two names, duplicates or invalid names.
    """

    def __init__(self, names: Iterable[str]) -> None:
        names = tuple(check_party_name(n) for n in names)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate party names in {names}")
        if len(names) < 2:
            raise ValueError(f"a network needs at least two parties, got {names}")
        self.names = names
        self._transports = {n: MemoryTransport(self, n, tuple(p for p in names if p != n))
                            for n in names}

    def transport(self, name: str) -> "MemoryTransport":
        """The Transport of party ``name``; ValueError if it is not in the network."""
        try:
            return self._transports[name]
        except KeyError:
            raise ValueError(f"unknown party {name!r}: the network has {', '.join(self.names)}") from None

    def close(self) -> None:
        """Close every party's transport."""
        for t in self._transports.values():
            t.close()


class MemoryTransport(Transport):
    """One party's in-memory Transport; create through MemoryNetwork.transport."""

    def __init__(self, network: MemoryNetwork, name: str, peers: tuple[str, ...]) -> None:
        super().__init__(name, peers)
        self._network = network
        self._cond = threading.Condition(threading.Lock())
        self._inbox: dict[str, deque] = {p: deque() for p in peers}

    def _deliver(self, to: str, kind: int, stamp: int, wire: np.ndarray) -> None:
        view = wire.view()
        view.flags.writeable = False
        target = self._network._transports[to]
        with target._cond:
            if target._closed:  # as over ZeroMQ, a message to a party that is gone is lost
                return
            target._inbox[self.name].append((kind, stamp, view))
            target._cond.notify()

    def _next(self, frm: str, timeout: float | None,
              deadline: float | None) -> tuple[int, int, np.ndarray]:
        queue = self._inbox[frm]
        with self._cond:
            if queue and self._aborted is None:
                return queue.popleft()
            self.observer.waiting(frm)
            try:
                while True:
                    self._raise_if_aborted()
                    if queue:
                        return queue.popleft()
                    if self._closed:
                        raise NetError(f"the transport of {self.name} was closed while it waited for {frm}")
                    remaining = MAX_WAIT_SLICE if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        raise PeerTimeout(frm, timeout)
                    self._cond.wait(min(remaining, MAX_WAIT_SLICE))
            finally:
                self.observer.resumed()

    def abort(self, accused: str, reason: str) -> None:
        """Post the abort notice into every peer's inbox (never blocks for long, never raises)."""
        try:
            for peer in self.peers:
                target = self._network._transports[peer]
                with target._cond:
                    target._note_abort(self.name, str(accused), str(reason))
                    target._cond.notify_all()
        except Exception:  # an abort must not mask the failure being reported
            pass

    def halt(self, accused: str, reason: str) -> None:
        """End this party's waits from outside (the run's supervisor, in another thread): its
        next or current receive raises PeerAborted(None, accused, reason). Never raises."""
        try:
            with self._cond:
                self._note_abort(None, str(accused), str(reason))
                self._cond.notify_all()
        except Exception:  # stopping a party must not mask the failure being reported
            pass

    def close(self) -> None:
        """Mark closed and drop undelivered messages: later send/recv raise NetError, and a receive
        waiting now does too. Idempotent; may be called from any thread."""
        with self._cond:
            self._closed = True
            for queue in self._inbox.values():
                queue.clear()
            self._cond.notify_all()
