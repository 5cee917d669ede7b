#include "byteplane.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Output buffer of one zstd call: a few of zstd's blocks (128 KiB each). */
#define OUT_BYTES ((size_t)1 << 20)

void lg_bp_split(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t m = n / 2;
    unsigned char *hi = out, *lo = out + m;
    for (size_t i = 0; i < m; i++) {
        lo[i] = in[2 * i];
        hi[i] = in[2 * i + 1];
    }
    if (n & 1)
        out[n - 1] = in[n - 1];
}

void lg_bp_merge(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t m = n / 2;
    const unsigned char *hi = in, *lo = in + m;
    for (size_t i = 0; i < m; i++) {
        out[2 * i] = lo[i];
        out[2 * i + 1] = hi[i];
    }
    if (n & 1)
        out[n - 1] = in[n - 1];
}

static int check_params(const lg_bp_params *p, lg_err *err)
{
    if (p->transform && (p->chunk == 0 || p->chunk % 2 != 0))
        return lg_err_set(err, "byte-plane chunk of %zu bytes: must be even and positive", p->chunk);
    return 0;
}

/* ---------------------------------------------------------------- encoder */

struct lg_bp_encoder {
    lg_bp_params p;
    ZSTD_CCtx *cctx;
    lg_bp_sink sink;
    void *ctx;
    uint64_t pos;        /* input bytes taken */
    unsigned char *chunk, *planes, *out;
    size_t fill;         /* bytes waiting in chunk */
};

void lg_bp_encoder_free(lg_bp_encoder *e)
{
    if (!e)
        return;
    ZSTD_freeCCtx(e->cctx);
    free(e->chunk);
    free(e->planes);
    free(e->out);
    free(e);
}

static int zstd_set(ZSTD_CCtx *c, ZSTD_cParameter k, int v, lg_err *err)
{
    size_t r = ZSTD_CCtx_setParameter(c, k, v);
    if (ZSTD_isError(r))
        return lg_err_set(err, "zstd: cannot set parameter %d to %d: %s", (int)k, v, ZSTD_getErrorName(r));
    return 0;
}

lg_bp_encoder *lg_bp_encoder_new(const lg_bp_params *p, int level, int workers, uint64_t total,
                                 lg_bp_sink sink, void *ctx, lg_err *err)
{
    if (check_params(p, err) != 0)
        return NULL;
    if (level < 1 || level > 19) {
        lg_err_set(err, "zstd level %d: expected 1..19", level);
        return NULL;
    }
    lg_bp_encoder *e = calloc(1, sizeof *e);
    if (!e) {
        lg_err_set(err, "out of memory");
        return NULL;
    }
    e->p = *p;
    e->sink = sink;
    e->ctx = ctx;
    e->cctx = ZSTD_createCCtx();
    e->out = malloc(OUT_BYTES);
    if (p->transform) {
        e->chunk = malloc(p->chunk);
        e->planes = malloc(p->chunk);
    }
    if (!e->cctx || !e->out || (p->transform && (!e->chunk || !e->planes))) {
        lg_err_set(err, "out of memory");
        lg_bp_encoder_free(e);
        return NULL;
    }
    int rc = zstd_set(e->cctx, ZSTD_c_compressionLevel, level, err);
    if (rc == 0)
        rc = zstd_set(e->cctx, ZSTD_c_checksumFlag, 1, err);
    /* a libzstd built without threads refuses workers; it then compresses in this thread, whose
     * output differs from the threaded one (packages stay valid, just not byte-identical to those
     * made with a threaded libzstd) */
    if (rc == 0 && ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_nbWorkers, workers < 1 ? 1 : workers)))
        ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_nbWorkers, 0);
    if (rc == 0 && ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(e->cctx, total)))
        rc = lg_err_set(err, "zstd: cannot pledge %llu bytes", (unsigned long long)total);
    if (rc != 0) {
        lg_bp_encoder_free(e);
        return NULL;
    }
    return e;
}

static int compress_some(lg_bp_encoder *e, const void *data, size_t n, ZSTD_EndDirective mode, lg_err *err)
{
    ZSTD_inBuffer in = {data, n, 0};
    for (;;) {
        ZSTD_outBuffer out = {e->out, OUT_BYTES, 0};
        size_t left = ZSTD_compressStream2(e->cctx, &out, &in, mode);
        if (ZSTD_isError(left))
            return lg_err_set(err, "zstd: %s", ZSTD_getErrorName(left));
        if (out.pos > 0 && e->sink(e->ctx, e->out, out.pos, err) != 0)
            return -1;
        if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size)
            return 0;
    }
}

