"""One party of benchmarks/netns.py's cluster: ``python -m mpcnp party ... netns_party.py RUN_DIR``.

Reads RUN_DIR/spec.json (jobs for benchmarks.harness.party_program, or a calibration), runs it with
``mp.run`` as the party the command bound this process to, with the spec's latency emulated by the
shaping transport held at the sender (bandwidth comes from tbf on the links), and writes RUN_DIR/<party>.json.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import mpcnp as mp
from benchmarks import harness
from mpcnp.net.shaping import NetworkProfile
from mpcnp.runtime import cluster


def main(run_dir: Path) -> None:
    spec = json.loads((run_dir / "spec.json").read_text())
    # latency only, held at the sender: tbf on the links then serialises, in series, as on a wire
    network = NetworkProfile("latency", math.inf, spec["latency"], hold="sender") if spec["latency"] > 0 else None
    if spec["kind"] == "jobs":
        jobs = [harness.Job(**job) for job in spec["jobs"]]
        results = mp.run(harness.party_program, jobs, protocol=spec["protocol"], network=network, timeout=600.0)
    else:
        results = mp.run(harness.calibration_program, *spec["args"], network=network, timeout=600.0)
    party = cluster.binding().name     # mp.run returns every party's key, None under the others
    (run_dir / f"{party}.json").write_text(json.dumps(results[party]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
