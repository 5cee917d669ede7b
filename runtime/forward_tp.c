/* The tensor-parallel engine (forward_tp.h): a thread per GPU runs forward_cuda.c's rank forward on
 * its shard; the engine's operations hand each the same job and wait for all. */
#include "forward_tp.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda_rank.h"
#include "progress.h"
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
    /* the ranks' meeting points inside a job (meet); once a rank fails the group is broken: every
     * wait returns at once and the communicators are aborted, so that no rank waits for good on a
     * partner that will not come (at a meeting point or inside an all-reduce on its GPU) */
    pthread_cond_t meet_cv;
    int meet_n;
    unsigned meet_gen;
    int broken, failed_rank;
    /* this job failed on every rank alike (they agreed to stop, or the receiver of the rows
     * refused them): the group stays usable */
    int clean_fail;

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

/* LG_TP_TRACE=1: every rank's jobs and meeting points on stderr, to see where a group stops. */
static void trace(const tp_rank *R, const char *fmt, ...)
{
    static int on = -1;
    if (on < 0)
        on = getenv("LG_TP_TRACE") && strcmp(getenv("LG_TP_TRACE"), "0") != 0;
    if (!on)
        return;
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[tp %.3f] rank %d: %s\n", lg_now(), R->rank, msg);
}

/* Waits until every rank has arrived: 0, or -1 (at once, for every rank) when the group broke. */
static int meet(tp_engine *g)
{
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    unsigned gen = g->meet_gen;
    if (g->broken) {
        rc = -1;
    } else if (++g->meet_n == g->tp) {
        g->meet_n = 0;
        g->meet_gen++;
        pthread_cond_broadcast(&g->meet_cv);
    } else {
        while (gen == g->meet_gen && !g->broken)
            pthread_cond_wait(&g->meet_cv, &g->mu);
        rc = gen == g->meet_gen ? -1 : 0;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* Rank `rank` failed: the others stop waiting for it and NCCL's pending operations end (aborting a
 * communicator ends the kernels waiting on it). The group cannot be used again. */
static void break_group(tp_engine *g, int rank)
{
    pthread_mutex_lock(&g->mu);
    if (!g->broken) {
        g->broken = 1;
        g->failed_rank = rank;
        for (int i = 0; i < g->tp; i++) {
            lg_tp_comm_abort(g->comms[i]);
            g->comms[i] = NULL;
        }
    }
    pthread_cond_broadcast(&g->meet_cv);
    pthread_mutex_unlock(&g->mu);
}

/* Every rank's ok ANDed; three meetings so that no rank starts the next round before the
 * accumulator is reset. */
static int agree(void *ctx, int ok)
{
    tp_rank *R = ctx;
    tp_engine *g = R->g;
    trace(R, "agree(%d)", ok);
    pthread_mutex_lock(&g->mu);
    g->ok_all &= ok != 0;
    pthread_mutex_unlock(&g->mu);
    if (meet(g) != 0)
        return 0;
    int all = g->ok_all;
    if (meet(g) != 0)
        return 0;
    if (R->rank == 0) {
        g->ok_all = 1;
        g->clean_fail |= !all;
    }
    if (meet(g) != 0)
        return 0;
    trace(R, "agreed %d", all);
    return all;
}

/* Each rank calls this once its columns of the rows are on the host: rank 0 hands the whole rows
 * to the job's receiver when every rank has arrived, and all wait until it has read them. */
static int tp_rows(void *user, int r0, int n, const float *logits, lg_err *err)
{
    tp_rank *R = user;
    tp_engine *g = R->g;
    trace(R, "rows %d+%d ready", r0, n);
    if (meet(g) != 0)
        return lg_err_set(err, "cuda: another GPU of the group failed");
    if (R->rank == 0) {
        g->fn_rc = g->fn(g->user, r0, n, logits, &g->fn_err);
        g->clean_fail |= g->fn_rc != 0;
    }
    if (meet(g) != 0)
        return lg_err_set(err, "cuda: another GPU of the group failed");
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
        trace(R, "job %d (n %d, pos0 %ld)", (int)kind, g->n, g->pos0);
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
        trace(R, "job %d done: %d", (int)kind, R->rc);
        if (R->rc != 0 && kind == JOB_RUN && !g->clean_fail)
            break_group(g, R->rank);
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
    g->clean_fail = 0;
    g->n_done = 0;
    g->gen++;
    pthread_cond_broadcast(&g->job_cv);
    while (g->n_done < g->n_started)
        pthread_cond_wait(&g->done_cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    for (int k = 0; k < g->n_started; k++) {
        /* the rank that failed first says why; the others only saw the group break */
        int i = g->broken && k == 0 ? g->failed_rank : k;
        if (g->r[i].rc != 0) {
            if (err) {
                *err = g->r[i].err;
                lg_err_prefix(err, "GPU %d of %d", i, g->tp);
            }
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the engine's operations */

static int tp_run(tp_engine *g, const int *tokens, int n, long pos0, lg_logits_rows rows,
                  lg_cuda_rows_fn fn, void *user, lg_err *err)
{
    if (g->broken)
        return lg_err_set(err, "cuda: GPU %d of the tensor-parallel group failed in an earlier call; "
                               "make a new engine", g->failed_rank);
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
    pthread_cond_destroy(&g->meet_cv);
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
    pthread_cond_init(&g->meet_cv, NULL);
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
