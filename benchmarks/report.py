"""The results of a run as JSON (everything, with the machine, versions, commit and settings) and as
a markdown report: limits, the model's agreement with the emulation, SecureNN's published tables
side by side, the targets, and the whole matrix.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import costmodel, published
from mpcnp.net.shaping import network_profile

SCHEMA = "mpcnp-benchmarks/1"
# the keys every measured cell carries (tests/test_benchmarks.py checks them)
CELL_KEYS = ("op", "size", "dims", "protocol", "truncation", "backend", "network", "emulation", "reps",
             "status", "times_s", "median_s", "min_s", "max_s", "iqr_s", "payload_bytes",
             "payload_bytes_total", "wire_bytes", "rounds", "rounds_max", "consistent", "max_error",
             "tolerance", "tolerance_guaranteed", "within_tolerance", "expected", "cost_match",
             "plaintext_s", "floor", "floor_ratio")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from mpcnp import ring
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo") as f:
            memory = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration, ValueError):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_bytes": memory, "load_average": list(os.getloadavg()), "ring_kernels": ring.BACKEND}


def versions() -> dict[str, str | None]:
    found = {"python": sys.version.split()[0]}
    for package in ("mpcnp", "numpy", "pyzmq", "cffi", "cryptography", "matplotlib", "tqdm"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def git_commit(root: Path) -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None outside a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def agreement(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per emulation and network: measured / predicted over the cells that ran."""
    groups: dict[tuple[str, str], list] = {}
    for c in cells:
        if c.get("status") == "ok" and c.get("model"):
            groups.setdefault((c["emulation"], c["network"]), []).append((c["median_s"], c["model"]["predicted_s"]))
    return [{"emulation": e, "network": n, **costmodel.agreement(pairs)} for (e, n), pairs in sorted(groups.items())]


def _find(cells, **want) -> dict[str, Any] | None:
    for c in cells:
        if c.get("status") == "ok" and all(c.get(k) == v for k, v in want.items()):
            return c
    return None


def side_by_side(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SecureNN's published rows beside ours: securenn with local truncation (the paper's), bytes from
    any backend, times on the processes backend with the shaping transport and on netns (tbf)."""
    rows = []
    for row in published.PAPER:
        want = {"op": row.op, "size": row.size, "protocol": "securenn", "truncation": "local"}
        base = _find(cells, network="none", **want)
        entry = {"label": row.label, "table": row.table, "paper_mb": row.comm_mb, "paper_lan_ms": row.lan_ms,
                 "paper_wan_ms": row.wan_ms, "note": row.note,
                 "ours_mb": None if base is None else base["payload_bytes_total"] / 1e6}
        if row.op == "network":   # the nn model, weights masked once: a deployed model's steady state
            steady = _find(cells, network="none", **{**want, "op": "network_nn"})
            entry["ours_nn_mb"] = None if steady is None else steady["payload_bytes_total"] / 1e6
        for network in ("lan", "wan"):
            for backend in ("processes", "netns"):
                cell = _find(cells, network=network, backend=backend, **want)
                entry[f"{backend}_{network}_ms"] = None if cell is None else cell["median_s"] * 1e3
                if backend == "processes":
                    model = (cell or {}).get("model") or {}
                    entry[f"model_{network}_ms"] = model.get("predicted_s", 0) * 1e3 or None
        rows.append(entry)
    return rows


def target_rows(cells: list[dict[str, Any]], suites: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with the value this run measured for it (None when its suite did not run)."""
    rows = []
    for t in published.TARGETS:
        value = None
        if t.op in ("ring", "net"):
            value = (suites.get(t.op) or {}).get("targets", {}).get(t.name)
        else:
            cell = _find(cells, op=t.op, size=t.size, protocol="securenn", truncation="local",
                         backend="processes", network="none")
            value = None if cell is None else cell["median_s"] * 1e3
        rows.append({"name": t.name, "metric": t.metric, "limit": t.limit, "reference": t.reference,
                     "value": value, "met": None if value is None else published.meets(t, value)})
    return rows


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, default=float) + "\n")


# ---- markdown -----------------------------------------------------------------------------------------
def _describe(network: str) -> str:
    return network if network == "none" else network_profile(network).describe()


def _f(value, fmt: str = ".3g", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows]


