"""The cluster file of a served model: the core parties (runtime.cluster's format) and the clients.

A service's cluster file is a cluster file (see mpcnp.runtime.cluster) with three optional top-level
entries besides the parties::

    {
      "server0":  {"address": "10.0.0.1:4000", "public_key": "...", "secret_key_file": "server0.key"},
      "server1":  {"address": "10.0.0.2:4000", "public_key": "..."},
      "producer": {"address": "10.0.0.3:4000", "public_key": "..."},
      "clients":  {"alice": {"public_key": "...", "secret_key_file": "alice.key"},
                   "bob":   {"public_key": "..."}},
      "client_dir": "clients",
      "client_ports": {"server0": 4001, "server1": 4001}
    }

- ``clients``: the clients the servers admit, by Curve public key (``secret_key_file`` is only read
  by that client itself, relative to the cluster file).
- ``client_dir``: a directory (relative to the cluster file) of more clients, one file ``NAME.pub``
  each holding ``{"public_key": "..."}``; the servers read it again whenever an unknown key knocks,
  so clients can be added without a restart. A file holding a secret key is refused.
- ``client_ports``: the port each server listens on for clients, on the host of its address;
  default: its party port + 1.

Serving needs Curve keys everywhere (clients are authenticated by theirs): an ``insecure`` cluster is
refused. Client names must differ from the parties' names.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from zmq.utils import z85

from mpcnp.net import check_party_name, key_bytes
from mpcnp.runtime.cluster import ClientKey, Cluster, PartyAddress, parse_cluster
from mpcnp.runtime.clusterfile import find_key_pair, free_ports, read_json, write_cluster
from mpcnp.runtime.context import CORE_PARTIES, SERVERS

__all__ = ["ServingCluster", "ClientKeys", "load", "parse", "write_local_cluster"]

log = logging.getLogger("mpcnp.serving")

_RESERVED = ("insecure", "clients", "client_dir", "client_ports")
_RELOAD_EVERY = 0.5  # seconds: an unknown key rereads the client directory at most this often


@dataclass(frozen=True)
class ServingCluster:
    """A validated service cluster file: ``cluster`` (the parties), ``clients`` by name, the client
    directory and each server's client endpoint."""

    cluster: Cluster
    clients: Mapping[str, ClientKey] = field(default_factory=dict)
    client_dir: str | None = None
    client_ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.cluster.source

    def core(self) -> Cluster:
        """The cluster of the three core parties only (the service's own channels)."""
        return Cluster({n: self.cluster.parties[n] for n in CORE_PARTIES}, False, self.source)

    def server(self, name: str) -> PartyAddress:
        if name not in SERVERS:
            raise ValueError(f"{name!r} is not a server (clients talk to {', '.join(SERVERS)})")
        return self.cluster.parties[name]

    def client_endpoint(self, server: str) -> str:
        """Where clients connect to ``server``: "tcp://HOST:PORT"."""
        entry = self.server(server)
        host = f"[{entry.host}]" if ":" in entry.host else entry.host
        return f"tcp://{host}:{self.client_ports[server]}"

    def client_bind(self, server: str) -> str:
        """The endpoint ``server`` binds for clients: its address's host when that is an IP address,
        else every interface."""
        entry = self.server(server)
        try:
            ip = ipaddress.ip_address(entry.host)
        except ValueError:
            return f"tcp://*:{self.client_ports[server]}"
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"tcp://{host}:{self.client_ports[server]}"

    def client_keys(self, name: str, key_file: str | os.PathLike | None = None) -> tuple[str, str]:
        """(public, secret) Z85 keys of client ``name``, from ``key_file``, else $MPCNP_SECRET_KEY,
        else the entry's ``secret_key_file``; ValueError if none is found or it is not the listed key."""
        entry = self.clients.get(name)
        return find_key_pair(f"client {name!r}", None if entry is None else entry.public_key, key_file,
                             None if entry is None else entry.secret_key_file, self.source)


def _check_client_name(name: Any, cluster: Cluster, source: str) -> str:
    try:
        check_party_name(name)
    except ValueError as exc:
        raise ValueError(f"{source}: client {exc}") from None
    if name in cluster.parties or name in CORE_PARTIES or name in _RESERVED:
        raise ValueError(f"{source}: client name {name!r} is taken by a party (or reserved)")
    return name


