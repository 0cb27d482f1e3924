"""Messages between clients and the servers' client sockets, and the errors they carry.

One message is one ZeroMQ multipart message: a UTF-8 JSON header (an object), then one frame per
array, each the raw little-endian bytes of a uint64 array in C order. The header lists the arrays'
shapes under "arrays", so the receiver checks every frame's length before using it. Headers carry
"op" (requests) or "ok" (replies) and the request's "id".

Requests (client -> server; the answer repeats "id"):
- ``hello``: the service's settings (frac_bits, protocol, limits) and this server's name.
- ``models``: the catalogue: name -> {"owner", "input_shape", "output_shape", "upload"}.
- ``upload``: {"model", "upload", "spec", "names"}, one array per parameter: this server's shares.
- ``delete``: {"model"}.
- ``predict``: {"model", "output", "rows", "timeout"}, one array: this server's share of the input.
- ``stats``: the server's counters (batches, rows, pooled batches, refills, seconds, bytes).
Between the servers (server1 -> server0): ``ready`` (server1 holds a query's share) and ``changed``
(server1's catalogue changed).
Replies: {"ok": true, ...} with arrays (a prediction: this server's share of the result), or
{"ok": false, "code": CODE, "error": text}.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

__all__ = ["ServiceError", "WireError", "encode", "decode", "error_reply", "field", "CODES", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 1 << 20
_MAX_DIMS = 32
CODES = ("refused", "bad_request", "not_found", "forbidden", "unavailable", "timeout", "failed", "busy")


class ServiceError(Exception):
    """A request the service could not answer: ``code`` (one of wire.CODES) says why, ``server`` names
    the server that said so (or None when the client found it out itself)."""

    def __init__(self, message: str, code: str = "failed", server: str | None = None):
        self.code, self.server = code, server
        super().__init__(message if server is None else f"{server}: {message}")

    def __reduce__(self):
        return (_rebuild, (str(self), self.code, self.server))


def _rebuild(text: str, code: str, server: str | None) -> ServiceError:
    error = ServiceError(text, code)
    error.server = server
    return error


class WireError(ValueError):
    """A malformed message from ``sender``."""

    def __init__(self, sender: str, detail: str):
        self.sender, self.detail = sender, detail
        super().__init__(f"malformed message from {sender}: {detail}")


def encode(header: dict, arrays: Sequence[np.ndarray] = ()) -> list:
    """The frames of a message: ``header`` (JSON-able; "arrays" is filled in) and uint64 ``arrays``."""
    arrays = [np.ascontiguousarray(a, dtype=np.uint64) for a in arrays]
    header = dict(header, arrays=[list(a.shape) for a in arrays])
    return [json.dumps(header, separators=(",", ":")).encode("utf-8")] + [memoryview(a.reshape(-1).view(np.uint8))
                                                                         for a in arrays]


def decode(frames: Sequence[Any], sender: str) -> tuple[dict, list[np.ndarray]]:
    """(header, arrays) of a received message (frames as bytes or zmq.Frame); the arrays are
    read-only views of the frames. Raises WireError naming ``sender`` for anything malformed."""
    if not frames:
        raise WireError(sender, "an empty message")
    buffers = [f.buffer if hasattr(f, "buffer") else memoryview(f) for f in frames]
    if len(buffers[0]) > MAX_HEADER_BYTES:
        raise WireError(sender, f"a header of {len(buffers[0])} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(bytes(buffers[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(sender, f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WireError(sender, "the header is not a JSON object")
    shapes = header.pop("arrays", [])
    if not isinstance(shapes, list) or len(shapes) != len(buffers) - 1:
        raise WireError(sender, f"the header lists {len(shapes) if isinstance(shapes, list) else '?'} arrays, "
                                f"{len(buffers) - 1} follow")
    arrays = []
    for i, (shape, buf) in enumerate(zip(shapes, buffers[1:])):
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise WireError(sender, f"array {i}: bad shape {shape!r}")
        if math.prod(shape) * 8 != len(buf):
            raise WireError(sender, f"array {i}: {len(buf)} bytes for shape {shape} of uint64")
        array = np.frombuffer(buf, dtype="<u8").reshape(shape)
        if not array.flags.aligned:
            array = array.copy()
        array.flags.writeable = False
        arrays.append(array)
    return header, arrays


def error_reply(request_id: Any, code: str, message: str) -> list:
    """The frames of a failure reply."""
    return encode({"id": request_id, "ok": False, "code": code, "error": message})


def field(header: dict, name: str, kind, sender: str):
    """``header[name]``, checked to be of ``kind`` (a type or tuple of types; bools are not ints)."""
    value = header.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise WireError(sender, f"field {name!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value
