#include "matmul_quant_cpu.h"

#include <stdlib.h>
#include <string.h>

#include "matmul_cpu.h"

/* One rounding per multiply and per add, as lg_matmul (the bitwise equality promised in the header
 * depends on it). */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#define P LG_PMAT_PANEL

/* ---------------------------------------------------------------- packed matrices */

int lg_qmat_init(lg_qmat *w, const lg_quant_scheme *s, int rows, int cols, lg_err *err)
{
    memset(w, 0, sizeof *w);
    if (rows <= 0 || cols <= 0)
        return lg_err_set(err, "quantized matrix [%d, %d]: sizes must be positive", rows, cols);
    if (lg_quant_scheme_check(s, err) != 0)
        return -1;
    w->scheme = *s;
    w->rows = rows;
    w->cols = cols;
    w->group = s->group ? s->group : cols;
    w->n_groups = lg_quant_n_groups(s, cols);
    w->n_panels = (rows + P - 1) / P;
    w->panel_bytes = (size_t)P * lg_quant_row_bytes(s, cols);
    /* aligned_alloc wants a multiple of the alignment */
    size_t code_bytes = ((size_t)w->n_panels * w->panel_bytes + 63) / 64 * 64;
    size_t side = (size_t)w->n_panels * w->n_groups * P * sizeof(float);
    w->codes = aligned_alloc(64, code_bytes);
    w->scales = aligned_alloc(64, side);
    if (s->method == LG_QUANT_Q4)
        w->mins = aligned_alloc(64, side);
    if (!w->codes || !w->scales || (s->method == LG_QUANT_Q4 && !w->mins)) {
        lg_qmat_free(w);
        return lg_err_set(err, "quantized matrix [%d, %d]: out of memory", rows, cols);
    }
    memset(w->codes, 0, code_bytes);
    memset(w->scales, 0, side);
    if (w->mins)
        memset(w->mins, 0, side);
    return 0;
}

void lg_qmat_free(lg_qmat *w)
{
    if (!w)
        return;
    free(w->codes);
    free(w->scales);
    free(w->mins);
    memset(w, 0, sizeof *w);
}

size_t lg_qmat_bytes(const lg_qmat *w)
{
    size_t side = (size_t)w->n_panels * w->n_groups * P * sizeof(float);
    return (size_t)w->n_panels * w->panel_bytes + side * (w->mins ? 2 : 1);
}

void lg_qmat_set_rows(lg_qmat *w, int row0, const lg_quant_tensor *t, int n)
{
    size_t rb = lg_quant_row_bytes(&w->scheme, w->cols);
    for (int i = 0; i < n; i++) {
        int r = row0 + i, p = r / P, lane = r % P;
        const uint8_t *src = (const uint8_t *)t->qweight + (size_t)i * rb;
        uint8_t *dst = w->codes + (size_t)p * w->panel_bytes + lane;
        for (size_t b = 0; b < rb; b++)
            dst[b * P] = src[b];
        for (int g = 0; g < w->n_groups; g++) {
            size_t k = ((size_t)p * w->n_groups + g) * P + lane;
            float sc, mn;
            lg_quant_group_params(t, i, g, &sc, &mn);
            w->scales[k] = sc;
            if (w->mins)
                w->mins[k] = mn;
        }
    }
}

/* Code of column c of row r, decoded: the per-element reference of the kernels. */
static float decode(const lg_qmat *w, int r, int c)
{
    int p = r / P, lane = r % P, g = c / w->group;
    size_t k = ((size_t)p * w->n_groups + g) * P + lane;
    const uint8_t *panel = w->codes + (size_t)p * w->panel_bytes;
    switch (w->scheme.method) {
    case LG_QUANT_Q8:
        return w->scales[k] * (float)(int8_t)panel[(size_t)c * P + lane];
    case LG_QUANT_Q4: {
        int nibble = (panel[(size_t)(c / 2) * P + lane] >> (4 * (c & 1))) & 15;
        return w->mins[k] + w->scales[k] * (float)nibble;
    }
    default:
        return w->scales[k] * lg_e4m3_to_f32(panel[(size_t)c * P + lane]);
    }
}

