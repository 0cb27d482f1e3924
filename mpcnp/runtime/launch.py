"""Running an SPMD function on every party: threads, processes over ZeroMQ, or one party of a cluster.

``run`` is the entry point of API.md. Every backend runs the same ``party_main`` on each party; they
differ only in how parties are started and how their transports are built. Failures follow one rule:
the first party that fails tells every other party (an abort notice on the channels); each party turns
what it sees into a ``PartyError`` naming the party at fault; the caller raises the root cause.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mpcnp.net import MemoryNetwork, Transport
from mpcnp.net.shaping import shaped
from mpcnp.runtime.context import (Config, Context, PartyError, activate, barrier, check_party_names,
                                   deactivate, describe)

BACKENDS = ("threads", "processes")
# After the first failure, the other parties get this long to report before the caller gives up on them.
FAILURE_GRACE = 1.0

# Severity of what a party reports, lowest first: the root cause is the most direct report.
OK, ABORTED, OBSERVED, OWN = 0, 1, 2, 3


@dataclass
class Outcome:
    """What one party's run ended with."""

    party: str
    kind: int
    value: Any = None
    error: PartyError | None = None
    when: float = field(default_factory=time.monotonic)


def party_main(name: str, parties: tuple[str, ...], transport: Transport, config: Config,
               fn: Callable, args: tuple, kwargs: dict) -> Outcome:
    """Run ``fn`` as party ``name``: wait for the channels, agree keys, call fn, classify and
    broadcast any failure (a failure to connect included, so peers name the culprit, not us).
    ``config.network``: every channel is shaped as that network (the caller still owns ``transport``)."""
    inner, transport = transport, shaped(transport, config.network)
    ctx = Context(name, parties, transport, config)
    token = activate(ctx)
    try:
        ctx.wait_ready()
        ctx.agree_keys()
        transport.stats.reset()
        # Ring arithmetic wraps mod 2^64 by design; NumPy warns about it on 0-d (scalar) uint64 values
        # only. errstate is context-local, so this holds for this party's code alone.
        with np.errstate(over="ignore"):
            value = fn(*args, **kwargs)
        # Nobody leaves before everyone is done: a party that closed its channels early would drop
        # messages still queued for a slower peer, or a connection that peer is still opening.
        barrier(ctx, parties, exchanges=1)
        return Outcome(name, OK, value=value)
    except PartyError as exc:
        kind = ABORTED if exc.relayed else OBSERVED
        transport.abort(exc.party, describe(exc.cause))
        return Outcome(name, kind, error=exc)
    except BaseException as exc:  # noqa: BLE001 - any failure of user code ends the run for everyone
        transport.abort(name, describe(exc))
        return Outcome(name, OWN, error=PartyError(name, exc))
    finally:
        deactivate(token)
        if transport is not inner:
            transport.drain()  # a sender-side hold delivers what it still holds before the caller closes


def root_cause(outcomes: list[Outcome]) -> PartyError | None:
    """The PartyError the caller raises: the most direct report, earliest first; None if all are OK.

    A party found silent may itself have been waiting on another one (server0 times out on server1
    while server1 times out on the producer): such blame is followed to the end of the chain.
    """
    failures = [o for o in outcomes if o.kind != OK]
    if not failures:
        return None
    best = max(failures, key=lambda o: (o.kind, -o.when))
    by_party = {o.party: o for o in outcomes}
    seen = {best.party}
    while best.kind == OBSERVED and best.error.party not in seen:
        blamed = by_party.get(best.error.party)
        if blamed is None or blamed.kind != OBSERVED or blamed.error.party == blamed.party:
            break
        seen.add(blamed.party)
        best = blamed
    return best.error


