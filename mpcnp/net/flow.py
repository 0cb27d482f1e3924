"""Flow control of the ZeroMQ transport: the byte counts per peer, and what they allow.

A sender may have at most ``window`` bytes (payload and header) that the receiver has not consumed
yet (returned from ``recv``); a larger message may go when nothing is outstanding. The receiver
tells each sender what it consumed (a credit message, framing.py) every ``window / 4`` bytes, and
whenever it waits on that sender; a sender that waits for credit says so in its own credit message,
and two parties waiting for each other's credit both go ahead. zmqnet.py sends and receives the
messages; this class only counts.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def message_bytes(payload: np.ndarray) -> int:
    """What one message counts for: its payload and its header (framing.header_bytes)."""
    return payload.nbytes + 16 + 8 * payload.ndim


class Window:
    """The counters of one transport, ``window`` bytes per peer; ``flood_limit``: the unread bytes
    beyond which a sender is ignoring our credit (twice the window and the largest message)."""

    def __init__(self, window: int, max_message: int | None) -> None:
        self.window = window
        self.flood_limit = 2 * (window + (max_message or 0))
        self.sent: dict[str, int] = defaultdict(int)       # as sender: bytes sent to the peer
        self.credit: dict[str, int] = defaultdict(int)     # and what the peer says it consumed
        self.received: dict[str, int] = defaultdict(int)   # as receiver: bytes from the peer
        self.consumed: dict[str, int] = defaultdict(int)   # of which returned by recv
        self.given: dict[str, int] = defaultdict(int)      # the consumption last told the peer
        self.blocked_by: set[str] = set()  # peers that wait for our credit to send

    # ---- sending ----------------------------------------------------------------------------------
    def outstanding(self, peer: str) -> int:
        return self.sent[peer] - self.credit[peer]

    def fits(self, peer: str, size: int) -> bool:
        """May ``size`` more bytes go to ``peer`` now?"""
        outstanding = self.outstanding(peer)
        return not outstanding or outstanding + size <= self.window or peer in self.blocked_by

    def credited(self, peer: str, consumed: int, blocked: bool) -> None:
        """``peer`` says it consumed ``consumed`` of our bytes, and whether it waits for our credit."""
        self.credit[peer] = max(self.credit[peer], consumed)
        if blocked:
            self.blocked_by.add(peer)

    # ---- receiving --------------------------------------------------------------------------------
    def arrived(self, peer: str, payload: np.ndarray) -> bool:
        """Count a message from ``peer``; False when the peer has exceeded the flood limit."""
        self.blocked_by.discard(peer)  # whatever it waited for, it is sending again
        self.received[peer] += message_bytes(payload)
        return self.received[peer] - self.consumed[peer] <= self.flood_limit

    def unread(self, peer: str) -> int:
        return self.received[peer] - self.consumed[peer]

    def took(self, peer: str, payload: np.ndarray) -> bool:
        """Count a message from ``peer`` returned by recv; True when a credit is due."""
        self.consumed[peer] += message_bytes(payload)
        return self.consumed[peer] - self.given[peer] >= self.window // 4

    def owed(self, peer: str) -> bool:
        """Whether ``peer`` has not yet been told of everything consumed."""
        return self.consumed[peer] > self.given[peer]

    def credit_message(self, peer: str, blocked: bool) -> np.ndarray:
        """The payload of a credit message to ``peer`` (and it counts as told)."""
        self.given[peer] = self.consumed[peer]
        return np.array([self.consumed[peer], int(blocked)], dtype=np.uint64)
