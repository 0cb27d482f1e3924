"""How values enter a run: an owner's array secret-shared between the servers (``mp.private``), and a
public value that every party passes or that one party sends to the others (``mp.public``).

Layer 6 of mpcnp, above mpcnp.tensor, whose types these make; nothing in the tensor types calls them.
"""
from __future__ import annotations

import numpy as np

from mpcnp.protocols import sharing
from mpcnp.protocols.shared import Shared
from mpcnp.runtime.context import SERVER0, PartyError, current
from mpcnp.tensor import PrivateTensor, PublicTensor, plain
from mpcnp.tracing import operation

__all__ = ["private", "public"]


@operation("private", private=lambda *args, **kwargs: True)
def private(value, owner: str = SERVER0) -> PrivateTensor:
    """Secret-share ``owner``'s value (array-like, or a zero-argument callable evaluated only there).

    Non-finite or out-of-range values raise ValueError on the owner, which every party then sees as a
    PartyError. Cost: one message of the array's ring elements from the owner to server1.
    """
    ctx = current()
    share, shape = sharing.share_input(ctx, value, owner)
    return PrivateTensor(ctx, Shared(share, shape))


def public(value, owner: str | None = None) -> PublicTensor:
    """A value every party passes identically (float64 plaintext).

    With ``owner``: a public value that only ``owner`` provides (array-like, or a zero-argument
    callable evaluated only there; every other party may pass anything), sent to every other party
    in the clear: say, the updated model a model owner hands back to the data owners in federated
    learning. Non-finite values raise ValueError on the owner (a PartyError naming it elsewhere).
    Cost: one message of 8 bytes per element (float64) to each other party, 1 round.
    """
    if owner is None:
        return PublicTensor(value)
    ctx = current()
    ctx.check_party(owner)
    if ctx.name == owner:
        array = np.array(plain(value() if callable(value) else value), order="C")  # 0-d stays 0-d
        if not np.all(np.isfinite(array)):
            raise ValueError(f"mp.public: the value {owner} provides holds non-finite numbers")
        for peer in ctx.parties:
            if peer != owner:
                ctx.send(peer, array)
        return PublicTensor(array)
    received = ctx.recv(owner)
    if received.dtype != np.float64:
        raise PartyError(owner, f"sent a public value of dtype {received.dtype}, not float64")
    return PublicTensor(received)
