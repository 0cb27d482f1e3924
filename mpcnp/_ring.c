/* Ring GEMM over Z_2^64: C_i = A_i @ B_i with uint64 arithmetic wrapping mod 2^64.
 *
 * GotoBLAS/BLIS structure: for each NC-wide column block of B and KC-deep slice of k, B is packed into
 * KC x NR micro-panels; for each MC-tall row block of A, A is packed into MR x KC micro-panels; a
 * micro-kernel then multiplies one A micro-panel by one B micro-panel into an MR x NR register tile.
 * Packed panels are zero-padded to whole tiles, so the micro-kernel never branches on edges; edge tiles
 * are computed into a scratch tile and only their valid part is written to C.
 *
 * Skinny products would spend as much on packing as on multiplying and pad the tile up to 16x, so:
 * an operand reused over few micro-panels is read in place by the micro-kernel (only an edge panel is
 * packed), up to 3 rows go row by row (C row += a_ip * B row), up to 4 columns as dot products along k.
 *
 * Every kernel has an AVX-512 variant (vpmullq; chosen at run time, compiled with a target attribute so
 * the module itself needs no -march flag) and a portable C one. Integer arithmetic is exact, so the
 * variants, paths and thread splits all give bit-identical results.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Register tile: 8 rows of A broadcast against two zmm of B (16 columns) -> 16 zmm accumulators,
 * leaving registers for B and the broadcast; it amortises each B load over 8 multiplies. */
#define MR 8
#define NR 16
/* The A block (MC x KC x 8 B = 256 KiB) stays in L2 (1 MiB) and the B micro-panel (KC x NR x 8 B =
 * 32 KiB) in L1/L2 while it is reused over MC / MR tiles; the packed B block (KC x NC, 4 MiB) in L3.
 * With 16 multiplies per 192 bytes loaded the micro-kernel barely depends on where they sit: KC from
 * 128 to 512 and MC from 64 to 256 measured within noise of each other on Zen4. */
#define KC 256
#define MC 128
#define NC 2048
/* The micro-kernel reads an operand in place (no packing) when it is reused over few micro-panels of
 * the other: A when n <= A_IN_PLACE_N; B when m <= B_IN_PLACE_M, or m <= B_IN_PLACE_M_L2 and B fits in
 * half of L2. Beyond that, packing pays: a micro-panel of a large B read in place walks down its rows,
 * one new page per row, which the hardware prefetcher does not follow (m = 32, n = k = 1024: 15 G/s
 * in place, 19 packed), and A read in place at power-of-two pitches is slower (512^3, 1024^3). */
#define A_IN_PLACE_N 256
#define B_IN_PLACE_M 16
#define B_IN_PLACE_M_L2 64
#define B_L2_ELEMS (64 * 1024)
#define AXPY_MAX_M 3 /* up to this many rows (at most 3), C row += a_ip * B row beats a padded tile */
#define DOT_MAX_N 4 /* up to this many (at most 4) columns, dot products along k beat a padded tile */
#define AXPY_NB 512 /* columns of C per row pass: 3 rows x 512 x 8 B = 12 KiB stay in L1 */
#define KD 2048 /* k chunk of the dot products: bounds the gathered copies of strided operands */

/* Below this many multiply-adds per thread, starting a thread (tens of us, more when the other core
 * is busy) costs more than it saves. */
#define MIN_WORK_PER_THREAD (1LL << 22) /* about 0.2 ms of work */
#define MAX_THREADS 256
#define MIN_GRAIN 32 /* tiles a thread claims at a time, at least (256 rows) */
#define ALIGN 64

#define MIN(x, y) ((x) < (y) ? (x) : (y))
#define MAX(x, y) ((x) > (y) ? (x) : (y))

_Static_assert(AXPY_MAX_M <= 3 && DOT_MAX_N <= 4, "the row and dot kernels handle at most 3 rows, 4 columns");

typedef void (*ukernel_fn)(int64_t kc, const uint64_t *a, int64_t a_rs, int64_t a_cs,
                           const uint64_t *b, int64_t b_rs, uint64_t *c, int64_t ldc, int accumulate);
