"""``mp.run``: choose the run's settings (the protocol family and its defaults), install the run's
observers (the program digest and the gradient recorder on every run, validation when asked for),
then start the parties."""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Callable

from mpcnp.autograd import Recorder
from mpcnp.digest import ProgramDigest
from mpcnp.protocols import families
from mpcnp.runtime import run_parties
from mpcnp.runtime.context import current
from mpcnp.tracing import observe, record_gradients
from mpcnp.validation import BANNER, ValidationWarning, Validator

__all__ = ["run"]


def run(fn: Callable, *args, parties=(), protocol: str = "securenn", backend: str = "threads",
        frac_bits: int | None = None, truncation: str | None = None, validate: bool = False,
        timeout: float = 60.0, network=None, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)`` on every party and return {party name: its return value}.

    ``parties``: the extra input/output parties beside server0, server1 and the producer.
    ``protocol``: "securenn" (exact comparisons) or "pond" (polynomial approximations).
    ``backend``: "threads" (in this process) or "processes" (one forked process per party);
    inside ``python -m mpcnp party`` the process is one party of a cluster instead.
    ``frac_bits``: fixed-point fractional bits, 8..24 (None: 16).
    ``truncation``: "exact" or "local" (None: the protocol's default, exact under securenn, local
    under pond).
    ``validate``: check every private operation against float64 plaintext (mpcnp.validation). IT
    REVEALS EVERY VALUE TO EVERY PARTY: development on test data only (a ValidationWarning says so).
    ``timeout``: seconds a party waits for a peer before the run fails.
    ``network``: emulate a network on every channel: "lan", "wan", "NAME:BANDWIDTH:LATENCY" or an
    mpcnp.net.shaping.NetworkProfile; each message is held for latency + size / bandwidth (counted
    bytes unchanged). None: the channels as they are.
    Every run checks at start-up that the parties agree on these settings, and before every reveal
    that they ran the same operations (mpcnp.digest). Raises PartyError naming the failing party if
    ``fn`` raises on any party, a party dies, or one stays silent past ``timeout``; a
    ValidationError inside it when validation finds an operation out of its range. See docs/api.md,
    "Running a program".
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    config = families.config(protocol, frac_bits=frac_bits, truncation=truncation, timeout=timeout,
                             validate=validate)
    if network is not None:
        config = dataclasses.replace(config, network=network)
    if validate:
        warnings.warn(BANNER, ValidationWarning, stacklevel=2)
    return run_parties(functools.partial(_observed, fn), args, kwargs, parties=parties, backend=backend,
                       config=config)


def _observed(fn: Callable, *args, **kwargs):
    """``fn`` on this party with the run's observers; the digest is compared once more at the end."""
    ctx = current()
    digest = ProgramDigest(ctx)
    extra = (Validator(ctx),) if ctx.config.validate else ()
    with observe(digest, *extra), record_gradients(Recorder()):
        result = fn(*args, **kwargs)
        digest.check()
    return result
