"""One program everywhere: a running digest of the operations each party executes, compared before
anything is revealed.

Every party runs the same function (SPMD), and nothing in the protocols notices when one party's
program takes another path: iterating a ``set`` (hash seeds differ between hosts), a public value
that differs between parties, a branch on ``mp.party()``. The shares then combine into garbage, or a
later message has the wrong shape and the error blames whoever sent it. ``ProgramDigest`` is an
observer on the operation funnel (mpcnp.tracing) that every party runs for the whole of ``mp.run``:

- after each outermost private operation it hashes the operation's name, the shapes of its private
  operands, its public operands (values included) and its result's shape into a running digest
  (BLAKE2b; the line of user code is kept beside it for messages but not hashed, since paths may
  differ between hosts), and keeps a description of each operation since the last check;
- before every reveal (and every ``CHECK_EVERY`` operations, and at the end of the run) every party
  sends its digest to every other party as a json message and compares. If all agree the
  descriptions are dropped. If not, the parties exchange the descriptions since the last agreement,
  find the first operation where they differ and raise the same ``PartyError`` everywhere, blaming
  the first party whose operation departs from the most common one, before anything is revealed.

A party whose program diverges in the number of messages meets the others' json digest where it
expects an array (or the reverse) and fails at once with a message saying the programs diverged.

Cost: hashing (a few microseconds per operation, plus reading every public operand's bytes once)
and, per check, one json message of about 60 bytes from each party to each other: 1 round. The
benchmarks reveal nothing inside their timed loops, so only the hashing shows there.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from mpcnp.net.framing import encode_json, header_bytes
from mpcnp.runtime.context import SERVER0, Context, PartyError
from mpcnp.tensor import PrivateTensor, PublicTensor
from mpcnp.tracing import Event, Observer

__all__ = ["ProgramDigest", "describe_operand", "describe_event", "CHECK_EVERY", "MESSAGE_BYTES"]

CHECK_EVERY = 4096   # operations between checks when nothing is revealed: bounds the descriptions kept


def _message(digest: str, count: int) -> dict:
    """What a party sends at a check: of one size always (``MESSAGE_BYTES``), so costs are exact."""
    return {"digest": digest, "count": f"{count:016x}"}


# payload and framing of one check's message, from each party to each other party
MESSAGE_BYTES = int(encode_json(_message("0" * 32, 0)).nbytes) + header_bytes(1)


def _fingerprint(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.blake2b(array.tobytes(), digest_size=6).hexdigest()


def describe_operand(value) -> str:
    """A canonical text for an operand, the same on every party running the same program: private
    tensors by shape only (their shares differ), public values by shape and a fingerprint of their
    bytes, anything else by value or, where its text would differ between processes, by type."""
    if isinstance(value, PrivateTensor):
        return f"private{value.shape}"
    if isinstance(value, PublicTensor):
        return f"public{value.shape}#{_fingerprint(value.value)}"
    if isinstance(value, np.ndarray):
        return f"array{value.shape}{value.dtype.str}#{_fingerprint(value)}"
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe_operand(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, slice):
        return f"{describe_operand(value.start)}:{describe_operand(value.stop)}:{describe_operand(value.step)}"
    if value is Ellipsis:
        return "..."
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe_operand(v)}" for k, v in sorted(value.items(), key=repr)) + "}"
    return type(value).__name__   # callables, models: their repr holds memory addresses


def describe_event(event: Event) -> str:
    """The operation as every party must have run it, e.g. ``mul(private(3,), 2.0) -> (3,)``."""
    shape = getattr(event.result, "shape", None)
    if event.op == "private":   # the value is the owner's alone: every other party passes anything
        owner = event.args[1] if len(event.args) > 1 else event.kwargs.get("owner", SERVER0)
        return f"private(owner={owner!r}) -> {shape}"
    parts = [describe_operand(a) for a in event.args]
    parts += [f"{k}={describe_operand(v)}" for k, v in sorted(event.kwargs.items())]
    return f"{event.op}({', '.join(parts)}) -> {shape}"


class ProgramDigest(Observer):
    """The running digest of one party's operations, checked with every other party's (module
    docstring)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._hash = hashlib.blake2b(digest_size=16)
        self._count = 0              # operations hashed since the run began
        self._agreed = 0             # ... up to the last check every party passed
        self._pending: list[tuple[str, str]] = []   # (description, where) since then

    def on_operation(self, event: Event) -> None:
        self._record(describe_event(event), event.where)
        if self._count - self._agreed >= CHECK_EVERY:
            self.check()

    def before_reveal(self, tensor, receivers: tuple[str, ...]) -> None:
        self._record(f"reveal({describe_operand(tensor)}, to={list(receivers)})", "")
        self.check()

    def _record(self, description: str, where: str) -> None:
        self._hash.update(description.encode() + b"\0")
        self._count += 1
        self._pending.append((description, where))

    def check(self) -> None:
        """Compare the digest with every other party's; PartyError, the same on every party, if the
        programs differ. A no-op when nothing happened since the last check."""
        ctx = self.ctx
        if self._count == self._agreed:
            return   # a party that ran more operations checks alone and meets an array: the programs diverged
        peers = [p for p in ctx.parties if p != ctx.name]
        mine = _message(self._hash.hexdigest(), self._count)
        for peer in peers:
            ctx.send_json(peer, mine)
        digests = {ctx.name: mine}
        for peer in peers:
            digests[peer] = ctx.recv_json(peer)
        if all(d == mine for d in digests.values()):
            self._agreed, self._pending = self._count, []
            return
        self._find_difference()

    def _find_difference(self) -> None:
        ctx = self.ctx
        peers = [p for p in ctx.parties if p != ctx.name]
        for peer in peers:
            ctx.send_json(peer, self._pending)
        logs = {ctx.name: [list(item) for item in self._pending]}
        for peer in peers:
            log = ctx.recv_json(peer)
            if not isinstance(log, list):
                raise PartyError(peer, "sent something other than its operations while the parties compared programs")
            logs[peer] = log
        order = list(ctx.parties)
        longest = max(len(log) for log in logs.values())
        for i in range(longest):
            ran = {p: (logs[p][i] if i < len(logs[p]) else ["nothing (its program had ended here)", ""])
                   for p in order}
            texts = {p: ran[p][0] for p in order}
            if len(set(texts.values())) == 1:
                continue
            counts = Counter(texts.values())
            common = max(counts, key=lambda t: (counts[t], -min(order.index(p) for p in order if texts[p] == t)))
            odd = [p for p in order if texts[p] != common]
            what = "; ".join(f"{', '.join(p for p in order if texts[p] == t)} ran {t}"
                             + (f" at {ran[next(p for p in order if texts[p] == t)][1]}"
                                if ran[next(p for p in order if texts[p] == t)][1] else "")
                             for t in counts)
            raise PartyError(odd[0], f"the parties ran different programs: they first differ at operation "
                                     f"{self._agreed + i + 1} of the run: {what}. Nothing was revealed")
        raise PartyError(order[0], "the parties ran different programs (their operation digests differ), "
                                   "but their operations since the last check agree: a party's digest is corrupt")
