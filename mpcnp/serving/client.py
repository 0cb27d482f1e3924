"""``mp.Client``: a model owner or a user of a served model, talking to server0 and server1.

The client connects to both servers' client sockets over CurveZMQ with its own key pair (the servers
admit only the keys they list). It secret-shares everything it sends itself: each value is encoded in
fixed point (the service's ``frac_bits``) and split into a uniform share from an AES-CTR stream keyed
from ``os.urandom`` for server0 and the difference for server1; neither server alone learns anything
of it. A prediction's result comes back the same way, a re-randomised share from each server, and only
the client adds them. It needs no PRF key with the servers and may disconnect at any time.

A Client uses ZeroMQ sockets: use it from one thread (one Client per thread).
"""
from __future__ import annotations

import os
import secrets
import time
from typing import Any

import numpy as np
import zmq

from mpcnp import fixedpoint, ring
from mpcnp.runtime.context import SERVER0, SERVER1, SERVERS
from mpcnp.serving import wire
from mpcnp.serving.config import ServingCluster, load
from mpcnp.serving.spec import OUTPUTS, check_model_name, describe
from mpcnp.serving.spec import load as load_model
from mpcnp.serving.wire import ServiceError

__all__ = ["Client", "ServiceError"]

_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_DISCONNECTED)


