#include "matmul_cpu.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "matmul_quant_cpu.h"

/* One rounding per multiply and per add, as the comments on summation order assume: clang would
 * otherwise fuse a * b + c into an FMA where the instruction set has one (GCC does not in ISO C). */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

/* ---------------------------------------------------------------- packed matrices */

int lg_pmat_init(lg_pmat *w, int rows, int cols, lg_err *err)
{
    memset(w, 0, sizeof *w);
    if (rows <= 0 || cols <= 0)
        return lg_err_set(err, "matrix [%d, %d]: sizes must be positive", rows, cols);
    int n_panels = (rows + LG_PMAT_PANEL - 1) / LG_PMAT_PANEL;
    size_t n = (size_t)n_panels * (size_t)cols * LG_PMAT_PANEL;
    size_t bytes = n * sizeof(float); /* a multiple of 64, as aligned_alloc wants */
    w->data = aligned_alloc(64, bytes);
    if (!w->data)
        return lg_err_set(err, "matrix [%d, %d]: out of memory (%zu bytes)", rows, cols, bytes);
    memset(w->data, 0, bytes);
    w->rows = rows;
    w->cols = cols;
    w->n_panels = n_panels;
    return 0;
}

void lg_pmat_free(lg_pmat *w)
{
    if (!w)
        return;
    lg_qmat_free(w->q);
    free(w->q);
    free(w->data);
    memset(w, 0, sizeof *w);
}

size_t lg_pmat_bytes(const lg_pmat *w)
{
    if (w->q)
        return lg_qmat_bytes(w->q);
    return (size_t)w->n_panels * (size_t)w->cols * LG_PMAT_PANEL * sizeof(float);
}

void lg_pmat_set_row(lg_pmat *w, int r, const float *row)
{
    float *p = w->data + (size_t)(r / LG_PMAT_PANEL) * w->cols * LG_PMAT_PANEL + r % LG_PMAT_PANEL;
    for (int c = 0; c < w->cols; c++)
        p[(size_t)c * LG_PMAT_PANEL] = row[c];
}

void lg_pmat_get_row(const lg_pmat *w, int r, float *row)
{
    if (w->q) {
        lg_qmat_get_row(w->q, r, row);
        return;
    }
    const float *p =
        w->data + (size_t)(r / LG_PMAT_PANEL) * w->cols * LG_PMAT_PANEL + r % LG_PMAT_PANEL;
    for (int c = 0; c < w->cols; c++)
        row[c] = p[(size_t)c * LG_PMAT_PANEL];
}

/* ---------------------------------------------------------------- kernels */

typedef struct matmul_job {
    float *y;
    int ldy;
    const float *x;
    int ldx;
    int n;
    const lg_pmat *w;
    int block_rows; /* rows of x per work item: a block that stays in L2 while the panels pass */
} matmul_job;

/* Work item i covers row block i / n_panels and panel i % n_panels, so consecutive items (one thread's
 * chunk) reuse the same block of x. */
#define LG_MATMUL_ITEM_SETUP                                                                       \
    const matmul_job *j = arg;                                                                     \
    const lg_pmat *w = j->w;                                                                       \
    const int k = w->cols;                                                                         \
    (void)thread

/* Plain C: the reference arithmetic (one product and one sum per step, k ascending). */
static void tile_scalar(int k, const float *x, const float *panel, float *y, int ncols)
{
    float acc[LG_PMAT_PANEL] = {0};
    for (int kk = 0; kk < k; kk++) {
        const float *wk = panel + (size_t)kk * LG_PMAT_PANEL;
        float xv = x[kk];
        for (int c = 0; c < LG_PMAT_PANEL; c++)
            acc[c] += xv * wk[c];
    }
    for (int c = 0; c < ncols; c++)
        y[c] = acc[c];
}

static void range_scalar(void *arg, int begin, int end, int thread)
{
    LG_MATMUL_ITEM_SETUP;
    for (int it = begin; it < end; it++) {
        int rb = it / w->n_panels, p = it % w->n_panels;
        int r0 = rb * j->block_rows, r1 = r0 + j->block_rows < j->n ? r0 + j->block_rows : j->n;
        const float *panel = w->data + (size_t)p * k * LG_PMAT_PANEL;
        int ncols = w->rows - p * LG_PMAT_PANEL < LG_PMAT_PANEL ? w->rows - p * LG_PMAT_PANEL
                                                                : LG_PMAT_PANEL;
        for (int r = r0; r < r1; r++)
            tile_scalar(k, j->x + (size_t)r * j->ldx, panel,
                        j->y + (size_t)r * j->ldy + p * LG_PMAT_PANEL, ncols);
    }
}

#if defined(__GNUC__)
/* GCC/Clang vector extensions: 16 floats, lowered to 4 SSE, 2 AVX or 1 AVX-512 register. */
typedef float lg_v16 __attribute__((vector_size(64)));

/* MR rows of x times one panel; MR accumulators of 16 lanes, each lane summed in k order. */
#define LG_DEFINE_TILE(NAME, MR, ATTR)                                                             \
    ATTR static void NAME(int k, const float *x, int ldx, const float *panel, float *y, int ldy,   \
                          int ncols)                                                               \
    {                                                                                              \
        lg_v16 acc[MR];                                                                            \
        for (int r = 0; r < MR; r++)                                                               \
            acc[r] = (lg_v16){0};                                                                  \
        for (int kk = 0; kk < k; kk++) {                                                           \
            lg_v16 wk = *(const lg_v16 *)(panel + (size_t)kk * LG_PMAT_PANEL);                     \
            for (int r = 0; r < MR; r++)                                                           \
                acc[r] += x[(size_t)r * ldx + kk] * wk;                                            \
        }                                                                                          \
        for (int r = 0; r < MR; r++)                                                               \
            for (int c = 0; c < ncols; c++)                                                        \
                y[(size_t)r * ldy + c] = acc[r][c];                                                \
    }

