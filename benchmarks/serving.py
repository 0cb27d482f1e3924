"""Model serving on loopback: latency of one client's batch-1 queries, throughput of 16 clients, with and
without dynamic batching, and the online phase against the total (docs/serving.md, "Measured").

The three core services run as ``python -m mpcnp serve`` processes (one ring-kernel thread each, as
three parties share the two cores), CurveZMQ over tcp on 127.0.0.1, exactly as a user starts them.
Each client is a process of its own with its ``mp.Client`` (one process of 16 threads measured its own
GIL); a client issues its queries one after the other (closed loop). A query's latency is the client's: sharing the input, both servers'
answers, adding the shares. "online": the pools of preprocessed randomness are warm (the producer dealt
the triples and comparison masks before the query); "total": no pools (``--no-pool``), everything dealt
during the query. The servers' counters (``Client.stats``) give the time spent in forward passes and in
preprocessing; the services' CPU time per query (all three processes, /proc) is the figure the load
of the machine (shown: the 1-minute load average at the end of each run) disturbs least.

Networks: "A" is SecureNN's network A (784-128-128-10, ReLU), "cnn" the digits CNN of the examples
(8x8 images: conv 3x3 1->8 "same", ReLU, 2x2 max pooling, dense 128->10); random weights, since the
time does not depend on them.

Usage: python -m benchmarks.serving [--networks A cnn] [--queries 300] [--seconds 5] [--clients 16]
                                     [--repeat 3] [--json FILE]
(the tables give the median over the repeated runs of each figure)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

import mpcnp as mp
from mpcnp import nn
from mpcnp.runtime.context import CORE_PARTIES
from mpcnp.serving.config import write_local_cluster

NETWORKS = {"A": (784,), "cnn": (1, 8, 8)}


def build(name: str) -> nn.Sequential:
    """Network ``name`` with random (He-initialised) weights; plaintext data, NumPy's generator."""
    if name == "A":
        model = nn.Sequential(nn.Dense(784, 128), nn.ReLU(), nn.Dense(128, 128), nn.ReLU(), nn.Dense(128, 10))
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Dense(128, 10))
    else:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    rng = np.random.default_rng(0)
    # He initialisation for the weights (fan-in: the rows of a dense weight, in x kh x kw of a kernel)
    return model.load_state_dict({
        key: rng.normal(0, np.sqrt(2 / int(np.prod(shape[1:]) if len(shape) == 4 else shape[0])), shape)
        if key.endswith("weight") else np.zeros(shape) for key, shape in model.parameter_shapes().items()})


@contextlib.contextmanager
def services(args: list[str] = (), clients: int = 17) -> Iterator[Path]:
    """Start the three services (``serve`` options ``args``) with ``clients`` client keys named c0, c1,
    ...; yields the cluster file (its ``pids`` attribute lists the services' process ids); stops them
    with SIGTERM (each by its process id)."""
    with tempfile.TemporaryDirectory(prefix="mpcnp-bench-") as directory:
        path = write_local_cluster(Path(directory) / "cluster", [f"c{i}" for i in range(clients)])
        procs = [subprocess.Popen([sys.executable, "-m", "mpcnp", "serve", "--config", str(path), "--name", name,
                                   "--store", f"{directory}/store-{name}", "--threads", "1", "--log-level", "warning",
                                   *args]) for name in CORE_PARTIES]
        global _service_pids
        _service_pids = [proc.pid for proc in procs]
        try:
            yield path
        finally:
            _service_pids = []
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(30)


_service_pids: list[int] = []   # the running services' process ids, for their CPU time


def services_cpu() -> float:
    """CPU seconds (user + system) the running services have used so far (Linux /proc)."""
    total = 0.0
    for pid in _service_pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _stats_delta(before: dict, after: dict) -> dict:
    return {key: after[key] - before[key] for key in after}


def latency(path: Path, network: str, queries: int, warmup: int = 30) -> dict:
    """One client's batch-1 queries, one after the other: their latencies and the servers' counters."""
    x = np.random.default_rng(1).normal(size=(queries + warmup,) + NETWORKS[network])
    with mp.Client(path, "c0", timeout=60) as client:
        client.wait_ready(60)
        for i in range(warmup):
            client.predict(network, x[i])
        before, before1, seconds, cpu = client.stats(), client.stats("server1"), [], services_cpu()
        for i in range(warmup, warmup + queries):
            started = time.perf_counter()
            client.predict(network, x[i])
            seconds.append(time.perf_counter() - started)
        cpu = services_cpu() - cpu
        counters, counters1 = _stats_delta(before, client.stats()), _stats_delta(before1, client.stats("server1"))
    return {"p50_ms": percentile(seconds, 50) * 1e3, "p99_ms": percentile(seconds, 99) * 1e3,
            "queries": queries, "cpu_ms_per_query": cpu / queries * 1e3, "load": os.getloadavg()[0],
            "server": counters, "server1": counters1}


