/* Hugging Face config.json for LlamaForCausalLM, in both the transformers 4.x style (`torch_dtype`,
 * `rope_theta`, `rope_scaling` with `type` or `rope_type`) and the 5.x style (`dtype`,
 * `rope_parameters`), plus the optional `longgen` object that lg-convert adds. */
#ifndef LG_HF_CONFIG_H
#define LG_HF_CONFIG_H

#include <cjson/cJSON.h>

#include "dtype.h"
#include "error.h"
#include "longgen.h"

typedef enum lg_rope_type {
    LG_ROPE_DEFAULT,
    LG_ROPE_LINEAR,
    LG_ROPE_DYNAMIC,
    LG_ROPE_YARN,
    LG_ROPE_LLAMA3,
} lg_rope_type;

/* RoPE as transformers' ROPE_INIT_FUNCTIONS define it; fields unused by a type are 0. */
typedef struct lg_rope {
    lg_rope_type type;
    double theta;
    double factor;                 /* linear, dynamic, yarn, llama3 */
    int original_max_pos;          /* yarn, llama3 (0 = config's max_position_embeddings) */
    double attention_factor;       /* yarn; 0 = transformers' default 0.1*ln(factor)+1 */
    double beta_fast, beta_slow;   /* yarn; defaults 32 and 1 */
    double low_freq_factor, high_freq_factor; /* llama3 */
} lg_rope;

const char *lg_rope_type_name(lg_rope_type t);
int lg_rope_type_from_name(const char *name, lg_rope_type *out);

typedef struct lg_hf_config {
    char *path;
    int hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim, vocab_size;
    int max_pos;
    double rms_eps;
    int tie_embeddings;
    int has_dtype;      /* the config named a dtype */
    lg_dtype dtype;
    int bos_id, eos_id; /* -1 when absent */
    int v5_style;       /* 1 when rope was given as rope_parameters */
    lg_rope rope;
    lg_layer_attn *layers; /* n_layers entries; all full when there is no longgen object */
    int has_longgen;
    cJSON *json;        /* the whole document, owned; lg-convert rewrites it */
} lg_hf_config;

/* Reads and validates DIR/config.json (or a file path). NULL on error. */
lg_hf_config *lg_hf_config_read(const char *path, lg_err *err);
/* Parses a config held in memory; `label` names it in messages. */
lg_hf_config *lg_hf_config_parse(const char *text, size_t len, const char *label, lg_err *err);
void lg_hf_config_free(lg_hf_config *c);

/* Frequencies of RoPE exactly as transformers computes inv_freq for `rope`: in float32, as torch
 * does, so that angles pos * inv_freq (also to be formed in float32) match the reference bit for bit
 * where possible. out has head_dim/2 entries. *attn_scale receives the factor that multiplies cos
 * and sin (yarn's attention_factor, 1 otherwise). For dynamic NTK the result depends on the sequence
 * length seq_len (transformers recomputes the base when seq_len > max_pos). */
void lg_rope_inv_freq(const lg_rope *rope, int head_dim, int max_pos, int seq_len, float *out,
                      float *attn_scale);
/* Checks a rope's parameters (factor >= 1 for scaled kinds, theta > 0, ...). `label` names the file. */
int lg_rope_check(const lg_rope *rope, const char *label, lg_err *err);

/* Writes rope into a config document in the style given (v5: rope_parameters; v4: rope_theta +
 * rope_scaling with both `type` and `rope_type`). Removes the keys of the other style. */
void lg_rope_to_config(const lg_rope *rope, cJSON *config, int v5_style);

#endif
