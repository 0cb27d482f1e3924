"""Real network emulation: the three core parties in Linux network namespaces, as a cluster over tcp.

Topology: one namespace per party, a veth pair between every two of them (so every directed link
has its own queue, as in mpcnp.net.shaping), a /32 address per party on its loopback and routes to
the others over the pairs. Bandwidth: a ``tc tbf`` qdisc on both ends of every pair at the
profile's rate. Latency: tbf cannot delay and this kernel has no netem, so the parties run
``mp.run(network=...)`` with a latency-only profile (the shaping transport, unlimited bandwidth) on
top of tbf; the report says so. Parties are ``python -m mpcnp party`` processes started with
``ip netns exec``, on an unencrypted cluster file (the namespaces are a private network of this
run); each runs benchmarks/netns_party.py and writes what it measured to a file.

Needs root, ``ip`` and ``tc`` with tbf; ``Emulation.start`` raises ``Unavailable`` with the reason
otherwise, and the caller falls back to the shaping transport alone. Everything created is named
after this process and removed by ``stop`` (also at exit).
"""
from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import harness
from mpcnp.net.shaping import NetworkProfile
from mpcnp.runtime.context import CORE_PARTIES

ROOT = Path(__file__).resolve().parents[1]   # the checkout: benchmarks/ must be importable from here
PORT = 47000


class Unavailable(RuntimeError):
    """Network namespaces cannot be used here; the message says why."""


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise Unavailable(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.returncode}")
    return result


class Emulation:
    """The namespaces, their links and the cluster file; ``shape`` sets the links' rate."""

    def __init__(self) -> None:
        tag = os.getpid()
        self.namespaces = {p: f"mpcnpb{tag}-{i}" for i, p in enumerate(CORE_PARTIES)}
        self.hosts = {p: f"10.214.0.{i + 1}" for i, p in enumerate(CORE_PARTIES)}
        self.links: list[tuple[str, str, str, str]] = []   # (party, its veth, peer, peer's veth)
        self.directory = Path(tempfile.mkdtemp(prefix="mpcnp-netns-"))
        self.netem = False
        self.rate: float | None = None
        self._started = False

    # ---- life cycle --------------------------------------------------------------------------------
    def start(self) -> "Emulation":
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise Unavailable(f"`{tool}` (iproute2) is not installed")
        self._started = True
        atexit.register(self.stop)
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        for ns in self.namespaces.values():
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        for party, host in self.hosts.items():
            _run("ip", "-n", self.namespaces[party], "addr", "add", f"{host}/32", "dev", "lo")
        parties = list(CORE_PARTIES)
        for k, (a, b) in enumerate((a, b) for i, a in enumerate(parties) for b in parties[i + 1:]):
            va, vb = f"mb{os.getpid()}{k}a", f"mb{os.getpid()}{k}b"
            _run("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
            for party, veth, address, peer, peer_address in ((a, va, f"10.213.{k}.1", b, f"10.213.{k}.2"),
                                                             (b, vb, f"10.213.{k}.2", a, f"10.213.{k}.1")):
                ns = self.namespaces[party]
                _run("ip", "link", "set", veth, "netns", ns)
                _run("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", veth)
                _run("ip", "-n", ns, "link", "set", veth, "up")
                _run("ip", "-n", ns, "route", "add", f"{self.hosts[peer]}/32", "via", peer_address, "dev", veth)
            self.links += [(a, va, b, vb), (b, vb, a, va)]
        ns = self.namespaces[parties[0]]
        probe = _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                     check=False)
        self.netem = probe.returncode == 0
        if self.netem:
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root")
        self.shape(None)
        self.shape(NetworkProfile("probe", 40e6, 0.0))   # fails here, with the reason, if tbf is missing
        self.shape(None)
        cluster = {"insecure": True, **{p: f"{h}:{PORT}" for p, h in self.hosts.items()}}
        (self.directory / "cluster.json").write_text(json.dumps(cluster))

    def stop(self) -> None:
        if self._started:
            self._started = False
            for ns in self.namespaces.values():   # deleting a namespace deletes its veth ends
                _run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "Emulation":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> str:
        return ("three namespaces, a veth pair per two parties, tc tbf on every link for bandwidth; latency "
                "from the shaping transport (" + ("netem exists here but is not used, so that every machine "
                "emulates alike" if self.netem else "this kernel has no netem") + "); tcp without CurveZMQ")

    # ---- shaping -----------------------------------------------------------------------------------
    def shape(self, profile: NetworkProfile | None) -> None:
        """Every link at ``profile.bandwidth`` (tbf), or unshaped for None or unlimited bandwidth."""
        rate = None if profile is None or profile.bandwidth == math.inf else profile.bandwidth
        if rate == self.rate and self._started and rate is not None:
            return
        for party, veth, _, _ in self.links:
            ns = self.namespaces[party]
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", veth, "root", check=False)
            if rate is not None:
                # burst 128 KiB: two GSO segments; enough for tbf's high-resolution timer to hold 625 MB/s
                # (measured: 128 KiB to 1 MiB all give 590 MB/s of tcp goodput), small enough that a
                # message does not pass unshaped. Goodput is ~4% below the rate: IP and TCP headers.
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", veth, "root", "tbf",
                     "rate", f"{int(rate)}bps", "burst", str(128 * 1024), "latency", "1s")
        self.rate = rate

    # ---- running parties ---------------------------------------------------------------------------
    def _launch(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run benchmarks/netns_party.py as every core party; {party: what it wrote}."""
        run_dir = Path(tempfile.mkdtemp(dir=self.directory))
        (run_dir / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        procs = {p: subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[p], sys.executable, "-m", "mpcnp", "party",
             "--config", str(self.directory / "cluster.json"), "--name", p,
             str(ROOT / "benchmarks" / "netns_party.py"), str(run_dir)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in CORE_PARTIES}
        errors = {}
        try:
            for party, proc in procs.items():
                try:
                    _, err = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    errors[party] = f"did not finish within {timeout:g} s"
                    break
                if proc.returncode != 0:
                    errors[party] = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        if errors:
            raise RuntimeError("netns parties failed: " + "; ".join(f"{p}: {e}" for p, e in errors.items()))
        out = {p: json.loads((run_dir / f"{p}.json").read_text()) for p in CORE_PARTIES}
        shutil.rmtree(run_dir, ignore_errors=True)
        return out

    def measure(self, job: harness.Job, protocol: str, profile: NetworkProfile | None,
                timeout: float = 1800.0) -> harness.Measurement:
        self.shape(profile)
        spec = {"kind": "jobs", "jobs": [job.__dict__], "protocol": protocol,
                "latency": 0.0 if profile is None else profile.latency}
        results = self._launch(spec, timeout)
        return harness.merge(job, {p: r[0] for p, r in results.items()})

    def calibrate(self, network: str, quick: bool) -> dict[str, float]:
        from mpcnp.net.shaping import network_profile
        profile = None if network == "none" else network_profile(network)
        self.shape(profile)
        exchanges, size, transfers = (20, 1 << 20, 3) if quick else (50, 8 << 20, 5)
        spec = {"kind": "calibrate", "args": [exchanges, size, transfers],
                "latency": 0.0 if profile is None else profile.latency}
        return self._launch(spec, 600.0)["server0"]
