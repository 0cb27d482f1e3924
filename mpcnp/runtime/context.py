"""One party's runtime: who it is, its channels to the others, its PRF streams, its configuration.

Each party of a run has its own ``Context``, held in a context variable of the thread (threads
backend) or process (processes and cluster backends) that runs the party; nothing mutable is shared
between parties. Protocol code receives the context explicitly or reads ``current()``.
"""
from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.net import NetError, PeerAborted, PeerTimeout, Transport, check_party_name
from mpcnp.net.shaping import NetworkProfile, network_profile

SERVER0, SERVER1, PRODUCER = "server0", "server1", "producer"
CORE_PARTIES = (SERVER0, SERVER1, PRODUCER)
SERVERS = (SERVER0, SERVER1)


@dataclass(frozen=True)
class Config:
    """What every party of a run agrees on before it starts.

    ``protocol`` names the protocol family; the runtime carries it without reading it (the protocol
    layer validates it and maps it to behaviour, mpcnp.protocols.families). ``truncation`` is the
    run's initial truncation mode (fixedpoint.TRUNCATIONS), which ``mp.truncation`` changes per block.
    """

    protocol: str = "securenn"
    frac_bits: int = fixedpoint.DEFAULT_FRAC_BITS
    truncation: str = "local"
    timeout: float = 60.0
    network: NetworkProfile | None = None  # emulate this network on every channel (net/shaping.py)

    def __post_init__(self):
        if not isinstance(self.protocol, str) or not self.protocol:
            raise ValueError(f"protocol must be a non-empty name, got {self.protocol!r}")
        object.__setattr__(self, "frac_bits", fixedpoint.check_frac_bits(self.frac_bits))
        fixedpoint.check_truncation(self.truncation)
        if not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.network is not None:
            object.__setattr__(self, "network", network_profile(self.network))


class PartyError(Exception):
    """A party of a run failed: its function raised, it died, it fell silent or sent garbage.

    ``party`` names the party at fault and ``cause`` is the original exception (or a description of
    it when it could not travel between processes).
    """

    def __init__(self, party: str, cause: BaseException | str, relayed: bool = False):
        self.party = party
        self.cause = cause
        self.relayed = relayed  # learnt from another party's abort notice, not seen first-hand
        super().__init__(f"party {party!r} failed: {describe(cause)}")
        if isinstance(cause, BaseException):
            self.__cause__ = cause

    def __reduce__(self):
        return (PartyError, (self.party, self.cause, self.relayed))


def describe(cause: BaseException | str) -> str:
    """A failure's cause as text, "Type: message" for an exception: how PartyError and the abort
    notices word it."""
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(cause)


def check_party_names(parties: Sequence[str]) -> tuple[str, ...]:
    """The names of every party of a run: the core parties, then ``parties`` (validated)."""
    if isinstance(parties, str):
        raise TypeError(f"parties must be a sequence of names, got the string {parties!r}")
    names = list(CORE_PARTIES)
    for name in parties:
        check_party_name(name)
        if name in names:
            kind = "a core party" if name in CORE_PARTIES else "given twice"
            raise ValueError(f"party name {name!r} is {kind}; every party name must appear once")
        names.append(name)
    return tuple(names)


