"""The wire format of one mpcnp message: a fixed header, the shape, then the payload bytes.

Header layout (little-endian, ``HEADER_BYTES`` = 16 bytes, then 8 bytes per dimension)::

    offset  size  field
    0       4     magic b"MPCN"
    4       1     version (1)
    5       1     kind: 1 array, 2 json, 3 abort, 4 credit, 5 goodbye
    6       1     dtype code (see DTYPES; json and abort carry uint8, credit uint64)
    7       1     ndim, 0..64 (NumPy's limit)
    8       8     the sender's round stamp (uint64, see stats.py)
    16      8*n   shape, one uint64 per dimension

The payload is the array's bytes in C order, little-endian: exactly prod(shape) * itemsize bytes.
A json or abort message is a 1-d uint8 array of UTF-8 JSON text; an abort notice's JSON is
``{"accused": NAME, "reason": TEXT}`` (who the sender says failed, and why; the sender itself is
known from the channel, never from the payload). A credit message (flow control, zmqnet.py) is a
1-d uint64 array: the bytes the receiver has consumed from that sender so far, and 1 if the
receiver itself waits for credit to send to that sender (else 0). A goodbye message (an empty
1-d uint8 array) is the last a transport sends each peer when it closes after a failure: it left in
order, and will send nothing more.

``header_bytes(ndim)`` is the framing overhead that the byte counters add to every array or json
message; the transports' own envelopes (ZMTP frame lengths, CURVE's 16-byte MAC and nonce) are not
counted, so the counters are identical on every backend.
"""
from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from mpcnp.net.errors import FrameError

MAGIC = b"MPCN"
VERSION = 1
ARRAY, JSON, ABORT, CREDIT, GOODBYE = 1, 2, 3, 4, 5
KIND_NAMES = {ARRAY: "array", JSON: "json", ABORT: "abort", CREDIT: "credit", GOODBYE: "goodbye"}
MAX_NDIM = 64

_PREFIX = struct.Struct("<4sBBBB")
HEADER_BYTES: int = _PREFIX.size + 8
_HEADERS = [struct.Struct(f"<4sBBBBQ{n}Q") for n in range(MAX_NDIM + 1)]
_MAX_BYTES = 1 << 62

# Wire dtypes are little-endian; on a little-endian host (every supported one) they are native,
# so np.frombuffer on a received buffer needs no byte swap.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("?"),
    2: np.dtype("<u1"),
    3: np.dtype("<i1"),
    4: np.dtype("<u2"),
    5: np.dtype("<i2"),
    6: np.dtype("<u4"),
    7: np.dtype("<i4"),
    8: np.dtype("<u8"),
    9: np.dtype("<i8"),
    10: np.dtype("<f4"),
    11: np.dtype("<f8"),
}
_CODES: dict[np.dtype, int] = {dt: code for code, dt in DTYPES.items()}
_UINT8, _UINT64 = 2, 8
# The dtype code of each kind but array, which takes any (its arrays are 1-d).
_CONTROL_CODES = {JSON: _UINT8, ABORT: _UINT8, CREDIT: _UINT64, GOODBYE: _UINT8}
# prefix bytes -> (kind, dtype, struct of stamp and shape, header size)
_PREFIXES = {
    _PREFIX.pack(MAGIC, VERSION, kind, code, ndim):
        (kind, DTYPES[code], struct.Struct(f"<{ndim + 1}Q"), HEADER_BYTES + 8 * ndim)
    for kind in KIND_NAMES for code in DTYPES for ndim in range(MAX_NDIM + 1)
    if kind == ARRAY or (code == _CONTROL_CODES[kind] and ndim == 1)
}
_WHITELIST = ", ".join(str(dt.name) for dt in DTYPES.values())


def header_bytes(ndim: int) -> int:
    """Bytes of framing added to a message whose array has ``ndim`` dimensions (16 + 8 * ndim)."""
    if not 0 <= ndim <= MAX_NDIM:
        raise ValueError(f"ndim must be in 0..{MAX_NDIM}, got {ndim}")
    return HEADER_BYTES + 8 * ndim


def as_wire_array(array: Any) -> np.ndarray:
    """The array as it travels: C-contiguous, little-endian, a whitelisted dtype.

    Input: an ndarray or NumPy scalar. Output: the same object when it already qualifies (no copy),
    otherwise one copy (non-contiguous input, or a byte-swapped dtype).
    Raises TypeError for any other type or a dtype outside the whitelist.
    """
    if type(array) is np.ndarray and array.dtype in _CODES and array.flags.c_contiguous:
        return array
    if isinstance(array, np.generic):
        array = np.asarray(array)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"send() takes a NumPy array, got {type(array).__name__}")
    dtype = array.dtype
    if dtype not in _CODES:
        wire = dtype.newbyteorder("<") if dtype.byteorder in "<>=" else dtype
        if wire not in _CODES:
            raise TypeError(f"cannot send dtype {dtype}: supported dtypes are {_WHITELIST}")
        array = array.astype(wire, order="C")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array


def encode_header(kind: int, array: np.ndarray, stamp: int) -> bytes:
    """The header bytes for ``array`` (already passed through as_wire_array) sent at round ``stamp``."""
    shape = array.shape
    return _HEADERS[len(shape)].pack(MAGIC, VERSION, kind, _CODES[array.dtype], len(shape), stamp,
                                     *shape)