class Client:
    """A client ``name`` of the service described by ``config`` (a cluster file path or a loaded
    ServingCluster), with its Curve key from ``key`` (a key file; else $MPCNP_SECRET_KEY, else its
    entry's secret_key_file). ``timeout``: seconds a request waits for both servers by default
    (``float("inf")``: forever). Raises ValueError for a bad configuration or key."""

    def __init__(self, config, name: str, key=None, timeout: float = 30.0):
        self.serving = config if isinstance(config, ServingCluster) else load(config)
        self.name = name
        self.timeout = _check_timeout(timeout)
        public, secret = self.serving.client_keys(name, key)
        self._prf = ring.PRF(os.urandom(ring.KEY_BYTES))
        self._zctx = zmq.Context(io_threads=1)
        self._keys = (public, secret)
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[zmq.Socket, str] = {}
        self._connected = {server: False for server in SERVERS}
        self._refused: dict[str, str] = {}
        self._info: dict | None = None
        self._catalogue: dict[str, dict] = {}
        for server in SERVERS:
            self._connect(server)

    def _connect(self, server: str) -> None:
        """A new connection to ``server`` (replacing the old one): ZeroMQ does not try again by itself
        once a server refused our key, and it may admit it later (a client directory)."""
        old = self._sockets.pop(server, None)
        if old is not None:
            monitor = next(m for m, s in self._monitors.items() if s == server)
            del self._monitors[monitor]
            old.disable_monitor()
            old.close(0)
            monitor.close(0)
        sock = self._zctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_publickey, sock.curve_secretkey = (k.encode() for k in self._keys)
        sock.curve_serverkey = self.serving.server(server).public_key.encode()
        sock.heartbeat_ivl, sock.heartbeat_timeout = 1000, 3000   # notices a server that vanished
        self._monitors[sock.get_monitor_socket(_EVENTS)] = server
        sock.connect(self.serving.client_endpoint(server))
        self._sockets[server] = sock
        self._connected[server] = False
        self._refused.pop(server, None)

    # ---- the API --------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """The names of the models both servers hold under the same upload (the ones that can be served)."""
        return sorted(self._refresh())

    def model_info(self, model_name: str) -> dict:
        """What the servers tell of a model: owner, input_shape, output_shape, upload."""
        catalogue = self._refresh()
        if model_name not in catalogue:
            raise ServiceError(f"no model {model_name!r} on both servers (they list {sorted(catalogue)})", "not_found")
        return dict(catalogue[model_name])

    def upload(self, model_name: str, model, input_shape=None, timeout: float | None = None) -> None:
        """Secret-share ``model`` (an mpcnp.nn model with its weights, or the path of a model file
        written by mpcnp.serving.spec.save) to the servers as ``model_name``;
        it replaces this client's own model of that name. ``input_shape``: one sample's shape, needed
        when the model does not start with a Dense layer. Returns once both servers have stored it;
        the client may then leave. Raises ValueError for a model that cannot be served or weights
        that cannot be encoded, ServiceError if a server refuses (e.g. the name is another client's)."""
        check_model_name(model_name)
        info = self.hello(timeout)
        spec, params = load_model(model) if isinstance(model, (str, os.PathLike)) else describe(model, input_shape)
        names = list(spec.parameters)
        encoded = [fixedpoint.encode(params[name], info["frac_bits"]) for name in names]
        share0 = [self._prf.uint64(value.shape) for value in encoded]
        share1 = [value - mask for value, mask in zip(encoded, share0)]
        header = {"op": "upload", "model": model_name, "upload": secrets.token_hex(16), "spec": spec.to_json(),
                  "names": names}
        try:
            self._request({SERVER0: (header, share0), SERVER1: (header, share1)}, timeout)
        except ServiceError as exc:
            raise ServiceError(f"{exc} (if the other server stored it, the model is not served until it is "
                               "uploaded again)", exc.code) from None
        self._catalogue.pop(model_name, None)

    def delete(self, model_name: str, timeout: float | None = None) -> None:
        """Delete this client's model ``model_name`` from both servers."""
        header = {"op": "delete", "model": check_model_name(model_name)}
        self._request({server: (header, []) for server in SERVERS}, timeout)
        self._catalogue.pop(model_name, None)

    def predict(self, model_name: str, x, output: str = "logits", timeout: float | None = None) -> np.ndarray:
        """The model on ``x``: one sample (the model's input shape) or a batch (rows, *input shape).

        Only this client learns the result: ``output="logits"`` the last layer's values (float64),
        ``"class"`` each row's class (int64). Raises ValueError for a bad x or output, ServiceError if
        the service cannot answer (``code`` says why; "timeout" after ``timeout`` seconds)."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        info = self.hello(timeout)
        model = self._catalogue.get(model_name) or self.model_info(model_name)
        input_shape, output_shape = tuple(model["input_shape"]), tuple(model["output_shape"])
        x = np.asarray(x, dtype=np.float64)
        single = x.shape == input_shape
        if single:
            x = x[np.newaxis]
        if x.shape[1:] != input_shape or not x.shape[0]:
            raise ValueError(f"model {model_name!r} takes one sample of shape {input_shape} or a batch "
                             f"(rows, *{input_shape}), got shape {x.shape}")
        encoded = fixedpoint.encode(x, info["frac_bits"])
        share0 = self._prf.uint64(encoded.shape)
        share1 = encoded - share0
        timeout = self.timeout if timeout is None else _check_timeout(timeout)
        header = {"op": "predict", "id": secrets.token_hex(8), "model": model_name, "output": output,
                  "rows": len(x), "timeout": None if timeout == float("inf") else timeout}
        # server1's share goes first: its gateway tells server0's that it holds the query, which a
        # batch waits for, so that notice is on its way while server0's share travels
        replies = self._request({SERVER1: (header, [share1]), SERVER0: (header, [share0])}, timeout)
        expected = (len(x),) + (output_shape if output == "logits" else ())
        parts = []
        for server, (_, arrays) in replies.items():
            if len(arrays) != 1 or arrays[0].shape != expected:
                raise ServiceError(f"answered with {[a.shape for a in arrays]}, expected {expected}", "failed", server)
            parts.append(arrays[0])
        values = fixedpoint.decode(parts[0] + parts[1], info["frac_bits"])
        if output == "class":
            values = np.rint(values).astype(np.int64)
        return values[0] if single else values

    def stats(self, server: str = SERVER0, timeout: float | None = None) -> dict:
        """The counters of ``server`` (batches, rows, pooled batches, refills, their seconds)."""
        return self._request({server: ({"op": "stats"}, [])}, timeout)[server][0]["stats"]

    def hello(self, timeout: float | None = None) -> dict:
        """The service's settings (protocol, frac_bits, limits), which both servers must agree on."""
        if self._info is None:
            replies = self._request({server: ({"op": "hello"}, []) for server in SERVERS}, timeout)
            infos = [header for header, _ in replies.values()]
            for field in ("protocol", "frac_bits"):
                if infos[0][field] != infos[1][field]:
                    raise ServiceError(f"server0 and server1 disagree on {field} ({infos[0][field]} and "
                                       f"{infos[1][field]})", "failed")
            self._info = infos[0]
        return self._info

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until both servers serve (their session is up), at most ``timeout`` seconds (default:
        the client's); ServiceError (code "unavailable") with the servers' reason otherwise."""
        timeout = self.timeout if timeout is None else _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            replies = self._request({server: ({"op": "hello"}, []) for server in SERVERS}, max(remaining, 0.1))
            waiting = {server: header.get("reason", "") for server, (header, _) in replies.items()
                       if not header.get("available")}
            if not waiting:
                return
            if remaining <= 0:
                raise ServiceError("not serving: " + "; ".join(f"{s}: {r}" for s, r in waiting.items()), "unavailable")
            time.sleep(min(0.05, remaining))

    def close(self) -> None:
        """Close the connections (idempotent)."""
        if self._zctx is None:
            return
        for sock in self._sockets.values():
            sock.disable_monitor()
            sock.close(0)
        for monitor in self._monitors:
            monitor.close(0)
        self._zctx.term()
        self._zctx = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to do at interpreter exit
            pass

    # ---- requests ---------------------------------------------------------------------------------------
    def _refresh(self) -> dict[str, dict]:
        replies = self._request({server: ({"op": "models"}, []) for server in SERVERS}, None)
        lists = [header.get("models", {}) for header, _ in replies.values()]
        self._catalogue = {name: info for name, info in lists[0].items()
                           if name in lists[1] and lists[1][name].get("upload") == info.get("upload")}
        return self._catalogue

    def _request(self, requests: dict[str, tuple[dict, list]], timeout: float | None) -> dict[str, tuple[dict, list]]:
        """Send one request per server and wait for both answers; ServiceError for a refusal, an
        error answer, a lost connection or the timeout."""
        if self._zctx is None:
            raise ValueError("this client is closed")
        timeout = self.timeout if timeout is None else _check_timeout(timeout)
        for monitor, server in self._monitors.items():
            self._on_events(monitor, server, pending=False)
        ids = {}
        deadline = None if timeout == float("inf") else time.monotonic() + timeout
        for server, (header, arrays) in requests.items():
            if server in self._refused:
                self._connect(server)
            header = dict(header)
            header.setdefault("id", secrets.token_hex(8))
            ids[server] = header["id"]
            self._send(server, wire.encode(header, arrays), deadline, timeout)
        replies: dict[str, tuple[dict, list]] = {}
        poller = zmq.Poller()
        for server in requests:
            poller.register(self._sockets[server], zmq.POLLIN)
        for monitor in self._monitors:
            poller.register(monitor, zmq.POLLIN)
        while len(replies) < len(requests):
            wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            events = dict(poller.poll(wait))
            missing = [s for s in requests if s not in replies]
            if not events:
                raise ServiceError(f"no answer from {' and '.join(missing)} within {timeout:g} s"
                                   + ("" if all(self._connected[s] for s in missing) else
                                      " (not connected: is it running, at "
                                      + ", ".join(self.serving.client_endpoint(s) for s in missing) + "?)"),
                                   "timeout")
            for monitor, server in self._monitors.items():
                if monitor in events:
                    self._on_events(monitor, server, pending=server in missing)
            for server in missing:
                self._raise_if_refused(server)
                sock = self._sockets[server]
                while sock in events and server not in replies:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    header, arrays = wire.decode(frames, server)
                    if header.get("id") != ids[server]:
                        continue  # the late answer to an earlier request that timed out
                    if not header.get("ok"):
                        raise ServiceError(str(header.get("error")), str(header.get("code", "failed")), server)
                    replies[server] = (header, arrays)
        return replies

    def _send(self, server: str, frames: list, deadline: float | None, timeout: float) -> None:
        """Queue a request to ``server`` without ever blocking past ``deadline``. A DEALER queues
        while it connects, but after a refused handshake ZeroMQ drops the connection's queue and a
        blocking send would wait forever: then ServiceError "refused" (the next request connects
        again), or "timeout" if it cannot send by the deadline."""
        sock = self._sockets[server]
        monitor = next(m for m, s in self._monitors.items() if s == server)
        while True:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            self._on_events(monitor, server, pending=False)
            self._raise_if_refused(server)
            wait = 50 if deadline is None else min(50, int((deadline - time.monotonic()) * 1000))
            if wait <= 0:
                raise ServiceError(f"could not send to {server} within {timeout:g} s (not connected: is it "
                                   f"running, at {self.serving.client_endpoint(server)}?)", "timeout", server)
            sock.poll(wait, zmq.POLLOUT)

    def _on_events(self, monitor: zmq.Socket, server: str, pending: bool) -> None:
        """Note the monitor's events on the connection to ``server``; with an answer ``pending`` from
        it, a broken connection is a ServiceError (the answer is lost with it)."""
        while True:
            try:
                message = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = int.from_bytes(message[0][:2], "little")
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected[server] = True
                self._refused.pop(server, None)
            elif event == zmq.EVENT_DISCONNECTED:
                was = self._connected[server]
                self._connected[server] = False
                if pending and was:
                    raise ServiceError("the connection broke while waiting for the answer (the server stopped or "
                                       "crashed); try again once it is back", "unavailable", server)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused[server] = (f"refused this client's key: {self.name!r} is not one of its clients "
                                         "(its cluster file or client directory must list this public key)")
            else:
                self._refused[server] = ("the secure handshake failed: is the server's public key in the "
                                         "cluster file right?")

    def _raise_if_refused(self, server: str) -> None:
        if server in self._refused:
            raise ServiceError(self._refused[server], "refused", server)


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds (float('inf'): forever), got {timeout!r}")
    return float(timeout)
