"""SecureNN: exact comparisons, DReLU, ReLU and division with the producer as the third party.

Wagh, Gupta, Chandran, "SecureNN: 3-Party Secure Computation for Neural Network Training", PoPETs
2019(3) ("PETS" below), section 4, with the errata of docs/protocols.md: PrivateCompare on r - 1
in ShareConvert with the corrected theta, p = 67, a fresh permutation per compared element. ``drelu``
and ``relu`` are the single-comparison ones of Falcon (Wagh et al., PoPETs 2021); PETS' chain
(ShareConvert, ComputeMSB, Alg. 6) is kept as ``drelu_pets`` and ``relu_pets``. Max pooling and
DMaxPool are in ``maxpool``. The security arguments are in docs/protocols.md.

Conventions. ``Shared`` values hold additive shares over Z_L (L = 2^64) unless a docstring says Z_{L-1};
bits (DReLU, MSB) are shared as ring integers 0/1, not fixed-point scaled. Every function runs on every
party (SPMD); the producer and any other party pass and get Shared values whose share is None.
Common randomness of the servers comes from their pair stream (``sharing.common_stream``), the
producer's own from ``ctx.own_prf``. Every output is re-randomised with fresh shares of zero. The
producer's messages are PRF-compressed (``sharing.deal``), which is why the byte counts are below
PETS' tables. Costs: ``mpcnp.protocols.costs`` (``python -m mpcnp costs``).
"""
from __future__ import annotations

import numpy as np

from mpcnp import zp
from mpcnp.protocols import dealing, pond, sharing
from mpcnp.protocols.shared import Shared, add_public, xor_public
from mpcnp.protocols.sharing import Z_ODD, common_stream, deal, deal_bits, exchange, recv_array, rerandomize
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, Context

__all__ = ["private_compare", "share_convert", "compute_msb", "drelu", "drelu_thresholds", "drelu_pets", "relu",
           "relu_times", "relu_pets", "select_share", "division", "fixed_division", "truncate_relu"]

_ONE = np.uint64(1)


# ---- PrivateCompare (PETS Alg. 3) --------------------------------------------------------------------
def private_compare(ctx: Context, x_bits: np.ndarray | None, r: np.ndarray | None,
                    beta: np.ndarray | None, n: int, bits: int = zp.BITS) -> np.ndarray | None:
    """PrivateCompare (PETS Alg. 3): the producer learns beta XOR (x > r), the servers nothing.

    Inputs on the servers: ``x_bits`` (bits, n) uint8, this server's Z_p shares of the ``bits`` low
    bits of x (row 0 the most significant); ``r`` (n,) uint64 and ``beta`` (n,) uint8 in {0, 1}, both
    common to the servers. Other parties pass None. Returns (n,) uint8 beta XOR (x > r) on the
    producer, None elsewhere. Preconditions: 1 <= bits <= 64, x and r below 2^bits; exact for all such.

    Each server adds a common offset to its share of every c_i (server0 +u_i, server1 -u_i), multiplies
    by a common s_i in Z_p^*, and rotates the ``bits`` values of each element by a fresh common uniform
    g: at most one c_i is zero and the nonzero s_i c_i are i.i.d. uniform on Z_p^*, so the producer's
    view is that of a uniformly random permutation (the zero, if any, at a uniform position). The
    offsets matter because the producer may know the shares of x (it dealt them).

    Cost: 1 round; 2 * bits bytes per element (each server sends one byte per bit), 128 at 64 bits
    as PETS Table 2.
    """
    if not 1 <= bits <= zp.BITS:
        raise ValueError(f"PrivateCompare compares 1 to {zp.BITS} bits, got {bits}")
    if n == 0:
        return np.zeros(0, dtype=np.uint8) if ctx.name == PRODUCER else None
    if ctx.is_server:
        common = common_stream(ctx)
        d = np.empty((bits, n), dtype=np.uint8)
        for cols in zp.chunks(n):
            m = cols.stop - cols.start
            s = zp.uniform_nonzero(common, (bits, m))
            u = zp.uniform(common, zp.P, (bits, m))
            g = zp.uniform(common, bits, m) if bits > 1 else np.zeros(m, np.uint8)   # one bit: nothing to rotate
            zp.compare_masks(ctx.server_index, x_bits[:, cols], r[cols], beta[cols], s, u, g, d[:, cols])
        ctx.send(PRODUCER, d)
        return None
    if ctx.name != PRODUCER:
        return None
    # 17. the producer reconstructs and looks for a zero
    d0 = recv_array(ctx, SERVER0, np.uint8, (bits, n))
    d1 = recv_array(ctx, SERVER1, np.uint8, (bits, n))
    return zp.any_zero(d0, d1)


