"""What a cell should cost: the cost table's bytes and rounds, and a network's time.

``expected(op, dims, protocol, truncation)`` composes the entries of the protocol cost table
(``mpcnp.protocols.costs.COSTS``) into the tensor-level operation the matrix runs: a product adds
an exact truncation of its output under ``truncation="exact"``; ``x >= 0`` is one DReLU; a K x K
max pooling is a tournament of K^2 - 1 max steps per window in ceil(log2 K^2) sequential levels.
Pond's comparisons are polynomials with no entry in the table (None).

``predict(base_s, wire_bytes, rounds, profile)``: the cost model of a network (SecureNN's setup):
the time measured without a network plus, for the slowest party, its rounds times the latency and
its bytes over the bandwidth. ``agreement`` summarises how measured times under emulation compare.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

from mpcnp.net.shaping import NetworkProfile

from mpcnp.protocols.costs import COSTS

COSTS_SOURCE = "mpcnp.protocols.costs"


def _with_truncation(bytes_: int, rounds: int, outputs: int, truncation: str, formula: str):
    if truncation != "exact":
        return bytes_, rounds, formula
    cost = COSTS["truncate_exact"]
    return bytes_ + cost.bytes(n=outputs), rounds + cost.rounds, f"{formula} + truncate_exact(n={outputs})"


def expected(op: str, dims: dict[str, Any], protocol: str, truncation: str) -> dict[str, Any] | None:
    """{"bytes": payload bytes summed over the parties, "rounds": counted rounds, "formula": how}
    from the cost table, or None where the table has no entry for this cell."""
    if op == "matmul":
        m, n, v = dims["m"], dims["n"], dims["v"]
        cost = COSTS["matmul"]
        b, r, f = _with_truncation(cost.bytes(m=m, n=n, v=v), cost.rounds, m * v, truncation,
                                   f"matmul(m={m}, n={n}, v={v})")
    elif op == "multiply":
        cost = COSTS["multiply"]
        b, r, f = _with_truncation(cost.bytes(n=dims["n"]), cost.rounds, dims["n"], truncation,
                                   f"multiply(n={dims['n']})")
    elif op == "conv2d":
        out = dims["h"] - dims["f"] + 1
        x, w, z = dims["i"] * dims["h"] ** 2, dims["o"] * dims["i"] * dims["f"] ** 2, dims["o"] * out ** 2
        cost = COSTS["conv2d"]
        b, r, f = _with_truncation(cost.bytes(x=x, w=w, z=z), cost.rounds, z, truncation,
                                   f"conv2d(x={x}, w={w}, z={z})")
    elif protocol != "securenn" or op == "network":
        return None
    elif op == "drelu":
        cost = COSTS["drelu"]
        b, r, f = cost.bytes(n=dims["n"]), cost.rounds, f"drelu(n={dims['n']})"
    elif op == "relu":
        cost = COSTS["relu"]
        b, r, f = cost.bytes(n=dims["n"]), cost.rounds, f"relu(n={dims['n']})"
    elif op == "maxpool2d":
        window = dims["k"] ** 2
        comparisons = (window - 1) * dims["c"] * (dims["h"] // dims["k"]) * (dims["w"] // dims["k"])
        levels = math.ceil(math.log2(window))
        cost = COSTS["max_step"]
        b, r = cost.bytes(n=comparisons), levels * cost.rounds
        f = f"max_step(n={comparisons}) in {levels} levels"
    else:
        return None
    return {"bytes": int(b), "rounds": int(r), "formula": f}


def predict(base_s: float, wire_bytes: dict[str, int], rounds: dict[str, int],
            profile: NetworkProfile) -> float:
    """Seconds on ``profile``: the time without a network plus the slowest party's rounds x latency
    + bytes sent / bandwidth."""
    network = max(rounds[p] * profile.latency + wire_bytes[p] / profile.bandwidth for p in wire_bytes)
    return base_s + network


def agreement(pairs: Iterable[tuple[float, float]]) -> dict[str, float] | None:
    """For (measured, predicted) pairs: how many, the median, smallest and largest ratio
    measured / predicted, and the median absolute relative error."""
    ratios = [m / p for m, p in pairs if p > 0]
    if not ratios:
        return None
    return {"cells": len(ratios), "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
            "max_ratio": max(ratios), "median_abs_error": statistics.median(abs(r - 1) for r in ratios)}
