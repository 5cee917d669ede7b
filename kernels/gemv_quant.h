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
 * offsets); tiled codes (below) take it at the width they were tiled for. Otherwise a scalar path
 * gives the same sums, slowly.
 *
 * lg_k_dequant: rows [row0, row0 + n_rows) of deq(W) into out (float16, bfloat16 or float32), each
 * element the float32 value lg_quant_dequant_rows computes (exactly), rounded once to out's type:
 * a prefill dequantizes a matrix, or a panel of its rows, into scratch and multiplies with
 * lg_k_gemm. */
#ifndef LG_KERNELS_GEMV_QUANT_H
#define LG_KERNELS_GEMV_QUANT_H

#include <stddef.h>

#include "elementwise.h" /* lg_kcache_dst */
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
    int tiled;          /* 0: codes as stored; 4, 8 or 16: tile-major for that load width */
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

/* Decode's gate|up product with SwiGLU in one kernel. W is gate and up stacked, [2F, cols]; x one
 * row (float16 or bfloat16) and y F values of x's type:
 *   y[j] = silu(a_j) b_j,  a = deq(W)[0, F) x and b = deq(W)[F, 2F) x, each rounded to y's type
 * first: what lg_k_gemv_quant into x's type followed by lg_k_swiglu gives, bit for bit where
 * lg_k_gemv_quant_glu_warps equals lg_k_gemv_quant_one_row_warps (the same warps a block sum the
 * same shares of the columns; else the float32 sums differ in their order). Only the one-row
 * kernel does this (a matrix it takes, below; F a multiple of 16); lg_k_gemv_quant_glu_warps says
 * whether it takes W and x (its warps a block) or not (0), and lg_k_gemv_quant_glu fails for a
 * matrix it does not take. */
int lg_k_gemv_quant_glu_warps(const lg_kqmat *w, const void *x);
int lg_k_gemv_quant_glu(void *y, lg_kdtype y_dt, const lg_kqmat *w, const void *x, lg_kdtype x_dt,
                        void *stream);

/* Decode's q|k|v product with RoPE and the cache writes in one kernel. W is q, k and v stacked,
 * [(n_heads + 2 n_kv_heads) head_dim, cols], x one row, qkv that many values of x's type dt:
 * what lg_k_gemv_quant into qkv (dt) followed by lg_k_rope_kv (elementwise.h: one row at
 * pos[0], or pos0 when pos is NULL; q and k rotated in place, k and v stored in the row's cache
 * slot dst->slots[0], slot_pos set; dst->v and dst->ldv are not used: v comes from the product)
 * gives, bit for bit under the same condition on the warps as lg_k_gemv_quant_glu (with
 * lg_k_gemv_quant_rope_kv_warps). Only the one-row kernel does this (a matrix it takes, below),
 * with head_dim a multiple of 32; lg_k_gemv_quant_rope_kv_warps says whether it
 * takes the product (its warps a block, else 0). As lg_k_rope does, it reads pos and inv_freq
 * while the kernel before it may still run: they must come from the host (a copy). */
int lg_k_gemv_quant_rope_kv_warps(const lg_kqmat *w, const void *x, int n_heads, int n_kv_heads,
                                  int head_dim);
int lg_k_gemv_quant_rope_kv(void *qkv, lg_kdtype dt, const lg_kqmat *w, const void *x,
                            int n_heads, int n_kv_heads, int head_dim, const int *pos, int pos0,
                            const float *inv_freq, float attn_scale, const lg_kcache_dst *dst,
                            void *stream);

/* Tile-major codes. The fast path reads, per step of a warp, one chunk of load-width bytes of each
 * of 16 rows for each of its 32 lanes; as stored (row after row) that is 8 or 16 rows x 32 or 64
 * contiguous bytes, which the memory serves at 50-60% of its copy rate (docs/BENCHMARKS.md). Tiled,
 * the codes of 16 rows x one window are stored in the order the lanes read them, so a warp's loads
 * of a step are 512 or 1024 contiguous bytes: for tile T (rows 16T..16T+15), window s, half h
 * (rows g + 8h, g < 8) and window chunk c (0..3), the chunk of row 16T + 8h + g sits at
 *   ((T * windows + s) * 2 + h) * 32 * width + (4 g + c) * width,
 * and for q4 each 4-byte word of a chunk (8 columns) holds columns 0, 1 in nibbles 0, 4; 2, 3 in
 * 2, 6; 4, 5 in 1, 5 and 6, 7 in 3, 7 (instead of column k in nibble k): a pair is then masked out
 * of w, w >> 4, w >> 8 or w >> 12 with no byte permute, and the one-row kernel takes all four from
 * w and w >> 8 (gemv_quant.cu).
 * Every kernel here reads either layout (w->tiled says which); scales and mins stay as stored.
 * lg_k_qmat_tile_bytes: the width a matrix would be tiled for (that of lg_k_gemv_quant_load_bytes
 * with an aligned x), or 0 when it is not tiled (rows not a multiple of 16, no fast path).
 * lg_k_qmat_tile: rewrites w->codes in place (through scratch, at least the codes' bytes, on the
 * stream) and sets w->tiled. */
int lg_k_qmat_tile_bytes(const lg_kqmat *w);
int lg_k_qmat_tile(lg_kqmat *w, void *scratch, size_t scratch_bytes, void *stream);

/* For checks and benchmarks. The bytes per load lg_k_gemv_quant uses for these arguments (16, 8 or
 * 4), or 0 for the scalar path. */
int lg_k_gemv_quant_load_bytes(const lg_kqmat *w, const void *x, int ldx);
/* The warps per block lg_k_gemv_quant uses for these arguments, 0 for the scalar path. */
int lg_k_gemv_quant_warps(const lg_kqmat *w, const void *x, int ldx);
/* The warps per block of the one-row kernel, which takes a product of one row of x (decode's) on q4
 * codes tiled with a group of one window (4 loads of 8 columns: q4 groups of 32, 64 and 128) or on
 * q8 and fp8 codes tiled for 16-byte loads with a scale per row (except a plain product of 3 to 6
 * tiles of 16 rows an SM, where the fast path is faster), or 0 when the fast path above takes it.
 * lg_k_gemv_quant_set_one_row(0) sends those products to the fast path too (1, the default, back);
 * a variant forced with lg_k_gemv_quant_set_variant does as well. Not thread-safe. */
int lg_k_gemv_quant_one_row_warps(const lg_kqmat *w, const void *x, int ldx);
void lg_k_gemv_quant_set_one_row(int on);
/* Warps per block of the fast path (each block owns 16 rows of W at a time and splits cols among its
 * warps): 4, 8 or 16, or -1 (the default: 4 for q4 matrices of at least 3 tiles of 16 rows an SM,
 * 16 for q8 and fp8 ones of at most 2 with 128 windows or more a row, else 8); 0 sends every call
 * to the scalar path. min_blocks: blocks an SM must hold at once, which caps the registers a
 * thread: 1 (no cap), 3 (with 8 warps), 6 (with 4), or 0 (the default: with 3 tiles an SM or more,
 * 6 for q4 with 4 warps, 3 for q4 with 8 and for q8 and fp8 with 8 up to 6 tiles an SM; else 1).
 * Not thread-safe. */
int lg_k_gemv_quant_set_variant(int warps, int min_blocks);

#ifdef __cplusplus
}
#endif

#endif
