"""mpcnp: secure multi-party computation for machine learning, on NumPy.

Data owners secret-share arrays between two servers (``server0``, ``server1``); the servers compute on
the shares with help from a crypto ``producer`` and reveal only results, to the parties entitled to
them. See README.md and the user-facing contract in API.md.
"""
__version__ = "0.1.0"

from mpcnp.runtime import PartyError, party, run, stats  # noqa: E402
from mpcnp.tensor import PrivateTensor, PublicTensor, private, public  # noqa: E402
from mpcnp.functions import avgpool2d, concat, conv2d, matmul, pad, stack, truncation  # noqa: E402
from mpcnp.comparisons import argmax, divide, max, maxpool2d, relu, where  # noqa: E402,A004
from mpcnp.approx import exp, reciprocal, sigmoid, softmax, tanh  # noqa: E402

__all__ = ["__version__", "run", "party", "stats", "PartyError",
           "private", "public", "PrivateTensor", "PublicTensor",
           "matmul", "concat", "stack", "pad", "conv2d", "avgpool2d", "truncation",
           "where", "relu", "maxpool2d", "max", "argmax", "divide",
           "sigmoid", "tanh", "exp", "reciprocal", "softmax"]
