"""The small rings of SecureNN besides Z_2^64: Z_p with p = 67, and the odd ring Z_{2^64 - 1}.

Wagh, Gupta, Chandran, "SecureNN", PoPETs 2019(3), section 2 (notation); docs/protocols.md, "Setting".
Layer 1 beside ring.py: pure functions of arrays, no parties; the protocols in
``mpcnp.protocols.securenn`` call them on their shares.

* Z_p, p = 67: one byte per element (uint8 in [0, p)). The k <= 64 low bits of n ring values are laid
  out as a (k, n) array, row 0 the most significant bit, so that a prefix sum over the bits is k - 1
  additions of contiguous rows. 67 is the smallest prime above 65, the largest value PrivateCompare's
  c_i reaches (2 + 63).
* Z_{L-1}, L = 2^64: uint64 in [0, L - 2]. 2^64 = 1 (mod L - 1), so a carry out of the 64-bit sum is
  added back in and the value L - 1 becomes 0.

Kernels. The four hot spots of PrivateCompare and its dealing (``uniform``'s mapping of PRF draws,
``bit_shares``, ``compare_masks``, ``any_zero``) exist twice: in C (``mpcnp_zp_*`` in ``_zp.c``, used
when ``mpcnp.ring.BACKEND`` is not "numpy") and in NumPy (the ``*_numpy`` functions, always
available). Both give bit-for-bit the same results and consume the PRF streams identically, so parties
may mix them. The NumPy loops run over blocks of ``CHUNK`` elements (``chunks``): a (64, CHUNK) byte
block and its temporaries stay in the caches, where NumPy's byte arithmetic runs several times faster
than on arrays streamed from memory.
"""
from __future__ import annotations

import threading
import warnings
from typing import Iterator

import numpy as np

from mpcnp import ring

P = 67
BITS = 64
CHUNK = 8192
ODD = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # L - 1, the modulus of the odd ring

_P8 = np.uint8(P)
_P16 = np.uint16(P)
_THREAD = threading.local()  # per-thread scratch buffers (see _scratch)
_SHIFTS = np.arange(7, -1, -1, dtype=np.uint8)[np.newaxis, :, np.newaxis]  # bit 7 of a byte first


def _load_kernels():
    if ring.lib is None:
        return None, None
    if not hasattr(ring.lib, "mpcnp_zp_compare_masks"):
        warnings.warn("mpcnp: the compiled ring kernels predate the Z_p kernels (rebuild: `pip install -e .` "
                      "or `python setup.py build_ext --inplace`); SecureNN uses its NumPy kernels",
                      ring.KernelWarning, stacklevel=3)
        return None, None
    return ring.ffi, ring.lib


_ffi, _lib = _load_kernels()
KERNELS = "numpy" if _lib is None else "c"   # which Z_p kernels are in use


def chunks(n: int) -> Iterator[slice]:
    """Consecutive slices of at most CHUNK elements covering range(n)."""
    for start in range(0, n, CHUNK):
        yield slice(start, min(start + CHUNK, n))


def _scratch(name: str, size: int, dtype) -> np.ndarray:
    """A reusable buffer of this thread (each party runs in its own thread or process).

    Temporaries of a few MB freed and allocated again at every block made glibc hand pages back and
    fault them in again: the sampler ran 5x slower than its arithmetic. Only for values that do not
    outlive the call that asks for them.
    """
    buffers = _THREAD.__dict__
    buf = buffers.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = buffers[name] = np.empty(size, dtype=dtype)
    return buf[:size]


def _ptr(ctype: str, a: np.ndarray):
    """A C pointer to the first element of ``a`` (any array whose last axis has unit stride)."""
    if a.flags.c_contiguous:
        # from_buffer costs a fraction of a.ctypes.data, which the small arrays of a batch-1 query notice
        return _ffi.from_buffer(ctype + "[]", a)
    return _ffi.cast(ctype + " *", a.ctypes.data)


def _rows_ld(a: np.ndarray) -> int:
    """Leading dimension (elements between rows) of a 2-d byte array with unit column stride."""
    if a.ndim != 2 or a.strides[1] != 1:
        raise ValueError("Z_p kernels need (rows, n) byte arrays with contiguous rows")
    return a.strides[0]


