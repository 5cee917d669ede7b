/* Between the attention files of kernels/ (not part of the C API). */
#ifndef LG_ATTENTION_INTERNAL_CUH
#define LG_ATTENTION_INTERNAL_CUH

#include "attention.h"
#include "kernel_common.cuh"

/* Everything the row kernel (attention_rows.cu) needs: one block per (split, head, query). */
struct lg_rows_params {
    void *out;
    int ldo;
    const void *q;
    int ldq;
    const void *k;
    int ldk;
    const void *v;
    int ldv;
    const int *slot_pos; /* NULL: slot s holds position k_pos0 + s (contiguous keys) */
    int k_pos0;
    int n_slots;
    const int *n_live; /* may be NULL */
    const int *q_pos;  /* NULL: query t at q_pos0 + t */
    int q_pos0;
    int n_heads, group, head_dim;
    float scale_log2; /* softmax scale times log2(e) */
    lg_dmask mask;
    int split_len, n_splits;
    float *ws; /* [n][n_heads][n_splits][head_dim + 2] partials, or NULL when n_splits == 1 */
    unsigned *done; /* [n][n_heads] splits finished, zero between calls (with ws) */
    int whole_cache; /* blocks of WHOLE_WARPS warps, not ROWS_WARPS; only with n_splits == 1 */
};

/* Launches the row kernel (and the merge of splits when n_splits > 1); n queries. */
int lg_rows_launch(const lg_rows_params *p, lg_kdtype dt, int n, cudaStream_t s, const char *who);

/* Checks the shape; 0 if fine. */
int lg_attn_shape_check(const lg_kattn_shape *sh, const char *who);

#endif
