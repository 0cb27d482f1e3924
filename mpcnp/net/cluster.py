"""The cluster file (which party listens where, with which Curve key) and Curve key files.

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
the listed keys. The plain form of API.md, ``"server0": "10.0.0.1:4000"`` (or entries without keys),
means unencrypted, unauthenticated tcp; it is refused unless the file also holds
``"insecure": true`` (so ``insecure`` cannot be a party name). The core parties server0, server1 and
producer must be present.

A party's secret key is looked up, in this order: the ``key_file`` argument (the command line's key
option), the environment variable ``MPCNP_SECRET_KEY`` (the Z85 secret key itself), the entry's
``secret_key_file``. It must match the entry's ``public_key``.

Key file: JSON ``{"public_key": "<Z85>", "secret_key": "<Z85>"}``, created with mode 0600.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import zmq

from mpcnp.net.base import check_party_name
from mpcnp.net.auth import CurveConfig, key_bytes
from mpcnp.net.zmqnet import ZmqTransport

log = logging.getLogger("mpcnp.net")

CORE_PARTIES = ("server0", "server1", "producer")
SECRET_KEY_ENV = "MPCNP_SECRET_KEY"
_FIELDS = ("address", "public_key", "secret_key_file", "bind")
_ADDRESS = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)))"
                      r":(?P<port>[0-9]{1,5})$")


def keygen() -> tuple[str, str]:
    """A fresh Curve key pair as (public_z85, secret_z85), 40 characters each."""
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def write_key_file(path: str | os.PathLike, public: str | None = None,
                   secret: str | None = None) -> str:
    """Write a key file (a new pair unless both keys are given) readable by its owner only.

    Returns the public key, to be put in the cluster file. Raises FileExistsError rather than
    overwrite a key, ValueError for a mismatched pair.
    """
    if public is None or secret is None:
        public, secret = keygen()
    _check_pair(public, secret, str(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"public_key": public, "secret_key": secret}, f, indent=2)
        f.write("\n")
    return public


def read_key_file(path: str | os.PathLike) -> tuple[str, str]:
    """(public_z85, secret_z85) from a key file; ValueError naming the file if it is malformed.

    Logs a warning when the file is readable by group or others.
    """
    try:
        with open(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"key file {path}: not JSON ({exc})") from None
    if not isinstance(obj, dict) or set(obj) != {"public_key", "secret_key"}:
        raise ValueError(f"key file {path}: expected exactly the fields public_key and secret_key")
    if os.stat(path).st_mode & 0o077:
        log.warning("key file %s is readable by other users: chmod 600 it", path)
    _check_pair(obj["public_key"], obj["secret_key"], str(path))
    return obj["public_key"], obj["secret_key"]


def _check_pair(public: Any, secret: Any, where: str) -> None:
    if not isinstance(public, str) or not isinstance(secret, str):
        raise ValueError(f"{where}: keys must be Z85 strings")
    key_bytes(public, f"{where}: public_key")
    key_bytes(secret, f"{where}: secret_key")
    if zmq.curve_public(secret.encode()).decode() != public:
        raise ValueError(f"{where}: the secret key does not belong to the public key {public}")


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
