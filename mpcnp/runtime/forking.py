"""Forking party processes safely, and leaving nothing behind when the caller dies.

Fork safety. A fork copies one thread of a multi-threaded caller; locks other threads held stay
held, by nobody, in the child. The import machinery's are the ones that bite: a thread importing
a module holds that module's lock, so a child that imports the same module deadlocks. So the
caller forks only while no other thread is importing: it takes the global import lock (new
imports cannot begin), checks that no module lock is held by another thread, else lets go and
retries until ``deadline``, and forks every process of the run while holding it (each child then
releases its copy). Other locks held by other threads at the moment of the fork (a print in
progress, a user's lock) cannot be known; the supervisor's deadline ends such a run instead of
hanging (supervisor.py).

Dying with the caller. Each party process asks the kernel to SIGKILL it when the caller dies
(``PR_SET_PDEATHSIG``, Linux; it works on a stopped process too), and checks that the caller did
not die before it asked; elsewhere a thread of the child waits on a pipe from the caller and ends
the process when it closes. The socket directory is removed by the caller, or, when the caller is
killed (SIGKILL included) before it can, by a small janitor process forked first: it waits for the
caller to go away (its pipe closes) and removes the directory, unless the caller dismissed it.

Processes are named in the kernel (``mpcnp-server0``, ``mpcnp-janitor``; ``ps -o comm``). A process
is watched through a pidfd where the kernel has them (no inherited descriptor can delay it), else
through a pipe whose write end only the child holds.
"""
from __future__ import annotations

import _imp
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import time
from importlib import _bootstrap
from typing import Callable, Iterator

_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15
_LINUX = sys.platform.startswith("linux")


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc() if _LINUX else None


def _imports_in_progress() -> list[str]:
    """Modules another thread is importing now (their import locks are held)."""
    me = threading.get_ident()
    busy = []
    for name, ref in list(getattr(_bootstrap, "_module_locks", {}).items()):
        lock = ref() if callable(ref) else ref
        owner = getattr(lock, "owner", None)
        if owner is not None and owner != me:
            busy.append(name)
    return busy


@contextlib.contextmanager
def imports_quiet(deadline: float) -> Iterator[None]:
    """Hold the import lock while no other thread is importing (see the module docstring).

    Raises RuntimeError naming the modules if another thread is still importing at ``deadline``
    (``time.monotonic()``; inf: wait as long as it takes).
    """
    while True:
        _imp.acquire_lock()
        busy = _imports_in_progress()
        if not busy:
            break
        _imp.release_lock()
        if time.monotonic() >= deadline:
            raise RuntimeError(f"cannot fork the party processes safely: another thread is still "
                               f"importing {', '.join(busy)} after the run's timeout, and a party "
                               "importing it too would deadlock")
        time.sleep(0.005)
    try:
        yield
    finally:
        _imp.release_lock()


def _in_child(name: str, parent: int, follow: bool, close: list[int]) -> None:
    """First steps of a forked child: release the import lock, name the process, die with the
    caller (``follow``), close the caller's descriptors of other processes of the run."""
    _imp.release_lock()
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        if follow:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if follow and os.getppid() != parent:  # the caller died before we asked to follow it
        os._exit(1)


class Child:
    """A forked process running ``target()``, which must not return to the caller's code.

    ``sentinel``: a descriptor that becomes readable when the process ends. ``close``: descriptors
    of the caller's that the child must close at once (other processes' pipes).
    """

    def __init__(self, name: str, target: Callable[[], None], close: list[int]) -> None:
        self.name = name
        self.exitcode: int | None = None
        parent = os.getpid()
        lifeline_r, lifeline_w = (None, None) if _LIBC is not None else os.pipe()
        alive_r, alive_w = (None, None) if hasattr(os, "pidfd_open") else os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child
            code = 1
            try:
                _in_child(f"mpcnp-{name}", parent, True, close + [fd for fd in (lifeline_w, alive_r) if fd])
                if lifeline_r is not None:
                    threading.Thread(target=_follow_caller, args=(lifeline_r,), daemon=True).start()
                target()
                code = 0
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        self._lifeline = lifeline_w
        for fd in (lifeline_r, alive_w):
            if fd is not None:
                os.close(fd)
        self.sentinel = os.pidfd_open(self.pid) if alive_r is None else alive_r

    def descriptors(self) -> list[int]:
        return [fd for fd in (self.sentinel, self._lifeline) if fd is not None]

    def kill(self) -> None:
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def reap(self, block: bool = True) -> int | None:
        """The exit code (negative: killed by that signal) once the process ended, else None."""
        if self.exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def close(self) -> None:
        """Release the descriptors (after ``reap``)."""
        for fd in self.descriptors():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sentinel = self._lifeline = None


def _follow_caller(lifeline: int) -> None:
    """A child's thread (where the kernel cannot kill it for us): end the process once the caller
    has gone (its end of the pipe closed)."""
    while os.read(lifeline, 1):
        pass
    os._exit(1)


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"process died from signal {signal.Signals(-code).name}"
        except ValueError:
            return f"process died from signal {-code}"
    return f"process exited with code {code} before reporting"


def process_note(pid: int) -> str:
    """What the kernel says of a process when it is remarkable: stopped, or gone ("" otherwise, or
    where /proc does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
    return {b"T": "its process is stopped (SIGSTOP?)", b"t": "its process is stopped by a debugger",
            b"Z": "its process has ended"}.get(state, "")


class Janitor:
    """A process that removes ``directory`` should the caller die without removing it (see the
    module docstring). Fork it before the parties, so that it holds none of their descriptors."""

    def __init__(self, directory: str) -> None:
        parent = os.getpid()
        read_end, self._write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self._watch(directory, parent, read_end)
            finally:
                os._exit(0)
        os.close(read_end)

    def _watch(self, directory: str, parent: int, read_end: int) -> None:
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):  # outlive the caller's group
            signal.signal(sig, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # hold no pipe of the caller's (a shell capturing its output)
            os.dup2(devnull, fd)
        os.closerange(3, read_end)
        os.closerange(read_end + 1, 1 << 16)
        _in_child("mpcnp-janitor", parent, False, [])
        dismissed = False
        while True:
            data = os.read(read_end, 16)
            if not data:
                break
            dismissed = dismissed or b"d" in data
        if not dismissed:
            shutil.rmtree(directory, ignore_errors=True)

    def descriptors(self) -> list[int]:
        """The caller's end of the janitor's pipe: a party must not hold it, or the janitor would
        wait for the parties too."""
        return [self._write_end]

    def dismiss(self) -> None:
        """The caller cleaned up itself: the janitor exits without touching anything."""
        with contextlib.suppress(OSError):
            os.write(self._write_end, b"d")
        with contextlib.suppress(OSError):
            os.close(self._write_end)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
