"""One party of a cluster: ``python -m mpcnp party --config cluster.json --name NAME script.py ARGS``.

The command binds this process to one party of the cluster file (``bind``), then runs the script;
``mp.run`` inside it executes ``fn`` only as that party, over CurveZMQ channels to the hosts of the
cluster file, and returns ``{that name: result}``. A process is one party, so the binding is
process-wide.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from mpcnp.net import Cluster, CurveConfig, NetError
from mpcnp.runtime.context import Config, PartyError

_binding: "Binding | None" = None


@dataclass(frozen=True)
class Binding:
    """This process runs party ``name`` of ``cluster``, with its Curve secret key from ``key_file``
    (or the other places cluster.py documents)."""

    cluster: Cluster
    name: str
    key_file: str | os.PathLike | None = None
    curve: CurveConfig | None = None  # read from the key once, at bind


def bind(cluster: Cluster, name: str, key_file: str | os.PathLike | None = None) -> Binding:
    """Make every later ``mp.run`` of this process run as party ``name`` of ``cluster``."""
    global _binding
    # fails now, before the script runs, on an unknown name or a missing or wrong key
    _binding = Binding(cluster, name, key_file, cluster.curve_config(name, key_file))
    return _binding


def unbind() -> None:
    global _binding
    _binding = None


def binding() -> Binding | None:
    return _binding


def run_bound(binding: Binding, fn: Callable, args: tuple, kwargs: dict,
              names: tuple[str, ...], config: Config) -> dict:
    """Run ``fn`` as the bound party; the run's parties must be exactly those of the cluster file."""
    from mpcnp.runtime.launch import OK, party_main

    listed = set(binding.cluster.names)
    if set(names) != listed:
        missing, extra = sorted(listed - set(names)), sorted(set(names) - listed)
        raise ValueError(f"the parties of mp.run must be those of {binding.cluster.source}: "
                         + "; ".join(part for part in (
                             f"mp.run lacks {', '.join(missing)}" if missing else "",
                             f"the cluster lacks {', '.join(extra)}" if extra else "") if part))
    transport = binding.cluster.transport(binding.name, binding.key_file, curve=binding.curve)
    try:
        outcome = party_main(binding.name, names, transport, config, fn, args, kwargs)
    finally:
        transport.close()
    if outcome.kind != OK:
        raise outcome.error
    return {binding.name: outcome.value}


__all__ = ["Binding", "bind", "unbind", "binding", "run_bound", "NetError"]
