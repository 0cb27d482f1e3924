/* _zp.c: the Z_p kernels of SecureNN (p = 67), linked into the same extension as _ring.c
 * (see _ring_build.py). */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* ---- Z_p kernels of SecureNN (p = 67) ------------------------------------------------------------
 * The hot spots of PrivateCompare and its dealing, bit-for-bit equal to the NumPy kernels of
 * mpcnp/zp.py (which documents the arithmetic): one byte per Z_p element, the k <= 64 bits
 * of n values as k rows of n bytes (row 0 the most significant bit, rows ld bytes apart). Loops run
 * over the elements, innermost, so the compiler vectorises them on bytes. */
#define ZP_P 67
#define ZP_TILE 256 /* elements per tile of compare_masks: two 64 x 256 byte tiles stay in L1 */
#define ZP_RUN 64 /* draws per rejection check: a run with a rejection (at most 6%) is scanned again */
#define ZP_SPAN 2048 /* elements per pass of bit_shares and any_zero: a span of x (16 KiB) stays in L1 */

#define ZP_INLINE static inline __attribute__((always_inline))
#define MIN(x, y) ((x) < (y) ? (x) : (y))

/* t mod p for a byte t < 2p: t - p wraps above t exactly when t < p. */
ZP_INLINE uint8_t zp_reduce(uint8_t t)
{
    uint8_t u = (uint8_t)(t - ZP_P);
    return u < t ? u : t;
}

/* out[k] = offset + floor(v[k] * m / 2^16); the positions k whose v[k] * m mod 2^16 < 2^16 mod m
 * (rejected) go to rejected[], in increasing order; returns their count. 2 <= m <= 256 - offset. */
ZP_INLINE int64_t zp_uniform_body(const uint16_t *restrict v, int64_t n, uint32_t m, uint8_t offset,
                                  uint8_t *restrict out, int64_t *restrict rejected)
{
    const uint16_t below = (uint16_t)(65536u % m);
    int64_t count = 0;
    for (int64_t k0 = 0; k0 < n; k0 += ZP_RUN) {
        const int64_t k1 = MIN(n, k0 + ZP_RUN);
        uint8_t any = 0;
        for (int64_t k = k0; k < k1; k++) {
            const uint32_t t = (uint32_t)v[k] * m;
            out[k] = (uint8_t)((t >> 16) + offset);
            any |= (uint8_t)((uint16_t)t < below);
        }
        if (any)
            for (int64_t k = k0; k < k1; k++)
                if ((uint16_t)((uint32_t)v[k] * m) < below)
                    rejected[count++] = k;
    }
    return count;
}

/* planes[q][e] = byte q (0 the least significant) of v[e], for e < len. */
ZP_INLINE void zp_byte_planes(const uint64_t *restrict v, int len, uint8_t planes[8][ZP_SPAN])
{
    for (int q = 0; q < 8; q++)
        for (int e = 0; e < len; e++)
            planes[q][e] = (uint8_t)(v[e] >> (8 * q));
}

/* share1 = (bits of x) - share0 mod p: server1's Z_p shares of the low `rows` bits of x[0:n]. */
ZP_INLINE void zp_bit_shares_body(const uint64_t *restrict x, int64_t n, int rows,
                                  const uint8_t *restrict share0, int64_t ld0, uint8_t *restrict share1,
                                  int64_t ld1)
{
    uint8_t planes[8][ZP_SPAN];
    for (int64_t e0 = 0; e0 < n; e0 += ZP_SPAN) {
        const int len = (int)MIN(n - e0, ZP_SPAN);
        zp_byte_planes(x + e0, len, planes);
        for (int i = 0; i < rows; i++) {
            const int bit = rows - 1 - i;
            const uint8_t *restrict xq = planes[bit >> 3];
            const uint8_t *restrict s0 = share0 + i * ld0 + e0;
            uint8_t *restrict s1 = share1 + i * ld1 + e0;
            for (int e = 0; e < len; e++)
                s1[e] = zp_reduce((uint8_t)((uint8_t)((xq[e] >> (bit & 7)) & 1u) + ZP_P - s0[e]));
        }
    }
}

/* out[e] = 1 if d0[i][e] + d1[i][e] = 0 mod p for some row i < rows, else 0. */
ZP_INLINE void zp_any_zero_body(int rows, int64_t n, const uint8_t *restrict d0, int64_t ld0,
                                const uint8_t *restrict d1, int64_t ld1, uint8_t *restrict out)
{
    for (int64_t e0 = 0; e0 < n; e0 += ZP_SPAN) {
        const int64_t len = MIN(n - e0, ZP_SPAN);
        uint8_t *restrict acc = out + e0;
        memset(acc, 0, (size_t)len);
        for (int i = 0; i < rows; i++) {
            const uint8_t *restrict a = d0 + i * ld0 + e0, *restrict b = d1 + i * ld1 + e0;
            for (int64_t e = 0; e < len; e++) {
                const uint8_t t = (uint8_t)(a[e] + b[e]); /* < 2p: zero mod p is 0 or p */
                acc[e] |= (uint8_t)((t == 0) | (t == ZP_P));
            }
        }
    }
}