def parse(obj: Any, base_dir: str | os.PathLike = ".", source: str = "cluster") -> ServingCluster:
    """A ServingCluster from a decoded cluster file; ValueError naming the problem (the cluster
    file's own errors, an insecure cluster, a bad client entry, a client directory or port)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a JSON object mapping names to entries")
    obj = dict(obj)
    client_dir = obj.pop("client_dir", None)
    ports_obj = obj.pop("client_ports", {})
    cluster = parse_cluster(obj, base_dir=base_dir, source=source)
    if cluster.insecure or any(p.public_key is None for p in cluster.parties.values()):
        raise ValueError(f"{source}: serving needs a public_key for every party (clients are "
                         "authenticated by Curve keys): python -m mpcnp cluster writes them")
    base = Path(base_dir)
    clients = dict(cluster.clients)
    if client_dir is not None:
        if not isinstance(client_dir, str):
            raise ValueError(f"{source}: \"client_dir\" must be a directory name")
        client_dir = str(base / client_dir)
    if not isinstance(ports_obj, dict) or not set(ports_obj) <= set(SERVERS):
        raise ValueError(f"{source}: \"client_ports\" maps server0 and server1 to ports")
    ports = {}
    for server in SERVERS:
        port = ports_obj.get(server, cluster.parties[server].port + 1)
        if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535):
            raise ValueError(f"{source}: the client port of {server} must be in 1..65535, got {port!r}")
        ports[server] = port
    return ServingCluster(cluster, clients, client_dir, ports)


def load(path: str | os.PathLike) -> ServingCluster:
    """Read and validate a service cluster file (format in the module docstring)."""
    obj = read_json(path)
    return parse(obj, base_dir=Path(path).parent, source=str(path))


class ClientKeys(Mapping):
    """Raw 32-byte client public key -> client name, as the ZAP handler of a server asks: the cluster
    file's clients, then the client directory, reread (at most every 0.5 s) when a key is unknown.
    ``extra`` adds fixed entries (server0 admits server1's key for its notices). Thread-safe."""

    def __init__(self, serving: ServingCluster, extra: Mapping[str, str] | None = None):
        self._serving = serving
        self._fixed = {key_bytes(e.public_key, e.name): e.name for e in serving.clients.values()}
        for name, key in (extra or {}).items():
            self._fixed[key_bytes(key, name)] = name
        self._lock = threading.Lock()
        self._from_dir: dict[bytes, str] = {}
        self._read_at = -_RELOAD_EVERY
        self._reload()

    def _reload(self) -> None:
        directory = self._serving.client_dir
        self._read_at = time.monotonic()
        if directory is None:
            return
        found: dict[bytes, str] = {}
        try:
            paths = sorted(Path(directory).glob("*.pub"))
        except OSError as exc:
            log.warning("cannot read the client directory %s: %s", directory, exc)
            return
        for path in paths:
            name = path.stem
            try:
                _check_client_name(name, self._serving.cluster, str(directory))
                obj = json.loads(path.read_text())
                if not isinstance(obj, dict) or "secret_key" in obj or not isinstance(obj.get("public_key"), str):
                    raise ValueError("expected {\"public_key\": ...} and no secret key")
                key = key_bytes(obj["public_key"], str(path))
            except (OSError, ValueError) as exc:
                log.warning("client directory: ignoring %s: %s", path, exc)
                continue
            if key in self._fixed or key in found:
                log.warning("client directory: ignoring %s: its key is already another client's", path)
                continue
            found[key] = name
        self._from_dir = found

    def _lookup(self, key: bytes) -> str | None:
        with self._lock:
            name = self._fixed.get(key) or self._from_dir.get(key)
            if name is None and time.monotonic() - self._read_at >= _RELOAD_EVERY:
                self._reload()
                name = self._from_dir.get(key)
            return name

    def key_of(self, name: str) -> str | None:
        """The Z85 public key of client ``name`` (None if unknown)."""
        with self._lock:
            for key, owner in list(self._fixed.items()) + list(self._from_dir.items()):
                if owner == name:
                    return z85.encode(key).decode("ascii")
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._lookup(key) is not None

    def __getitem__(self, key: bytes) -> str:
        name = self._lookup(key)
        if name is None:
            raise KeyError(key)
        return name

    def __iter__(self):
        with self._lock:
            return iter(list(self._fixed) + list(self._from_dir))

    def __len__(self) -> int:
        with self._lock:
            return len(self._fixed) + len(self._from_dir)


def write_local_cluster(directory: str | os.PathLike, clients: Sequence[str] = (),
                        client_dir: bool = False) -> Path:
    """A service's cluster on this machine: ``directory``/cluster.json and a key file per party and
    client (runtime.clusterfile.write_cluster) with the three core parties and both servers' client
    sockets on free loopback ports, and ``directory``/clients as the client directory if
    ``client_dir``. Returns the cluster file's path."""
    directory = Path(directory)
    ports = free_ports(5)
    path = write_cluster(directory, {name: f"127.0.0.1:{port}" for name, port in zip(CORE_PARTIES, ports)},
                         tuple(clients))
    obj = json.loads(path.read_text())
    obj["client_ports"] = {"server0": ports[3], "server1": ports[4]}
    if client_dir:
        obj["client_dir"] = "clients"
        (directory / "clients").mkdir()
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path
