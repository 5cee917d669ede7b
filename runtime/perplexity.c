#include "perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"

int lg_ppl_run(lg_engine *s, const int *tokens, long n, int ctx, int show_progress,
               lg_ppl_result *r, lg_err *err)
{
    memset(r, 0, sizeof *r);
    if (ctx < 1)
        return lg_err_set(err, "ctx must be >= 1");
    if (n < 2)
        return lg_err_set(err, "need at least 2 tokens, got %ld", n);
    float *nll = malloc(sizeof(float) * ((size_t)ctx + 1));
    if (!nll)
        return lg_err_set(err, "out of memory");
    long n_windows = (n - 1 + ctx - 1) / ctx;
    lg_progress pg;
    lg_progress_start(&pg, "ppl", (uint64_t)n_windows, "windows");
    pg.enabled &= show_progress;
    double t0 = lg_now();
    int rc = 0;
    /* window w covers tokens [w ctx, w ctx + ctx]; the last may be shorter */
    for (long start = 0; start + 1 < n && rc == 0; start += ctx) {
        int len = n - start < (long)ctx + 1 ? (int)(n - start) : ctx + 1;
        rc = lg_engine_nll(s, tokens + start, len, 0, nll, err);
        for (int i = 0; rc == 0 && i < len - 1; i++)
            r->nll_sum += nll[i];
        r->predicted += len - 1;
        r->windows++;
        lg_progress_update(&pg, (uint64_t)r->windows);
    }
    lg_progress_end(&pg);
    free(nll);
    r->seconds = lg_now() - t0;
    r->ppl = exp(r->nll_sum / (double)r->predicted);
    r->tokens_per_s = r->seconds > 0 ? (double)r->predicted / r->seconds : 0;
    return rc;
}
