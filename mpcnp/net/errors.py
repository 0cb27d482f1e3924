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
    """Nothing arrived from ``peer`` within ``timeout`` seconds (or, sending, ``peer`` did not make
    room in its inbox within ``timeout`` seconds: ``hint`` says which)."""

    def __init__(self, peer: str, timeout: float | None, hint: str = "") -> None:
        self.peer, self.timeout, self.hint = peer, timeout, hint
        super().__init__(f"no message from {peer} within {timeout} s{hint}", peer, timeout, hint)


class PeerAborted(NetError):
    """An abort notice arrived: ``sender`` (the authenticated party that sent it; None when the
    run's own supervisor stopped this party) says that ``accused`` failed with ``reason``.

    Only ``sender`` is known first-hand: ``accused`` and ``reason`` are what it claims.
    """

    def __init__(self, sender: str | None, accused: str, reason: str) -> None:
        self.sender, self.accused, self.reason = sender, accused, reason
        if sender is None:
            text = f"the run was stopped because {accused} failed: {reason}"
        elif sender == accused:
            text = f"run aborted because {sender} failed: {reason}"
        else:
            text = f"run aborted by {sender}, which reports that {accused} failed: {reason}"
        super().__init__(text, sender, accused, reason)


class PeerLost(NetError):
    """The connection to ``peer`` closed and did not come back (its process ended, or the network
    between us failed), or ``peer`` left the run; ``detail`` says which. ``after_failure``: it left
    in order after a failure (its own or another's), so its leaving is a consequence, not a cause."""

    def __init__(self, peer: str, detail: str, after_failure: bool = False) -> None:
        self.peer, self.detail, self.after_failure = peer, detail, after_failure
        super().__init__(f"lost the connection to {peer}: {detail}", peer, detail, after_failure)


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
