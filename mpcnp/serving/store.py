"""A server's models on disk: one file per model holding its spec, its owner and this server's shares.

File ``DIR/NAME.model`` (an uncompressed NumPy .npz, read with ``allow_pickle=False``): the entry
``meta`` is UTF-8 JSON {"format", "model", "server", "owner", "owner_key", "upload", "frac_bits",
"spec"} as a uint8 array, and ``p:NAME`` is this server's uint64 share of parameter NAME. Files are
created with mode 0600 in a 0700 directory and written atomically: a temporary file in the same
directory, flushed and fsync'ed, renamed over the old one, and the directory fsync'ed, so a crash
leaves the old model or the new one, never a mixture; leftover temporary files are removed at start.

A share alone is uniform: the file reveals nothing of the weights without the other server's file.
The shares are tied to the ``frac_bits`` they were encoded at; a store opened with other settings
refuses them. ``upload`` is the uploader's random id of one upload: both servers must hold the same
one before a model is served (a model replaced on one server only is not).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from mpcnp.serving.build import check
from mpcnp.serving.spec import ModelSpec, check_model_name

__all__ = ["StoredModel", "ModelStore"]

log = logging.getLogger("mpcnp.serving")

FORMAT = 1
_SUFFIX = ".model"
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StoredModel:
    """What the store knows of one model without reading its shares."""

    name: str
    owner: str
    owner_key: str
    upload: str
    spec: ModelSpec

    def summary(self) -> dict:
        """What ``models`` tells clients."""
        return {"owner": self.owner, "upload": self.upload, "input_shape": list(self.spec.input_shape),
                "output_shape": list(self.spec.output_shape)}


class ModelStore:
    """The models of server ``server`` in ``directory`` (created 0700 if missing). Thread-safe: the
    client gateway writes while the service reads. ``version`` grows with every change."""

    def __init__(self, directory: str | os.PathLike, server: str, frac_bits: int):
        self.directory = Path(directory)
        self.server, self.frac_bits = server, frac_bits
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._models: dict[str, StoredModel] = {}
        self.version = 0
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith(_TEMP_PREFIX):
                log.warning("removing %s, left by an interrupted write", path)
                path.unlink(missing_ok=True)
            elif path.suffix == _SUFFIX:
                try:
                    self._models[path.stem] = self._read_meta(path)
                except (OSError, ValueError, KeyError) as exc:
                    log.error("%s: cannot read %s, which is not served: %s", server, path, exc)

    # ---- reading -------------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.directory / f"{check_model_name(name)}{_SUFFIX}"

    def _read_meta(self, path: Path) -> StoredModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        if meta.get("format") != FORMAT or meta.get("model") != path.stem:
            raise ValueError("not a model file of this version")
        if meta.get("server") != self.server:
            raise ValueError(f"it holds {meta.get('server')}'s shares, not {self.server}'s")
        if meta.get("frac_bits") != self.frac_bits:
            raise ValueError(f"its shares are encoded at frac_bits={meta.get('frac_bits')}, the service runs "
                             f"at {self.frac_bits}")
        return StoredModel(meta["model"], meta["owner"], meta["owner_key"], meta["upload"], check(meta["spec"]))

    def catalogue(self) -> dict[str, StoredModel]:
        with self._lock:
            return dict(self._models)

    def get(self, name: str) -> StoredModel | None:
        with self._lock:
            return self._models.get(name)

    def shares(self, name: str) -> tuple[StoredModel, dict[str, np.ndarray]]:
        """(meta, parameter name -> this server's share) of model ``name``; KeyError if absent,
        ValueError if its file no longer matches what was listed."""
        with self._lock:
            model = self._models[name]
            with np.load(self._path(name), allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes().decode("utf-8"))
                if meta.get("upload") != model.upload:
                    raise ValueError(f"model {name}: its file changed underneath")
                shares = {key[2:]: np.array(data[key]) for key in data.files if key.startswith("p:")}
        for param, shape in model.spec.parameters.items():
            share = shares.get(param)
            if share is None or share.dtype != np.uint64 or share.shape != shape:
                raise ValueError(f"model {name}: the share of {param} is missing or malformed")
        return model, shares

    # ---- writing -------------------------------------------------------------------------------------
    def put(self, name: str, owner: str, owner_key: str, upload: str, spec: ModelSpec,
            shares: Mapping[str, np.ndarray]) -> StoredModel:
        """Store (or replace) model ``name`` atomically. The caller checks ownership and shapes."""
        meta = {"format": FORMAT, "model": name, "server": self.server, "owner": owner, "owner_key": owner_key,
                "upload": upload, "frac_bits": self.frac_bits, "spec": spec.to_json()}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
        arrays.update({f"p:{param}": np.ascontiguousarray(share, dtype=np.uint64) for param, share in shares.items()})
        path = self._path(name)
        with self._lock:
            temp = self.directory / f"{_TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **arrays)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            self._sync_directory()
            stored = StoredModel(name, owner, owner_key, upload, spec)
            self._models[name] = stored
            self.version += 1
        return stored

    def delete(self, name: str) -> None:
        """Remove model ``name`` (KeyError if absent)."""
        with self._lock:
            del self._models[name]
            self._path(name).unlink(missing_ok=True)
            self._sync_directory()
            self.version += 1

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
