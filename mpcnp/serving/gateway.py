"""A server's socket for clients: who may connect, what they may ask, and where their queries wait.

Each server binds one ROUTER for clients (CurveZMQ server; the cluster file says where) in a thread of
its own, so that no client can ever block the service: the service's main thread only exchanges
queued queries and answers with it. Clients are authenticated by their Curve keys: a ZAP handler
(mpcnp.net.auth) admits the keys of the cluster file's clients and client directory and names each
connection after its client; every other key is refused in the handshake. server0's gateway also
admits server1's key, as "server1": server1's gateway tells it through that channel which queries it
holds a share of ("ready") and when its models changed ("changed").

The gateway answers ``hello``, ``models``, ``upload`` and ``delete`` itself, against the server's model
store (only a model's owner, by name and key, may replace or delete it). A ``predict`` is checked
(model, output, rows, input shape, the client's number of waiting queries) and waits in ``pending``:
on server0 until server1's notice arrives for it, then in ``ready`` for the leader's next batch; on
server1 until the leader's batch takes it (``take``). A query past its deadline is answered with a
timeout error; sends to clients never block (a client gone or too slow to read loses its answers).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

import mpcnp
from mpcnp.net import CurveConfig
from mpcnp.net.auth import Watcher
from mpcnp.runtime.context import SERVER0, SERVER1
from mpcnp.serving import wire
from mpcnp.serving.config import ClientKeys, ServingCluster
from mpcnp.serving.settings import Settings
from mpcnp.serving.build import check, serves_classes
from mpcnp.serving.spec import OUTPUTS, check_model_name
from mpcnp.serving.store import ModelStore

__all__ = ["Query", "Gateway"]

log = logging.getLogger("mpcnp.serving")

_TICK = 0.05          # seconds between looks at deadlines and the stop flag
_GRACE = 2.0          # server1 keeps a share this long past its deadline, for a batch already on its way
_EARLY = 60.0         # server0 keeps a notice that came before the query this long
_MAX_TIMEOUT = 1e9    # a query's timeout beyond this is "forever"


@dataclass
class Query:
    """One client's prediction request as one server holds it."""

    client: str
    id: str
    route: bytes
    model: str
    output: str
    rows: int
    share: np.ndarray
    deadline: float | None
    arrived: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, str]:
        return self.client, self.id

    def expired(self, now: float, grace: float = 0.0) -> bool:
        return self.deadline is not None and now > self.deadline + grace