void lg_qmat_get_row(const lg_qmat *w, int r, float *row)
{
    for (int c = 0; c < w->cols; c++)
        row[c] = decode(w, r, c);
}

/* ---------------------------------------------------------------- kernels */

typedef struct qmatmul_job {
    float *y;
    int ldy;
    const float *x;
    int ldx;
    int n;
    const lg_qmat *w;
    int block_rows;
    float *scratch; /* [threads][cols][16] decoded panels, or NULL to decode in registers */
} qmatmul_job;

#define LG_QMATMUL_ITEM_SETUP                                                                      \
    const qmatmul_job *j = arg;                                                                    \
    const lg_qmat *w = j->w;                                                                       \
    (void)thread

/* Plain C: decodes one column of a panel into 16 floats, then the reference arithmetic. */
static void tile_scalar(const lg_qmat *w, int p, const float *x, float *y, int ncols)
{
    float acc[P] = {0}, wk[P];
    for (int kk = 0; kk < w->cols; kk++) {
        for (int c = 0; c < P; c++)
            wk[c] = decode(w, p * P + c, kk);
        for (int c = 0; c < P; c++)
            acc[c] += x[kk] * wk[c];
    }
    for (int c = 0; c < ncols; c++)
        y[c] = acc[c];
}

static void range_scalar(void *arg, int begin, int end, int thread)
{
    LG_QMATMUL_ITEM_SETUP;
    for (int it = begin; it < end; it++) {
        int rb = it / w->n_panels, p = it % w->n_panels;
        int r0 = rb * j->block_rows, r1 = r0 + j->block_rows < j->n ? r0 + j->block_rows : j->n;
        int ncols = w->rows - p * P < P ? w->rows - p * P : P;
        for (int r = r0; r < r1; r++)
            tile_scalar(w, p, j->x + (size_t)r * j->ldx, j->y + (size_t)r * j->ldy + p * P, ncols);
    }
}

#if defined(__GNUC__)
typedef float lg_qv16 __attribute__((vector_size(64)));
typedef int32_t lg_qv16i __attribute__((vector_size(64)));
typedef int8_t lg_qv16b __attribute__((vector_size(16)));
typedef uint8_t lg_qv16u __attribute__((vector_size(16)));

/* acc[r] += x[r][kk] * wk for the MR rows of the tile */
#define LG_QACC(MR, KK, WK)                                                                        \
    for (int r = 0; r < (MR); r++)                                                                 \
        acc[r] += x[(size_t)r * ldx + (KK)] * (WK)

#define LG_QACC_1(KK, WK) LG_QACC(1, KK, WK)
#define LG_QACC_2(KK, WK) LG_QACC(2, KK, WK)
#define LG_QACC_4(KK, WK) LG_QACC(4, KK, WK)
#define LG_QACC_8(KK, WK) LG_QACC(8, KK, WK)

/* 16 codes of column kk -> 16 weights, as decode() computes them */
#define LG_Q8_DECODE(KK)                                                                           \
    lg_qv16i raw;                                                                                  \
    WIDEN_S8(panel + (size_t)(KK) * P, &raw);                                                      \
    lg_qv16 wk = sv * __builtin_convertvector(raw, lg_qv16)

/* e4m3 -> float32 bits: for exponent e >= 1 the code shifted into place with the bias moved from 7
 * to 127; subnormals (e = 0) are m 2^-9, made by conversion; then the sign. */
