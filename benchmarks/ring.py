"""Throughput of the ring kernels: C matmul against NumPy's uint64 matmul, and the PRF stream.

``python -m benchmarks ring [--reps 5] [--quick]``. Times are medians over ``--reps`` runs (3 for NumPy
at 1024^3, about a second each), all measured in this run, the C kernel on 1 and on 2 threads
alternately. The machines are shared: the "others" column gives the cores' worth of CPU other
processes took meanwhile (a 2-thread figure next to others > 0.1 is depressed by them). BLAS runs on
one thread (benchmarks/__main__.py sets it before NumPy loads): a spinning OpenBLAS thread slows a
following 2-thread C kernel badly, and parties run BLAS single-threaded too. Targets: benchmarks/published.py.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from benchmarks.published import TARGETS, meets
from mpcnp import ring

SHAPES = [  # name, m, n, k
    ("256^3", 256, 256, 256),
    ("512^3", 512, 512, 512),
    ("1024^3", 1024, 1024, 1024),
    ("1000x784 @ 784x128", 1000, 128, 784),
]
QUICK_SHAPES = SHAPES[:2]
PRF_BYTES = 64 << 20


def median_seconds(fn, reps: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


class OtherLoad:
    """Cores' worth of CPU that other processes used while the block ran (None if unknown)."""

    def __enter__(self):
        self.busy, self.own, self.wall = busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = busy_seconds()
        wall = time.perf_counter() - self.wall
        own = time.process_time() - self.own
        self.cores = None if busy is None else max(0.0, (busy - self.busy - own) / wall)


def c_gmacs(a: np.ndarray, b: np.ndarray, reps: int) -> tuple[float, float]:
    """C kernel rates on 1 and on 2 threads, timed alternately so that load from other processes
    weighs on both alike."""
    before = ring.num_threads()
    times = {1: [], 2: []}
    try:
        for rep in range(reps + 1):  # the first round warms up
            for threads in (1, 2):
                ring.set_num_threads(threads)
                start = time.perf_counter()
                ring.matmul(a, b)
                if rep:
                    times[threads].append(time.perf_counter() - start)
    finally:
        ring.set_num_threads(before)
    macs = a.shape[0] * b.shape[1] * a.shape[1]
    return macs / statistics.median(times[1]) / 1e9, macs / statistics.median(times[2]) / 1e9


def matmul_table(reps: int, shapes=SHAPES) -> dict:
    rng = np.random.default_rng(0)
    print(f"{'product':>20} {'C 1 thr':>9} {'C 2 thr':>9} {'2/1':>6} {'NumPy':>8} {'C1/NumPy':>9} {'C2/NumPy':>9}"
          f" {'others':>7}   (G multiply-adds/s; others: cores busy with other processes during C runs)")
    results = {}
    for name, m, n, k in shapes:
        a = rng.integers(0, 1 << 64, (m, k), dtype=np.uint64, endpoint=False)
        b = rng.integers(0, 1 << 64, (k, n), dtype=np.uint64, endpoint=False)
        with OtherLoad() as load:
            one, two = c_gmacs(a, b, reps)
        numpy_reps = 3 if m * n * k >= 1 << 30 else reps
        numpy_rate = m * n * k / median_seconds(lambda: np.matmul(a, b), numpy_reps, warmup=False) / 1e9
        results[name] = {"c_1_thread": one, "c_2_threads": two, "numpy": numpy_rate, "others": load.cores}
        others = "n/a" if load.cores is None else f"{load.cores:.2f}"
        print(f"{name:>20} {one:9.2f} {two:9.2f} {two / one:6.2f} {numpy_rate:8.2f} {one / numpy_rate:9.1f} "
              f"{two / numpy_rate:9.1f} {others:>7}")
    return results


def prf_rates(reps: int, nbytes: int = PRF_BYTES) -> tuple[float, float]:
    key = bytes(range(16))
    out = np.empty(nbytes // 8, dtype=np.uint64)
    prf = ring.PRF(key)
    fill = nbytes / median_seconds(lambda: prf.fill(out), reps) / 1e9
    alloc = nbytes / median_seconds(lambda: prf.uint64((nbytes // 8,)), reps) / 1e9
    return fill, alloc


def run(reps: int = 5, quick: bool = False) -> dict:
    """Print the tables and return {"matmul": {shape: rates}, "prf": {...}, "targets": {name: value}}."""
    print(f"ring.BACKEND = {ring.BACKEND}; threads available = {ring.num_threads()}; "
          f"load average = {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if ring.BACKEND == "numpy":
        print("the compiled kernels are not loaded: the 'C' columns below measure NumPy")
    results = matmul_table(reps, QUICK_SHAPES if quick else SHAPES)
    nbytes = (8 << 20) if quick else PRF_BYTES
    fill, alloc = prf_rates(reps, nbytes)
    print(f"\nPRF (AES-128-CTR) on {nbytes >> 20} MiB: fill(preallocated) {fill:.2f} GB/s, "
          f"uint64(shape) allocating {alloc:.2f} GB/s")
    values = {}
    for target in (t for t in TARGETS if t.op == "ring"):
        if target.size == "prf":
            values[target.name] = fill
        elif target.size in results:
            rates = results[target.size]
            values[target.name] = (rates["c_2_threads"] / rates["c_1_thread"] if target.metric == "ratio_2_1"
                                   else rates["c_1_thread"])
    print("\ntargets:")
    for target in (t for t in TARGETS if t.op == "ring"):
        value = values.get(target.name)
        verdict = "not measured" if value is None else ("ok" if meets(target, value) else "BELOW TARGET")
        print(f"  {target.name}: {'-' if value is None else f'{value:.2f}'} ({target.reference})  {verdict}")
    return {"matmul": results, "prf": {"fill_gbps": fill, "allocating_gbps": alloc, "bytes": nbytes},
            "targets": values}
