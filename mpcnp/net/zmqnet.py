"""ZeroMQ channels between processes: the processes backend (over ipc) and clusters of hosts (tcp).

Topology. Each party binds one ROUTER (its inbox) and, for every peer, connects one DEALER to the
peer's ROUTER. ``recv`` runs in the caller's thread: a blocking recv on the ROUTER, bounded by
RCVTIMEO (it wakes up faster than zmq_poll), files what arrives in one FIFO per sender; there is no
hand-off to another thread on the fast path. Messages queue in the DEALER until the peer is up, so
start-up order does not matter.

Who sent a message. Over CURVE the sender is the peer owning the Curve key that the connection
authenticated with: the ZAP handler names the connection after that peer (the ZAP user id, which
ZeroMQ attaches to every message) and nothing the peer says, its routing id included, can change
that; a participant cannot take over another's identity or connection. Over plain ipc (one user's
processes, behind a 0700 directory) the DEALER's routing id names the sender.

Framing. One message = one ZeroMQ multipart message: the header of framing.py, with the payload
appended in the same frame when it is at most ``INLINE_BYTES``; larger payloads follow, sent
zero-copy, as frames of at most ``chunk_bytes`` (1 MiB with CURVE, 64 MiB plain), and are received
by frames.py: refused from the header when over ``max_message_bytes``, else assembled frame by frame.

Flow control (flow.py): a sender may have at most ``window`` bytes its receiver has not consumed; a
send beyond it waits for the receiver's credit (bounded by ``send_timeout``), so an inbox holds about
``window`` bytes per sender and a party running ahead (a producer dealing triples) is held back
instead of filling its peer's memory. Two parties exchanging more than a window at once both go
ahead; a sender that ignores credit is refused (FrameError). Every party of a run must use the same
limits; a cycle of three or more parties each waiting for the next one's credit is not resolved
(none of mpcnp's protocols sends that way).

Security. Over tcp a transport always uses CurveZMQ (encryption and mutual authentication), unless
``insecure=True`` is passed explicitly (a trusted private network, or benchmarks). Each party has a
Curve key pair and knows every peer's public key (CurveConfig); its DEALERs are CURVE clients
pinned to each peer's server key. Plain (NULL mechanism) channels exist only over ipc (local,
protected by file permissions) and in memory (memory.py).

Failures. A peer that refuses our key (or whose key we have wrong) is reported as HandshakeError
naming it by the next ``recv``; strangers (wrong keys, garbage bytes on the port) are refused by
ZeroMQ and logged as warnings on ``logging.getLogger("mpcnp.net")``; the run goes on. A malformed
message from a peer becomes a FrameError raised by the recv from that peer, in FIFO order; the
other peers are unaffected. A peer whose connection closed and stayed closed for ``LOST_GRACE``
seconds while we wait on it is PeerLost; so is one that said goodbye (a transport that closes after
a failure says so to every peer it reached, so that its leaving is not taken for its fault:
``after_failure``). Messages under an unknown routing id are dropped and logged.

Threads and processes. A transport belongs to one thread (its party's). Besides it, one helper
thread per transport serves ZAP and watches handshakes; ``close`` ends it. pyzmq's own
garbage-collector thread (for zero-copy sends) lives for the process. Never fork while a transport
(or any ZeroMQ context) is open: create transports in the child, after the fork.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from typing import Mapping

import numpy as np
import zmq

from mpcnp.net import sockets
from mpcnp.net.auth import BIND_EVENTS, PEER_EVENTS, Watcher
from mpcnp.net.base import Transport
from mpcnp.net.errors import FrameError, HandshakeError, NetError, PeerLost, PeerTimeout
from mpcnp.net.flow import Window
from mpcnp.net.frames import assemble, drain
from mpcnp.net.framing import (ABORT, CREDIT, GOODBYE, check_size, decode_abort, decode_inline,
                               encode_abort, encode_header)
from mpcnp.net.keys import CurveConfig, key_bytes

log = logging.getLogger("mpcnp.net")

INLINE_BYTES = 64 * 1024
# Largest payload frame. With CURVE, 1 MiB frames let the sender encrypt one frame while the
# receiver decrypts the previous: 1.5-2x the throughput of one big frame on loopback. Plain, one
# frame is received zero-copy, and measured fastest up to 64 MiB.
CURVE_CHUNK_BYTES = 1 << 20
PLAIN_CHUNK_BYTES = 64 << 20
# Defaults of the limits: the largest message (1 GiB: a 1.3e8-element operand of a matmul; the
# protocols send elementwise work in chunks far below it) and the flow-control window per sender.
MAX_MESSAGE_BYTES = 1 << 30
WINDOW_BYTES = 256 << 20
LOST_GRACE = 1.0        # seconds a closed connection may take to come back before its peer is lost
MAX_LINGER = 3600.0     # seconds: ZeroMQ takes linger in int milliseconds
_EMPTY = np.zeros(0, np.uint8)
_SLICE_MS = 100         # how often a waiting recv looks at handshake failures
_READY_SLICE_MS = 20    # how often wait_ready looks at the handshakes


class ZmqTransport(Transport):
    """One process's ZeroMQ endpoint, built in two phases.

    1. ``ZmqTransport(name, bind, curve=..., insecure=False)`` binds this party's ROUTER to ``bind``
       ("tcp://HOST:PORT", port 0 picks a free one, or "ipc:///path"); ``.endpoint`` is then the
       address actually bound, to be told to the other parties.
    2. ``.connect({peer: endpoint, ...})`` opens the channels to the peers (an entry for this party
       itself is ignored).

    ``curve``: this party's keys and its peers' public keys; required over tcp unless
    ``insecure=True``. ``linger``: seconds ``close`` waits for unsent messages (bounded, so a dead
    peer cannot hang the exit). ``chunk_bytes``: largest payload frame (default: 1 MiB with CURVE,
    64 MiB plain). ``max_message_bytes`` and ``window``: the limits of the module docstring
    (None: no limit, no flow control). ``send_timeout`` (attribute): seconds a send may wait for
    credit (None: forever).
    Raises ValueError for a bad name, endpoint or configuration, NetError if binding fails.
    Use a transport from one thread only (ZeroMQ sockets are not thread-safe), abort included.
    """

    def __init__(self, name: str, bind: str, *, curve: CurveConfig | None = None,
                 insecure: bool = False, linger: float = 2.0, chunk_bytes: int | None = None,
                 max_message_bytes: int | None = MAX_MESSAGE_BYTES,
                 window: int | None = WINDOW_BYTES) -> None:
        super().__init__(name)
        scheme = bind.split("://", 1)[0]
        if scheme not in ("tcp", "ipc") or "://" not in bind:
            raise ValueError(f"bind endpoint must be tcp://HOST:PORT or ipc://PATH, got {bind!r}")
        if scheme == "tcp" and curve is None and not insecure:
            raise ValueError(f"{name}: tcp channels need CURVE keys (curve=CurveConfig(...)); "
                             "pass insecure=True only on a network you trust")
        if chunk_bytes is None:
            chunk_bytes = PLAIN_CHUNK_BYTES if curve is None else CURVE_CHUNK_BYTES
        if chunk_bytes < INLINE_BYTES:
            raise ValueError(f"chunk_bytes must be at least {INLINE_BYTES}")
        for what, limit in (("max_message_bytes", max_message_bytes), ("window", window)):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
                raise ValueError(f"{what} must be a positive number of bytes or None, got {limit!r}")
        self.curve = curve
        self.send_timeout: float | None = None
        self._pid = os.getpid()
        self._linger_ms = int(min(max(linger, 0.0), MAX_LINGER) * 1000)
        self._chunk = chunk_bytes
        self._max_message = max_message_bytes
        self._flow = None if window is None else Window(window, max_message_bytes)
        self._dealers: dict[str, zmq.Socket] = {}
        self._inbox: dict[str, deque] = {}
        self._by_id: dict[bytes, str] = {}
        self._addresses: dict[str, str] = {}
        self._left: set[str] = set()        # peers that said goodbye: they left after a failure
        self._abort_sent = False
        self._ctx = zmq.Context(io_threads=1)
        keys = None
        if curve is not None:
            keys = {key_bytes(k, peer): peer for peer, k in curve.peer_keys.items()}
        self._watcher = Watcher(self._ctx, name, keys)
        self._watcher.start()
        self._watcher.ready.wait()
        # Only this thread uses the control socket; the watcher answers each command.
        self._control = self._ctx.socket(zmq.PAIR)
        self._control.linger = 0
        self._control.connect(self._watcher.control)
        self._router = sockets.router(self._ctx, curve, bind)
        try:
            self._watch(self._router, None)
            try:
                self._router.bind(bind)
            except zmq.ZMQError as exc:
                raise NetError(f"{name} cannot bind {bind}: {exc.strerror}") from None
            self.endpoint: str = self._router.last_endpoint.decode()
        except BaseException:
            self.close()
            raise
        self._rcvtimeo = -1

    def _watch(self, sock: zmq.Socket, peer: str | None) -> None:
        address = f"inproc://mpcnp-monitor-{id(sock)}"
        sock.monitor(address, PEER_EVENTS if peer else BIND_EVENTS)
        self._control.send_multipart([b"watch", address.encode()] + ([peer.encode()] if peer else []))
        self._control.recv()  # the watcher listens before any event can be lost

    def connect(self, addresses: Mapping[str, str]) -> None:
        """Open channels to every peer in ``addresses`` ({name: endpoint}, own name skipped).

        Returns at once: connections complete in the background and messages queue meanwhile.
        Raises ValueError for a peer without a Curve key (when using CURVE), RuntimeError if called
        twice.
        """
        if self._dealers:
            raise RuntimeError(f"{self.name}: connect() was already called")
        addresses = {p: a for p, a in addresses.items() if p != self.name}
        if self.curve is not None:
            missing = [p for p in addresses if p not in self.curve.peer_keys]
            if missing:
                raise ValueError(f"{self.name}: no public key for {', '.join(missing)}")
        self._set_peers(tuple(addresses))
        for peer, address in addresses.items():
            dealer = sockets.dealer(self._ctx, self.name, self.curve, peer, address, self._linger_ms)
            self._dealers[peer] = dealer  # closed by close(), whatever happens next
            self._watch(dealer, peer)
            try:
                dealer.connect(address)
            except zmq.ZMQError as exc:
                raise ValueError(f"{self.name}: bad endpoint {address!r} for {peer}: {exc}") from None
            self._inbox[peer] = deque()
            self._by_id[peer.encode()] = peer
            self._addresses[peer] = address

    def wait_ready(self, timeout: float | None) -> None:
        """Block until the handshake with every peer's ROUTER succeeded.

        Messages arriving meanwhile are filed for later receives; an abort notice (a peer that
        failed while we were still starting) raises PeerAborted. Raises HandshakeError for a refused
        key or mismatched configuration, PeerTimeout naming the first peer not reached within
        ``timeout`` seconds (None or inf: no limit). Tells the observer whom it waits for.
        """
        deadline = None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout
        watcher = self._watcher
        waiting = None
        try:
            while True:
                with watcher.cond:
                    self._check_handshakes()
                    missing = [p for p in self.peers if p not in watcher.connected]
                if not missing:
                    return
                if waiting != missing[0]:
                    waiting = missing[0]
                    self.observer.waiting(waiting)
                self.observer.beat(waiting)
                self._raise_if_aborted()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PeerTimeout(missing[0], timeout, self._hint(missing[0]))
                wait_ms = _READY_SLICE_MS if remaining is None else \
                    min(_READY_SLICE_MS, math.ceil(remaining * 1000))
                pulled = self._pull(wait_ms)
                if pulled is not None and pulled[0] is not None:
                    self._file(*pulled)
        finally:
            if waiting is not None:
                self.observer.resumed()

    def missing(self) -> list[str]:
        """The peers whose channel is not up yet (their handshake has not succeeded)."""
        with self._watcher.cond:
            return [p for p in self.peers if p not in self._watcher.connected]

    def address_of(self, peer: str) -> str:
        """The endpoint this party connects to for ``peer``."""
        return self._addresses.get(peer, "?")

    def evidence(self, peer: str) -> str | None:
        """Our connection to ``peer`` closed at least ``LOST_GRACE / 2`` seconds ago without a
        goodbye and has not come back, its handshake failed, or it never completed (see
        Transport.evidence). A peer that left in order after a failure said goodbye first: that is
        no evidence against it."""
        with contextlib.suppress(NetError):
            while (pulled := self._pull(0)) is not None:  # a goodbye may be waiting to be read
                if pulled[0] is not None:
                    self._file(*pulled)
        return None if peer in self._left else \
            self._watcher.evidence(peer, self._addresses.get(peer), LOST_GRACE / 2)

    def _check_handshakes(self) -> None:
        failures = self._watcher.failures
        if failures:
            peer = next(iter(failures))
            raise HandshakeError(peer, failures[peer])

    def _hint(self, peer: str) -> str:
        return self._watcher.hint(peer, self._addresses.get(peer, "?"))

    # ---- sending ------------------------------------------------------------------------------
    def _deliver(self, to: str, kind: int, stamp: int, wire: np.ndarray) -> None:
        dealer = self._dealers[to]
        header = encode_header(kind, wire, stamp)
        nbytes = wire.nbytes
        if self._max_message is not None and nbytes > self._max_message:
            raise ValueError(f"{self.name}: a message of {nbytes} bytes to {to} exceeds the limit of "
                             f"{self._max_message} bytes (max_message_bytes)")
        if self._flow is not None:
            size = nbytes + len(header)
            if not self._flow.fits(to, size):
                self._await_credit(to, size)
            self._flow.sent[to] += size
        if nbytes <= INLINE_BYTES:
            dealer.send(header + wire.data if nbytes else header)
            return
        dealer.send(header, zmq.SNDMORE)
        data = memoryview(wire.reshape(-1).view(np.uint8))
        chunk = self._chunk
        last = (nbytes - 1) // chunk * chunk
        for start in range(0, last, chunk):
            dealer.send(data[start:start + chunk], zmq.SNDMORE, copy=False)
        dealer.send(data[last:], copy=False)

    def _await_credit(self, to: str, size: int) -> None:
        """Wait until ``to`` has consumed enough of what we sent for ``size`` more bytes to fit the
        window (or everything), or until ``to`` says it is itself waiting for our credit to send
        to us: two parties exchanging more than a window at once (both send, then both receive)
        then both go ahead rather than wait for each other. Raises PeerTimeout(to) after
        ``send_timeout`` seconds, and what a receive from ``to`` would raise."""
        timeout = self.send_timeout
        deadline = None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout
        self._give_credit(to, blocked=True)
        self.observer.waiting(to)
        try:
            while not self._flow.fits(to, size):
                self._raise_if_aborted()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PeerTimeout(to, timeout, f" (sending: {to} has not read the "
                                                   f"{self._flow.outstanding(to)} bytes already sent to it)")
                self._check_gone(to)
                wait_ms = _SLICE_MS if remaining is None else min(_SLICE_MS, math.ceil(remaining * 1000))
                pulled = self._pull(wait_ms)
                if pulled is None:
                    self._check_handshakes()
                    self.observer.beat(to)
                elif pulled[0] is not None:
                    self._file(*pulled)
        finally:
            self.observer.resumed()

    def _give_credit(self, peer: str, blocked: bool = False) -> None:
        """Tell ``peer`` how many of its bytes we have consumed, and whether we wait for its credit
        to send to it (never blocks)."""
        payload = self._flow.credit_message(peer, blocked)
        try:
            self._dealers[peer].send(encode_header(CREDIT, payload, 0) + payload.tobytes(), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a peer that is gone needs no credit

    def abort(self, accused: str, reason: str) -> None:
        """Send the abort notice to every peer without blocking (dropped if it cannot go)."""
        try:
            if self._closed or os.getpid() != self._pid:
                return
            self._abort_sent = True
            payload = encode_abort(str(accused), str(reason))
            message = encode_header(ABORT, payload, self.stats.clock) + payload.tobytes()
            for dealer in self._dealers.values():
                try:
                    dealer.send(message, zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        except Exception:  # an abort must not mask the failure being reported
            pass

    # ---- receiving ----------------------------------------------------------------------------
    def _next(self, frm: str, timeout: float | None,
              deadline: float | None) -> tuple[int, int, np.ndarray]:
        queue = self._inbox[frm]
        if queue or self._aborted is not None:
            return self._take(frm, queue)
        self.observer.waiting(frm)
        credited = self._flow is None
        try:
            while True:
                if queue or self._aborted is not None:
                    return self._take(frm, queue)
                wait_ms = _SLICE_MS
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining < _SLICE_MS / 1000:
                        wait_ms = max(0, math.ceil(remaining * 1000))
                pulled = self._pull(wait_ms)
                if pulled is None:
                    self._check_handshakes()
                    self._check_gone(frm)
                    if wait_ms == 0:
                        raise PeerTimeout(frm, timeout, self._hint(frm))
                    self.observer.beat(frm)
                    if not credited and self._flow.owed(frm):
                        # frm may be held back by flow control, waiting for this credit to send
                        # what we wait for (a message of more than 3/4 of the window)
                        self._give_credit(frm)
                        credited = True
                    continue
                sender, item = pulled
                if sender == frm and type(item) is tuple:
                    return self._consume(frm, item)  # no detour through the queue
                if sender is not None:
                    self._file(sender, item)
        finally:
            self.observer.resumed()

    def _take(self, frm: str, queue: deque) -> tuple[int, int, np.ndarray]:
        self._raise_if_aborted()
        item = queue.popleft()
        if isinstance(item, FrameError):
            raise item
        return self._consume(frm, item)

    def _consume(self, frm: str, item: tuple) -> tuple[int, int, np.ndarray]:
        """Count ``item`` as consumed from ``frm`` (flow control) and return it."""
        if self._flow is not None and self._flow.took(frm, item[2]):
            self._give_credit(frm)
        return item

    def _file(self, sender: str, item: tuple | FrameError) -> None:
        """Keep a message (or the error it was) for a later receive from ``sender``."""
        self._inbox[sender].append(item)

    def _check_gone(self, peer: str) -> None:
        """PeerLost(peer) when it said goodbye (it left after a failure: all it sent has arrived, it
        will send nothing more), or when its connection closed for good (see ``evidence``)."""
        if peer in self._left:
            raise PeerLost(peer, "it left the run after a failure", after_failure=True)
        since = self._watcher.lost.get(peer)
        if since is not None and time.monotonic() - since >= LOST_GRACE:
            since = time.monotonic() - since
            raise PeerLost(peer, f"its connection closed {since:.1f} s ago and did not come back "
                                 "(did its process end?)")

    def _pull(self, wait_ms: int) -> tuple[str | None, tuple | FrameError | None] | None:
        """The next message on the ROUTER as ``_read`` gives it, or None after ``wait_ms``."""
        router = self._router
        # A blocking recv bounded by RCVTIMEO wakes up faster than zmq_poll + recv.
        if wait_ms != self._rcvtimeo:
            router.rcvtimeo = self._rcvtimeo = wait_ms
        try:
            ident = router.recv()
        except zmq.Again:
            return None
        return self._read(ident, router.recv(copy=False))

    def _read(self, ident: bytes, frame: zmq.Frame) -> tuple[str | None, tuple | FrameError | None]:
        """The rest of one message whose routing id and first frame were read: (sender, message
        or FrameError), sender None if the message was dropped or was flow control. Raises
        PeerAborted for an abort notice."""
        if self.curve is not None:
            user = frame.get("User-Id")  # the name the ZAP handler gave the peer's key
            sender = user if user in self._inbox else None
        else:
            sender = self._by_id.get(ident)
        if sender is None:
            drain(self._router, frame)
            log.warning("%s: dropped a message from unknown routing id %r", self.name, ident)
            return None, None
        try:
            if frame.more:
                message = assemble(sender, frame, self._router, self._max_message)
            else:
                # A bytes copy of a small frame is immutable and aligned, whereas the frame's
                # memory sits at any offset of ZeroMQ's receive buffer.
                message = decode_inline(frame.bytes, sender)
                check_size(message[2].nbytes, self._max_message, sender)
            kind = message[0]
            if kind == ABORT:
                raise self._note_abort(sender, *decode_abort(message[2], sender))
            if kind == GOODBYE:
                self._left.add(sender)
                return None, None
            if kind == CREDIT:
                credit = message[2]
                if self._flow is not None and credit.size == 2:
                    self._flow.credited(sender, int(credit[0]), bool(credit[1]))
                return None, None
            if self._flow is not None and not self._flow.arrived(sender, message[2]):
                raise FrameError(sender, f"it sent {self._flow.unread(sender)} bytes that this party "
                                         f"has not read yet, ignoring flow control (window "
                                         f"{self._flow.window} bytes)")
        except FrameError as exc:
            return sender, exc
        return sender, message

    # ---- shutdown -----------------------------------------------------------------------------
    def _say_goodbye(self) -> None:
        """After a failure, tell every peer we reached that we leave in order: waiting for us is then
        pointless, and our closed connection is no evidence against us. (Not after a success: a
        goodbye to a peer that has already gone would wait out the linger.)"""
        goodbye = encode_header(GOODBYE, _EMPTY, self.stats.clock)
        with self._watcher.cond:
            connected = set(self._watcher.connected) - set(self._watcher.lost) - set(self._left)
        for peer, dealer in self._dealers.items():
            if peer in connected:
                with contextlib.suppress(zmq.ZMQError):
                    dealer.send(goodbye, zmq.NOBLOCK)

    def close(self, linger: float | None = None) -> None:
        """Stop the helper thread, close the sockets, release the port. Idempotent.

        Messages not yet sent get ``linger`` seconds (default: the constructor's) to leave; after
        a failure, a short linger keeps a dead peer from delaying the exit.
        """
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:  # a forked child must not touch the parent's context
            return
        if self._abort_sent or self._aborted is not None:
            self._say_goodbye()
        if self._watcher.is_alive():
            try:
                self._control.send(b"stop")
            except zmq.ZMQError:
                pass
            self._watcher.join()
        for sock in [self._router, self._control, *self._dealers.values()]:
            if linger is not None:
                sock.linger = int(min(max(linger, 0.0), MAX_LINGER) * 1000)
            sock.close()
        self._ctx.term()
