"""The machine's floor for a cell, measured in the same run, and how far above it the cell runs.

Three limits, each measured here and now rather than quoted: the ring GEMM's peak (multiply-adds per
second of ``mpcnp.ring.matmul`` on one thread, as each party runs it); and, per backend and network,
the time of one round between the servers and the bandwidth of one channel (benchmarks/harness.py
``calibrate``). A cell's floor adds what it cannot avoid: its counted rounds at the round time, the
busiest party's bytes at the channel bandwidth, and the plaintext operation's multiply-adds at the
GEMM peak (a secure product computes at least the product). It is a floor for this implementation's
message pattern, not a bound on every protocol: computing, sending and waiting do not overlap here.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from mpcnp import ring


def gemm_peak(quick: bool = False) -> dict[str, float]:
    """{"gmacs": G multiply-adds/s of one-thread ring.matmul at 512^3 (256^3 when quick),
    "size": the size, "kernel": ring.BACKEND}; median of 3 after a warm-up."""
    size = 256 if quick else 512
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1 << 64, (size, size), dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 1 << 64, (size, size), dtype=np.uint64, endpoint=False)
    before = ring.num_threads()
    ring.set_num_threads(1)
    try:
        times = []
        for _ in range(4):
            started = time.perf_counter()
            ring.matmul(a, b)
            times.append(time.perf_counter() - started)
    finally:
        ring.set_num_threads(before)
    return {"gmacs": size ** 3 / statistics.median(times[1:]) / 1e9, "size": size, "kernel": ring.BACKEND}


def floor(rounds: int, busiest_bytes: int, ring_macs: int, round_s: float, bandwidth: float | None,
          gmacs: float) -> dict[str, float]:
    """The floor in seconds and its three parts (see the module docstring); ``bandwidth`` None: a
    zero-copy channel, whose bytes cost nothing beyond the round."""
    parts = {"rounds_s": rounds * round_s, "bytes_s": 0.0 if bandwidth is None else busiest_bytes / bandwidth,
             "compute_s": ring_macs / (gmacs * 1e9)}
    return {"floor_s": sum(parts.values()), **parts}
