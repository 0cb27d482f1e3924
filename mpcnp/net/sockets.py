"""The ZeroMQ sockets of a party, configured once: its ROUTER (the inbox; a CURVE server whose ZAP
handler admits the peers' keys) and one DEALER per peer (a CURVE client pinned to the peer's key)."""
from __future__ import annotations

import zmq

from mpcnp.net.keys import CurveConfig


def tcp_options(sock: zmq.Socket, endpoint: str) -> None:
    if endpoint.startswith("tcp://"):
        sock.tcp_keepalive = 1  # notices peers vanished behind a NAT or firewall
        sock.tcp_keepalive_idle = 60
        sock.ipv6 = "[" in endpoint


def router(ctx: zmq.Context, curve: CurveConfig | None, endpoint: str) -> zmq.Socket:
    """The inbox, not yet bound: never drops (no high-water mark), closes at once."""
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.rcvhwm = 0
    if curve is not None:
        sock.curve_server = True
        sock.curve_secretkey = curve.secret_key.encode()
        sock.curve_publickey = curve.public_key.encode()
        sock.zap_domain = b"mpcnp"
        try:  # a draft option: refuse everyone should the ZAP handler be missing
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except zmq.ZMQError:
            pass  # the handler is bound before the ROUTER, so it cannot be missing
    tcp_options(sock, endpoint)
    return sock


def dealer(ctx: zmq.Context, name: str, curve: CurveConfig | None, peer: str, address: str,
           linger_ms: int) -> zmq.Socket:
    """The channel to ``peer`` at ``address``, not yet connected: never blocks a send (no
    high-water mark), flushes for ``linger_ms`` when closed."""
    sock = ctx.socket(zmq.DEALER)
    if curve is None:
        sock.routing_id = name.encode()  # over CURVE the key names us, not this
    else:
        sock.curve_publickey = curve.public_key.encode()
        sock.curve_secretkey = curve.secret_key.encode()
        sock.curve_serverkey = curve.peer_keys[peer].encode()
    sock.sndhwm = 0
    sock.linger = linger_ms
    if address.startswith("ipc://"):
        # a local peer's socket appears within milliseconds of its start: retry soon, backing off
        # to ZeroMQ's usual 100 ms
        sock.reconnect_ivl = 5
        sock.reconnect_ivl_max = 100
    tcp_options(sock, address)
    return sock
