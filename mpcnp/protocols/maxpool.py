"""MaxPool and DMaxPool of SecureNN (PETS Alg. 9, 10), and a tournament variant of MaxPool.

Wagh, Gupta, Chandran, "SecureNN", PoPETs 2019(3), with the erratum of docs/protocols.md for DMaxPool
(rotation by +g). Built on ``securenn.relu`` (one PrivateCompare per comparison) and Beaver products;
conventions as in ``securenn``. The tournament takes its comparison step as an argument, so that
every protocol family uses the same one (``families``).

Costs per window (bytes summed over all parties; rounds = longest chain of dependent messages):
  maxpool over n: n - 1 steps of 245 B, 3 rounds;  tournament over n: n - 1 comparisons of 245 B and
  ceil(log2 n) levels of 3 rounds with the index, 221 B and 3 rounds without;  dmaxpool over n:
  8 (n + 2) B, 2 rounds.
"""
from __future__ import annotations

import numpy as np

from typing import Callable

from mpcnp.protocols import pond, securenn
from mpcnp.protocols.shared import Shared, concat, trivial
from mpcnp.protocols.sharing import common_stream, deal, recv_array, rerandomize
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, Context

__all__ = ["maxpool", "tournament_max", "exact_step", "dmaxpool", "candidates", "reduce_max"]

# One comparison step of every window at once: (best, other, index, other_index) -> (max, its index).
Step = Callable[[Context, Shared, Shared, "Shared | None", "Shared | None"], "tuple[Shared, Shared | None]"]


# ---- MaxPool (PETS Alg. 9) and a tournament variant --------------------------------------------------
def exact_step(ctx: Context, best: Shared, other: Shared, index: Shared | None = None,
               other_index: Shared | None = None, bits: int = 64) -> tuple[Shared, Shared | None]:
    """One exact comparison step of every window at once: best (and its index) become other (and
    other_index) where other > best; ties keep best.

    max(best, other) = other + ReLU(best - other): ``securenn.relu`` gives the value and the bit
    keep = [best >= other] (221 bytes, 3 rounds; with ``bits`` = k < 64, exact when every difference
    best - other lies in [-2^(k-1), 2^(k-1)), 3k + 29 bytes); the index is other_index + keep (index - other_index),
    the bit's product folded into the comparison (``securenn.relu_times``: 24 bytes, no round more),
    untruncated: exact whatever the indices. The new best keeps ``keep`` as its ``drelu`` (the
    gradient routes by it).
    """
    if index is None:
        gain, keep = securenn.relu(ctx, best - other, bits)
    else:
        gain, keep, moved = securenn.relu_times(ctx, best - other, index - other_index, bits)
    new_best = other + gain
    new_best = Shared(rerandomize(ctx, new_best.share), new_best.shape, drelu=keep)
    if index is None:
        return new_best, None
    new_index = other_index + moved
    return new_best, Shared(rerandomize(ctx, new_index.share), new_index.shape)


def maxpool(ctx: Context, x: Shared) -> tuple[Shared, Shared]:
    """MaxPool (PETS Alg. 9): the maximum of each window and its index.

    ``x`` has shape (n, *batch): element k of every window on axis 0. Returns (max, index), both of
    shape batch, the index as a ring integer in [0, n). A running max and index; step k compares
    element k with the running max of every window at once, so the pool costs n - 1 sequential steps.
    Tie rule: the first maximal element wins (its index is returned), as numpy.argmax.
    Exact when all pairwise differences lie in [-2^63, 2^63) (always, for values below 2^62 in
    magnitude, as fixed-point encoding guarantees).
    Cost per window and step: ReLU of the difference with the index's product folded in (221 + 24
    bytes, 3 rounds): 245 bytes, 3 rounds. PETS: 744 bytes, 9 rounds.
    """
    n, batch = x.shape[0], x.shape[1:]
    if n == 0:
        raise ValueError("maxpool needs at least one element per window")
    best, index = x.map(lambda a: a[0]), trivial(ctx, 0, batch)
    for k in range(1, n):
        best, index = exact_step(ctx, best, x.map(lambda a, k=k: a[k]), index, trivial(ctx, k, batch))
    return best, index


