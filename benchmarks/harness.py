"""Timing private operations inside one mp.run, the same way for every benchmark.

The parties meet at a barrier (two all-to-all exchanges among the core parties, which also equalise
the Lamport clocks), run the operation on fresh private values (x + 0.0: no Beaver mask cached), and
meet again. A repetition's time is the largest over the parties; reports give the median and the
minimum over repetitions (the first, a warm-up, is dropped). Bytes are payload bytes summed over the
parties (the barrier's one-byte messages excluded), rounds the largest per-party clock increase.
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
from dataclasses import dataclass
from typing import Callable, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the source tree

import mpcnp as mp  # noqa: E402
from mpcnp.runtime.context import CORE_PARTIES, current  # noqa: E402
from mpcnp.runtime.context import barrier as runtime_barrier  # noqa: E402


def barrier() -> None:
    runtime_barrier(current())


@dataclass
class Measurement:
    seconds: list[float]      # per repetition, the slowest party's
    payload_bytes: int        # one repetition, summed over the parties
    rounds: int               # one repetition, the largest clock increase
    profiles: dict[str, str]  # party -> cProfile text of the last repetition (when asked)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def min_ms(self) -> float:
        return min(self.seconds) * 1e3


def measure(op: Callable, make_inputs: Sequence[Callable], reps: int, backend: str,
            profile: bool = False, **run_kwargs) -> Measurement:
    """Time ``op(*inputs)`` over ``reps`` repetitions on fresh private copies of the inputs."""
    def program():
        inputs = [make() for make in make_inputs]
        times, profile_text = [], ""
        for rep in range(reps + 1):
            fresh = [x + 0.0 if isinstance(x, mp.PrivateTensor) else x for x in inputs]
            barrier()
            before = mp.stats()
            profiler = cProfile.Profile() if profile and rep == reps else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            op(*fresh)
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
        sent = after["payload_bytes_sent"] - before["payload_bytes_sent"] - 2 * (len(CORE_PARTIES) - 1)
        return times, sent, after["rounds"] - before["rounds"] - 2, profile_text

    results = mp.run(program, backend=backend, timeout=600, **run_kwargs)
    results = {p: r for p, r in results.items() if p in CORE_PARTIES}
    seconds = [max(r[0][i] for r in results.values()) for i in range(reps)]
    return Measurement(seconds, sum(r[1] for r in results.values()), max(r[2] for r in results.values()),
                       {p: r[3] for p, r in results.items()})


def parse_args(description: str, reps: int = 7) -> argparse.Namespace:
    """--reps, --backend (processes by default) and --profile, as every benchmark here takes them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--backend", choices=["threads", "processes"], default="processes")
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args()


def describe_machine(backend: str, reps: int) -> str:
    from mpcnp import ring
    return (f"backend: {backend}; ring kernels: {ring.BACKEND}; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}; {reps} repetitions")
