/* Loss by context position: the perplexity protocol of perplexity.h (windows of ctx + 1 tokens every
 * ctx tokens, each a fresh sequence), with each predicted token's loss added to the bucket of its
 * position in the window. A model that uses long context has a lower loss late in the window; one
 * that does not has a flat curve (or a rising one past its trained length). */
#ifndef LG_PPL_POSITION_H
#define LG_PPL_POSITION_H

#include "engine.h"

typedef struct lg_ppl_positions {
    int ctx, n_buckets;
    /* bucket b holds the predictions of tokens at window positions 1 + [lo[b], hi[b]) (the token at
     * position p + 1 is predicted from positions 0..p) */
    long *lo, *hi;
    double *nll_sum;
    long *count;
    long windows, predicted;
    double nll_total, seconds;
} lg_ppl_positions;

/* n_buckets in 1..ctx of equal widths (to a token). Free with lg_ppl_positions_free. */
int lg_ppl_by_position(lg_engine *s, const int *tokens, long n, int ctx, int n_buckets,
                       int show_progress, lg_ppl_positions *r, lg_err *err);
void lg_ppl_positions_free(lg_ppl_positions *r);

/* exp(mean loss) of bucket b; NaN when it is empty. */
double lg_ppl_bucket_ppl(const lg_ppl_positions *r, int b);

#endif
