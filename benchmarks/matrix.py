"""The matrix: operations x sizes x protocols (each truncation mode) x backends x networks, measured
cell by cell, each cell compared with the cost table, its floor and, under a network, the model.

Order: every cell without a network first (they are the cost model's base), then the network
cells. A network cell runs on the backends whose channels are real (processes, and netns: parties
in network namespaces, benchmarks/netns.py); on threads only when threads is the only backend
chosen. On netns only the paper's configuration runs (the sizes with a published row, local
truncation, as SecureNN truncates), unless sizes or truncations were chosen explicitly.
A network cell whose predicted time per repetition exceeds ``budget_s`` / (reps + 1) is skipped
and reported as such (its model prediction stays in the results).
"""
from __future__ import annotations

import os
import statistics
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from benchmarks import costmodel, harness, limits, published
from benchmarks.ops import operation
from mpcnp.net.shaping import network_profile

BACKENDS = ("threads", "processes", "netns")


@dataclass
class Settings:
    """What to measure (the command line's options)."""

    ops: list[str]
    sizes: dict[str, list[str]]        # per op; an op missing here takes its default sizes
    protocols: list[str]
    truncations: list[str]
    backends: list[str]
    networks: list[str]                # "none", profile names, or NAME:BANDWIDTH:LATENCY
    reps: int = 5
    quick: bool = False
    budget_s: float = 300.0
    profile: bool = False
    explicit_sizes: bool = False
    explicit_truncations: bool = False


@dataclass
class Cell:
    op: str
    size: str
    protocol: str
    truncation: str
    backend: str
    network: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.op, self.size, self.protocol, self.truncation, self.backend, self.network)

    def describe(self) -> str:
        return (f"{self.op} {self.size} {self.protocol}/{self.truncation} {self.backend}"
                f"{'' if self.network == 'none' else ' ' + self.network}")


def seed(op: str, size: str) -> int:
    """The same inputs for a given op and size in every cell and run."""
    return zlib.crc32(f"{op}:{size}".encode())


def plan(settings: Settings) -> list[Cell]:
    """Every cell to measure, cells without a network first."""
    cells = []
    network_backends = [b for b in settings.backends if b != "threads"] or list(settings.backends)
    for network in ["none"] + [n for n in settings.networks if n != "none"]:
        backends = settings.backends if network == "none" else network_backends
        for backend in backends:
            for op in settings.ops:
                sizes = settings.sizes.get(op) or list(
                    operation(op).quick if settings.quick else operation(op).sizes)
                for size in sizes:
                    if backend == "netns" and not settings.explicit_sizes and not published.paper_row(op, size):
                        continue
                    for protocol in settings.protocols:
                        for truncation in settings.truncations:
                            if backend == "netns" and truncation != "local" and not settings.explicit_truncations:
                                continue
                            cells.append(Cell(op, size, protocol, truncation, backend, network))
    return cells


def _summary(seconds: list[float]) -> dict[str, float]:
    q = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else [seconds[0]] * 3
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "iqr_s": q[2] - q[0]}


def plaintext_seconds(op_name: str, size: str, reps: int) -> float:
    """Median time of the NumPy computation on the same inputs."""
    op = operation(op_name)
    dims = op.parse(size)
    arrays = op.inputs(np.random.default_rng(seed(op_name, size)), dims)
    times = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        op.plain(dims, *arrays)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


