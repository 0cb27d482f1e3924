"""A stand-in for ``mpcnp.protocols.costs`` (the one table of protocol costs, being written in the
core) with the same interface, used only until that module exists; delete it then.

Figures are those the protocol tests assert today (payload bytes summed over all parties, counted
rounds): tests/test_pond.py and tests/test_securenn_layers.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Cost:
    rounds: int
    formula: str
    why: str
    _bytes: Callable[..., int]
    paper_rounds: int | None = None
    _paper: Callable[..., int] | None = None

    def bytes(self, **dims: int) -> int:
        return int(self._bytes(**dims))

    def paper_bytes(self, **dims: int) -> int | None:
        return None if self._paper is None else int(self._paper(**dims))


def _per(k: int) -> Callable[..., int]:
    return lambda n: k * n


COSTS: dict[str, Cost] = {
    "matmul": Cost(1, "8 (2mn + 2nv + mv)", "the c1 message and the mask exchange overlap",
                   lambda m, n, v: 8 * (2 * m * n + 2 * n * v + m * v), 2,
                   lambda m, n, v: 8 * (2 * m * n + 2 * n * v + m * v)),
    "multiply": Cost(1, "40 n", "as matmul", _per(40), 2, _per(40)),
    "conv2d": Cost(1, "8 (2x + 2w + z)", "conv-shaped triples: input- and kernel-sized masks",
                   lambda x, w, z: 8 * (2 * x + 2 * w + z)),
    "truncate_exact": Cost(1, "40 n", "one product of bits", _per(40)),
    "divide_exact": Cost(1, "40 n", "one product of bits", _per(40)),
    "private_compare": Cost(1, "128 n", "same", _per(128), 1, _per(128)),
    "share_convert": Cost(4, "224 n", "PRF compression", _per(224), 4, _per(304)),
    "compute_msb": Cost(4, "224 n", "PRF compression", _per(224), 5, _per(360)),
    "drelu": Cost(3, "213 n", "one 63-bit PrivateCompare (Falcon)", _per(213), 8, _per(664)),
    "drelu_pets": Cost(7, "448 n", "share_convert + compute_msb", _per(448), 8, _per(664)),
    "relu": Cost(3, "221 n", "drelu, product folded in", _per(221), 10, _per(704)),
    "relu_pets": Cost(8, "488 n", "drelu_pets then the product", _per(488), 10, _per(704)),
    "select_share": Cost(1, "40 n", "independent messages", _per(40), 2, _per(40)),
    "maxpool_step": Cost(4, "261 n", "relu and one product for the index", _per(261), 9, _per(744)),
    "dmaxpool": Cost(2, "8 (window + 2) n", "one-hot share PRF-compressed",
                     lambda n, window: 8 * (window + 2) * n, 2, lambda n, window: 16 * (window + 1) * n),
}