typedef void (*axpy_fn)(const uint64_t *a, int64_t a_rs, int64_t a_cs, const uint64_t *b, int64_t b_rs,
                        uint64_t *c, int64_t ldc, int64_t m, int64_t n, int64_t k);
typedef void (*dot4_fn)(const uint64_t *restrict x, const uint64_t *const *y, int64_t len, uint64_t *out);

typedef struct {
    ukernel_fn ukernel;
    axpy_fn axpy;
    dot4_fn dot4;
} kernels;

/* ---- Micro-kernels -------------------------------------------------------------------------- */
/* c[0:MR, 0:NR] (row stride ldc) = (accumulate ? c : 0) + A @ B over kc >= 1 steps, with
 * A[r, p] = a[r * a_rs + p * a_cs] and B[p, j] = b[p * b_rs + j]. Packed panels are the case
 * (a_rs, a_cs, b_rs) = (1, MR, NR); skinny products pass the operands in place. */

/* Portable: 4x4 sub-tiles so the 16 accumulators fit the general registers of x86-64 and aarch64. */
static void ukernel_portable(int64_t kc, const uint64_t *a, int64_t a_rs, int64_t a_cs,
                             const uint64_t *b, int64_t b_rs, uint64_t *c, int64_t ldc, int accumulate)
{
    for (int i0 = 0; i0 < MR; i0 += 4) {
        for (int j0 = 0; j0 < NR; j0 += 4) {
            uint64_t acc[4][4] = {{0}};
            const uint64_t *ap = a + i0 * a_rs, *bp = b + j0;
            for (int64_t p = 0; p < kc; p++, ap += a_cs, bp += b_rs)
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++)
                        acc[i][j] += ap[i * a_rs] * bp[j];
            for (int i = 0; i < 4; i++) {
                uint64_t *ci = c + (i0 + i) * ldc + j0;
                for (int j = 0; j < 4; j++)
                    ci[j] = accumulate ? ci[j] + acc[i][j] : acc[i][j];
            }
        }
    }
}

#if defined(__x86_64__)
#define AVX512_TARGET __attribute__((target("avx512f,avx512dq")))

#define ROW_FMA(r)                                                             \
    do {                                                                       \
        __m512i ar = _mm512_set1_epi64((long long)a[(r) * a_rs]);              \
        c##r##0 = _mm512_add_epi64(c##r##0, _mm512_mullo_epi64(ar, b0));       \
        c##r##1 = _mm512_add_epi64(c##r##1, _mm512_mullo_epi64(ar, b1));       \
    } while (0)

#define STORE_ROW(r)                                                           \
    do {                                                                       \
        uint64_t *cr = c + (r) * ldc;                                          \
        if (accumulate) {                                                      \
            c##r##0 = _mm512_add_epi64(c##r##0, _mm512_loadu_si512(cr));       \
            c##r##1 = _mm512_add_epi64(c##r##1, _mm512_loadu_si512(cr + 8));   \
        }                                                                      \
        _mm512_storeu_si512(cr, c##r##0);                                      \
        _mm512_storeu_si512(cr + 8, c##r##1);                                  \
    } while (0)

static inline __attribute__((always_inline, target("avx512f,avx512dq"))) void
ukernel_avx512_body(int64_t kc, const uint64_t *ap, int64_t a_rs, int64_t a_cs,
                    const uint64_t *bp, int64_t b_rs, uint64_t *c, int64_t ldc, int accumulate)
{
    __m512i z = _mm512_setzero_si512();
    __m512i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    __m512i c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
    /* C is far from L1 (it is swept once per KC slice): start fetching the whole tile now so the
     * misses overlap the k loop instead of stalling the final loads. */
    for (int r = 0; r < MR; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 8), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + NR - 1), _MM_HINT_T0);
    }
    /* A do-while: with a for loop GCC 12 copies every accumulator between registers on each
     * iteration (about a third slower). */
    do {
        const uint64_t *a = ap;
        __m512i b0 = _mm512_loadu_si512((const void *)bp);
        __m512i b1 = _mm512_loadu_si512((const void *)(bp + 8));
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3);
        ROW_FMA(4); ROW_FMA(5); ROW_FMA(6); ROW_FMA(7);
        ap += a_cs;
        bp += b_rs;
    } while (--kc);
    STORE_ROW(0); STORE_ROW(1); STORE_ROW(2); STORE_ROW(3);
    STORE_ROW(4); STORE_ROW(5); STORE_ROW(6); STORE_ROW(7);
}

