"""The ring Z_2^64 on uint64 arrays: matrix products, the conv2d kernel and the PRF stream.

Layer 1 of mpcnp: it knows nothing of parties or fixed point. Arithmetic wraps mod 2^64, which is what
NumPy's uint64 elementwise operations already do; this module adds what NumPy does slowly (matmul,
conv2d) and the keyed pseudorandom stream every share, mask and triple is drawn from.

Kernels: the compiled extension ``mpcnp._ring`` (built from ``_ring.c`` by cffi) when it is present,
NumPy otherwise. ``BACKEND`` says which is in use: ``"c-avx512"``, ``"c-portable"`` or ``"numpy"``.
Setting the environment variable ``MPCNP_RING=numpy`` before import forces the NumPy kernels.
"""
from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["BACKEND", "PRF", "prf_keystream", "matmul", "matmul_shape", "matmul_kernels", "conv2d", "conv2d_shape",
           "conv2d_geometry", "num_threads", "set_num_threads"]

RING_DTYPE = np.dtype(np.uint64)


class KernelWarning(RuntimeWarning):
    """The compiled ring kernels could not be loaded; NumPy kernels are used instead."""


def _load_backend():
    if os.environ.get("MPCNP_RING", "").strip().lower() == "numpy":
        return None, None, "numpy"
    try:
        _ring = importlib.import_module("mpcnp._ring")
    except ImportError as exc:
        # warn_explicit with a file that has no source keeps the warning to one line
        warnings.warn_explicit(
            f"mpcnp: compiled ring kernels unavailable ({exc}; was a C compiler present at install "
            f"time?); using the NumPy kernels, which are much slower", KernelWarning, "mpcnp", 0)
        return None, None, "numpy"
    name = "c-avx512" if _ring.lib.mpcnp_has_avx512() else "c-portable"
    return _ring.ffi, _ring.lib, name


_ffi, _lib, BACKEND = _load_backend()
ffi, lib = _ffi, _lib  # the compiled extension (None, None on the NumPy kernels), for mpcnp.zp too


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
    """AES-128-CTR keystream: the pseudorandom function of mpcnp (docs/protocols.md, "Randomness").

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
_SIGNATURE = "(n?,k),(k,m?)->(n?,m?)"
_KERNEL_CODES = {"c-avx512": 0, "c-portable": 1}  # the `kernel` argument of mpcnp_matmul
_CONV_CHUNK_BYTES = 8 << 20  # im2col buffer per conv2d batch chunk: stays in L3 for the product


def matmul_kernels() -> tuple[str, ...]:
    """Names of the matmul kernels usable in this process (``"numpy"`` always; the C ones if loaded)."""
    if _lib is None:
        return ("numpy",)
    return ("numpy", "c-portable", "c-avx512") if BACKEND == "c-avx512" else ("numpy", "c-portable")


def _resolve_kernel(kernel: str | None) -> str:
    if kernel is None:
        return BACKEND
    if kernel not in ("numpy", "c-portable", "c-avx512"):
        raise ValueError(f"unknown ring kernel {kernel!r}; choose one of 'numpy', 'c-portable', 'c-avx512'")
    if kernel not in matmul_kernels():
        raise ValueError(f"ring kernel {kernel!r} is unavailable here (BACKEND is {BACKEND!r}); "
                         f"available: {', '.join(matmul_kernels())}")
    return kernel


def _ring_operand(x, index: int, fn: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: operand {index} must be a numpy.ndarray of dtype uint64, got {type(x).__name__}")
    if x.dtype != RING_DTYPE:
        if x.dtype.kind == "u" and x.dtype.itemsize == 8:  # uint64 in the other byte order
            return x.astype(RING_DTYPE)
        raise TypeError(f"{fn}: operand {index} must have dtype uint64 (an element of Z_2^64), got {x.dtype}")
    return x


def _fmt_shape(shape) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


def _matmul_shapes(a_shape: tuple, b_shape: tuple) -> tuple[tuple, int, int, int]:
    """Batch shape, m, n, k of ``a @ b`` by NumPy's rules. ValueErrors carry NumPy's message followed by
    the two shapes (NumPy's alone does not say which operands)."""
    shapes = f"; operand shapes {a_shape} and {b_shape}"
    for i, shape in enumerate((a_shape, b_shape)):
        if len(shape) == 0:
            raise ValueError(f"matmul: Input operand {i} does not have enough dimensions (has 0, gufunc core "
                             f"with signature {_SIGNATURE} requires 1){shapes}")
    a2 = a_shape if len(a_shape) > 1 else (1,) + a_shape
    b2 = b_shape if len(b_shape) > 1 else b_shape + (1,)
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc "
                         f"signature {_SIGNATURE} (size {b2[-2]} is different from {a2[-1]}){shapes}")
    if len(a2) == 2 and len(b2) == 2:
        return (), a2[0], b2[1], a2[1]
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        remapped = " ".join(f"{_fmt_shape(s)}->{_fmt_shape(s[:-2])[:-1]},newaxis,newaxis)" for s in (a2, b2))
        raise ValueError(f"operands could not be broadcast together with remapped shapes [original->remapped]: "
                         f"{remapped}  and requested shape {_fmt_shape((a2[-2], b2[-1]))}{shapes}") from None
    return batch, a2[-2], b2[-1], a2[-1]


