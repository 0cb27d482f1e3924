"""Per-party communication counters: bytes, messages and rounds.

Bytes. Every array or json message counts its payload (``array.nbytes``, or the UTF-8 JSON length)
plus its framing header, ``header_bytes(ndim)`` of framing.py (16 + 8 * ndim): ``bytes_sent`` and
``bytes_received`` include the header, ``payload_bytes_*`` do not. Abort notices are not counted.
The in-memory transport counts the header it would have sent, so the numbers do not depend on the
backend. A message is counted as received when ``recv`` returns it, not when it reaches a buffer.

Rounds: the communication depth, as a Lamport clock. Each party keeps a clock c (0 at the start).
Every message carries the sender's c at the time of sending; when ``recv`` returns a message stamped
r, the receiver sets c = max(c, r + 1). Sending does not advance the clock. Hence:

* two parties that send to each other and then receive take 1 round each (both stamps are 0);
* producer -> server1, then server1 -> server0 leaves server0 at round 2, server1 at 1;
* a ping-pong of n messages leaves the last receiver at round n.

``reset()`` sets c back to 0 with the other counters. To measure the depth of one part of a
program, reset on every party at the same program point, with no message in flight (a message
sent before the reset carries its old stamp).
"""
from __future__ import annotations


class Stats:
    """Counters of one party's traffic (not thread-safe: one party drives its own transport)."""

    __slots__ = ("bytes_sent", "bytes_received", "payload_bytes_sent", "payload_bytes_received",
                 "messages_sent", "messages_received", "clock")

    def __init__(self) -> None:
        self.reset()

    @property
    def rounds(self) -> int:
        """Communication depth (see the module docstring): the Lamport clock."""
        return self.clock

    def reset(self) -> None:
        """Zero every counter, the round clock included."""
        self.bytes_sent = self.bytes_received = 0
        self.payload_bytes_sent = self.payload_bytes_received = 0
        self.messages_sent = self.messages_received = 0
        self.clock = 0

    # The header size is framing.header_bytes(ndim), written out: these run for every message.
    def count_sent(self, payload_nbytes: int, ndim: int) -> None:
        self.messages_sent += 1
        self.payload_bytes_sent += payload_nbytes
        self.bytes_sent += payload_nbytes + 16 + 8 * ndim

    def count_received(self, payload_nbytes: int, ndim: int, stamp: int) -> None:
        self.messages_received += 1
        self.payload_bytes_received += payload_nbytes
        self.bytes_received += payload_nbytes + 16 + 8 * ndim
        if stamp >= self.clock:
            self.clock = stamp + 1

    def as_dict(self) -> dict[str, int]:
        """The counters by name, ``rounds`` included."""
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "payload_bytes_sent": self.payload_bytes_sent,
            "payload_bytes_received": self.payload_bytes_received,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "rounds": self.rounds,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"Stats({fields})"
