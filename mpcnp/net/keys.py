"""Curve keys: key pairs, key files and a party's CurveConfig (its pair and its peers' public keys).

Key file: JSON ``{"public_key": "<Z85>", "secret_key": "<Z85>"}``, created with mode 0600 and never
overwritten. Keys are Z85 text of 40 characters (32 raw bytes), as ZeroMQ's CURVE takes them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import zmq
from zmq.utils import z85

log = logging.getLogger("mpcnp.net")


def key_bytes(key: str | bytes, what: str) -> bytes:
    """A Curve key given in Z85 (40 characters) as its 32 raw bytes; ValueError otherwise."""
    text = key.encode("ascii") if isinstance(key, str) else bytes(key)
    if len(text) != 40:
        raise ValueError(f"{what} must be a 40-character Z85 Curve key, got {len(text)} characters")
    try:
        return z85.decode(text)
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"{what} is not valid Z85") from None


@dataclass(frozen=True)
class CurveConfig:
    """This party's Curve key pair and every peer's public key (all Z85, 40 characters).

    Raises ValueError for a malformed key, a secret key not matching the public key, or two parties
    sharing a public key (a key names a party).
    """

    public_key: str
    secret_key: str = field(repr=False)
    peer_keys: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def text(key):
            return key.decode("ascii") if isinstance(key, bytes) else key

        object.__setattr__(self, "public_key", text(self.public_key))
        object.__setattr__(self, "secret_key", text(self.secret_key))
        object.__setattr__(self, "peer_keys", {p: text(k) for p, k in self.peer_keys.items()})
        own = key_bytes(self.public_key, "public_key")
        key_bytes(self.secret_key, "secret_key")
        if zmq.curve_public(self.secret_key.encode()) != self.public_key.encode():
            raise ValueError(f"the secret key does not belong to the public key {self.public_key}")
        seen = {own: "this party"}
        for peer, key in self.peer_keys.items():
            raw = key_bytes(key, f"the public key of {peer}")
            if raw in seen:
                raise ValueError(f"{peer} has the same public key as {seen[raw]}")
            seen[raw] = peer


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


__all__ = ["key_bytes", "CurveConfig", "keygen", "write_key_file", "read_key_file"]
