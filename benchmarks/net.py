"""Benchmark of the channel layer against bare pyzmq, two parties.

Backends: the memory transport (two threads, the threads backend); ZmqTransport over ipc plain (the
processes backend's channels), over tcp loopback with CURVE (a cluster's) and over tcp plain
(insecure=True, to separate our overhead from CURVE's) in two forked processes; bare pyzmq PAIR
sockets over tcp (plain and CURVE) and ipc, measured in the same run.
Rows: ping-pong of a 64-byte array (median round trip), simultaneous exchange (both send, then
both receive; median per exchange), and one-way transfer of 1, 8 and 64 MiB arrays (median time
from send until a small acknowledgement returns, reported as GB/s).

The cases run in turn, ``--rounds`` times (the machine is shared and noisy): each cell is the
median over the rounds of the per-round medians. Ratios are time ratios, ours / bare (lower is
better; the target, in benchmarks/published.py, holds for the like-for-like ratios).
Usage: python -m benchmarks net [--quick] [--rounds N]
"""
from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import threading
import time

import numpy as np

from benchmarks.published import TARGETS, meets

MiB = 1 << 20
SIZES = (1 * MiB, 8 * MiB, 64 * MiB)
SMALL = np.arange(8, dtype=np.uint64)
TIMEOUT = 60.0


class TransportChannel:
    """The benchmark's view of a Transport: a channel to the one other party."""

    def __init__(self, transport, peer):
        self.t, self.peer = transport, peer

    def send(self, array):
        self.t.send(self.peer, array)

    def recv(self):
        return self.t.recv(self.peer, TIMEOUT)


class BareChannel:
    """What an application would write with pyzmq alone: one frame, zero-copy when large."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, array):
        self.sock.send(array, copy=array.nbytes < 65536)

    def recv(self):
        return np.frombuffer(self.sock.recv(copy=False), np.uint64)


def script(role, channel, n_small, reps):
    """The measured program; returns {row: seconds} on role 'a', {} on 'b'."""
    out = {}
    small_reply = SMALL + 1
    warm = n_small // 10
    for row in ("ping-pong", "exchange"):
        times = []
        for i in range(warm + n_small):
            t0 = time.perf_counter()
            if role == "a" or row == "exchange":
                channel.send(SMALL)
                reply = channel.recv()
            else:
                reply = channel.recv()
                channel.send(small_reply)
            times.append(time.perf_counter() - t0)
        assert reply[0] in (0, 1) and reply.size == 8
        out[row] = statistics.median(times[warm:])
    for size in SIZES:
        data = np.random.default_rng(size).integers(0, 2**63, size // 8, dtype=np.uint64)
        n = reps if size < 64 * MiB else max(3, reps // 3)
        times = []
        for i in range(n + 1):
            t0 = time.perf_counter()
            if role == "a":
                channel.send(data)
                channel.recv()
            else:
                got = channel.recv()
                if i == 0:
                    assert np.array_equal(got, data)
                channel.send(SMALL)
            times.append(time.perf_counter() - t0)
        out[size] = statistics.median(times[1:])
    return out if role == "a" else {}


# ---- backends ---------------------------------------------------------------------------------
def run_memory(n_small, reps):
    from mpcnp.net import MemoryNetwork

    net = MemoryNetwork(["a", "b"])
    result = {}
    worker = threading.Thread(target=script, args=("b", TransportChannel(net.transport("b"), "a"),
                                                   n_small, reps))
    worker.start()
    result.update(script("a", TransportChannel(net.transport("a"), "b"), n_small, reps))
    worker.join()
    return result


def _mpcnp_party(role, kind, keys, conn, n_small, reps):
    from mpcnp.net import CurveConfig, ZmqTransport

    other = "b" if role == "a" else "a"
    if kind == "tcp+curve":
        curve = CurveConfig(keys[role][0], keys[role][1], {other: keys[other][0]})
        t = ZmqTransport(role, "tcp://127.0.0.1:0", curve=curve)
    elif kind == "tcp":
        t = ZmqTransport(role, "tcp://127.0.0.1:0", insecure=True)
    else:
        t = ZmqTransport(role, f"ipc://{keys['dir']}/{role}")
    conn.send(t.endpoint)
    t.connect(conn.recv())
    t.wait_ready(TIMEOUT)
    conn.send(script(role, TransportChannel(t, other), n_small, reps))
    t.close()


def _bare_party(role, kind, keys, conn, n_small, reps):
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 1000
    if kind == "tcp+curve":
        sock.curve_publickey, sock.curve_secretkey = keys[role][0].encode(), keys[role][1].encode()
        if role == "b":
            sock.curve_server = True
        else:
            sock.curve_serverkey = keys["b"][0].encode()
    if role == "b":
        sock.bind(f"ipc://{keys['dir']}/bare" if kind == "ipc" else "tcp://127.0.0.1:0")
        conn.send(sock.last_endpoint.decode())
    else:
        sock.connect(conn.recv())
    conn.send(script(role, BareChannel(sock), n_small, reps))
    sock.close()
    ctx.term()


def run_processes(target, kind, n_small, reps):
    """Fork the two parties (no ZeroMQ context exists in this process), return a's results."""
    from mpcnp.net import keygen

    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="mpcnp-bench-", dir="/tmp") as tmp:
        keys = {"a": keygen(), "b": keygen(), "dir": tmp}
        pipes = {r: ctx.Pipe() for r in "ab"}
        procs = [ctx.Process(target=target, args=(r, kind, keys, pipes[r][1], n_small, reps))
                 for r in "ab"]
        for p in procs:
            p.start()
        conn_a, conn_b = pipes["a"][0], pipes["b"][0]
        if target is _bare_party:
            conn_a.send(conn_b.recv())
        else:
            endpoints = {"a": conn_a.recv(), "b": conn_b.recv()}
            conn_a.send(endpoints)
            conn_b.send(endpoints)
        result = conn_a.recv()
        conn_b.recv()
        for p in procs:
            p.join(TIMEOUT)
        return result


