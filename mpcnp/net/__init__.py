"""mpcnp.net: channels between parties (layer 3). Knows nothing of protocols, fixed point or the
roles of parties.

- ``Transport`` (base.py): one party's endpoint towards its peers: send/recv of NumPy arrays,
  send_json/recv_json, abort, close; FIFO per pair of parties, matched by program order.
- ``MemoryNetwork`` (memory.py): in-process channels for the threads backend (zero-copy).
- ``ZmqTransport`` (zmqnet.py): ZeroMQ channels, CURVE-encrypted over tcp, plain over ipc.
- framing.py: the message header; ``HEADER_BYTES`` and ``header_bytes(ndim)`` give its size.
- stats.py: ``Stats``, the byte, message and round counters (rounds = Lamport clock).
- keys.py: Curve key pairs, key files, ``CurveConfig``.
- auth.py: the ZAP handler binding each peer key to its name, and the handshake monitor.
- errors.py: ``NetError`` and its subclasses.
"""
from mpcnp.net.base import Transport, check_party_name
from mpcnp.net.errors import FrameError, HandshakeError, NetError, PeerAborted, PeerTimeout
from mpcnp.net.framing import DTYPES, HEADER_BYTES, header_bytes
from mpcnp.net.keys import CurveConfig, key_bytes, keygen, read_key_file, write_key_file
from mpcnp.net.memory import MemoryNetwork, MemoryTransport
from mpcnp.net.stats import Stats
from mpcnp.net.zmqnet import ZmqTransport

__all__ = [
    "Transport", "check_party_name", "MemoryNetwork", "MemoryTransport", "ZmqTransport", "Stats",
    "NetError", "PeerTimeout", "PeerAborted", "FrameError", "HandshakeError",
    "HEADER_BYTES", "header_bytes", "DTYPES",
    "CurveConfig", "key_bytes", "keygen", "write_key_file", "read_key_file",
]
