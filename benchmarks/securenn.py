"""Benchmark of SecureNN's exact nonlinear layers: ReLU of 1e5 elements, 2x2 max pooling of 1x16x24x24.

Targets (issue "SecureNN: exact comparisons..."): ReLU <= 100 ms, maxpool <= 110 ms. For reference,
CrypTen 0.4 takes 177-249 ms and 314-335 ms, TF Encrypted's SecureNN ReLU 1.33 s.

Timing as in benchmarks/harness.py (barriers, fresh private inputs, the slowest party per repetition,
median and minimum over repetitions). Bytes are payload bytes summed over the parties, per element of
the input (ReLU) or per window (maxpool); rounds the largest per-party increase of the Lamport clock.
``--backend`` chooses processes (the default: one OS process per party, ZeroMQ over ipc) or threads;
``--profile`` prints each party's cProfile of one repetition. ``MPCNP_RING=numpy`` in the environment
runs every kernel (ring and Z_p) in NumPy.

Usage: python benchmarks/securenn.py [--reps 7] [--backend processes|threads] [--profile]
"""
from __future__ import annotations

import numpy as np

from harness import describe_machine, measure, parse_args

import mpcnp as mp

from mpcnp import zp


def report(name: str, layer, make_input, units: int, unit: str, args, target_ms: float) -> None:
    result = measure(layer, [make_input], args.reps, args.backend, profile=args.profile)
    verdict = "meets" if result.median_ms <= target_ms else "misses"
    print(f"{name:34s} median {result.median_ms:7.1f} ms  min {result.min_ms:7.1f} ms  ({verdict} "
          f"{target_ms:.0f} ms)  {result.payload_bytes / units:6.0f} B/{unit}  {result.rounds} rounds  "
          f"{result.payload_bytes / 1e6:6.1f} MB")
    for party, text in result.profiles.items():
        if text:
            print(f"--- {party} ---\n{text}")


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    print(f"{describe_machine(args.backend, args.reps)}; Z_p kernels: {zp.KERNELS}")
    rng = np.random.default_rng(7)
    relu_input = rng.normal(0.0, 4.0, 100_000)
    pool_input = rng.normal(0.0, 4.0, (1, 16, 24, 24))
    report("relu, 1e5 elements", mp.relu, lambda: mp.private(relu_input), relu_input.size,
           "element", args, 100.0)
    report("maxpool2d 2x2, 1x16x24x24", lambda t: mp.maxpool2d(t, 2), lambda: mp.private(pool_input),
           pool_input.size // 4, "window", args, 110.0)


if __name__ == "__main__":
    main()
