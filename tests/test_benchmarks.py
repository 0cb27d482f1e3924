"""The benchmark harness: ``python -m benchmarks --quick`` as CI runs it, the schema of its JSON, its
measured bytes and rounds against the protocol cost table, and the pieces it is built from.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import costmodel, harness, ops, published, report
from benchmarks.ops import OPERATIONS, operation
from mpcnp.net.shaping import NetworkProfile
from mpcnp.runtime.context import CORE_PARTIES

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks", *args, "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("quick")
    return run_cli("--quick", out=out), out


def test_the_quick_run_writes_the_documented_schema(quick):
    doc, out = quick
    assert doc["schema"] == report.SCHEMA
    assert doc["settings"]["quick"] is True and doc["command"].endswith("--quick --out " + str(out))
    assert {"cpu", "cpus", "platform", "ring_kernels", "load_average"} <= set(doc["machine"])
    assert doc["versions"]["python"] and doc["versions"]["numpy"]
    assert set(doc["git"]) == {"commit", "dirty"}
    assert doc["gemm"]["gmacs"] > 0
    assert {(c["backend"], c["network"]) for c in doc["calibrations"]} == {("threads", "none"), ("threads", "lan")}
    assert len(doc["published"]) == len(published.PAPER) and len(doc["targets"]) == len(published.TARGETS)
    cells = doc["cells"]
    assert len(cells) >= 60
    for cell in cells:
        assert set(report.CELL_KEYS) <= set(cell), set(report.CELL_KEYS) - set(cell)
        assert cell["status"] == "ok"
        assert len(cell["times_s"]) == cell["reps"] == 3 and all(t > 0 for t in cell["times_s"])
        assert cell["min_s"] <= cell["median_s"] <= cell["max_s"]
        assert set(cell["payload_bytes"]) == set(cell["rounds"]) == set(CORE_PARTIES)
        assert cell["payload_bytes_total"] == sum(cell["payload_bytes"].values())
        assert all(cell["wire_bytes"][p] > cell["payload_bytes"][p] or cell["payload_bytes"][p] == 0
                   for p in CORE_PARTIES)
        assert cell["consistent"] is True
        assert cell["floor"]["floor_s"] > 0 and cell["floor_ratio"] > 0
        assert operation(cell["op"]).parse(cell["size"]) == cell["dims"]
    assert (out / "results.md").read_text().count("\n## ") >= 5


def test_the_quick_runs_bytes_and_rounds_equal_the_cost_table(quick):
    doc, _ = quick
    checked = 0
    for cell in doc["cells"]:
        expected = costmodel.expected(cell["op"], cell["dims"], cell["protocol"], cell["truncation"])
        if expected is None:
            continue
        checked += 1
        what = f"{cell['op']} {cell['size']} {cell['protocol']}/{cell['truncation']} {cell['network']}"
        assert cell["payload_bytes_total"] == expected["bytes"], what
        assert cell["rounds_max"] == expected["rounds"], what
        assert cell["cost_match"] is True, what
    # every product under both protocols and truncations, SecureNN's comparisons, on two networks
    assert checked >= 40


def test_the_quick_runs_results_are_within_their_documented_error(quick):
    doc, _ = quick
    guaranteed = [c for c in doc["cells"] if c["tolerance_guaranteed"]]
    assert len(guaranteed) >= 30
    for cell in guaranteed:
        assert cell["max_error"] <= cell["tolerance"], (cell["op"], cell["size"], cell["protocol"], cell["max_error"])


def test_the_quick_runs_network_cells_carry_the_model_and_charts_are_drawn(quick):
    doc, out = quick
    network = [c for c in doc["cells"] if c["network"] == "lan"]
    assert network and all(c["emulation"] == "shaping" and c["model"]["predicted_s"] > c["model"]["base_s"]
                           for c in network)
    assert doc["agreement"][0]["cells"] == len(network)
    assert doc["charts"]
    for chart in doc["charts"]:
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_processes_backend_under_a_custom_network_counts_as_the_table(tmp_path):
    doc = run_cli("--backends", "processes", "--ops", "relu", "matmul", "--sizes", "relu=200", "matmul=8x9x10",
                  "--protocols", "securenn", "--network", "none", "test:200MB/s:1ms", "--reps", "1",
                  "--no-charts", out=tmp_path)
    assert [(c["backend"], c["network"]) for c in doc["cells"]] == (
        [("processes", "none")] * 4 + [("processes", "test:200MB/s:1ms")] * 4)
    for cell in doc["cells"]:
        assert cell["status"] == "ok" and cell["cost_match"] is True
    assert not doc["charts"]


@pytest.mark.parametrize("args,message", [
    (["--network", "moon"], "unknown network 'moon'"), (["--sizes", "relu=64y16"], "relu: cannot read size"),
    (["--sizes", "relu"], "OP=SIZE"), (["--reps", "0"], "at least 1"), (["--ops", "sort"], "invalid choice")])
def test_bad_options_are_refused_naming_the_problem(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", *args, "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr


# ---- the pieces ---------------------------------------------------------------------------------------
def test_the_model_adds_the_slowest_partys_rounds_and_bytes():
    profile = NetworkProfile("t", 1000.0, 0.5)
    predicted = costmodel.predict(2.0, {"server0": 1000, "server1": 3000, "producer": 0},
                                  {"server0": 4, "server1": 1, "producer": 2}, profile)
    assert predicted == pytest.approx(2.0 + max(4 * 0.5 + 1.0, 1 * 0.5 + 3.0, 2 * 0.5))
    summary = costmodel.agreement([(2.0, 1.0), (1.0, 1.0), (3.0, 4.0)])
    assert summary["cells"] == 3 and summary["median_ratio"] == 1.0
    assert (summary["min_ratio"], summary["max_ratio"], summary["median_abs_error"]) == (0.75, 2.0, 0.25)


def test_merge_takes_the_slowest_party_from_the_agreed_start_and_flags_changing_counts():
    job = harness.Job("relu", "10", "local", 2, 0, 0.0)
    per_party = {p: {"reps": [[10.0, 10.0 + 0.001 * (i + 1), 0.0, 100, 150, 3],
                              [20.0, 20.0 + 0.002 * (i + 1), 0.0005 * i, 100, 150, 3 + (p == "producer")]],
                     "error": 0.0 if p == "server0" else None, "profile": ""} for i, p in enumerate(CORE_PARTIES)}
    m = harness.merge(job, per_party)
    assert m.seconds == pytest.approx([0.003, 0.006]) and m.late_s == pytest.approx(0.001)
    assert m.consistent is False and m.rounds["producer"] == 4 and m.max_error == 0.0
    per_party["server1"]["reps"][0][0] = 10.5
    with pytest.raises(RuntimeError, match="different start times"):
        harness.merge(job, per_party)


@pytest.mark.parametrize("op,label,dims", [
    ("matmul", "64", {"m": 64, "n": 64, "v": 64}), ("matmul", "784x128x10", {"m": 784, "n": 128, "v": 10}),
    ("multiply", "1e6", {"n": 1_000_000}), ("relu", "576x20", {"n": 11520}),
    ("conv2d", "28,5,1,20", {"h": 28, "f": 5, "i": 1, "o": 20}),
    ("maxpool2d", "8x8x50/4", {"h": 8, "w": 8, "c": 50, "k": 4}), ("network", "C/128", {"name": "C", "batch": 128})])
def test_size_labels(op, label, dims):
    assert operation(op).parse(label) == dims


@pytest.mark.parametrize("op,label", [("matmul", "1.5"), ("relu", "0"), ("maxpool2d", "9x9x2"),
                                      ("network", "E/1"), ("conv2d", "28,5,1")])
def test_bad_size_labels_are_refused(op, label):
    with pytest.raises(ValueError, match=f"{op}: cannot read size '{label}'"):
        operation(op).parse(label)


def test_every_published_row_and_target_names_a_size_we_can_run():
    for row in published.PAPER:
        operation(row.op).parse(row.size)
        assert row.size in operation(row.op).sizes
    for target in published.TARGETS:
        if target.op in OPERATIONS:
            assert target.size in operation(target.op).sizes


def test_the_published_communication_follows_the_papers_own_formulas():
    # SecureNN's Table 2 with PRF-compressed triples: matmul 8 (2mn + 2nv + mv) bytes and conv2d
    # 8 (2 m^2 f^2 i + 2 f^2 o i + m^2 o) for an m x m output: the table's MB are 10^6 bytes
    for row in published.PAPER:
        d = operation(row.op).parse(row.size)
        if row.op == "matmul":
            paper = 8 * (2 * d["m"] * d["n"] + 2 * d["n"] * d["v"] + d["m"] * d["v"])
        elif row.op == "conv2d":
            m, f, i, o = d["h"] - d["f"] + 1, d["f"], d["i"], d["o"]
            paper = 8 * (2 * m * m * f * f * i + 2 * f * f * o * i + m * m * o)
        else:
            continue
        assert paper / 1e6 == pytest.approx(row.comm_mb, abs=0.01), row.label   # published to 0.01 MB


def test_every_operation_agrees_with_numpy_on_plaintext_inputs():
    # the NumPy reference of each operation against mpcnp's public (plaintext) path, on its quick sizes
    # (drelu's reference is one NumPy comparison, and PublicTensor has no >= to hold it against)
    import mpcnp as mp
    for op in (op for op in OPERATIONS.values() if op.name != "drelu"):
        for label in op.quick or op.sizes[:1]:
            dims = op.parse(label)
            arrays = op.inputs(np.random.default_rng(1), dims)
            state = [] if op.prepare is None else [ops._nn_model(dims["name"], "securenn")]   # a plaintext model
            public = op.private(dims, *state, *[mp.public(a) for a in arrays])
            np.testing.assert_allclose(public.value, op.plain(dims, *arrays), atol=1e-9, err_msg=f"{op.name} {label}")


def test_a_cell_that_fails_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    from benchmarks import matrix
    settings = matrix.Settings(ops=["relu"], sizes={"relu": ["10", "20"]}, protocols=["securenn"],
                               truncations=["local"], backends=["threads"], networks=["none"], reps=1, quick=True)
    runner = matrix.Runner(settings, log=lambda text: None)
    real = harness.measure

    def flaky(job, *args, **kwargs):
        if job.size == "10":
            raise RuntimeError("boom")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(harness, "measure", flaky)
    records = runner.run_all(matrix.plan(settings))
    assert [r["status"] for r in records] == ["failed: RuntimeError: boom", "ok"]


def test_netns_emulation_counts_as_the_table_where_namespaces_work():
    from benchmarks import netns
    try:
        emulation = netns.Emulation().start()
    except netns.Unavailable as exc:
        pytest.skip(f"network namespaces unavailable here: {exc}")
    try:
        job = harness.Job("relu", "64x16", "local", 1, 7, 3 * 0.01 + 0.002)
        m = emulation.measure(job, "securenn", NetworkProfile("t", 40e6, 0.01))
        assert sum(m.payload_bytes.values()) == costmodel.expected("relu", {"n": 1024}, "securenn", "local")["bytes"]
        assert max(m.rounds.values()) == 3 and m.max_error == 0.0 and m.consistent
    finally:
        emulation.stop()
    assert not any(ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                   for ns in emulation.namespaces.values())


def test_the_floor_is_rounds_bytes_and_products_at_the_measured_limits():
    from benchmarks import limits
    f = limits.floor(3, 2_000_000, 10 ** 9, 1e-4, 1e9, 10.0)
    assert f == pytest.approx({"floor_s": 3e-4 + 2e-3 + 0.1, "rounds_s": 3e-4, "bytes_s": 2e-3, "compute_s": 0.1})
    assert limits.floor(1, 10 ** 6, 0, 1e-5, None, 10.0)["bytes_s"] == 0.0
    assert math.isfinite(limits.gemm_peak(quick=True)["gmacs"])


def test_the_training_suite_reports_each_network_beside_the_model_and_the_papers():
    from benchmarks import training
    suite = training.run(["sgd"], batches=1, networks=["none", "lan:1GB/s:1ms"], backend="threads")
    none, lan = suite["rows"]
    assert (none["network"], lan["network"]) == ("none", "lan:1GB/s:1ms")
    assert none["predicted_seconds_per_batch"] is None
    for row in (none, lan):
        assert set(row["party_bytes_per_batch"]) == set(CORE_PARTIES) == set(row["party_rounds_per_batch"])
        assert row["megabytes_per_batch"] * 1e6 == sum(row["party_bytes_per_batch"].values()) > 0
        assert row["seconds_per_epoch"] == row["seconds_per_batch"] * suite["batches_per_epoch"]
    # the emulated network changes neither the bytes nor the rounds; the model adds its rounds x 1 ms
    assert lan["party_bytes_per_batch"] == none["party_bytes_per_batch"]
    assert lan["party_rounds_per_batch"] == none["party_rounds_per_batch"]
    assert all(none["party_wire_bytes_per_batch"][p] > none["party_bytes_per_batch"][p] for p in CORE_PARTIES)
    slowest = max(none["party_rounds_per_batch"][p] * 1e-3 + none["party_wire_bytes_per_batch"][p] / 1e9
                  for p in CORE_PARTIES)
    assert lan["predicted_seconds_per_batch"] == pytest.approx(none["seconds_per_batch"] + slowest)
    text = "\n".join(report.training_lines(suite))
    assert "| sgd | none |" in text and "0.527 s per batch on its LAN" in text and "MP-SPDZ" in text
