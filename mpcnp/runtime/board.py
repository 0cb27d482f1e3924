"""The status board of a run: what each party is doing, written by the party itself, read by the run's
supervisor (supervisor.py) in the caller, which needs nothing else from the parties to see that a
run is stuck and whom to blame.

One row per party, four float64 fields: ``state`` (STARTING, RUNNING, WAITING, DONE), ``peer`` (the
index of the party it waits for, -1 for none), ``since`` (when the state began, ``time.monotonic``,
which is system-wide on the platforms with fork) and ``beat`` (the last sign of life of a waiting
party: transports that poll beat about every 100 ms; NaN where they do not). The caller creates the
board with every party STARTING; a party's ``PartyStatus`` is the WaitObserver its transport tells of
every wait. On the processes backend the rows live in an anonymous shared mapping made before the
fork, so a party that is frozen or deadlocked leaves its last state there for the caller to read.

A party writes its own row only, ``state`` last: the supervisor acts only on what it read twice.
Cost: four stores per wait, nothing per message that is already there.
"""
from __future__ import annotations

import math
import mmap
import time
from typing import Sequence

import numpy as np

from mpcnp.net import WaitObserver

STARTING, RUNNING, WAITING, DONE = 0.0, 1.0, 2.0, 3.0
STATE_NAMES = {STARTING: "starting", RUNNING: "running", WAITING: "waiting", DONE: "done"}
STATE, PEER, SINCE, BEAT = range(4)


class Board:
    """The rows of ``parties``; ``shared``: in memory that forked children share with the caller."""

    def __init__(self, parties: Sequence[str], shared: bool) -> None:
        self.parties = tuple(parties)
        self.index = {name: i for i, name in enumerate(self.parties)}
        shape = (len(self.parties), 4)
        if shared:
            # anonymous and MAP_SHARED: the children's writes are the caller's reads
            self._memory = mmap.mmap(-1, 8 * shape[0] * shape[1])
            self.rows = np.frombuffer(self._memory, dtype=np.float64).reshape(shape)
        else:
            self.rows = np.zeros(shape)
        self.rows[:, STATE] = STARTING
        self.rows[:, PEER] = -1
        self.rows[:, SINCE] = time.monotonic()
        self.rows[:, BEAT] = math.nan

    def status(self, name: str) -> "PartyStatus":
        """The observer through which party ``name`` writes its row."""
        return PartyStatus(self, name)

    def read(self) -> list["Row"]:
        """Every party's row as it stands (a copy)."""
        rows = self.rows.copy()
        return [Row(name, *rows[i]) for i, name in enumerate(self.parties)]

    def peer_name(self, index: float) -> str | None:
        return self.parties[int(index)] if index >= 0 else None


class Row:
    """One party's row, read by the supervisor."""

    __slots__ = ("name", "state", "peer", "since", "beat")

    def __init__(self, name: str, state: float, peer: float, since: float, beat: float) -> None:
        self.name, self.state, self.peer, self.since, self.beat = name, state, peer, since, beat

    def key(self) -> tuple:
        return (self.state, self.peer, self.since)


class PartyStatus(WaitObserver):
    """Party ``name``'s pen on the board; its transport calls ``waiting``, ``beat`` and ``resumed``."""

    def __init__(self, board: Board, name: str) -> None:
        self._row = board.rows[board.index[name]]
        self._index = board.index

    def _enter(self, state: float) -> None:
        self._row[SINCE] = time.monotonic()
        self._row[STATE] = state

    def running(self) -> None:
        """The party's code runs (set when it starts, and after every wait)."""
        self._enter(RUNNING)

    def done(self) -> None:
        """The party finished, successfully or not, and is reporting."""
        self._enter(DONE)

    def waiting(self, peer: str) -> None:
        row = self._row
        now = time.monotonic()
        row[PEER] = self._index.get(peer, -1)
        row[BEAT] = now
        row[SINCE] = now
        row[STATE] = WAITING

    def beat(self, peer: str) -> None:
        self._row[PEER] = self._index.get(peer, -1)
        self._row[BEAT] = time.monotonic()

    def resumed(self) -> None:
        self._enter(RUNNING)
