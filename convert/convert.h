/* lg-convert's conversion: source checkpoint -> plan -> LongGen checkpoint, streamed one tensor at a
 * time into OUT_DIR.tmp-XXXXXX and renamed to OUT_DIR only when complete. */
#ifndef LG_CONVERT_H
#define LG_CONVERT_H

#include <signal.h>
#include <stdint.h>

#include "dtype.h"
#include "plan.h"
#include "quant_format.h"

#define LG_DEFAULT_SHARD_BYTES (UINT64_C(5) << 30)

typedef struct lg_convert_opts {
    const char *src_dir, *out_dir;
    lg_plan_request plan;
    int has_dtype;      /* --dtype given; else the source's dtype is kept per tensor */
    lg_dtype dtype;
    int allow_extra;    /* unknown tensors are dropped instead of refused */
    int force;          /* replace an existing OUT_DIR */
    uint64_t shard_bytes;
    int quiet;          /* no summary line */
    /* --quant: weight-only quantization of the linear layers (method LG_QUANT_NONE: none);
     * quant.excluded holds the --quant-exclude patterns, embeddings/lm_head ask for those too */
    lg_quant_config quant;
} lg_convert_opts;

typedef struct lg_convert_result {
    int n_tensors, n_shards, n_dropped;
    uint64_t bytes_written;
    double seconds;
} lg_convert_result;

/* Set by a signal handler the tool installs; the conversion stops at the next chunk, removes its
 * temporary directory and fails. */
extern volatile sig_atomic_t lg_convert_interrupted;

int lg_convert_run(const lg_convert_opts *o, lg_convert_result *res, lg_err *err);

#endif
