#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "forward_cpu.h"

int lg_sampler_init(lg_sampler *s, int vocab, float temperature, float top_p, uint64_t seed)
{
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x853c49e6748fea9bULL;
    s->scratch = malloc(sizeof *s->scratch * (size_t)vocab);
    return s->scratch ? 0 : -1;
}

void lg_sampler_free(lg_sampler *s)
{
    free(s->scratch);
    s->scratch = NULL;
}

static float next_uniform(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

static void softmax(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max)
            max = x[i];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] = (float)(x[i] / sum);
}

static int by_prob_desc(const void *a, const void *b)
{
    float pa = ((const struct lg_prob_index *)a)->p, pb = ((const struct lg_prob_index *)b)->p;
    return pa > pb ? -1 : pa < pb;
}

/* Samples from the smallest set of tokens whose probability exceeds top_p. Tokens below
 * (1 - top_p) / (n - 1) cannot be in that set and are skipped before sorting (llama2.c's trick). */
static int sample_top_p(lg_sampler *s, const float *p, float coin)
{
    int n = 0;
    float cutoff = (1.0f - s->top_p) / (float)(s->vocab - 1);
    for (int i = 0; i < s->vocab; i++)
        if (p[i] >= cutoff)
            s->scratch[n++] = (struct lg_prob_index){p[i], i};
    qsort(s->scratch, (size_t)n, sizeof *s->scratch, by_prob_desc);
    float cum = 0;
    int last = n - 1;
    for (int i = 0; i < n; i++) {
        cum += s->scratch[i].p;
        if (cum > s->top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cum, acc = 0;
    for (int i = 0; i <= last; i++) {
        acc += s->scratch[i].p;
        if (r < acc)
            return s->scratch[i].i;
    }
    return s->scratch[last].i;
}

int lg_sampler_sample(lg_sampler *s, float *logits)
{
    if (s->temperature <= 0)
        return lg_argmax(logits, s->vocab);
    for (int i = 0; i < s->vocab; i++)
        logits[i] /= s->temperature;
    softmax(logits, s->vocab);
    float coin = next_uniform(&s->rng);
    if (s->top_p > 0 && s->top_p < 1)
        return sample_top_p(s, logits, coin);
    float acc = 0;
    for (int i = 0; i < s->vocab; i++) {
        acc += logits[i];
        if (coin < acc)
            return i;
    }
    return s->vocab - 1;
}
