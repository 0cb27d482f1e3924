"""Cluster mode as a user meets it: the README's program unchanged on six hosts (loopback), a party
saying whom it waits for, one-line errors for a taken port, a missing script and an insecure cluster."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import finish
from mpcnp.runtime.clusterfile import free_ports, write_cluster

pytestmark = pytest.mark.processes
CORE = ("server0", "server1", "producer")

README_PROGRAM = textwrap.dedent("""
    import numpy as np
    import mpcnp as mp

    def main():
        a = mp.private(lambda: np.array([1.5, 2.0]), owner="alice")   # only alice runs the lambda
        b = mp.private(lambda: np.array([0.25, -1.0]), owner="bob")
        return (a + b).reveal(to="carol")                             # an ndarray on carol, None elsewhere

    result = mp.run(main, parties=["alice", "bob", "carol"])
    print(result["carol"])                                            # [ 1.75  1.  ]
""")


def cluster(tmp_path: Path, names, **kwargs) -> Path:
    ports = free_ports(len(names))
    return write_cluster(tmp_path / "cluster", {n: f"127.0.0.1:{p}" for n, p in zip(names, ports)}, **kwargs)


def start(config: Path, name: str, script: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mpcnp", "party", "--config", str(config), "--name", name,
                             str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_readme_program_runs_unchanged_on_every_host(tmp_path):
    names = (*CORE, "alice", "bob", "carol")
    config = cluster(tmp_path, names)
    script = tmp_path / "first.py"
    script.write_text(README_PROGRAM)
    procs = {name: start(config, name, script) for name in names}
    outputs = finish(procs)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outputs[name])
    assert outputs["carol"][0].strip() == "[1.75 1.  ]"
    assert all(outputs[n][0].strip() == "None" for n in names if n != "carol")


def test_a_party_says_whom_it_waits_for_then_names_a_missing_party(tmp_path):
    config = cluster(tmp_path, CORE)
    script = tmp_path / "program.py"
    script.write_text("import mpcnp as mp\nmp.run(lambda: None, timeout=4)\n")
    start_time = time.monotonic()
    out, err = finish({"server0": start(config, "server0", script)})["server0"]
    assert time.monotonic() - start_time < 4 + 2 + 3  # timeout + 2 s, and the interpreter's start
    address = json.loads(config.read_text())["server1"]["address"]
    assert f"mpcnp server0: waiting for server1 (tcp://{address}), producer" in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mpcnp party server0: party 'server1' failed: TimeoutError"), err


def test_a_taken_port_and_a_missing_script_are_one_line_errors(tmp_path):
    config = cluster(tmp_path, CORE)
    script = tmp_path / "program.py"
    script.write_text("import mpcnp as mp\nmp.run(lambda: None, timeout=4)\n")
    port = int(json.loads(config.read_text())["server0"]["address"].rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        out, err = finish({"server0": start(config, "server0", script)})["server0"]
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mpcnp party server0: party 'server0' failed: NetError: server0 cannot bind "
                          f"tcp://127.0.0.1:{port}: Address already in use"), err
    missing = subprocess.run([sys.executable, "-m", "mpcnp", "party", "--config", str(config), "--name",
                              "server0", str(tmp_path / "nope.py")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr == f"mpcnp party: no such script: {tmp_path / 'nope.py'}\n"


def test_every_party_of_an_insecure_cluster_warns_at_start_up(tmp_path):
    ports = free_ports(3)
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps({**{n: f"127.0.0.1:{p}" for n, p in zip(CORE, ports)}, "insecure": True}))
    script = tmp_path / "program.py"
    script.write_text("import mpcnp as mp\nprint(mp.run(lambda: mp.party(), timeout=20))\n")
    outputs = finish({name: start(config, name, script) for name in CORE})
    for name in CORE:
        out, err = outputs[name]
        assert f"mpcnp {name}: WARNING:" in err and "in the clear" in err, err
        assert json.loads(out.replace("'", '"').replace("None", "null"))[name] == name
