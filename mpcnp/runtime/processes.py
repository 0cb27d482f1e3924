"""The processes backend: one forked OS process per party, ZeroMQ over ipc in a private directory.

Channels. Every party binds its ROUTER to a Unix-domain socket ``ipc://DIR/N`` in a directory the
caller creates per run with mode 0700 (``tempfile.mkdtemp``): only this user (and root) can reach
it, so no other local user can connect or listen in, and every address is known before anyone
binds (no port races, no exchange of endpoints: each child binds its own and connects to the
others', and ZeroMQ retries until they exist). CurveZMQ on loopback tcp protected these processes
against exactly those local users, by authenticating and encrypting every message, at a price: 16
MB each way under CURVE took 35 ms of a 1e6-element Pond multiply on two cores (~73 ms on tcp +
CURVE, ~37 ms on ipc; benchmarks/ops.py). The channels are plain only here and in memory; clusters,
whose channels cross tcp, always use CurveZMQ (runtime/cluster.py).

Forking (forking.py): only while no other thread of the caller is importing, so a child never
inherits a held import lock; every child dies with the caller (SIGKILL included), and a janitor
removes the socket directory should the caller die first. No ZeroMQ context exists across the fork.

Supervision (supervisor.py): the caller watches the children's reports (a pipe each), their deaths
(a pidfd each) and the status board they write (board.py), and never waits on a child: a death is
reported at once as a PartyError naming the party, a failure report settles the run, a stall
(a party waiting ``timeout`` seconds, or none doing anything) is blamed on the end of the chain of
waits. Then every child still running is killed, every child reaped, every descriptor closed and
the directory removed before ``run`` returns or raises: ``run`` ends within ``timeout`` + 2 s of a
fault, whatever the children do.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import struct
from multiprocessing.connection import wait
from typing import Callable

from mpcnp import ring
from mpcnp.net import ZmqTransport
from mpcnp.net.zmqnet import MAX_MESSAGE_BYTES, WINDOW_BYTES
from mpcnp.runtime.board import Board
from mpcnp.runtime.context import Config, PartyError, describe
from mpcnp.runtime.forking import Child, Janitor, describe_exit, imports_quiet, process_note
from mpcnp.runtime.lifecycle import OBSERVED, OK, OWN, Outcome, fill_missing, finish, party_main
from mpcnp.runtime.supervisor import MARGIN, Supervisor, supervise

_SUN_PATH_MAX = 103  # bytes of a Unix-domain socket path, NUL excluded (107 on Linux, 103 on macOS)


def _private_directory(parties: int) -> str:
    """A fresh 0700 directory for the run's sockets, under TMPDIR unless that makes paths too long."""
    directory = tempfile.mkdtemp(prefix="mpcnp-")
    if len(os.fsencode(directory)) + 1 + len(str(parties)) > _SUN_PATH_MAX:
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="mpcnp-", dir="/tmp")
    return directory


def _portable(outcome: Outcome) -> Outcome:
    """The outcome, or a version of it whose value/cause can cross the pipe (pickle)."""
    try:
        pickle.dumps(outcome)
        return outcome
    except Exception as exc:  # noqa: BLE001 - any pickling failure
        if outcome.kind == OK:
            return Outcome(outcome.party, OWN, error=PartyError(
                outcome.party, TypeError(f"the return value cannot travel back to the caller: {exc}")))
        error = outcome.error
        return Outcome(outcome.party, outcome.kind, error=PartyError(
            error.party, describe(error.cause), error.relayed), when=outcome.when)


def _keep_freed_memory() -> None:
    """Let glibc reuse freed large blocks instead of returning them to the OS: protocols allocate
    many multi-megabyte temporaries, and faulting their pages in again each time cost 20% of a
    1e6-element multiply and a third of an exact ReLU (benchmarks/ops.py, securenn.py). Blocks of
    256 MiB and more are still mapped and unmapped on their own, so that a large tensor's memory goes
    back to the system when it is freed. Only in our own party processes; a no-op where glibc's
    mallopt is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 256 << 20)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


_LENGTH = struct.Struct("<Q")


def _report(fd: int, outcome: Outcome) -> None:
    """Write ``outcome`` to the caller's pipe: its length, then its pickle (``_Run.reports`` reads
    it without ever blocking)."""
    data = _LENGTH.pack(0) + pickle.dumps(_portable(outcome))
    view = memoryview(bytearray(data))
    _LENGTH.pack_into(view, 0, len(data) - _LENGTH.size)
    while view:
        view = view[os.write(fd, view):]


def _party(name: str, index: int, directory: str, report: int, parties: tuple, config: Config,
           board: Board, fn: Callable, args: tuple, kwargs: dict) -> None:
    """Body of one party's process: bind, connect, run, report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles Ctrl-C and stops us
    ring.set_num_threads(1)  # three parties share the cores (two cores: one thread each)
    _keep_freed_memory()
    status = board.status(name)
    wait = None if config.wait is None else config.wait + MARGIN
    transport = None
    try:
        # Unsent messages when it closes mean a failure: a short linger keeps a dead peer from
        # delaying the exit.
        transport = ZmqTransport(name, f"ipc://{directory}/{index}", linger=min(config.timeout, 5.0),
                                 max_message_bytes=MAX_MESSAGE_BYTES, window=WINDOW_BYTES)
        transport.send_timeout = wait
        transport.connect({p: f"ipc://{directory}/{i}" for i, p in enumerate(parties)})
        outcome = party_main(name, parties, transport, config, fn, args, kwargs, status=status, wait=wait)
    except BaseException as exc:  # noqa: BLE001 - start-up failures must reach the caller too
        outcome = Outcome(name, OWN, error=PartyError(name, exc))
    # Report before closing: close() lingers on messages queued for peers that may be gone already,
    # and the caller kills every party as soon as all have reported. So flush the output first.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        _report(report, outcome)
    if transport is not None:
        transport.close()


