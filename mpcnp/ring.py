"""The ring Z_2^64 on uint64 arrays: matrix products, the conv2d kernel and the PRF stream.

Layer 1 of mpcnp: it knows nothing of parties or fixed point. Arithmetic wraps mod 2^64, which is what
NumPy's uint64 elementwise operations already do; this module adds what NumPy does slowly (matmul,
conv2d) and the keyed pseudorandom stream every share, mask and triple is drawn from.

Kernels: the compiled extension ``mpcnp._ring`` (built from ``_ring.c`` by cffi) when it is present,
NumPy otherwise. ``BACKEND`` says which is in use: ``"c-avx512"``, ``"c-portable"`` or ``"numpy"``.
Setting the environment variable ``MPCNP_RING=numpy`` before import forces the NumPy kernels.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["BACKEND", "PRF", "prf_keystream", "matmul", "conv2d", "num_threads", "set_num_threads"]

RING_DTYPE = np.dtype(np.uint64)


class KernelWarning(RuntimeWarning):
    """The compiled ring kernels could not be loaded; NumPy kernels are used instead."""


def _load_backend():
    if os.environ.get("MPCNP_RING", "").strip().lower() == "numpy":
        return None, None, "numpy"
    try:
        from mpcnp import _ring
    except ImportError as exc:
        warnings.warn(
            f"mpcnp: compiled ring kernels unavailable ({exc}); using NumPy kernels, which are much slower",
            KernelWarning,
            stacklevel=3,
        )
        return None, None, "numpy"
    name = "c-avx512" if _ring.lib.mpcnp_has_avx512() else "c-portable"
    return _ring.ffi, _ring.lib, name


_ffi, _lib, BACKEND = _load_backend()


# --------------------------------------------------------------------------------------------------
# PRF stream
# --------------------------------------------------------------------------------------------------
KEY_BYTES = 16
_CHUNK = 256 * 1024  # plaintext zeros fed to AES-CTR per call: stays in L2, 7+ GB/s on a Zen4 core
_ZEROS = memoryview(np.zeros(_CHUNK, dtype=np.uint8))


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise ValueError(f"PRF key must be {KEY_BYTES} bytes, got {type(key).__name__} of length "
                         f"{len(key) if hasattr(key, '__len__') else '?'}")
    return bytes(key)


class PRF:
    """AES-128-CTR keystream: the pseudorandom function of mpcnp (PROTOCOLS.md section 2).

    ``PRF(key, counter)`` produces the bytes AES_k(counter) || AES_k(counter + 1) || ... with the
    counter a 128-bit big-endian block, as in NIST SP 800-38A CTR mode. Draws consume the stream
    sequentially, so two parties holding the same key and counter that make the same draws in the same
    order obtain the same values. The cipher is OpenSSL's (AES-NI) through ``cryptography``, writing
    straight into the output array; nothing here ever uses NumPy's generators.
    """

    __slots__ = ("_encryptor", "_position")

    def __init__(self, key: bytes, counter: int = 0):
        key = _check_key(key)
        if not 0 <= counter < 1 << 128:
            raise ValueError(f"PRF counter must be in [0, 2^128), got {counter}")
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
        self._position = 0

    @property
    def position(self) -> int:
        """Bytes of keystream consumed so far."""
        return self._position

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Overwrite the C-contiguous array ``out`` with the next ``out.nbytes`` keystream bytes."""
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("PRF.fill needs a writeable C-contiguous array")
        dest = memoryview(out.reshape(-1).view(np.uint8))
        total = len(dest)
        update_into = self._encryptor.update_into
        for start in range(0, total - _CHUNK + 1, _CHUNK):
            update_into(_ZEROS, dest[start:start + _CHUNK])
        tail = total % _CHUNK
        if tail:
            update_into(_ZEROS[:tail], dest[total - tail:])
        self._position += total
        return out

    def bytes(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        return self.fill(np.empty(n, dtype=np.uint8)).tobytes()

    def uint64(self, shape=()) -> np.ndarray:
        """Uniform elements of Z_2^64 of the given shape."""
        return self.fill(np.empty(shape, dtype=np.uint64))

    def uint8(self, shape=()) -> np.ndarray:
        """Uniform bytes of the given shape."""
        return self.fill(np.empty(shape, dtype=np.uint8))

    def integers(self, modulus: int, shape=(), dtype=np.uint64) -> np.ndarray:
        """Integers in [0, modulus) for 1 < modulus <= 2^32, from 64 random bits each.

        Reducing a 64-bit uniform value mod m leaves a bias below m / 2^64 <= 2^-32 per element
        (statistical distance), far below anything observable.
        """
        if not 1 < modulus <= 1 << 32:
            raise ValueError(f"modulus must be in (1, 2^32], got {modulus}")
        values = self.uint64(shape)
        np.remainder(values, np.uint64(modulus), out=values)
        return values.astype(dtype, copy=False)


def prf_keystream(key: bytes, counter: int, nbytes: int) -> bytes:
    """``nbytes`` of AES-128-CTR keystream for ``key`` starting at the 128-bit counter block ``counter``."""
    return PRF(key, counter).bytes(nbytes)


# --------------------------------------------------------------------------------------------------
# Threads of the compiled kernels
# --------------------------------------------------------------------------------------------------
def _default_threads() -> int:
    env = os.environ.get("MPCNP_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()


def num_threads() -> int:
    """Threads the compiled kernels use for large products."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the threads the compiled kernels use (``MPCNP_NUM_THREADS`` sets the initial value)."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    _num_threads = int(n)


# --------------------------------------------------------------------------------------------------
# Matrix products and conv2d (matmul, conv2d, and their NumPy fallbacks)
# --------------------------------------------------------------------------------------------------
