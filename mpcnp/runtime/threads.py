"""The threads backend, the embedded default: each party a thread of the caller's process.

The caller's thread supervises the party threads as it supervises processes (supervisor.py): it
reads their reports from a queue and their waits from a status board, and never waits on a party.
When the run ends in a failure, every party still waiting is woken (``MemoryTransport.halt``) and
given ``FAILURE_GRACE`` to finish; a party stuck in its own code cannot be stopped (a thread cannot
be killed): its daemon thread is left behind, its channels closed, and ``run`` returns anyway.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import Callable

from mpcnp.net import MemoryNetwork
from mpcnp.runtime.board import Board
from mpcnp.runtime.context import Config, PartyError, describe, public_reason
from mpcnp.runtime.lifecycle import OWN, Outcome, fill_missing, finish, party_main
from mpcnp.runtime.supervisor import FAILURE_GRACE, MARGIN, Supervisor, supervise


def run_threads(fn: Callable, args: tuple, kwargs: dict, parties: tuple[str, ...], config: Config) -> dict:
    """Each party a daemon thread with in-memory channels (the embedded default)."""
    network = MemoryNetwork(parties)
    transports = {name: network.transport(name) for name in parties}
    board = Board(parties, shared=False)
    results: "queue.Queue[Outcome]" = queue.Queue()
    wait = None if config.wait is None else config.wait + MARGIN

    def body(name: str) -> None:
        try:
            outcome = party_main(name, parties, transports[name], config, fn, args, kwargs,
                                 status=board.status(name), wait=wait)
        except BaseException as exc:  # noqa: BLE001 - a bug here must still reach the caller
            outcome = Outcome(name, OWN, error=PartyError(name, RuntimeError(traceback.format_exc())))
            del exc
        results.put(outcome)

    def reports(wait_for: float) -> list[Outcome]:
        try:
            arrived = [results.get(timeout=wait_for)]
        except queue.Empty:
            return []
        while True:
            try:
                arrived.append(results.get_nowait())
            except queue.Empty:
                return arrived

    threads = [threading.Thread(target=body, args=(name,), name=f"mpcnp-{name}", daemon=True)
               for name in parties]
    for thread in threads:
        thread.start()
    supervisor = Supervisor(board, config.timeout, beats=False)
    try:
        outcomes, verdict = supervise(reports, parties, supervisor)
        if verdict is not None or len(outcomes) < len(parties):
            # wake every party still waiting, and give them a moment to finish
            failure = verdict or next(o for o in outcomes.values() if o.error is not None)
            error = failure.error
            reason = (public_reason(error.party, error.cause) if failure.kind == OWN
                      else describe(error.cause))
            for transport in transports.values():
                transport.halt(error.party, reason)
            deadline = time.monotonic() + FAILURE_GRACE
            while len(outcomes) < len(parties) and time.monotonic() < deadline:
                for outcome in reports(min(0.05, max(0.0, deadline - time.monotonic()))):
                    outcomes.setdefault(outcome.party, outcome)
    finally:
        for transport in transports.values():
            transport.close()
    if verdict is not None:
        raise verdict.error.with_traceback(None)
    return finish(fill_missing(outcomes, parties, config.timeout))