AVX512_TARGET
static void ukernel_avx512(int64_t kc, const uint64_t *a, int64_t a_rs, int64_t a_cs,
                           const uint64_t *b, int64_t b_rs, uint64_t *c, int64_t ldc, int accumulate)
{
    if (a_rs == 1 && a_cs == MR && b_rs == NR) /* packed: constant strides free registers */
        ukernel_avx512_body(kc, a, 1, MR, b, NR, c, ldc, accumulate);
    else
        ukernel_avx512_body(kc, a, a_rs, a_cs, b, b_rs, c, ldc, accumulate);
}
#endif /* __x86_64__ */

/* ---- Skinny kernels ------------------------------------------------------------------------- */
/* Written once in plain C and compiled twice: GCC vectorises their inner loops with vpmullq inside the
 * AVX-512 copies. */

/* c[0:R, 0:nb] = A[0:R, 0:k] @ B[0:k, 0:nb], R <= 3, for unit-stride rows of B: the C rows stay in L1
 * while the rows of B stream past once. */
static inline __attribute__((always_inline)) void
axpy_rows(const int R, const uint64_t *a, int64_t a_rs, int64_t a_cs, const uint64_t *b, int64_t b_rs,
          uint64_t *c, int64_t ldc, int64_t nb, int64_t k)
{
    uint64_t *restrict c0 = c;
    uint64_t *restrict c1 = R > 1 ? c + ldc : c;
    uint64_t *restrict c2 = R > 2 ? c + 2 * ldc : c;
    for (int r = 0; r < R; r++)
        memset(c + r * ldc, 0, (size_t)nb * sizeof *c);
    for (int64_t p = 0; p < k; p++) {
        const uint64_t *restrict brow = b + p * b_rs;
        const uint64_t *ap = a + p * a_cs;
        uint64_t a0 = ap[0], a1 = R > 1 ? ap[a_rs] : 0, a2 = R > 2 ? ap[2 * a_rs] : 0;
        for (int64_t j = 0; j < nb; j++) {
            uint64_t bv = brow[j];
            c0[j] += a0 * bv;
            if (R > 1) c1[j] += a1 * bv;
            if (R > 2) c2[j] += a2 * bv;
        }
    }
}

/* out[q] = sum_p x[p] * y[q][p], q < 4: four dot products share each load of x. */
static inline __attribute__((always_inline)) void
dot4_body(const uint64_t *restrict x, const uint64_t *const *y, int64_t len, uint64_t *out)
{
    const uint64_t *restrict y0 = y[0], *restrict y1 = y[1], *restrict y2 = y[2], *restrict y3 = y[3];
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t p = 0; p < len; p++) {
        uint64_t xv = x[p];
        s0 += xv * y0[p];
        s1 += xv * y1[p];
        s2 += xv * y2[p];
        s3 += xv * y3[p];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

/* C[0:m, 0:n] = A @ B for m <= AXPY_MAX_M = 3 and unit-stride rows of B. */
#define SKINNY_KERNELS(sfx, attr)                                                                   \
    attr static void axpy_##sfx(const uint64_t *a, int64_t a_rs, int64_t a_cs, const uint64_t *b,   \
                                int64_t b_rs, uint64_t *c, int64_t ldc, int64_t m, int64_t n,       \
                                int64_t k)                                                          \
    {                                                                                               \
        for (int64_t j = 0; j < n; j += AXPY_NB) {                                                  \
            int64_t nb = MIN(AXPY_NB, n - j);                                                       \
            if (m == 3)                                                                             \
                axpy_rows(3, a, a_rs, a_cs, b + j, b_rs, c + j, ldc, nb, k);                        \
            else if (m == 2)                                                                        \
                axpy_rows(2, a, a_rs, a_cs, b + j, b_rs, c + j, ldc, nb, k);                        \
            else                                                                                    \
                axpy_rows(1, a, a_rs, a_cs, b + j, b_rs, c + j, ldc, nb, k);                        \
        }                                                                                           \
    }                                                                                               \
    attr static void dot4_##sfx(const uint64_t *restrict x, const uint64_t *const *y, int64_t len,  \
                                uint64_t *out)                                                      \
    {                                                                                               \
        dot4_body(x, y, len, out);                                                                  \
    }

