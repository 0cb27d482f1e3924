"""The cluster file: which parties run where, with which keys and limits; reading, checking, writing.

``python -m mpcnp cluster --out DIR NAME=HOST:PORT ... [--clients NAME ...]`` writes one
(``write_cluster``): ``DIR/cluster.json`` and a key file ``DIR/NAME.key`` (mode 0600) for every
party and client. Copy ``cluster.json`` to every host and each key file only to its own party's host.

Format (version 1, stable: the serving commands read the same file). A JSON object::

    {
      "server0":  {"address": "10.0.0.1:4000", "public_key": "<40-character Z85>",
                   "secret_key_file": "server0.key"},
      "server1":  {"address": "10.0.0.2:4000", "public_key": "...", "secret_key_file": "server1.key"},
      "producer": {"address": "10.0.0.3:4000", "public_key": "...", "secret_key_file": "producer.key"},
      "alice":    {"address": "alice.example.org:4000", "public_key": "...", "bind": "tcp://*:4000"},
      "clients":  {"carol": {"public_key": "...", "secret_key_file": "carol.key"}},
      "limits":   {"max_message_bytes": 1073741824, "window_bytes": 268435456}
    }

Every key but three names a party of ``mp.run``; the core parties server0, server1 and producer
must be present. Party fields: ``address`` (required) "HOST:PORT", HOST a DNS name, an IPv4 address
or an IPv6 address in brackets: where the others reach the party; ``public_key`` its Curve public
key; ``secret_key_file`` (optional) where its key file is on its own host, relative to the cluster
file; ``bind`` (optional) the ZeroMQ endpoint it binds, by default its address (give
``"tcp://*:PORT"`` where the address is not one of the host's own, behind NAT).
Reserved keys: ``clients`` (parties that connect to the servers but are not parties of ``mp.run``,
for serving: a public key and optionally a key file each), ``limits`` (the channels' largest
message and flow-control window in bytes, for every party alike: mpcnp.net.zmqnet), ``insecure``,
and a service's ``client_dir`` and ``client_ports`` (mpcnp.serving.config). Every party must have a ``public_key``: channels are then encrypted and each party
accepts only the listed keys. The plain form ``"server0": "10.0.0.1:4000"`` (or entries without
keys) means unencrypted, unauthenticated tcp; it is refused unless the file also holds
``"insecure": true``, and every party of such a cluster warns at start-up.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import zmq

from mpcnp.net import (CurveConfig, NetError, ZmqTransport, check_party_name, key_bytes, keygen,
                       read_key_file, write_key_file)
from mpcnp.net.zmqnet import MAX_MESSAGE_BYTES, WINDOW_BYTES
from mpcnp.runtime.context import CORE_PARTIES

SECRET_KEY_ENV = "MPCNP_SECRET_KEY"
RESERVED = ("clients", "limits", "insecure", "client_dir", "client_ports")
SERVING_FIELDS = ("client_dir", "client_ports")  # read by mpcnp.serving.config
_FIELDS = ("address", "public_key", "secret_key_file", "bind")
_CLIENT_FIELDS = ("public_key", "secret_key_file")
_LIMITS = {"max_message_bytes": MAX_MESSAGE_BYTES, "window_bytes": WINDOW_BYTES}
_ADDRESS = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)))"
                      r":(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class PartyAddress:
    """One party of the cluster file."""

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
        """The endpoint this party binds: ``bind``, else its own address."""
        return self.bind or self.endpoint


@dataclass(frozen=True)
class ClientKey:
    """One client of the cluster file: a name, its public key, where its key file is."""

    name: str
    public_key: str
    secret_key_file: str | None = None


@dataclass(frozen=True)
class Cluster:
    """A validated cluster file: ``parties`` by name, ``clients`` by name, the channel ``limits``
    (``max_message_bytes``, ``window_bytes``), and whether plain tcp was allowed."""

    parties: Mapping[str, PartyAddress]
    insecure: bool = False
    source: str = "cluster"
    clients: Mapping[str, ClientKey] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=lambda: dict(_LIMITS))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.parties)

    def endpoints(self) -> dict[str, str]:
        """{name: endpoint} of every party, for ZmqTransport.connect."""
        return {n: p.endpoint for n, p in self.parties.items()}

    def curve_config(self, name: str, key_file: str | os.PathLike | None = None) -> CurveConfig | None:
        """The CurveConfig of party ``name``, or None for an insecure cluster without keys.

        The secret key is looked up, in this order: ``key_file`` (the command line's ``--key``), the
        environment variable ``MPCNP_SECRET_KEY`` (the Z85 secret key itself), the entry's
        ``secret_key_file``. Raises ValueError for an unknown name, a missing secret key, one that
        does not match the listed public key, or a key file other users can read.
        """
        me = self.entry(name)
        if me.public_key is None:
            return None
        public, secret = find_key_pair(name, me.public_key, key_file, me.secret_key_file, self.source)
        peers = {n: p.public_key for n, p in self.parties.items() if n != name}
        return CurveConfig(public, secret, peers)

    def transport(self, name: str, key_file: str | os.PathLike | None = None, *,
                  curve: CurveConfig | None = None, **options: Any) -> ZmqTransport:
        """Bind party ``name`` and connect it to every other party, with the file's limits; options
        go to ZmqTransport. ``curve``: this party's ``curve_config``, if already read (else it is
        read from the key). Raises NetError when the bind fails, saying what to do about it."""
        me = self.entry(name)
        if curve is None:
            curve = self.curve_config(name, key_file)
        options.setdefault("max_message_bytes", self.limits["max_message_bytes"])
        options.setdefault("window", self.limits["window_bytes"])
        try:
            transport = ZmqTransport(name, me.bind_endpoint, curve=curve, insecure=curve is None,
                                     **options)
        except NetError as exc:
            hint = "" if me.bind else (f"; if {me.host} is not an address of this host (NAT), give "
                                       f"{name} a \"bind\": \"tcp://*:{me.port}\" in {self.source}")
            raise NetError(f"{exc} (the address of {name} in {self.source}){hint}") from None
        try:
            transport.connect(self.endpoints())
        except BaseException:
            transport.close()
            raise
        return transport

    def entry(self, name: str) -> PartyAddress:
        """The entry of party ``name``; ValueError naming the file's parties if it has none."""
        if name not in self.parties:
            raise ValueError(f"{name!r} is not a party of {self.source}: it lists {', '.join(self.parties)}")
        return self.parties[name]


