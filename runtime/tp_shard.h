/* Tensor parallelism's arithmetic: which part of every weight a rank holds (Megatron-LM's split,
 * the one vLLM and TensorRT-LLM use for Llama):
 *   q_proj, k_proj, v_proj  column-parallel: the rows of its query heads / KV heads
 *   gate_proj, up_proj      column-parallel: its range of MLP columns (rows of the matrices)
 *   o_proj                  row-parallel: the input columns of its query heads
 *   down_proj               row-parallel: the input columns of its MLP range
 *   embed_tokens, lm_head   its range of the vocabulary (rows)
 *   norms                   replicated
 * so that attention (heads never cross ranks; a rank's query heads read only its own KV heads under
 * GQA) and the MLP run without communication, and the partial outputs of o_proj and down_proj, and
 * the embedding rows (zero outside a rank's vocabulary range), are summed by one all-reduce each.
 * The logits of a rank are the columns of its vocabulary range.
 *
 * Pure arithmetic on shapes: the CUDA engine (runtime/forward_tp.c) loads each rank's blocks with
 * lg_tp_block_run, and tests/test_tp.c reassembles them into the original tensors. */
#ifndef LG_TP_SHARD_H
#define LG_TP_SHARD_H

#include <stdint.h>

#include "error.h"

#define LG_TP_MAX 8 /* ranks: Llama-2-70B has 8 KV heads */

/* The widths that decide the split. */
typedef struct lg_tp_dims {
    int dim, ffn, n_heads, n_kv_heads, head_dim, vocab;
} lg_tp_dims;

/* What rank `rank` of `tp` holds: [x0, x0 + n) ranges. */
typedef struct lg_tp_shard {
    int tp, rank;
    int head0, n_heads;       /* query heads */
    int kv_head0, n_kv_heads; /* key/value heads */
    int ffn0, ffn;            /* MLP columns */
    int vocab0, vocab;        /* vocabulary rows */
} lg_tp_shard;

struct lg_model;
/* The widths of a loaded model. */
lg_tp_dims lg_tp_dims_of(const struct lg_model *m);

/* 0 when tp ranks can split dims (1 <= tp <= LG_TP_MAX, tp divides the query and the KV heads, at
 * least one MLP column and vocabulary row per rank); else -1 with the reason. */
int lg_tp_check(const lg_tp_dims *d, int tp, lg_err *err);

/* The shard of `rank` (lg_tp_check must have passed). MLP columns and vocabulary rows are split in
 * units of 8 where the width allows (16-byte rows for the vector loads of the GEMV), the first
 * ranks taking the smaller parts when the units do not divide evenly. */
void lg_tp_shard_of(const lg_tp_dims *d, int tp, int rank, lg_tp_shard *s);

/* The weights, by how they are split. */
typedef enum lg_tp_weight {
    LG_TPW_EMBED,   /* [vocab, dim] */
    LG_TPW_LM_HEAD, /* [vocab, dim] */
    LG_TPW_Q,       /* [n_heads * head_dim, dim] */
    LG_TPW_K,       /* [n_kv_heads * head_dim, dim] */
    LG_TPW_V,       /* [n_kv_heads * head_dim, dim] */
    LG_TPW_O,       /* [dim, n_heads * head_dim] */
    LG_TPW_GATE,    /* [ffn, dim] */
    LG_TPW_UP,      /* [ffn, dim] */
    LG_TPW_DOWN,    /* [dim, ffn] */
    LG_TPW_NORM,    /* [dim] */
    LG_TPW_COUNT
} lg_tp_weight;

/* A rank's part of a row-major [rows, cols] tensor: rows [r0, r0 + nr) x columns [c0, c0 + nc). */
typedef struct lg_tp_block {
    int64_t rows, cols;
    int64_t r0, nr, c0, nc;
} lg_tp_block;

/* The block of weight w that shard s holds. A 1-D norm is [1, dim]. */
void lg_tp_weight_block(const lg_tp_dims *d, const lg_tp_shard *s, lg_tp_weight w, lg_tp_block *b);

/* Elements in a block (nr * nc). */
int64_t lg_tp_block_elems(const lg_tp_block *b);

/* The block's elements in row-major order (block element k = row k / nc, column k % nc) come from
 * runs of the source tensor: returns the length of the contiguous run that starts at block element
 * k (0 <= k < elems), at most `max`, and sets *src to the source element it starts at. */
int64_t lg_tp_block_run(const lg_tp_block *b, int64_t k, int64_t max, int64_t *src);

#endif