def tournament_max(ctx: Context, x: Shared, step: Step = exact_step, with_index: bool = False,
                   index_unit: int = 1, levels: list | None = None) -> tuple[Shared, Shared | None]:
    """The maximum of each window (and its index) by a tournament: ceil(log2 n) sequential steps.

    A variant of PETS Alg. 9 with the same n - 1 comparisons per window in fewer rounds: each level
    pairs neighbouring candidates (0 with 1, 2 with 3, ...) of every window and keeps the larger with
    ``step``; an odd one out moves on at the end. Candidates thus stay in index order, and
    ``maxpool``'s tie rule holds: the first maximal element wins. ``x`` has shape (n, *batch).
    Returns (max, index or None); the index is a ring integer times ``index_unit`` (2^frac_bits gives
    it in fixed point). Cost with ``exact_step``: per comparison 245 bytes and 3 rounds per level
    with the index, 221 bytes and 3 rounds without.
    ``levels``: a list to which each level appends, for the gradient, the step's ``drelu`` bit
    [first >= second] as (None, None, bit), or (first candidates, second candidates, None) when the
    step keeps no bit (Pond's); no extra cost.
    """
    n, batch = x.shape[0], x.shape[1:]
    if n == 0:
        raise ValueError("the maximum of an empty window is undefined")
    values = x
    index = None
    if with_index:
        positions = np.arange(n, dtype=np.uint64).reshape((n,) + (1,) * len(batch)) * np.uint64(index_unit)
        index = trivial(ctx, positions, x.shape)
    while values.shape[0] > 1:
        count, half = values.shape[0], values.shape[0] // 2

        def pick(v: Shared | None, start: int, stop: int, stride: int = 1) -> Shared | None:
            return None if v is None else v.map(lambda a: a[start:stop:stride])

        first, second = pick(values, 0, 2 * half, 2), pick(values, 1, 2 * half, 2)
        best, best_index = step(ctx, first, second, pick(index, 0, 2 * half, 2), pick(index, 1, 2 * half, 2))
        if levels is not None:      # with a bit, the candidates themselves are not needed
            levels.append((None, None, best.drelu) if best.drelu is not None else (first, second, None))
        if count % 2:
            best = concat([best, pick(values, count - 1, count)])
            best_index = None if index is None else concat([best_index, pick(index, count - 1, count)])
        values, index = best, best_index
    top = values.map(lambda a: a[0])
    return top, None if index is None else index.map(lambda a: a[0])


def candidates(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``array`` with ``axes`` moved to the front and merged into one leading axis (C order): the
    candidates of a reduction over ``axes`` along axis 0, as ``tournament_max`` takes them."""
    moved = np.moveaxis(array, axes, tuple(range(len(axes))))
    count = int(np.prod([array.shape[a] for a in axes], dtype=np.int64))
    return moved.reshape((count,) + moved.shape[len(axes):])


def reduce_max(ctx: Context, x: Shared, axes: tuple[int, ...], step: Step, with_index: bool = False,
               index_unit: int = 1, levels: list | None = None) -> tuple[Shared, Shared | None]:
    """The maximum of ``x`` over ``axes`` (normalised, distinct) and, ``with_index``, its position
    in the C-order flattening of those axes (times ``index_unit``): ``tournament_max`` over the
    ``candidates`` (``levels`` passed on). ValueError for an empty reduction, as NumPy's."""
    values = x.map(lambda a: np.ascontiguousarray(candidates(a, axes)))
    if values.shape[0] == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    return tournament_max(ctx, values, step, with_index, index_unit, levels)


# ---- DMaxPool (PETS Alg. 10) -------------------------------------------------------------------------
def dmaxpool(ctx: Context, index: Shared, n: int) -> Shared:
    """DMaxPool (PETS Alg. 10): shares of the one-hot vector of length n at the shared index.

    ``index`` holds ring integers in [0, n), n a power of two; returns shape (n, *index.shape): entry i
    is 1 where index = i. The servers hold a common random r; server0 sends ind_0 + r, server1 ind_1; the
    producer opens k = (ind + r) mod n and deals the one-hot E at k; the servers rotate by g = r mod n:
    D_i = E_{(i + g) mod n} (the erratum of docs/protocols.md; the paper prints i - g). k is uniform, so the
    producer learns nothing.
    Cost: 2 rounds; 8 (n + 2) bytes per window: 16 for the index, 8n for server1's share of E
    (server0's is PRF-compressed). PETS: 16 (n + 1).
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"dmaxpool needs a power-of-two window size, got {n}")
    size = index.size
    shape = (n,) + index.shape
    g = None
    if ctx.is_server:
        r = common_stream(ctx).uint64(size)
        g = (r & np.uint64(n - 1)).astype(np.intp)
        # 1. the masked index to the producer
        ctx.send(PRODUCER, index.flat() + (r if ctx.name == SERVER0 else np.uint64(0)))
    hot = None
    if ctx.name == PRODUCER:
        # 2. the producer's one-hot vector at k = (ind + r) mod n
        k = recv_array(ctx, SERVER0, np.uint64, (size,)) + recv_array(ctx, SERVER1, np.uint64, (size,))
        k &= np.uint64(n - 1)
        hot = np.zeros((n, size), np.uint64)
        hot[k.astype(np.intp), np.arange(size)] = 1
        hot = hot.reshape(-1)
    e_j = deal(ctx, hot, (n * size,))
    if not ctx.is_server:
        return Shared(None, shape)
    # 3. rotate by +g
    rows = (np.arange(n)[:, np.newaxis] + g[np.newaxis, :]) & (n - 1)
    d = np.take_along_axis(e_j.reshape(n, size), rows, axis=0)
    return Shared.of(rerandomize(ctx, d), shape)