# ---- randomness -------------------------------------------------------------------------------------
def uniform(prf: ring.PRF, modulus: int, shape, offset: int = 0) -> np.ndarray:
    """Exactly uniform integers in [offset, offset + modulus) as uint8, for 2 <= modulus <= 256 - offset.

    Each value is offset + floor(v * m / 2^16) for 16 PRF bits v. Of the 2^16 values of v, the
    (2^16 mod m) whose v * m mod 2^16 falls below 2^16 mod m are rejected: every output then has
    exactly floor(2^16 / m) preimages. Rejected positions (probability < m / 2^16 each) draw again
    from the same stream, block by block of BITS * CHUNK values in C order, so two parties holding
    the stream draw identical arrays of the same shape.
    """
    if not (0 <= offset and 2 <= modulus <= 256 - offset):
        raise ValueError(f"need 2 <= modulus <= 256 - offset and offset >= 0, got modulus {modulus}, "
                         f"offset {offset}")
    out = np.empty(shape, dtype=np.uint8)
    flat = out.reshape(-1)
    block = BITS * CHUNK
    for start in range(0, flat.size, block):
        part = flat[start:start + block]
        positions = map_draws(prf.fill(_scratch("draws", part.size, np.uint16)), modulus, offset, part)
        while len(positions):
            digits = np.empty(len(positions), dtype=np.uint8)
            again = map_draws(prf.fill(np.empty(len(positions), dtype=np.uint16)), modulus, offset, digits)
            part[positions] = digits
            positions = positions[again]
    return out


def map_draws_numpy(v: np.ndarray, modulus: int, offset: int, out: np.ndarray) -> np.ndarray:
    """out = offset + floor(v * m / 2^16) for uint16 draws v; returns the rejected positions (see
    ``uniform``). Overwrites ``v``.
    """
    wide = _scratch("wide", v.size, np.uint32)
    wide[...] = v
    wide *= np.uint32(modulus)
    wide >>= np.uint32(16)
    if offset:
        wide += np.uint32(offset)
    out[...] = wide
    bad = _scratch("bad", v.size, np.bool_)
    np.less(np.multiply(v, np.uint16(modulus), out=v), np.uint16((1 << 16) % modulus), out=bad)
    return np.flatnonzero(bad) if bad.any() else np.zeros(0, dtype=np.intp)


def _map_draws_c(v: np.ndarray, modulus: int, offset: int, out: np.ndarray) -> np.ndarray:
    rejected = _scratch("rejected", v.size, np.int64)
    count = _lib.mpcnp_zp_uniform(_ptr("uint16_t", v), v.size, modulus, offset, _ptr("uint8_t", out),
                                  _ptr("int64_t", rejected))
    return rejected[:count].copy()


def uniform_nonzero(prf: ring.PRF, shape) -> np.ndarray:
    """Exactly uniform elements of Z_p^* = {1, ..., p - 1} as uint8."""
    return uniform(prf, P - 1, shape, offset=1)


# ---- Z_p arithmetic on uint8 ------------------------------------------------------------------------
def reduce(t: np.ndarray) -> np.ndarray:
    """t mod p, in place, for uint8 t < 2p: t - p wraps above t exactly when t < p."""
    np.minimum(t, t - _P8, out=t)
    return t


def add(a: np.ndarray, b) -> np.ndarray:
    """a + b mod p (a, b reduced; b may be a broadcasting array or a small constant)."""
    return reduce(np.add(a, b, dtype=np.uint8))


def neg(a: np.ndarray) -> np.ndarray:
    """-a mod p."""
    return reduce(np.subtract(_P8, a))


