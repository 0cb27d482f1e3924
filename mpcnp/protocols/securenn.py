"""SecureNN: exact comparisons, DReLU, ReLU and division with the producer as the third party.

Wagh, Gupta, Chandran, "SecureNN: 3-Party Secure Computation for Neural Network Training", PoPETs
2019(3) ("PETS" below), section 4, with the errata of PROTOCOLS.md section 5: PrivateCompare on r - 1
in ShareConvert with the corrected theta, p = 67, a fresh permutation per compared element. The default
DReLU is the single-comparison one of Falcon (Wagh et al., PoPETs 2021); PETS' chain (ShareConvert,
ComputeMSB, Alg. 6) is kept as ``drelu_pets``. Max pooling and DMaxPool are in ``maxpool``.

Conventions. ``Shared`` values hold additive shares over Z_L (L = 2^64) unless a docstring says Z_{L-1};
bits (DReLU, MSB) are shared as ring integers 0/1, not fixed-point scaled. Every function runs on every
party (SPMD); the producer and any other party pass and get Shared values whose share is None.
Common randomness of the servers comes from their pair stream (``dealer.common_stream``), the
producer's own from ``ctx.own_prf``. Every output is re-randomised with fresh shares of zero. The
producer's messages are PRF-compressed (``dealer``), which is why the byte counts are below
PROTOCOLS.md section 6.

Costs per element (bytes summed over all parties; rounds = longest chain of dependent messages):
  private_compare 128 B, 1 round (126 B on 63 bits);  share_convert 224 B, 4;  compute_msb 224 B, 4;
  drelu 213 B, 3;  drelu_pets 448 B, 7;  relu 221 B, 3 (pets: 488 B, 8);  select_share 40 B, 1;
  division per quotient bit 237 B, 4 (the divisor's mask is opened once, +16 B in the first step).
"""
from __future__ import annotations

import numpy as np

from mpcnp.protocols import dealer, pond, zp
from mpcnp.protocols.dealer import add_public, deal, deal_bits, flat, shared, xor_public
from mpcnp.protocols.pond import Shared
from mpcnp.protocols.sharing import exchange, random_shares, recv_array, rerandomize
from mpcnp.runtime.context import PRODUCER, SERVER0, SERVER1, Context

__all__ = ["private_compare", "share_convert", "compute_msb", "drelu", "drelu_pets", "relu", "select_share",
           "division", "DRELU_METHODS"]

