"""python -m benchmarks [matrix|ring|net|all] [options]: measure, then write JSON, markdown and charts.

  matrix (default)  operations x sizes x protocols x truncations x backends x networks
  ring              the ring kernels: C GEMM against NumPy, the PRF stream
  net               the channels against bare pyzmq
  training          private training of network A (SGD, Adam) without a network, on the LAN and the WAN
  all               ring, net, the matrix, then training, in one report
  report            rewrite results.md and the charts from DIR/results.json (no measuring)

Matrix options: --ops, --sizes OP=SIZE,SIZE (formats in benchmarks/ops.py), --protocols,
--truncations, --backends (threads, processes, netns), --network (none, lan, wan or
NAME:BANDWIDTH:LATENCY such as metro:100MB/s:5ms), --reps, --budget, --profile. --quick: a small
matrix on the threads backend (under a minute; CI runs it). --out DIR: where results go (default
benchmarks/results, or benchmarks/results/quick with --quick); --no-charts skips the PNGs.
Training options: --optimizers (sgd, momentum, adam), --batches (measured batches per cell), --network.
"""
from __future__ import annotations

import os

# Parties run BLAS on one thread, and a spinning OpenBLAS thread slows a following 2-thread ring kernel
# badly: the NumPy baselines here run on one thread too. Must be set before NumPy is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks import charts, costmodel, matrix, published, report  # noqa: E402
from benchmarks.ops import OPERATIONS, operation  # noqa: E402
from mpcnp.net.shaping import network_profile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK_SIZES = {"network": ["A/1"], "network_nn": ["A/1"]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="matrix", choices=["matrix", "ring", "net", "training", "all",
                                                                         "report"])
    parser.add_argument("--ops", nargs="+", choices=list(OPERATIONS), help="operations (default: all)")
    parser.add_argument("--sizes", nargs="+", default=[], metavar="OP=SIZE,...", help="sizes of an operation")
    parser.add_argument("--protocols", nargs="+", choices=["pond", "securenn"])
    parser.add_argument("--truncations", nargs="+", choices=["local", "exact"])
    parser.add_argument("--backends", nargs="+", choices=list(matrix.BACKENDS))
    parser.add_argument("--network", nargs="+", dest="networks", metavar="NETWORK")
    parser.add_argument("--reps", type=int, help="timed repetitions per cell, after one warm-up (default 5)")
    parser.add_argument("--quick", action="store_true", help="a small matrix on threads, under a minute")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="skip a network cell whose predicted time for all repetitions exceeds this (s)")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile each party's last repetition")
    parser.add_argument("--rounds", type=int, default=5, help="net: runs of every case")
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "momentum", "adam"],
                        help="training: the optimizers")
    parser.add_argument("--batches", type=int, default=3, help="training: measured batches per cell")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    for network in args.networks or []:
        if network != "none":
            try:
                network_profile(network)
            except ValueError as exc:
                parser.error(str(exc))
    return args


def settings_from(args: argparse.Namespace) -> matrix.Settings:
    sizes: dict[str, list[str]] = dict(QUICK_SIZES) if args.quick else {}
    for entry in args.sizes:
        op, _, labels = entry.partition("=")
        if not labels:
            raise SystemExit(f"--sizes takes OP=SIZE,SIZE (e.g. relu=64x16,1e5), got {entry!r}")
        try:
            for label in labels.split(","):
                operation(op).parse(label)  # a bad size fails now, with the format it expects
        except ValueError as exc:
            raise SystemExit(f"--sizes: {exc}") from None
        sizes[op] = labels.split(",")
    return matrix.Settings(
        ops=args.ops or list(OPERATIONS), sizes=sizes,
        protocols=args.protocols or ["pond", "securenn"], truncations=args.truncations or ["local", "exact"],
        backends=args.backends or (["threads"] if args.quick else ["threads", "processes", "netns"]),
        networks=args.networks or (["none", "lan"] if args.quick else ["none", "lan", "wan"]),
        reps=args.reps or (3 if args.quick else 5), quick=args.quick, budget_s=args.budget,
        profile=args.profile, explicit_sizes=bool(args.sizes), explicit_truncations=bool(args.truncations))


