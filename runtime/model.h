/* A Llama / LongGen model for the CPU forward pass: the configuration, the attention plan of every
 * layer, and every weight converted to float32 once at load (packed for lg_matmul where it is a
 * matrix). Built from a Hugging Face checkpoint directory by lg_model_load, released by lg_model_free. */
#ifndef LG_MODEL_H
#define LG_MODEL_H

#include <stddef.h>

#include "checkpoint.h"
#include "error.h"
#include "hf_config.h"
#include "longgen.h"
#include "matmul_cpu.h"
#include "quant_format.h"

typedef struct lg_layer_weights {
    float *attn_norm;  /* [dim]  input_layernorm */
    lg_pmat wqkv;      /* [(n_heads + 2 n_kv_heads) head_dim, dim]: q_proj, k_proj, v_proj stacked */
    lg_pmat wo;        /* [dim, n_heads head_dim] o_proj */
    float *mlp_norm;   /* [dim]  post_attention_layernorm */
    lg_pmat w_gate_up; /* [2 ffn_dim, dim]: gate_proj then up_proj */
    lg_pmat w_down;    /* [dim, ffn_dim] down_proj */
} lg_layer_weights;

typedef struct lg_model {
    /* shape */
    int dim, ffn_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_pos;
    float rms_eps;
    int tied;          /* lm_head is the embedding */
    lg_rope rope;
    int bos_id, eos_id; /* -1 when the config has none */
    /* the attention kind of each layer: the config's `longgen` plan, all full without one */
    lg_layer_attn *layers;
    int has_plan;      /* layers came from the config's `longgen` object or lg_model_load_plan */
    /* weights */
    float *embed;      /* [vocab_size, dim] */
    lg_layer_weights *w;
    float *final_norm; /* [dim] */
    lg_pmat lm_head;   /* [vocab_size, dim] (a packed copy of embed when tied) */
    int has_weights;   /* 0 when loaded with no_weights: the fields above are NULL */
    /* the checkpoint's weight-only quantization (formats/quant_format.h; method LG_QUANT_NONE for a
     * float checkpoint). Unless loaded with `dequantize`, its matrices stay quantized in their
     * lg_pmat's `q` (embed is always float32: it is a lookup table). */
    lg_quant_config quant;
    int quant_dequantize; /* loaded with lg_model_load_opts.dequantize */
    char *dir;
} lg_model;

/* Loads DIR (config.json + model.safetensors or a sharded index). Checks that every tensor the
 * forward pass needs exists with the shape the config implies. NULL on error. */
lg_model *lg_model_load(const char *dir, lg_err *err);
void lg_model_free(lg_model *m);

typedef struct lg_model_load_opts {
    /* configuration and plan only, no float32 weights: for a backend that reads the checkpoint
     * itself (the CUDA engine uploads a 7B model as 13.5 GB of fp16 without a 27 GB float32 copy) */
    int no_weights;
    /* a quantized checkpoint's matrices decoded to float32 at load, instead of kept quantized for
     * the dequantizing kernels (runtime/matmul_quant_cpu.h); the results are the same bit for bit */
    int dequantize;
} lg_model_load_opts;
/* lg_model_load with options (NULL = defaults). */
lg_model *lg_model_load_ex(const char *dir, const lg_model_load_opts *opts, lg_err *err);

/* Finds tensor `name` in ck and checks it is a float tensor of shape [rows] (cols < 0) or
 * [rows, cols]; the *_what strings name the config values in the message. NULL on error. */
const lg_st_tensor *lg_model_need_tensor(const lg_checkpoint *ck, const char *name, int64_t rows,
                                         const char *rows_what, int64_t cols,
                                         const char *cols_what, lg_err *err);

/* When the model runs without a plan (every layer full) although DIR holds a longgen_plan.json (as
 * a LongGen fixture's Hugging Face folder does: lg-convert --plan writes the plan into the config),
 * a note for the user saying so and how to apply it, in buf; else NULL. Without it such a model
 * silently runs full attention and misses the references made under its plan.
 * lg_model_print_plan_note: the note, if any, on stderr as "WHO: note: ...". */
const char *lg_model_plan_note(const lg_model *m, char *buf, size_t cap);
void lg_model_print_plan_note(const lg_model *m, const char *who);

/* Replaces the attention plan (n_layers entries, checked). Forward states made afterwards use it;
 * existing states keep the plan they were made with. */
int lg_model_set_layers(lg_model *m, const lg_layer_attn *layers, lg_err *err);
/* Reads a longgen_plan.json ({"full_layers":[...],"sparse":{...}}) and applies it. */
int lg_model_load_plan(lg_model *m, const char *plan_path, lg_err *err);

/* Bytes of float32 weights held. */
size_t lg_model_weight_bytes(const lg_model *m);

#endif
