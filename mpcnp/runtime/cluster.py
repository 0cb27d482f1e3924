"""Cluster mode: the cluster file, and binding this process to one party of it.

``python -m mpcnp party --config cluster.json --name NAME script.py ARGS`` binds the process to one
party of the cluster file (``bind``), then runs the script; ``mp.run`` inside it executes ``fn``
only as that party, over CurveZMQ channels to the hosts of the cluster file (``run_bound``), and
returns ``{that name: result}``. A process is one party, so the binding is process-wide.

Cluster file: a JSON object with one entry per party::

    {
      "server0":  {"address": "10.0.0.1:4000", "public_key": "<40-character Z85>"},
      "server1":  {"address": "10.0.0.2:4000", "public_key": "...", "secret_key_file": "s1.key"},
      "producer": {"address": "10.0.0.3:4000", "public_key": "..."},
      "client":   {"address": "client.example.org:4000", "public_key": "..."}
    }

Entry fields: ``address`` (required) "HOST:PORT", HOST a DNS name, an IPv4 address or an IPv6
address in brackets; ``public_key`` the party's Curve public key (from ``python -m mpcnp keygen``);
``secret_key_file`` (optional) where that party's key file is on its own host, relative to the
cluster file; ``bind`` (optional) the ZeroMQ endpoint that party binds, default "tcp://*:PORT".
Every party must have a ``public_key``: channels are then encrypted and each party accepts only
the listed keys. The plain form ``"server0": "10.0.0.1:4000"`` (or entries without keys) means
unencrypted, unauthenticated tcp; it is refused unless the file also holds ``"insecure": true``
(so ``insecure`` cannot be a party name). The core parties server0, server1 and producer must be
present.

A party's secret key is looked up, in this order: the ``key_file`` argument (the command line's key
option), the environment variable ``MPCNP_SECRET_KEY`` (the Z85 secret key itself), the entry's
``secret_key_file``. It must match the entry's ``public_key``. Key files: ``mpcnp.net.keys``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import zmq

from mpcnp.net import CurveConfig, ZmqTransport, check_party_name, key_bytes, read_key_file
from mpcnp.runtime.context import CORE_PARTIES, Config
from mpcnp.runtime.lifecycle import OK, party_main

SECRET_KEY_ENV = "MPCNP_SECRET_KEY"
_FIELDS = ("address", "public_key", "secret_key_file", "bind")
_ADDRESS = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)))"
                      r":(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class PartyAddress:
    """One entry of the cluster file."""

    name: str
    host: str
    port: int
    public_key: str | None = None
    secret_key_file: str | None = None
    bind: str | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint the other parties connect to, e.g. "tcp://10.0.0.1:4000"."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def bind_endpoint(self) -> str:
        """The endpoint this party binds (``bind``, else every interface at ``port``)."""
        if self.bind:
            return self.bind
        return f"tcp://[::]:{self.port}" if ":" in self.host else f"tcp://*:{self.port}"


@dataclass(frozen=True)
class Cluster:
    """A validated cluster file: ``parties`` by name, and whether plain tcp was allowed."""

    parties: Mapping[str, PartyAddress]
    insecure: bool = False
    source: str = "cluster"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.parties)

    def endpoints(self) -> dict[str, str]:
        """{name: endpoint} of every party, for ZmqTransport.connect."""
        return {n: p.endpoint for n, p in self.parties.items()}

    def curve_config(self, name: str, key_file: str | os.PathLike | None = None) -> CurveConfig | None:
        """The CurveConfig of party ``name``, or None for an insecure cluster without keys.

        Raises ValueError for an unknown name, a missing secret key (see the module docstring for
        where it is looked up) or one that does not match the listed public key.
        """
        me = self._entry(name)
        if me.public_key is None:
            return None
        if key_file is not None:
            public, secret = read_key_file(key_file)
            where = str(key_file)
        elif os.environ.get(SECRET_KEY_ENV):
            secret = os.environ[SECRET_KEY_ENV].strip()
            key_bytes(secret, f"${SECRET_KEY_ENV}")
            public, where = zmq.curve_public(secret.encode()).decode(), f"${SECRET_KEY_ENV}"
        elif me.secret_key_file is not None:
            public, secret = read_key_file(me.secret_key_file)
            where = me.secret_key_file
        else:
            raise ValueError(f"no secret key for {name}: pass a key file, set ${SECRET_KEY_ENV}, "
                             f"or give {name} a secret_key_file in {self.source}")
        if public != me.public_key:
            raise ValueError(f"the key in {where} does not match the public_key of {name} "
                             f"in {self.source}")
        peers = {n: p.public_key for n, p in self.parties.items() if n != name}
        return CurveConfig(public, secret, peers)

    def transport(self, name: str, key_file: str | os.PathLike | None = None, *,
                  curve: CurveConfig | None = None, **options: Any) -> ZmqTransport:
        """Bind party ``name`` and connect it to every other party; options go to ZmqTransport.
        ``curve``: this party's ``curve_config``, if already read (else it is read from the key)."""
        me = self._entry(name)
        if curve is None:
            curve = self.curve_config(name, key_file)
        transport = ZmqTransport(name, me.bind_endpoint, curve=curve, insecure=curve is None,
                                 **options)
        try:
            transport.connect(self.endpoints())
        except BaseException:
            transport.close()
            raise
        return transport

    def _entry(self, name: str) -> PartyAddress:
        if name not in self.parties:
            raise ValueError(f"{name!r} is not in {self.source}: it lists {', '.join(self.parties)}")
        return self.parties[name]