class Gateway:
    """The client socket of server ``name`` (see the module docstring). Start it, then use ``ready``
    (server0), ``take`` (server1), ``answer``, ``fail``, ``fail_all`` and ``set_status`` from the
    service's thread; ``close`` from that thread stops it."""

    def __init__(self, name: str, serving: ServingCluster, curve: CurveConfig, store: ModelStore,
                 settings: Settings, stats: Callable[[], dict] = dict):
        self._thread = threading.Thread(target=self._run, name=f"mpcnp-gateway-{name}", daemon=True)
        self.server, self.serving, self.store, self.settings = name, serving, store, settings
        self.stats = stats
        extra = {SERVER1: serving.cluster.parties[SERVER1].public_key} if name == SERVER0 else {}
        self.keys = ClientKeys(serving, extra)
        self.ready: queue.Queue[Query] = queue.Queue()
        self.remote_version = 0            # server0: how often server1 said its models changed
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Query] = {}
        self._early: dict[tuple[str, str], tuple[dict, float]] = {}
        self._status: tuple[bool, str] = (False, "the service is starting")
        self._stopping = threading.Event()
        self._local = threading.local()
        self._pushers: list[zmq.Socket] = []
        self._zctx = zmq.Context(io_threads=1)
        self._watcher = Watcher(self._zctx, f"{name}-clients", self.keys)
        self._watcher.start()
        self._watcher.ready.wait()
        self._outbox_address = f"inproc://mpcnp-outbox-{id(self)}"
        self._pull = self._zctx.socket(zmq.PULL)
        self._pull.linger = 0
        self._pull.bind(self._outbox_address)
        self._router = self._zctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.curve_server = True
        self._router.curve_secretkey = curve.secret_key.encode()
        self._router.curve_publickey = curve.public_key.encode()
        self._router.zap_domain = b"mpcnp-clients"
        try:  # refuse everyone should the ZAP handler be missing (a draft option of libzmq)
            self._router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except (zmq.ZMQError, AttributeError):
            pass
        self._router.maxmsgsize = int(settings.max_message_mb * (1 << 20))
        self._router.sndhwm = 10000
        self.endpoint = serving.client_bind(name)
        try:
            self._router.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(f"{name} cannot listen for clients on {self.endpoint}: {exc}") from None
        self._notices = None
        if name == SERVER1:
            self._notices = self._zctx.socket(zmq.DEALER)
            self._notices.linger = 0
            self._notices.sndhwm = 0
            self._notices.curve_publickey = curve.public_key.encode()
            self._notices.curve_secretkey = curve.secret_key.encode()
            self._notices.curve_serverkey = serving.cluster.parties[SERVER0].public_key.encode()
            self._notices.connect(serving.client_endpoint(SERVER0))

    # ---- the service's side ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def set_status(self, available: bool, reason: str = "") -> None:
        """Whether queries are accepted now; ``reason`` tells clients why not. Once it returns, no
        query is accepted unless ``available`` (the check and the query's filing hold the same lock)."""
        with self._lock:
            self._status = (available, reason)

    def take(self, client: str, query_id: str) -> Query | None:
        """server1: remove and return the query a batch uses (None if it expired or never came)."""
        with self._lock:
            return self._pending.pop((client, query_id), None)

    def _outbox(self) -> zmq.Socket:
        push = getattr(self._local, "push", None)
        if push is None:
            push = self._zctx.socket(zmq.PUSH)
            push.linger = 0
            push.connect(self._outbox_address)
            self._local.push = push
            self._pushers.append(push)
        return push

    def send(self, route: bytes, frames: list) -> None:
        """Queue a message for the client connection ``route`` (from any thread but the gateway's)."""
        self.send_all([(route, frames)])

    def send_all(self, messages: list[tuple[bytes, list]]) -> None:
        """Queue several messages at once: one hand-over to the gateway's thread for all of them
        (a batch answers its queries together). Outbox format: a frame listing each message's frame
        count, then each message's route and frames."""
        if not messages:
            return
        counts = ",".join(str(1 + len(frames)) for _, frames in messages).encode()
        parts = [counts]
        for route, frames in messages:
            parts.append(route)
            parts.extend(frames)
        self._outbox().send_multipart(parts, copy=False)

    def answer(self, query: Query, share: np.ndarray) -> None:
        """Send ``query``'s client this server's share of its result."""
        self.answer_all([(query, share)])

    def answer_all(self, answers: list[tuple[Query, np.ndarray]]) -> None:
        """Send each query's client this server's share of its result."""
        self.send_all([(query.route, wire.encode({"id": query.id, "ok": True}, [share])) for query, share in answers])

    def fail(self, query: Query, code: str, message: str) -> None:
        self.send(query.route, wire.error_reply(query.id, code, message))

    def fail_all(self, code: str, message: str, also: list[Query] = ()) -> None:
        """Answer every query still waiting here (and on server0 in ``ready``) with an error, and the
        queries ``also`` that the service took from here (a batch under way, queries held back)."""
        with self._lock:
            waiting = list(self._pending.values())
            self._pending.clear()
            while True:
                try:
                    waiting.append(self.ready.get_nowait())
                except queue.Empty:
                    break
        waiting.extend(also)
        if waiting:
            self.send_all([(query.route, wire.error_reply(query.id, code, message)) for query in waiting])

    def close(self) -> None:
        """Stop the thread and release the socket (from the thread that started it)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        else:
            for sock in (self._router, self._pull, self._notices):
                if sock is not None:
                    sock.close(0)
        for push in self._pushers:
            push.close(0)
        if self._watcher.is_alive():
            control = self._zctx.socket(zmq.PAIR)
            control.linger = 0
            control.connect(self._watcher.control)
            control.send(b"stop")
            self._watcher.join()
            control.close(0)
        self._zctx.term()

    # ---- the gateway's thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        last_sweep = time.monotonic()
        try:
            while not self._stopping.is_set():
                for sock, _ in poller.poll(int(_TICK * 1000)):
                    if sock is self._pull:
                        self._forward()
                    else:
                        self._receive()
                if time.monotonic() - last_sweep >= _TICK:
                    self._sweep()
                    last_sweep = time.monotonic()
        except Exception:  # the gateway must not die silently: the service logs and carries on
            log.exception("%s: the client gateway failed", self.server)
        finally:
            for sock in (self._router, self._pull, self._notices):
                if sock is not None:
                    sock.close(0)

    def _forward(self) -> None:
        for _ in range(1000):
            try:
                parts = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            start = 1
            for count in parts[0].bytes.split(b","):
                end = start + int(count)
                try:
                    self._router.send_multipart(parts[start:end], zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:
                    pass  # the client is gone, or not reading: it loses this answer, nobody waits
                start = end

    def _reply(self, route: bytes, header: dict, arrays=()) -> None:
        try:
            self._router.send_multipart([route] + wire.encode(header, arrays), zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            pass

    def _error(self, route: bytes, request_id, code: str, message: str) -> None:
        self._reply(route, {"id": request_id, "ok": False, "code": code, "error": message})

    def _receive(self) -> None:
        for _ in range(1000):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            route, sender = frames[0].bytes, frames[1].get("User-Id")
            request_id = None
            try:
                header, arrays = wire.decode(frames[1:], sender)
                request_id = header.get("id")
                if sender == SERVER1 and self.server == SERVER0:
                    self._notice(header)
                    continue
                if header.get("op") not in _REQUESTS:
                    raise wire.WireError(sender, f"unknown request {header.get('op')!r}")
                getattr(self, f"_on_{header['op']}")(route, sender, header, arrays)
            except wire.WireError as exc:
                log.warning("%s: %s", self.server, exc)
                self._error(route, request_id, "bad_request", exc.detail)
            except wire.ServiceError as exc:
                self._error(route, request_id, exc.code, str(exc))
            except Exception as exc:  # a full disk, a bug: this request fails, the gateway goes on
                log.exception("%s: a request of %s failed", self.server, sender)
                self._error(route, request_id, "failed", f"{type(exc).__name__}: {exc}")

    # ---- requests ------------------------------------------------------------------------------------------
    def _on_hello(self, route, sender, header, arrays) -> None:
        s = self.settings
        available, reason = self._status
        self._reply(route, {"id": header.get("id"), "ok": True, "server": self.server, "client": sender,
                            "version": mpcnp.__version__, **s.shared(), "max_rows": s.max_rows,
                            "max_batch": s.max_batch, "available": available, "reason": reason})

    def _on_stats(self, route, sender, header, arrays) -> None:
        self._reply(route, {"id": header.get("id"), "ok": True, "stats": self.stats()})

    def _on_models(self, route, sender, header, arrays) -> None:
        models = {name: model.summary() for name, model in self.store.catalogue().items()}
        self._reply(route, {"id": header.get("id"), "ok": True, "models": models})

    def _owned(self, name: str, sender: str, action: str) -> None:
        existing = self.store.get(name)
        if existing is not None and (existing.owner != sender or existing.owner_key != self.keys.key_of(sender)):
            raise wire.ServiceError(f"model {name!r} belongs to {existing.owner}: only its owner may {action} it",
                                    "forbidden")

    def _on_upload(self, route, sender, header, arrays) -> None:
        name = wire.field(header, "model", str, sender)
        upload = wire.field(header, "upload", str, sender)
        names = wire.field(header, "names", list, sender)
        try:
            check_model_name(name)
            spec = check(header.get("spec"))
        except ValueError as exc:
            raise wire.ServiceError(f"cannot store model {name!r}: {exc}", "bad_request") from None
        if (not 1 <= len(upload) <= 64 or not all(isinstance(n, str) for n in names)
                or sorted(names) != sorted(spec.parameters) or len(arrays) != len(names)):
            raise wire.ServiceError("an upload sends one share per parameter of the spec, named in \"names\"",
                                    "bad_request")
        for param, share in zip(names, arrays):
            if share.shape != spec.parameters[param]:
                raise wire.ServiceError(f"the share of {param} has shape {share.shape}, the spec says "
                                        f"{spec.parameters[param]}", "bad_request")
        self._owned(name, sender, "replace")
        self.store.put(name, sender, self.keys.key_of(sender), upload, spec, dict(zip(names, arrays)))
        log.info("%s: %s uploaded model %s (upload %s)", self.server, sender, name, upload)
        self._changed()
        self._reply(route, {"id": header.get("id"), "ok": True})

    def _on_delete(self, route, sender, header, arrays) -> None:
        name = wire.field(header, "model", str, sender)
        if self.store.get(name) is None:
            raise wire.ServiceError(f"no model {name!r} on {self.server}", "not_found")
        self._owned(name, sender, "delete")
        self.store.delete(name)
        log.info("%s: %s deleted model %s", self.server, sender, name)
        self._changed()
        self._reply(route, {"id": header.get("id"), "ok": True})

    def _changed(self) -> None:
        if self._notices is not None:
            self._notices.send_multipart(wire.encode({"op": "changed"}), zmq.NOBLOCK)

    def _on_predict(self, route, sender, header, arrays) -> None:
        query_id = wire.field(header, "id", str, sender)
        name = wire.field(header, "model", str, sender)
        output = wire.field(header, "output", str, sender)
        rows = wire.field(header, "rows", int, sender)
        timeout = header.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise wire.WireError(sender, f"timeout must be a positive number or null, got {timeout!r}")
        model = self.store.get(name)
        if model is None:
            raise wire.ServiceError(f"no model {name!r} on {self.server}", "not_found")
        if output not in OUTPUTS:
            raise wire.ServiceError(f"output must be one of {OUTPUTS}, got {output!r}", "bad_request")
        if output == "class" and not serves_classes(model.spec):
            raise wire.ServiceError(f"model {name!r} gives logits of shape {model.spec.output_shape} per sample: "
                                    "a class needs one logit or one row of logits", "bad_request")
        if not 1 <= rows <= self.settings.max_rows:
            raise wire.ServiceError(f"a query has 1 to {self.settings.max_rows} rows, got {rows}", "bad_request")
        expected = (rows,) + model.spec.input_shape
        if len(arrays) != 1 or arrays[0].shape != expected:
            got = [a.shape for a in arrays]
            raise wire.ServiceError(f"model {name!r} takes an input of shape {expected}, got {got}", "bad_request")
        now = time.monotonic()
        deadline = None if timeout is None or timeout > _MAX_TIMEOUT else now + timeout
        query = Query(sender, query_id, route, name, output, rows, arrays[0], deadline, now)
        with self._lock:
            # under the lock that set_status takes: a query filed here is one that fail_all will see
            available, reason = self._status
            if not available:
                raise wire.ServiceError(f"not serving now: {reason}", "unavailable")
            if query.key in self._pending:
                raise wire.ServiceError(f"query id {query_id} is already waiting", "bad_request")
            waiting = sum(1 for q in self._pending.values() if q.client == sender)
            if waiting >= self.settings.max_pending:
                raise wire.ServiceError(f"{sender} already has {waiting} queries waiting (at most "
                                        f"{self.settings.max_pending})", "busy")
            self._pending[query.key] = query
            early = self._early.pop(query.key, None)
        if self._notices is not None:
            notice = {"op": "ready", "client": sender, "query": query_id, "model": name, "output": output,
                      "rows": rows, "timeout": timeout}
            self._notices.send_multipart(wire.encode(notice), zmq.NOBLOCK)
        elif early is not None:
            self._confirm(early[0])

    def _notice(self, header: dict) -> None:
        """server0: a message from server1's gateway."""
        if header.get("op") == "changed":
            self.remote_version += 1
        elif header.get("op") == "ready":
            self._confirm(header)

    def _confirm(self, notice: dict) -> None:
        key = (notice.get("client"), notice.get("query"))
        with self._lock:
            query = self._pending.get(key)
            if query is None:
                self._early[key] = (notice, time.monotonic())
                return
            del self._pending[key]
            agree = (notice.get("model"), notice.get("output"), notice.get("rows")) == (query.model, query.output,
                                                                                          query.rows)
            if agree:
                self.ready.put(query)    # under the lock: fail_all sees it either pending or ready
        if not agree:
            self.fail(query, "bad_request", "server0 and server1 received different requests under this id "
                                            "(model, output or rows)")

    def _sweep(self) -> None:
        now = time.monotonic()
        grace = _GRACE if self.server == SERVER1 else 0.0
        with self._lock:
            expired = [q for q in self._pending.values() if q.expired(now, grace)]
            for query in expired:
                del self._pending[query.key]
            for key in [k for k, (_, at) in self._early.items() if now - at > _EARLY]:
                del self._early[key]
        for query in expired:
            other = SERVER1 if self.server == SERVER0 else SERVER0
            self._error(query.route, query.id, "timeout",
                        f"query {query.id} timed out after {now - query.arrived:.3g} s: its share did not reach "
                        f"{other}, or the service was too busy")


_REQUESTS = ("hello", "models", "upload", "delete", "predict", "stats")   # handled by Gateway._on_<op>
