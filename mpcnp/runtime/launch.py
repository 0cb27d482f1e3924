"""Starting the parties of a run: on the backend asked for, or as the one party of a cluster this
process is bound to (runtime.cluster). ``mp.run`` (mpcnp.program) chooses the settings, then calls
``run_parties``."""
from __future__ import annotations

from typing import Callable

from mpcnp.runtime import cluster
from mpcnp.runtime.context import Config, check_party_names
from mpcnp.runtime.processes import run_processes
from mpcnp.runtime.threads import run_threads

BACKENDS = {"threads": run_threads, "processes": run_processes}


def run_parties(fn: Callable, args: tuple, kwargs: dict, parties=(), backend: str = "threads",
                config: Config | None = None) -> dict:
    """Run ``fn(*args, **kwargs)`` on every party (the core parties and ``parties``) with ``config``
    and return {party name: its return value}; PartyError naming the failing party if ``fn`` raises
    on any party, a party dies, or one stays silent past the configured timeout."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    config = Config() if config is None else config
    names = check_party_names(parties)
    bound = cluster.binding()
    if bound is not None:
        return cluster.run_bound(bound, fn, args, kwargs, names, config)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](fn, args, kwargs, names, config)
