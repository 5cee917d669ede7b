/* The tensor-parallel engine (forward_tp.h): a thread per GPU runs forward_cuda.c's rank forward on
 * its shard; the engine's operations hand each the same job and wait for all. */
#include "forward_tp.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda_rank.h"
#include "tp_comm.h"
#include "tp_shard.h"

typedef enum { JOB_INIT, JOB_RUN, JOB_RESET, JOB_QUIT } job_kind;

typedef struct tp_engine tp_engine;

typedef struct tp_rank {
    tp_engine *g;
    int rank;
    pthread_t thread;
    cuda_fwd *f;
    int rc;
    lg_err err;
} tp_rank;

struct tp_engine {
    int tp;
    const lg_model *m;
    lg_engine_opts opts;
    void *comms[LG_TP_MAX];
    tp_rank r[LG_TP_MAX];
    float *logits_h; /* [LG_CUDA_HEAD_ROWS, vocab] pinned, every rank fills its columns */

    /* jobs: the main thread bumps gen and waits until every started rank has counted itself done */
    pthread_mutex_t mu;
    pthread_cond_t job_cv, done_cv;
    unsigned gen;
    int n_started, n_done;
    pthread_barrier_t ranks; /* the ranks alone, inside a job */
    int have_barrier;

    /* the job */
    job_kind kind;
    const int *tokens;
    int n;
    long pos0;
    lg_logits_rows rows;
    lg_cuda_rows_fn fn;
    void *user;

    /* agreement (lg_cuda_rank_opts.agree) and the rows handed to fn */
    int ok_all;
    int fn_rc;
    lg_err fn_err;
};

/* ---------------------------------------------------------------- inside a job */

/* Every rank's ok ANDed; three barriers so that no rank starts the next round before the
 * accumulator is reset. */
static int agree(void *ctx, int ok)
{
    tp_rank *R = ctx;
    tp_engine *g = R->g;
    pthread_mutex_lock(&g->mu);
    g->ok_all &= ok != 0;
    pthread_mutex_unlock(&g->mu);
    pthread_barrier_wait(&g->ranks);
    int all = g->ok_all;
    pthread_barrier_wait(&g->ranks);
    if (R->rank == 0)
        g->ok_all = 1;
    pthread_barrier_wait(&g->ranks);
    return all;
}

/* Each rank calls this once its columns of the rows are on the host: rank 0 hands the whole rows
 * to the job's receiver when every rank has arrived, and all wait until it has read them. */
static int tp_rows(void *user, int r0, int n, const float *logits, lg_err *err)
{
    tp_rank *R = user;
    tp_engine *g = R->g;
    pthread_barrier_wait(&g->ranks);
    if (R->rank == 0)
        g->fn_rc = g->fn(g->user, r0, n, logits, &g->fn_err);
    pthread_barrier_wait(&g->ranks);
    if (g->fn_rc != 0) {
        *err = g->fn_err;
        return -1;
    }
    return 0;
}

static void *rank_main(void *arg)
{
    tp_rank *R = arg;
    tp_engine *g = R->g;
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (g->gen == seen)
            pthread_cond_wait(&g->job_cv, &g->mu);
        seen = g->gen;
        job_kind kind = g->kind;
        pthread_mutex_unlock(&g->mu);
        switch (kind) {
        case JOB_INIT: {
            lg_cuda_rank_opts ro = {.device = R->rank,
                                    .tp = g->tp,
                                    .rank = R->rank,
                                    .comm = g->comms[R->rank],
                                    .skip_comm = g->opts.tp_skip_comm,
                                    .agree = agree,
                                    .agree_ctx = R,
                                    .logits_h = g->logits_h};
            R->f = lg_cuda_rank_new(g->m, &g->opts, &ro, &R->err);
            R->rc = R->f ? 0 : -1;
            break;
        }
        case JOB_RUN:
            R->rc = lg_cuda_rank_run(R->f, g->tokens, g->n, g->pos0, g->rows, tp_rows, R, &R->err);
            break;
        case JOB_RESET:
            lg_cuda_rank_reset(R->f);
            R->rc = 0;
            break;
        case JOB_QUIT:
            lg_cuda_rank_free(R->f);
            R->f = NULL;
            R->rc = 0;
            break;
        }
        pthread_mutex_lock(&g->mu);
        if (++g->n_done == g->n_started)
            pthread_cond_signal(&g->done_cv);
        pthread_mutex_unlock(&g->mu);
        if (kind == JOB_QUIT)
            return NULL;
    }
}

