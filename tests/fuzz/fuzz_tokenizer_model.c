/* libFuzzer harness: tokenizer.model (a SentencePiece ModelProto) through the whole tokenizer
 * build (lg_tokenizer_load_memory: protobuf reader, spec checks, piece index, merge tables), then
 * an accepted model encodes and decodes a fixed text with spaces, newlines, multi-byte and invalid
 * UTF-8, and decodes every id. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef LG_FUZZ_JSON
#define LG_FUZZ_JSON 0
#define LG_FUZZ_LABEL "tokenizer.model"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_err err;
    lg_tokenizer *t = lg_tokenizer_load_memory((const char *)data, size, LG_FUZZ_JSON, LG_FUZZ_LABEL, &err);
    if (!t) {
        if (strncmp(err.msg, LG_FUZZ_LABEL ": ", sizeof LG_FUZZ_LABEL + 1) != 0)
            __builtin_trap();
        return 0;
    }
    static const char text[] = "  Hello  world!\n\tIn the beginning <s> \xE2\x96\x81\xE2\x96\x81 "
                               "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 \xFF\xC3 end ";
    int *ids = NULL, n = 0;
    if (lg_tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n, &err) == 0) {
        int vocab = lg_tokenizer_vocab_size(t);
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vocab)
                __builtin_trap();
        size_t len;
        free(lg_tokenizer_decode_len(t, ids, n, &len, &err));
    }
    free(ids);
    int vocab = lg_tokenizer_vocab_size(t);
    int all[256];
    int k = vocab < 256 ? vocab : 256;
    for (int i = 0; i < k; i++)
        all[i] = vocab - 1 - i;
    size_t len;
    free(lg_tokenizer_decode_len(t, all, k, &len, &err));
    for (int i = 0; i < k; i++)
        if (!lg_tokenizer_piece(t, all[i]))
            __builtin_trap();
    lg_tokenizer_free(t);
    return 0;
}
