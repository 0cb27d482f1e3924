"""The session of the three core services: one persistent Context among them, set up again after a failure.

A session is what ``mp.run`` gives one program, kept open: CurveZMQ channels between server0, server1
and the producer (from the cluster file), pairwise PRF keys agreed at its start, and the party's
Context active in the service's main thread. Between sessions everything is discarded (channels, keys,
masks, pools); the models are loaded again from the servers' stores.

Setting one up (``establish``), after a fresh start or a failure, must not mistake a message left over
from an earlier session for a new one (a peer that has not yet noticed the failure, or whose old socket
reconnected to our new one). Every party opens new channels, then:

1. server0 (the leader) draws a session id S and sends PROPOSE(S) to each follower, again every 0.5 s
   until that follower answers JOIN(S); a follower answers the last PROPOSE it saw, once per id.
2. With both JOINs, the leader sends START(S); a follower waits for START of the id it joined.
3. Every party sends MARK(S) to every peer and reads from each peer, discarding, until MARK(S).
   Each of a peer's messages after its MARK(S) belongs to session S: its old sockets were closed
   before it sent anything in S, and S is fresh.
4. ``Context.agree_keys``; then each server derives an offline PRF stream with the producer (for the
   pools of preprocessed randomness, mpcnp.serving.pool).

JOIN and START carry each party's settings; a follower whose settings differ is told so (REJECT) and
both log it. Messages are JSON in uint8 arrays (``send_json`` / ``recv_json``), so the session's
control messages and the protocols' arrays travel the same FIFO channels.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, Callable

import numpy as np

from mpcnp import ring
from mpcnp.net import NetError, PeerTimeout, ZmqTransport
from mpcnp.net.framing import decode_json, encode_json
from mpcnp.runtime.cluster import Cluster
from mpcnp.runtime.context import CORE_PARTIES, PRODUCER, SERVER0, SERVERS, Config, Context, PartyError

__all__ = ["Stopped", "establish", "send_json", "recv_json", "offline_streams", "FOLLOWERS"]

log = logging.getLogger("mpcnp.serving")

FOLLOWERS = (CORE_PARTIES[1], CORE_PARTIES[2])
_RESEND = 0.5      # seconds between PROPOSEs to a follower that has not joined
_POLL = 0.05       # seconds a wait for control messages blocks before looking at the stop flag


class Stopped(Exception):
    """The service was asked to stop (SIGTERM, SIGINT or ``Service.stop``)."""


def send_json(ctx: Context, to: str, obj: Any) -> None:
    """Send a JSON-able ``obj`` to ``to`` as a uint8 array (PartyError on failure, as ``ctx.send``)."""
    ctx.send(to, encode_json(obj))


def recv_json(ctx: Context, frm: str) -> dict:
    """The next message from ``frm`` as a JSON object; PartyError naming ``frm`` if it is anything else."""
    message = ctx.recv(frm)
    if message.dtype != np.uint8 or message.ndim != 1:
        raise PartyError(frm, f"sent a {message.dtype} array where a command was expected")
    try:
        obj = decode_json(message, frm)
    except NetError as exc:
        raise PartyError(frm, str(exc)) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise PartyError(frm, f"sent {str(obj)[:80]!r} where a command was expected")
    return obj


def _control(transport: ZmqTransport, frm: str, timeout: float) -> dict | None:
    """The next message from ``frm`` if it is a control message (a JSON object with "op"), None if it
    is anything else (discarded) or nothing came within ``timeout`` seconds."""
    try:
        message = transport.recv(frm, timeout)
    except PeerTimeout:
        return None
    if message.dtype != np.uint8 or message.ndim != 1 or message.size > 1 << 16:
        return None
    try:
        obj = json.loads(message.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("op"), str) else None


def _send(transport: ZmqTransport, to: str, obj: dict) -> None:
    transport.send(to, encode_json(obj))


def _check(stop: Callable[[], bool]) -> None:
    if stop():
        raise Stopped()


def _wait_for_peers(transport: ZmqTransport, name: str, stop: Callable[[], bool],
                    waiting: Callable[[str], None]) -> None:
    """Until the channels to every peer are up; says whom it waits for (``waiting``, and the log
    every 10 s)."""
    started = last_said = time.monotonic()
    while True:
        _check(stop)
        try:
            transport.wait_ready(_RESEND)
            return
        except PeerTimeout as exc:
            waiting(exc.peer)
            if time.monotonic() - last_said >= 10:
                log.info("%s: waiting for %s (%.0f s so far)", name, exc.peer, time.monotonic() - started)
                last_said = time.monotonic()


def _lead(transport: ZmqTransport, settings: dict, stop: Callable[[], bool]) -> str:
    session = secrets.token_hex(8)
    joined: set[str] = set()
    sent = {peer: 0.0 for peer in FOLLOWERS}
    while len(joined) < len(FOLLOWERS):
        _check(stop)
        for peer in FOLLOWERS:
            if peer in joined:
                continue
            if time.monotonic() - sent[peer] >= _RESEND:
                _send(transport, peer, {"op": "propose", "session": session, "settings": settings})
                sent[peer] = time.monotonic()
            reply = _control(transport, peer, _POLL)
            if reply is None or reply.get("session") != session:
                continue
            if reply["op"] == "join" and reply.get("settings") == settings:
                joined.add(peer)
            elif reply["op"] == "join":
                log.error("server0: %s runs with other settings (%s, ours %s): restart it with ours",
                          peer, reply.get("settings"), settings)
                _send(transport, peer, {"op": "reject", "session": session, "settings": settings})
    for peer in FOLLOWERS:
        _send(transport, peer, {"op": "start", "session": session})
    return session


def _follow(transport: ZmqTransport, name: str, settings: dict, stop: Callable[[], bool]) -> str:
    session = None
    while True:
        _check(stop)
        message = _control(transport, SERVER0, _POLL)
        if message is None:
            continue
        if message["op"] == "propose" and message.get("session") != session:
            session = message.get("session")
            _send(transport, SERVER0, {"op": "join", "session": session, "settings": settings})
        elif message["op"] == "start" and session is not None and message.get("session") == session:
            return session
        elif message["op"] == "reject" and message.get("session") == session:
            log.error("%s: server0 runs with other settings (%s, ours %s): restart with the same ones",
                      name, message.get("settings"), settings)


def _mark(transport: ZmqTransport, session: str, timeout: float, stop: Callable[[], bool]) -> None:
    for peer in transport.peers:
        _send(transport, peer, {"op": "mark", "session": session})
    for peer in transport.peers:
        deadline = time.monotonic() + timeout
        while True:
            _check(stop)
            if time.monotonic() > deadline:
                raise PartyError(peer, TimeoutError(f"did not mark session {session} within {timeout:g} s"))
            message = _control(transport, peer, _POLL)
            if message is not None and message["op"] == "mark" and message.get("session") == session:
                break


def establish(core: Cluster, name: str, curve, config: Config, settings: dict,
              stop: Callable[[], bool], waiting: Callable[[str], None] = lambda peer: None) -> tuple[Context, str]:
    """A new session of party ``name``: (its Context, the session id), once all three core parties
    are up and agree (see the module docstring). Waits as long as it takes, unless ``stop()`` turns
    true (then Stopped); ``waiting(peer)`` is told whom it waits for. Raises HandshakeError for a key mismatch (a configuration error), PartyError
    when a peer fell away during set-up (the caller tries again)."""
    transport = core.transport(name, curve=curve, linger=0.2)
    try:
        _wait_for_peers(transport, name, stop, waiting)
        if name == SERVER0:
            session = _lead(transport, settings, stop)
        else:
            session = _follow(transport, name, settings, stop)
        _mark(transport, session, config.timeout, stop)
        ctx = Context(name, CORE_PARTIES, transport, config)
        ctx.agree_keys()
        transport.stats.reset()
        return ctx, session
    except BaseException:
        transport.close(linger=0)
        raise


def offline_streams(ctx: Context) -> dict[str, ring.PRF]:
    """PRF streams for preprocessing, one per server-producer pair, separate from the online streams
    so that material prepared ahead needs no particular order against the online steps. Keyed from the
    pair's online stream; every core party calls it at the same point of the session."""
    if ctx.name == PRODUCER:
        peers = SERVERS
    elif ctx.is_server:
        peers = (PRODUCER,)
    else:
        peers = ()
    return {peer: ring.PRF(ctx.prf(peer).bytes(ring.KEY_BYTES)) for peer in peers}

