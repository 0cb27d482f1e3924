"""One party's life in a run, the same on every backend, and how the caller learns how it ended.

``party_main`` runs the SPMD function as one party: wait for the channels, agree PRF keys, call the
function, meet the others at an end-of-run barrier. Failures follow one rule: the first party that
fails tells every other party (an abort notice on the channels); each party turns what it sees into
a ``PartyError`` naming the party at fault, and reports an ``Outcome``; the caller gathers the
outcomes and raises the root cause (``finish``). What a notice says of a failure in a party's own
code is its exception's type only (``context.public_reason``): the message stays on that party.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mpcnp.net import Transport
from mpcnp.net.shaping import shaped
from mpcnp.runtime.board import PartyStatus
from mpcnp.runtime.context import (Config, Context, PartyError, activate, barrier, deactivate, describe,
                                   public_reason)
from mpcnp.runtime.settings import agree_settings

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
               fn: Callable, args: tuple, kwargs: dict, status: PartyStatus | None = None,
               wait: float | None = None) -> Outcome:
    """Run ``fn`` as party ``name``: wait for the channels, agree keys, call fn, classify and
    broadcast any failure (a failure to connect included, so peers name the culprit, not us).

    ``status``: this party's row on a supervisor's board; ``wait``: how long a receive waits
    (Context). A failure relayed by an abort notice is not broadcast again: its sender told everyone.
    ``config.network``: every channel is shaped as that network (the caller still owns ``transport``).
    """
    if status is not None:
        status.running()
    inner, transport = transport, shaped(transport, config.network)
    ctx = Context(name, parties, transport, config, observer=status, wait=wait)
    token = activate(ctx)
    try:
        ctx.wait_ready()
        ctx.agree_keys()
        agree_settings(ctx)   # every party the same protocol, frac_bits, ...: PartyError naming the one that differs
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
        if exc.relayed:
            return Outcome(name, ABORTED, error=exc)
        transport.abort(exc.party, describe(exc.cause))
        return Outcome(name, OBSERVED, error=exc)
    except BaseException as exc:  # noqa: BLE001 - any failure of user code ends the run for everyone
        transport.abort(name, public_reason(name, exc))
        return Outcome(name, OWN, error=PartyError(name, exc))
    finally:
        deactivate(token)
        if status is not None:
            status.done()
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
