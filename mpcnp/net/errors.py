"""The channel errors: every one is a NetError with attributes naming the peer at fault.

They pickle with their attributes, so a runtime can carry them across processes.
"""
from __future__ import annotations


class NetError(Exception):
    """Base class of every channel error. A subclass passes its message and its constructor's
    arguments (``fields``), which is all pickling needs."""

    def __init__(self, message: str = "", *fields) -> None:
        super().__init__(message)
        self._fields = fields

    def __reduce__(self):
        return (type(self), self._fields) if self._fields else super().__reduce__()


class PeerTimeout(NetError):
    """Nothing arrived from ``peer`` within ``timeout`` seconds."""

    def __init__(self, peer: str, timeout: float | None, hint: str = "") -> None:
        self.peer, self.timeout, self.hint = peer, timeout, hint
        super().__init__(f"no message from {peer} within {timeout} s{hint}", peer, timeout, hint)


class PeerAborted(NetError):
    """Party ``origin`` failed with ``reason`` and told everyone the run is over."""

    def __init__(self, origin: str, reason: str) -> None:
        self.origin, self.reason = origin, reason
        super().__init__(f"run aborted because {origin} failed: {reason}", origin, reason)


class FrameError(NetError):
    """A malformed message from ``peer``; ``detail`` says what was wrong with it."""

    def __init__(self, peer: str, detail: str) -> None:
        self.peer, self.detail = peer, detail
        super().__init__(f"malformed message from {peer}: {detail}", peer, detail)


class HandshakeError(NetError):
    """The secure handshake with ``peer`` failed (a key or configuration mismatch)."""

    def __init__(self, peer: str, detail: str) -> None:
        self.peer, self.detail = peer, detail
        super().__init__(f"cannot talk to {peer}: {detail}", peer, detail)