/* a * s mod p for a, s < p, in 16 bits (Barrett: q undershoots a s / p by less than 3). */
ZP_INLINE uint8_t zp_mul(uint8_t a, uint8_t s)
{
    uint16_t t = (uint16_t)(a * s);
    const uint16_t q = (uint16_t)((uint16_t)((t >> 6) * 61u) >> 6);
    t = (uint16_t)(t - q * ZP_P);
    t = t >= ZP_P ? (uint16_t)(t - ZP_P) : t;
    t = t >= ZP_P ? (uint16_t)(t - ZP_P) : t;
    return (uint8_t)t;
}

/* Server j's PrivateCompare message for m comparisons of `rows`-bit values (PETS Alg. 3, steps 1-15;
 * see zp.compare_masks_numpy): x the Z_p shares of the bits of the shared value, r the public
 * comparands, beta the common bits, s / u the common multipliers / offsets, g the rotations.
 * 1 <= rows <= 64. */
ZP_INLINE void zp_compare_masks_body(int j, int rows, int64_t m, const uint8_t *restrict x, int64_t ldx,
                                     const uint64_t *restrict r, const uint8_t *restrict beta,
                                     const uint8_t *restrict s, int64_t lds, const uint8_t *restrict u,
                                     int64_t ldu, const uint8_t *restrict g, uint8_t *restrict d, int64_t ldd)
{
    static _Thread_local uint8_t tiles[2][64][ZP_TILE];
    uint8_t t_bytes[8][ZP_SPAN], prefix[ZP_TILE], flip[ZP_TILE], t_term[ZP_TILE], known[ZP_TILE];
    uint64_t t[ZP_TILE];
    const uint8_t jj = (uint8_t)j;
    const uint64_t top = rows == 64 ? UINT64_MAX : (UINT64_C(1) << rows) - 1;
    int stages = 0;
    while ((1 << stages) < rows)
        stages++;

    for (int64_t e0 = 0; e0 < m; e0 += ZP_TILE) {
        const int len = (int)MIN(m - e0, ZP_TILE);
        uint8_t(*c)[ZP_TILE] = tiles[0], (*next)[ZP_TILE] = tiles[1];
        for (int e = 0; e < len; e++) {
            const uint8_t b = beta[e0 + e];
            t[e] = r[e0 + e] + b; /* 1. beta = 1: compare with t = r + 1, sign flipped */
            prefix[e] = 0;
            flip[e] = (uint8_t)(0u - b);
            t_term[e] = (uint8_t)(j && !b ? 2 : 0); /* server1's public j (1 +- t_i) where t_i = 1 */
            known[e] = (uint8_t)(0u - (uint8_t)(b && r[e0 + e] == top)); /* 10-12. x <= r holds */
        }
        zp_byte_planes(t, len, t_bytes);
        for (int i = 0; i < rows; i++) {
            const int bit = rows - 1 - i;
            const uint8_t *restrict tq = t_bytes[bit >> 3];
            const uint8_t *restrict xi = x + i * ldx + e0;
            const uint8_t *restrict si = s + i * lds + e0, *restrict ui = u + i * ldu + e0;
            const uint8_t planted = (uint8_t)(j == 0 && i > 0); /* the known case: one zero, in row 0 */
            uint8_t *restrict ci = c[i];
            for (int e = 0; e < len; e++) {
                const uint8_t tm = (uint8_t)(0u - ((tq[e] >> (bit & 7)) & 1u)); /* 0xFF where t_i = 1 */
                const uint8_t xv = xi[e], nx = zp_reduce((uint8_t)(ZP_P - xv));
                /* 5, 8. w_i = x_i XOR t_i; 6, 9. c_i = +-(j t_i - x_i) + j (1 +- t_i) + sum of w above */
                const uint8_t w = (uint8_t)((zp_reduce((uint8_t)(nx + jj)) & tm) | (xv & (uint8_t)~tm));
                uint8_t cv = zp_reduce((uint8_t)(((xv & flip[e]) | (nx & (uint8_t)~flip[e])) + prefix[e]));
                cv = zp_reduce((uint8_t)(cv + ((t_term[e] & tm) | (jj & (uint8_t)~tm))));
                cv = (uint8_t)((cv & (uint8_t)~known[e]) | (planted & known[e]));
                prefix[e] = zp_reduce((uint8_t)(prefix[e] + w));
                /* 13-14. offset by +-u_i, multiply by s_i */
                const uint8_t off = jj ? zp_reduce((uint8_t)(ZP_P - ui[e])) : ui[e];
                ci[e] = zp_mul(zp_reduce((uint8_t)(cv + off)), si[e]);
            }
        }
        /* 15. rotate element e's column by g[e]: stage b moves it by 2^b rows if bit b of g[e] is set */
        for (int b = 0; b < stages; b++) {
            const int size = 1 << b;
            uint8_t moves[ZP_TILE];
            for (int e = 0; e < len; e++)
                moves[e] = (uint8_t)(0u - ((g[e0 + e] >> b) & 1u));
            for (int i = 0; i < rows; i++) {
                const uint8_t *restrict from = c[i >= size ? i - size : i - size + rows];
                const uint8_t *restrict stay = c[i];
                uint8_t *restrict to = next[i];
                for (int e = 0; e < len; e++)
                    to[e] = (uint8_t)((from[e] & moves[e]) | (stay[e] & (uint8_t)~moves[e]));
            }
            uint8_t(*swap)[ZP_TILE] = c;
            c = next;
            next = swap;
        }
        for (int i = 0; i < rows; i++)
            memcpy(d + i * ldd + e0, c[i], (size_t)len);
    }
}

