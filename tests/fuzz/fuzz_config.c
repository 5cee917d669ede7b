/* libFuzzer harness: config.json (lg_hf_config_parse), then what is computed from an accepted
 * config: RoPE frequencies at a few sequence lengths, each layer's cached positions at the longest
 * context, and the RoPE rewritten into the document in both styles. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_err err;
    lg_hf_config *c = lg_hf_config_parse((const char *)data, size, "config.json", &err);
    if (!c) {
        if (strncmp(err.msg, "config.json: ", 13) != 0)
            __builtin_trap();
        return 0;
    }
    float *inv = malloc(sizeof *inv * (size_t)(c->head_dim / 2));
    if (inv) {
        const int lens[] = {1, c->max_pos, c->max_pos < (1 << 29) ? 2 * c->max_pos : c->max_pos};
        for (int i = 0; i < 3; i++) {
            float scale;
            lg_rope_inv_freq(&c->rope, c->head_dim, c->max_pos, lens[i], inv, &scale);
        }
        free(inv);
    }
    for (int i = 0; i < c->n_layers; i++) {
        long kept = lg_attn_cached_positions(&c->layers[i], c->max_pos);
        if (kept < 0 || kept > c->max_pos)
            __builtin_trap();
    }
    lg_rope_to_config(&c->rope, c->json, 1);
    lg_rope_to_config(&c->rope, c->json, 0);
    lg_hf_config_free(c);
    return 0;
}