#define LG_FP8_DECODE(KK)                                                                          \
    lg_qv16i b;                                                                                    \
    WIDEN_U8(panel + (size_t)(KK) * P, &b);                                                        \
    lg_qv16i mag = b & 0x7f;                                                                       \
    lg_qv16i sub_mask = (mag >> 3) == 0;                                                           \
    lg_qv16 sub = __builtin_convertvector(mag & 7, lg_qv16) * 0x1p-9f;                             \
    lg_qv16i sub_bits, bits;                                                                       \
    memcpy(&sub_bits, &sub, 64);                                                                   \
    bits = (((mag << 20) + (120 << 23)) & ~sub_mask) | (sub_bits & sub_mask) | ((b & 0x80) << 24); \
    lg_qv16 wk;                                                                                    \
    memcpy(&wk, &bits, 64);                                                                        \
    wk = sv * wk

/* Runs STEP(kk, wk) for every column kk of panel p in order, wk the 16 decoded weights of the
 * column (the panel's rows) as decode() computes them. */
#define LG_QFOR_COLUMNS(STEP)                                                                      \
    const uint8_t *panel = w->codes + (size_t)p * w->panel_bytes;                                  \
    const int method = w->scheme.method;                                                           \
    for (int g = 0; g < w->n_groups; g++) {                                                        \
        size_t k = ((size_t)p * w->n_groups + g) * P;                                              \
        lg_qv16 sv = *(const lg_qv16 *)(w->scales + k);                                            \
        int c0 = g * w->group, c1 = c0 + w->group < w->cols ? c0 + w->group : w->cols;             \
        if (method == LG_QUANT_Q8) {                                                               \
            for (int kk = c0; kk < c1; kk++) {                                                     \
                LG_Q8_DECODE(kk);                                                                  \
                STEP(kk, wk);                                                                      \
            }                                                                                      \
        } else if (method == LG_QUANT_Q4) {                                                        \
            lg_qv16 mv = *(const lg_qv16 *)(w->mins + k);                                          \
            for (int kk = c0; kk < c1; kk += 2) { /* c0 is even: a byte holds kk, kk + 1 */        \
                lg_qv16i raw;                                                                      \
                WIDEN_U8(panel + (size_t)(kk / 2) * P, &raw);                                      \
                lg_qv16 lo = mv + sv * __builtin_convertvector(raw & 15, lg_qv16);                 \
                STEP(kk, lo);                                                                      \
                if (kk + 1 < c1) {                                                                 \
                    lg_qv16 hi = mv + sv * __builtin_convertvector(raw >> 4, lg_qv16);             \
                    STEP(kk + 1, hi);                                                              \
                }                                                                                  \
            }                                                                                      \
        } else {                                                                                   \
            for (int kk = c0; kk < c1; kk++) {                                                     \
                LG_FP8_DECODE(kk);                                                                 \
                STEP(kk, wk);                                                                      \
            }                                                                                      \
        }                                                                                          \
    }

#define LG_QSTORE(KK, WK) *(lg_qv16 *)(out + (size_t)(KK) * P) = (WK)