DRELU_METHODS = ("falcon", "pets")
_ONE = np.uint64(1)
_LOW63 = np.uint64((1 << 63) - 1)
_TOP = np.uint64(63)


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
        common = dealer.common_stream(ctx)
        d = np.empty((bits, n), dtype=np.uint8)
        for cols in zp.chunks(n):
            m = cols.stop - cols.start
            s = zp.uniform_nonzero(common, (bits, m))
            u = zp.uniform(common, zp.P, (bits, m))
            g = zp.uniform(common, bits, m)
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
    """ShareConvert (PETS Alg. 4 with PROTOCOLS.md's errata): Z_L shares of a -> Z_{L-1} shares of a.

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
        return shared(a.share, a.shape)
    beta_j = delta_j = r = eta2 = alpha = None
    if ctx.is_server:
        j, common = ctx.server_index, dealer.common_stream(ctx)
        r_shares = common.uint64((2, n))           # r_0, r_1: both servers hold both
        r = r_shares[0] + r_shares[1]
        alpha = zp.wrap(r_shares[0], r_shares[1])
        eta2 = common.uint8(n) & np.uint8(1)
        # 1. mask with r_j; keep the wrap bit beta_j
        a_j = flat(a)
        beta_j = zp.wrap(a_j, r_shares[j])
        ctx.send(PRODUCER, a_j + r_shares[j])
    x = delta = None
    if ctx.name == PRODUCER:
        # 2. the producer opens x = a + r and deals the bits of x and the wrap delta of its shares
        masked0 = recv_array(ctx, SERVER0, np.uint64, (n,))
        masked1 = recv_array(ctx, SERVER1, np.uint64, (n,))
        x, delta = masked0 + masked1, zp.wrap(masked0, masked1)
    x_bits = deal_bits(ctx, x, n)
    delta_j = deal(ctx, delta, n, odd=True)
    # 3. eta' = eta'' XOR (x > r - 1) to the producer; r = 0 flips the bit handed to PrivateCompare
    pc_r = None if r is None else r - _ONE
    pc_beta = None if r is None else eta2 ^ (r == 0).astype(np.uint8)
    eta1 = private_compare(ctx, x_bits, pc_r, pc_beta, n)
    # 4. Z_{L-1} shares of eta'
    eta1_j = deal(ctx, None if eta1 is None else eta1.astype(np.uint64), n, odd=True)
    if not ctx.is_server:
        return shared(None, a.shape)
    # 5. eta = eta' XOR eta''; y_j = a_j - theta_j in Z_{L-1}
    flipped = zp.odd_sub(np.full(n, j, dtype=np.uint64), eta1_j)
    eta_j = np.where(eta2 == 1, flipped, eta1_j)
    theta = zp.odd_add(zp.odd_add(beta_j, delta_j), eta_j)
    if j == 0:
        theta = zp.odd_sub(theta, alpha + _ONE)
    y = zp.odd_sub(zp.odd_reduce(flat(a)), theta)
    zero = zp.odd_uniform(common, n)
    y = zp.odd_add(y, zero) if j == 0 else zp.odd_sub(y, zero)
    return shared(y, a.shape)


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
        return shared(a.share, a.shape)
    # 1. the producer's random x, dealt in Z_{L-1} and bit by bit in Z_p
    x = zp.odd_uniform(ctx.own_prf, n) if ctx.name == PRODUCER else None
    x_j = deal(ctx, x, n, odd=True)
    x_bits = deal_bits(ctx, x, n)
    r = beta = None
    if ctx.is_server:
        beta = dealer.common_stream(ctx).uint8(n) & np.uint8(1)
        # 2. open r = 2a + x in Z_{L-1}
        a_j = flat(a)
        [r] = exchange(ctx, [zp.odd_add(zp.odd_add(a_j, a_j), x_j)], zp.odd_add)
    # 3. beta' = beta XOR (x > r) to the producer
    beta1 = private_compare(ctx, x_bits, r, beta, n)
    # 4-5. z = beta' XOR LSB(x) from the producer; MSB = z XOR beta XOR LSB(r)
    z = None if beta1 is None else (beta1.astype(np.uint64) ^ (x & _ONE))
    z_j = deal(ctx, z, n)
    if not ctx.is_server:
        return shared(None, a.shape)
    msb = xor_public(ctx, z_j, beta.astype(np.uint64) ^ (r & _ONE))
    return shared(rerandomize(ctx, msb), a.shape)


# ---- DReLU: one comparison (Falcon) or PETS Alg. 6 ---------------------------------------------------
def drelu(ctx: Context, a: Shared, method: str = "falcon") -> Shared:
    """DReLU: shares of 1 if a >= 0 else 0 (as ring integers), for every a in Z_L read as signed.

    ``method="falcon"`` (the default) computes the MSB with a single PrivateCompare on the opened
    masked value, the ReLU' (DReLU) of Wagh, Tople, Benhamouda, Kushilevitz, Mittal, Rabin, "Falcon:
    Honest-Majority Maliciously Secure Framework for Private Deep Learning", PoPETs 2021(1), adapted
    to SecureNN's two servers and helper with PETS Alg. 3 as the comparison. ``method="pets"`` is
    ``drelu_pets`` (PETS Alg. 6). Output: fresh Z_L shares; DReLU(0) = 1.

    Algorithm (v' = v mod 2^63 for v in Z_L). For x = a + r, the low 63 bits carry into bit 63
    exactly when a' + r' >= 2^63, i.e. when r' > x', so MSB(a) = MSB(x) XOR MSB(r) XOR [r' > x'].
      1. The producer's uniform mask r: the servers' Z_L shares r_j come from their streams with the
         producer (no message); the producer deals Z_p shares of the 63 bits of r'.
      2. The servers open x = a + r to each other.
      3. PrivateCompare on 63 bits, of the shared r' with the public x' and a common random beta: the
         producer learns beta' = beta XOR [r' > x'].
      4. The producer deals Z_L shares of z = beta' XOR MSB(r) (ComputeMSB's merged steps 4-5).
      5. DReLU = 1 XOR MSB(a) = z XOR (1 XOR beta XOR MSB(x)), the second bit public to the servers.

    Relation to PETS. Alg. 5 (ComputeMSB) uses the same identity one bit lower: in the odd ring
    Z_{L-1}, MSB(a) = LSB(2a) and the LSB of the opened 2a + x costs one comparison. That needs shares
    over Z_{L-1}, hence Alg. 4 (ShareConvert, itself a PrivateCompare) first: Alg. 6 spends two
    comparisons and 8 rounds, and 2a must not overflow (|a| < 2^62). Reading the carry out of the low
    63 bits directly in Z_L needs no odd ring and no ShareConvert, and is exact on all of Z_L.

    Security (semi-honest, one corrupted party). Server j sees r_j, uniform Z_p shares of r', x, z_j
    and its common randomness with the other server: x = a + r is uniform and independent of a,
    because r_{1-j} is uniform and unknown to server j; z_j is a fresh uniform share. The producer knows
    r and sees only PrivateCompare's messages: as in PETS, values uniform on Z_p^* with at most one
    zero, at a uniform position, and whether there is a zero tells it beta', uniform because beta is
    hidden from it. Nothing depends on a.

    Cost: 3 rounds (the opening of x and the dealing of r's bits are independent); 213 bytes per
    element: 16 (open x) + 63 (server1's Z_p shares of r') + 126 (PrivateCompare on 63 bits) + 8
    (server1's share of z). PETS Alg. 6: 8 rounds, 664 bytes; ``drelu_pets``: 7 rounds, 448 bytes.
    """
    if method == "pets":
        return drelu_pets(ctx, a)
    _check_method(method)
    return _one_compare(ctx, a, times_a=False)[0]


def _check_method(method: str) -> None:
    if method not in DRELU_METHODS:
        raise ValueError(f"unknown DReLU method {method!r}; choose one of {', '.join(DRELU_METHODS)}")


def _one_compare(ctx: Context, a: Shared, times_a: bool) -> tuple[Shared, Shared | None]:
    """``drelu``'s default method: (shares of DReLU(a), shares of DReLU(a) * a if ``times_a``)."""
    n = int(np.prod(a.shape, dtype=np.int64))
    if n == 0:
        return shared(a.share, a.shape), (shared(a.share, a.shape) if times_a else None)
    # 1. the mask r (the producer's r, the servers' r_j) and Z_p shares of the bits of r'
    r = random_shares(ctx, n)
    x = beta = None
    if ctx.is_server:
        # 2. open x = a + r; the other server's x_j is received only after r's bit shares are drawn
        # or received, so the wait for it overlaps that work (sharing.exchange would wait at once)
        x_j = flat(a) + r
        ctx.send(ctx.other_server, x_j)
        beta = dealer.common_stream(ctx).uint8(n) & np.uint8(1)
    r_bits = deal_bits(ctx, None if r is None or ctx.is_server else r & _LOW63, n, rows=63)
    if ctx.is_server:
        x = x_j + recv_array(ctx, ctx.other_server, np.uint64, (n,))
    # 3. beta' = beta XOR (r' > x') to the producer
    beta1 = private_compare(ctx, r_bits, None if x is None else x & _LOW63, beta, n, bits=63)
    # 4. z = beta' XOR MSB(r) from the producer, and z r for the product with a = x - r
    z = None if beta1 is None else beta1.astype(np.uint64) ^ (r >> _TOP)
    if times_a:
        dealt = deal(ctx, None if z is None else np.concatenate([z, z * r]), 2 * n)
        z_j, zr_j = (None, None) if dealt is None else (dealt[:n], dealt[n:])
    else:
        z_j = deal(ctx, z, n)
    if not ctx.is_server:
        return shared(None, a.shape), (shared(None, a.shape) if times_a else None)
    # 5. DReLU = z XOR c for c = 1 XOR beta XOR MSB(x), a bit public to the servers
    c = _ONE ^ beta.astype(np.uint64) ^ (x >> _TOP)
    bit = shared(rerandomize(ctx, xor_public(ctx, z_j, c)), a.shape)
    if not times_a:
        return bit, None
    # 6. z a = z x - z r; DReLU * a = z a where c = 0, a - z a where c = 1
    za_j = z_j * x - zr_j
    product = np.where(c == 1, flat(a) - za_j, za_j)
    return bit, shared(rerandomize(ctx, product), a.shape)


def drelu_pets(ctx: Context, a: Shared) -> Shared:
    """DReLU (PETS Alg. 6): shares of 1 if a >= 0 else 0 (as ring integers), for |a| < 2^62.

    ShareConvert(2a), then ComputeMSB, then 1 - MSB. Exact for |a| < 2^62 (a read as signed): beyond,
    2a overflows and the sign flips. 2a is even, so ShareConvert's precondition 2a != L - 1 always
    holds. DReLU(0) = 1.
    Cost: 7 rounds (ComputeMSB's first message does not wait for ShareConvert); 448 bytes per element.
    PETS: 8 rounds, 664 bytes.
    """
    doubled = shared(None if a.share is None else a.share << _ONE, a.shape)
    msb = compute_msb(ctx, share_convert(ctx, doubled))
    if not ctx.is_server:
        return shared(None, a.shape)
    return shared(add_public(ctx, np.negative(msb.share), 1), a.shape)


# ---- ReLU, SelectShare (PETS Alg. 7, 2) --------------------------------------------------------------
def relu(ctx: Context, a: Shared, method: str = "falcon") -> tuple[Shared, Shared]:
    """ReLU (PETS Alg. 7): (shares of max(a, 0), shares of DReLU(a)); the bit is kept for backprop.

    ReLU(a) = DReLU(a) * a. Default method: the product comes with ``drelu``'s single comparison for
    8 more bytes and no round. There the servers hold the public x = a + r and the producer knows r
    and the bit z it deals (DReLU = z XOR c, c public to the servers), so it also deals shares of
    z r: z a = z x - z r is local, and DReLU * a is z a where c = 0 and a - z a where c = 1. The
    producer sees nothing new and the servers get one more uniform share. Exact for every a.
    ``method="pets"``: ``drelu_pets``, then one Beaver product of the 0/1 bit with a (no truncation:
    the bit carries no fractional bits; gives a a Beaver mask if it had none); exact for |a| < 2^62.
    Cost: 3 rounds, 221 bytes per element (213 + 8); "pets": 8 rounds, 488 bytes (448 + 40). PETS:
    10 rounds, 704 bytes.
    """
    if method == "pets":
        bit = drelu_pets(ctx, a)
        value = pond.product(ctx, bit, a, pond.MUL)
        return shared(rerandomize(ctx, value.share), value.shape), bit
    _check_method(method)
    bit, value = _one_compare(ctx, a, times_a=True)
    return value, bit


def select_share(ctx: Context, alpha: Shared, x: Shared, y: Shared) -> Shared:
    """SelectShare (PETS Alg. 2): shares of x if alpha = 0, y if alpha = 1 (alpha a shared 0/1 integer).

    x + alpha (y - x): one Beaver product, untruncated. Shapes broadcast as in NumPy.
    Cost: 40 bytes per element (4 opened ring elements and the producer's c1), 2 rounds by PETS' count,
    1 counted (the producer's message and the opening are independent).
    """
    shape = tuple(np.broadcast_shapes(alpha.shape, x.shape, y.shape))
    diff = shared(None if y.share is None else y.share - x.share, tuple(np.broadcast_shapes(x.shape, y.shape)))
    moved = pond.product(ctx, alpha, diff, pond.MUL)
    if not ctx.is_server:
        return shared(None, shape)
    return shared(rerandomize(ctx, np.broadcast_to(x.share, shape) + moved.share), shape)


# ---- Division (PETS Alg. 8) --------------------------------------------------------------------------
def division(ctx: Context, x: Shared, y: Shared, bits: int) -> Shared:
    """Division (PETS Alg. 8): shares of floor(x / y) by long division, one quotient bit per step.

    x, y: shared ring integers (same shape), read as signed. Preconditions: 0 <= x < 2^bits * y,
    y > 0, x < 2^63 and 2^(bits - 1) y <= 2^63 (every DReLU input x - u - 2^i y then lies in
    [-2^63, 2^63), where DReLU is exact).
    For i = bits - 1 .. 0: beta_i = DReLU(x - u - 2^i y), u += beta_i 2^i y, q += beta_i 2^i.
    Cost: ``bits`` sequential steps of one DReLU and one product; y's Beaver mask is opened once and
    reused, so 237 bytes per element and step after the first (+16 for y's mask), 4 rounds per step.
    """
    if x.shape != y.shape:
        raise ValueError(f"division needs operands of one shape, got {x.shape} and {y.shape}")
    if not 1 <= bits <= 63:
        raise ValueError(f"division computes 1..63 quotient bits, got {bits}")
    shape = x.shape
    on = ctx.is_server
    u = np.zeros(shape, np.uint64) if on else None
    q = np.zeros(shape, np.uint64) if on else None
    for i in reversed(range(bits)):
        scale = np.uint64(1 << i)
        z = shared(x.share - u - y.share * scale if on else None, shape)
        beta = drelu(ctx, z)
        k = pond.product(ctx, beta, y, pond.MUL)
        if on:
            u += k.share * scale
            q += beta.share * scale
    return shared(rerandomize(ctx, q) if on else None, shape)
