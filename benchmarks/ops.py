"""Pond's linear algebra on the processes backend, one thread per party, against CrypTen 0.4's times.

Rows (issue "Pond: private tensors..."): private matmul 256^3 and 1024^3, elementwise multiply of 1e6
elements, conv2d of 1x1x28x28 with twenty 5x5 filters. Each on fresh private operands (full cost: no
mask reuse), timed with benchmarks/harness.py. CrypTen 0.4 with its trusted third party takes, on this
kind of machine, 23-32 ms, 653-727 ms and 113-118 ms for the first three; the target is at most half
of CrypTen's time (the lower end of its range is used).

Usage: python benchmarks/ops.py [--reps 7] [--backend processes|threads] [--profile]
"""
from __future__ import annotations

import numpy as np

from harness import describe_machine, measure, parse_args

import mpcnp as mp

CRYPTEN_MS = {"matmul 256^3": 23.0, "matmul 1024^3": 653.0, "multiply 1e6": 113.0}


def rows(rng: np.random.Generator):
    a256, b256 = rng.normal(size=(256, 256)), rng.normal(size=(256, 256))
    a1k, b1k = rng.normal(size=(1024, 1024)), rng.normal(size=(1024, 1024))
    u, v = rng.normal(size=10 ** 6), rng.normal(size=10 ** 6)
    image, filters = rng.normal(size=(1, 1, 28, 28)), rng.normal(size=(20, 1, 5, 5))
    return [
        ("matmul 256^3", lambda x, y: x @ y, (a256, b256)),
        ("matmul 1024^3", lambda x, y: x @ y, (a1k, b1k)),
        ("multiply 1e6", lambda x, y: x * y, (u, v)),
        ("conv2d 1x1x28x28, 20 5x5", lambda x, w: mp.conv2d(x, w), (image, filters)),
    ]


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    print(describe_machine(args.backend, args.reps))
    print(f"{'operation':28s}{'median':>10s}{'min':>10s}{'CrypTen':>10s}{'ratio':>8s}{'target':>9s}"
          f"{'MB':>8s}{'rounds':>8s}")
    for name, op, arrays in rows(np.random.default_rng(3)):
        makers = [lambda a=a: mp.private(a) for a in arrays]
        result = measure(op, makers, args.reps, args.backend, profile=args.profile)
        crypten = CRYPTEN_MS.get(name)
        ratio = f"{result.median_ms / crypten:.2f}" if crypten else "-"
        target = ("ok" if result.median_ms <= crypten / 2 else "MISSED") if crypten else "-"
        print(f"{name:28s}{result.median_ms:9.1f}ms{result.min_ms:9.1f}ms"
              f"{(f'{crypten:.0f}ms' if crypten else '-'):>10s}{ratio:>8s}{target:>9s}"
              f"{result.payload_bytes / 1e6:8.2f}{result.rounds:8d}")
        if args.profile:
            for party, text in result.profiles.items():
                print(f"--- {party} ---\n{text}")


if __name__ == "__main__":
    main()