# ---- ShareConvert (PETS Alg. 4, corrected) -----------------------------------------------------------
def share_convert(ctx: Context, a: Shared) -> Shared:
    """ShareConvert (PETS Alg. 4 with the errata of docs/protocols.md): Z_L shares of a -> Z_{L-1} shares of a.

    Input: Z_L shares of a. Output: shares over Z_{L-1} (uint64 in [0, L - 2]) of a mod (L - 1),
    which is a itself for a != L - 1 (the precondition of PETS; a = L - 1 gives 0).
    PrivateCompare runs on r - 1 (so the producer learns eta'' XOR (x >= r)); for r = 0, where x >= r
    always holds, the servers flip the bit they hand PrivateCompare, which then reports true.
    theta_j = beta_j + (1 - j)(-alpha - 1) + delta_j + eta_j.

    Cost: 4 rounds; 224 bytes per element: 16 (step 1) + 72 (step 2: 64 Z_p bytes and 8 for delta,
    server1's shares only) + 128 (PrivateCompare) + 8 (step 4, server1's share). PETS: 304, the
    difference being PRF compression of the producer's messages in steps 2 and 4.
    """
    n = int(np.prod(a.shape, dtype=np.int64))
    if n == 0:
        return Shared.of(a.share, a.shape)
    beta_j = delta_j = r = eta2 = alpha = pc_r = pc_beta = None
    if ctx.is_server:
        j, common = ctx.server_index, common_stream(ctx)
        r_shares = common.uint64((2, n))           # r_0, r_1: both servers hold both
        r = r_shares[0] + r_shares[1]
        alpha = zp.wrap(r_shares[0], r_shares[1])
        eta2 = common.uint8(n) & np.uint8(1)
        # step 3 compares with r - 1; r = 0 flips the bit handed to PrivateCompare (x >= 0 always)
        pc_r, pc_beta = r - _ONE, eta2 ^ (r == 0).astype(np.uint8)
        # 1. mask with r_j; keep the wrap bit beta_j
        a_j = a.flat()
        beta_j = zp.wrap(a_j, r_shares[j])
        ctx.send(PRODUCER, a_j + r_shares[j])
    x = delta = None
    if ctx.name == PRODUCER:
        # 2. the producer opens x = a + r and deals the bits of x and the wrap delta of its shares
        masked0 = recv_array(ctx, SERVER0, np.uint64, (n,))
        masked1 = recv_array(ctx, SERVER1, np.uint64, (n,))
        x, delta = masked0 + masked1, zp.wrap(masked0, masked1)
    x_bits = deal_bits(ctx, x, n)
    delta_j = deal(ctx, delta, (n,), Z_ODD)
    # 3. eta' = eta'' XOR (x > r - 1) to the producer
    eta1 = private_compare(ctx, x_bits, pc_r, pc_beta, n)
    # 4. Z_{L-1} shares of eta'
    eta1_j = deal(ctx, None if eta1 is None else eta1.astype(np.uint64), (n,), Z_ODD)
    if not ctx.is_server:
        return Shared.of(None, a.shape)
    # 5. eta = eta' XOR eta''; y_j = a_j - theta_j in Z_{L-1}
    flipped = zp.odd_sub(np.full(n, j, dtype=np.uint64), eta1_j)
    eta_j = np.where(eta2 == 1, flipped, eta1_j)
    theta = zp.odd_add(zp.odd_add(beta_j, delta_j), eta_j)
    if j == 0:
        theta = zp.odd_sub(theta, alpha + _ONE)
    y = zp.odd_sub(zp.odd_reduce(a.flat()), theta)
    zero = zp.odd_uniform(common, n)
    y = zp.odd_add(y, zero) if j == 0 else zp.odd_sub(y, zero)
    return Shared.of(y, a.shape)


