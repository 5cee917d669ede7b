/* Perplexity over a token stream: windows of ctx + 1 tokens starting every ctx tokens, each window a
 * fresh sequence, ppl = exp(total NLL / predicted tokens) (the protocol of the fixtures' metadata). */
#ifndef LG_PERPLEXITY_H
#define LG_PERPLEXITY_H

#include "engine.h"

typedef struct lg_ppl_result {
    double ppl, nll_sum;
    long predicted, windows;
    double seconds, tokens_per_s;
} lg_ppl_result;

int lg_ppl_run(lg_engine *s, const int *tokens, long n, int ctx, int show_progress,
               lg_ppl_result *r, lg_err *err);

#endif
