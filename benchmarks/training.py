"""Private training of SecureNN's network A (784-128-128-10, ReLU) at batch 128, beside the published
figures: seconds per batch and per 60,000-sample epoch with SGD and with Adam.

Inputs are 28x28 images: scikit-learn's 8x8 digits upscaled (nearest neighbour) when scikit-learn is
installed, random pixels otherwise; the time per batch depends only on the shapes. Weights and data
are shared once; each measured batch is a full step (forward, cross-entropy, backward, optimizer
step) between two barriers, on the processes backend with exact truncation. A batch's time is the
slowest party's; reported: the median over batches after a warm-up batch, and the epoch estimate
469 x that (60,000 / 128 batches); also the CPU time of the three core parties per batch, summed
(half of it is what a batch needs at least on two cores, whatever else runs on the machine). ``--full-epoch`` also trains one real epoch on 60,000 upscaled
digits (repeated, shifted by a pixel) with ``nn.fit`` and reports its wall time and the accuracy on
held-out digits.

Adam's inverse square root compares with bounded, blurred comparisons (``mpcnp.inverse_sqrt``):
alternated with the exact ones (load average 8.3 to 9.3, 10 batches each, three runs): Adam 179.6 ->
134.9 MB per batch, CPU 0.351 -> 0.274 s per batch (medians), wall 141.5-167.6 s -> 81.4-198.8 s
per epoch (too noisy on the loaded machine to rank); SGD unchanged (17.2 MB).

Published (their machines, LAN): SecureNN (Wagh et al., PoPETs 2019) about 4 minutes per epoch;
Falcon (Wagh et al., PoPETs 2021) 780 s for 15 epochs, online phase only (52 s per epoch); MP-SPDZ
0.098 s per batch on 4 cores (46 s per epoch); "Adam in Private" (Attrapadung et al., PoPETs 2022)
95.6% test accuracy after one epoch of Adam in 117 s on 16 cores.

``run`` is the suite of ``python -m benchmarks training``: each optimizer without a network and under
the emulated LAN and WAN (``mp.run(network=...)``), beside the cost model's prediction from the
measured rounds and bytes per party.

Usage: python -m benchmarks training [--optimizers sgd momentum adam] [--batches 3] [--network none lan wan]
       python -m benchmarks.training [--optimizers sgd momentum adam] [--batches 10] [--backend processes]
                                     [--frac-bits 16] [--full-epoch] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

import mpcnp as mp
from benchmarks import costmodel
from mpcnp import nn
from mpcnp.net.shaping import network_profile
from mpcnp.runtime.context import CORE_PARTIES, barrier, current

BATCH = 128
EPOCH_SAMPLES = 60_000
BATCHES_PER_EPOCH = -(-EPOCH_SAMPLES // BATCH)
SIZES = (784, 128, 128, 10)
PUBLISHED = [   # (system, seconds per epoch, how it was measured)
    ("SecureNN (PoPETs 2019)", 240.0, "about 4 minutes per epoch, LAN"),
    ("Falcon (PoPETs 2021)", 780.0 / 15, "780 s for 15 epochs, online phase only, LAN"),
    ("MP-SPDZ", 0.098 * BATCHES_PER_EPOCH, "0.098 s per batch, 4 cores"),
    ("Adam in Private (PoPETs 2022)", 117.0, "one epoch of Adam, 95.6% accuracy, 16 cores, LAN"),
]


class NetworkA:
    """784-128-128-10 with ReLU, as SecureNN's network A; parameters shared by ``owner``. Each hidden
    layer is ``mp.dense_relu`` (the product's truncation fused into the ReLU), as ``nn.Sequential``
    runs a Dense followed by a ReLU."""

    def __init__(self, weights: list[np.ndarray], owner: str = "server0"):
        self.params = [mp.private(lambda v=v: v, owner=owner) for v in weights]

    def __call__(self, x):
        w1, b1, w2, b2, w3, b3 = self.params
        hidden = mp.dense_relu(x, w1, b1)
        hidden = mp.dense_relu(hidden, w2, b2)
        return hidden @ w3 + b3

    def parameters(self) -> list:
        return self.params


def initial_weights(seed: int = 0) -> list[np.ndarray]:
    """He-initialised weights and zero biases."""
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(SIZES, SIZES[1:]):
        weights += [rng.normal(size=(fan_in, fan_out)) * np.sqrt(2 / fan_in), np.zeros(fan_out)]
    return weights


def images(n: int, seed: int = 0, held_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n flattened 28x28 images in [0, 1] and their labels: upscaled digits (repeated, each copy
    shifted by up to a pixel) when scikit-learn is present, else random pixels and labels. The last
    297 digits are held out for testing (``held_out``: return those instead)."""
    rng = np.random.default_rng(seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return rng.random((n, 784)), rng.integers(0, 10, n)
    digits, labels = load_digits(return_X_y=True)
    cut = len(digits) - 297
    digits, labels = (digits[cut:], labels[cut:]) if held_out else (digits[:cut], labels[:cut])
    nearest = (np.arange(28) * 8) // 28
    big = (digits.reshape(-1, 8, 8) / 16.0)[:, nearest][:, :, nearest]
    pick = np.arange(n) % len(big) if held_out else rng.integers(0, len(big), n)
    shifts = np.zeros((n, 2), np.int64) if held_out else rng.integers(-1, 2, (n, 2))
    out = np.stack([np.roll(big[i], tuple(s), axis=(0, 1)) for i, s in zip(pick, shifts)])
    return out.reshape(n, 784), labels[pick]


OPTIMIZERS = ("sgd", "momentum", "adam")


def optimizer(name: str, params):
    """"sgd": plain SGD (what SecureNN, Falcon and MP-SPDZ trained with), "momentum": SGD with
    momentum 0.9, "adam": Adam."""
    if name == "sgd":
        return nn.optim.SGD(params, lr=0.1)
    if name == "momentum":
        return nn.optim.SGD(params, lr=0.05, momentum=0.9)
    if name == "adam":
        return nn.optim.Adam(params, lr=1e-3)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


@dataclass
class Result:
    optimizer: str
    backend: str
    frac_bits: int
    seconds_per_batch: float          # median over the measured batches, slowest party
    seconds_per_epoch: float          # 469 batches of 128
    batch_seconds: list[float]
    megabytes_per_batch: float        # payload, summed over the core parties
    rounds_per_batch: int
    cpu_seconds_per_batch: float      # CPU time of the core parties' processes (ZeroMQ's threads
                                      # included), summed, median over batches: / 2 cores is the
                                      # floor of a batch's time on this machine with nothing else running
    network: str = "none"             # the emulated network (mp.run(network=...))
    party_bytes_per_batch: dict = None   # payload bytes each core party sent per batch
    party_rounds_per_batch: dict = None  # rounds each core party counted per batch
    party_wire_bytes_per_batch: dict = None  # bytes each core party put on the wire per batch (framing and
                                             # the two barriers included): what the cost model divides


def measure(name: str = "sgd", batches: int = 10, backend: str = "processes", frac_bits: int = 16,
            network: str = "none") -> Result:
    """Time ``batches`` training steps of network A (after one warm-up step) with optimizer ``name``,
    on ``network`` ("none" or a profile of mp.run's ``network``)."""
    x, y = images(BATCH * (batches + 1))
    weights = initial_weights()

    def program():
        model = NetworkA(weights)
        data = mp.private(lambda: x, owner="server0")
        labels = mp.private(lambda: np.eye(10)[y], owner="server1")
        opt, loss = optimizer(name, model.parameters()), nn.CrossEntropyLoss()
        times, cpu = [], []
        for b in range(batches + 1):
            rows = slice(b * BATCH, (b + 1) * BATCH)
            barrier(current())
            before, start, cpu_start = mp.stats(), time.perf_counter(), time.process_time()
            value = loss(model(data[rows]), labels[rows])
            opt.zero_grad()
            value.backward()
            opt.step()
            cpu_used = time.process_time() - cpu_start
            barrier(current())
            elapsed, after = time.perf_counter() - start, mp.stats()
            if b:
                times.append(elapsed)
                cpu.append(cpu_used)
        barrier_bytes = 2 * (len(CORE_PARTIES) - 1)
        return times, after["payload_bytes_sent"] - before["payload_bytes_sent"] - barrier_bytes, \
            after["rounds"] - before["rounds"] - 2, cpu, after["bytes_sent"] - before["bytes_sent"]

    results = mp.run(program, backend=backend, truncation="exact", frac_bits=frac_bits, timeout=600,
                     network=None if network == "none" else network)
    seconds = [max(results[p][0][i] for p in CORE_PARTIES) for i in range(batches)]
    per_batch = statistics.median(seconds)
    cpu = statistics.median(sum(results[p][3][i] for p in CORE_PARTIES) for i in range(batches))
    return Result(name, backend, frac_bits, per_batch, per_batch * BATCHES_PER_EPOCH, seconds,
                  sum(results[p][1] for p in CORE_PARTIES) / 1e6, max(results[p][2] for p in CORE_PARTIES), cpu,
                  network, {p: results[p][1] for p in CORE_PARTIES}, {p: results[p][2] for p in CORE_PARTIES},
                  {p: results[p][4] for p in CORE_PARTIES})


def run(optimizers=("sgd", "adam"), batches: int = 3, networks=("none", "lan", "wan"),
        backend: str = "processes", frac_bits: int = 16) -> dict:
    """The training suite of ``python -m benchmarks``: every optimizer on every network, and for each
    emulated network the cost model's prediction (benchmarks/costmodel.py) from the run without one."""
    rows = []
    for name in optimizers:
        base = None
        for network in ("none", *[n for n in networks if n != "none"]):
            result = measure(name, batches, backend, frac_bits, network)
            row = {**asdict(result), "predicted_seconds_per_batch": None}
            if network == "none":
                base = result
            else:
                row["predicted_seconds_per_batch"] = costmodel.predict(
                    base.seconds_per_batch, base.party_wire_bytes_per_batch, base.party_rounds_per_batch,
                    network_profile(network))
            rows.append(row)
    return {"batch": BATCH, "batches_per_epoch": BATCHES_PER_EPOCH, "measured_batches": batches,
            "backend": backend, "frac_bits": frac_bits, "rows": rows,
            "published": [{"system": system, "seconds_per_epoch": sec, "how": how} for system, sec, how in PUBLISHED]}


def full_epoch(name: str = "sgd", backend: str = "processes", frac_bits: int = 16) -> dict:
    """One epoch of ``nn.fit`` on 60,000 upscaled digits, then the accuracy on held-out digits:
    wall seconds (sharing the data included) and accuracy."""
    x, y = images(EPOCH_SAMPLES)
    test_x, test_y = images(297, held_out=True)
    weights = initial_weights()

    def program():
        start = time.perf_counter()
        model = NetworkA(weights)
        data = mp.private(lambda: x, owner="server0")
        labels = mp.private(lambda: np.eye(10)[y], owner="server1")
        nn.fit(model, data, labels, epochs=1, batch_size=BATCH, loss=nn.CrossEntropyLoss(),
               optimizer=optimizer(name, model.parameters()), seed=0, progress=False)
        seconds = time.perf_counter() - start
        scores = nn.evaluate(model, mp.private(lambda: test_x, owner="server1"), test_y, to="server0")
        return seconds, scores

    results = mp.run(program, backend=backend, truncation="exact", frac_bits=frac_bits, timeout=1200)
    return {"optimizer": name, "seconds": max(results[p][0] for p in CORE_PARTIES),
            "accuracy": results["server0"][1]["accuracy"]}


def describe(results: list[Result], epochs: list[dict]) -> str:
    """A markdown table of the measurements beside the published figures."""
    lines = ["| system | optimizer | s per batch | s per epoch | MB per batch | rounds per batch | CPU s per batch |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| mpcnp, 2 cores, {r.backend}, frac_bits {r.frac_bits}, exact truncation | {r.optimizer} | "
                     f"{r.seconds_per_batch:.3f} | {r.seconds_per_epoch:.1f} | {r.megabytes_per_batch:.1f} | "
                     f"{r.rounds_per_batch} | {r.cpu_seconds_per_batch:.3f} |")
    for system, seconds, how in PUBLISHED:
        lines.append(f"| {system} ({how}) | | {seconds / BATCHES_PER_EPOCH:.3f} | {seconds:.0f} | | | |")
    for e in epochs:
        lines.append(f"\nOne full epoch with nn.fit ({e['optimizer']}): {e['seconds']:.1f} s, held-out "
                     f"accuracy {e['accuracy']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=OPTIMIZERS)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--backend", default="processes", choices=["processes", "threads"])
    parser.add_argument("--frac-bits", type=int, default=16)
    parser.add_argument("--full-epoch", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = [measure(name, args.batches, args.backend, args.frac_bits) for name in args.optimizers]
    epochs = [full_epoch(name, args.backend, args.frac_bits) for name in args.optimizers] if args.full_epoch else []
    print(describe(results, epochs))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"batches": [asdict(r) for r in results], "epochs": epochs}, out, indent=1)


if __name__ == "__main__":
    main()