def find_key_pair(name: str, listed: str | None, key_file: str | os.PathLike | None,
                  entry_key_file: str | None, source: str) -> tuple[str, str]:
    """(public, secret) Z85 keys of ``name`` (a party or a client), looked up in this order:
    ``key_file`` (a ``--key`` option), the environment variable ``MPCNP_SECRET_KEY`` (the Z85 secret
    key itself), ``entry_key_file`` (the entry's ``secret_key_file``). ValueError if none is found,
    a key file is malformed or readable by other users, or the key is not ``listed`` (the public key
    the cluster file gives; None: any)."""
    if key_file is not None:
        public, secret = read_key_file(key_file)
        where = str(key_file)
    elif os.environ.get(SECRET_KEY_ENV):
        secret = os.environ[SECRET_KEY_ENV].strip()
        key_bytes(secret, f"${SECRET_KEY_ENV}")
        public, where = zmq.curve_public(secret.encode()).decode(), f"${SECRET_KEY_ENV}"
    elif entry_key_file is not None:
        public, secret = read_key_file(entry_key_file)
        where = entry_key_file
    else:
        raise ValueError(f"no secret key for {name}: pass a key file, set ${SECRET_KEY_ENV}, "
                         f"or give {name} a secret_key_file in {source}")
    if listed is not None and public != listed:
        raise ValueError(f"the key in {where} does not match the public_key of {name} in {source}")
    return public, secret


def read_json(path: str | os.PathLike):
    """The JSON object in file ``path``; ValueError naming the file for invalid JSON or a key that
    appears twice in one object (json would keep the last silently). OSError if it cannot be read."""
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
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def load_cluster(path: str | os.PathLike) -> Cluster:
    """Read and validate a cluster file (format in the module docstring).

    Raises ValueError naming the file and the problem: invalid JSON, a duplicate party, an unknown
    field, a bad address or key, a missing core party, keys on some parties only, or no keys
    without ``"insecure": true``. OSError if the file cannot be read.
    """
    obj = read_json(path)
    return parse_cluster(obj, base_dir=Path(path).parent, source=str(path))


