/* The CUDA forward pass of one GPU, as the engines use it: forward_cuda.c makes one for the
 * single-GPU engine, forward_tp.c one per rank of a tensor-parallel group. Internal to runtime/. */
#ifndef LG_FORWARD_CUDA_RANK_H
#define LG_FORWARD_CUDA_RANK_H

#include "engine.h"
#include "tp_shard.h"

#define LG_CUDA_HEAD_ROWS 128 /* logits rows per pass of the vocabulary-wide head */

typedef struct cuda_fwd cuda_fwd;

/* What a rank is. The defaults ({0}, tp 0 read as 1) make the single-GPU forward. */
typedef struct lg_cuda_rank_opts {
    int device;      /* CUDA device ordinal */
    int tp, rank;
    void *comm;      /* NCCL communicator of this rank (tp > 1), owned by the caller */
    int skip_comm;   /* benchmarks only: leave the all-reduces out (the results are wrong) */
    /* tp > 1: called by every rank at the same point with its own ok (1/0); returns 1 only when
     * every rank's ok was 1, so that no rank enters a collective the others will not reach */
    int (*agree)(void *ctx, int ok);
    void *agree_ctx;
    /* pinned host memory of LG_CUDA_HEAD_ROWS x vocab floats shared by the ranks, each filling the
     * columns of its vocabulary range; NULL: the forward allocates its own */
    float *logits_h;
} lg_cuda_rank_opts;

/* Receives logits rows [r0, r0 + n) of a call, float32 on the host, vocab apart. */
typedef int (*lg_cuda_rows_fn)(void *user, int r0, int n, const float *logits, lg_err *err);

/* Makes the forward of one rank on the calling thread's device r->device (selected here); the
 * calling thread must make every later call on it. NULL on error. */
cuda_fwd *lg_cuda_rank_new(const lg_model *m, const lg_engine_opts *opts,
                           const lg_cuda_rank_opts *r, lg_err *err);
void lg_cuda_rank_free(cuda_fwd *f);

/* Runs tokens[0..n) at pos0 (0: a fresh sequence; else the position after the last) and hands the
 * logits of the rows `rows` asks for to fn, LG_CUDA_HEAD_ROWS rows at most per call. With tp > 1,
 * fn is called by every rank once its own columns are on the host; the caller's fn must wait for
 * the other ranks before reading the rows. */
int lg_cuda_rank_run(cuda_fwd *f, const int *tokens, int n, long pos0, lg_logits_rows rows,
                     lg_cuda_rows_fn fn, void *user, lg_err *err);
/* Checks a call's arguments as lg_cuda_rank_run does (same result on every rank). */
int lg_cuda_rank_check(const cuda_fwd *f, const int *tokens, int n, long pos0, lg_err *err);
void lg_cuda_rank_reset(cuda_fwd *f);
long lg_cuda_rank_pos(const cuda_fwd *f);
void lg_cuda_rank_kv_bytes(const cuda_fwd *f, size_t *live, size_t *alloc);
void lg_cuda_rank_mem(const cuda_fwd *f, lg_engine_mem *out);

/* Row receivers the engines share: copy into logits (every row, or the last only)... */
typedef struct lg_cuda_copy_rows {
    float *out;
    int vocab;
    int last_only;
} lg_cuda_copy_rows;
int lg_cuda_rows_copy(void *user, int r0, int n, const float *logits, lg_err *err);

/* ... or -log softmax(logits)[next token], in double as the CPU forward. */
typedef struct lg_cuda_nll_rows {
    const int *tokens; /* the call's tokens: row r predicts tokens[r + 1] */
    float *nll;
    int vocab;
} lg_cuda_nll_rows;
int lg_cuda_rows_nll(void *user, int r0, int n, const float *logits, lg_err *err);

#endif