/* Each kernel compiled three times, for AVX-512BW (64-byte vectors of bytes), AVX2 and the baseline of
 * the target (SSE2 on x86-64), and chosen at run time: the byte arithmetic runs 2-3x faster on the
 * wider vectors (Zen4, 63 x 8192 elements: compare_masks 0.30 / 0.51 / 0.63 ms, the sampler's mapping
 * 0.09 / 0.14 / 0.29 ms for AVX-512 / AVX2 / SSE2). */
#define ZP_KERNELS(sfx, attr)                                                                       \
    attr static int64_t zp_uniform_##sfx(const uint16_t *v, int64_t n, uint32_t m, uint8_t offset,   \
                                         uint8_t *out, int64_t *rejected)                            \
    {                                                                                               \
        return zp_uniform_body(v, n, m, offset, out, rejected);                                     \
    }                                                                                               \
    attr static void zp_bit_shares_##sfx(const uint64_t *x, int64_t n, int rows, const uint8_t *share0, \
                                         int64_t ld0, uint8_t *share1, int64_t ld1)                  \
    {                                                                                               \
        zp_bit_shares_body(x, n, rows, share0, ld0, share1, ld1);                                   \
    }                                                                                               \
    attr static void zp_any_zero_##sfx(int rows, int64_t n, const uint8_t *d0, int64_t ld0,          \
                                       const uint8_t *d1, int64_t ld1, uint8_t *out)                 \
    {                                                                                               \
        zp_any_zero_body(rows, n, d0, ld0, d1, ld1, out);                                           \
    }                                                                                               \
    attr static void zp_compare_masks_##sfx(int j, int rows, int64_t m, const uint8_t *x, int64_t ldx, \
                                            const uint64_t *r, const uint8_t *beta, const uint8_t *s, \
                                            int64_t lds, const uint8_t *u, int64_t ldu,              \
                                            const uint8_t *g, uint8_t *d, int64_t ldd)               \
    {                                                                                               \
        zp_compare_masks_body(j, rows, m, x, ldx, r, beta, s, lds, u, ldu, g, d, ldd);              \
    }

ZP_KERNELS(portable, )
#if defined(__x86_64__) && defined(__GNUC__)
ZP_KERNELS(avx2, __attribute__((target("avx2"))))
ZP_KERNELS(avx512, __attribute__((target("avx512f,avx512bw"))))
#endif

/* 2: AVX-512BW, 1: AVX2, 0: neither (or not x86-64). */
static int zp_level(void)
{
    static atomic_int level = -1;
    int v = atomic_load_explicit(&level, memory_order_relaxed);
    if (v < 0) {
        v = 0;
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init(); /* libgcc's checks also require the OS to save the vector state (XCR0) */
        v = __builtin_cpu_supports("avx512bw") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
        atomic_store_explicit(&level, v, memory_order_relaxed);
    }
    return v;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ZP_DISPATCH(name, ...)                                                                      \
    (zp_level() == 2 ? name##_avx512(__VA_ARGS__) : zp_level() == 1 ? name##_avx2(__VA_ARGS__)        \
                                                                     : name##_portable(__VA_ARGS__))
#else
#define ZP_DISPATCH(name, ...) name##_portable(__VA_ARGS__)
#endif

int64_t mpcnp_zp_uniform(const uint16_t *v, int64_t n, uint32_t m, uint8_t offset, uint8_t *out,
                         int64_t *rejected)
{
    return ZP_DISPATCH(zp_uniform, v, n, m, offset, out, rejected);
}

void mpcnp_zp_bit_shares(const uint64_t *x, int64_t n, int rows, const uint8_t *share0, int64_t ld0,
                         uint8_t *share1, int64_t ld1)
{
    ZP_DISPATCH(zp_bit_shares, x, n, rows, share0, ld0, share1, ld1);
}

void mpcnp_zp_any_zero(int rows, int64_t n, const uint8_t *d0, int64_t ld0, const uint8_t *d1, int64_t ld1,
                       uint8_t *out)
{
    ZP_DISPATCH(zp_any_zero, rows, n, d0, ld0, d1, ld1, out);
}

void mpcnp_zp_compare_masks(int j, int rows, int64_t m, const uint8_t *x, int64_t ldx, const uint64_t *r,
                            const uint8_t *beta, const uint8_t *s, int64_t lds, const uint8_t *u, int64_t ldu,
                            const uint8_t *g, uint8_t *d, int64_t ldd)
{
    ZP_DISPATCH(zp_compare_masks, j, rows, m, x, ldx, r, beta, s, lds, u, ldu, g, d, ldd);
}