SKINNY_KERNELS(portable, )
#if defined(__x86_64__)
SKINNY_KERNELS(avx512, AVX512_TARGET)
#endif

int mpcnp_has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* libgcc's check also requires the OS to save the zmm state (XCR0). */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

/* ---- Per-thread scratch buffers, grown on demand and reused across the batch --------------- */

enum { WS_AP, WS_BP, WS_AT, WS_BT, WS_SLOTS };

typedef struct {
    uint64_t *buf[WS_SLOTS];
    size_t cap[WS_SLOTS];
    int failed;
} workspace;

/* A 64-byte aligned buffer of at least `count` uint64 in `slot`, or NULL (and ws->failed) on failure. */
static uint64_t *ws_get(workspace *ws, int slot, size_t count)
{
    if (ws->cap[slot] < count) {
        free(ws->buf[slot]);
        size_t bytes = (count * sizeof(uint64_t) + ALIGN - 1) / ALIGN * ALIGN;
        ws->buf[slot] = aligned_alloc(ALIGN, bytes);
        ws->cap[slot] = ws->buf[slot] ? count : 0;
        ws->failed |= ws->buf[slot] == NULL;
    }
    return ws->buf[slot];
}

static void ws_free(workspace *ws)
{
    for (int s = 0; s < WS_SLOTS; s++)
        free(ws->buf[s]);
}

/* ---- Packing ------------------------------------------------------------------------------- */

/* a[0:mc, 0:kc] (strides rs, cs) -> ceil(mc/MR) micro-panels of kc x MR, rows past mc zeroed. */
static void pack_a(const uint64_t *a, int64_t rs, int64_t cs, int64_t mc, int64_t kc,
                   uint64_t *restrict ap)
{
    for (int64_t i = 0; i < mc; i += MR, ap += MR * kc) {
        int64_t mr = MIN(MR, mc - i);
        for (int64_t r = 0; r < mr; r++) {
            const uint64_t *row = a + (i + r) * rs;
            if (cs == 1)
                for (int64_t p = 0; p < kc; p++)
                    ap[p * MR + r] = row[p];
            else
                for (int64_t p = 0; p < kc; p++)
                    ap[p * MR + r] = row[p * cs];
        }
        for (int64_t r = mr; r < MR; r++)
            for (int64_t p = 0; p < kc; p++)
                ap[p * MR + r] = 0;
    }
}

/* b[0:kc, 0:nc] (strides rs, cs) -> ceil(nc/NR) micro-panels of kc x NR, columns past nc zeroed. */
static void pack_b(const uint64_t *b, int64_t rs, int64_t cs, int64_t kc, int64_t nc,
                   uint64_t *restrict bp)
{
    int64_t full = nc / NR * NR;
    if (cs == 1) { /* row by row: sequential reads that the prefetcher can follow */
        for (int64_t p = 0; p < kc; p++) {
            const uint64_t *row = b + p * rs;
            for (int64_t j = 0; j < full; j += NR)
                memcpy(bp + j * kc + p * NR, row + j, NR * sizeof *bp);
        }
    } else {
        for (int64_t j = 0; j < full; j += NR)
            for (int64_t p = 0; p < kc; p++)
                for (int64_t q = 0; q < NR; q++)
                    bp[j * kc + p * NR + q] = b[p * rs + (j + q) * cs];
    }
    if (full < nc)
        for (int64_t p = 0; p < kc; p++)
            for (int64_t q = 0; q < NR; q++)
                bp[full * kc + p * NR + q] = full + q < nc ? b[p * rs + (full + q) * cs] : 0;
}

