/* Choosing the next token from logits: greedy at temperature 0, else temperature + nucleus (top-p)
 * sampling with a seeded generator, as llama2.c's sampler does. */
#ifndef LG_SAMPLER_H
#define LG_SAMPLER_H

#include <stdint.h>

typedef struct lg_sampler {
    int vocab;
    float temperature, top_p;
    uint64_t rng;
    struct lg_prob_index { float p; int i; } *scratch;
} lg_sampler;

int lg_sampler_init(lg_sampler *s, int vocab, float temperature, float top_p, uint64_t seed);
void lg_sampler_free(lg_sampler *s);
/* Picks a token; logits are modified in place (softmax). */
int lg_sampler_sample(lg_sampler *s, float *logits);

#endif
