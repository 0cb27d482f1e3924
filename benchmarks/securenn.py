"""Benchmark of SecureNN's exact nonlinear layers: ReLU of 1e5 elements, 2x2 max pooling of 1x16x24x24.

Targets (issue "SecureNN: exact comparisons..."): ReLU <= 100 ms, maxpool <= 110 ms. For reference,
CrypTen 0.4 takes 177-249 ms and 314-335 ms, TF Encrypted's SecureNN ReLU 1.33 s.

Each measurement runs inside one mp.run: the parties meet at a barrier (two all-to-all exchanges, which
also equalise the Lamport clocks), run the layer on a fresh private tensor (no Beaver mask cached), and
meet again; the time of a repetition is the largest over the parties, and the table gives the median
and the minimum over the repetitions. Bytes are payload bytes summed over the parties, per element of
the input (ReLU) or per window (maxpool); rounds the largest per-party increase of the Lamport clock.
The backend is "processes" when it exists (one OS process per party, ZeroMQ on loopback), otherwise
"threads"; ``--backend`` chooses. ``--profile`` prints each party's cProfile of one repetition.

``MPCNP_RING=numpy`` in the environment runs every kernel (ring and Z_p) in NumPy.

Usage: python benchmarks/securenn.py [--reps 7] [--backend processes|threads] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mpcnp as mp  # noqa: E402
from mpcnp import comparisons, ring  # noqa: E402
from mpcnp.protocols import zp  # noqa: E402
from mpcnp.runtime.context import CORE_PARTIES, current  # noqa: E402


def barrier() -> None:
    """Two all-to-all exchanges among the core parties: everyone is here, and every clock is equal."""
    ctx = current()
    for _ in range(2):
        for peer in CORE_PARTIES:
            if peer != ctx.name:
                ctx.send(peer, np.zeros(1, np.uint8))
        for peer in CORE_PARTIES:
            if peer != ctx.name:
                ctx.recv(peer)


def measure(layer, make_input, reps: int, profile: bool):
    """Per party: (seconds per repetition, payload bytes sent, rounds, profile text) of ``layer``."""
    def program():
        x = make_input()
        times, profile_text = [], ""
        for rep in range(reps + 1):            # the first repetition warms up and is dropped
            fresh = x + 0.0                     # a new private value: no Beaver mask cached on it
            barrier()
            before = mp.stats()
            profiler = cProfile.Profile() if profile and rep == reps else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            layer(fresh)
            barrier()
            elapsed = time.perf_counter() - start
            if profiler:
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
                profile_text = text.getvalue()
            after = mp.stats()
            if rep:
                times.append(elapsed)
        sent = after["payload_bytes_sent"] - before["payload_bytes_sent"]
        barrier_bytes = 2 * (len(CORE_PARTIES) - 1)  # the closing barrier's one-byte messages
        return times, sent - barrier_bytes, after["rounds"] - before["rounds"] - 2, profile_text

    return program


def run(name: str, layer, make_input, units: int, unit: str, args, target_ms: float) -> None:
    results = mp.run(measure(layer, make_input, args.reps, args.profile), backend=args.backend, timeout=600)
    per_rep = [max(r[0][i] for r in results.values()) for i in range(args.reps)]
    total_bytes = sum(r[1] for r in results.values())
    rounds = max(r[2] for r in results.values())
    median, best = statistics.median(per_rep) * 1e3, min(per_rep) * 1e3
    verdict = "meets" if median <= target_ms else "misses"
    print(f"{name:34s} median {median:7.1f} ms  min {best:7.1f} ms  ({verdict} {target_ms:.0f} ms)  "
          f"{total_bytes / units:6.0f} B/{unit}  {rounds} rounds  {total_bytes / 1e6:6.1f} MB")
    if args.profile:
        for party in CORE_PARTIES:
            print(f"--- {party} ---")
            print(results[party][3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--backend", choices=["threads", "processes"], default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.backend is None:
        try:
            from mpcnp.runtime import processes  # noqa: F401
            args.backend = "processes"
        except ImportError:
            args.backend = "threads"
    print(f"backend: {args.backend}; ring kernels: {ring.BACKEND}; Z_p kernels: {zp.KERNELS}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; {args.reps} repetitions")

    rng = np.random.default_rng(7)
    relu_input = rng.normal(0.0, 4.0, 100_000)
    pool_input = rng.normal(0.0, 4.0, (1, 16, 24, 24))
    run("relu, 1e5 elements", comparisons.relu, lambda: mp.private(relu_input), relu_input.size, "element",
        args, 100.0)
    windows = pool_input.size // 4
    run("maxpool2d 2x2, 1x16x24x24", lambda t: comparisons.maxpool2d(t, 2), lambda: mp.private(pool_input),
        windows, "window", args, 110.0)


if __name__ == "__main__":
    main()
