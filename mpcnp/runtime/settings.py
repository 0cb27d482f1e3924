"""The start-up check that every party of a run uses the same settings.

Right after the PRF keys, every party sends the run's settings as it sees them (the protocol,
frac_bits, truncation, validation, the party list and the installed package's version) to every
other party and compares. All parties then hold the same table and reach the same verdict: a
setting on which they differ is a ``PartyError`` naming it, the values and who holds which, blaming
the first party that departs from the most common value. Cost: one json message of about 150 bytes
from each party to each other, one round, before the counters start (not in ``mp.stats``).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from importlib import metadata

from mpcnp.runtime.context import Context, PartyError

__all__ = ["settings_of", "agree_settings", "package_version"]

# Settings a party may choose for itself: how long it waits for a peer, the network it emulates.
LOCAL = ("timeout", "network")


def package_version() -> str:
    """The installed mpcnp distribution's version, or a note that it is not installed."""
    try:
        return metadata.version("mpcnp")
    except metadata.PackageNotFoundError:
        return "not installed"


def settings_of(ctx: Context) -> dict:
    """This party's view of the settings every party must share (json-ready): the package version,
    the party list and every field of the run's Config but the local ones."""
    fields = {k: v for k, v in dataclasses.asdict(ctx.config).items() if k not in LOCAL}
    return {"version": package_version(), "parties": list(ctx.parties), **fields}


def agree_settings(ctx: Context) -> None:
    """Exchange the settings with every other party; PartyError (the same on every party) if any
    setting differs or a peer sends something that is not a settings table."""
    mine = settings_of(ctx)
    peers = [p for p in ctx.parties if p != ctx.name]
    for peer in peers:
        ctx.send_json(peer, mine)
    table = {ctx.name: mine}
    for peer in peers:
        theirs = ctx.recv_json(peer)
        if not isinstance(theirs, dict):
            raise PartyError(peer, f"sent {theirs!r} where the run's settings were expected")
        table[peer] = theirs
    names = list(mine) + sorted({k for settings in table.values() for k in settings} - set(mine))
    for name in names:   # in this order: the first that differs is the one reported
        values = {party: table[party].get(name) for party in ctx.parties}
        if len({repr(v) for v in values.values()}) == 1:
            continue
        counts = Counter(repr(v) for v in values.values())
        # the most common value (ties: the one of the party listed first) is taken as the run's
        first = {}
        for party, value in values.items():
            first.setdefault(repr(value), party)
        common = max(counts, key=lambda v: (counts[v], -list(ctx.parties).index(first[v])))
        odd = [party for party in ctx.parties if repr(values[party]) != common]
        holders = "; ".join(f"{value} on {', '.join(p for p in ctx.parties if repr(values[p]) == value)}"
                            for value in counts)
        raise PartyError(odd[0], f"the parties run with different settings: {name} differs ({holders}); "
                                 "every party must call mp.run with the same protocol, frac_bits, truncation "
                                 "and validate, and the same mpcnp version")