# ---- ComputeMSB (PETS Alg. 5) ------------------------------------------------------------------------
def compute_msb(ctx: Context, a: Shared) -> Shared:
    """ComputeMSB (PETS Alg. 5): Z_{L-1} shares of a -> Z_L shares of MSB(a) in {0, 1}.

    In the odd ring MSB(a) = LSB(2a). The servers open r = 2a + x for the producer's random x; then
    LSB(2a) = LSB(r) XOR LSB(x) XOR (x > r), and PrivateCompare gives the producer beta' = beta XOR
    (x > r). Steps 4-5 are merged: the producer knows both beta' and LSB(x), so instead of dealing
    shares of beta' and of LSB(x) and spending a multiplication on gamma * delta, it deals shares of
    z = beta' XOR LSB(x), and MSB(a) = z XOR (beta XOR LSB(r)), a bit the servers know. Nobody sees
    anything new: the producer only sends, and z's shares are uniform.

    Cost: 4 rounds; 224 bytes per element: 72 (x's Z_{L-1} and Z_p shares, server1's only) + 16 (open
    r) + 128 (PrivateCompare) + 8 (z). PETS: 5 rounds, 360 bytes.
    """
    n = int(np.prod(a.shape, dtype=np.int64))
    if n == 0:
        return Shared.of(a.share, a.shape)
    # 1. the producer's random x, dealt in Z_{L-1} and bit by bit in Z_p
    x = zp.odd_uniform(ctx.own_prf, n) if ctx.name == PRODUCER else None
    x_j = deal(ctx, x, (n,), Z_ODD)
    x_bits = deal_bits(ctx, x, n)
    r = beta = None
    if ctx.is_server:
        beta = common_stream(ctx).uint8(n) & np.uint8(1)
        # 2. open r = 2a + x in Z_{L-1}
        a_j = a.flat()
        [r] = exchange(ctx, [zp.odd_add(zp.odd_add(a_j, a_j), x_j)], zp.odd_add)
    # 3. beta' = beta XOR (x > r) to the producer
    beta1 = private_compare(ctx, x_bits, r, beta, n)
    # 4-5. z = beta' XOR LSB(x) from the producer; MSB = z XOR beta XOR LSB(r)
    z = None if beta1 is None else (beta1.astype(np.uint64) ^ (x & _ONE))
    z_j = deal(ctx, z, (n,))
    if not ctx.is_server:
        return Shared(None, a.shape)
    msb = xor_public(ctx, Shared(z_j, (n,)), beta.astype(np.uint64) ^ (r & _ONE))
    return Shared.of(rerandomize(ctx, msb.share), a.shape)


# ---- DReLU and ReLU: one comparison (Falcon) or PETS Alg. 6, 7 ---------------------------------------
def drelu(ctx: Context, a: Shared, bits: int = 64) -> Shared:
    """DReLU: shares of 1 if a >= 0 else 0 (as ring integers), for a read as signed.

    The ReLU' (DReLU) of Wagh, Tople, Benhamouda, Kushilevitz, Mittal, Rabin, "Falcon: Honest-Majority
    Maliciously Secure Framework for Private Deep Learning", PoPETs 2021(1), adapted to SecureNN's
    two servers and helper with PETS Alg. 3 as the comparison: the sign read off the carry of one
    masked opening (``falcon_msb``). Output: fresh Z_L shares; DReLU(0) = 1.
    ``bits`` = k (2 to 64): exact for -2^(k-1) <= a < 2^(k-1) (with the default 64, on all of Z_L);
    beyond, the answer is wrong for some inputs, silently (it is bit k-1 of a + 2^(k-1)).
    Cost: 3 rounds; 3k + 5 + 2w bytes per element, w the bytes of the smallest unsigned integer
    holding k bits: 213 at k = 64, 85 at k = 24. PETS Alg. 6: 8 rounds, 664 bytes (``drelu_pets``:
    7, 448).
    """
    return falcon_msb(ctx, a, bits=bits).bit


