/* Byte planes ahead of zstd, for 16-bit tensor data (fp16, bf16).
 *
 * The high byte of an fp16/bf16 element holds the sign and most of the exponent; in trained weights
 * it takes few distinct values, while the low byte (mantissa) is close to random. Interleaved, the
 * two defeat zstd's matcher; split into a plane of high bytes and a plane of low bytes, the first
 * compresses well and the second costs about its size.
 *
 * A stream is one zstd frame (with its checksum and content size) of:
 *   - the first `skip` bytes as they are (the safetensors header: 8-byte length + JSON), then
 *   - the rest in chunks of `chunk` bytes (the last may be shorter), each chunk of n bytes stored as
 *     [n/2 high bytes][n/2 low bytes][the last byte when n is odd], little-endian elements
 *     (byte 2i is element i's low byte).
 * With transform 0 the stream is plain zstd of the input. Encoder and decoder both hold a few chunk
 * buffers, whatever the stream's length.
 */
#ifndef LG_BYTEPLANE_H
#define LG_BYTEPLANE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* 16 MiB: zstd's window at the levels we use (<= 8 MiB) sees a whole plane, and three such buffers
 * are a small, fixed cost. */
#define LG_BP_CHUNK ((size_t)16 << 20)

/* Splits n bytes into planes (out has n bytes); merge is its inverse. */
void lg_bp_split(const unsigned char *in, size_t n, unsigned char *out);
void lg_bp_merge(const unsigned char *in, size_t n, unsigned char *out);

typedef struct lg_bp_params {
    int transform;  /* 1: byte planes after skip; 0: plain zstd */
    uint64_t skip;  /* leading bytes left as they are */
    size_t chunk;   /* plane chunk in bytes: even, > 0 */
} lg_bp_params;

/* Receives the encoder's or decoder's output in order; returns 0, or -1 with err set. */
typedef int (*lg_bp_sink)(void *ctx, const void *data, size_t n, lg_err *err);

/* ---- encoder ---- */
typedef struct lg_bp_encoder lg_bp_encoder;

/* level: zstd level 1..19; workers: zstd threads, at least 1 (zstd's output is the same for any
 * number >= 1, so packages are reproducible across machines); total: the exact number of bytes the
 * caller will write (recorded in the frame; a different count is an error at finish). */
lg_bp_encoder *lg_bp_encoder_new(const lg_bp_params *p, int level, int workers, uint64_t total,
                                 lg_bp_sink sink, void *ctx, lg_err *err);
int lg_bp_encoder_write(lg_bp_encoder *e, const void *data, size_t n, lg_err *err);
/* Flushes the last chunk and ends the frame. */
int lg_bp_encoder_finish(lg_bp_encoder *e, lg_err *err);
void lg_bp_encoder_free(lg_bp_encoder *e);

/* ---- decoder ---- */
typedef struct lg_bp_decoder lg_bp_decoder;

/* expect: the decoded size; more output than that is refused as soon as it appears (a damaged or
 * hostile stream cannot fill the disk). */
lg_bp_decoder *lg_bp_decoder_new(const lg_bp_params *p, uint64_t expect, lg_bp_sink sink, void *ctx,
                                 lg_err *err);
/* Feeds compressed bytes; the sink receives decoded bytes. Data after the end of the frame is an
 * error. */
int lg_bp_decoder_write(lg_bp_decoder *d, const void *data, size_t n, lg_err *err);
/* Checks the frame ended and produced exactly `expect` bytes; flushes the last chunk. */
int lg_bp_decoder_finish(lg_bp_decoder *d, lg_err *err);
void lg_bp_decoder_free(lg_bp_decoder *d);

/* One-shot helpers for buffers (tests, benchmarks): *out is malloc'd. */
int lg_bp_compress_buffer(const lg_bp_params *p, int level, int workers, const void *in, size_t n,
                          void **out, size_t *out_n, lg_err *err);
int lg_bp_decompress_buffer(const lg_bp_params *p, const void *in, size_t n, uint64_t expect,
                            void **out, size_t *out_n, lg_err *err);

#endif