# ---- report -----------------------------------------------------------------------------------
ROWS = ["ping-pong", "exchange", *SIZES]


def row_label(row):
    return f"{row} (us)" if isinstance(row, str) else f"{row // MiB} MiB (GB/s)"


def cell(row, seconds):
    return f"{seconds * 1e6:.0f}" if isinstance(row, str) else f"{(row / seconds) / 1e9:.2f}"


RATIOS = {
    "curve/bare curve": ("zmq tcp+curve", "bare tcp+curve"),
    "curve/bare tcp": ("zmq tcp+curve", "bare tcp"),
    "ipc/bare ipc": ("zmq ipc", "bare ipc"),
    "ipc/bare tcp": ("zmq ipc", "bare tcp"),
    "tcp/bare tcp": ("zmq tcp", "bare tcp"),
}
LIKE_FOR_LIKE = ("curve/bare curve", "ipc/bare ipc", "tcp/bare tcp")


def run(quick: bool = False, rounds: int = 5) -> dict:
    """Print the table and return {"seconds": {case: {row: s}}, "ratios": {...}, "targets": {...}}."""
    n_small, reps = (200, 5) if quick else (1000, 15)
    cases = {
        "memory": lambda: run_memory(n_small, reps),
        "zmq tcp+curve": lambda: run_processes(_mpcnp_party, "tcp+curve", n_small, reps),
        "zmq ipc": lambda: run_processes(_mpcnp_party, "ipc", n_small, reps),
        "zmq tcp": lambda: run_processes(_mpcnp_party, "tcp", n_small, reps),
        "bare tcp+curve": lambda: run_processes(_bare_party, "tcp+curve", n_small, reps),
        "bare ipc": lambda: run_processes(_bare_party, "ipc", n_small, reps),
        "bare tcp": lambda: run_processes(_bare_party, "tcp", n_small, reps),
    }
    runs = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            runs[name].append(case())
    results = {name: {row: statistics.median(r[row] for r in rs) for row in ROWS}
               for name, rs in runs.items()}
    names = list(cases)
    widths = [max(len(n), 6) for n in names] + [max(len(r), 6) for r in RATIOS]
    print(f"{'':16}" + "  ".join(f"{h:>{w}}" for h, w in zip(names + list(RATIOS), widths)))
    for row in ROWS:
        cells = [cell(row, results[n][row]) for n in names]
        cells += [f"{results[a][row] / results[b][row]:.2f}" for a, b in RATIOS.values()]
        print(f"{row_label(row):16}" + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    print("ratios: time ours / time bare; CURVE cost = bare tcp+curve / bare tcp: "
          + ", ".join(f"{row_label(r).split(' (')[0]} {results['bare tcp+curve'][r] / results['bare tcp'][r]:.1f}x"
                      for r in ROWS))
    ratios = {name: {row_label(r): results[a][r] / results[b][r] for r in ROWS} for name, (a, b) in RATIOS.items()}
    worst = max(ratios[name][row] for name in LIKE_FOR_LIKE for row in ratios[name])
    values = {t.name: worst for t in TARGETS if t.op == "net"}
    for target in (t for t in TARGETS if t.op == "net"):
        print(f"target {target.name}: worst like-for-like ratio {worst:.2f} ({target.reference}) "
              f"{'ok' if meets(target, worst) else 'MISSED'}")
    return {"seconds": {n: {row_label(r): results[n][r] for r in ROWS} for n in names}, "ratios": ratios,
            "targets": values}