def decode_header(buf: bytes | memoryview, peer: str) -> tuple:
    """Parse and validate the header at the start of ``buf`` (which may continue with payload).

    Returns (kind, dtype, shape, stamp, header_size, payload_nbytes). Raises FrameError(peer, ...)
    for a short buffer, bad magic or version, unknown kind or dtype code, impossible ndim, a
    json/abort message that is not 1-d uint8, or a shape too large for any memory.
    """
    # Every valid 8-byte prefix is precomputed: one dict lookup validates magic, version, kind,
    # dtype code and ndim at once (this runs for every message received).
    entry = _PREFIXES.get(bytes(buf[:8]))
    if entry is None:
        _reject_prefix(buf, peer)
    kind, dtype, rest, size = entry
    if len(buf) < size:
        raise FrameError(peer, f"truncated header: {len(buf)} bytes, {size} needed")
    values = rest.unpack_from(buf, 8)
    shape = values[1:]
    nbytes = math.prod(shape) * dtype.itemsize
    # NumPy refuses shapes whose nonzero extents overflow intp, even when a zero makes the size 0.
    if nbytes >= _MAX_BYTES or (not nbytes and shape and
                                 math.prod(d or 1 for d in shape) * dtype.itemsize >= _MAX_BYTES):
        raise FrameError(peer, f"impossible shape {shape}")
    return kind, dtype, shape, values[0], size, nbytes


def decode_inline(buf: bytes, peer: str) -> tuple[int, int, np.ndarray]:
    """(kind, stamp, array) of a message whose header and payload are all in ``buf``.

    The array is a read-only view of ``buf`` (bytes). Raises FrameError(peer, ...) as decode_header
    does, or when the payload length does not match the shape.
    """
    kind, dtype, shape, stamp, size, nbytes = decode_header(buf, peer)
    if len(buf) - size != nbytes:
        raise FrameError(peer, f"payload of {len(buf) - size} bytes, but shape {shape} of {dtype} "
                               f"needs {nbytes}")
    array = np.frombuffer(buf, dtype, nbytes // dtype.itemsize, size)
    if not array.flags.aligned:  # not on CPython: bytes data is 16-byte aligned
        array = array.copy()
        array.flags.writeable = False
    return kind, stamp, array.reshape(shape) if len(shape) != 1 else array


def _reject_prefix(buf: bytes | memoryview, peer: str) -> None:
    """Raise the FrameError explaining why the first 8 bytes of ``buf`` are not a valid prefix."""
    if len(buf) < HEADER_BYTES:
        raise FrameError(peer, f"truncated header: {len(buf)} bytes, at least {HEADER_BYTES} needed")
    magic, version, kind, code, ndim = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FrameError(peer, f"bad magic {bytes(magic)!r} (not an mpcnp message)")
    if version != VERSION:
        raise FrameError(peer, f"protocol version {version}, this mpcnp speaks version {VERSION}")
    if kind not in KIND_NAMES:
        raise FrameError(peer, f"unknown message kind {kind}")
    if code not in DTYPES:
        raise FrameError(peer, f"unknown dtype code {code}")
    if ndim > MAX_NDIM:
        raise FrameError(peer, f"impossible ndim {ndim} (NumPy allows at most {MAX_NDIM})")
    raise FrameError(peer, f"{KIND_NAMES[kind]} message must be 1-d {DTYPES[_CONTROL_CODES[kind]]}, "
                           f"got {DTYPES[code]} with ndim {ndim}")


def encode_json(obj: Any) -> np.ndarray:
    """``obj`` as a 1-d uint8 array of UTF-8 JSON text. Raises TypeError if obj is not JSON-able."""
    text = json.dumps(obj, separators=(",", ":"))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def decode_json(payload: np.ndarray, peer: str) -> Any:
    """The object encoded by encode_json. Raises FrameError(peer, ...) for invalid UTF-8 or JSON."""
    try:
        return json.loads(payload.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(peer, f"invalid json payload: {exc}") from None


def encode_abort(accused: str, reason: str) -> np.ndarray:
    """The payload of an abort notice: the sender says ``accused`` failed with ``reason``."""
    return encode_json({"accused": accused, "reason": reason})


# An abort notice's reason is shown to a user, never used as data: longer ones are cut.
MAX_REASON_CHARS = 2000


def decode_abort(payload: np.ndarray, peer: str) -> tuple[str, str]:
    """(accused, reason) of an abort notice from ``peer``. Raises FrameError(peer, ...) if malformed."""
    obj = decode_json(payload, peer)
    if (not isinstance(obj, dict) or not isinstance(obj.get("accused"), str)
            or not isinstance(obj.get("reason"), str)):
        raise FrameError(peer, "malformed abort notice")
    return obj["accused"][:255], obj["reason"][:MAX_REASON_CHARS]


def check_size(nbytes: int, limit: int | None, peer: str) -> None:
    """FrameError(peer, ...) when a message of ``nbytes`` payload bytes exceeds ``limit``."""
    if limit is not None and nbytes > limit:
        raise FrameError(peer, f"a message of {nbytes} bytes exceeds the limit of {limit} bytes "
                               "(max_message_bytes)")