static int flush_chunk(lg_bp_encoder *e, lg_err *err)
{
    if (e->fill == 0)
        return 0;
    lg_bp_split(e->chunk, e->fill, e->planes);
    size_t n = e->fill;
    e->fill = 0;
    return compress_some(e, e->planes, n, ZSTD_e_continue, err);
}

int lg_bp_encoder_write(lg_bp_encoder *e, const void *data, size_t n, lg_err *err)
{
    const unsigned char *p = data;
    while (n > 0) {
        size_t take;
        if (!e->p.transform || e->pos < e->p.skip) {
            take = n;
            if (e->p.transform && e->p.skip - e->pos < take)
                take = (size_t)(e->p.skip - e->pos);
            if (compress_some(e, p, take, ZSTD_e_continue, err) != 0)
                return -1;
        } else {
            take = e->p.chunk - e->fill < n ? e->p.chunk - e->fill : n;
            memcpy(e->chunk + e->fill, p, take);
            e->fill += take;
            if (e->fill == e->p.chunk && flush_chunk(e, err) != 0)
                return -1;
        }
        e->pos += take;
        p += take;
        n -= take;
    }
    return 0;
}

int lg_bp_encoder_finish(lg_bp_encoder *e, lg_err *err)
{
    if (flush_chunk(e, err) != 0)
        return -1;
    return compress_some(e, NULL, 0, ZSTD_e_end, err);
}

/* ---------------------------------------------------------------- decoder */

struct lg_bp_decoder {
    lg_bp_params p;
    ZSTD_DCtx *dctx;
    lg_bp_sink sink;
    void *ctx;
    uint64_t expect, pos; /* decoded bytes so far */
    int frame_done;
    unsigned char *chunk, *merged, *out;
    size_t fill;
};

void lg_bp_decoder_free(lg_bp_decoder *d)
{
    if (!d)
        return;
    ZSTD_freeDCtx(d->dctx);
    free(d->chunk);
    free(d->merged);
    free(d->out);
    free(d);
}

lg_bp_decoder *lg_bp_decoder_new(const lg_bp_params *p, uint64_t expect, lg_bp_sink sink, void *ctx,
                                 lg_err *err)
{
    if (check_params(p, err) != 0)
        return NULL;
    lg_bp_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        lg_err_set(err, "out of memory");
        return NULL;
    }
    d->p = *p;
    d->sink = sink;
    d->ctx = ctx;
    d->expect = expect;
    d->dctx = ZSTD_createDCtx();
    d->out = malloc(OUT_BYTES);
    if (p->transform) {
        /* no more than expect - skip bytes are ever buffered (take_decoded refuses more): a file
         * smaller than a chunk needs buffers of its own size, not two 16 MiB ones */
        uint64_t planed = expect > p->skip ? expect - p->skip : 1;
        size_t cap = planed < p->chunk ? (size_t)planed : p->chunk;
        d->chunk = malloc(cap);
        d->merged = malloc(cap);
    }
    if (!d->dctx || !d->out || (p->transform && (!d->chunk || !d->merged))) {
        lg_err_set(err, "out of memory");
        lg_bp_decoder_free(d);
        return NULL;
    }
    /* zstd's default limit (a 128 MiB window) stays: our encoder never needs more than 8 MiB, and a
     * frame asking for more is refused instead of allocating it */
    return d;
}

static int emit_chunk(lg_bp_decoder *d, lg_err *err)
{
    if (d->fill == 0)
        return 0;
    lg_bp_merge(d->chunk, d->fill, d->merged);
    size_t n = d->fill;
    d->fill = 0;
    return d->sink(d->ctx, d->merged, n, err);
}