def drelu_thresholds(ctx: Context, a: Shared, thresholds: np.ndarray) -> Shared:
    """[a >= T_j] for public ring values T_j (``thresholds``, J of them): shares of ring 0/1 bits of
    shape (J,) + a.shape, each DReLU(a - T_j) read as signed, exact on all of Z_L as ``drelu``'s.

    One mask r for all J comparisons (``falcon_msb`` with k = 64): the servers open x = a + r once,
    and (a - T_j) + r = x - T_j is public for every j; the producer deals the Z_p shares of r's 63
    low bits once, and each comparison is a PrivateCompare of its own (fresh common offsets,
    multipliers, rotation and beta), on those shared bits and x - T_j. The producer's view of each
    is that of a single PrivateCompare: its offsets hide the shares of r it dealt
    (``private_compare``), and the betas are fresh (docs/protocols.md 5.4.2).
    Cost: 3 rounds; per element 16 (x) + 63 (r's bits) + 134 J bytes (126 for the comparison's
    digits, 8 for z), where J separate DReLUs take 213 J.
    """
    thresholds = np.asarray(thresholds, dtype=np.uint64).reshape(-1)
    count, n = thresholds.size, a.size
    shape = (count,) + tuple(a.shape)
    if count == 0 or n == 0:
        return Shared(np.zeros(shape, np.uint64) if ctx.is_server else None, shape)
    rows, top, low = 63, np.uint64(63), np.uint64((1 << 63) - 1)
    mask = dealing.current().bit_mask(ctx, n, rows)
    r = mask.value
    shifted = beta = None
    if ctx.is_server:
        x_j = a.flat() + r
        ctx.send(ctx.other_server, x_j)
        beta = common_stream(ctx).uint8(count * n) & np.uint8(1)
    r_bits = mask.bits()
    if ctx.is_server:
        x = x_j + recv_array(ctx, ctx.other_server, np.uint64, (n,))
        shifted = (x[np.newaxis, :] - thresholds[:, np.newaxis]).reshape(-1)   # (a - T_j) + r, j-major
    beta1 = private_compare(ctx, None if r_bits is None else np.tile(r_bits, (1, count)),
                            None if shifted is None else shifted & low, beta, count * n, bits=rows)
    z = None if beta1 is None else beta1.astype(np.uint64) ^ np.tile((r >> top) & _ONE, count)
    z_j = deal(ctx, z, (count * n,))
    if not ctx.is_server:
        return Shared(None, shape)
    return _unmasked_bit(ctx, z_j, shifted, top, beta, shape)[1]


def relu(ctx: Context, a: Shared, bits: int = 64, coarse: int = 0) -> tuple[Shared, Shared]:
    """ReLU (PETS Alg. 7 on Falcon's DReLU): (shares of max(a, 0), shares of DReLU(a)); the bit is kept
    for backpropagation.

    ReLU(a) = DReLU(a) * a, the product folded into ``falcon_msb``: the producer, who knows r and the
    bit z it deals, also deals shares of z r, so that z a = z x - z r is local for the public x = a + r
    (docs/protocols.md). ``bits`` = k: exact for -2^(k-1) <= a < 2^(k-1) (every a at the default 64);
    beyond, the bit may be wrong and the value is then 0 or a instead of the other, silently.
    ``coarse`` = s: ``falcon_msb``'s threshold blurred by 2^s units (value and bit still agree).
    Cost: 3 rounds, 3(k - s) + 29 bytes per element: 221 at k = 64, 101 at k = 24. PETS: 10 rounds,
    704 bytes.
    """
    step = falcon_msb(ctx, a, with_product=True, bits=bits, coarse=coarse)
    return step.product, step.bit


def relu_times(ctx: Context, a: Shared, times: Shared, bits: int = 64,
               coarse: int = 0) -> tuple[Shared, Shared, Shared]:
    """``relu``'s (ReLU(a), DReLU(a)) and DReLU(a) * times for a shared ``times`` of a's shape, in the
    ReLU's 3 rounds (``falcon_msb``'s ``times``): 24 bytes per element more than ``relu`` (8 if times
    was opened before), where a Beaver product of the bit takes 40 (24) and a round more."""
    step = falcon_msb(ctx, a, with_product=True, bits=bits, coarse=coarse, times=times)
    return step.product, step.bit, step.times


def truncate_relu(ctx: Context, a: Shared, shift: int, bits: int = 64) -> tuple[Shared, Shared]:
    """ReLU(t) for the exact truncation t of ``a`` by ``shift`` bits (``pond.truncate_exact``), and
    DReLU(a): a product's truncation fused with the ReLU after it, in the ReLU's 3 rounds instead of
    1 + 3.

    DReLU is computed on a itself, whose sign is t's: t is floor(a / 2^shift) or one unit above, so
    a >= 0 gives t >= 0 and a < 0 gives t <= 0, and DReLU(a) * t = ReLU(t) exactly (the unfused
    result). The truncation's round (e and f, ``pond._offset_and_wrap``) travels with the opening of
    x = a + r in one message; t, finished when x arrives, is the product's operand (``falcon_msb``'s
    ``truncated``), opened under its own mask in PrivateCompare's round. ``bits`` = k: a within
    [-2^(k-1), 2^(k-1)) (64: every a with |a| < 2^62, the truncation's own precondition).
    Cost: 3 rounds; per element 2w + 3 (k - 1) + 16 + 16 bytes (x mod 2^k, r's bits and PrivateCompare,
    y = t + s, z and z s) plus the truncation's 4.25 (8.25 for shift > 32): 241.25 at k = 64, where
    truncating then ReLU take 4.25 + 221 = 225.25 in 4 rounds: 16 bytes more, one round and no message less.
    """
    if a.size == 0:      # falcon_msb sends nothing then: neither may the truncation
        return relu(ctx, pond.truncate_exact(ctx, a, shift), bits)
    step = falcon_msb(ctx, a, with_product=True, bits=bits, truncated=pond.PendingTruncation(ctx, a, shift))
    return step.product, step.bit


