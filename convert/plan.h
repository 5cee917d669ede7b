/* The layer plan and RoPE of a conversion: which layers stay full, which sparse pattern the others
 * use, and the RoPE/context the output declares. Parsed from lg-convert's options. */
#ifndef LG_PLAN_H
#define LG_PLAN_H

#include "hf_config.h"
#include "longgen.h"

#define LG_DEFAULT_MAX_CONTEXT 131072
/* Following Fu et al. 2024 ("Data Engineering for Scaling Language Models to 128K Context"), whose
 * continued-pretraining recipe LongGen uses: raise Llama-2's RoPE base from 10,000 to 5,000,000. */
#define LG_DEFAULT_ROPE_THETA 5000000.0

typedef struct lg_plan_request {
    const char *full_layers; /* NULL: middle third; "none"; or "10-20", "2,3", "0-3,8" */
    const char *sparse;      /* NULL: sink_window:sink=64,window=4096 */
    const char *plan_file;   /* longgen_plan.json (full_layers + sparse); excludes the two above */
    const char *rope;        /* NULL: default for the context; "keep"; "theta:base=B"; ... */
    long max_context;        /* 0: LG_DEFAULT_MAX_CONTEXT (or keep with --rope keep) */
} lg_plan_request;

typedef struct lg_plan {
    int n_layers;
    lg_layer_attn *layers; /* owned */
    lg_rope rope;
    int max_pos;           /* max_position_embeddings written */
} lg_plan;

/* Middle round(L/3) layers full (the paper keeps full attention in the middle third). */
void lg_plan_default_full(int n_layers, unsigned char *is_full);
/* Parses "none" or a list of indices and ranges ("10-20", "2,3"). */
int lg_plan_parse_layer_list(const char *s, int n_layers, unsigned char *is_full, lg_err *err);
/* Parses "sink_window:sink=S,window=W" or "block_strided:block=B,local=L,stride=V" (missing
 * parameters take the defaults S=64 W=4096, B=64 L=16 V=8). */
int lg_plan_parse_sparse(const char *s, lg_layer_attn *out, lg_err *err);
/* Parses --rope against the source config's RoPE and context. */
int lg_plan_parse_rope(const char *s, long max_context, const lg_hf_config *src, lg_rope *out,
                       int *max_pos, lg_err *err);
/* Builds the whole plan for a source config. */
int lg_plan_build(const lg_plan_request *req, const lg_hf_config *src, lg_plan *out, lg_err *err);
void lg_plan_free(lg_plan *p);

/* "10-20 full, 0-9,21-31 sink_window(sink=64,window=4096)" into buf. */
void lg_plan_describe(const lg_layer_attn *layers, int n_layers, char *buf, size_t n);
/* Compact "2-3,5" list of layers of one kind (kind_match) into buf. */
void lg_layers_of_kind(const lg_layer_attn *layers, int n_layers, lg_attn_kind kind, char *buf,
                       size_t n);
void lg_rope_describe(const lg_rope *r, char *buf, size_t n);

#endif
