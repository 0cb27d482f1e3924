"""The settings of a service, which the three core parties must share (checked when a session starts)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mpcnp import fixedpoint
from mpcnp.protocols import families
from mpcnp.runtime.context import Config

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """How a service runs.

    ``protocol``, ``frac_bits``, ``truncation`` (None: the protocol's default): as for ``mp.run``;
    models are shared at ``frac_bits``. ``timeout``: seconds a core party waits for another before it
    declares the session failed (it then sets up a new one). ``batch_window``: the longest server0 waits,
    after the first query of a batch arrived, for the next queries of the other clients that queried
    in the last second (queries that arrived while the previous batch ran join at once; a lone client
    never waits); ``max_batch``: the most rows in one batch; ``batching=False``:
    one query per batch. Batches are padded to a power of two rows (so that few batch sizes, and
    pools, exist). ``pool``: deal randomness ahead (mpcnp.serving.pool), up to ``pool_items`` items
    per model and batch size and ``pool_mb`` megabytes per party. ``max_rows``: the most rows one query
    may have; ``max_pending``: the most queries one client may have waiting; ``max_message_mb``: the
    largest message a client may send.
    """

    protocol: str = "securenn"
    frac_bits: int = fixedpoint.DEFAULT_FRAC_BITS
    truncation: str | None = None
    timeout: float = 5.0
    batch_window: float = 0.002
    max_batch: int = 64
    batching: bool = True
    pool: bool = True
    pool_items: int = 4
    pool_mb: float = 256.0
    max_rows: int = 1024
    max_pending: int = 64
    max_message_mb: float = 1024.0

    def __post_init__(self):
        families.family(self.protocol)
        fixedpoint.check_frac_bits(self.frac_bits)
        if self.truncation is not None:
            fixedpoint.check_truncation(self.truncation)
        for name in ("timeout", "pool_mb", "max_message_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if isinstance(self.batch_window, bool) or not 0 <= self.batch_window <= self.timeout / 4:
            # server0 is silent while it waits for a batch to fill: the others must not take it for dead
            raise ValueError(f"batch_window must be 0 to timeout / 4 = {self.timeout / 4:g} seconds, "
                             f"got {self.batch_window!r}")
        for name in ("max_batch", "pool_items", "max_rows", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "pool_items" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def config(self) -> Config:
        """The runtime Config of the service's sessions."""
        return families.config(self.protocol, frac_bits=self.frac_bits, truncation=self.truncation,
                               timeout=self.timeout)

    def shared(self) -> dict:
        """What the core parties must agree on (compared when a session is set up): how values are
        encoded and computed on. The rest is server0's to decide, or local."""
        values = asdict(self)
        return {name: values[name] for name in ("protocol", "frac_bits", "truncation")}