class Context:
    """The runtime of one party: identity, channels, pairwise PRF streams, configuration."""

    def __init__(self, name: str, parties: Sequence[str], transport: Transport, config: Config):
        self.name = name
        self.parties = tuple(parties)
        self.transport = transport
        self.config = config
        self._pair_prfs: dict[str, ring.PRF] = {}
        self.own_prf = ring.PRF(os.urandom(ring.KEY_BYTES))
        self.truncation = config.truncation  # the mode products truncate in now (mp.truncation)

    # ---- identity ------------------------------------------------------------------------------
    @property
    def is_server(self) -> bool:
        return self.name in SERVERS

    @property
    def server_index(self) -> int:
        """0 on server0, 1 on server1; ValueError elsewhere."""
        try:
            return SERVERS.index(self.name)
        except ValueError:
            raise ValueError(f"{self.name} is not a server") from None

    @property
    def other_server(self) -> str:
        """server1 on server0, server0 on server1; ValueError elsewhere."""
        return SERVERS[1 - self.server_index]

    def check_party(self, name: str) -> str:
        if name not in self.parties:
            raise ValueError(f"unknown party {name!r}; the parties of this run are {', '.join(self.parties)}")
        return name

    # ---- setup ---------------------------------------------------------------------------------
    def agree_keys(self) -> None:
        """Agree a fresh 16-byte PRF key with every other party (docs/protocols.md, "Randomness").

        For each pair the party that comes first in ``parties`` draws the key from ``os.urandom``
        and sends it; the channel is CurveZMQ-encrypted whenever it crosses tcp.
        """
        order = {name: i for i, name in enumerate(self.parties)}
        me = order[self.name]
        for peer in self.parties:
            if peer != self.name and order[peer] > me:
                key = os.urandom(ring.KEY_BYTES)
                self.send(peer, np.frombuffer(key, dtype=np.uint8))
                self._pair_prfs[peer] = ring.PRF(key)
        for peer in self.parties:
            if peer != self.name and order[peer] < me:
                key = self.recv(peer)
                if key.dtype != np.uint8 or key.shape != (ring.KEY_BYTES,):
                    raise PartyError(peer, f"sent a malformed PRF key ({key.dtype}, shape {key.shape})")
                self._pair_prfs[peer] = ring.PRF(key.tobytes())

    # ---- randomness ----------------------------------------------------------------------------
    def prf(self, peer: str) -> ring.PRF:
        """The PRF stream this party shares with ``peer``; both advance it in program order."""
        try:
            return self._pair_prfs[peer]
        except KeyError:
            raise ValueError(f"{self.name} shares no PRF key with {peer!r}") from None

    # ---- messages ------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        """Block until the channels to every peer are up (at once in memory); PartyError naming a
        peer that cannot be reached or refused us, or relaying an abort notice, as ``recv``."""
        try:
            self.transport.wait_ready(self.config.timeout)
        except NetError as exc:
            raise self._party_error(exc, self.name) from None

    def send(self, to: str, array: np.ndarray) -> None:
        """Send an array to ``to``. The caller must not modify ``array`` afterwards."""
        try:
            self.transport.send(self.check_party(to), array)
        except NetError as exc:
            raise self._party_error(exc, to) from None

    def recv(self, frm: str) -> np.ndarray:
        """The next array from ``frm`` (read-only); PartyError if ``frm`` is silent or the run aborted."""
        try:
            return self.transport.recv(self.check_party(frm), self.config.timeout)
        except NetError as exc:
            raise self._party_error(exc, frm, receiving=True) from None

    def _party_error(self, exc: NetError, peer: str, receiving: bool = False) -> PartyError:
        """A channel failure as the PartyError naming the party at fault: the peer the error names
        (else ``peer``), or an abort notice's origin. Plain try/except at the call sites: this is
        every message's path."""
        peer = getattr(exc, "peer", None) or peer
        if isinstance(exc, PeerTimeout):
            return PartyError(peer, TimeoutError(
                f"{self.name} received nothing from {peer} within {self.config.timeout:g} s{exc.hint}"))
        if isinstance(exc, PeerAborted):
            if receiving and exc.origin == self.name and exc.reason.startswith(TimeoutError.__name__):
                # Another party gave up waiting for us while we were waiting for ``peer``: we were not
                # silent, ``peer`` is the suspect (the caller follows such chains to their end).
                # Notices describe their cause as "Type: message" (``describe``).
                return PartyError(peer, TimeoutError(
                    f"{self.name} was still waiting for {peer} when the others gave up on {self.name}"))
            return PartyError(exc.origin, exc.reason, relayed=True)
        return PartyError(peer, exc)


def barrier(ctx: Context, parties: Sequence[str] = CORE_PARTIES, exchanges: int = 2) -> None:
    """Wait until every party of ``parties`` reaches this point (all of them must call it).

    All-to-all exchanges of one byte: after the first everyone has arrived (and, messages being FIFO
    per pair, everything each sent before has been received); after the second every Lamport clock
    (the ``rounds`` counter) is equal, so protocol costs can be measured from here.
    """
    others = [peer for peer in parties if peer != ctx.name]
    for _ in range(exchanges):
        for peer in others:
            ctx.send(peer, np.zeros(1, np.uint8))
        for peer in others:
            ctx.recv(peer)


_current: contextvars.ContextVar[Context] = contextvars.ContextVar("mpcnp_party")


def current() -> Context:
    """The context of the party running the calling code."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("not inside an mpcnp party: call this from a function run by mp.run") from None


def activate(ctx: Context) -> contextvars.Token:
    """Make ``ctx`` the current party of this thread; returns the token for ``deactivate``."""
    return _current.set(ctx)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


def party() -> str:
    """The name of the party running the calling code."""
    return current().name


def stats() -> dict:
    """This party's communication counters since the run began (see mpcnp.net.Stats)."""
    return current().transport.stats.as_dict()
