"""Timing private operations inside one mp.run, the same way on every backend and network.

A repetition: the core parties meet at a barrier (``mpcnp.runtime.context.barrier``: everything in
flight received, Lamport clocks equal), exchange their clock readings and agree to start at the
latest reading plus a margin (longer than one message takes on the emulated network); each sleeps
until then, runs the operation on fresh private copies of its inputs (``x + 0.0``: no Beaver mask
cached) and notes when it finished. The repetition's time is the last party's finish minus the
agreed start; the first repetition warms up and is dropped. This needs one clock for all parties,
which every configuration here has: threads, forked processes and network namespaces all run on
one host and read CLOCK_MONOTONIC (``time.monotonic``).

Counts per party from ``mp.stats()`` deltas around the operation alone: payload bytes sent (what the
cost table counts), bytes sent with framing headers (what travels), and the Lamport clock increase
(the operation's rounds, since every clock was equal at the start). The operation's result of the
last repetition is revealed to server0 (untimed), which compares it with NumPy on the same inputs.

Calibration (``calibrate``) measures, in the same configuration, what the floor of benchmarks/limits.py
needs: the time of one round between the servers (a simultaneous exchange of 8 bytes) and the
bandwidth of one channel (a one-way transfer and its small answer, less a small ping-pong).
"""
from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mpcnp as mp
from benchmarks.ops import operation
from mpcnp.runtime.context import CORE_PARTIES, SERVER0, SERVERS, barrier, current


@dataclass(frozen=True)
class Job:
    """What one cell runs inside a party: ``reps`` timed repetitions (after one warm-up) of
    operation ``op`` at size ``size``, under ``truncation``, on inputs drawn with ``seed``."""

    op: str
    size: str
    truncation: str
    reps: int
    seed: int
    margin: float          # seconds between the agreed start and the latest clock reading
    profile: bool = False  # cProfile each party's last repetition


@dataclass
class Measurement:
    """What a cell measured, merged over the parties."""

    seconds: list[float]
    payload_bytes: dict[str, int]   # per party, payload bytes sent (the cost table's unit)
    wire_bytes: dict[str, int]      # per party, with framing headers
    rounds: dict[str, int]          # per party, Lamport clock increase
    consistent: bool                # every repetition counted the same
    max_error: float | None
    late_s: float                   # the longest any party overslept the agreed start
    profiles: dict[str, str] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def synchronized_start(ctx, margin: float) -> float:
    """Barrier, then agree on a start time ``margin`` after the latest clock reading and sleep
    until it; returns the agreed start (time.monotonic)."""
    barrier(ctx)
    mine = np.array([time.monotonic()])
    others = [p for p in CORE_PARTIES if p != ctx.name]
    for peer in others:
        ctx.send(peer, mine)
    start = max([mine[0]] + [float(ctx.recv(peer)[0]) for peer in others]) + margin
    wait = start - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    return start


def _counts() -> tuple[int, int, int]:
    s = mp.stats()
    return s["payload_bytes_sent"], s["bytes_sent"], s["rounds"]


def party_program(jobs: list[Job]) -> list[dict[str, Any]]:
    """Run every job on this party (all parties run the same jobs in order); JSON-friendly output."""
    ctx = current()
    out = []
    for job in jobs:
        op = operation(job.op)
        dims = op.parse(job.size)
        arrays = op.inputs(np.random.default_rng(job.seed), dims)
        tensors = [mp.private(a, owner=SERVER0) for a in arrays]
        state = None if op.prepare is None else op.prepare(dims, ctx.config.protocol)  # untimed
        reps, profile_text = [], ""
        with mp.truncation(job.truncation):
            for rep in range(job.reps + 1):
                fresh = [t + 0.0 for t in tensors]
                profiler = cProfile.Profile() if job.profile and rep == job.reps else None
                start = synchronized_start(ctx, job.margin)
                began = time.monotonic()
                before = _counts()
                if profiler:
                    profiler.enable()
                result = op.private(dims, *fresh) if state is None else op.private(dims, state, *fresh)
                end = time.monotonic()
                if profiler:
                    profiler.disable()
                    text = io.StringIO()
                    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
                    profile_text = text.getvalue()
                after = _counts()
                if rep:
                    reps.append([start, end, began - start] + [a - b for a, b in zip(after, before)])
            revealed = result.reveal(to=SERVER0)
        error = None
        if revealed is not None:
            expected = op.plain(dims, *arrays)
            error = float(np.max(np.abs(revealed - expected))) if expected.size else 0.0
        out.append({"reps": reps, "error": error, "profile": profile_text})
    barrier(ctx)
    return out


