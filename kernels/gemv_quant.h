/* Weight-only quantized matrices on the device, stored as the checkpoint stores them
 * (formats/quant_format.h, docs/FORMAT.md "Quantized weights"): a matrix-vector product for decode
 * and a dequantization for prefill. Conventions: kernel_types.h.
 *
 * A [rows, cols] weight W is the bytes of its parts, uploaded unchanged, plus its scheme:
 *   codes   q8:  int8 [rows, cols]                               w = scale * q
 *           q4:  uint8 [rows, ceil(cols / 2)], column 2j in the  w = min + scale * nibble
 *                low nibble, 2j + 1 in the high one              (min = -8 scale without mins)
 *           fp8: e4m3fn [rows, cols]                             w = scale * e4m3(q)
 *   scales  [rows, n_groups], float16 (q8, q4) or float32 (fp8)
 *   mins    [rows, n_groups] float16, q4 with zero_point "min" only
 * where a group is `group` consecutive columns of a row and n_groups = ceil(cols / group) (group 0:
 * one scale per row). Rows of every part are contiguous, so matrices of one scheme and width
 * stacked part by part (q|k|v, gate|up) are one matrix.
 *
 * lg_k_gemv_quant: y[t][m] (=, or += when beta = 1) sum_k deq(W)[m][k] x[t][k] for t < n, x float16
 * or bfloat16, y float32 or x's type, float32 accumulation; W is read once per 8 rows of x.
 * Fast path (tensor cores) when x is 16-byte aligned, ldx % 8 == 0 and 4 loads of codes per row
 * (a window of 64 columns for q8 / fp8 with 16-byte loads, 128 for q4; 8 and 4-byte loads halve
 * it) divide both cols and the group (cols when per row), codes aligned to the load: per-row q8 and
 * fp8 and q4 groups of 32, 64 or 128 on Llama-2's shapes, codes under 4 GiB (the walk keeps 32-bit
 * offsets). Otherwise a scalar path gives the same sums, slowly.
 *
 * lg_k_dequant: rows [row0, row0 + n_rows) of deq(W) into out (float16, bfloat16 or float32), each
 * element the float32 value lg_quant_dequant_rows computes (exactly), rounded once to out's type:
 * a prefill dequantizes a matrix, or a panel of its rows, into scratch and multiplies with
 * lg_k_gemm. */
#ifndef LG_KERNELS_GEMV_QUANT_H
#define LG_KERNELS_GEMV_QUANT_H

#include <stddef.h>

#include "kernel_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The values equal formats/quant_format.h's lg_quant_method: (lg_kquant)scheme.method converts. */
typedef enum lg_kquant {
    LG_KQ_Q8 = 1,
    LG_KQ_Q4 = 2,
    LG_KQ_FP8 = 3,
} lg_kquant;

typedef struct lg_kqmat {
    lg_kquant method;
    int group;          /* columns per scale: 0 (one per row) or even; q4 needs one */
    int rows, cols;
    const void *codes;  /* qweight, rows * lg_kqmat_row_bytes bytes */
    const void *scales; /* [rows, n_groups] */
    const void *mins;   /* [rows, n_groups], q4 with mins; NULL otherwise */
} lg_kqmat;

/* Host helpers mirroring formats/quant_format.h (kernels see no formats/ header). */
size_t lg_kqmat_row_bytes(const lg_kqmat *w); /* bytes of one row of codes */
int lg_kqmat_n_groups(const lg_kqmat *w);
size_t lg_kqmat_bytes(const lg_kqmat *w);     /* codes + scales + mins: what one product reads */

/* y = beta * y + x · deq(W)^T, beta 0 or 1. x rows ldx apart, y rows ldy apart. */
int lg_k_gemv_quant(void *y, lg_kdtype y_dt, int ldy, const lg_kqmat *w, const void *x, int ldx,
                    lg_kdtype x_dt, int n, float beta, void *stream);

/* out[r - row0][c] = deq(W)[r][c] for row0 <= r < row0 + n_rows, rows of out ldo apart. */
int lg_k_dequant(void *out, lg_kdtype out_dt, int ldo, const lg_kqmat *w, int row0, int n_rows,
                 void *stream);

/* For checks and benchmarks. The bytes per load lg_k_gemv_quant uses for these arguments (16, 8 or
 * 4), or 0 for the scalar path. */
int lg_k_gemv_quant_load_bytes(const lg_kqmat *w, const void *x, int ldx);
/* Warps per block of the fast path (each block owns 16 rows of W at a time and splits cols among its
 * warps): 4, 8 (the default) or 16; 0 sends every call to the scalar path. min_blocks: blocks an SM
 * must hold at once, which caps the registers a thread: 1 (no cap), 3 (with 8 warps), or 0 (the
 * default: 3 for q4 matrices with rows enough to give 3 blocks of 16 rows to every SM, and for q8
 * and fp8 ones with 3 to 6 such tiles an SM; else 1). Not thread-safe. */
int lg_k_gemv_quant_set_variant(int warps, int min_blocks);

#ifdef __cplusplus
}
#endif

#endif