/* MR rows of x times panel p, decoded in registers (decode: few rows). */
#define LG_DEFINE_QTILE(NAME, MR, ATTR)                                                            \
    ATTR static void NAME(const lg_qmat *w, int p, const float *x, int ldx, float *y, int ldy,     \
                          int ncols)                                                               \
    {                                                                                              \
        lg_qv16 acc[MR];                                                                           \
        for (int r = 0; r < (MR); r++)                                                             \
            acc[r] = (lg_qv16){0};                                                                 \
        LG_QFOR_COLUMNS(LG_QACC_##MR)                                                              \
        for (int r = 0; r < (MR); r++)                                                             \
            for (int c = 0; c < ncols; c++)                                                        \
                y[(size_t)r * ldy + c] = acc[r][c];                                                \
    }

/* MR rows of x times a decoded float panel (lg_pmat's layout): the arithmetic of lg_matmul. */
#define LG_DEFINE_FTILE(NAME, MR, ATTR)                                                            \
    ATTR static void NAME(int k, const float *x, int ldx, const float *panel, float *y, int ldy,   \
                          int ncols)                                                               \
    {                                                                                              \
        lg_qv16 acc[MR];                                                                           \
        for (int r = 0; r < (MR); r++)                                                             \
            acc[r] = (lg_qv16){0};                                                                 \
        for (int kk = 0; kk < k; kk++) {                                                           \
            lg_qv16 wk = *(const lg_qv16 *)(panel + (size_t)kk * P);                               \
            LG_QACC(MR, kk, wk);                                                                   \
        }                                                                                          \
        for (int r = 0; r < (MR); r++)                                                             \
            for (int c = 0; c < ncols; c++)                                                        \
                y[(size_t)r * ldy + c] = acc[r][c];                                                \
    }

/* A work item: row block x panel. With many rows (prefill) the panel is decoded once into the
 * thread's scratch and multiplied as floats; with few (decode) it is decoded in registers. */
#define LG_DEFINE_QRANGE(ISA, MR, ATTR)                                                            \
    LG_DEFINE_QTILE(qtile_##ISA##_1, 1, ATTR)                                                      \
    LG_DEFINE_QTILE(qtile_##ISA##_mr, MR, ATTR)                                                    \
    LG_DEFINE_FTILE(ftile_##ISA##_1, 1, ATTR)                                                      \
    LG_DEFINE_FTILE(ftile_##ISA##_mr, MR, ATTR)                                                    \
    ATTR static void qpanel_##ISA(const lg_qmat *w, int p, float *out)                             \
    {                                                                                              \
        LG_QFOR_COLUMNS(LG_QSTORE)                                                                 \
    }                                                                                              \
    ATTR static void qrange_##ISA(void *arg, int begin, int end, int thread)                       \
    {                                                                                              \
        LG_QMATMUL_ITEM_SETUP;                                                                     \
        float *scratch = j->scratch ? j->scratch + (size_t)thread * w->cols * P : NULL;            \
        for (int it = begin; it < end; it++) {                                                     \
            int rb = it / w->n_panels, p = it % w->n_panels;                                       \
            int r0 = rb * j->block_rows;                                                           \
            int r1 = r0 + j->block_rows < j->n ? r0 + j->block_rows : j->n;                        \
            int ncols = w->rows - p * P < P ? w->rows - p * P : P;                                 \
            float *yp = j->y + p * P;                                                              \
            const float *xr = j->x;                                                                \
            int r = r0;                                                                            \
            if (scratch) {                                                                         \
                qpanel_##ISA(w, p, scratch);                                                       \
                for (; r + (MR) <= r1; r += (MR))                                                  \
                    ftile_##ISA##_mr(w->cols, xr + (size_t)r * j->ldx, j->ldx, scratch,            \
                                     yp + (size_t)r * j->ldy, j->ldy, ncols);                      \
                for (; r < r1; r++)                                                                \
                    ftile_##ISA##_1(w->cols, xr + (size_t)r * j->ldx, j->ldx, scratch,             \
                                    yp + (size_t)r * j->ldy, j->ldy, ncols);                       \
                continue;                                                                          \
            }                                                                                      \
            for (; r + (MR) <= r1; r += (MR))                                                      \
                qtile_##ISA##_mr(w, p, xr + (size_t)r * j->ldx, j->ldx, yp + (size_t)r * j->ldy,   \
                                 j->ldy, ncols);                                                   \
            for (; r < r1; r++)                                                                    \
                qtile_##ISA##_1(w, p, xr + (size_t)r * j->ldx, j->ldx, yp + (size_t)r * j->ldy,    \
                                j->ldy, ncols);                                                    \
        }                                                                                          \
    }

/* 16 bytes -> 16 int32, sign- or zero-extended. GCC lowers __builtin_convertvector of a byte
 * vector element by element; the x86 versions use the one-instruction extensions. */
static inline void widen_generic(const uint8_t *p, int is_signed, lg_qv16i *out)
{
    lg_qv16u u;
    lg_qv16b s;
    memcpy(&u, p, 16);
    memcpy(&s, p, 16);
    *out = is_signed ? __builtin_convertvector(s, lg_qv16i) : __builtin_convertvector(u, lg_qv16i);
}

/* Rows per tile: the accumulators plus the decoded weights, scale and min vectors fit the registers
 * (16 xmm: 2 rows; 16 ymm: 4 rows; 32 zmm: 8 rows). */
#define WIDEN_S8(p, out) widen_generic((p), 1, (out))
#define WIDEN_U8(p, out) widen_generic((p), 0, (out))
LG_DEFINE_QRANGE(base, 2, )
#undef WIDEN_S8
#undef WIDEN_U8
#if defined(__x86_64__) || defined(__i386__)
#define LG_QMATMUL_X86 1
#include <immintrin.h>

__attribute__((target("avx2"))) static inline void widen_avx2(const uint8_t *p, int is_signed,
                                                               lg_qv16i *out)
{
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m256i lo = is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
    __m256i hi = is_signed ? _mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))
                           : _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
    memcpy(out, &lo, 32);
    memcpy((char *)out + 32, &hi, 32);
}

