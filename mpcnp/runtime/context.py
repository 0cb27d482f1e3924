"""One party's runtime: who it is, its channels to the others, its PRF streams, its configuration.

Each party of a run has its own ``Context``, held in a context variable of the thread (threads
backend) or process (processes and cluster backends) that runs the party; nothing mutable is shared
between parties. Protocol code receives the context explicitly or reads ``current()``.
"""
from __future__ import annotations

import contextvars
import math
import numbers
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mpcnp import fixedpoint, ring
from mpcnp.net import (NetError, PeerAborted, PeerLost, PeerTimeout, Transport, WaitObserver,
                       check_party_name)
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
    ``validate``: the run checks every operation against plaintext (mpcnp.validation), which the
    program layer sets up; the runtime only makes sure every party agrees on it.
    ``timeout``: seconds any party waits for a peer before the run fails; any positive real, ``inf``
    for no limit (``wait`` gives it as the transports take it: None for no limit).
    """

    protocol: str = "securenn"
    frac_bits: int = fixedpoint.DEFAULT_FRAC_BITS
    truncation: str = "local"
    timeout: float = 60.0
    validate: bool = False
    network: NetworkProfile | None = None  # emulate this network on every channel (net/shaping.py)

    def __post_init__(self):
        if not isinstance(self.protocol, str) or not self.protocol:
            raise ValueError(f"protocol must be a non-empty name, got {self.protocol!r}")
        object.__setattr__(self, "frac_bits", fixedpoint.check_frac_bits(self.frac_bits))
        fixedpoint.check_truncation(self.truncation)
        object.__setattr__(self, "timeout", check_timeout(self.timeout))
        if self.network is not None:
            object.__setattr__(self, "network", network_profile(self.network))

    @property
    def wait(self) -> float | None:
        """``timeout`` as the transports take it: None when there is no limit."""
        return None if math.isinf(self.timeout) else self.timeout


def check_timeout(timeout) -> float:
    """``timeout`` as a float if it is a positive real number of seconds (inf included); TypeError
    for a bool or a non-number, ValueError for zero, a negative number or NaN."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a positive number of seconds (float('inf') for none), "
                        f"got {timeout!r}")
    timeout = float(timeout)
    if not timeout > 0:  # NaN fails this too
        raise ValueError(f"timeout must be a positive number of seconds (float('inf') for none), "
                         f"got {timeout!r}")
    return timeout


class InputRefused(ValueError):
    """An input owner's value was refused (not finite, out of range, not numeric).

    The message may quote the value, so it stays with the owner: its peers are told only that the
    owner's input was refused (``public_reason``).
    """


class PartyError(Exception):
    """A party of a run failed: its function raised, it died, it fell silent or sent garbage.

    ``party`` names the party at fault and ``cause`` is the original exception (or a description of
    it when it could not travel between processes).
    """

    def __init__(self, party: str, cause: BaseException | str, relayed: bool = False):
        self.party = party
        self.cause = cause
        # learnt from an abort notice (an authenticated peer's report), not seen first-hand
        self.relayed = relayed
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


def public_reason(party: str, exc: BaseException) -> str:
    """What the peers of ``party`` are told of ``exc``, raised in its own code: the exception's type,
    never its message, which may quote private data (an input's rejected value)."""
    if isinstance(exc, InputRefused):
        return f"{InputRefused.__name__}: {party}'s input was refused (the details stay on {party})"
    return f"{type(exc).__name__} raised in {party}'s own code (the message stays on {party})"


def check_party_names(parties: Sequence[str]) -> tuple[str, ...]:
    """The names of every party of a run: the core parties, then ``parties`` (validated)."""
    if isinstance(parties, str):
        raise TypeError(f"parties must be a sequence of names, got the string {parties!r}")
    if parties is None or not hasattr(parties, "__iter__"):
        raise TypeError(f"parties must be a sequence of the extra parties' names (() for none), "
                        f"got {parties!r}")
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

    def __init__(self, name: str, parties: Sequence[str], transport: Transport, config: Config,
                 observer: WaitObserver | None = None, wait: float | None = None):
        """``observer``: told whenever this party waits (a supervisor's status board); ``wait``:
        seconds a receive waits (None: ``config.wait``; a supervised party waits a little longer
        than the timeout, so that its supervisor, which sees every party, decides first)."""
        self.name = name
        self.parties = tuple(parties)
        self.transport = transport
        self.config = config
        self.wait = config.wait if wait is None else wait
        if observer is not None:
            transport.observer = observer
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
            self.transport.wait_ready(self.wait)
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
            return self.transport.recv(self.check_party(frm), self.wait)
        except NetError as exc:
            raise self._party_error(exc, frm, receiving=True) from None

    def send_json(self, to: str, obj) -> None:
        """Send small metadata (anything json.dumps accepts) to ``to``: a json message, which a party
        expecting an array refuses, so programs that diverge fail at the first such message."""
        try:
            self.transport.send_json(self.check_party(to), obj)
        except NetError as exc:
            raise self._party_error(exc, to) from None

    def recv_json(self, frm: str):
        """The next json message from ``frm``; errors as for ``recv``."""
        try:
            return self.transport.recv_json(self.check_party(frm), self.config.timeout)
        except NetError as exc:
            raise self._party_error(exc, frm, receiving=True) from None

    def _party_error(self, exc: NetError, peer: str, receiving: bool = False) -> PartyError:
        """A channel failure as the PartyError naming the party at fault: the peer the error names
        (else ``peer``); for an abort notice, its authenticated sender, never a party the sender
        merely accuses, unless this party sees for itself that the accused is gone. Plain try/except
        at the call sites: this is every message's path."""
        peer = getattr(exc, "peer", None) or peer
        if isinstance(exc, PeerTimeout):
            sending = exc.hint.startswith(" (sending")
            return PartyError(peer, TimeoutError(
                f"{self.name} {'could not send to' if sending else 'received nothing from'} {peer} "
                f"within {self.config.timeout:g} s{exc.hint}"))
        if isinstance(exc, PeerAborted):
            return self._aborted_error(exc, peer, receiving)
        if isinstance(exc, PeerLost) and exc.after_failure:  # a consequence of another failure
            return PartyError(peer, exc, relayed=True)
        return PartyError(peer, exc)

    def _aborted_error(self, exc: PeerAborted, peer: str, receiving: bool) -> PartyError:
        """Whom an abort notice makes this party name: the accused when the notice comes from the
        run's supervisor or from the accused itself; else a party this party has its own evidence
        against (the peer it waits for, or the accused: connection lost, handshake failed); else
        the notice's sender, whose claim it cannot check."""
        sender, accused, reason = exc.sender, exc.accused, exc.reason
        if sender is None or sender == accused:
            # the run's own supervisor, or a party reporting its own failure: both are trusted
            return PartyError(accused, reason, relayed=True)
        for suspect in dict.fromkeys(([peer] if receiving else []) + [accused]):
            evidence = self.transport.evidence(suspect) if suspect in self.parties else None
            if evidence is not None and suspect != self.name:
                return PartyError(suspect, ConnectionError(
                    f"{self.name} sees it: {evidence} ({sender} reports that {accused} failed: {reason})"))
        if accused == self.name and receiving:
            # Another party gave up waiting for us while we were still waiting for ``peer``.
            claim = f"{sender} gave up on {self.name} while it was still waiting for {peer}: {reason}"
        else:
            claim = f"{sender} aborted the run, reporting that {accused} failed: {reason}"
        return PartyError(sender, f"{claim} (unverified)", relayed=True)


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