class _Run:
    """The caller's side of one run: the children, their pipes, the directory, the janitor."""

    def __init__(self, parties: tuple[str, ...]) -> None:
        self.parties = parties
        self.board = Board(parties, shared=True)
        self.directory = _private_directory(len(parties))
        self.children: dict[str, Child] = {}
        self.pipes: dict[int, str] = {}          # the read end of each child's report pipe
        self.received: dict[int, bytearray] = {}
        self.sentinels: dict[int, str] = {}
        self.reported: set[str] = set()
        self.janitor: Janitor | None = None

    def start(self, config: Config, fn: Callable, args: tuple, kwargs: dict) -> None:
        """Fork the janitor, then every party (see forking.py)."""
        deadline = time.monotonic() + config.timeout if math.isfinite(config.timeout) else math.inf
        with imports_quiet(deadline):
            self.janitor = Janitor(self.directory)
            for index, name in enumerate(self.parties):
                reader, writer = os.pipe()
                inherited = list(self.pipes) + [reader] + self.janitor.descriptors()
                inherited += [fd for child in self.children.values() for fd in child.descriptors()]
                self.pipes[reader] = name
                self.received[reader] = bytearray()
                os.set_blocking(reader, False)

                def target(name=name, index=index, writer=writer) -> None:
                    _party(name, index, self.directory, writer, self.parties, config, self.board,
                           fn, args, kwargs)
                try:
                    child = Child(name, target, inherited)
                except OSError as exc:  # no process could be made (EAGAIN, ENOMEM)
                    raise PartyError(name, exc) from None
                finally:
                    os.close(writer)
                self.children[name] = child
                self.sentinels[child.sentinel] = name

    def reports(self, wait_for: float) -> list[Outcome]:
        """What the children reported within ``wait_for`` seconds: outcomes, and deaths (a child
        whose process ended without reporting). Reads only what is there: a child frozen halfway
        through its report cannot block the caller."""
        reported: list[Outcome] = []
        ready = wait(list(self.pipes) + list(self.sentinels), wait_for)
        # Read every pipe before any sentinel: a child that reported and then exited is not dead.
        for item in sorted(ready, key=lambda r: r not in self.pipes):
            if item in self.pipes:
                outcome = self._read(item)
                if outcome is not None:
                    reported.append(outcome)
            elif item in self.sentinels:
                name = self.sentinels.pop(item)
                code = self.children[name].reap()
                for fd in [f for f, n in self.pipes.items() if n == name]:
                    outcome = self._read(fd)  # what it reported just before it ended, if anything
                    if outcome is not None:
                        reported.append(outcome)
                if name not in self.reported:
                    self.reported.add(name)
                    reported.append(Outcome(name, OBSERVED, error=PartyError(name, describe_exit(code))))
        return reported

    def _read(self, fd: int) -> Outcome | None:
        """The outcome on a child's pipe once all of it has arrived (then the pipe is closed)."""
        buffer = self.received[fd]
        ended = False
        try:
            while chunk := os.read(fd, 1 << 20):
                buffer += chunk
            ended = True  # the child's end is closed: nothing more will come
        except BlockingIOError:
            pass
        except OSError:
            ended = True
        end = None if len(buffer) < _LENGTH.size else _LENGTH.size + _LENGTH.unpack_from(buffer)[0]
        if end is None or len(buffer) < end:
            if ended:  # it ended before a whole report: its sentinel tells
                self._close(fd)
            return None
        name = self.pipes[fd]
        self._close(fd)
        try:
            outcome = pickle.loads(buffer[_LENGTH.size:end])
        except Exception:  # noqa: BLE001 - a report cut short is no report
            return None
        self.reported.add(name)
        return outcome

    def _close(self, fd: int) -> None:
        self.pipes.pop(fd, None)
        self.received.pop(fd, None)
        os.close(fd)

    def note(self, name: str) -> str:
        child = self.children.get(name)
        return "" if child is None or child.exitcode is not None else process_note(child.pid)

    def stop(self) -> None:
        """Leave nothing behind: every child still running is killed (one that has reported has
        nothing left to do: its output is flushed, its sockets go with it), all are reaped, every
        descriptor closed, the directory removed."""
        for child in self.children.values():
            child.kill()
        for child in self.children.values():
            child.reap()
            child.close()
        for fd in list(self.pipes):
            self._close(fd)
        self.sentinels.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.janitor is not None:
            self.janitor.dismiss()


def run_processes(fn: Callable, args: tuple, kwargs: dict, parties: tuple[str, ...], config: Config) -> dict:
    """Each party a forked process; channels are ZeroMQ over ipc in a private directory. See the
    module docstring."""
    if not hasattr(os, "fork"):
        raise RuntimeError("the processes backend needs os.fork (POSIX); use backend='threads'")
    run = _Run(parties)
    try:
        run.start(config, fn, args, kwargs)
        supervisor = Supervisor(run.board, config.timeout, beats=True, process_note=run.note)
        outcomes, verdict = supervise(run.reports, parties, supervisor)
    finally:
        run.stop()
    if verdict is not None:
        raise verdict.error.with_traceback(None)
    return finish(fill_missing(outcomes, parties, config.timeout))