class Progress:
    """tqdm's bar when installed (the "progress" extra), else one line per cell on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="cell", file=sys.stderr)
        except ImportError:
            self.bar = None

    def __call__(self, cell: matrix.Cell) -> None:
        self.done += 1
        r = cell.record
        what = f"{r['median_s'] * 1e3:.3g} ms" if r.get("status") == "ok" else r.get("status", "")
        if self.bar is not None:
            self.bar.set_postfix_str(f"{cell.describe()}: {what}", refresh=False)
            self.bar.update()
        else:
            print(f"[{self.done}/{self.total} {time.monotonic() - self.started:5.0f} s] {cell.describe()}: {what}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_matrix(settings: matrix.Settings, log) -> dict:
    emulation, netns_note = None, None
    if "netns" in settings.backends:
        from benchmarks import netns
        try:
            emulation = netns.Emulation().start()
            netns_note = emulation.describe()
        except netns.Unavailable as exc:
            netns_note = f"unavailable ({exc}): the shaping transport alone emulates the networks"
            settings.backends = [b for b in settings.backends if b != "netns"] or ["processes"]
        log(f"network namespaces: {netns_note}")
    try:
        runner = matrix.Runner(settings, emulation, log)
        cells = matrix.plan(settings)
        progress = Progress(len(cells))
        try:
            records = runner.run_all(cells, progress)
        finally:
            progress.close()
    finally:
        if emulation is not None:
            emulation.stop()
    return {"gemm": runner.gemm, "netns": netns_note, "cells": records,
            "calibrations": [{"backend": b, "network": n, **c} for (b, n), c in runner.calibrations.items()]}


def summarise(doc: dict) -> None:
    """The summaries drawn from the cells: model agreement, the published tables, the targets."""
    if "cells" in doc:
        doc["agreement"] = report.agreement(doc["cells"])
        doc["published"] = report.side_by_side(doc["cells"])
        doc["published_training"] = published.PAPER_TRAINING
    doc["targets"] = report.target_rows(doc.get("cells", []), doc.get("suites", {}))


def write_outputs(doc: dict, out: Path, draw: bool) -> None:
    """results.json, results.md (when the matrix ran) and the charts into ``out``."""
    drawn = []
    if "cells" in doc and draw:
        if charts.available():
            drawn = charts.draw(doc["cells"], out / "charts")
        else:
            print("charts skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    doc["charts"] = [f"charts/{name}" for name in drawn]
    report.write_json(out / "results.json", doc)
    written = "cells" in doc or "training" in doc.get("suites", {})
    if written:
        (out / "results.md").write_text(report.markdown(doc, doc["charts"]))
    print(f"results: {out / 'results.json'}" + (f", {out / 'results.md'}" if written else ""), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = args.out or (ROOT / "benchmarks" / "results" / ("quick" if args.quick else ""))
    if args.suite == "report":
        doc = json.loads((out / "results.json").read_text())
        summarise(doc)
        write_outputs(doc, out, not args.no_charts)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    started, began = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
    settings = settings_from(args)
    suites = {}
    if args.suite in ("ring", "all"):
        from benchmarks import ring
        suites["ring"] = ring.run(reps=settings.reps, quick=args.quick)
    if args.suite in ("net", "all"):
        from benchmarks import net
        suites["net"] = net.run(quick=args.quick, rounds=args.rounds)
    doc = {"schema": report.SCHEMA, "command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
           "started": started, "machine": report.machine(), "versions": report.versions(),
           "git": report.git_commit(ROOT), "settings": settings.__dict__, "costs_source": costmodel.COSTS_SOURCE,
           "suites": suites}
    if args.suite in ("matrix", "all"):
        doc.update(run_matrix(settings, lambda text: print(text, file=sys.stderr)))
    if args.suite in ("training", "all"):
        from benchmarks import training
        suites["training"] = training.run(args.optimizers, args.batches, settings.networks)
    summarise(doc)
    doc["seconds"] = time.monotonic() - began
    doc["machine"]["load_average_end"] = list(os.getloadavg())
    write_outputs(doc, out, not args.no_charts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
