"""mpcnp: secure multi-party computation for machine learning, on NumPy.

Data owners secret-share arrays between two servers (``server0``, ``server1``); the servers compute on
the shares with help from a crypto ``producer`` and reveal only results, to the parties entitled to
them. See README.md and docs/api.md; docs/architecture.md maps the modules.
"""
__version__ = "0.1.0"

from mpcnp.fixedpoint import PrecisionWarning  # noqa: E402
from mpcnp.runtime import PartyError, party, stats  # noqa: E402
from mpcnp.tensor import PrivateTensor, PublicTensor  # noqa: E402
from mpcnp.inputs import private, public  # noqa: E402
from mpcnp.functions import (abs, argmax, argmin, avgpool2d, clip, concat, conv2d, matmul, max,  # noqa: E402,A004
                             maximum, maxpool2d, min, minimum, pad, relu, sign, stack, truncation, where,
                             dense_relu, conv2d_relu)
from mpcnp.approx import divide, exp, log, reciprocal, rsqrt, sigmoid, softmax, sqrt, tanh  # noqa: E402
from mpcnp.validation import ValidationError, ValidationWarning  # noqa: E402
from mpcnp.tracing import no_grad  # noqa: E402
from mpcnp.autograd import custom_gradient  # noqa: E402
from mpcnp import losses  # noqa: E402
from mpcnp.inverse_sqrt import inverse_sqrt_times  # noqa: E402
from mpcnp.program import run  # noqa: E402
from mpcnp.serving.client import Client, ServiceError  # noqa: E402

__all__ = ["__version__", "run", "party", "stats", "PartyError", "PrecisionWarning", "ValidationError",
           "ValidationWarning",
           "private", "public", "PrivateTensor", "PublicTensor",
           "matmul", "concat", "stack", "pad", "conv2d", "avgpool2d", "truncation",
           "where", "relu", "dense_relu", "conv2d_relu", "maxpool2d", "max", "argmax", "min", "argmin", "divide",
           "abs", "sign", "maximum", "minimum", "clip",
           "sigmoid", "tanh", "exp", "reciprocal", "softmax", "sqrt", "rsqrt", "log",
           "no_grad", "custom_gradient", "losses", "inverse_sqrt_times", "Client", "ServiceError"]