/* Decoded bytes: the skipped prefix goes straight out, the rest is merged chunk by chunk. */
static int take_decoded(lg_bp_decoder *d, const unsigned char *p, size_t n, lg_err *err)
{
    if (n > d->expect - d->pos)
        return lg_err_set(err, "decompresses to more than the %llu bytes expected",
                          (unsigned long long)d->expect);
    while (n > 0) {
        size_t take;
        if (!d->p.transform || d->pos < d->p.skip) {
            take = n;
            if (d->p.transform && d->p.skip - d->pos < take)
                take = (size_t)(d->p.skip - d->pos);
            if (d->sink(d->ctx, p, take, err) != 0)
                return -1;
        } else {
            take = d->p.chunk - d->fill < n ? d->p.chunk - d->fill : n;
            memcpy(d->chunk + d->fill, p, take);
            d->fill += take;
            if (d->fill == d->p.chunk && emit_chunk(d, err) != 0)
                return -1;
        }
        d->pos += take;
        p += take;
        n -= take;
    }
    return 0;
}

int lg_bp_decoder_write(lg_bp_decoder *d, const void *data, size_t n, lg_err *err)
{
    ZSTD_inBuffer in = {data, n, 0};
    while (in.pos < in.size) {
        if (d->frame_done)
            return lg_err_set(err, "data after the end of the zstd frame");
        ZSTD_outBuffer out = {d->out, OUT_BYTES, 0};
        size_t r = ZSTD_decompressStream(d->dctx, &out, &in);
        if (ZSTD_isError(r))
            return lg_err_set(err, "zstd: %s", ZSTD_getErrorName(r));
        if (take_decoded(d, d->out, out.pos, err) != 0)
            return -1;
        if (r == 0)
            d->frame_done = 1;
    }
    return 0;
}

int lg_bp_decoder_finish(lg_bp_decoder *d, lg_err *err)
{
    /* output zstd still holds after the input ran out (its buffer was full on the last call) */
    while (!d->frame_done) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        ZSTD_outBuffer out = {d->out, OUT_BYTES, 0};
        size_t r = ZSTD_decompressStream(d->dctx, &out, &in);
        if (ZSTD_isError(r))
            return lg_err_set(err, "zstd: %s", ZSTD_getErrorName(r));
        if (take_decoded(d, d->out, out.pos, err) != 0)
            return -1;
        if (r == 0)
            d->frame_done = 1;
        else if (out.pos == 0)
            return lg_err_set(err, "the zstd frame is cut short (%llu of %llu bytes decoded)",
                              (unsigned long long)d->pos, (unsigned long long)d->expect);
    }
    if (emit_chunk(d, err) != 0)
        return -1;
    if (d->pos != d->expect)
        return lg_err_set(err, "decompresses to %llu bytes, expected %llu", (unsigned long long)d->pos,
                          (unsigned long long)d->expect);
    return 0;
}

/* ---------------------------------------------------------------- one-shot helpers */

typedef struct grow_buf {
    unsigned char *data;
    size_t len, cap;
} grow_buf;

static int append(void *ctx, const void *data, size_t n, lg_err *err)
{
    grow_buf *b = ctx;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->data, cap);
        if (!p)
            return lg_err_set(err, "out of memory");
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

int lg_bp_compress_buffer(const lg_bp_params *p, int level, int workers, const void *in, size_t n,
                          void **out, size_t *out_n, lg_err *err)
{
    grow_buf b = {0};
    lg_bp_encoder *e = lg_bp_encoder_new(p, level, workers, n, append, &b, err);
    int rc = e ? 0 : -1;
    if (rc == 0)
        rc = lg_bp_encoder_write(e, in, n, err);
    if (rc == 0)
        rc = lg_bp_encoder_finish(e, err);
    lg_bp_encoder_free(e);
    if (rc != 0) {
        free(b.data);
        return -1;
    }
    *out = b.data;
    *out_n = b.len;
    return 0;
}

int lg_bp_decompress_buffer(const lg_bp_params *p, const void *in, size_t n, uint64_t expect,
                            void **out, size_t *out_n, lg_err *err)
{
    grow_buf b = {0};
    lg_bp_decoder *d = lg_bp_decoder_new(p, expect, append, &b, err);
    int rc = d ? 0 : -1;
    if (rc == 0)
        rc = lg_bp_decoder_write(d, in, n, err);
    if (rc == 0)
        rc = lg_bp_decoder_finish(d, err);
    lg_bp_decoder_free(d);
    if (rc != 0) {
        free(b.data);
        return -1;
    }
    *out = b.data;
    *out_n = b.len;
    return 0;
}