def matmul_shape(a_shape: tuple, b_shape: tuple) -> tuple:
    """The shape of ``matmul`` of operands of these shapes (NumPy's rules); ValueError as ``matmul``."""
    batch, m, n, _ = _matmul_shapes(tuple(a_shape), tuple(b_shape))
    return batch + (m,) * (len(a_shape) > 1) + (n,) * (len(b_shape) > 1)


def _batch_offsets(x: np.ndarray, batch: tuple) -> np.ndarray:
    """Element offsets (int64, one per broadcast batch index, C order) of the matrices of ``x``."""
    lead = len(batch) - (x.ndim - 2)
    if lead == len(batch):  # an unbatched operand, common enough for a fast path
        return np.zeros(batch, dtype=np.int64).reshape(-1)
    if len(batch) == 1:
        return np.arange(batch[0], dtype=np.int64) * (x.strides[0] // 8 if x.shape[0] > 1 else 0)
    offsets = np.zeros((), dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(x.shape[:-2], x.strides[:-2])):
        if size == 1:  # broadcast (or singleton) axis: every index maps to matrix 0
            continue
        shape = [1] * len(batch)
        shape[lead + axis] = size
        offsets = offsets + (np.arange(size, dtype=np.int64) * (stride // 8)).reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(offsets, batch)).reshape(-1)


def _element_strides(x: np.ndarray) -> tuple[int, int]:
    # a stride on an axis of length 1 is never followed, and may be anything: report 0
    (rows, cols), (rs, cs) = x.shape[-2:], x.strides[-2:]
    return (rs // 8 if rows > 1 else 0), (cs // 8 if cols > 1 else 0)


def _pointer(ctype: str, x: np.ndarray):
    # from_buffer takes a fraction of the time of x.ctypes.data (which small products notice), but only
    # for contiguous memory, where the array starts at its first element
    if x.flags.c_contiguous:
        return _ffi.from_buffer(ctype, x)
    if x.flags.f_contiguous:
        return _ffi.from_buffer(ctype, x.T)
    return _ffi.cast(ctype.replace("[]", " *"), x.ctypes.data)


_NO_OFFSETS = np.zeros(1, dtype=np.int64)  # the one matrix of an unbatched operand


def _c_matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, kernel: str) -> None:
    """``out[...] = a @ b`` by the C kernel; a, b at least 2-D uint64, out C-contiguous of the full shape."""
    if out.size == 0:
        return
    # the kernel reads whole uint64 elements: odd strides or misaligned data (views of byte buffers) first
    # become aligned copies
    a = a if a.flags.aligned else a.copy()
    b = b if b.flags.aligned else b.copy()
    batch = out.shape[:-2]
    a_off = _batch_offsets(a, batch) if batch else _NO_OFFSETS
    b_off = _batch_offsets(b, batch) if batch else _NO_OFFSETS
    (a_rs, a_cs), (b_rs, b_cs) = _element_strides(a), _element_strides(b)
    m, n, k = a.shape[-2], b.shape[-1], a.shape[-1]
    rc = _lib.mpcnp_matmul(_pointer("uint64_t[]", a), _ffi.from_buffer("int64_t[]", a_off), a_rs, a_cs,
                           _pointer("uint64_t[]", b), _ffi.from_buffer("int64_t[]", b_off), b_rs, b_cs,
                           _ffi.from_buffer("uint64_t[]", out, require_writable=True), a_off.size, m, n, k,
                           _KERNEL_CODES[kernel], _num_threads)
    if rc == 1:
        raise MemoryError(f"matmul: cannot allocate the packing buffers for a {m}x{k} @ {k}x{n} product")
    if rc != 0:
        raise RuntimeError(f"matmul: mpcnp_matmul failed with code {rc}")


def _matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, kernel: str) -> None:
    if kernel == "numpy":
        np.matmul(a, b, out=out)  # uint64 matmul wraps mod 2^64
    else:
        _c_matmul_into(a, b, out, kernel)


def matmul(a: np.ndarray, b: np.ndarray, *, kernel: str | None = None) -> np.ndarray:
    """``a @ b`` in Z_2^64: the matrix product of uint64 arrays, wrapping mod 2^64.

    Shapes follow ``np.matmul``: a 1-D operand is promoted to a matrix and the added axis removed from
    the result, leading (batch) axes broadcast, and mismatches raise NumPy's ValueErrors (with the two
    shapes appended). Operands may
    have any strides (transposes, steps, negative strides, broadcast views); they are not copied unless
    misaligned. The product of two 1-D operands is returned as a 0-d array, not a scalar.

    ``kernel``: None for ``BACKEND``, or one of ``matmul_kernels()`` (``"numpy"``, ``"c-portable"``,
    ``"c-avx512"``); the C kernels use ``num_threads()`` threads on large products and release the GIL.
    Returns a new C-contiguous uint64 array. Raises TypeError unless both operands are uint64 ndarrays.
    """
    a, b = _ring_operand(a, 0, "matmul"), _ring_operand(b, 1, "matmul")
    kernel = _resolve_kernel(kernel)
    batch, m, n, _ = _matmul_shapes(a.shape, b.shape)
    a2 = a if a.ndim > 1 else a[np.newaxis, :]
    b2 = b if b.ndim > 1 else b[:, np.newaxis]
    out = np.empty(batch + (m, n), dtype=RING_DTYPE)
    _matmul_into(a2, b2, out, kernel)
    return out.reshape(batch + (m,) * (a.ndim > 1) + (n,) * (b.ndim > 1))


def _conv_pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _conv_padding(padding, size: tuple, window: tuple, stride: tuple) -> tuple[tuple[int, int], ...]:
    """((top, bottom), (left, right)) zero padding for ``padding`` = int, pair, "valid" or "same"."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0), (0, 0)
        if padding.lower() != "same":
            raise ValueError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        pads = []
        for h, k, s in zip(size, window, stride):
            total = max((-(-h // s) - 1) * s + k - h, 0)  # TensorFlow: output ceil(h / s); extra pad after
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _conv_pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"conv2d: padding must be >= 0, got {padding!r}")
    return (ph, ph), (pw, pw)


def conv2d_geometry(x_shape: tuple, w_shape: tuple, stride=1, padding=0):
    """Padding and strides of ``conv2d`` for these shapes: ``((top, bottom), (left, right)), (sh, sw)``.

    Validates what ``conv2d`` accepts (see there) and raises its ValueErrors.
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d: x must be (N, C, H, W) and w (O, C, kh, kw), got shapes {x_shape} and {w_shape}")
    _, chans, height, width = x_shape
    _, w_chans, kh, kw = w_shape
    if w_chans != chans:
        raise ValueError(f"conv2d: x of shape {x_shape} has {chans} channels but w of shape {w_shape} "
                         f"expects {w_chans}")
    if kh < 1 or kw < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got w of shape {w_shape}")
    sh, sw = _conv_pair(stride, "stride")
    if sh < 1 or sw < 1:
        raise ValueError(f"conv2d: stride must be >= 1, got {stride!r}")
    pads = _conv_padding(padding, (height, width), (kh, kw), (sh, sw))
    hp, wp = height + sum(pads[0]), width + sum(pads[1])
    if kh > hp or kw > wp:
        raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input {hp}x{wp} "
                         f"(x of shape {x_shape}, padding {padding!r})")
    return pads, (sh, sw)


def windows(a: np.ndarray, kh: int, kw: int, sh: int = 1, sw: int = 1) -> np.ndarray:
    """The (N, C, OH, OW, kh, kw) view of NCHW ``a``'s kh x kw windows at strides (sh, sw); no copy."""
    return np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def conv2d_shape(x_shape: tuple, w_shape: tuple, stride=1, padding=0) -> tuple:
    """The shape (N, O, OH, OW) of ``conv2d`` for these shapes; ValueErrors as ``conv2d``."""
    ((pt, pb), (pl, pr)), (sh, sw) = conv2d_geometry(x_shape, w_shape, stride, padding)
    return (x_shape[0], w_shape[0], (x_shape[2] + pt + pb - w_shape[2]) // sh + 1,
            (x_shape[3] + pl + pr - w_shape[3]) // sw + 1)


def conv2d(x: np.ndarray, w: np.ndarray, stride=1, padding=0, *, kernel: str | None = None) -> np.ndarray:
    """2-D cross-correlation (deep learning's conv2d) in Z_2^64, wrapping mod 2^64.

    ``x``: (N, C, H, W) uint64; ``w``: (O, C, kh, kw) uint64; ``stride``: int or (sh, sw), >= 1;
    ``padding``: int or (ph, pw) zeros on each side, ``"valid"`` (none) or ``"same"`` (TensorFlow's rule:
    output ceil(H / sh) x ceil(W / sw), the odd pixel of padding after). Returns (N, O, OH, OW) uint64
    with OH = (H + pad_h - kh) // sh + 1. Computed as im2col followed by ``matmul`` (same ``kernel``
    choices), a few images at a time so that the im2col buffer stays near 8 MiB.
    """
    x, w = _ring_operand(x, 0, "conv2d"), _ring_operand(w, 1, "conv2d")
    kernel = _resolve_kernel(kernel)
    ((pt, pb), (pl, pr)), (sh, sw) = conv2d_geometry(x.shape, w.shape, stride, padding)
    n_img, chans = x.shape[:2]
    n_out, _, kh, kw = w.shape
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    # (N, C, OH, OW, kh, kw) view -> (N, C, kh, kw, OH, OW), copied chunk by chunk into one reused buffer
    # (im2col) that stays in cache for the product and costs its page faults once
    view = windows(x, kh, kw, sh, sw)
    oh, ow = view.shape[2:4]
    view = view.transpose(0, 1, 4, 5, 2, 3)
    depth = chans * kh * kw
    w_mat = w.reshape(n_out, depth)
    out = np.empty((n_img, n_out, oh * ow), dtype=RING_DTYPE)
    chunk = max(1, min(n_img, _CONV_CHUNK_BYTES // max(1, depth * oh * ow * 8)))
    cols = np.empty((chunk, depth, oh * ow), dtype=RING_DTYPE)
    for i in range(0, n_img, chunk):
        n = min(chunk, n_img - i)
        np.copyto(cols[:n].reshape(n, chans, kh, kw, oh, ow), view[i:i + n])
        _matmul_into(w_mat, cols[:n], out[i:i + n], kernel)
    return out.reshape(n_img, n_out, oh, ow)