__attribute__((target("avx512f"))) static inline void widen_avx512(const uint8_t *p, int is_signed,
                                                                   lg_qv16i *out)
{
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m512i v = is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
    memcpy(out, &v, 64);
}

#define WIDEN_S8(p, out) widen_avx2((p), 1, (out))
#define WIDEN_U8(p, out) widen_avx2((p), 0, (out))
LG_DEFINE_QRANGE(avx2, 4, __attribute__((target("avx2"))))
#undef WIDEN_S8
#undef WIDEN_U8
#define WIDEN_S8(p, out) widen_avx512((p), 1, (out))
#define WIDEN_U8(p, out) widen_avx512((p), 0, (out))
LG_DEFINE_QRANGE(avx512f, 8, __attribute__((target("avx512f"))))
#undef WIDEN_S8
#undef WIDEN_U8
#endif
#endif /* __GNUC__ */

/* ---------------------------------------------------------------- dispatch */

/* The kernel for the instruction set lg_matmul uses (so lg_matmul_set_isa forces both). */
static void pick(lg_pool_fn *range, int *rows_per_tile)
{
    const char *isa = lg_matmul_isa();
    *range = range_scalar;
    *rows_per_tile = 1;
#if defined(LG_QMATMUL_X86)
    if (strcmp(isa, "avx512f") == 0) {
        *range = qrange_avx512f;
        *rows_per_tile = 8;
        return;
    }
    if (strcmp(isa, "avx2") == 0) {
        *range = qrange_avx2;
        *rows_per_tile = 4;
        return;
    }
#endif
#if defined(__GNUC__)
    if (strcmp(isa, "generic") != 0) {
        *range = qrange_base;
        *rows_per_tile = 2;
    }
#endif
    (void)isa;
}

void lg_qmat_matmul(lg_pool *pool, float *y, int ldy, const float *x, int ldx, int n,
                    const lg_qmat *w)
{
    if (n <= 0)
        return;
    lg_pool_fn range;
    int rpt;
    pick(&range, &rpt);
    /* a block of x of about 128 KiB, a whole number of tiles (as lg_matmul) */
    int block_rows = (32768 / w->cols) / rpt * rpt;
    if (block_rows < rpt)
        block_rows = rpt;
    qmatmul_job job = {y, ldy, x, ldx, n, w, block_rows, NULL};
    /* with two tiles or more per row block, decoding each panel once into floats is cheaper than in
     * every tile (the sums are the same either way); failing to get the scratch only costs time */
    int threads_all = lg_pool_threads(pool);
    if (range != range_scalar && (block_rows < n ? block_rows : n) >= 2 * rpt)
        job.scratch = aligned_alloc(64, (size_t)threads_all * w->cols * P * sizeof(float));
    int n_blocks = (n + block_rows - 1) / block_rows;
    int n_items = n_blocks * w->n_panels;
    int threads = lg_pool_threads(pool);
    int grain = n_items / (threads * 8);
    if (grain < 1)
        grain = 1;
    if ((int64_t)n * w->rows * w->cols < 32768)
        grain = n_items;
    lg_pool_run(pool, n_items, grain, range, &job);
    free(job.scratch);
}
