/* libFuzzer harness: longgen_plan.json (lg_plan_parse) for a 6-layer model (the fixtures') and an
 * 80-layer one (Llama-2 70B); an accepted plan must give every layer valid parameters. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "longgen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int n_layers[] = {6, 80};
    lg_layer_attn layers[80];
    for (int k = 0; k < 2; k++) {
        lg_err err;
        memset(layers, 0xa5, sizeof layers); /* garbage, so an unset layer shows */
        if (lg_plan_parse((const char *)data, size, "longgen_plan.json", n_layers[k], layers, &err) != 0) {
            if (strncmp(err.msg, "longgen_plan.json: ", 19) != 0)
                __builtin_trap();
            continue;
        }
        for (int i = 0; i < n_layers[k]; i++) {
            if (lg_layer_attn_check(&layers[i], "layer", &err) != 0)
                __builtin_trap();
            long kept = lg_attn_cached_positions(&layers[i], 1L << 30);
            if (kept < 0 || kept > 1L << 30)
                __builtin_trap();
        }
    }
    return 0;
}