def merge(job: Job, per_party: dict[str, dict[str, Any]]) -> Measurement:
    """One job's records from every core party (``party_program``'s entries) as a Measurement."""
    parties = [p for p in CORE_PARTIES if p in per_party]
    if len(parties) != len(CORE_PARTIES):
        raise RuntimeError(f"results from {', '.join(parties)} only; every core party must report")
    records = {p: per_party[p]["reps"] for p in parties}
    seconds, late = [], 0.0
    for i in range(job.reps):
        starts = {records[p][i][0] for p in parties}
        if len(starts) != 1:
            raise RuntimeError(f"the parties agreed on different start times: {sorted(starts)}")
        seconds.append(max(records[p][i][1] for p in parties) - starts.pop())
        late = max(late, max(records[p][i][2] for p in parties))
    counts = {p: {tuple(r[3:]) for r in records[p]} for p in parties}
    last = {p: records[p][-1][3:] for p in parties}
    return Measurement(
        seconds=seconds,
        payload_bytes={p: int(last[p][0]) for p in parties},
        wire_bytes={p: int(last[p][1]) for p in parties},
        rounds={p: int(last[p][2]) for p in parties},
        consistent=all(len(c) == 1 for c in counts.values()),
        max_error=per_party[SERVER0]["error"],
        late_s=late,
        profiles={p: per_party[p]["profile"] for p in parties if per_party[p]["profile"]})


def measure(job: Job, protocol: str, backend: str, network=None, timeout: float = 600.0) -> Measurement:
    """Run ``job`` in one mp.run and merge what the parties measured."""
    results = mp.run(party_program, [job], protocol=protocol, backend=backend, network=network,
                     timeout=timeout)
    return merge(job, {p: r[0] for p, r in results.items() if p in CORE_PARTIES})


# ---- calibration -----------------------------------------------------------------------------------
def _server0_times(ctx, count: int, first, reply) -> list[float]:
    """server0's times of ``count`` ping-pongs (after one warm-up): server0 sends ``first``, server1
    answers ``reply``; the servers meet with an exchange before each."""
    other, small, times = ctx.other_server, np.zeros(1, np.uint64), []
    for _ in range(count + 1):
        ctx.send(other, small)          # both ready
        ctx.recv(other)
        began = time.monotonic()
        if ctx.name == SERVER0:
            ctx.send(other, first)
            ctx.recv(other)
        else:
            ctx.recv(other)
            ctx.send(other, reply)
        times.append(time.monotonic() - began)
    return times[1:]


def calibration_program(exchanges: int, transfer_bytes: int, transfers: int) -> dict[str, float] | None:
    """On server0: {"round_s": median time of one simultaneous 8-byte exchange between the servers
    (one round), "pingpong_s": of an 8-byte ping-pong (two), "bandwidth": bytes/s of a one-way
    transfer of ``transfer_bytes`` answered by 8 bytes, less a ping-pong, or None when that is no
    longer than the ping-pong: a zero-copy channel (threads)}; None elsewhere."""
    ctx = current()
    barrier(ctx)
    result = None
    if ctx.name in SERVERS:
        other, small = ctx.other_server, np.zeros(1, np.uint64)
        rounds = []
        for _ in range(exchanges + 1):
            began = time.monotonic()
            ctx.send(other, small)
            ctx.recv(other)
            rounds.append(time.monotonic() - began)
        pingpong_s = statistics.median(_server0_times(ctx, exchanges, small, small))
        transfer_s = statistics.median(_server0_times(ctx, transfers, np.ones(transfer_bytes, np.uint8), small))
        if ctx.name == SERVER0:
            extra = transfer_s - pingpong_s
            result = {"round_s": statistics.median(rounds[1:]), "pingpong_s": pingpong_s,
                      "bandwidth": transfer_bytes / extra if extra > 0 else None}
    barrier(ctx)
    return result


def calibrate(backend: str, network=None, quick: bool = False) -> dict[str, float]:
    """Round time and channel bandwidth between the servers on ``backend`` under ``network``."""
    exchanges, size, transfers = (20, 1 << 20, 3) if quick else (50, 8 << 20, 5)
    results = mp.run(calibration_program, exchanges, size, transfers, backend=backend, network=network,
                     timeout=600.0)
    return results[SERVER0]