def mul(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """a * s mod p for reduced uint8 a, s (Barrett reduction in uint16).

    With t = a * s < p^2 < 2^13, q = ((t >> 6) * 61) >> 6 undershoots t / p by less than 3 (61/4096
    < 1/p and each shift drops < 1), so t - p q < 3p: two conditional subtractions finish.
    """
    t = a.astype(np.uint16)
    t *= s
    q = t >> np.uint16(6)
    q *= np.uint16(61)
    q >>= np.uint16(6)
    q *= _P16
    t -= q
    for _ in range(2):
        np.minimum(t, t - _P16, out=t)
    return t.astype(np.uint8)


def select(mask: np.ndarray, if_set: np.ndarray, if_clear: np.ndarray) -> np.ndarray:
    """``if_set`` where the 0x00/0xFF byte ``mask`` is 0xFF, else ``if_clear`` (broadcasting)."""
    t = np.bitwise_xor(if_set, if_clear)
    t &= mask
    t ^= if_clear
    return t


def exclusive_prefix_sum(w: np.ndarray) -> np.ndarray:
    """S[i] = w[0] + ... + w[i - 1] mod p along axis 0 (S[0] = 0) of a (k, n) uint8 array."""
    s = np.empty_like(w)
    s[0] = 0
    tmp = np.empty(w.shape[1:], dtype=np.uint8)
    for i in range(1, w.shape[0]):
        row = s[i]
        np.add(s[i - 1], w[i - 1], out=row)
        np.subtract(row, _P8, out=tmp)
        np.minimum(row, tmp, out=row)
    return s


def rotate(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Column j of the (k, n) array ``d`` rotated down by g[j] < k: row i moves to (i + g[j]) mod k.

    In place, as a barrel shifter: stage b rotates the columns whose g has bit b set by 2^b rows.
    """
    k = d.shape[0]
    rolled = np.empty_like(d)
    for b in range(max(k - 1, 1).bit_length()):
        size = 1 << b
        rolled[size:] = d[:k - size]
        rolled[:size] = d[k - size:]
        rolled ^= d
        rolled &= np.negative((g >> np.uint8(b)) & np.uint8(1))   # 0xFF where bit b of g is set
        d ^= rolled
    return d


def bits_msb_first(x: np.ndarray, rows: int = BITS) -> np.ndarray:
    """The ``rows`` low bits of each uint64 of the 1-d ``x`` as a (rows, n) uint8 array, row 0 the
    most significant of them."""
    little_endian = x.astype("<u8", copy=False).view(np.uint8).reshape(x.size, 8)
    be_bytes = np.ascontiguousarray(little_endian.T[::-1])  # (8, n), the most significant byte first
    bits = be_bytes[:, np.newaxis, :] >> _SHIFTS
    bits &= np.uint8(1)
    return bits.reshape(BITS, x.size)[BITS - rows:]


# ---- the kernels of PrivateCompare and its dealing ----------------------------------------------------
def bit_shares_numpy(x: np.ndarray, share0: np.ndarray) -> np.ndarray:
    """server1's Z_p shares of the k low bits of the (n,) uint64 ``x`` given server0's (k, n) ``share0``:
    bits - share0 mod p, row 0 the most significant bit."""
    rows, n = share0.shape
    share1 = np.empty((rows, n), dtype=np.uint8)
    for cols in chunks(n):
        t = np.subtract(bits_msb_first(x[cols], rows) + _P8, share0[:, cols])  # in [1, p + 1]
        share1[:, cols] = reduce(t)
    return share1


def _bit_shares_c(x: np.ndarray, share0: np.ndarray) -> np.ndarray:
    rows, n = share0.shape
    share1 = np.empty((rows, n), dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    _lib.mpcnp_zp_bit_shares(_ptr("uint64_t", x), n, rows, _ptr("uint8_t", share0), _rows_ld(share0),
                             _ptr("uint8_t", share1), n)
    return share1


def compare_masks_numpy(j: int, x: np.ndarray, r: np.ndarray, beta: np.ndarray, s: np.ndarray,
                        u: np.ndarray, g: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Server j's part of PrivateCompare (PETS Alg. 3, steps 1-15) for a block of k-bit comparisons.

    x: (k, m) Z_p shares of the bits of the shared value, row 0 the most significant; r: (m,) uint64
    public comparands below 2^k; beta: (m,) common bits; s, u: (k, m) common multipliers in Z_p^* and
    offsets in Z_p; g: (m,) common rotations in [0, k). Writes to ``out`` (k, m) and returns it: the
    values server j sends, its shares of s_i c_i (offset by +u_i on server0, -u_i on server1), column e
    rotated by g[e].
    """
    k = x.shape[0]
    # 1. with beta = 1 the producer learns x <= r, i.e. x < t for t = r + 1: compare with t, sign flipped
    t_bits = bits_msb_first(r + beta.astype(np.uint64), k)
    t_set = np.negative(t_bits)                   # 0xFF where bit i of t is 1
    neg_x = neg(x)
    # 5, 8. w_i = x_i XOR t_i: x_i where t_i = 0, j - x_i where t_i = 1
    w = select(t_set, add(neg_x, 1) if j else neg_x, x)
    # 6, 9. c_i = +-(j t_i - x_i) + j + (sum of w_k over the more significant k)
    c = add(select(np.negative(beta), x, neg_x), exclusive_prefix_sum(w))
    if j:  # the public part j (1 + t_i) or j (1 - t_i) enters server1's share
        c = add(c, t_bits * np.where(beta == 1, np.uint8(P - 1), np.uint8(1)) + np.uint8(1))
    # 10-12. beta = 1, r = 2^k - 1: x <= r holds; shares of a vector with exactly one zero (server0's)
    known = np.flatnonzero((beta == 1) & (r == np.uint64((1 << k) - 1 if k < BITS else ODD)))
    if known.size:
        c[:, known] = 0 if j else 1
        if not j:
            c[0, known] = 0
    d = mul(add(c, neg(u) if j else u), s)
    # 15. a fresh rotation per element
    out[...] = rotate(d, g)
    return out


def _compare_masks_c(j: int, x: np.ndarray, r: np.ndarray, beta: np.ndarray, s: np.ndarray,
                     u: np.ndarray, g: np.ndarray, out: np.ndarray) -> np.ndarray:
    k, m = x.shape
    r = np.ascontiguousarray(r, dtype=np.uint64)
    beta, g = np.ascontiguousarray(beta, dtype=np.uint8), np.ascontiguousarray(g, dtype=np.uint8)
    _lib.mpcnp_zp_compare_masks(j, k, m, _ptr("uint8_t", x), _rows_ld(x), _ptr("uint64_t", r),
                                _ptr("uint8_t", beta), _ptr("uint8_t", s), _rows_ld(s), _ptr("uint8_t", u),
                                _rows_ld(u), _ptr("uint8_t", g), _ptr("uint8_t", out), _rows_ld(out))
    return out


def any_zero_numpy(d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """Per column of two (k, n) share arrays: 1 if some d0[i] + d1[i] = 0 mod p, else 0 (uint8)."""
    answer = np.empty(d0.shape[1], dtype=np.uint8)
    for cols in chunks(d0.shape[1]):
        t = np.add(d0[:, cols], d1[:, cols])  # in [0, 2p - 2]: zero mod p means 0 or p
        answer[cols] = np.logical_or.reduce((t == 0) | (t == _P8), axis=0)
    return answer


def _any_zero_c(d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    k, n = d0.shape
    answer = np.empty(n, dtype=np.uint8)
    _lib.mpcnp_zp_any_zero(k, n, _ptr("uint8_t", d0), _rows_ld(d0), _ptr("uint8_t", d1), _rows_ld(d1),
                           _ptr("uint8_t", answer))
    return answer


if _lib is None:
    map_draws, bit_shares, compare_masks, any_zero = \
        map_draws_numpy, bit_shares_numpy, compare_masks_numpy, any_zero_numpy
else:
    map_draws, bit_shares, compare_masks, any_zero = _map_draws_c, _bit_shares_c, _compare_masks_c, _any_zero_c


# ---- the odd ring Z_{L-1} ---------------------------------------------------------------------------
def odd_reduce(a: np.ndarray) -> np.ndarray:
    """A Z_L representative in [0, L - 1] mapped to Z_{L-1} ([0, L - 2]): only L - 1 changes, to 0."""
    return np.where(a == ODD, np.uint64(0), a)


def odd_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b mod (L - 1) for a, b in [0, L - 2]."""
    s = a + b
    s += s < a  # the carry is worth 2^64 = 1
    return odd_reduce(s)


def odd_sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b mod (L - 1) for a, b in [0, L - 2]."""
    d = a - b
    d -= a < b  # a borrow took 2^64 = 1 too many
    return d


def odd_uniform(prf: ring.PRF, shape) -> np.ndarray:
    """Exactly uniform elements of Z_{L-1}: the value L - 1 (probability 2^-64) draws again."""
    values = prf.uint64(shape)
    flat = values.reshape(-1)
    bad = np.flatnonzero(flat == ODD)
    while bad.size:
        flat[bad] = prf.uint64(bad.size)
        bad = bad[flat[bad] == ODD]
    return values


def wrap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a + b >= 2^64 (the sum of the two Z_L values wraps), else 0, as uint64."""
    return ((a + b) < a).astype(np.uint64)


__all__ = ["P", "BITS", "CHUNK", "ODD", "KERNELS", "chunks", "uniform", "uniform_nonzero", "map_draws",
           "reduce", "add", "neg", "mul", "select", "exclusive_prefix_sum", "rotate", "bits_msb_first",
           "bit_shares", "compare_masks", "any_zero", "odd_reduce", "odd_add", "odd_sub", "odd_uniform",
           "wrap"]
