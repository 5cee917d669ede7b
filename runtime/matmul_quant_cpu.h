/* Quantized weight matrices for the CPU forward pass and their products y[n, m] = x[n, k] · W[m, k]^T,
 * with W dequantized block by block in registers (formats/quant_format.h: q8, q4, fp8).
 *
 * A lg_qmat keeps the codes of W packed in panels of LG_PMAT_PANEL rows like lg_pmat (matmul_cpu.h):
 * inside a panel the 16 codes of one input column are adjacent (q4: one byte holds columns 2j and
 * 2j + 1 of one row), and each group's 16 scales and mins are float32 vectors. The kernel decodes 16
 * codes into a vector of floats, w = min + scale * code (q8 and fp8 have no min), exactly as
 * lg_quant_dequant_rows computes them: in registers when x has few rows (decode: reads 1/4 or ~1/7
 * of float32's bytes), or a panel at a time into a per-thread float buffer that every row tile of
 * the block reuses (prefill). Then it multiplies and adds like lg_matmul: every output is the
 * sum over k in ascending order, one rounding per multiply and per add. So lg_qmat_matmul gives
 * bitwise the result of lg_matmul on the dequantized matrix, whatever the instruction set, thread
 * count or number of rows.
 *
 * lg_matmul runs it by itself for an lg_pmat whose `q` is set (model.c sets it when a checkpoint
 * holds quantized weights), so the forward pass needs no change. */
#ifndef LG_MATMUL_QUANT_CPU_H
#define LG_MATMUL_QUANT_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "quant_format.h"
#include "thread_pool.h"

typedef struct lg_qmat {
    lg_quant_scheme scheme;
    int rows, cols;
    int group;       /* columns per scale (cols when per channel) */
    int n_groups;
    int n_panels;    /* ceil(rows / 16); rows past `rows` have scale 0 */
    size_t panel_bytes; /* codes of one panel: 16 * cols (q4: 16 * ceil(cols / 2)) */
    uint8_t *codes;  /* [n_panels][panel_bytes], 64-byte aligned */
    float *scales;   /* [n_panels][n_groups][16] */
    float *mins;     /* [n_panels][n_groups][16]; q4 only */
} lg_qmat;

/* Allocates a [rows, cols] quantized matrix of scheme s with every code and scale zero. */
int lg_qmat_init(lg_qmat *w, const lg_quant_scheme *s, int rows, int cols, lg_err *err);
void lg_qmat_free(lg_qmat *w);
size_t lg_qmat_bytes(const lg_qmat *w);

/* Copies rows [0, n) of a stored tensor (same scheme and cols) into rows row0 .. row0 + n - 1. */
void lg_qmat_set_rows(lg_qmat *w, int row0, const lg_quant_tensor *t, int n);
/* Decodes row r (cols floats), exactly as lg_quant_dequant_rows. */
void lg_qmat_get_row(const lg_qmat *w, int r, float *row);

/* y[i][j] = sum_c x[i][c] * W[j][c], as lg_matmul (rows of x ldx floats apart, of y ldy). */
void lg_qmat_matmul(lg_pool *pool, float *y, int ldy, const float *x, int ldx, int n,
                    const lg_qmat *w);

#endif
