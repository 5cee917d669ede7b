/* Plain-C reference versions of the GPU kernels' row operations that the CPU forward pass does not
 * export (its own are static in forward_cpu.c): the twins that kernels/check compares the CUDA
 * kernels with. Float32 arithmetic with the same formulas as forward_cpu.c (RMSNorm's mean summed
 * in double, RoPE's angle a float32 product and cos/sin taken in double); the products sum in double,
 * so the twin is an accurate reference rather than a bitwise one. Rows are `ld*` floats apart. */
#ifndef LG_OPS_CPU_H
#define LG_OPS_CPU_H

#include "dtype.h"

/* out = w * (x * rsqrt(mean(x^2) + eps)) for each of n rows of dim. */
void lg_ops_rmsnorm(float *out, int ldo, const float *x, int ldx, const float *w, int n, int dim,
                    float eps);

/* RoPE (rotate-half) in place on rows x (n_heads * head_dim), position pos[t] for row t, angle
 * (float)pos * inv_freq[i], cos/sin scaled by attn_scale. */
void lg_ops_rope(float *x, int ldx, int rows, int n_heads, int head_dim, const int *pos,
                 const float *inv_freq, float attn_scale);

/* out = silu(gate) * up, rows x ffn. */
void lg_ops_swiglu(float *out, int ldo, const float *gate, int ldg, const float *up, int ldu,
                   int rows, int ffn);

/* y[t][m] = sum_k W[m][k] x[t][k] with W stored as 16-bit floats (LG_DT_F16 or LG_DT_BF16), rows
 * ldw elements apart, x float32; summed in double, rounded once. */
void lg_ops_gemv16(float *y, int ldy, const void *w, lg_dtype w_dt, int ldw, const float *x,
                   int ldx, int n, int M, int K);

#endif
