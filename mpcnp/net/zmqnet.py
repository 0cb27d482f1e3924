"""ZeroMQ channels between processes: the processes backend (over ipc) and clusters of hosts (tcp).

Topology. Each party binds one ROUTER (its inbox) and, for every peer, connects one DEALER to the
peer's ROUTER with ``routing_id = own name``; so the ROUTER learns the sender of every message from
its routing id. ``recv`` runs in the caller's thread: a blocking recv on the ROUTER, bounded by
RCVTIMEO (it wakes up faster than zmq_poll), files what arrives in one FIFO per sender; there is no
hand-off to another thread on the fast path. Messages queue in the DEALER until the peer is up, and
high-water marks are off, so ``send`` never blocks and start-up order does not matter.

Framing. One message = one ZeroMQ multipart message: the header of framing.py, with the payload
appended in the same frame when it is at most ``INLINE_BYTES``; larger payloads follow, sent
zero-copy, as frames of at most ``chunk_bytes`` (1 MiB with CURVE, 64 MiB plain). A single payload
frame is received zero-copy (``np.frombuffer``); several are assembled into one ``np.empty``. Small
payloads are copied once when the frame's memory is not aligned for the dtype.

Security. Over tcp a transport always uses CurveZMQ (encryption and mutual authentication), unless
``insecure=True`` is passed explicitly (a trusted private network, or benchmarks). Each party has a
Curve key pair and knows every peer's public key (CurveConfig). Its ROUTER is a CURVE server with
its own ZAP handler that admits only the peers' public keys and names the connection after the
peer owning the key (the ZAP user id); every message's claimed sender (its routing id) must equal
that name, else FrameError. Its DEALERs are CURVE clients pinned to each peer's server key.
Plain (NULL mechanism) channels exist only over ipc (local, protected by file permissions) and in
memory (memory.py).

Failures. A peer that refuses our key (or whose key we have wrong) is reported as HandshakeError
naming it by the next ``recv``; strangers (wrong keys, garbage bytes on the port) are refused by
ZeroMQ and logged as warnings on ``logging.getLogger("mpcnp.net")``; the run goes on. A malformed
message from an authenticated peer becomes a FrameError raised by the recv from that peer, in FIFO
order; the other peers are unaffected. Messages under an unknown routing id are dropped and logged.

Threads and processes. A transport belongs to one thread (its party's). Besides it, one helper
thread per transport serves ZAP and watches handshakes; ``close`` ends it. pyzmq's own
garbage-collector thread (for zero-copy sends) lives for the process. Never fork while a transport
(or any ZeroMQ context) is open: create transports in the child, after the fork.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from typing import Mapping

import numpy as np
import zmq

from mpcnp.net.auth import BIND_EVENTS, PEER_EVENTS, Watcher
from mpcnp.net.base import Transport
from mpcnp.net.errors import FrameError, HandshakeError, NetError, PeerTimeout
from mpcnp.net.framing import (ABORT, decode_abort, decode_header, decode_inline, encode_abort,
                               encode_header)
from mpcnp.net.keys import CurveConfig, key_bytes

log = logging.getLogger("mpcnp.net")

INLINE_BYTES = 64 * 1024
# Largest payload frame. With CURVE, 1 MiB frames let the sender encrypt one frame while the
# receiver decrypts the previous: 1.5-2x the throughput of one big frame on loopback. Plain, one
# frame is received zero-copy, and measured fastest up to 64 MiB.
CURVE_CHUNK_BYTES = 1 << 20
PLAIN_CHUNK_BYTES = 64 << 20
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
    64 MiB plain).
    Raises ValueError for a bad name, endpoint or configuration, NetError if binding fails.
    Use a transport from one thread only (ZeroMQ sockets are not thread-safe), abort included.
    """

    def __init__(self, name: str, bind: str, *, curve: CurveConfig | None = None,
                 insecure: bool = False, linger: float = 2.0, chunk_bytes: int | None = None) -> None:
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
        self.curve = curve
        self._pid = os.getpid()
        self._linger_ms = int(linger * 1000)
        self._chunk = chunk_bytes
        self._dealers: dict[str, zmq.Socket] = {}
        self._inbox: dict[str, deque] = {}
        self._by_id: dict[bytes, str] = {}
        self._addresses: dict[str, str] = {}
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
        self._router = self._ctx.socket(zmq.ROUTER)
        try:
            self._router.linger = 0
            self._router.rcvhwm = 0
            if curve is not None:
                self._router.curve_server = True
                self._router.curve_secretkey = curve.secret_key.encode()
                self._router.curve_publickey = curve.public_key.encode()
                self._router.zap_domain = b"mpcnp"
                try:  # a draft option: refuse everyone should the ZAP handler be missing
                    self._router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
                except zmq.ZMQError:
                    pass  # the handler is bound before the ROUTER, so it cannot be missing
            self._set_tcp_options(self._router, bind)
            self._watch(self._router, None)
            try:
                self._router.bind(bind)
            except zmq.ZMQError as exc:
                raise NetError(f"{name} cannot bind {bind}: {exc}") from exc
            self.endpoint: str = self._router.last_endpoint.decode()
        except BaseException:
            self.close()
            raise
        self._rcvtimeo = -1

    def _set_tcp_options(self, sock: zmq.Socket, endpoint: str) -> None:
        if endpoint.startswith("tcp://"):
            sock.tcp_keepalive = 1  # notices peers vanished behind a NAT or firewall
            sock.tcp_keepalive_idle = 60
            sock.ipv6 = "[" in endpoint

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
            dealer = self._ctx.socket(zmq.DEALER)
            dealer.routing_id = self.name.encode()
            dealer.sndhwm = 0
            dealer.linger = self._linger_ms
            if self.curve is not None:
                dealer.curve_publickey = self.curve.public_key.encode()
                dealer.curve_secretkey = self.curve.secret_key.encode()
                dealer.curve_serverkey = self.curve.peer_keys[peer].encode()
            self._dealers[peer] = dealer  # closed by close(), whatever happens next
            self._set_tcp_options(dealer, address)
            self._watch(dealer, peer)
            try:
                dealer.connect(address)
            except zmq.ZMQError as exc:
                raise ValueError(f"{self.name}: bad endpoint {address!r} for {peer}: {exc}") from None
            self._inbox[peer] = deque()
            self._by_id[peer.encode()] = peer
            self._addresses[peer] = address

    def wait_ready(self, timeout: float) -> None:
        """Block until the handshake with every peer's ROUTER succeeded.

        Messages arriving meanwhile are filed for later receives; an abort notice (a peer that
        failed while we were still starting) raises PeerAborted. Raises HandshakeError for a refused
        key or mismatched configuration, PeerTimeout naming the first peer not reached within
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        watcher = self._watcher
        while True:
            with watcher.cond:
                self._check_handshakes()
                missing = [p for p in self.peers if p not in watcher.connected]
            if not missing:
                return
            self._raise_if_aborted()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerTimeout(missing[0], timeout, self._hint(missing[0]))
            pulled = self._pull(min(_READY_SLICE_MS, math.ceil(remaining * 1000)))
            if pulled is not None and pulled[0] is not None:
                self._inbox[pulled[0]].append(pulled[1])

    def _check_handshakes(self) -> None:
        failures = self._watcher.failures
        if failures:
            peer = next(iter(failures))
            raise HandshakeError(peer, failures[peer])

    def _hint(self, peer: str) -> str:
        hints = []
        if peer not in self._watcher.connected:
            hints.append(f"our connection to {self._addresses.get(peer, '?')} never completed")
        if self._watcher.refused:
            hints.append(f"{self._watcher.refused} connection(s) with unknown keys were refused, "
                         f"the last from {self._watcher.last_refused}: check the public keys")
        return f" ({'; '.join(hints)})" if hints else ""

    # ---- sending ------------------------------------------------------------------------------
    def _deliver(self, to: str, kind: int, stamp: int, wire: np.ndarray) -> None:
        dealer = self._dealers[to]
        header = encode_header(kind, wire, stamp)
        nbytes = wire.nbytes
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

    def abort(self, origin: str, reason: str) -> None:
        """Send the abort notice to every peer without blocking (dropped if it cannot go)."""
        try:
            if self._closed or os.getpid() != self._pid:
                return
            payload = encode_abort(str(origin), str(reason))
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
        while True:
            if queue or self._aborted is not None:
                self._raise_if_aborted()
                item = queue.popleft()
                if isinstance(item, FrameError):
                    raise item
                return item
            wait_ms = _SLICE_MS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining < _SLICE_MS / 1000:
                    wait_ms = max(0, math.ceil(remaining * 1000))
            pulled = self._pull(wait_ms)
            if pulled is None:
                self._check_handshakes()
                if wait_ms == 0:
                    raise PeerTimeout(frm, timeout, self._hint(frm))
                continue
            sender, item = pulled
            if sender == frm and type(item) is tuple:
                return item  # the common case: no detour through the queue
            if sender is not None:
                self._inbox[sender].append(item)

    def _pull(self, wait_ms: int) -> tuple[str | None, tuple | FrameError] | None:
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

    def _read(self, ident: bytes, frame: zmq.Frame) -> tuple[str | None, tuple | FrameError]:
        """The rest of one message whose routing id and first frame were read: (sender, message
        or FrameError), sender None if the message was dropped. Raises PeerAborted for an abort."""
        frames = None
        if frame.more:
            frames = [frame]
            while frames[-1].more:
                frames.append(self._router.recv(copy=False))
        sender = self._by_id.get(ident)
        if sender is None:
            log.warning("%s: dropped a message from unknown routing id %r", self.name, ident)
            return None, None
        if self.curve is not None:
            user = frame.get("User-Id")  # the name the ZAP handler gave the peer's key
            if user != sender:
                if user in self._inbox:
                    return user, FrameError(user, f"message claims to come from {sender}")
                log.warning("%s: dropped a message from %r claiming to be %s", self.name, user, sender)
                return None, None
        try:
            if frames is None:
                # A bytes copy of a small frame is immutable and aligned, whereas the frame's
                # memory sits at any offset of ZeroMQ's receive buffer.
                message = decode_inline(frame.bytes, sender)
            else:
                message = self._assemble(sender, frames)
            if message[0] == ABORT:
                raise self._note_abort(*decode_abort(message[2], sender))
        except FrameError as exc:
            return sender, exc
        return sender, message

    @staticmethod
    def _assemble(sender: str, frames: list[zmq.Frame]) -> tuple[int, int, np.ndarray]:
        """Decode a message whose payload spans several frames."""
        first = frames[0].buffer
        kind, dtype, shape, stamp, size, nbytes = decode_header(first, sender)
        total = len(first) - size + sum(len(f) for f in frames[1:])
        if total != nbytes:
            raise FrameError(sender, f"payload of {total} bytes, but shape {shape} of {dtype} "
                                     f"needs {nbytes}")
        if len(frames) == 2 and len(first) == size:
            array = np.frombuffer(frames[1], dtype, nbytes // dtype.itemsize)
            if not array.flags.aligned:
                array = array.copy()
            array.flags.writeable = False
        else:
            array = np.empty(total, np.uint8)
            offset = 0
            parts = [f.buffer for f in frames[1:]]
            if len(first) > size:
                parts.insert(0, first[size:])
            for part in parts:
                array[offset:offset + len(part)] = part
                offset += len(part)
            array.flags.writeable = False
            array = array.view(dtype)
        return kind, stamp, array.reshape(shape)

    # ---- shutdown -----------------------------------------------------------------------------
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
        if self._watcher.is_alive():
            try:
                self._control.send(b"stop")
            except zmq.ZMQError:
                pass
            self._watcher.join()
        for sock in [self._router, self._control, *self._dealers.values()]:
            if linger is not None:
                sock.linger = int(linger * 1000)
            sock.close()
        self._ctx.term()