def markdown(doc: dict[str, Any], charts: list[str]) -> str:
    """results.md: the run, then the matrix's sections (when it ran) and the training suite's."""
    m, s, cells = doc["machine"], doc["settings"], doc.get("cells")
    lines = ["# mpcnp benchmark results", "",
             f"`{doc['command']}` at commit `{doc['git']['commit']}`{' (with local changes)' if doc['git']['dirty'] else ''},"
             f" {doc['started']}, {doc['seconds']:.0f} s.", "",
             f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs (shared with other work: load average "
             f"{m['load_average'][0]:.2f} at the start"
             + (f", {m['load_average_end'][0]:.2f} at the end" if "load_average_end" in m else "")
             + f"), ring kernels `{m['ring_kernels']}`; "
             + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v) + ".", ""]
    if cells is not None:
        lines += [f"Settings: reps {s['reps']} (medians; the spread is min-max over repetitions), protocols "
                  f"{', '.join(s['protocols'])}, truncations {', '.join(s['truncations'])}, backends "
                  f"{', '.join(s['backends'])}, networks {', '.join(_describe(n) for n in s['networks'])}. Bytes "
                  "are payload bytes summed over the parties (the cost table's unit, 1 MB = 10^6 bytes); rounds "
                  f"the largest Lamport-clock increase. Cost table: {doc['costs_source']}.", ""]
        lines += _matrix_sections(doc, cells, charts)
    training = doc.get("suites", {}).get("training")
    if training:
        lines += ([""] if lines[-1] else []) + ["## Private training of network A", ""] + training_lines(training)
    return "\n".join(lines) + "\n"


def _matrix_sections(doc: dict[str, Any], cells: list[dict[str, Any]], charts: list[str]) -> list[str]:
    lines = ["## Limits measured in this run", "",
              f"Ring GEMM peak: {doc['gemm']['gmacs']:.2f} G multiply-adds/s (one thread, "
              f"{doc['gemm']['size']}^3, `{doc['gemm']['kernel']}`).", ""]
    lines += _table(["backend", "network", "one round (us)", "channel bandwidth (MB/s)"],
                    [[c["backend"], c["network"], _f(c["round_s"] * 1e6, ".0f"),
                      "zero-copy" if c["bandwidth"] is None else _f(c["bandwidth"] / 1e6, ".0f")]
                     for c in doc["calibrations"]])
    if doc.get("netns"):
        lines += ["", f"Network namespaces: {doc['netns']}"]
    lines += ["", "## How well the cost model predicts the emulated times", "",
              "Model: the time without a network plus, for the slowest party, rounds x latency + bytes sent "
              "/ bandwidth (bytes with framing). Emulations: `shaping` holds each message for latency + size / "
              "bandwidth per directed link (mpcnp.net.shaping, on the cell's backend); `netns` runs the parties in "
              "network namespaces joined by veth pairs, bandwidth from `tc tbf` on every link, latency from the "
              "shaping transport (this kernel has no netem).", ""]
    lines += _table(["emulation", "network", "cells", "measured / predicted, median", "range", "median |error|"],
                    [[a["emulation"], a["network"], str(a["cells"]), _f(a["median_ratio"], ".2f"),
                      f"{a['min_ratio']:.2f}-{a['max_ratio']:.2f}", f"{a['median_abs_error'] * 100:.0f}%"]
                     for a in doc["agreement"]])
    steady = any(r.get("ours_nn_mb") is not None for r in doc["published"])
    lines += ["", f"## SecureNN's published figures beside ours ({published.PAPER_SOURCE})", "",
              "Ours: securenn with local truncation (as the paper); bytes from the run without a network; "
              "times on this 2-CPU machine (theirs: three 36-vCPU hosts). Networks: the functional form, "
              "weights masked afresh each time as the paper counts them"
              + ("; after the slash, the mpcnp.nn model with its weights' masks reused (network_nn)."
                 if steady else "."), ""]
    lines += _table(["row", "paper MB", "ours MB", "paper LAN ms", "ours LAN ms (shaping / netns / model)",
                     "paper WAN ms", "ours WAN ms (shaping / netns / model)"],
                    [[f"{r['label']} (T{r['table']})", _f(r["paper_mb"]),
                      _f(r["ours_mb"]) + (f" / {_f(r.get('ours_nn_mb'))}" if steady else ""),
                      _f(r["paper_lan_ms"]),
                      f"{_f(r['processes_lan_ms'])} / {_f(r['netns_lan_ms'])} / {_f(r['model_lan_ms'])}",
                      _f(r["paper_wan_ms"]),
                      f"{_f(r['processes_wan_ms'])} / {_f(r['netns_wan_ms'])} / {_f(r['model_wan_ms'])}"]
                     for r in doc["published"]])
    t = published.PAPER_TRAINING
    ours = ("ours: the training section below" if doc.get("suites", {}).get("training") else
            "ours: `python -m benchmarks training` (benchmarks/results/training/results.md)")
    lines += ["", f"{t['label']}: paper {t['lan_s']:.3f} s LAN, {t['wan_s']:.2f} s WAN ({t['source']}); "
              f"{ours}.", "", "## Targets", ""]
    lines += _table(["target", "limit", "this run", "met", "reference"],
                    [[r["name"], f"{r['metric']} {r['limit']:g}", _f(r["value"]),
                      {None: "-", True: "yes", False: "NO"}[r["met"]], r["reference"]] for r in doc["targets"]])
    lines += ["", "## The matrix", "",
              "floor: counted rounds at this configuration's round time + the busiest party's bytes at its "
              "channel bandwidth + the plaintext multiply-adds at the GEMM peak; x floor = median / floor. "
              "cost table: measured bytes and rounds equal the table's (=) or not (the table's figures).", ""]
    rows = []
    for c in cells:
        if c.get("status") != "ok":
            rows.append([c["op"], c["size"], f"{c['protocol']}/{c['truncation']}", c["backend"], c["network"],
                         c.get("status", "?")] + [""] * 9)
            continue
        exp = c["expected"]
        cost = "-" if exp is None else ("=" if c["cost_match"] else f"{exp['bytes']} B, {exp['rounds']} r")
        tol = "" if c["tolerance"] is None else f" ({'<=' if c['within_tolerance'] else 'ABOVE'} {c['tolerance']:.2g})"
        model = c.get("model") or {}
        rows.append([c["op"], c["size"], f"{c['protocol']}/{c['truncation']}", c["backend"], c["network"],
                     _f(c["median_s"] * 1e3), f"{c['min_s'] * 1e3:.3g}-{c['max_s'] * 1e3:.3g}",
                     _f(c["payload_bytes_total"] / 1e6), str(c["rounds_max"]), cost,
                     _f(c["max_error"], ".2g") + tol, _f(c["plaintext_s"] * 1e3),
                     _f(c["floor"]["floor_s"] * 1e3), _f(c["floor_ratio"], ".1f"),
                     _f(model.get("predicted_s", 0) * 1e3 or None)])
    lines += _table(["op", "size", "protocol", "backend", "network", "median ms", "spread ms", "MB", "rounds",
                     "cost table", "max error", "NumPy ms", "floor ms", "x floor", "model ms"], rows)
    if charts:
        lines += ["", "## Charts", ""] + [f"![{Path(c).stem}]({c})" for c in charts]
    return lines