/* Runs the job set in g on every rank; 0, or -1 with the first failing rank's message. */
static int dispatch(tp_engine *g, job_kind kind, lg_err *err)
{
    pthread_mutex_lock(&g->mu);
    g->kind = kind;
    g->n_done = 0;
    g->gen++;
    pthread_cond_broadcast(&g->job_cv);
    while (g->n_done < g->n_started)
        pthread_cond_wait(&g->done_cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < g->n_started; i++)
        if (g->r[i].rc != 0) {
            if (err) {
                *err = g->r[i].err;
                if (kind == JOB_INIT)
                    lg_err_prefix(err, "GPU %d of %d", i, g->tp);
            }
            return -1;
        }
    return 0;
}

/* ---------------------------------------------------------------- the engine's operations */

static int tp_run(tp_engine *g, const int *tokens, int n, long pos0, lg_logits_rows rows,
                  lg_cuda_rows_fn fn, void *user, lg_err *err)
{
    /* refused calls never reach the ranks (each would refuse it the same way) */
    if (lg_cuda_rank_check(g->r[0].f, tokens, n, pos0, err) != 0)
        return -1;
    g->tokens = tokens;
    g->n = n;
    g->pos0 = pos0;
    g->rows = rows;
    g->fn = fn;
    g->user = user;
    g->fn_rc = 0;
    return dispatch(g, JOB_RUN, err);
}

static int tp_tokens(void *impl, const int *tokens, int n, long pos0, lg_logits_rows rows,
                     float *logits, lg_err *err)
{
    tp_engine *g = impl;
    if (rows != LG_LOGITS_NONE && !logits)
        return lg_err_set(err, "forward: logits requested without a buffer");
    lg_cuda_copy_rows c = {logits, g->m->vocab_size, rows == LG_LOGITS_LAST};
    return tp_run(g, tokens, n, pos0, rows, lg_cuda_rows_copy, &c, err);
}

static int tp_nll(void *impl, const int *tokens, int n, long pos0, float *nll, lg_err *err)
{
    tp_engine *g = impl;
    int vocab = g->m->vocab_size;
    if (n < 2)
        return lg_err_set(err, "nll: %d tokens; at least 2 are needed", n);
    if (tokens[n - 1] < 0 || tokens[n - 1] >= vocab)
        return lg_err_set(err, "nll: token %d at index %d is outside the vocabulary (0..%d)",
                          tokens[n - 1], n - 1, vocab - 1);
    lg_cuda_nll_rows c = {tokens, nll, vocab};
    return tp_run(g, tokens, n - 1, pos0, LG_LOGITS_ALL, lg_cuda_rows_nll, &c, err);
}

static int tp_greedy(void *impl, const int *prompt, int n_prompt, int n_new, int *out, lg_err *err)
{
    tp_engine *g = impl;
    if (n_new <= 0)
        return 0;
    float *logits = malloc(sizeof(float) * (size_t)g->m->vocab_size);
    if (!logits)
        return lg_err_set(err, "greedy: out of memory");
    int rc = tp_tokens(g, prompt, n_prompt, 0, LG_LOGITS_LAST, logits, err);
    for (int j = 0; rc == 0 && j < n_new; j++) {
        out[j] = lg_argmax(logits, g->m->vocab_size);
        if (j + 1 < n_new)
            rc = tp_tokens(g, &out[j], 1, n_prompt + j, LG_LOGITS_LAST, logits, err);
    }
    free(logits);
    return rc;
}

static void tp_reset(void *impl)
{
    dispatch(impl, JOB_RESET, NULL);
}

static long tp_pos(const void *impl)
{
    const tp_engine *g = impl;
    return lg_cuda_rank_pos(g->r[0].f);
}

static void tp_kv_bytes(const void *impl, size_t *live, size_t *alloc)
{
    const tp_engine *g = impl;
    for (int k = 0; k < 3; k++) {
        if (live)
            live[k] = 0;
        if (alloc)
            alloc[k] = 0;
    }
    for (int i = 0; i < g->tp; i++) {
        size_t l[3], a[3];
        lg_cuda_rank_kv_bytes(g->r[i].f, l, a);
        for (int k = 0; k < 3; k++) {
            if (live)
                live[k] += l[k];
            if (alloc)
                alloc[k] += a[k];
        }
    }
}