def load_cluster(path: str | os.PathLike) -> Cluster:
    """Read and validate a cluster file (format in the module docstring).

    Raises ValueError naming the file and the problem: invalid JSON, a duplicate party, an unknown
    field, a bad address or key, a missing core party, keys on some parties only, or no keys
    without ``"insecure": true``. OSError if the file cannot be read.
    """
    def no_duplicates(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"{path}: {key!r} appears twice")
            seen[key] = value
        return seen

    with open(path) as f:
        text = f.read()
    try:
        obj = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return parse_cluster(obj, base_dir=Path(path).parent, source=str(path))


def parse_cluster(obj: Any, base_dir: str | os.PathLike = ".", source: str = "cluster") -> Cluster:
    """A Cluster from the decoded JSON object of a cluster file; errors as for load_cluster."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a JSON object mapping party names to addresses")
    obj = dict(obj)
    insecure = obj.pop("insecure", False)
    if not isinstance(insecure, bool):
        raise ValueError(f"{source}: \"insecure\" must be true or false")
    parties: dict[str, PartyAddress] = {}
    for name, entry in obj.items():
        try:
            check_party_name(name)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        parties[name] = _parse_entry(name, entry, Path(base_dir), source)
    missing = [n for n in CORE_PARTIES if n not in parties]
    if missing:
        raise ValueError(f"{source}: missing the core part{'ies' if len(missing) > 1 else 'y'} "
                         f"{', '.join(missing)}")
    places: dict[tuple[str, int], str] = {}
    for p in parties.values():
        other = places.setdefault((p.host.lower(), p.port), p.name)
        if other != p.name:
            raise ValueError(f"{source}: {p.name} and {other} have the same address {p.host}:{p.port}")
    keyed = [n for n, p in parties.items() if p.public_key is not None]
    if keyed and len(keyed) != len(parties):
        unkeyed = [n for n in parties if n not in keyed]
        raise ValueError(f"{source}: {', '.join(unkeyed)} ha{'ve' if len(unkeyed) > 1 else 's'} no "
                         "public_key: give every party one (python -m mpcnp keygen)")
    if not keyed and not insecure:
        raise ValueError(f"{source}: no public keys, so the channels would be unencrypted and "
                         "unauthenticated; add a public_key per party (python -m mpcnp keygen), "
                         "or set \"insecure\": true on a network you trust")
    owners: dict[str, str] = {}
    for n in keyed:
        other = owners.setdefault(parties[n].public_key, n)
        if other != n:
            raise ValueError(f"{source}: {n} and {other} have the same public_key")
    return Cluster(parties, insecure, source)


def _parse_entry(name: str, entry: Any, base_dir: Path, source: str) -> PartyAddress:
    where = f"{source}: {name}"
    if isinstance(entry, str):
        entry = {"address": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected \"HOST:PORT\" or an object with an address")
    unknown = [k for k in entry if k not in _FIELDS]
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
    if "address" not in entry:
        raise ValueError(f"{where}: no address")
    address = entry["address"]
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if match is None:
        raise ValueError(f"{where}: bad address {address!r}, expected HOST:PORT (IPv6 as [ADDR]:PORT)")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{where}: port {port} out of range 1..65535")
    for field in ("public_key", "secret_key_file", "bind"):
        if field in entry and not isinstance(entry[field], str):
            raise ValueError(f"{where}: {field} must be a string")
    public_key = entry.get("public_key")
    if public_key is not None:
        try:
            key_bytes(public_key, "public_key")
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    key_file = entry.get("secret_key_file")
    if key_file is not None:
        key_file = str(base_dir / key_file)
    bind = entry.get("bind")
    if bind is not None and not bind.startswith(("tcp://", "ipc://")):
        raise ValueError(f"{where}: bind must be a tcp:// or ipc:// endpoint, got {bind!r}")
    return PartyAddress(name, match["ip6"] or match["host"], port, public_key, key_file, bind)


# ---- this process as one party of a cluster -----------------------------------------------------------
@dataclass(frozen=True)
class Binding:
    """This process runs party ``name`` of ``cluster``, with its Curve secret key from ``key_file``
    (or the other places the module docstring lists)."""

    cluster: Cluster
    name: str
    key_file: str | os.PathLike | None = None
    curve: CurveConfig | None = None  # read from the key once, at bind


_binding: Binding | None = None


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
    """The binding of this process, or None when it is not a cluster party."""
    return _binding


def run_bound(binding: Binding, fn: Callable, args: tuple, kwargs: dict,
              names: tuple[str, ...], config: Config) -> dict:
    """Run ``fn`` as the bound party; the run's parties must be exactly those of the cluster file."""
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


__all__ = ["SECRET_KEY_ENV", "PartyAddress", "Cluster", "load_cluster", "parse_cluster",
           "Binding", "bind", "unbind", "binding", "run_bound"]