def training_lines(suite: dict[str, Any]) -> list[str]:
    """The training suite's table (seconds per batch measured and predicted by the cost model, per
    network) beside SecureNN's Table 3 and the other published figures."""
    per_epoch = suite["batches_per_epoch"]
    lines = [f"SecureNN's network A (784-128-128-10), batch {suite['batch']}, exact truncation, frac_bits "
             f"{suite['frac_bits']}, {suite['backend']} backend: the median of {suite['measured_batches']} "
             f"full steps (forward, loss, backward, optimizer) after a warm-up step; an epoch is {per_epoch} "
             "batches. Networks emulated by the shaping transport; model: the time without a network plus "
             "the slowest party's rounds x latency + bytes / bandwidth.", ""]
    lines += _table(["optimizer", "network", "s per batch", "model s", "s per epoch", "MB per batch",
                     "rounds per batch", "CPU s per batch"],
                    [[r["optimizer"], _describe(r["network"]), _f(r["seconds_per_batch"]),
                      _f(r["predicted_seconds_per_batch"]), _f(r["seconds_per_epoch"], ".0f"),
                      _f(r["megabytes_per_batch"]), str(r["rounds_per_batch"]), _f(r["cpu_seconds_per_batch"])]
                     for r in suite["rows"]])
    t = published.PAPER_TRAINING
    lines += ["", f"Published: SecureNN ({t['source']}) {t['lan_s']:.3f} s per batch on its LAN, "
              f"{t['wan_s']:.2f} s on its WAN; "
              + "; ".join(f"{p['system']} {p['seconds_per_epoch']:.0f} s per epoch ({p['how']})"
                          for p in suite["published"]) + "."]
    return lines
