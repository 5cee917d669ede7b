#include "ppl_position.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"

void lg_ppl_positions_free(lg_ppl_positions *r)
{
    if (!r)
        return;
    free(r->lo);
    free(r->hi);
    free(r->nll_sum);
    free(r->count);
    memset(r, 0, sizeof *r);
}

double lg_ppl_bucket_ppl(const lg_ppl_positions *r, int b)
{
    return r->count[b] ? exp(r->nll_sum[b] / (double)r->count[b]) : NAN;
}

int lg_ppl_by_position(lg_engine *s, const int *tokens, long n, int ctx, int n_buckets,
                       int show_progress, lg_ppl_positions *r, lg_err *err)
{
    memset(r, 0, sizeof *r);
    if (ctx < 1)
        return lg_err_set(err, "ctx must be >= 1");
    if (n_buckets < 1 || n_buckets > ctx)
        return lg_err_set(err, "buckets must be in 1..ctx (%d), got %d", ctx, n_buckets);
    if (n < 2)
        return lg_err_set(err, "need at least 2 tokens, got %ld", n);
    r->ctx = ctx;
    r->n_buckets = n_buckets;
    r->lo = malloc((size_t)n_buckets * sizeof *r->lo);
    r->hi = malloc((size_t)n_buckets * sizeof *r->hi);
    r->nll_sum = calloc((size_t)n_buckets, sizeof *r->nll_sum);
    r->count = calloc((size_t)n_buckets, sizeof *r->count);
    int *bucket_of = malloc(sizeof(int) * (size_t)ctx);
    float *nll = malloc(sizeof(float) * ((size_t)ctx + 1));
    if (!r->lo || !r->hi || !r->nll_sum || !r->count || !bucket_of || !nll) {
        free(bucket_of);
        free(nll);
        lg_ppl_positions_free(r);
        return lg_err_set(err, "out of memory");
    }
    for (int b = 0; b < n_buckets; b++) {
        r->lo[b] = (long)b * ctx / n_buckets;
        r->hi[b] = (long)(b + 1) * ctx / n_buckets;
        for (long p = r->lo[b]; p < r->hi[b]; p++)
            bucket_of[p] = b;
    }
    lg_progress pg;
    lg_progress_start(&pg, "ppl", (uint64_t)((n - 1 + ctx - 1) / ctx), "windows");
    pg.enabled &= show_progress;
    double t0 = lg_now();
    int rc = 0;
    /* the windows of lg_ppl_run: [w ctx, w ctx + ctx], the last may be shorter */
    for (long start = 0; start + 1 < n && rc == 0; start += ctx) {
        int len = n - start < (long)ctx + 1 ? (int)(n - start) : ctx + 1;
        rc = lg_engine_nll(s, tokens + start, len, 0, nll, err);
        for (int i = 0; rc == 0 && i < len - 1; i++) {
            r->nll_sum[bucket_of[i]] += nll[i];
            r->count[bucket_of[i]]++;
            r->nll_total += nll[i];
        }
        r->predicted += len - 1;
        r->windows++;
        lg_progress_update(&pg, (uint64_t)r->windows);
    }
    lg_progress_end(&pg);
    r->seconds = lg_now() - t0;
    free(bucket_of);
    free(nll);
    if (rc != 0)
        lg_ppl_positions_free(r);
    return rc;
}