def collect(results: "queue.Queue[Outcome]", parties: tuple[str, ...], timeout: float,
            on_failure: Callable[[Outcome], None] = lambda outcome: None) -> dict[str, Outcome]:
    """Gather every party's outcome from ``results`` without ever waiting forever.

    Once one party has failed the others get ``FAILURE_GRACE`` seconds; once one has finished, the
    others get ``timeout`` seconds (a party that has not finished by then is reported as silent).
    """
    outcomes: dict[str, Outcome] = {}
    deadline = None
    failed = False
    while len(outcomes) < len(parties):
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            outcome = results.get(timeout=wait)
        except queue.Empty:
            break
        outcomes[outcome.party] = outcome
        if outcome.kind != OK and not failed:
            failed = True
            on_failure(outcome)
            deadline = time.monotonic() + FAILURE_GRACE
        elif deadline is None:
            deadline = time.monotonic() + timeout
    return fill_missing(outcomes, parties, timeout)


def fill_missing(outcomes: dict[str, Outcome], parties, timeout: float) -> dict[str, Outcome]:
    """Outcomes for the parties that never reported: stopped after a failure, or silent."""
    failed = any(o.kind != OK for o in outcomes.values())
    for name in parties:
        if name not in outcomes:
            reason = ("stopped answering after another party failed" if failed else
                      f"did not finish within {timeout:g} s of the other parties")
            outcomes[name] = Outcome(name, ABORTED if failed else OBSERVED,
                                     error=PartyError(name, TimeoutError(reason)))
    return outcomes


def finish(outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """Raise the root cause if any party failed, else return {party: value}."""
    error = root_cause(list(outcomes.values()))
    if error is not None:
        raise error
    return {name: o.value for name, o in outcomes.items()}


# ---- threads backend --------------------------------------------------------------------------------
def run_threads(fn: Callable, args: tuple, kwargs: dict, parties: tuple[str, ...], config: Config) -> dict:
    """Each party a daemon thread with in-memory channels (the embedded default)."""
    network = MemoryNetwork(parties)
    transports = {name: network.transport(name) for name in parties}
    results: "queue.Queue[Outcome]" = queue.Queue()

    def body(name: str) -> None:
        try:
            outcome = party_main(name, parties, transports[name], config, fn, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - a bug here must still reach the caller
            outcome = Outcome(name, OWN, error=PartyError(name, RuntimeError(traceback.format_exc())))
            del exc
        results.put(outcome)

    def stop_everyone(failure: Outcome) -> None:
        # Parties blocked on a receive from a party that is not the culprit learn of the failure now.
        for transport in transports.values():
            transport.abort(failure.error.party, describe(failure.error.cause))

    threads = [threading.Thread(target=body, args=(name,), name=f"mpcnp-{name}", daemon=True)
               for name in parties]
    for thread in threads:
        thread.start()
    outcomes = collect(results, parties, config.timeout, on_failure=stop_everyone)
    for transport in transports.values():
        transport.close()
    return finish(outcomes)


# ---- entry point ------------------------------------------------------------------------------------
def run(fn: Callable, *args, parties=(), protocol: str = "securenn", backend: str = "threads",
        frac_bits: int | None = None, timeout: float = 60.0, network=None, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)`` on every party and return {party name: its return value}.

    See API.md "Running a program". Raises PartyError naming the failing party if ``fn`` raises on
    any party, a party dies, or one stays silent past ``timeout`` seconds. ``network``: a profile
    name ("lan", "wan", "NAME:BANDWIDTH:LATENCY") or an mpcnp.net.shaping.NetworkProfile; every
    message is then held for latency + size / bandwidth (emulation; counted bytes unchanged).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    config = Config(protocol=protocol, frac_bits=frac_bits, timeout=timeout, network=network)
    names = check_party_names(parties)
    from mpcnp.runtime import cluster_mode
    binding = cluster_mode.binding()
    if binding is not None:
        return cluster_mode.run_bound(binding, fn, args, kwargs, names, config)
    if backend == "threads":
        return run_threads(fn, args, kwargs, names, config)
    if backend == "processes":
        from mpcnp.runtime.processes import run_processes
        return run_processes(fn, args, kwargs, names, config)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
