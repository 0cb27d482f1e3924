"""Cluster mode: this process as one party of a cluster file (clusterfile.py).

``python -m mpcnp party --config cluster.json --name NAME script.py ARGS`` binds the process to one
party of the cluster file (``bind``), then runs the script; ``mp.run`` inside it executes ``fn``
only as that party, over CurveZMQ channels to the hosts of the cluster file (``run_bound``). A
process is one party, so the binding is process-wide.

What ``mp.run`` returns there: a dict with every party of the run as a key, this party's return
value under its own name and None under the others (whose values stay on their hosts), so that a
program written for one machine (``result["carol"]``) runs unchanged on every host. What it says:
while it waits for its peers at start-up it tells stderr whom it waits for, every few seconds; an
insecure cluster (plain tcp) warns on every party when it binds. How it fails: always PartyError,
naming the party at fault as this party sees it (runtime/context.py): its own bind failing, a
peer silent, lost, refusing its key or sending garbage, or a peer's abort notice.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

from mpcnp.net import CurveConfig, NetError, Transport, WaitObserver
from mpcnp.runtime.clusterfile import (RESERVED, SECRET_KEY_ENV, ClientKey, Cluster, PartyAddress,
                                       load_cluster, parse_cluster, write_cluster)
from mpcnp.runtime.context import Config, PartyError
from mpcnp.runtime.lifecycle import OK, party_main

FIRST_NOTICE = 1.0    # seconds of waiting for peers before a party says whom it waits for
NOTICE_EVERY = 5.0    # and then how often it says it again


def say(name: str, text: str) -> None:
    """One line on stderr from party ``name``."""
    print(f"mpcnp {name}: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Binding:
    """This process runs party ``name`` of ``cluster``, with its Curve secret key from ``key_file``
    (or the other places ``Cluster.curve_config`` lists)."""

    cluster: Cluster
    name: str
    key_file: str | os.PathLike | None = None
    curve: CurveConfig | None = None  # read from the key once, at bind


_binding: Binding | None = None


def bind(cluster: Cluster, name: str, key_file: str | os.PathLike | None = None) -> Binding:
    """Make every later ``mp.run`` of this process run as party ``name`` of ``cluster``.

    Fails now, before any script runs, on an unknown name or a missing, wrong or exposed key (a
    ValueError naming it); warns on stderr when the cluster is insecure.
    """
    global _binding
    _binding = Binding(cluster, name, key_file, cluster.curve_config(name, key_file))
    if _binding.curve is None:
        say(name, f"WARNING: {cluster.source} is insecure (\"insecure\": true, no keys): the channels "
                  "are neither encrypted nor authenticated, so PRF keys, shares and results cross the "
                  "network in the clear and anyone who reaches the ports can pose as a party")
    return _binding


def unbind() -> None:
    global _binding
    _binding = None


def binding() -> Binding | None:
    """The binding of this process, or None when it is not a cluster party."""
    return _binding


class StartupReporter(WaitObserver):
    """Says on stderr whom party ``name`` is waiting for while its channels come up (not after)."""

    def __init__(self, name: str, transport: Transport) -> None:
        self.name, self.transport = name, transport
        self.started = time.monotonic()
        self.last: float | None = None
        self.active = True

    def beat(self, peer: str) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if now - self.started < FIRST_NOTICE or (self.last is not None and now - self.last < NOTICE_EVERY):
            return
        self.last = now
        missing = getattr(self.transport, "missing", lambda: [peer])()
        where = getattr(self.transport, "address_of", lambda p: "?")
        listed = ", ".join(f"{p} ({where(p)})" for p in missing) or peer
        say(self.name, f"waiting for {listed} to come up ({now - self.started:.0f} s)")

    def resumed(self) -> None:
        if self.active and self.last is not None:
            say(self.name, "every party is up")
        self.active = False


def run_bound(binding: Binding, fn: Callable, args: tuple, kwargs: dict,
              names: tuple[str, ...], config: Config) -> dict:
    """Run ``fn`` as the bound party; the run's parties must be exactly those of the cluster file.
    Returns {every party: None} with this party's value under its name; raises PartyError."""
    listed = set(binding.cluster.names)
    if set(names) != listed:
        missing, extra = sorted(listed - set(names)), sorted(set(names) - listed)
        raise ValueError(f"the parties of mp.run must be those of {binding.cluster.source}: "
                         + "; ".join(part for part in (
                             f"mp.run lacks {', '.join(missing)}" if missing else "",
                             f"the cluster lacks {', '.join(extra)}" if extra else "") if part))
    me = binding.name
    try:
        transport = binding.cluster.transport(me, binding.key_file, curve=binding.curve,
                                              linger=min(config.timeout, 10.0))
    except (NetError, ValueError) as exc:
        raise PartyError(me, exc) from None
    outcome = None
    try:
        transport.send_timeout = config.wait
        transport.observer = StartupReporter(me, transport)
        outcome = party_main(me, names, transport, config, fn, args, kwargs)
    finally:
        # after a failure, unsent messages (abort notices to a dead peer) must not delay the exit
        transport.close(linger=None if outcome is not None and outcome.kind == OK else 0.5)
    if outcome.kind != OK:
        raise outcome.error.with_traceback(None)
    return {name: outcome.value if name == me else None for name in names}


__all__ = ["SECRET_KEY_ENV", "RESERVED", "PartyAddress", "ClientKey", "Cluster", "load_cluster",
           "parse_cluster", "write_cluster", "Binding", "bind", "unbind", "binding", "run_bound",
           "StartupReporter"]
