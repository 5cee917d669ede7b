/* libFuzzer harness: the byte-plane zstd codec of packages (formats/byteplane.h). The first 4
 * bytes choose the parameters (transform, skip, chunk); the rest is used twice:
 *   - as a compressed stream fed to the streaming decoder in pieces of varying size, which must
 *     refuse garbage and never produce more than it was told to expect;
 *   - as content compressed and decompressed again, which must give back the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "byteplane.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct counted {
    uint64_t n;
} counted;

static int count_bytes(void *ctx, const void *p, size_t n, lg_err *err)
{
    (void)p;
    (void)err;
    ((counted *)ctx)->n += n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    lg_bp_params p = {.transform = data[0] & 1, .skip = data[1], .chunk = 2 * ((size_t)data[2] + 1)};
    size_t piece = (size_t)data[3] + 1;
    data += 4;
    size -= 4;
    const uint64_t expect = 4096;
    lg_err err;

    counted c = {0};
    lg_bp_decoder *d = lg_bp_decoder_new(&p, expect, count_bytes, &c, &err);
    if (d) {
        int rc = 0;
        for (size_t off = 0; rc == 0 && off < size; off += piece)
            rc = lg_bp_decoder_write(d, data + off, size - off < piece ? size - off : piece, &err);
        if (rc == 0)
            lg_bp_decoder_finish(d, &err);
        lg_bp_decoder_free(d);
        if (c.n > expect)
            __builtin_trap();
    }

    void *z = NULL, *back = NULL;
    size_t zn = 0, bn = 0;
    if (lg_bp_compress_buffer(&p, 1, 1, data, size, &z, &zn, &err) == 0) {
        if (lg_bp_decompress_buffer(&p, z, zn, size, &back, &bn, &err) != 0 || bn != size ||
            (size && memcmp(back, data, size) != 0))
            __builtin_trap();
    }
    free(z);
    free(back);
    return 0;
}
