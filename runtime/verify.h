/* `lg-eval verify`: a model's logits, perplexity and greedy continuation against a reference made by
 * Hugging Face transformers (reference.safetensors: input_ids, logits [, logit_positions], nll
 * [, nll_input_ids], greedy_ids with greedy_prompt_ids or greedy_prompt_len). */
#ifndef LG_VERIFY_H
#define LG_VERIFY_H

#include "error.h"
#include "engine.h"

typedef struct lg_verify_result {
    double rel_err;       /* ||out - ref|| / ||ref|| over every compared logit */
    double max_abs_err;
    double argmax_agree;  /* fraction of compared rows whose argmax matches */
    double argmax_gap;    /* over the rows whose argmax differs: the largest gap, in the reference,
                           * between its argmax's logit and that of ours, over the row's rms logit
                           * (0 when every row agrees): small means near-ties */
    int rows;             /* logit rows compared */
    int has_greedy, greedy_match, greedy_len, greedy_first_diff; /* -1 when all match */
    double greedy_gap;    /* at the first difference: the gap our own logits there put between our
                           * token and the reference's, over the row's rms logit (0 when they
                           * match; later tokens are not compared) */
    int has_nll;
    double ppl, ref_ppl;  /* exp(mean nll): ours and the reference's, over the same tokens */
} lg_verify_result;

/* The relative error `lg-eval verify` allows by default for an engine whose activations are of
 * type act ("f32", "f16", "bf16": lg_engine_mem.weight_dtype): 1e-4 in float32 (the CPU oracle
 * against transformers' float32 logits, or the GPU's float32 path, differ only in the order of
 * float32 sums); 2e-3 in float16 (weights and activations rounded to 11 significant bits, unit
 * roundoff 2^-11 ~ 4.9e-4: the fixtures' float16 runs measure 1.2e-4 to 5.2e-4); 1.6e-2 in bfloat16,
 * whose 8 bits make its unit roundoff 8 times float16's (on an H100, kjv-tiny-longgen measured
 * 4.5e-3 in bfloat16 against 3.7e-4 in float16, a random bfloat16 model 5.6e-3 against 7.1e-4:
 * docs/BENCHMARKS.md). */
double lg_verify_default_bound(const char *act);

/* vocab: the model's vocabulary size (the reference's logits must have as many columns). */
int lg_verify_run(lg_engine *s, int vocab, const char *ref_path, lg_verify_result *r,
                  lg_err *err);

/* Writes a reference file in the format above from this engine's run of ids[0..n): logits of every
 * row, nll, and (n_greedy > 0) the greedy continuation of the whole input, so that another run
 * (another device, --tp) can be verified against this one. Atomic: path appears complete or not. */
int lg_verify_write_reference(lg_engine *s, int vocab, const int *ids, int n, int n_greedy,
                              const char *path, lg_err *err);

#endif