#define LG_DEFINE_RANGE(ISA, MR, ATTR)                                                             \
    LG_DEFINE_TILE(tile_##ISA##_mr, MR, ATTR)                                                      \
    LG_DEFINE_TILE(tile_##ISA##_1, 1, ATTR)                                                        \
    ATTR static void range_##ISA(void *arg, int begin, int end, int thread)                        \
    {                                                                                              \
        LG_MATMUL_ITEM_SETUP;                                                                      \
        for (int it = begin; it < end; it++) {                                                     \
            int rb = it / w->n_panels, p = it % w->n_panels;                                       \
            int r0 = rb * j->block_rows;                                                           \
            int r1 = r0 + j->block_rows < j->n ? r0 + j->block_rows : j->n;                        \
            const float *panel = w->data + (size_t)p * k * LG_PMAT_PANEL;                          \
            int ncols = w->rows - p * LG_PMAT_PANEL < LG_PMAT_PANEL ? w->rows - p * LG_PMAT_PANEL  \
                                                                    : LG_PMAT_PANEL;               \
            float *yp = j->y + p * LG_PMAT_PANEL;                                                  \
            int r = r0;                                                                            \
            for (; r + (MR) <= r1; r += (MR))                                                      \
                tile_##ISA##_mr(k, j->x + (size_t)r * j->ldx, j->ldx, panel,                       \
                                yp + (size_t)r * j->ldy, j->ldy, ncols);                           \
            for (; r < r1; r++)                                                                    \
                tile_##ISA##_1(k, j->x + (size_t)r * j->ldx, j->ldx, panel,                        \
                               yp + (size_t)r * j->ldy, j->ldy, ncols);                            \
        }                                                                                          \
    }

/* Rows per tile: as many accumulators as the registers hold beside a weight vector and a broadcast
 * (16 xmm: 2 rows x 4; 16 ymm: 4 rows x 2; 32 zmm: 8 rows x 1). */
LG_DEFINE_RANGE(base, 2, )
#if defined(__x86_64__) || defined(__i386__)
#define LG_MATMUL_X86 1
LG_DEFINE_RANGE(avx2, 4, __attribute__((target("avx2"))))
LG_DEFINE_RANGE(avx512f, 8, __attribute__((target("avx512f"))))
#endif
#endif /* __GNUC__ */

/* ---------------------------------------------------------------- dispatch */

typedef struct matmul_isa {
    const char *name;
    lg_pool_fn range;
    int rows_per_tile;
} matmul_isa;

static const matmul_isa isas[] = {
#if defined(LG_MATMUL_X86)
    {"avx512f", range_avx512f, 8},
    {"avx2", range_avx2, 4},
    {"sse2", range_base, 2},
#elif defined(__GNUC__)
    {"vector", range_base, 2},
#endif
    {"generic", range_scalar, 1},
};
#define N_ISAS ((int)(sizeof isas / sizeof isas[0]))

static atomic_int chosen_isa = -1;

static int isa_supported(int i)
{
#if defined(LG_MATMUL_X86)
    __builtin_cpu_init();
    if (strcmp(isas[i].name, "avx512f") == 0)
        return __builtin_cpu_supports("avx512f");
    if (strcmp(isas[i].name, "avx2") == 0)
        return __builtin_cpu_supports("avx2");
#endif
    (void)i;
    return 1;
}

static const matmul_isa *current_isa(void)
{
    int i = atomic_load(&chosen_isa);
    if (i < 0) {
        for (i = 0; i < N_ISAS - 1 && !isa_supported(i); i++)
            ;
        atomic_store(&chosen_isa, i);
    }
    return &isas[i];
}

const char *lg_matmul_isa(void)
{
    return current_isa()->name;
}

int lg_matmul_set_isa(const char *name)
{
    for (int i = 0; i < N_ISAS; i++) {
        if (strcmp(isas[i].name, name) == 0) {
            if (!isa_supported(i))
                return -1;
            atomic_store(&chosen_isa, i);
            return 0;
        }
    }
    return -1;
}

void lg_matmul(lg_pool *pool, float *y, int ldy, const float *x, int ldx, int n, const lg_pmat *w)
{
    if (n <= 0)
        return;
    if (w->q) {
        lg_qmat_matmul(pool, y, ldy, x, ldx, n, w->q);
        return;
    }
    const matmul_isa *isa = current_isa();
    /* a block of x of about 128 KiB, a whole number of tiles */
    int block_rows = (32768 / w->cols) / isa->rows_per_tile * isa->rows_per_tile;
    if (block_rows < isa->rows_per_tile)
        block_rows = isa->rows_per_tile;
    matmul_job job = {y, ldy, x, ldx, n, w, block_rows};
    int n_blocks = (n + block_rows - 1) / block_rows;
    int n_items = n_blocks * w->n_panels;
    int threads = lg_pool_threads(pool);
    int grain = n_items / (threads * 8);
    if (grain < 1)
        grain = 1;
    /* a tiny product is not worth waking the pool */
    if ((int64_t)n * w->rows * w->cols < 32768)
        grain = n_items;
    lg_pool_run(pool, n_items, grain, isa->range, &job);
}
