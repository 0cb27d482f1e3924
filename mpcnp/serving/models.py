"""Which models a session serves: the core parties agree on the models both servers hold under one
upload, load them from the servers' stores, and open their parameters' masks once.

server0 leads (``sync_lead``), server1 and the producer follow (``sync_follow``), in step:

1. server0 sends its catalogue (name, upload id, spec) and reads the shares of its models not loaded
   yet ("pins" them: later changes of the files do not matter);
2. server1 pins its own and answers which models it holds, under which upload ids;
3. server0 sends the models both hold under the same upload (``load``); every party unloads the others
   and loads these: the servers from their pinned shares, the producer from the specs (it holds no
   share). The new parameters' Beaver masks are drawn and opened in one exchange, and registered with
   the pools (products with them are pooled with the mask as it is).

A model uploaded to one server only, or replaced on one only, is not served: its queries are told why
(``unavailable``). Shares of two different uploads are never combined.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from mpcnp import nn
from mpcnp.protocols import pond
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import SERVER0, SERVER1, Context, PartyError
from mpcnp.serving import build
from mpcnp.serving import spec as specs
from mpcnp.serving.pool import Pools
from mpcnp.serving.session import FOLLOWERS, recv_json, send_json
from mpcnp.serving.store import ModelStore
from mpcnp.tensor import PrivateTensor

__all__ = ["LoadedModel", "Models"]

log = logging.getLogger("mpcnp.serving")


@dataclass
class LoadedModel:
    """A model this party serves in the current session: its parameters as private tensors, masked,
    and the nn model holding them (``net``), which runs the forward pass."""

    name: str
    upload: str
    spec: specs.ModelSpec
    params: dict[str, PrivateTensor]
    net: nn.Sequential

    def masks(self) -> list:
        return [t._value.mask for t in self.params.values()]


class Models:
    """The models one party serves in a session (``loaded``), and why others are not (``unavailable``,
    on server0). ``store``: the server's ModelStore (None on the producer)."""

    def __init__(self, ctx: Context, pools: Pools, store: ModelStore | None):
        self.ctx, self.pools, self.store = ctx, pools, store
        self.loaded: dict[str, LoadedModel] = {}
        self.unavailable: dict[str, str] = {}
        self._pinned: dict[str, dict] = {}

    def sync_lead(self) -> None:
        """server0's side of a sync (see the module docstring)."""
        ctx = self.ctx
        catalogue = self.store.catalogue()
        listed = {name: {"upload": m.upload, "spec": m.spec.to_json()} for name, m in catalogue.items()}
        for peer in FOLLOWERS:
            send_json(ctx, peer, {"op": "sync", "models": listed})
        mine = self._pin({name: m.upload for name, m in catalogue.items()})
        theirs = recv_json(ctx, SERVER1).get("models", {})
        agreed = {name: upload for name, upload in mine.items() if theirs.get(name) == upload}
        self.unavailable = {}
        for name in mine:
            if name not in agreed:
                self.unavailable[name] = ("server1 does not hold it" if name not in theirs else
                                          "server0 and server1 hold different uploads of it (being replaced?): "
                                          "its owner must upload it again")
        for name in theirs:
            if name not in mine:
                self.unavailable[name] = "server0 does not hold it"
        for peer in FOLLOWERS:
            send_json(ctx, peer, {"op": "load", "models": agreed})
        self._load(agreed, {name: catalogue[name].spec for name in agreed})

    def sync_follow(self, command: dict) -> None:
        """server1's or the producer's side of a sync, from server0's ``sync`` command."""
        ctx = self.ctx
        listed = command.get("models", {})
        if ctx.name == SERVER1:
            uploads = {name: m.upload for name, m in self.store.catalogue().items()}
            send_json(ctx, SERVER0, {"op": "catalogue", "models": self._pin(uploads)})
        load = recv_json(ctx, SERVER0)
        if load["op"] != "load":
            raise PartyError(SERVER0, f"sent {load['op']!r} where the models to load were expected")
        agreed = load.get("models", {})
        try:
            models = {name: build.check(listed[name]["spec"]) for name in agreed}
        except (KeyError, TypeError, ValueError) as exc:
            raise PartyError(SERVER0, f"sent a model list this party cannot use: {exc}") from None
        self._load(agreed, models)

    def _pin(self, uploads: dict[str, str]) -> dict[str, str]:
        """Read the shares of the models listed (name -> upload id) that are not loaded already under the
        same upload; returns the models this server can serve, with their upload ids."""
        pinned, self._pinned = {}, {}
        for name, upload in uploads.items():
            loaded = self.loaded.get(name)
            if loaded is not None and loaded.upload == upload:
                pinned[name] = upload
                continue
            try:
                meta, shares = self.store.shares(name)
            except (KeyError, OSError, ValueError) as exc:
                log.error("%s: model %s cannot be loaded: %s", self.ctx.name, name, exc)
                continue
            self._pinned[name] = shares
            pinned[name] = meta.upload
        return pinned

    def _load(self, agreed: dict[str, str], models: dict[str, specs.ModelSpec]) -> None:
        """Serve exactly the ``agreed`` models (SPMD): unload the others, load the new ones from the
        pinned shares, and open their parameters' masks in one exchange."""
        ctx = self.ctx
        for name in [n for n, m in self.loaded.items() if agreed.get(n) != m.upload]:
            self.pools.forget(name, self.loaded.pop(name).masks())
        fresh = []
        for name, upload in agreed.items():
            if name in self.loaded:
                continue
            spec = models[name]
            shares = self._pinned.get(name, {})
            params = {param: PrivateTensor(ctx, Shared(shares.get(param) if ctx.is_server else None, shape))
                      for param, shape in spec.parameters.items()}
            net = build.architecture(spec).with_parameters(params)
            self.loaded[name] = LoadedModel(name, upload, spec, params, net)
            fresh.append(self.loaded[name])
        self._pinned = {}
        pond.open_masks(ctx, [t._value for model in fresh for t in model.params.values()])
        for model in fresh:
            self.pools.register(model.masks())
        if fresh:
            log.info("%s: serving %s", ctx.name, ", ".join(sorted(self.loaded)) or "no models")