def _client_process(path: str, name: str, network: str, seconds: float, barrier, results) -> None:
    """One client of ``throughput``: its own process (real clients are), queries back to back."""
    x = np.random.default_rng(hash(name) % (1 << 32)).normal(size=(16,) + NETWORKS[network])
    try:
        with mp.Client(path, name, timeout=60) as client:
            client.wait_ready(60)
            for i in range(3):
                client.predict(network, x[i])
            barrier.wait(120)
            mine, stop, i = [], time.monotonic() + seconds, 0
            while time.monotonic() < stop:
                began = time.perf_counter()
                client.predict(network, x[i % len(x)])
                mine.append(time.perf_counter() - began)
                i += 1
        results.put((name, mine, None))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        results.put((name, [], repr(exc)))


def throughput(path: Path, network: str, clients: int, seconds: float) -> dict:
    """``clients`` client processes issuing batch-1 queries back to back for ``seconds``: queries per
    second, latency percentiles, rows per batch."""
    forked = multiprocessing.get_context("fork")   # before this process opens any ZeroMQ context
    barrier, results = forked.Barrier(clients + 1), forked.Queue()
    workers = [forked.Process(target=_client_process, args=(str(path), f"c{i + 1}", network, seconds, barrier, results))
               for i in range(clients)]
    for w in workers:
        w.start()
    with mp.Client(path, "c0", timeout=60) as observer:
        barrier.wait(120)
        before, began, cpu = observer.stats(), time.perf_counter(), services_cpu()
        gathered = [results.get(timeout=seconds + 120) for _ in workers]
        elapsed, cpu = time.perf_counter() - began, services_cpu() - cpu
        counters = _stats_delta(before, observer.stats())
    for w in workers:
        w.join(30)
    errors = [error for _, _, error in gathered if error]
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    latencies = [t for _, mine, _ in gathered for t in mine]
    return {"queries_per_s": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3, "queries": len(latencies),
            "cpu_ms_per_query": cpu / len(latencies) * 1e3, "load": os.getloadavg()[0],
            "rows_per_batch": counters["rows"] / max(1, counters["batches"]), "server": counters}


def measure(network: str, queries: int, seconds: float, clients: int) -> dict:
    """Every configuration of one network (see the module docstring)."""
    results = {}
    for label, args in (("pooled", []), ("no pool", ["--no-pool"])):
        with services(args) as path:
            with mp.Client(path, "c0", timeout=60) as owner:
                owner.wait_ready(60)
                owner.upload(network, build(network), input_shape=NETWORKS[network])
            results[f"1 client, {label}"] = latency(path, network, queries)
    for label, args in (("batching", []), ("no batching", ["--no-batching"])):
        with services(args) as path:
            with mp.Client(path, "c0", timeout=60) as owner:
                owner.wait_ready(60)
                owner.upload(network, build(network), input_shape=NETWORKS[network])
            results[f"{clients} clients, {label}"] = throughput(path, network, clients, seconds)
    return results


def markdown(network: str, results: dict) -> str:
    """The results as a table: client latencies and throughput, server0's time per batch, the share of
    pooled batches and the time per preprocessing item; for the single client, the bytes server1
    receives per batch (online) and per preprocessing item (offline, from the producer)."""
    lines = [f"Network {network}:", "", "| configuration | p50 ms | p99 ms | queries/s | rows per batch | "
             "server0 ms per batch | pooled batches | ms per item | server1 kB per batch, online | "
             "kB per item, offline | services' CPU ms per query | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        s = r["server"]
        per_batch = s["batch_seconds"] / max(1, s["batches"]) * 1e3
        refill = f"{s['refill_seconds'] / s['refills'] * 1e3:.2f}" if s["refills"] else ""
        qps = f"{r['queries_per_s']:.0f}" if "queries_per_s" in r else ""
        rows = f"{r['rows_per_batch']:.1f}" if "rows_per_batch" in r else "1"
        online = offline = ""
        if "server1" in r:
            s1 = r["server1"]
            online = f"{(s1['pooled_bytes'] + s1['inline_bytes']) / max(1, s1['batches']) / 1e3:.1f}"
            offline = f"{s1['refill_bytes'] / s1['refills'] / 1e3:.1f}" if s1["refills"] else ""
        lines.append(f"| {label} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {qps} | {rows} | {per_batch:.2f} | "
                     f"{s['pooled_batches']}/{s['batches']} | {refill} | {online} | {offline} | "
                     f"{r['cpu_ms_per_query']:.2f} | {r['load']:.1f} |")
    return "\n".join(lines)


def median_of(runs: list[dict]) -> dict:
    """Each configuration's figures as the median over ``runs`` (results of ``measure``); the server
    counters are summed (their ratios are what the table shows)."""
    merged = {}
    for label in runs[0]:
        rows = [run[label] for run in runs]
        merged[label] = {key: float(np.median([r[key] for r in rows])) for key in rows[0]
                         if key not in ("server", "server1")}
        for side in ("server", "server1"):
            if side in rows[0]:
                merged[label][side] = {key: sum(r[side][key] for r in rows) for key in rows[0][side]}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--queries", type=int, default=300, help="batch-1 queries of the single client")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="runs of everything; the tables show medians")
    parser.add_argument("--json", help="write every run's results here")
    args = parser.parse_args(argv)
    everything = {}
    for network in args.networks:
        everything[network] = [measure(network, args.queries, args.seconds, args.clients) for _ in range(args.repeat)]
        print(markdown(network, median_of(everything[network])), flush=True)
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