/* ---- One product C[0:m, 0:n] (row stride ldc) = A @ B, on one thread ----------------------- */

/* Tiled product. A is packed unless it is reused over few B micro-panels and has a unit stride, B
 * unless it is reused over few A micro-panels and has unit-stride rows (see A_IN_PLACE_N); an operand
 * read in place still has its partial edge panel packed (a whole tile would run past the matrix). */
static void gemm_tiled(const kernels *kn, const uint64_t *a, int64_t a_rs, int64_t a_cs,
                       const uint64_t *b, int64_t b_rs, int64_t b_cs,
                       uint64_t *c, int64_t ldc, int64_t m, int64_t n, int64_t k, workspace *ws)
{
    uint64_t tile[MR * NR];
    int pack_all_a = n > A_IN_PLACE_N || (a_cs != 1 && a_rs != 1);
    int pack_all_b = b_cs != 1 || (m > B_IN_PLACE_M && (m > B_IN_PLACE_M_L2 || k * n > B_L2_ELEMS));
    int64_t kcmax = MIN(KC, k);
    int64_t a_rows = pack_all_a ? MIN(MC, (m + MR - 1) / MR * MR) : MR;
    int64_t b_cols = pack_all_b ? MIN(NC, (n + NR - 1) / NR * NR) : NR;
    uint64_t *ap = ws_get(ws, WS_AP, (size_t)a_rows * kcmax);
    uint64_t *bp = ws_get(ws, WS_BP, (size_t)b_cols * kcmax);
    if (!ap || !bp)
        return;
    for (int64_t jc = 0; jc < n; jc += NC) {
        int64_t nc = MIN(NC, n - jc);
        for (int64_t pc = 0; pc < k; pc += KC) {
            int64_t kc = MIN(KC, k - pc);
            int accumulate = pc > 0;
            int64_t b_edge = pack_all_b ? 0 : nc / NR * NR; /* in-place B: its packed edge panel */
            if (pack_all_b)
                pack_b(b + pc * b_rs + jc * b_cs, b_rs, b_cs, kc, nc, bp);
            else if (b_edge < nc)
                pack_b(b + pc * b_rs + (jc + b_edge) * b_cs, b_rs, b_cs, kc, nc - b_edge, bp);
            for (int64_t ic = 0; ic < m; ic += MC) {
                int64_t mc = MIN(MC, m - ic);
                int64_t a_edge = pack_all_a ? 0 : mc / MR * MR;
                if (pack_all_a)
                    pack_a(a + ic * a_rs + pc * a_cs, a_rs, a_cs, mc, kc, ap);
                else if (a_edge < mc)
                    pack_a(a + (ic + a_edge) * a_rs + pc * a_cs, a_rs, a_cs, mc - a_edge, kc, ap);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int64_t nr = MIN(NR, nc - jr);
                    const uint64_t *bt = pack_all_b ? bp + jr * kc
                                       : jr < b_edge ? b + pc * b_rs + jc + jr : bp;
                    int64_t bt_rs = pack_all_b || jr >= b_edge ? NR : b_rs;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int64_t mr = MIN(MR, mc - ir);
                        int in_place = !pack_all_a && ir < a_edge;
                        const uint64_t *at = pack_all_a ? ap + ir * kc
                                           : in_place ? a + (ic + ir) * a_rs + pc * a_cs : ap;
                        int64_t at_rs = in_place ? a_rs : 1, at_cs = in_place ? a_cs : MR;
                        uint64_t *ct = c + (ic + ir) * ldc + jc + jr;
                        if (mr == MR && nr == NR) {
                            kn->ukernel(kc, at, at_rs, at_cs, bt, bt_rs, ct, ldc, accumulate);
                            continue;
                        }
                        kn->ukernel(kc, at, at_rs, at_cs, bt, bt_rs, tile, NR, 0);
                        for (int64_t i = 0; i < mr; i++)
                            for (int64_t j = 0; j < nr; j++)
                                ct[i * ldc + j] = accumulate ? ct[i * ldc + j] + tile[i * NR + j]
                                                             : tile[i * NR + j];
                    }
                }
            }
        }
    }
}

