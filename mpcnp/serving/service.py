"""A core party as a long-running service: ``python -m mpcnp serve`` runs one ``Service``.

The three core services keep one session among themselves (mpcnp.serving.session) and run, in step,
the commands server0 sends: server0 leads, server1 and the producer follow. The commands:

- ``sync``: which models to serve, and their loading (mpcnp.serving.models): every party loads
  exactly the models both servers hold under one upload.
- ``batch``: a forward pass on the rows of several queries (dynamic batching: the queries waiting
  when the previous step ended, and, for at most ``batch_window`` seconds, the next queries of the
  other clients that queried in the last second; up to ``max_batch`` rows, one model and output kind
  per batch), padded with zero rows to a power of two. Each server sends each client only its own
  rows of its result share, re-randomised.
- ``refill``: one more item of preprocessed randomness for a recipe (mpcnp.serving.pool), when idle.
- ``ping``: a heartbeat every ``timeout / 4`` seconds when idle, so that a silent party is noticed.

A party that fails (dies, stalls past ``timeout``, diverges) ends the session: the others answer the
queries they hold with an error, set up a new session as soon as all three are back, and load the
models again from the servers' stores. Shares and settings never leave a party except as the
protocols send them.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from mpcnp.net import HandshakeError, NetError, PeerTimeout
from mpcnp.net.framing import decode_json
from mpcnp.protocols import sharing
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import (PRODUCER, SERVER0, SERVER1, SERVERS, Context, PartyError, activate, deactivate,
                                   describe)
from mpcnp.serving.spec import OUTPUTS
from mpcnp.serving.config import ServingCluster
from mpcnp.serving.gateway import Gateway, Query
from mpcnp.serving.models import Models
from mpcnp.serving.pool import Pools
from mpcnp.serving.session import FOLLOWERS, Stopped, establish, offline_streams, recv_json, send_json
from mpcnp.serving.settings import Settings
from mpcnp.serving.store import ModelStore
from mpcnp.tensor import PrivateTensor

__all__ = ["Service", "Settings"]

log = logging.getLogger("mpcnp.serving")

_TICK = 0.05
_RECENT = 1.0   # seconds: a client that queried this recently may well join the next batch


@dataclass
class Counters:
    """What a service has done since it started (``stats`` request)."""

    sessions: int = 0
    batches: int = 0
    pooled_batches: int = 0
    rows: int = 0
    queries: int = 0
    batch_seconds: float = 0.0
    pooled_seconds: float = 0.0
    refills: int = 0
    refill_seconds: float = 0.0
    # payload bytes this party received during pooled and inline batches and during refills
    pooled_bytes: int = 0
    inline_bytes: int = 0
    refill_bytes: int = 0
    failures: list = field(default_factory=list)


def _bucket(rows: int) -> int:
    return 1 << max(0, rows - 1).bit_length()


class _SessionEnded(Exception):
    """server0 ended the session on purpose (it stopped, or started another)."""


class Service:
    """Core party ``name`` of ``serving`` as a service. ``run()`` serves until ``stop()`` (any thread;
    the command line calls it on SIGTERM and SIGINT). Servers keep their models in ``store`` (default
    ``./mpcnp-store-NAME``); ``key_file`` is the party's Curve key file (else the cluster file's
    secret_key_file or $MPCNP_SECRET_KEY)."""

    def __init__(self, serving: ServingCluster, name: str, key_file: str | os.PathLike | None = None,
                 store: str | os.PathLike | None = None, settings: Settings | None = None):
        if name not in (SERVER0, SERVER1, PRODUCER):
            raise ValueError(f"a service is server0, server1 or the producer, not {name!r}")
        self.serving, self.name = serving, name
        self.settings = settings or Settings()
        self.config = self.settings.config()
        self.core = serving.core()
        self.curve = self.core.curve_config(name, key_file)
        self.counters = Counters()
        self._stop = threading.Event()
        self.store = self.gateway = None
        if name in SERVERS:
            self.store = ModelStore(store or f"mpcnp-store-{name}", name, self.settings.frac_bits)
            self.gateway = Gateway(name, serving, self.curve, self.store, self.settings, self.stats)
        self._held: list[Query] = []         # server0: queries taken from the gateway for a later batch
        self._inflight: list[Query] = []     # the queries of the batch under way
        self._recent: dict[str, float] = {}   # server0: client -> when its last query arrived
        self._last_failure: str | None = None  # why the last session ended, told to clients meanwhile

    def stop(self) -> None:
        """Ask ``run`` to return: it finishes the step under way, answers waiting queries with an
        error and closes everything."""
        self._stop.set()

    def stats(self) -> dict:
        """The counters (``Counters``) as a dict, failures left out."""
        return {name: value for name, value in vars(self.counters).items() if name != "failures"}

    # ---- the outer loop: one session after another ---------------------------------------------------------
    def run(self) -> None:
        if self.gateway is not None:
            self.gateway.start()
            log.info("%s: clients connect to %s", self.name, self.gateway.endpoint)
        try:
            while not self._stop.is_set():
                if self._last_failure is None:
                    self._status(False, "the core parties are setting up their session")
                try:
                    ctx, session = establish(self.core, self.name, self.curve, self.config,
                                             self.settings.shared(), self._stop.is_set, self._waiting)
                except Stopped:
                    break
                except HandshakeError as exc:
                    log.error("%s: %s", self.name, exc)
                    self._stop.wait(1.0)
                    continue
                except (PartyError, NetError) as exc:
                    log.warning("%s: setting up a session failed (%s); trying again", self.name, exc)
                    continue
                self.counters.sessions += 1
                self._last_failure = None
                log.info("%s: session %s established", self.name, session)
                if self._serve(ctx):
                    break
        finally:
            self._fail_waiting("unavailable", "the service stopped", f"{self.name} stopped")
            if self.gateway is not None:
                self.gateway.close()

    def _waiting(self, peer: str) -> None:
        reason = f"{self.name} cannot reach {peer}"
        if self._last_failure:
            reason = f"{self._last_failure}; {reason} to set up a new session"
        self._status(False, reason)

    def _status(self, available: bool, reason: str = "") -> None:
        if self.gateway is not None:
            self.gateway.set_status(available, reason)

    def _fail_waiting(self, code: str, reason: str, message: str) -> None:
        """Stop accepting queries (``reason`` tells clients why), then answer every query this server
        holds with an error: those waiting in the gateway, those server0 set aside for a later batch,
        and those of the batch under way. In that order: a query the gateway accepts before the
        status changes is among those failed, and none is accepted after."""
        self._status(False, reason)
        if self.gateway is not None:
            self.gateway.fail_all(code, message, self._held + self._inflight)
        self._held, self._inflight = [], []

    def _serve(self, ctx: Context) -> bool:
        """Run one session; True when the service is to stop."""
        token = activate(ctx)
        stopped = False
        try:
            with np.errstate(over="ignore"):
                pools = Pools(offline_streams(ctx), self.settings.pool_items, int(self.settings.pool_mb * (1 << 20)))
                state = _State(ctx, pools, Models(ctx, pools, self.store))
                if self.name == SERVER0:
                    self._lead(state)
                else:
                    self._follow(state)
        except Stopped:
            stopped = True
            for peer in ctx.transport.peers:
                try:
                    send_json(ctx, peer, {"op": "bye"})
                except PartyError:
                    pass
        except (PartyError, _SessionEnded) as exc:
            log.warning("%s: the session ended: %s", self.name, exc)
            if isinstance(exc, PartyError) and not exc.relayed:
                # the peers learn at once whom this party blames, rather than blaming this party
                # for leaving (or waiting out their timeout on it)
                ctx.transport.abort(exc.party, describe(exc.cause))
            self.counters.failures = self.counters.failures[-99:] + [str(exc)]
            self._last_failure = f"the service lost its session ({exc})"
            self._fail_waiting("unavailable", self._last_failure, f"{self._last_failure}; it is setting up a new one")
        except Exception as exc:  # a bug must not stop the service: a new session starts clean
            log.exception("%s: the session failed", self.name)
            ctx.transport.abort(self.name, f"{type(exc).__name__} in {self.name}'s service")
            self._fail_waiting("failed", "the service is setting up a new session after an internal error",
                               f"{type(exc).__name__}: {exc}")
        finally:
            self._status(False, self._last_failure or "the core parties are setting up their session")
            deactivate(token)
            ctx.transport.close(linger=0.2 if stopped else 0)
        return stopped

    # ---- server0 --------------------------------------------------------------------------------------------
    def _lead(self, state: "_State") -> None:
        last_contact = time.monotonic()
        heartbeat = self.settings.timeout / 4
        while True:
            if self._stop.is_set():
                raise Stopped()
            current = self._versions()
            if current != state.versions:
                state.versions = current
                state.catalog.sync_lead()
                self._status(True)
                last_contact = time.monotonic()
            key = state.pools.wanted() if self.settings.pool else None
            batch = self._next_batch(state, wait=0.0 if key is not None else _TICK)
            if batch:
                self._batch_lead(state, batch)
                last_contact = time.monotonic()
                continue
            if key is not None:
                for peer in FOLLOWERS:
                    send_json(state.ctx, peer, {"op": "refill", "key": list(key)})
                self._refill(state, key)
                last_contact = time.monotonic()
            elif time.monotonic() - last_contact >= heartbeat:
                for peer in FOLLOWERS:
                    send_json(state.ctx, peer, {"op": "ping"})
                for peer in FOLLOWERS:
                    reply = recv_json(state.ctx, peer)
                    if reply["op"] != "pong":
                        raise PartyError(peer, f"answered a ping with {reply['op']!r}")
                last_contact = time.monotonic()

    def _versions(self) -> tuple[int, int]:
        """How often the models changed on server0 (its store) and on server1 (its notices)."""
        return self.store.version, self.gateway.remote_version

    def _take(self, timeout: float) -> Query | None:
        if self._held:
            return self._held.pop(0)
        try:
            query = self.gateway.ready.get(timeout=timeout) if timeout > 0 else self.gateway.ready.get_nowait()
        except queue.Empty:
            return None
        self._recent[query.client] = query.arrived
        return query

    def _others_active(self, client: str) -> set[str]:
        """The clients other than ``client`` that sent a query in the last ``_RECENT`` seconds: a batch waits (at most
        ``batch_window``) for their next queries, which are likely on their way; a lone client's next
        query comes only after this one's answer, so nothing is worth waiting for."""
        now = time.monotonic()
        for other, at in list(self._recent.items()):
            if now - at > _RECENT:
                del self._recent[other]
        return set(self._recent) - {client}

    def _next_batch(self, state: "_State", wait: float) -> list[Query]:
        """The queries of the next batch (see the module docstring), or [] after ``wait`` seconds."""
        first = None
        while first is None:
            first = self._take(wait)
            if first is None:
                return []
            if first.expired(time.monotonic()):
                self.gateway.fail(first, "timeout", f"query {first.id} waited past its timeout for a batch")
                first = None
            elif state.versions != self._versions():
                # a model changed while we waited: a query that came after an upload is answered by
                # the new model, so sync first (server1's "changed" notice precedes its "ready" one)
                self._held.insert(0, first)
                return []
            elif first.model not in state.models:
                reason = state.catalog.unavailable.get(first.model, "it is not loaded")
                self.gateway.fail(first, "unavailable", f"model {first.model!r} cannot be served: {reason}")
                first = None
        batch, rows = [first], first.rows
        if not self.settings.batching:
            return batch
        expected = self._others_active(first.client)
        held, deadline = [], time.monotonic() + self.settings.batch_window
        while rows < self.settings.max_batch:
            query = self._take(max(0.0, deadline - time.monotonic()) if expected else 0.0)
            if query is None:
                break
            expected.discard(query.client)
            if (query.model, query.output) == (first.model, first.output) and rows + query.rows <= self.settings.max_batch:
                batch.append(query)
                rows += query.rows
            else:
                held.append(query)
        self._held = held + self._held
        return batch

    def _batch_lead(self, state: "_State", batch: list[Query]) -> None:
        model = state.models[batch[0].model]
        rows = sum(q.rows for q in batch)
        bucket = _bucket(rows)
        output = batch[0].output
        key = (model.name, model.upload, output, bucket)
        pooled = self.settings.pool and state.pools.available(key) > 0
        command = {"op": "batch", "model": model.name, "upload": model.upload, "output": output, "bucket": bucket,
                   "pooled": pooled, "queries": [[q.client, q.id, q.rows] for q in batch]}
        self._inflight = batch      # from here on, a failure answers them (_fail_waiting)
        for peer in FOLLOWERS:
            send_json(state.ctx, peer, command)
        self._evaluate(state, command, batch)

    # ---- server1 and the producer ---------------------------------------------------------------------------
    def _command(self, ctx: Context) -> dict:
        """The next command from server0, waiting at most ``timeout`` (checking the stop flag)."""
        deadline = time.monotonic() + self.settings.timeout
        while True:
            if self._stop.is_set():
                raise Stopped()
            try:
                message = ctx.transport.recv(SERVER0, min(_TICK, max(0.0, deadline - time.monotonic())))
                break
            except PeerTimeout:
                if time.monotonic() >= deadline:
                    raise PartyError(SERVER0, TimeoutError(
                        f"{self.name} heard nothing from server0 for {self.settings.timeout:g} s")) from None
            except NetError as exc:
                raise PartyError(SERVER0, exc) from None
        try:
            command = decode_json(message, SERVER0) if message.dtype == np.uint8 and message.ndim == 1 else None
        except NetError:
            command = None
        if not isinstance(command, dict) or not isinstance(command.get("op"), str):
            raise PartyError(SERVER0, "sent something else than a command")
        return command

    def _follow(self, state: "_State") -> None:
        ctx = state.ctx
        while True:
            command = self._command(ctx)
            op = command["op"]
            if op == "ping":
                send_json(ctx, SERVER0, {"op": "pong"})
            elif op == "sync":
                state.catalog.sync_follow(command)
                self._status(True)
            elif op == "batch":
                self._batch_follow(state, command)
            elif op == "refill":
                key = tuple(command["key"])
                if key not in state.pools.recipes:
                    raise PartyError(SERVER0, f"asked to refill an unknown recipe {key}")
                self._refill(state, key)
            elif op in ("bye", "propose"):
                raise _SessionEnded("server0 stopped" if op == "bye" else "server0 started a new session")
            else:
                raise PartyError(SERVER0, f"sent an unknown command {op!r}")

    def _batch_follow(self, state: "_State", command: dict) -> None:
        model = state.models.get(command.get("model"))
        queries = command.get("queries")
        if model is None or model.upload != command.get("upload") or not isinstance(queries, list):
            raise PartyError(SERVER0, f"asked for a batch of a model this party does not serve: {command.get('model')}")
        batch = []
        for client, query_id, rows in queries:
            query = self.gateway.take(client, query_id) if self.name == SERVER1 else None
            if query is not None:
                self._inflight.append(query)     # taken from the gateway: a failure answers it
            else:
                # the producer holds no shares; server1 lost this one (past its deadline and grace):
                # its rows are zeros and its client, waiting for server1's share, times out
                shape = (rows,) + model.spec.input_shape
                query = Query(client, query_id, b"", model.name, command["output"], rows,
                              np.zeros(shape, np.uint64), None)
                if self.name == SERVER1:
                    log.warning("server1: query %s of %s is no longer here; its rows are zeros", query_id, client)
            batch.append(query)
        self._evaluate(state, command, batch)

    # ---- the steps every party runs -----------------------------------------------------------------------
    def _evaluate(self, state: "_State", command: dict, batch: list[Query]) -> None:
        """The forward pass of a batch (SPMD); servers answer each query with its rows' share."""
        ctx, model = state.ctx, state.models[command["model"]]
        bucket, output = int(command["bucket"]), command["output"]
        rows = sum(q.rows for q in batch)
        if not rows <= bucket <= max(rows, self.settings.max_batch) * 2 or output not in OUTPUTS:
            raise PartyError(SERVER0, f"sent a malformed batch ({rows} rows in {bucket}, output {output!r})")
        shape = (bucket,) + model.spec.input_shape
        x = None
        if ctx.is_server:
            x = np.zeros(shape, np.uint64)
            offset = 0
            for query in batch:
                x[offset:offset + query.rows] = query.share
                offset += query.rows
        key = (model.name, model.upload, output, bucket)
        started, received = time.perf_counter(), ctx.transport.stats.payload_bytes_received
        with state.pools.dealer(key, bool(command["pooled"])):
            y = model.net.infer(PrivateTensor(ctx, Shared(x, shape)), output)
        share = sharing.rerandomize(ctx, y.share)
        elapsed = time.perf_counter() - started
        received = ctx.transport.stats.payload_bytes_received - received
        c = self.counters
        c.batches, c.rows, c.queries, c.batch_seconds = c.batches + 1, c.rows + rows, c.queries + len(batch), \
            c.batch_seconds + elapsed
        if command["pooled"]:
            c.pooled_batches, c.pooled_seconds, c.pooled_bytes = (c.pooled_batches + 1, c.pooled_seconds + elapsed,
                                                                  c.pooled_bytes + received)
        else:
            c.inline_bytes += received
        if share is None or self.gateway is None:
            return
        answers, offset = [], 0
        for query in batch:
            if query.route:
                answers.append((query, share[offset:offset + query.rows]))
            offset += query.rows
        self.gateway.answer_all(answers)
        self._inflight = []

    def _refill(self, state: "_State", key: tuple) -> None:
        started, received = time.perf_counter(), state.ctx.transport.stats.payload_bytes_received
        state.pools.refill(state.ctx, key)
        self.counters.refills += 1
        self.counters.refill_seconds += time.perf_counter() - started
        self.counters.refill_bytes += state.ctx.transport.stats.payload_bytes_received - received


class _State:
    """What one session of a service holds: its context, its pools, its models."""

    def __init__(self, ctx: Context, pools: Pools, models: Models):
        self.ctx, self.pools, self.catalog = ctx, pools, models
        self.models = models.loaded        # name -> LoadedModel, kept up to date by ``catalog``
        self.versions: tuple[int, int] | None = None   # server0: the model versions last synced