class Runner:
    """Measures cells; keeps the run's calibrations, GEMM peak and plaintext times."""

    def __init__(self, settings: Settings, netns=None, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.netns = netns            # a benchmarks.netns.Emulation when "netns" is chosen and works
        self.log = log
        self.gemm = limits.gemm_peak(settings.quick)
        self.calibrations: dict[tuple[str, str], dict[str, float]] = {}
        self.plaintext: dict[tuple[str, str], float] = {}
        self.base: dict[tuple, dict[str, Any]] = {}   # network "none" records by key sans network

    def calibration(self, backend: str, network: str) -> dict[str, float]:
        key = (backend, network)
        if key not in self.calibrations:
            if backend == "netns":
                self.calibrations[key] = self.netns.calibrate(network, self.settings.quick)
            else:
                profile = None if network == "none" else network_profile(network)
                self.calibrations[key] = harness.calibrate(backend, profile, self.settings.quick)
        return self.calibrations[key]

    def run(self, cell: Cell) -> dict[str, Any]:
        s = self.settings
        op = operation(cell.op)
        dims = op.parse(cell.size)
        profile = None if cell.network == "none" else network_profile(cell.network)
        record: dict[str, Any] = {
            "op": cell.op, "size": cell.size, "dims": dims, "protocol": cell.protocol,
            "truncation": cell.truncation, "backend": cell.backend, "network": cell.network,
            "emulation": "none" if profile is None else ("netns" if cell.backend == "netns" else "shaping"),
            "reps": s.reps, "status": "ok"}
        base = self.base.get(cell.key[:5])
        if profile is not None and base is not None and base["status"] == "ok":
            predicted = costmodel.predict(base["median_s"], base["wire_bytes"], base["rounds"], profile)
            record["model"] = {"base_s": base["median_s"], "predicted_s": predicted}
            if predicted * (s.reps + 1) > s.budget_s:
                record["status"] = f"skipped: predicted {predicted:.1f} s a repetition exceeds the budget"
                return record
        latency = 0.0 if profile is None else profile.latency
        job = harness.Job(cell.op, cell.size, cell.truncation, s.reps, seed(cell.op, cell.size),
                          margin=3 * latency + 0.002, profile=s.profile)
        if cell.backend == "netns":
            m = self.netns.measure(job, cell.protocol, profile)
        else:
            m = harness.measure(job, cell.protocol, cell.backend, profile)
        record.update(times_s=m.seconds, **_summary(m.seconds), late_s=m.late_s,
                      payload_bytes=m.payload_bytes, payload_bytes_total=sum(m.payload_bytes.values()),
                      wire_bytes=m.wire_bytes, rounds=m.rounds, rounds_max=max(m.rounds.values()),
                      consistent=m.consistent, max_error=m.max_error)
        if m.profiles:
            record["profiles"] = m.profiles
        atol, guaranteed = op.tolerance(cell.protocol, cell.truncation, dims)
        record.update(tolerance=atol, tolerance_guaranteed=guaranteed,
                      within_tolerance=None if atol is None or m.max_error is None else m.max_error <= atol)
        exp = costmodel.expected(cell.op, dims, cell.protocol, cell.truncation)
        record["expected"] = exp
        record["cost_match"] = None if exp is None else (
            exp["bytes"] == record["payload_bytes_total"] and exp["rounds"] == record["rounds_max"])
        key = (cell.op, cell.size)
        if key not in self.plaintext:
            self.plaintext[key] = plaintext_seconds(cell.op, cell.size, min(s.reps, 5))
        record["plaintext_s"] = self.plaintext[key]
        cal = self.calibration(cell.backend, cell.network)
        fl = limits.floor(record["rounds_max"], max(m.wire_bytes.values()), op.ring_macs(dims),
                          cal["round_s"], cal["bandwidth"], self.gemm["gmacs"])
        record["floor"] = fl
        record["floor_ratio"] = record["median_s"] / fl["floor_s"] if fl["floor_s"] > 0 else None
        if "model" in record:
            record["model"]["ratio"] = record["median_s"] / record["model"]["predicted_s"]
        record["load_average"] = os.getloadavg()[0]   # other work on the machine meanwhile
        if profile is None:
            self.base[cell.key[:5]] = record
        return record

    def run_all(self, cells: list[Cell], progress=None) -> list[dict[str, Any]]:
        records = []
        for cell in cells:
            try:
                cell.record = self.run(cell)
            except Exception as exc:  # noqa: BLE001 - one failing cell must not lose the others
                cell.record = {"op": cell.op, "size": cell.size, "protocol": cell.protocol,
                               "truncation": cell.truncation, "backend": cell.backend,
                               "network": cell.network, "status": f"failed: {type(exc).__name__}: {exc}"}
                self.log(f"{cell.describe()}: {cell.record['status']}")
            records.append(cell.record)
            if progress is not None:
                progress(cell)
        return records
