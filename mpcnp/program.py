"""``mp.run``: choose the run's settings (the protocol family and its defaults), then start the parties."""
from __future__ import annotations

import dataclasses
from typing import Callable

from mpcnp.protocols import families
from mpcnp.runtime import run_parties

__all__ = ["run"]


def run(fn: Callable, *args, parties=(), protocol: str = "securenn", backend: str = "threads",
        frac_bits: int | None = None, truncation: str | None = None, timeout: float = 60.0,
        network=None, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)`` on every party and return {party name: its return value}.

    ``parties``: the extra input/output parties beside server0, server1 and the producer.
    ``protocol``: "securenn" (exact comparisons) or "pond" (polynomial approximations).
    ``backend``: "threads" (in this process) or "processes" (one forked process per party);
    inside ``python -m mpcnp party`` the process is one party of a cluster instead.
    ``frac_bits``: fixed-point fractional bits, 8..24 (None: 16).
    ``truncation``: "exact" or "local" (None: the protocol's default).
    ``timeout``: seconds a party waits for a peer before the run fails.
    ``network``: emulate a network on every channel: "lan", "wan", "NAME:BANDWIDTH:LATENCY" or an
    mpcnp.net.shaping.NetworkProfile; each message is held for latency + size / bandwidth (counted
    bytes unchanged). None: the channels as they are.
    Raises PartyError naming the failing party if ``fn`` raises on any party, a party dies, or one
    stays silent past ``timeout``. See docs/api.md, "Running a program".
    """
    config = families.config(protocol, frac_bits=frac_bits, truncation=truncation, timeout=timeout)
    if network is not None:
        config = dataclasses.replace(config, network=network)
    return run_parties(fn, args, kwargs, parties=parties, backend=backend, config=config)