/* C[0:m, 0:n] = A @ B for n <= 4: dot products of the rows of A with the columns of B, in k chunks of
 * KD; strided rows and columns are gathered into contiguous scratch first. */
static void gemm_dot(const kernels *kn, const uint64_t *a, int64_t a_rs, int64_t a_cs,
                     const uint64_t *b, int64_t b_rs, int64_t b_cs,
                     uint64_t *c, int64_t ldc, int64_t m, int64_t n, int64_t k, workspace *ws)
{
    int64_t kdmax = MIN(KD, k);
    uint64_t *at = a_cs == 1 ? NULL : ws_get(ws, WS_AT, (size_t)kdmax);
    uint64_t *bt = b_rs == 1 ? NULL : ws_get(ws, WS_BT, (size_t)n * kdmax);
    if (ws->failed)
        return;
    for (int64_t p0 = 0; p0 < k; p0 += KD) {
        int64_t kd = MIN(KD, k - p0);
        const uint64_t *col[4];
        for (int64_t j = 0; j < 4; j++) {
            if (j >= n) { /* dot4 computes 4 columns: the missing ones repeat column 0 */
                col[j] = col[0];
                continue;
            }
            col[j] = b + p0 * b_rs + j * b_cs;
            if (bt) {
                for (int64_t p = 0; p < kd; p++)
                    bt[j * kd + p] = col[j][p * b_rs];
                col[j] = bt + j * kd;
            }
        }
        for (int64_t i = 0; i < m; i++) {
            const uint64_t *row = a + i * a_rs + p0 * a_cs;
            if (at) {
                for (int64_t p = 0; p < kd; p++)
                    at[p] = row[p * a_cs];
                row = at;
            }
            uint64_t s[4], *ci = c + i * ldc;
            kn->dot4(row, col, kd, s);
            for (int64_t j = 0; j < n; j++)
                ci[j] = p0 ? ci[j] + s[j] : s[j];
        }
    }
}

static void gemm_block(const kernels *kn, const uint64_t *a, int64_t a_rs, int64_t a_cs,
                       const uint64_t *b, int64_t b_rs, int64_t b_cs,
                       uint64_t *c, int64_t ldc, int64_t m, int64_t n, int64_t k, workspace *ws)
{
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            memset(c + i * ldc, 0, (size_t)n * sizeof *c);
    } else if (n <= DOT_MAX_N) {
        gemm_dot(kn, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, m, n, k, ws);
    } else if (m <= AXPY_MAX_M && b_cs == 1) {
        kn->axpy(a, a_rs, a_cs, b, b_rs, c, ldc, m, n, k);
    } else {
        gemm_tiled(kn, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, m, n, k, ws);
    }
}

/* ---- Batches and threads ------------------------------------------------------------------- */

typedef struct {
    const uint64_t *a, *b;
    const int64_t *a_off, *b_off;
    int64_t a_rs, a_cs, b_rs, b_cs;
    uint64_t *c;
    int64_t batch, m, n, k;
    kernels kn;
    /* The work is cut into `units`: (batch item, row tile) pairs when split_rows, else column tiles
     * (of every item). Threads claim `grain` units at a time until none is left, so a thread that the
     * OS deschedules (three parties share two cores) holds up at most one grain, not half the work. */
    int split_rows;
    int64_t units, grain;
    _Atomic int64_t next;
    _Atomic int failed;
} problem;

