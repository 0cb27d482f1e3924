"""Network emulation in the transport: every message is held for latency + size / bandwidth.

``ShapedTransport(inner, profile)`` wraps any Transport (in memory, ZeroMQ over ipc or tcp) and makes
its channels behave like links of a ``NetworkProfile``: per directed link, a message starts to
serialise when the sender sends it or when the link has finished the previous message, whichever is
later; it takes ``size / bandwidth`` on the link and arrives ``latency`` seconds after its last byte
left (size = payload + framing header, the bytes ``Stats.bytes_sent`` counts). The receiver holds a
message until its arrival time; the sender never blocks. Counted bytes, messages and rounds are those
of the unshaped transport: the wrapper counts exactly as every Transport does and adds nothing to
the wire.

Where a message waits (``NetworkProfile.hold``):

- ``"receiver"`` (default): the sender computes the arrival time and puts it, in microseconds modulo
  2^40 (12.7 days), into the upper 40 bits of the message header's 64-bit stamp; the Lamport stamp
  keeps the lower 24 bits (a run under emulation may last at most 2^24 - 1 rounds, else NetError).
  The receiver restores the full time as the one nearest its own clock and sleeps until then. No
  thread; sender and receiver must read one clock: ``time.time``, shared by every process of a host
  and kept within about a millisecond across hosts by NTP (which then adds to the latency).
- ``"sender"``: a delivery thread per transport hands each message to the medium at its arrival time;
  whatever the medium itself takes comes on top. For media that shape bandwidth themselves (tbf in
  benchmarks/netns.py) with a latency-only profile: latency, then the real serialisation, in series,
  as on a wire. Needs no shared clock; the thread may wake late by up to Python's switch interval
  when the party's own thread is busy in Python code. ``drain`` stops it, after delivering all.

Cost: one clock read per message on each side; waits sleep (no spinning). Sleeps overshoot by tens of
microseconds on Linux, which matters only against LAN-like latencies.

Not modelled: loss, jitter, congestion shared between links of one host, TCP's slow start (the
namespace emulation of ``benchmarks/netns.py`` has those).
"""
from __future__ import annotations

import heapq
import itertools
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mpcnp.net.base import Transport
from mpcnp.net.errors import NetError, PeerTimeout
from mpcnp.net.framing import HEADER_BYTES

STAMP_BITS = 24
_STAMP_MASK = (1 << STAMP_BITS) - 1
_TIME_BITS = 64 - STAMP_BITS
_TIME_MOD = 1 << _TIME_BITS
_HALF_MOD = _TIME_MOD >> 1


@dataclass(frozen=True)
class NetworkProfile:
    """A network every link of which has ``bandwidth`` bytes/s (``math.inf``: no serialisation
    delay) and a one-way ``latency`` in seconds; ``hold``: where messages wait (module docstring)."""

    name: str
    bandwidth: float
    latency: float
    hold: str = "receiver"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a network profile needs a non-empty name, got {self.name!r}")
        if not isinstance(self.bandwidth, (int, float)) or not self.bandwidth > 0:
            raise ValueError(f"network {self.name!r}: bandwidth must be a positive number of bytes/s "
                             f"(math.inf for none), got {self.bandwidth!r}")
        if not isinstance(self.latency, (int, float)) or not 0 <= self.latency < math.inf:
            raise ValueError(f"network {self.name!r}: latency must be a finite number of seconds >= 0, "
                             f"got {self.latency!r}")
        if self.hold not in ("receiver", "sender"):
            raise ValueError(f"network {self.name!r}: hold must be 'receiver' or 'sender', got {self.hold!r}")

    def transfer_seconds(self, nbytes: int) -> float:
        """Seconds from sending ``nbytes`` on an idle link to their arrival."""
        return self.latency + nbytes / self.bandwidth

    def describe(self) -> str:
        rate = "unlimited" if self.bandwidth == math.inf else f"{self.bandwidth / 1e6:g} MB/s"
        held = "" if self.hold == "receiver" else ", held at the sender"
        return f"{self.name} ({rate}, {self.latency * 1e3:g} ms one way{held})"


# After SecureNN (Wagh, Gupta, Chandran, PoPETs 2019) section 8.1: three EC2 hosts in one region, and
# in different regions. The paper gives average bandwidth and "ping time"; we use the latter as the
# one-way latency, as the benchmark issue specifies (a ping is a round trip, so per round our WAN is
# up to twice as slow as theirs: a conservative reading).
PROFILES: dict[str, NetworkProfile] = {
    "lan": NetworkProfile("lan", 625e6, 0.22e-3),
    "wan": NetworkProfile("wan", 40e6, 58e-3),
}

