/* Float32 matrix products of the CPU forward pass: y[n, m] = x[n, k] · W[m, k]^T, where W is a weight
 * matrix in Hugging Face's [out_features, in_features] layout.
 *
 * W is stored packed in panels of LG_PMAT_PANEL rows: inside a panel the 16 weights of one input
 * column are adjacent, so the kernel multiplies a broadcast x value by one vector of 16 weights and
 * adds it into 16 independent accumulators (no horizontal sums). Every output element is the sum over
 * k in ascending order, one rounding per multiply and per add (no FMA contraction in ISO C mode), so
 * the result is bitwise the same whatever the instruction set, thread count or number of rows. */
#ifndef LG_MATMUL_CPU_H
#define LG_MATMUL_CPU_H

#include <stddef.h>

#include "error.h"
#include "thread_pool.h"

#define LG_PMAT_PANEL 16

struct lg_qmat;

typedef struct lg_pmat {
    int rows, cols; /* W is [rows, cols] */
    int n_panels;   /* ceil(rows / 16); the rows past `rows` in the last panel are zero */
    float *data;    /* W[r][c] at data[(r / 16) * cols * 16 + c * 16 + r % 16], 64-byte aligned */
    /* When set, W is held quantized there instead (matmul_quant_cpu.h) and data is NULL: lg_matmul,
     * lg_pmat_get_row, lg_pmat_bytes and lg_pmat_free act on it (set_row does not apply). Owned. */
    struct lg_qmat *q;
} lg_pmat;

/* Allocates a zeroed [rows, cols] matrix; lg_pmat_free releases it. */
int lg_pmat_init(lg_pmat *w, int rows, int cols, lg_err *err);
void lg_pmat_free(lg_pmat *w);
/* Bytes held by the packed data. */
size_t lg_pmat_bytes(const lg_pmat *w);
/* Stores / reads back row r (cols floats). */
void lg_pmat_set_row(lg_pmat *w, int r, const float *row);
void lg_pmat_get_row(const lg_pmat *w, int r, float *row);

/* y[i][j] = sum_c x[i][c] * W[j][c] for i < n, j < w->rows. Rows of x are ldx floats apart, rows of
 * y ldy floats apart; y must not overlap x. pool may be NULL (one thread). */
void lg_matmul(lg_pool *pool, float *y, int ldy, const float *x, int ldx, int n, const lg_pmat *w);

/* The instruction set the kernel uses ("avx512f", "avx2", "sse2" or "generic"), chosen from the CPU
 * at the first call. lg_matmul_set_isa forces one (for tests); -1 when the CPU lacks it. */
const char *lg_matmul_isa(void);
int lg_matmul_set_isa(const char *name);

#endif
