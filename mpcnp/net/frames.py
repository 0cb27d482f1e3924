"""ZeroMQ frames to messages: one message's frames as they come off a ROUTER, assembled or dropped.

A message is its header frame (with the payload appended when small), then payload frames
(zmqnet.py). The header is read first: a message over the size limit, or malformed, is refused
(FrameError naming the sender) and its remaining frames dropped as they arrive, never kept; several
payload frames are copied one at a time into one array, each released once copied; a single one is
used in place (zero-copy).
"""
from __future__ import annotations

import numpy as np
import zmq

from mpcnp.net.errors import FrameError
from mpcnp.net.framing import check_size, decode_header


def drain(socket: zmq.Socket, frame: zmq.Frame) -> None:
    """Receive and drop the remaining frames of the message whose frame ``frame`` was read."""
    while frame.more:
        frame = socket.recv(copy=False)


def assemble(sender: str, first: zmq.Frame, socket: zmq.Socket,
             max_bytes: int | None) -> tuple[int, int, np.ndarray]:
    """(kind, stamp, read-only array) of the message from ``sender`` whose first frame ``first`` was
    read from ``socket`` and which has more frames; FrameError(sender, ...) when it is malformed or
    its payload exceeds ``max_bytes``."""
    try:
        kind, dtype, shape, stamp, size, nbytes = decode_header(first.buffer, sender)
        check_size(nbytes, max_bytes, sender)
    except FrameError:
        drain(socket, first)
        raise
    head = first.buffer[size:]
    frame = socket.recv(copy=False)
    if not len(head) and not frame.more and len(frame) == nbytes:
        array = np.frombuffer(frame, dtype, nbytes // dtype.itemsize)  # zero-copy
        if not array.flags.aligned:
            array = array.copy()
        array.flags.writeable = False
        return kind, stamp, array.reshape(shape)
    array = np.empty(nbytes, np.uint8)
    offset = 0
    parts = [head, frame.buffer]
    while True:
        for part in parts:
            end = offset + len(part)
            if end > nbytes:
                drain(socket, frame)
                raise FrameError(sender, f"payload of more than {nbytes} bytes, but shape {shape} "
                                         f"of {dtype} needs {nbytes}")
            array[offset:end] = part
            offset = end
        if not frame.more:
            break
        frame = socket.recv(copy=False)
        parts = [frame.buffer]
    if offset != nbytes:
        raise FrameError(sender, f"payload of {offset} bytes, but shape {shape} of {dtype} needs {nbytes}")
    array.flags.writeable = False
    return kind, stamp, array.view(dtype).reshape(shape)