_RATE_UNITS = {"": 1.0, "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9,
               "kbit/s": 125.0, "mbit/s": 125e3, "gbit/s": 125e6}
_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
_CUSTOM = re.compile(r"^(?P<name>[A-Za-z][\w.-]*):(?P<rate>[0-9.eE+-]+|inf)\s*(?P<ru>[A-Za-z/]*)"
                     r":(?P<lat>[0-9.eE+-]+)\s*(?P<lu>[a-z]*)$")


def network_profile(spec: str | NetworkProfile) -> NetworkProfile:
    """A profile from its name ("lan", "wan"), a ``NetworkProfile``, or a custom
    "NAME:BANDWIDTH:LATENCY" such as "metro:100MB/s:5ms" or "dc:10Gbit/s:50us" (bandwidth in
    B/s, kB/s, MB/s, GB/s, kbit/s, Mbit/s, Gbit/s or inf; latency in s, ms or us; bare numbers are
    bytes/s and seconds). ValueError naming what is wrong otherwise."""
    if isinstance(spec, NetworkProfile):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a network is a profile name or a NetworkProfile, got {type(spec).__name__}")
    if spec in PROFILES:
        return PROFILES[spec]
    match = _CUSTOM.match(spec.strip())
    if match is None:
        raise ValueError(f"unknown network {spec!r}: use {', '.join(PROFILES)} or NAME:BANDWIDTH:LATENCY "
                         "(e.g. metro:100MB/s:5ms)")
    rate_unit, time_unit = match["ru"].lower(), match["lu"].lower()
    if rate_unit not in _RATE_UNITS or time_unit not in _TIME_UNITS:
        raise ValueError(f"network {spec!r}: bandwidth unit must be one of "
                         f"{', '.join(u for u in _RATE_UNITS if u)} and latency unit one of s, ms, us")
    try:
        rate, latency = float(match["rate"]), float(match["lat"])
    except ValueError:
        raise ValueError(f"network {spec!r}: bandwidth and latency must be numbers") from None
    return NetworkProfile(match["name"], rate * _RATE_UNITS[rate_unit], latency * _TIME_UNITS[time_unit])


def pack_stamp(stamp: int, arrival: float) -> int:
    """The 64-bit header stamp carrying a Lamport ``stamp`` and an ``arrival`` time (seconds)."""
    if not 0 <= stamp <= _STAMP_MASK:
        raise NetError(f"round stamp {stamp} exceeds the {STAMP_BITS}-bit limit of network emulation "
                       f"(at most {_STAMP_MASK} rounds per run)")
    return ((int(arrival * 1e6) % _TIME_MOD) << STAMP_BITS) | stamp


def unpack_stamp(packed: int, now: float) -> tuple[int, float]:
    """(Lamport stamp, arrival time in seconds) from a packed stamp; the arrival time is the one
    congruent to the packed microseconds that lies nearest ``now``."""
    stamp = packed & _STAMP_MASK
    now_us = int(now * 1e6)
    offset = ((packed >> STAMP_BITS) - now_us + _HALF_MOD) % _TIME_MOD - _HALF_MOD
    return stamp, (now_us + offset) * 1e-6


class _DelayLine:
    """The sender-side hold: a thread that hands each message to ``inner`` at its release time
    (a heap: links release independently; one link's messages keep their order) and relays abort
    notices at once. Only this thread touches ``inner``'s sending side while it runs."""

    def __init__(self, inner: Transport, clock: Callable[[], float]) -> None:
        self.inner, self.clock = inner, clock
        self.cond = threading.Condition()
        self.heap: list = []
        self.order = itertools.count()
        self.aborts: deque = deque()
        self.draining = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"mpcnp-delay-{inner.name}", daemon=True)
        self.thread.start()

    def put(self, release: float, message: tuple) -> None:
        with self.cond:
            heapq.heappush(self.heap, (release, next(self.order), message))
            self.cond.notify()

    def abort(self, origin: str, reason: str) -> None:
        with self.cond:
            self.aborts.append((origin, reason))
            self.cond.notify()

    def drain(self) -> None:
        """Deliver everything held (at its time), then end the thread."""
        with self.cond:
            self.draining = True
            last = max((r for r, _, _ in self.heap), default=self.clock())
            self.cond.notify()
        self.thread.join(max(0.0, last - self.clock()) + 1.0)

    def _next_action(self) -> tuple[str, Any] | None:
        with self.cond:
            while True:
                if self.aborts:
                    return "abort", self.aborts.popleft()
                if self.heap:
                    wait = self.heap[0][0] - self.clock()
                    if wait <= 0:
                        return "send", heapq.heappop(self.heap)[2]
                    self.cond.wait(wait)
                elif self.draining:
                    return None
                else:
                    self.cond.wait()

    def _run(self) -> None:
        while (action := self._next_action()) is not None:
            kind, args = action
            try:
                if kind == "abort":
                    self.inner.abort(*args)
                else:
                    self.inner._deliver(*args)
            except Exception as exc:  # noqa: BLE001 - reported by the party's next send
                self.error = exc


