"""The helper thread of a ZeroMQ transport: it authenticates peers (ZAP) and watches handshakes.

A party's ROUTER is a CURVE server; ZeroMQ asks the ZAP handler (RFC 27) of the socket's context
whether to admit each connecting key. Ours admits exactly the peers' public keys and returns the
peer's name as the ZAP user id, which ZeroMQ then attaches to every message from that connection
(the ``User-Id`` property): that is how a key is bound to a name. The same thread reads the socket
monitors: handshake successes and failures of our DEALERs (a peer refusing our key, a wrong server
key), and failed handshakes on our ROUTER (strangers, garbage bytes), which it logs.
"""
from __future__ import annotations

import logging
import threading

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("mpcnp.net")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
PEER_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
               | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
BIND_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
_PROTOCOL_ERRORS = {getattr(zmq, n): n for n in dir(zmq) if n.startswith("PROTOCOL_ERROR_")}


class Watcher(threading.Thread):
    """The helper thread: ZAP handler (CURVE only) and monitor of every handshake."""

    def __init__(self, ctx: zmq.Context, name: str, keys: dict[bytes, str] | None) -> None:
        super().__init__(name=f"mpcnp-net-{name}", daemon=True)
        self.ctx, self.party, self.keys = ctx, name, keys
        self.control = f"inproc://mpcnp-control-{id(self)}"
        self.ready = threading.Event()
        self.cond = threading.Condition()
        self.connected: set[str] = set()
        self.failures: dict[str, str] = {}
        self.refused = 0
        self.last_refused = ""

    def run(self) -> None:
        control = self.ctx.socket(zmq.PAIR)
        control.linger = 0
        control.bind(self.control)
        poller = zmq.Poller()
        poller.register(control, zmq.POLLIN)
        sockets = [control]
        zap = None
        if self.keys is not None:
            zap = self.ctx.socket(zmq.REP)
            zap.linger = 0
            zap.bind(ZAP_ENDPOINT)
            poller.register(zap, zmq.POLLIN)
            sockets.append(zap)
        self.ready.set()
        monitors: dict[zmq.Socket, str | None] = {}
        try:
            while True:
                for sock, _ in poller.poll():
                    if sock is control:
                        command, *args = control.recv_multipart()
                        if command == b"stop":
                            return
                        monitor = self.ctx.socket(zmq.PAIR)
                        monitor.linger = 0
                        monitor.connect(args[0].decode())
                        poller.register(monitor, zmq.POLLIN)
                        sockets.append(monitor)
                        monitors[monitor] = args[1].decode() if len(args) > 1 else None
                        control.send(b"ok")
                    elif sock is zap:
                        self._authenticate(sock)
                    else:
                        message = sock.recv_multipart()
                        try:
                            self._on_event(monitors[sock], parse_monitor_message(message))
                        except Exception:  # one odd event must not stop the watching
                            log.exception("%s: cannot handle monitor event %r", self.party, message)
        finally:
            for sock in sockets:
                sock.close(0)

    def _authenticate(self, zap: zmq.Socket) -> None:
        """Answer one ZAP request (RFC 27): admit a peer's key, naming the peer as user id."""
        request = zap.recv_multipart()
        request_id = request[1] if len(request) > 1 else b""
        reply = [b"1.0", request_id, b"400", b"unknown key", b"", b""]
        try:  # a REP socket must answer, or every later handshake would stall
            if len(request) == 7 and request[5] == b"CURVE" and request[6] in self.keys:
                reply[2:5] = [b"200", b"OK", self.keys[request[6]].encode()]
            else:
                key = z85.encode(request[6]).decode() if len(request) == 7 else "none"
                self.refused += 1
                self.last_refused = request[3].decode(errors="replace") if len(request) > 3 else "?"
                log.warning("%s: refused a connection from %s presenting unknown key %s",
                            self.party, self.last_refused, key)
        finally:
            zap.send_multipart(reply)

    def _on_event(self, peer: str | None, event: dict) -> None:
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            with self.cond:
                self.connected.add(peer)
                self.cond.notify_all()
            return
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            detail = f"{peer} refused our key (status {value}): its configuration lists another " \
                     f"public key for {self.party}, or our secret key is wrong"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                detail = "one side uses CURVE and the other does not"
            else:
                detail = f"ZMTP protocol error {_PROTOCOL_ERRORS.get(value, value)}"
            detail = f"handshake with {peer} failed: {detail}" if peer else detail
        else:
            detail = f"handshake with {peer} failed: is the public key we have for {peer} right?"
        if peer is None:
            log.warning("%s: rejected a connection on %s: %s (a stranger or a misconfigured peer)",
                        self.party, event["endpoint"].decode(errors="replace"), detail)
            return
        with self.cond:
            if peer in self.connected:
                log.debug("%s: %s after a successful handshake", self.party, detail)
                return
            self.failures.setdefault(peer, detail)
            self.cond.notify_all()
        log.error("%s: %s", self.party, detail)