static void run_units(const problem *pb, int64_t u0, int64_t u1, workspace *ws)
{
    int64_t m = pb->m, n = pb->n, k = pb->k;
    if (pb->split_rows) {
        int64_t mt = (m + MR - 1) / MR;
        for (int64_t u = u0; u < u1 && !ws->failed;) {
            int64_t i = u / mt, t0 = u % mt, t1 = MIN(mt, u1 - i * mt);
            int64_t r0 = t0 * MR, r1 = MIN(t1 * MR, m);
            gemm_block(&pb->kn, pb->a + pb->a_off[i] + r0 * pb->a_rs, pb->a_rs, pb->a_cs,
                       pb->b + pb->b_off[i], pb->b_rs, pb->b_cs,
                       pb->c + i * m * n + r0 * n, n, r1 - r0, n, k, ws);
            u = i * mt + t1;
        }
    } else {
        int64_t c0 = u0 * NR, c1 = MIN(u1 * NR, n);
        for (int64_t i = 0; i < pb->batch && !ws->failed; i++)
            gemm_block(&pb->kn, pb->a + pb->a_off[i], pb->a_rs, pb->a_cs,
                       pb->b + pb->b_off[i] + c0 * pb->b_cs, pb->b_rs, pb->b_cs,
                       pb->c + i * m * n + c0, n, m, c1 - c0, k, ws);
    }
}

static void *worker(void *arg)
{
    problem *pb = arg;
    workspace ws = {{NULL}, {0}, 0};
    for (;;) {
        int64_t u0 = atomic_fetch_add(&pb->next, pb->grain);
        if (u0 >= pb->units || ws.failed)
            break;
        run_units(pb, u0, MIN(u0 + pb->grain, pb->units), &ws);
    }
    ws_free(&ws);
    if (ws.failed)
        atomic_store(&pb->failed, 1);
    return NULL;
}

int mpcnp_matmul(const uint64_t *a, const int64_t *a_off, int64_t a_rs, int64_t a_cs,
                 const uint64_t *b, const int64_t *b_off, int64_t b_rs, int64_t b_cs,
                 uint64_t *c, int64_t batch, int64_t m, int64_t n, int64_t k,
                 int kernel, int nthreads)
{
    if (batch < 0 || m < 0 || n < 0 || k < 0 || (kernel != 0 && kernel != 1))
        return 2;
    kernels kn = {ukernel_portable, axpy_portable, dot4_portable};
#if defined(__x86_64__)
    if (kernel == 0 && mpcnp_has_avx512())
        kn = (kernels){ukernel_avx512, axpy_avx512, dot4_avx512};
#endif
    if (batch == 0 || m == 0 || n == 0)
        return 0;

    double work = (double)batch * (double)m * (double)n * (double)(k > 0 ? k : 1);
    int64_t t = nthreads < 1 ? 1 : MIN(nthreads, MAX_THREADS);
    if ((double)t * MIN_WORK_PER_THREAD > work)
        t = (int64_t)(work / MIN_WORK_PER_THREAD);
    if (t < 1)
        t = 1;
    /* Split the rows across the batch when there are enough of them to share; otherwise the
     * columns (short, wide products such as a vector times a matrix). */
    int64_t row_units = batch * ((m + MR - 1) / MR);
    int64_t col_units = (n + NR - 1) / NR;
    int split_rows = row_units >= t || row_units >= col_units;
    int64_t units = split_rows ? row_units : col_units;
    t = MIN(t, units);
    /* Up to 4 grains per thread, but at least one per thread. Each grain packs its own copy of B,
     * which on one thread costs 10-20% at 1024^3 in 64-row grains, about 5% in 128-row ones. */
    int64_t grain = MIN(MAX(MIN_GRAIN, units / (4 * t)), (units + t - 1) / t);
    problem pb = {a, b, a_off, b_off, a_rs, a_cs, b_rs, b_cs, c, batch, m, n, k, kn,
                  split_rows, units, grain, 0, 0};

    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t i = 1; i < t; i++)
        started[i] = pthread_create(&tids[i], NULL, worker, &pb) == 0;
    worker(&pb); /* the calling thread works too, and would do everything if no thread started */
    for (int64_t i = 1; i < t; i++)
        if (started[i])
            pthread_join(tids[i], NULL);
    return atomic_load(&pb.failed);
}
