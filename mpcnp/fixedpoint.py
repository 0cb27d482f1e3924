"""Fixed-point encoding of reals in Z_2^64 and local truncation of shares (docs/protocols.md, "Fixed point").

Layer 2 of mpcnp: knows nothing of parties. A real v is encoded as round(v * 2^f) in two's complement,
with f = ``frac_bits`` fractional bits (default 16, accepted 8..24). Magnitudes up to 2^(62 - f) are
encodable: the two spare bits keep products and sums of encoded values, and the comparisons of SecureNN
(exact for |a| < 2^62 in the ring), away from the wrap.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "TRUNCATIONS", "DEFAULT_FRAC_BITS", "MIN_FRAC_BITS", "MAX_FRAC_BITS",
    "check_frac_bits", "check_truncation", "max_magnitude", "encode", "decode", "truncate_share", "check_divisor", "divide_share",
    "encode_factor",
]

TRUNCATIONS = ("local", "exact")
DEFAULT_FRAC_BITS = 16
MIN_FRAC_BITS = 8
MAX_FRAC_BITS = 24
_BOUND_BITS = 62  # |v| * 2^f must stay below 2^62


def check_frac_bits(frac_bits: int | None) -> int:
    """Validate ``frac_bits`` (None means the default) and return it as an int."""
    if frac_bits is None:
        return DEFAULT_FRAC_BITS
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)):
        raise TypeError(f"frac_bits must be an int, got {type(frac_bits).__name__}")
    if not MIN_FRAC_BITS <= frac_bits <= MAX_FRAC_BITS:
        raise ValueError(f"frac_bits must be between {MIN_FRAC_BITS} and {MAX_FRAC_BITS}, got {frac_bits}")
    return int(frac_bits)


def check_truncation(mode: str) -> str:
    """``mode`` if it names a truncation mode ("local": SecureML's, free, rarely garbage; "exact": with
    the producer's help, never garbage), else ValueError."""
    if mode not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {mode!r}; choose one of {', '.join(TRUNCATIONS)}")
    return mode


def max_magnitude(frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    """The exclusive bound 2^(62 - f) on the magnitude of encodable reals."""
    return float(2 ** (_BOUND_BITS - check_frac_bits(frac_bits)))


def _first_index(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def encode(values, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Encode reals as uint64 ring elements round(v * 2^frac_bits) (two's complement).

    Raises ValueError, naming the offending value, its index and the limit, for NaN, infinities and
    magnitudes >= 2^(62 - frac_bits); TypeError for non-real input.
    """
    f = check_frac_bits(frac_bits)
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot encode values of dtype {array.dtype}: real numbers are needed")
    array = array.astype(np.float64, copy=False)
    if array.size:
        finite = np.isfinite(array)
        if not finite.all():
            index = _first_index(~finite)
            raise ValueError(f"cannot encode non-finite value {array[index]} at index {index}")
        limit = 2.0 ** (_BOUND_BITS - f)
        too_large = np.abs(array) >= limit
        if too_large.any():
            index = _first_index(too_large)
            raise ValueError(
                f"value {array[index]:.6g} at index {index} exceeds the largest encodable magnitude "
                f"2^{_BOUND_BITS - f} = {limit:.6g} at frac_bits={f}")
    scaled = np.rint(array * (2.0 ** f))
    return scaled.astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Decode uint64 ring elements (two's complement, ``frac_bits`` fractional bits) to float64."""
    f = check_frac_bits(frac_bits)
    ring = np.asarray(ring)
    if ring.dtype != np.uint64:
        raise TypeError(f"decode expects uint64 ring elements, got {ring.dtype}")
    return ring.view(np.int64).astype(np.float64) * (2.0 ** -f)


def truncate_share(share: np.ndarray, party: int, bits: int = DEFAULT_FRAC_BITS, *,
                   in_place: bool = False) -> np.ndarray:
    """Local truncation by ``bits`` of one additive share (SecureML, Mohassel-Zhang S&P 2017, 4.1).

    server0 (``party=0``) shifts its share arithmetically right; server1 (``party=1``) computes
    -((-x1) >> bits). The reconstructed result is floor(x / 2^bits) up to one unit in the last place,
    except with probability about |x| / 2^64 for the untruncated ring value x (|v| * 2^(2f - 64) for a
    product v of two values with f fractional bits), when it is off by about 2^(64 - bits) units: then
    the result is garbage. With f = 16 and |v| < 2^10 that is below 2^-22 per element. Exact
    truncation, with the producer's help, lives in the protocols. ``in_place``: ``share`` is the
    caller's to overwrite (a fresh product), which saves allocating the result.
    """
    if share.dtype != np.uint64:
        raise TypeError(f"truncate_share expects uint64 shares, got {share.dtype}")
    if not 0 <= bits < 63:
        raise ValueError(f"truncation needs 0 <= bits < 63, got {bits}")
    if party not in (0, 1):
        raise ValueError(f"party must be 0 (server0) or 1 (server1), got {party}")
    shift = np.int64(bits)
    # NumPy hands 0-d results over as scalars, which cannot be written to: those get a fresh array
    writable = isinstance(share, np.ndarray) and share.ndim > 0 and share.flags.writeable
    out = share if in_place and writable else np.empty(np.shape(share), dtype=np.uint64)
    signed = out.view(np.int64)
    if party == 0:
        np.right_shift(np.asarray(share).view(np.int64), shift, out=signed)
    else:
        np.negative(share, out=out)
        np.right_shift(signed, shift, out=signed)
        np.negative(out, out=out)
    return out


def encode_factor(factor: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> tuple[np.ndarray, int]:
    """A public real factor as ring integers m and a shift k with factor ~ m / 2^k.

    k is chosen so the largest |factor| keeps ``frac_bits`` significant bits (k = frac_bits for
    factors of magnitude >= 1, more for smaller ones): multiplying shares by m and truncating by k
    then has the relative error 2^-(frac_bits + 1) of the factor, and for |factor| <= 1 the local
    truncation failure rate of a product of x with a value of magnitude one, |x| 2^(2 frac_bits - 64)
    per element (for larger factors, that of the product x * factor).
    """
    f = check_frac_bits(frac_bits)
    factor = np.asarray(factor, dtype=np.float64)
    top = float(np.max(np.abs(factor))) if factor.size else 0.0
    if not np.isfinite(top):
        raise ValueError("cannot multiply by a non-finite public value")
    extra = max(0, -int(np.floor(np.log2(top)))) if top > 0 else 0
    shift = min(f + extra, 61)
    if top * 2.0 ** shift >= 2.0 ** _BOUND_BITS:
        raise ValueError(f"public factor {top:.6g} exceeds the largest encodable magnitude "
                         f"2^{_BOUND_BITS - f} = {2.0 ** (_BOUND_BITS - f):.6g} at frac_bits={f}")
    return np.rint(factor * 2.0 ** shift).astype(np.int64).view(np.uint64), shift


def check_divisor(divisor) -> np.ndarray:
    """``divisor`` as an array if it holds integers in [1, 2^62) (what share division takes), else
    ValueError."""
    divisor = np.asarray(divisor)
    if divisor.dtype.kind not in "iu" or (divisor < 1).any() or (divisor >= 1 << 62).any():
        raise ValueError("share division needs positive integer divisors below 2^62")
    return divisor


def divide_share(share: np.ndarray, party: int, divisor) -> np.ndarray:
    """Local division of one additive share by a public positive integer (array broadcasting allowed).

    The SecureML argument of ``truncate_share`` holds for any divisor d: server0 takes floor(x0 / d),
    server1 -floor(-x1 / d) (shares read as signed), and the result is x / d within one unit except
    with probability about |x| / 2^64, when it is off by about 2^64 / d units.
    """
    if share.dtype != np.uint64:
        raise TypeError(f"divide_share expects uint64 shares, got {share.dtype}")
    divisor = check_divisor(divisor).astype(np.int64)
    if party == 0:
        return np.floor_divide(share.view(np.int64), divisor).view(np.uint64)
    if party == 1:
        negated = np.negative(share).view(np.int64)
        return np.negative(np.floor_divide(negated, divisor).view(np.uint64))
    raise ValueError(f"party must be 0 (server0) or 1 (server1), got {party}")