class FalconStep:
    """What ``falcon_msb`` returns: shares of DReLU(a) and, when asked for, of DReLU(a) * a (or of
    the truncation's) and of DReLU(a) * times."""

    __slots__ = ("bit", "product", "times")

    def __init__(self, bit: Shared, product: Shared | None, times: Shared | None = None):
        self.bit, self.product, self.times = bit, product, times


def _opening_dtype(bits: int):
    """The smallest unsigned integer type holding ``bits`` bits: x mod 2^bits is all DReLU opens."""
    return next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if bits <= 8 * np.dtype(t).itemsize)


def falcon_msb(ctx: Context, a: Shared, with_product: bool = False, bits: int = 64, coarse: int = 0,
               truncated: pond.PendingTruncation | None = None, times: Shared | None = None) -> FalconStep:
    """DReLU(a) = [a >= 0] by one PrivateCompare on a masked opening (Falcon's ReLU'), for a value
    known to satisfy -2^(k-1) <= a < 2^(k-1), k = ``bits`` (k = 64: every a in Z_L).

    a' = a + 2^(k-1) lies in [0, 2^k) and a >= 0 exactly when bit k-1 of a' is set. With the mask r,
    x = a + r and v' = v mod 2^(k-1), the low k-1 bits of a' + r = x + 2^(k-1) carry into bit k-1
    exactly when a'' + r' >= 2^(k-1) (a'' = a' mod 2^(k-1)), i.e. when r' > x'. So bit k-1 of a' =
    bit k-1 of (x + 2^(k-1)) XOR bit k-1 of r XOR [r' > x'] = 1 XOR x_(k-1) XOR r_(k-1) XOR [r' > x'].
    At k = 64 this is MSB(a) = MSB(x) XOR MSB(r) XOR [r' > x'] read as 1 XOR MSB(a).
      1. The producer's uniform mask r: the servers' Z_L shares r_j come from their streams with the
         producer (no message); the producer deals Z_p shares of the k-1 bits of r'.
      2. The servers open x = a + r to each other (only x mod 2^k when no product is wanted).
      3. PrivateCompare on k-1 bits, of the shared r' with the public x' and a common random beta: the
         producer learns beta' = beta XOR [r' > x'].
      4. The producer deals Z_L shares of z = beta' XOR r_(k-1) (and of z r ``with_product``).
      5. DReLU = z XOR c for c = 1 XOR beta XOR x_(k-1), public to the servers.
      6. (``with_product``) z a = z x - z r; DReLU * a is z a where c = 0 and a - z a where c = 1.
    Beyond the precondition the result is bit k-1 of a + 2^(k-1): wrong for some a, silently.
    ``coarse`` = s (0 <= s < k - 1): PrivateCompare looks only at bits s .. k-2 of r' and x' (k-1-s
    of them), and [r' >> s > x' >> s] differs from [r' > x'] only when a mod 2^(k-1) lies within 2^s
    below 2^(k-1): the result is exact for -2^(k-1) <= a <= 2^(k-1) - 2^s except that -2^s < a < 0 may
    count as >= 0 (a threshold blurred by 2^s units, for comparisons that tolerate it).
    Cost: 3 rounds (the opening of x and the dealing of r's bits are independent); per element
    2w (open x, w = 8 with the product, else the bytes of the smallest type holding k bits) +
    3 (k-1-s) (r's bits to server1, PrivateCompare) + 8 (server1's share of z), 8 more
    ``with_product``: 213 (221) at k = 64, s = 0. Security: docs/protocols.md, section 5.4.
    ``truncated`` (with ``with_product``, a ``pond.PendingTruncation`` of a): the product is
    DReLU(a) * t for the truncation t instead of DReLU(a) * a. The truncation's bits travel with the
    opening of x; t, finished when x arrives, is opened under a fresh mask s of the servers' pair
    streams with the producer in PrivateCompare's round, and the producer deals z s with z:
    z t = z y - z s for the public y = t + s, as for a. No round more; x is then opened only mod 2^k
    (2w) and y costs 16 bytes.
    ``times`` (a shared value of a's shape): also DReLU(a) * times (``FalconStep.times``), a product of
    the bit the caller would otherwise take in a round of its own (a select, a long division's
    subtraction, a maxpool index). times is opened under its Beaver mask m (e = times - m, drawn
    if it has none; pond.open_masks) in the message of x, unless it was opened before; the producer
    deals z m with z: z times = z e + z m. No round more; 24 bytes per element (8 if times was
    opened before), where a Beaver product of the bit after the comparison takes 40 (24) and a round.
    """
    if not (isinstance(bits, (int, np.integer)) and 2 <= bits <= 64):
        raise ValueError(f"DReLU compares values of 2 to 64 bits, got bits={bits!r}")
    if not (isinstance(coarse, (int, np.integer)) and 0 <= coarse < bits - 1):
        raise ValueError(f"a coarse DReLU skips 0 to bits - 2 = {bits - 2} low bits, got {coarse!r}")
    n = a.size
    if times is not None and tuple(times.shape) != tuple(a.shape):
        raise ValueError(f"falcon_msb: times of shape {tuple(times.shape)} for a of shape {tuple(a.shape)}")
    if n == 0:
        # distinct objects: a mask drawn later for one must not appear on another
        return FalconStep(*(Shared.of(a.share, a.shape) if wanted else None
                            for wanted in (True, with_product, times is not None)))
    if truncated is not None and not with_product:
        raise ValueError("falcon_msb: a truncation is for the product, with_product=True")
    if times is not None and times.mask is None:
        pond.draw_mask(ctx, times)
    # times' opening travels with x's (on the servers, which alone open it)
    open_times = times is not None and ctx.is_server and times.opened is None
    rows, top = bits - 1 - coarse, np.uint64(bits - 1)
    low = np.uint64((1 << (bits - 1)) - 1)
    opened = np.uint64 if with_product and truncated is None else _opening_dtype(bits)
    # 1. the mask r (the producer's r, the servers' r_j) and Z_p shares of bits coarse .. k-2 of r
    dealer = dealing.current()
    mask = dealer.bit_mask(ctx, n, rows) if coarse == 0 else dealer.bit_mask(ctx, n, rows, skip=coarse)
    r = mask.value
    x = beta = None
    if ctx.is_server:
        # 2. open x = a + r (with the truncation's bits, when fused, in the same message); the other
        # server's x_j is received only after r's bit shares are drawn or received, so the wait for it
        # overlaps that work (sharing.exchange would wait at once)
        x_j = (a.flat() + r).astype(opened, copy=False)
        extra = ([] if truncated is None else [truncated.outgoing]) + \
            ([(times.flat() - times.mask.reshape(-1)).view(np.uint8)] if open_times else [])
        ctx.send(ctx.other_server, np.concatenate([x_j.view(np.uint8), *extra]) if extra else x_j)
        beta = common_stream(ctx).uint8(n) & np.uint8(1)
    r_bits = mask.bits()
    # the product's operand v and its mask: a and r, or the truncation t under a fresh mask s, opened
    # in PrivateCompare's round (the producer deals the truncation's c_1 after r's bits)
    v, s = (a, r) if truncated is None else (None, sharing.random_shares(ctx, (n,)))
    if ctx.is_server and not extra:
        x = (x_j + recv_array(ctx, ctx.other_server, opened, (n,))).astype(np.uint64, copy=False)
    elif ctx.is_server:
        width, bits_width = n * np.dtype(opened).itemsize, 0 if truncated is None else truncated.outgoing.size
        got = recv_array(ctx, ctx.other_server, np.uint8, (width + bits_width + (8 * n if open_times else 0),))
        x = (x_j + got[:width].view(opened)).astype(np.uint64, copy=False)
        if open_times:
            opened_times = extra[-1].view(np.uint64) + got[width + bits_width:].view(np.uint64)
            times.opened = opened_times.reshape(times.shape)
        if truncated is not None:
            v = truncated.finish(got[width:width + bits_width])
            y_j = v.flat() + s
            ctx.send(ctx.other_server, y_j)
    elif truncated is not None:
        v = truncated.finish()
    # 3. beta' = beta XOR [r' > x'] to the producer (the top k-1-s of the k-1 low bits)
    compared = None if x is None else (x & low) >> np.uint64(coarse)
    beta1 = private_compare(ctx, r_bits, compared, beta, n, bits=rows)
    y = x if truncated is None or not ctx.is_server else y_j + recv_array(ctx, ctx.other_server, np.uint64, (n,))
    # 4. z = beta' XOR bit k-1 of r from the producer, then z m for each value v = e + m the bit
    # multiplies (its opening e public to the servers, its mask m known to the producer): a with
    # e = x, m = -r; the truncation t with e = y, m = -s; times with its Beaver opening and mask
    z = None if beta1 is None else beta1.astype(np.uint64) ^ ((r >> top) & _ONE)
    folded = int(with_product) + int(times is not None)
    if z is not None:
        masks = ([np.negative(s)] if with_product else []) + ([times.mask.reshape(-1)] if times is not None else [])
        z = np.concatenate([z] + [z * m for m in masks])
    dealt = deal(ctx, z, ((1 + folded) * n,))
    if not ctx.is_server:
        return FalconStep(*(Shared(None, a.shape) if wanted else None
                            for wanted in (True, with_product, times is not None)))
    # 5. DReLU = z XOR c, c public to the servers
    flip, bit = _unmasked_bit(ctx, dealt[:n], x, top, beta, a.shape)
    # 6. z v = z e + z m; DReLU * v = z v where c = 0, v - z v where c = 1
    operands = ([(v, y)] if with_product else []) + ([(times, times.opened)] if times is not None else [])
    products = [_bit_times(ctx, flip, dealt[:n], value, opening, dealt[(k + 1) * n:(k + 2) * n])
                for k, (value, opening) in enumerate(operands)]
    return FalconStep(bit, products[0] if with_product else None, products[-1] if times is not None else None)


