"""The processes backend: one forked OS process per party, ZeroMQ over ipc in a private directory.

Channels. Every party binds its ROUTER to a Unix-domain socket ``ipc://DIR/N`` in a directory the
parent creates per run with mode 0700 (``tempfile.mkdtemp``): only this user (and root) can reach
it, so no other local user can connect or listen in, and names are fixed before anyone binds (no
port races, nothing left bound: the directory goes when ``run`` returns). CurveZMQ on loopback tcp
protected these processes against exactly those local users, by authenticating and encrypting
every message, at a price: 16 MB each way under CURVE took 35 ms of a 1e6-element Pond multiply on
two cores (~73 ms on tcp + CURVE, ~37 ms on ipc; benchmarks/ops.py). The channels are plain only
here and in memory; clusters, whose channels cross tcp, always use CurveZMQ (runtime/cluster.py).

Start-up: each child binds, reports its endpoint over its pipe, receives every party's endpoint and
connects. Then it runs ``party_main`` and sends its Outcome back over the pipe. No ZeroMQ context
exists across the fork.

Supervision: the parent waits on the pipes and the process sentinels together. A child that dies
(killed, crashed) is reported at once as a PartyError naming it; after any failure the other
children get ``FAILURE_GRACE`` seconds to report, then are terminated; every child is reaped and
every pipe closed before ``run`` returns or raises, so no process or socket file is left behind.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import time
from multiprocessing.connection import Connection, wait
from typing import Callable

from mpcnp import ring
from mpcnp.net import ZmqTransport
from mpcnp.runtime.context import Config, PartyError, describe
from mpcnp.runtime.lifecycle import FAILURE_GRACE, OBSERVED, OK, OWN, Outcome, fill_missing, finish, party_main

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
            error.party, describe(error.cause)), when=outcome.when)


def _keep_freed_memory() -> None:
    """Let glibc reuse freed large blocks instead of returning them to the OS: protocols allocate
    many multi-megabyte temporaries, and faulting their pages in again each time cost 20% of a
    1e6-element multiply and a third of an exact ReLU (benchmarks/ops.py, securenn.py). Only in our
    own party processes; a no-op where glibc's mallopt is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def _child(name: str, conn: Connection, endpoint: str, parties: tuple, config: Config,
           fn: Callable, args: tuple, kwargs: dict) -> None:
    """Body of one party's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    ring.set_num_threads(1)  # three parties share the cores (two cores: one thread each)
    _keep_freed_memory()
    transport = None
    try:
        transport = ZmqTransport(name, endpoint, linger=config.timeout)
        conn.send(("endpoint", transport.endpoint))
        if not conn.poll(config.timeout):
            return
        transport.connect(conn.recv())
        outcome = party_main(name, parties, transport, config, fn, args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - start-up failures must reach the parent too
        outcome = Outcome(name, OWN, error=PartyError(name, exc))
    # Report before closing: close() lingers on messages queued for peers that may be gone already.
    conn.send(("outcome", _portable(outcome)))
    if transport is not None:
        transport.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"process died from signal {signal.Signals(-code).name}"
        except ValueError:
            return f"process died from signal {-code}"
    return f"process exited with code {code} before reporting"


class _Children:
    """The forked parties and their pipes; ``stop`` leaves nothing running."""

    def __init__(self, parties, config, fn, args, kwargs):
        mp_context = multiprocessing.get_context("fork")
        self.directory = _private_directory(len(parties))
        self.conns: dict[str, Connection] = {}
        self.procs: dict[str, multiprocessing.Process] = {}
        for index, name in enumerate(parties):
            parent_end, child_end = mp_context.Pipe()
            endpoint = f"ipc://{self.directory}/{index}"
            proc = mp_context.Process(target=_child, name=f"mpcnp-{name}", daemon=True,
                                      args=(name, child_end, endpoint, parties, config, fn, args, kwargs))
            proc.start()
            child_end.close()
            self.conns[name], self.procs[name] = parent_end, proc
        # what the parent waits on: each child's pipe and its process sentinel, named
        self.by_pipe = {conn: name for name, conn in self.conns.items()}
        self.by_sentinel = {proc.sentinel: name for name, proc in self.procs.items()}

    def death(self, name: str) -> Outcome:
        """The Outcome of child ``name``, whose process ended without reporting (reaped here)."""
        self.procs[name].join()
        return Outcome(name, OBSERVED, error=PartyError(name, _describe_exit(self.procs[name].exitcode)))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 1.0
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns.values():
            conn.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _gather_endpoints(children: _Children, timeout: float) -> dict[str, str] | Outcome:
    """Every child's bound endpoint, or the Outcome of the first child that failed to start."""
    endpoints: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    lookup, sentinels = children.by_pipe, children.by_sentinel
    while len(endpoints) < len(children.conns):
        pending = [c for c, n in lookup.items() if n not in endpoints]
        ready = wait(pending + list(sentinels), max(0.0, deadline - time.monotonic()))
        if not ready:
            missing = next(n for n in children.conns if n not in endpoints)
            return Outcome(missing, OBSERVED, error=PartyError(missing, TimeoutError(
                f"did not start within {timeout:g} s")))
        for item in ready:
            if item in lookup:
                name = lookup[item]
                try:
                    tag, payload = item.recv()
                except EOFError:
                    continue  # its sentinel reports the death
                if tag == "outcome":
                    return payload
                endpoints[name] = payload
            elif sentinels[item] not in endpoints:
                return children.death(sentinels[item])
    return endpoints


def _collect(children: _Children, timeout: float) -> dict[str, Outcome]:
    """Every party's Outcome; a death is final at once, and the others get FAILURE_GRACE after it."""
    outcomes: dict[str, Outcome] = {}
    lookup, sentinels = children.by_pipe, children.by_sentinel
    deadline = None
    while len(outcomes) < len(children.conns):
        waiting = [c for c, n in lookup.items() if n not in outcomes]
        waiting += [s for s, n in sentinels.items() if n not in outcomes]
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait(waiting, remaining)
        if not ready:
            break
        # Read every pipe before any sentinel: a child that reported and then exited is not dead.
        for item in sorted(ready, key=lambda r: r not in lookup):
            name = lookup.get(item) or sentinels[item]
            if name in outcomes:
                continue
            if item in lookup:
                try:
                    _, outcome = item.recv()
                except EOFError:
                    continue
            else:
                outcome = children.death(name)
            outcomes[name] = outcome
            if outcome.kind != OK and (deadline is None or deadline > time.monotonic() + FAILURE_GRACE):
                deadline = time.monotonic() + FAILURE_GRACE
            elif deadline is None:
                deadline = time.monotonic() + timeout
    return fill_missing(outcomes, children.conns, timeout)


def run_processes(fn: Callable, args: tuple, kwargs: dict, parties: tuple[str, ...], config: Config) -> dict:
    """Each party a forked process; channels are ZeroMQ over ipc in a private directory. See the
    module docstring."""
    if not hasattr(os, "fork"):
        raise RuntimeError("the processes backend needs os.fork (POSIX); use backend='threads'")
    children = _Children(parties, config, fn, args, kwargs)
    try:
        started = _gather_endpoints(children, config.timeout)
        if isinstance(started, Outcome):
            outcomes = {started.party: started}
        else:
            for conn in children.conns.values():
                conn.send(started)
            outcomes = _collect(children, config.timeout)
    finally:
        children.stop()
    return finish(outcomes)