class ShapedTransport(Transport):
    """``inner`` with every link shaped as ``profile`` (see the module docstring).

    Takes ownership of ``inner`` (``close`` closes it) but does not replace it for others: a backend
    may still abort or close ``inner`` directly (after ``drain``, for a sender-side hold). Wrap after
    ``inner`` knows its peers (ZeroMQ: after ``connect``). ``clock`` and ``sleep`` are for tests (a
    virtual clock); both sides must share the clock. Raises what ``inner`` raises, NetError past
    2^24 - 1 rounds (receiver-side hold) or when the delivery thread failed (sender-side hold).
    """

    def __init__(self, inner: Transport, profile: NetworkProfile | str,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(inner.name, inner.peers)
        self.inner = inner
        self.profile = network_profile(profile)
        self._clock, self._sleep = clock, sleep
        self._link_free = {peer: -math.inf for peer in self.peers}  # when each outgoing link is idle
        self._held: dict[str, tuple[int, int, np.ndarray, float]] = {}  # popped from inner, not yet due
        self._line = _DelayLine(inner, clock) if self.profile.hold == "sender" else None

    def _deliver(self, to: str, kind: int, stamp: int, wire: np.ndarray) -> None:
        self.inner._raise_if_aborted()
        start = max(self._clock(), self._link_free[to])
        # the bytes the counters count: payload and framing header (framing.header_bytes)
        sent = start + (wire.nbytes + HEADER_BYTES + 8 * wire.ndim) / self.profile.bandwidth
        self._link_free[to] = sent
        if self._line is None:
            self.inner._deliver(to, kind, pack_stamp(stamp, sent + self.profile.latency), wire)
        elif self._line.error is not None:
            raise NetError(f"{self.name}: the delivery thread failed: {self._line.error}")
        else:
            self._line.put(sent + self.profile.latency, (to, kind, stamp, wire))

    def _next(self, frm: str, timeout: float | None,
              deadline: float | None) -> tuple[int, int, np.ndarray]:
        if self._line is not None:
            return self.inner._next(frm, timeout, deadline)
        held = self._held.pop(frm, None)
        if held is None:
            kind, packed, payload = self.inner._next(frm, timeout, deadline)
            stamp, arrival = unpack_stamp(packed, self._clock())
        else:
            kind, stamp, payload, arrival = held
        wait = arrival - self._clock()
        if wait > 0:
            if deadline is not None and time.monotonic() + wait > deadline:
                # not arrived within the timeout: keep it for a later receive, as the medium would
                self._held[frm] = (kind, stamp, payload, arrival)
                self._sleep(max(0.0, deadline - time.monotonic()))
                raise PeerTimeout(frm, timeout)
            self._sleep(wait)
        return kind, stamp, payload

    def wait_ready(self, timeout: float | None) -> None:
        self.inner.wait_ready(timeout)

    def abort(self, origin: str, reason: str) -> None:
        """Abort notices are not shaped: they leave at once, as ``inner`` sends them."""
        if self._line is None:
            self.inner.abort(origin, reason)
        else:
            self._line.abort(origin, reason)

    def drain(self) -> None:
        """Deliver every message still held at the sender and stop the delivery thread (a no-op for
        a receiver-side hold); the transport sends nothing more afterwards. Idempotent."""
        if self._line is not None:
            self._line.drain()
            self._closed = True

    def close(self) -> None:
        self.drain()
        self._closed = True
        self._held.clear()
        self.inner.close()

    def __repr__(self) -> str:
        return f"ShapedTransport({self.inner!r}, {self.profile.describe()})"


def shaped(transport: Transport, network: Any) -> Transport:
    """``transport`` shaped by ``network`` (a profile or its name), or unchanged for None."""
    return transport if network is None else ShapedTransport(transport, network)
