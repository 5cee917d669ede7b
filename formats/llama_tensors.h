/* The tensors of a LlamaForCausalLM checkpoint: names and shapes implied by its config, and the
 * check that a checkpoint holds exactly those (plus the rotary inv_freq buffers that old Llama-2
 * downloads carry). */
#ifndef LG_LLAMA_TENSORS_H
#define LG_LLAMA_TENSORS_H

#include <stdint.h>

#include "checkpoint.h"
#include "hf_config.h"

#define LG_TENSOR_NAME_MAX 128

typedef struct lg_tensor_spec {
    char name[LG_TENSOR_NAME_MAX];
    int ndim;
    int64_t shape[2];
} lg_tensor_spec;

/* Lists the tensors in canonical order (embeddings, layer 0..L-1, final norm, lm_head unless tied).
 * *out is malloc'd; returns the count, or -1 on allocation failure. */
int lg_llama_tensor_specs(const lg_hf_config *c, lg_tensor_spec **out);

/* True when name is model.layers.N.self_attn.rotary_emb.inv_freq (sets *layer). */
int lg_is_rotary_inv_freq(const char *name, int *layer);

/* Checks every expected tensor is present with the config's shape and a float dtype, every
 * inv_freq buffer agrees with the config's RoPE, and (unless allow_extra) nothing else is there.
 * *n_extra receives the number of unknown tensors tolerated (may be NULL). */
int lg_llama_check(const lg_hf_config *c, const lg_checkpoint *ck, int allow_extra, int *n_extra,
                   lg_err *err);

#endif