def _unmasked_bit(ctx: Context, z_j: np.ndarray, x: np.ndarray, top: np.uint64, beta: np.ndarray,
                  shape) -> tuple[np.ndarray, Shared]:
    """Step 5 of ``falcon_msb``: DReLU = z XOR c for the public c = 1 XOR beta XOR bit ``top`` of the
    opened x: z where c = 0, 1 - z where c = 1. Returns (c as a boolean view, the bit's re-randomised
    shares of ``shape``); bytes and a boolean view, since these passes run over every compared element."""
    c = ((x >> top).astype(np.uint8) & np.uint8(1)) ^ beta ^ np.uint8(1)
    flip = c.view(np.bool_)
    bit = np.where(flip, (_ONE if ctx.name == SERVER0 else np.uint64(0)) - z_j, z_j)
    return flip, Shared.of(rerandomize(ctx, bit), shape)


def _bit_times(ctx: Context, flip: np.ndarray, z_j: np.ndarray, value: Shared, opening: np.ndarray,
               zm_j: np.ndarray) -> Shared:
    """Step 6 of ``falcon_msb``: DReLU * value for value = e + m, e = ``opening`` public to the servers
    and ``zm_j`` this server's share of z m: z value = z e + z m, then z value where c = 0 and
    value - z value where c = 1."""
    zv_j = z_j * opening.reshape(-1)
    zv_j += zm_j
    return Shared.of(rerandomize(ctx, np.where(flip, value.flat() - zv_j, zv_j)), value.shape)


