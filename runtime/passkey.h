/* Pass-key retrieval (llama.cpp's examples/passkey, and the LongGen paper's evaluation): a 5-digit
 * key hidden at a random place in repeated filler text; the model must say it back.
 *
 * The prompt, tokenized as one string with BOS in front (exactly how the kjv-pg-longgen and
 * kjv-tiny-longgen fixtures were finetuned: their passkey-reference.json holds the ids):
 *   INTRO + FILLER x at + NEEDLE(key) + FILLER x (n - at) + QUESTION
 * where n is the most fillers that keep the prompt within the length asked, and the answer is
 * encode(str(key)): the piece '▁' and five digits. */
#ifndef LG_PASSKEY_H
#define LG_PASSKEY_H

#include <stdint.h>

#include "error.h"
#include "engine.h"
#include "tokenizer.h"

#define LG_PASSKEY_INTRO "There is an important info hidden inside a lot of irrelevant text. Find it and " \
    "memorize it. I will quiz you about the important information there."
#define LG_PASSKEY_FILLER " The grass is green. The sky is blue. The sun is yellow. Here we go. There and " \
    "back again."
#define LG_PASSKEY_QUESTION " What is the pass key? The pass key is"
/* The needle: " The pass key is KEY. Remember it. KEY is the pass key." */

/* The prompt's text (malloc'd, NUL-terminated). */
char *lg_passkey_text(long n_fill, long at, int key);

/* Fillers for a prompt of at most `length` tokens (BOS included): (length - overhead) / per_filler,
 * where overhead is the prompt without filler. Error when not even one fits. */
long lg_passkey_fillers(const lg_tokenizer *t, long length, lg_err *err);

/* The prompt's ids; *key_pos (may be NULL) = index of the first token of the key's text (the '▁'
 * before its digits). Free *ids. */
int lg_passkey_prompt(const lg_tokenizer *t, long n_fill, long at, int key, int **ids, int *n_ids,
                      int *key_pos, lg_err *err);

/* One trial: the greedy answer of as many tokens as encode(str(key)) has; *correct when its digits,
 * after any spaces, are the key. out (32 bytes, may be NULL) gets the answer's text. */
int lg_passkey_trial(lg_engine *s, const lg_tokenizer *t, long n_fill, long at, int key,
                     int *correct, char *out, lg_err *err);

typedef struct lg_passkey_result {
    long length;        /* asked */
    long n_fill;
    long prompt_tokens; /* the same for every key and position */
    int trials, correct;
    double accuracy, seconds;
} lg_passkey_result;

/* `trials` trials at one length, each with a random key in 10000..99999 and a random position
 * 0..n_fill (uniform), drawn from *rng (splitmix64 state, advanced). */
int lg_passkey_run(lg_engine *s, const lg_tokenizer *t, long length, int trials, uint64_t *rng,
                   lg_passkey_result *r, lg_err *err);

#endif
