/* `lg-convert compress-report DIR [--level L] [--threads N]`: how well a checkpoint's tensors
 * compress losslessly, per tensor kind (attn, mlp, embed, norm, other), with plain zstd and with the
 * byte-plane transform ahead of zstd (formats/byteplane.h) at the same level; compression speed (one
 * thread, tensor after tensor) and decompression speed (tensors spread over N threads); every
 * tensor's round trip is checked bit for bit. */
#ifndef LG_COMPRESS_REPORT_H
#define LG_COMPRESS_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"

enum { LG_CR_ATTN, LG_CR_MLP, LG_CR_EMBED, LG_CR_NORM, LG_CR_OTHER, LG_CR_KINDS };

typedef struct lg_compress_kind {
    int n_tensors;
    uint64_t raw;            /* bytes */
    uint64_t packed[2];      /* compressed bytes: [0] plain zstd, [1] byte planes + zstd */
    double compress_s[2];    /* seconds, one thread */
} lg_compress_kind;

typedef struct lg_compress_report {
    lg_compress_kind kinds[LG_CR_KINDS], total;
    double decompress_s[2];  /* wall seconds over all tensors with `threads` threads */
    int threads, level;
    int round_trips_ok;      /* tensors whose both round trips were bit-exact */
} lg_compress_report;

/* The kind of a tensor name: attn (self_attn.*), mlp (mlp.*), embed (embed_tokens, lm_head), norm
 * (*norm*), other. */
int lg_compress_kind_of(const char *name);
const char *lg_compress_kind_name(int kind);

/* Measures DIR (a checkpoint directory). threads <= 0: every online CPU. Fails on a round trip that
 * is not bit-exact. */
int lg_compress_report_run(const char *dir, int level, int threads, lg_compress_report *r,
                           lg_err *err);
void lg_compress_report_print(const lg_compress_report *r, const char *dir, FILE *f);

#endif