def drelu_pets(ctx: Context, a: Shared) -> Shared:
    """DReLU (PETS Alg. 6): shares of 1 if a >= 0 else 0 (as ring integers), for |a| < 2^62.

    ShareConvert(2a), then ComputeMSB, then 1 - MSB. Exact for |a| < 2^62 (a read as signed): beyond,
    2a overflows and the sign flips. 2a is even, so ShareConvert's precondition 2a != L - 1 always
    holds. DReLU(0) = 1.
    Cost: 7 rounds (ComputeMSB's first message does not wait for ShareConvert); 448 bytes per element.
    PETS: 8 rounds, 664 bytes.
    """
    msb = compute_msb(ctx, share_convert(ctx, a << 1))
    return add_public(ctx, -msb, 1)


def relu_pets(ctx: Context, a: Shared) -> tuple[Shared, Shared]:
    """ReLU (PETS Alg. 7): ``drelu_pets``, then one Beaver product of the 0/1 bit with a (no
    truncation: the bit carries no fractional bits; gives a a Beaver mask if it had none); exact for
    |a| < 2^62. Returns (shares of max(a, 0), shares of DReLU(a)).
    Cost: 8 rounds, 488 bytes per element (448 + 40). PETS: 10 rounds, 704 bytes.
    """
    bit = drelu_pets(ctx, a)
    value = pond.product(ctx, bit, a, pond.MUL)
    return Shared.of(rerandomize(ctx, value.share), value.shape), bit