static void tp_mem(const void *impl, lg_engine_mem *out)
{
    const tp_engine *g = impl;
    memset(out, 0, sizeof *out);
    out->n_devices = g->tp;
    for (int i = 0; i < g->tp; i++) {
        lg_engine_mem r;
        lg_cuda_rank_mem(g->r[i].f, &r);
        out->weight_dtype = r.weight_dtype;
        out->weight_bytes += r.weight_bytes;
        out->alloc_peak += r.alloc_peak;
        out->dev_peak[i] = r.device_peak;
        out->dev_weight_bytes[i] = r.weight_bytes;
        if (r.device_peak >= out->device_peak) {
            out->device_peak = r.device_peak;
            out->device_total = r.device_total;
        }
        if (i == 0)
            snprintf(out->device_name, sizeof out->device_name, "%d x %s (tensor parallel)", g->tp,
                     r.device_name);
    }
}

static void tp_destroy(void *impl)
{
    tp_engine *g = impl;
    if (!g)
        return;
    if (g->n_started > 0)
        dispatch(g, JOB_QUIT, NULL);
    for (int i = 0; i < g->n_started; i++)
        pthread_join(g->r[i].thread, NULL);
    for (int i = 0; i < g->tp; i++)
        lg_tp_comm_destroy(g->comms[i]);
    if (g->logits_h)
        cudaFreeHost(g->logits_h);
    if (g->have_barrier)
        pthread_barrier_destroy(&g->ranks);
    pthread_cond_destroy(&g->job_cv);
    pthread_cond_destroy(&g->done_cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static const lg_engine_ops tp_ops = {
    .name = "cuda",
    .destroy = tp_destroy,
    .reset = tp_reset,
    .pos = tp_pos,
    .tokens = tp_tokens,
    .nll = tp_nll,
    .greedy = tp_greedy,
    .kv_bytes = tp_kv_bytes,
    .mem = tp_mem,
};

/* ---------------------------------------------------------------- construction */

/* A thread per GPU; when one cannot start, those started are told to quit by tp_destroy. */
static int start_threads(tp_engine *g, lg_err *err)
{
    for (int i = 0; i < g->tp; i++) {
        g->r[i].g = g;
        g->r[i].rank = i;
        if (pthread_create(&g->r[i].thread, NULL, rank_main, &g->r[i]) != 0)
            return lg_err_set(err, "--tp %d: cannot start a thread per GPU", g->tp);
        g->n_started = i + 1;
    }
    return 0;
}

int lg_engine_tp_init(lg_engine *e, const lg_model *m, const lg_engine_opts *opts, lg_err *err)
{
    int tp = opts->tp;
    lg_tp_dims dims = lg_tp_dims_of(m);
    if (lg_tp_check(&dims, tp, err) != 0) {
        lg_err_prefix(err, "%s", m->dir);
        return -1;
    }
    if (!lg_tp_comm_available())
        return lg_tp_comms_create(tp, NULL, NULL, err); /* its message says why */
    tp_engine *g = calloc(1, sizeof *g);
    if (!g)
        return lg_err_set(err, "cuda engine: out of memory");
    g->tp = tp;
    g->m = m;
    g->opts = *opts;
    g->ok_all = 1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->job_cv, NULL);
    pthread_cond_init(&g->done_cv, NULL);
    int devices[LG_TP_MAX];
    for (int i = 0; i < tp; i++)
        devices[i] = i;
    if (lg_tp_comms_create(tp, devices, g->comms, err) != 0)
        goto fail;
    if (cudaHostAlloc((void **)&g->logits_h,
                      sizeof(float) * LG_CUDA_HEAD_ROWS * (size_t)m->vocab_size,
                      cudaHostAllocPortable) != cudaSuccess) {
        g->logits_h = NULL;
        lg_err_set(err, "cuda engine: cannot allocate pinned host memory for the logits: %s",
                   cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    if (pthread_barrier_init(&g->ranks, NULL, (unsigned)tp) != 0) {
        lg_err_set(err, "--tp %d: cannot make the threads' barrier", tp);
        goto fail;
    }
    g->have_barrier = 1;
    if (start_threads(g, err) != 0)
        goto fail;
    if (dispatch(g, JOB_INIT, err) != 0)
        goto fail;
    e->ops = &tp_ops;
    e->impl = g;
    return 0;
fail:
    tp_destroy(g);
    return -1;
}
