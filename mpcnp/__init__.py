"""mpcnp: secure multi-party computation for machine learning, on NumPy.

Data owners secret-share arrays between two servers (``server0``, ``server1``); the servers compute on
the shares with help from a crypto ``producer`` and reveal only results, to the parties entitled to
them. See README.md and docs/api.md; docs/architecture.md maps the modules.
"""
__version__ = "0.1.0"

from mpcnp.runtime import PartyError, party, stats  # noqa: E402
from mpcnp.tensor import PrivateTensor, PublicTensor, private, public  # noqa: E402
from mpcnp.functions import (argmax, avgpool2d, concat, conv2d, matmul, max, maxpool2d, pad, relu,  # noqa: E402,A004
                             stack, truncation, where)
from mpcnp.approx import divide, exp, reciprocal, sigmoid, softmax, tanh  # noqa: E402
from mpcnp.program import run  # noqa: E402

__all__ = ["__version__", "run", "party", "stats", "PartyError",
           "private", "public", "PrivateTensor", "PublicTensor",
           "matmul", "concat", "stack", "pad", "conv2d", "avgpool2d", "truncation",
           "where", "relu", "maxpool2d", "max", "argmax", "divide",
           "sigmoid", "tanh", "exp", "reciprocal", "softmax"]
