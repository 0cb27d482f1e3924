"""The caller's supervision of a run on the threads and processes backends: when to stop, whom to blame.

The supervisor keeps its own clock and reads only the status board (board.py), the parties' reports
and, on the processes backend, the operating system's word on each process (death, stopped). It
never waits on a party: a frozen, deadlocked or flooding party cannot stall it.

When to stop. A report of a failure raised in a party's own code, a malformed message, a refused
handshake or a dead process is decisive: the run stops at once. A relayed report (an abort notice)
or a party's own timeout waits ``FAILURE_GRACE`` for the first-hand report it stems from. Without
any report, the run is stalled when a party has waited on the same peer for ``timeout`` seconds, or
when no party has waited, started or finished anything for ``timeout`` seconds (every party stuck
in its own code: a deadlock). The parties' own receives wait ``MARGIN`` longer than ``timeout``, so
that the supervisor, which sees all of them at once, is the one that decides.

Whom to blame for a stall: follow the waits. The party the waiter waits on is at fault, unless it
is itself waiting (with a fresh heartbeat) on a third party, and so on: the first party on the chain
that is not waiting (still starting, busy or stuck in its own code, finished without sending what
was expected) or whose heartbeat stopped (frozen) is named, with the chain as the explanation.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from mpcnp.runtime.board import DONE, RUNNING, STARTING, WAITING, Board, Row
from mpcnp.runtime.context import PartyError
from mpcnp.runtime.lifecycle import OBSERVED, OK, OWN, Outcome

POLL = 0.05            # seconds between two looks at the board
MARGIN = 1.0           # a supervised party's receives wait this much longer than the timeout
STALE_BEAT = 1.5       # a waiting party that has not beaten for this long is not alive
FAILURE_GRACE = 0.5    # after a relayed report, how long to wait for the first-hand one


def decisive(outcome: Outcome) -> bool:
    """Whether a failure report is first-hand (the run can stop on it at once)."""
    if outcome.kind == OWN:
        return True
    return outcome.kind == OBSERVED and not isinstance(outcome.error.cause, TimeoutError)


class Supervisor:
    """Watches ``board`` with ``timeout``; ``beats``: whether waiting parties beat (they do over
    ZeroMQ, not in memory); ``process_note(name)``: what the operating system says of a party's
    process ("" when nothing remarkable)."""

    def __init__(self, board: Board, timeout: float, beats: bool,
                 process_note: Callable[[str], str] = lambda name: "") -> None:
        self.board = board
        self.timeout = timeout
        self.beats = beats
        # a waiting party beats every 100 ms: one silent for this long is frozen (shorter under short
        # timeouts, so that a frozen party looks frozen before the stall is decided)
        self.stale = min(STALE_BEAT, max(0.3, timeout / 2))
        self.process_note = process_note
        self._suspect: tuple | None = None

    # ---- is the run stalled? --------------------------------------------------------------------
    def stalled(self, now: float | None = None) -> Outcome | None:
        """An OBSERVED Outcome blaming the party at fault when the run is stalled (confirmed by two
        consecutive looks), else None."""
        if math.isinf(self.timeout):
            return None
        now = time.monotonic() if now is None else now
        rows = self.board.read()
        suspect = self._suspect_of(rows, now)
        confirmed = suspect is not None and suspect == self._suspect
        self._suspect = suspect
        if not confirmed:
            return None
        waiter = suspect[0]
        row = {r.name: r for r in rows}[waiter]
        if row.state == WAITING and not self._frozen(row, now):
            culprit, text = self.follow(rows, waiter, now)
        else:
            culprit = waiter
            text = f"no party sent or received anything for {self.timeout:g} s: " + self._idle(row, now)
        return Outcome(culprit, OBSERVED, error=PartyError(culprit, TimeoutError(text)))

    def _suspect_of(self, rows: list[Row], now: float) -> tuple | None:
        """(party, its row's key) of the longest wait past the timeout, or of the longest idle party
        when nobody waits and every unfinished party has been idle past it; None otherwise."""
        waiting = [r for r in rows if r.state == WAITING and not self._frozen(r, now)]
        if waiting:
            longest = min(waiting, key=lambda r: r.since)
            return (longest.name, longest.key()) if now - longest.since >= self.timeout else None
        active = [r for r in rows if r.state != DONE]
        if active and all(now - r.since >= self.timeout for r in active):
            oldest = min(active, key=lambda r: r.since)
            return oldest.name, oldest.key()
        return None

    # ---- who is at fault? ---------------------------------------------------------------------
    def follow(self, rows: list[Row], waiter: str, now: float) -> tuple[str, str]:
        """(culprit, explanation) for ``waiter``'s wait: the end of its chain of waits."""
        by_name = {r.name: r for r in rows}
        row = by_name[waiter]
        target = self.board.peer_name(row.peer)
        if target is None:
            return waiter, f"{waiter} waited {now - row.since:.1f} s" + self._note(waiter)
        text = [f"{waiter} received nothing from {target} within {self.timeout:g} s"]
        chain = [waiter]
        while True:
            row = by_name[target]
            if row.state == WAITING:
                if self._frozen(row, now):
                    text.append(self._idle(row, now))
                    return target, "; ".join(text)
                after = self.board.peer_name(row.peer)
                if after is None or after in chain or after == target:
                    circle = " and ".join(dict.fromkeys(chain[chain.index(after):] + [target])) \
                        if after in chain else target
                    text.append(f"{circle} wait for each other (their programs diverged?)")
                    return target, "; ".join(text)
                text.append(f"{target} was itself waiting for {after} (for {now - row.since:.1f} s)")
                chain.append(target)
                target = after
                continue
            text.append(self._idle(row, now))
            return target, "; ".join(text)

    def _frozen(self, row: Row, now: float) -> bool:
        """A waiting party whose heartbeat stopped: it is not waiting, it is stopped."""
        return self.beats and now - row.beat > self.stale

    def _idle(self, row: Row, now: float) -> str:
        """Why party ``row`` sends nothing, from its state."""
        name, spent = row.name, now - row.since
        if row.state == WAITING:  # and frozen
            return (f"{name} stopped responding {now - row.beat:.1f} s ago while it waited for "
                    f"{self.board.peer_name(row.peer)}{self._note(name)}")
        if row.state == STARTING:
            return f"{name} did not start within {spent:.1f} s{self._note(name)}"
        if row.state == RUNNING:
            return f"{name} has run its own code for {spent:.1f} s without sending (busy, stuck or " \
                   f"frozen){self._note(name)}"
        return f"{name} finished {spent:.1f} s ago without sending it (their programs diverged?)"

    def _note(self, name: str) -> str:
        note = self.process_note(name)
        return f" ({note})" if note else ""


def supervise(reports: Callable[[float], list[Outcome]], parties: tuple[str, ...],
              supervisor: Supervisor) -> tuple[dict[str, Outcome], Outcome | None]:
    """Gather the parties' outcomes until all reported, a failure settles the run, or the run stalls.

    ``reports(wait)`` returns the outcomes that arrived within ``wait`` seconds (possibly none).
    Returns (the outcomes reported, the supervisor's own verdict on a stall or None). Never waits
    longer than ``POLL`` on anything.
    """
    outcomes: dict[str, Outcome] = {}
    failed_at = None
    while len(outcomes) < len(parties):
        for outcome in reports(POLL):
            outcomes.setdefault(outcome.party, outcome)
        failures = [o for o in outcomes.values() if o.kind != OK]
        if failures:
            if any(decisive(o) for o in failures):
                break
            failed_at = failed_at or time.monotonic()
            if time.monotonic() - failed_at >= FAILURE_GRACE:
                break
            continue
        verdict = supervisor.stalled()
        if verdict is not None:
            return outcomes, verdict
    return outcomes, None


__all__ = ["POLL", "MARGIN", "STALE_BEAT", "FAILURE_GRACE", "Supervisor", "decisive", "supervise"]
