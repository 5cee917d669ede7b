/* Row-wise kernels of the transformer block: embedding gather, RMSNorm (plain and fused with the
 * residual add), RoPE, SwiGLU, residual add and type conversion. Conventions: kernel_types.h.
 * Every input and output may be float32, float16 or bfloat16 (each with its own dtype argument);
 * arithmetic is float32. Outputs must not overlap inputs unless a comment says "in place". */
#ifndef LG_KERNELS_ELEMENTWISE_H
#define LG_KERNELS_ELEMENTWISE_H

#include "kernel_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[t][c] = table[ids[t]][c] for t < n, c < dim. ids: device int array of n token ids, each in
 * [0, vocab) (an id outside gives a row of zeros, the device cannot report it). Rows of out are ldo
 * apart, rows of the table dim apart. */
int lg_k_embed(void *out, lg_kdtype out_dt, int ldo, const void *table, lg_kdtype table_dt,
               int vocab, const int *ids, int n, int dim, void *stream);

/* transformers' LlamaRMSNorm: out = w * (x * rsqrt(mean(x^2) + eps)), the mean and the product in
 * float32, rounded once to out_dt. rows x dim. */
int lg_k_rmsnorm(void *out, lg_kdtype out_dt, int ldo, const void *x, lg_kdtype x_dt, int ldx,
                 const void *w, lg_kdtype w_dt, int rows, int dim, float eps, void *stream);

/* Residual add then RMSNorm in one pass: x += delta (in place, rounded to x_dt), then
 * out = rmsnorm(x) * w from the rounded x, as the unfused pair would give. */
int lg_k_add_rmsnorm(void *x, lg_kdtype x_dt, int ldx, const void *delta, lg_kdtype delta_dt,
                     int ldd, void *out, lg_kdtype out_dt, int ldo, const void *w, lg_kdtype w_dt,
                     int rows, int dim, float eps, void *stream);

/* x += delta (in place), rows x cols. */
int lg_k_add(void *x, lg_kdtype x_dt, int ldx, const void *delta, lg_kdtype delta_dt, int ldd,
             int rows, int cols, void *stream);

/* dst = src converted (rows x cols). */
int lg_k_convert(void *dst, lg_kdtype dst_dt, int ldd, const void *src, lg_kdtype src_dt, int lds,
                 int rows, int cols, void *stream);

/* RoPE in transformers' rotate-half layout, in place, on q and (optionally) k:
 * for each row t, head h, i < head_dim/2, with p = position of row t:
 *   angle = (float)p * inv_freq[i]   (float32 product, as transformers)
 *   c = (float)cos((double)angle) * attn_scale,  s = (float)sin((double)angle) * attn_scale
 *   x[i] <- x[i] * c - x[i + hd/2] * s;   x[i + hd/2] <- x[i + hd/2] * c + x[i] * s
 * q: rows x (n_heads * head_dim) with rows ldq apart; k: rows x (n_kv_heads * head_dim), ldk apart,
 * or NULL. q and k share dt. Positions: pos (device int array, one per row) or, when pos is NULL,
 * pos0 + t. inv_freq: device float array of head_dim/2 (formats/hf_config.h lg_rope_inv_freq).
 * head_dim even. pos and inv_freq are read while the kernel before this one may still run
 * (programmatic dependent launch): they must come from the host (a copy), not from that kernel. */
int lg_k_rope(void *q, int ldq, int n_heads, void *k, int ldk, int n_kv_heads, lg_kdtype dt,
              int rows, int head_dim, const int *pos, int pos0, const float *inv_freq,
              float attn_scale, void *stream);

/* Where lg_k_rope_kv puts each row's rotated key and its value: row t of k (after RoPE) and of v
 * (ldv apart) go to slot slots[t] (device ints, distinct within a call) of k_cache / v_cache (rows
 * ld_cache apart), and slot_pos[slots[t]] becomes the row's position. */
typedef struct {
    void *k_cache, *v_cache;
    int ld_cache;
    int *slot_pos;
    const int *slots;
    const void *v;
    int ldv;
} lg_kcache_dst;

/* lg_k_rope, then lg_k_kv_write (attention.h) of the rotated k rows and the v rows into dst, in
 * one kernel: k is also rotated in place, as lg_k_rope leaves it. k must not be NULL. */
int lg_k_rope_kv(void *q, int ldq, int n_heads, void *k, int ldk, int n_kv_heads, lg_kdtype dt,
                 int rows, int head_dim, const int *pos, int pos0, const float *inv_freq,
                 float attn_scale, const lg_kcache_dst *dst, void *stream);

/* SwiGLU: out[t][c] = silu(gate[t][c]) * up[t][c], silu(g) = g / (1 + exp(-g)), in float32.
 * gate and up share in_dt; for the fused [rows, 2*ffn] gate_up layout pass gate = gu,
 * up = gu + ffn elements, ldg = ldu = 2*ffn. */
int lg_k_swiglu(void *out, lg_kdtype out_dt, int ldo, const void *gate, int ldg, const void *up,
                int ldu, lg_kdtype in_dt, int rows, int ffn, void *stream);

/* For logits: idx[t] = the column of the largest value of row t of x (float32, rows x cols, ldx
 * apart); the lowest column wins ties (as the CPU sampler's greedy pick). idx: device int array. */
int lg_k_argmax(int *idx, const float *x, int ldx, int rows, int cols, void *stream);

#ifdef __cplusplus
}
#endif

#endif