# ---- SelectShare (PETS Alg. 2), Division (PETS Alg. 8) -----------------------------------------------
def select_share(ctx: Context, alpha: Shared, x: Shared, y: Shared) -> Shared:
    """SelectShare (PETS Alg. 2): shares of x if alpha = 0, y if alpha = 1 (alpha a shared 0/1 integer).

    x + alpha (y - x): one Beaver product, untruncated. Shapes broadcast as in NumPy.
    Cost: 40 bytes per element (4 opened ring elements and the producer's c1), 2 rounds by PETS' count,
    1 counted (the producer's message and the opening are independent).
    """
    moved = pond.product(ctx, alpha, y - x, pond.MUL)
    shape = moved.shape
    if moved.share is None:
        return Shared(None, shape)
    return Shared.of(rerandomize(ctx, np.broadcast_to(x.share, shape) + moved.share), shape)


def division(ctx: Context, x: Shared, y: Shared, bits: int) -> Shared:
    """Division (PETS Alg. 8): shares of floor(x / y) by long division, one quotient bit per step.

    x, y: shared ring integers (same shape), read as signed. Preconditions: 0 <= x < 2^bits * y,
    y > 0, x < 2^63 and 2^(bits - 1) y <= 2^63 (every DReLU input x - u - 2^i y then lies in
    [-2^63, 2^63), where DReLU is exact).
    For i = bits - 1 .. 0: beta_i = DReLU(x - u - 2^i y), u += beta_i 2^i y, q += beta_i 2^i.
    Cost: ``bits`` sequential steps of one DReLU with the product beta y folded in (``falcon_msb``'s
    ``times``); y's Beaver mask is opened once, in the first step's comparison, and reused: 221 bytes
    per element and step after the first (+16 for y's mask), 3 rounds per step.
    """
    if x.shape != y.shape:
        raise ValueError(f"division needs operands of one shape, got {x.shape} and {y.shape}")
    if not 1 <= bits <= 63:
        raise ValueError(f"division computes 1..63 quotient bits, got {bits}")
    u = q = x * 0
    for i in reversed(range(bits)):
        scale = np.uint64(1 << i)
        step = falcon_msb(ctx, x - u - y * scale, times=y)
        beta = step.bit
        u = u + step.times * scale
        q = q + beta * scale
    return Shared.of(rerandomize(ctx, q.share), q.shape)


def fixed_division(ctx: Context, x: Shared, y: Shared, integer_bits: int, frac_bits: int) -> Shared:
    """floor(x 2^f / y) for shared fixed-point x, y (f = ``frac_bits``): PETS Alg. 8 as restoring
    long division, the remainder doubled for each fractional quotient bit instead of the dividend
    shifted up by 2^f first, so that nothing grows beyond 2^(integer_bits + 1) y.

    x' = x + 2^b y (b = ``integer_bits``) is nonnegative and below 2^(b + 1) y when |x / y| < 2^b.
    Integer bits, i = b .. 0: beta = DReLU(r - 2^i y), r -= beta 2^i y, q += beta 2^(i + f);
    fractional bits, j = 1 .. f: r = 2 r, beta = DReLU(r - y), r -= beta y, q += beta 2^(f - j).
    The remainder stays below 2^(i + 1) y, then below y, so every DReLU input lies in
    (-2^63, 2^63) when 2^b y < 2^62 (ring values). server0 finally takes the offset 2^(b + f) off q.
    Preconditions (ring values, secret, not checked): y > 0, |x| < 2^b y and 2^b y < 2^62, i.e. for
    reals 2^-f <= y < 2^(62 - b - f). Cost: b + 1 + f sequential steps of one DReLU with the product
    of its bit and y folded in (``falcon_msb``'s ``times``; y's mask opened once, in the first step):
    221 bytes and 3 rounds per step (+16 in the first).
    """
    if x.shape != y.shape:
        raise ValueError(f"division needs operands of one shape, got {x.shape} and {y.shape}")
    if not 0 <= integer_bits <= 61 - frac_bits:
        raise ValueError(f"division needs 0 <= integer_bits <= {61 - frac_bits}, got {integer_bits}")
    remainder = x + y * np.uint64(1 << integer_bits)
    quotient = x * 0
    for i in reversed(range(integer_bits + 1)):
        scale = np.uint64(1 << i)
        step = falcon_msb(ctx, remainder - y * scale, times=y)
        remainder = remainder - step.times * scale
        quotient = quotient + step.bit * np.uint64(1 << (i + frac_bits))
    for j in range(1, frac_bits + 1):
        remainder = remainder * np.uint64(2)
        step = falcon_msb(ctx, remainder - y, times=y)
        remainder = remainder - step.times
        quotient = quotient + step.bit * np.uint64(1 << (frac_bits - j))
    quotient = add_public(ctx, quotient, np.uint64((1 << 64) - (1 << (integer_bits + frac_bits))))
    return Shared.of(rerandomize(ctx, quotient.share), quotient.shape)
