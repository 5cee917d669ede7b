/* libFuzzer harness: the byte-plane zstd decoder of packages (formats/byteplane.h), the first code
 * to see a package member's bytes. The first 4 bytes choose the parameters (transform, skip, chunk)
 * and the size of the pieces the rest is fed in; the rest is the compressed stream. The decoder must
 * refuse garbage and never pass on more than it was told to expect. (Round trips of the codec are
 * left to the package suite: zstd's compressor starts a worker thread per stream, which would cut
 * this harness to a few dozen executions a second.) */
#include <stddef.h>
#include <stdint.h>

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
    return 0;
}
