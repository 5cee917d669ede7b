/* `lg-convert synth`: a random-weight Llama checkpoint of any shape (Llama-2 7B/13B/70B widths at
 * any depth), written as Hugging Face would, for benchmarks and multi-GPU tests without downloads. */
#ifndef LG_SYNTH_H
#define LG_SYNTH_H

#include <stdint.h>

#include "dtype.h"
#include "error.h"

typedef struct lg_synth_opts {
    const char *out_dir;
    int hidden, intermediate, layers, heads, kv_heads, vocab, max_pos;
    int tie;
    lg_dtype dtype;
    int shards;      /* number of safetensors files (1: model.safetensors) */
    uint64_t seed;
    int force;
} lg_synth_opts;

/* Fills the widths of a named Llama-2 shape ("7b", "13b", "70b", "tiny"); -1 if unknown. */
int lg_synth_preset(const char *name, lg_synth_opts *o);
int lg_synth_write(const lg_synth_opts *o, lg_err *err);

#endif
