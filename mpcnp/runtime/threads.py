"""The threads backend, the embedded default: each party a thread of the caller's process."""
from __future__ import annotations

import queue
import threading
import traceback
from typing import Callable

from mpcnp.net import MemoryNetwork
from mpcnp.runtime.context import Config, PartyError, describe
from mpcnp.runtime.lifecycle import OWN, Outcome, collect, finish, party_main


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