def parse_cluster(obj: Any, base_dir: str | os.PathLike = ".", source: str = "cluster") -> Cluster:
    """A Cluster from the decoded JSON object of a cluster file; errors as for load_cluster."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a JSON object mapping party names to addresses")
    obj = dict(obj)
    insecure = obj.pop("insecure", False)
    if not isinstance(insecure, bool):
        raise ValueError(f"{source}: \"insecure\" must be true or false")
    clients = _parse_clients(obj.pop("clients", {}), Path(base_dir), source)
    limits = _parse_limits(obj.pop("limits", {}), source)
    for field_name in SERVING_FIELDS:  # a service's settings (mpcnp.serving.config checks them)
        obj.pop(field_name, None)
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
    both = sorted(set(parties) & set(clients))
    if both:
        raise ValueError(f"{source}: {', '.join(both)} is both a party and a client")
    places: dict[tuple[str, int], str] = {}
    for p in parties.values():
        other = places.setdefault((p.host.lower(), p.port), p.name)
        if other != p.name:
            raise ValueError(f"{source}: {p.name} and {other} have the same address {p.host}:{p.port}")
    keyed = [n for n, p in parties.items() if p.public_key is not None]
    if keyed and len(keyed) != len(parties):
        unkeyed = [n for n in parties if n not in keyed]
        raise ValueError(f"{source}: {', '.join(unkeyed)} ha{'ve' if len(unkeyed) > 1 else 's'} no "
                         "public_key: give every party one (python -m mpcnp cluster writes them)")
    if not keyed and not insecure:
        raise ValueError(f"{source}: no public keys, so the channels would be unencrypted and "
                         "unauthenticated; add a public_key per party (python -m mpcnp cluster "
                         "writes them), or set \"insecure\": true on a network you trust")
    owners: dict[str, str] = {}
    for n, key in [(n, parties[n].public_key) for n in keyed] + [(n, c.public_key) for n, c in clients.items()]:
        other = owners.setdefault(key, n)
        if other != n:
            raise ValueError(f"{source}: {n} and {other} have the same public_key")
    return Cluster(parties, insecure, source, clients, limits)


def _check_key(where: str, entry: dict, required: bool) -> str | None:
    key = entry.get("public_key")
    if key is None:
        if required:
            raise ValueError(f"{where}: no public_key")
        return None
    if not isinstance(key, str):
        raise ValueError(f"{where}: public_key must be a string")
    try:
        key_bytes(key, "public_key")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return key


def _key_file(where: str, entry: dict, base_dir: Path) -> str | None:
    key_file = entry.get("secret_key_file")
    if key_file is not None and not isinstance(key_file, str):
        raise ValueError(f"{where}: secret_key_file must be a string")
    return None if key_file is None else str(base_dir / key_file)


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
    bind = entry.get("bind")
    if bind is not None and (not isinstance(bind, str) or not bind.startswith(("tcp://", "ipc://"))):
        raise ValueError(f"{where}: bind must be a tcp:// or ipc:// endpoint, got {bind!r}")
    return PartyAddress(name, match["ip6"] or match["host"], port, _check_key(where, entry, False),
                        _key_file(where, entry, base_dir), bind)


def _parse_clients(obj: Any, base_dir: Path, source: str) -> dict[str, ClientKey]:
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: \"clients\" must map client names to their keys")
    clients = {}
    for name, entry in obj.items():
        where = f"{source}: client {name}"
        try:
            check_party_name(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with a public_key")
        unknown = [k for k in entry if k not in _CLIENT_FIELDS]
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(_CLIENT_FIELDS)})")
        clients[name] = ClientKey(name, _check_key(where, entry, True), _key_file(where, entry, base_dir))
    return clients


def _parse_limits(obj: Any, source: str) -> dict[str, int]:
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: \"limits\" must be an object")
    unknown = [k for k in obj if k not in _LIMITS]
    if unknown:
        raise ValueError(f"{source}: unknown limit {unknown[0]!r} (allowed: {', '.join(_LIMITS)})")
    limits = dict(_LIMITS)
    for name, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
            raise ValueError(f"{source}: limit {name} must be a whole number of bytes, at least 1024")
        limits[name] = value
    return limits


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different tcp ports the kernel just gave out as free on ``host`` (each bound to port 0,
    then released): for clusters on one machine. Another program may take one before it is bound
    again; a bind failure then says so."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_cluster(directory: str | os.PathLike, parties: Mapping[str, str],
                  clients: tuple[str, ...] = ()) -> Path:
    """Write ``directory``/cluster.json for ``parties`` ({name: "HOST:PORT"}) and ``clients``, with a
    fresh key file ``directory``/NAME.key (mode 0600) for each; returns the cluster file's path.

    Checks everything before writing anything; raises ValueError for a bad name or address, a
    missing core party or a name given twice, FileExistsError rather than overwrite a file.
    """
    directory = Path(directory)
    config = directory / "cluster.json"
    names = list(parties) + list(clients)
    if len(set(names)) != len(names):
        raise ValueError(f"a name appears twice among {', '.join(names)}")
    for name in names:
        if name in RESERVED:
            raise ValueError(f"{name!r} is reserved in the cluster file and cannot name a party")
        if "/" in name or name.startswith("."):
            raise ValueError(f"{name!r} cannot name a key file")
    keys = {name: keygen() for name in names}
    obj: dict[str, Any] = {name: {"address": address, "public_key": keys[name][0],
                                  "secret_key_file": f"{name}.key"} for name, address in parties.items()}
    if clients:
        obj["clients"] = {name: {"public_key": keys[name][0], "secret_key_file": f"{name}.key"}
                          for name in clients}
    parse_cluster(obj, base_dir=directory, source=str(config))  # every check, before any file
    existing = [p for p in [config] + [directory / f"{n}.key" for n in names] if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists: choose a new directory (keys are never overwritten)")
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_key_file(directory / f"{name}.key", *keys[name])
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    return config


__all__ = ["SECRET_KEY_ENV", "RESERVED", "PartyAddress", "ClientKey", "Cluster", "load_cluster", "parse_cluster",
           "read_json",
           "write_cluster", "find_key_pair", "free_ports"]
