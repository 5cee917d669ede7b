/* The float32 forward pass on the CPU: the oracle the other backends are checked against. It follows
 * transformers' LlamaForCausalLM operation for operation (RMSNorm in float32, RoPE in the rotate-half
 * layout with cos/sin from float32 angles, GQA, softmax scaled by 1/sqrt(head_dim), SwiGLU), with each
 * layer attending under its LongGen mask (formats/longgen.h) over a KV cache shaped by it
 * (runtime/kvcache.h).
 *
 * A state processes one sequence at a time, in calls of any number of tokens: a prompt in one call
 * (prefill, done internally in chunks of opts.max_chunk rows as batched matrix products), then one
 * token per call (decode). Results do not depend on how a sequence is split into calls, nor on the
 * thread count. */
#ifndef LG_FORWARD_CPU_H
#define LG_FORWARD_CPU_H

#include <stddef.h>

#include "error.h"
#include "model.h"

typedef struct lg_forward_state lg_forward_state;

typedef struct lg_forward_opts {
    int max_chunk; /* rows per internal step: bounds the scratch and the sparse rings; 0 = 256 */
    int max_seq;   /* positions reserved for full layers (their caches grow past it); 0 = max_pos */
    int n_threads; /* 0 = every online CPU */
} lg_forward_opts;

/* Which rows of a call's logits to compute (the vocab-wide head is the costly part of small models). */
typedef enum lg_logits_rows {
    LG_LOGITS_NONE, /* fill the cache only */
    LG_LOGITS_LAST, /* logits of the last token: [vocab_size] */
    LG_LOGITS_ALL,  /* logits of every token of the call: [n, vocab_size] */
} lg_logits_rows;

/* Called after every layer with the residual stream x [n, dim] of the rows at positions
 * pos0 .. pos0 + n - 1 (for tests and debugging). */
typedef void (*lg_hidden_fn)(void *user, int layer, long pos0, int n, const float *x);

/* Makes a state for m with the attention plan m has now (lg_model_set_layers before this). opts may
 * be NULL for defaults. The model must outlive the state. NULL on error. */
lg_forward_state *lg_forward_state_new(const lg_model *m, const lg_forward_opts *opts, lg_err *err);
void lg_forward_state_free(lg_forward_state *s);

/* Forgets the sequence (pos0 = 0 in lg_forward_tokens does the same). */
void lg_forward_reset(lg_forward_state *s);
/* Positions processed so far: the pos0 the next call continues at. */
long lg_forward_pos(const lg_forward_state *s);
void lg_forward_set_hidden_hook(lg_forward_state *s, lg_hidden_fn fn, void *user);

/* Runs tokens[0..n) at positions pos0 .. pos0 + n - 1 and writes the logits `rows` asks for.
 * pos0 is 0 (a new sequence) or lg_forward_pos(s) (continue). On error the sequence is forgotten. */
int lg_forward_tokens(lg_forward_state *s, const int *tokens, int n, long pos0, lg_logits_rows rows,
                      float *logits, lg_err *err);

/* Runs tokens[0..n-1) at pos0 .. and writes nll[t] = -log p(tokens[t + 1] | tokens[..t]) for
 * t < n - 1 (natural log; log-softmax in double). For perplexity over windows of ctx + 1 tokens:
 * pass each window with pos0 = 0. */
int lg_forward_nll(lg_forward_state *s, const int *tokens, int n, long pos0, float *nll,
                   lg_err *err);

/* Starts a new sequence with the prompt and writes the n_new greedily chosen tokens that follow
 * (no stop at EOS; the caller decides). */
int lg_forward_greedy(lg_forward_state *s, const int *prompt, int n_prompt, int n_new, int *out,
                      lg_err *err);

/* Index of the first largest value (torch.argmax's choice). */
int lg_argmax(const float *x, int n);

/* KV cache bytes summed over the layers of each kind, indexed by lg_attn_kind (3 entries each):
 * held now (live positions) and allocated. Either pointer may be NULL. */
void lg_forward_kv_bytes(const lg_forward_state *s, size_t *live, size_t *alloc);

#endif
