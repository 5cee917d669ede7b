/* `lg-convert inspect DIR`: what a checkpoint is, its layer plan, and what its KV cache costs. */
#ifndef LG_INSPECT_H
#define LG_INSPECT_H

#include <stdio.h>

#include "error.h"
#include "hf_config.h"

typedef struct lg_kv_bytes {
    double full_model;   /* every layer full attention */
    double longgen;      /* the checkpoint's plan */
} lg_kv_bytes;

/* KV cache bytes at context T with elem_bytes per cached element (K and V, every KV head). */
lg_kv_bytes lg_kv_cache_bytes(const lg_hf_config *c, long T, int elem_bytes);

/* Prints the report; context 0 means the model's max_position_embeddings. */
int lg_inspect(const char *dir, long context, int json, FILE *out, lg_err *err);

#endif
