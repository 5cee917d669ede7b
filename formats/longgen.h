/* The LongGen layout: which layers keep full attention and which use a sparse pattern, as stored in
 * the `longgen` object of config.json (docs/FORMAT.md). Masks (query i sees key j <= i when):
 *   full:          always
 *   sink_window:   j < sink  or  i - j < window
 *   block_strided: with qb = i / block, kb = j / block:  qb - kb < local  or  (kb + 1) % stride == 0
 */
#ifndef LG_LONGGEN_H
#define LG_LONGGEN_H

#include <cjson/cJSON.h>

#include "error.h"

#define LG_LONGGEN_FORMAT_VERSION 1

typedef enum lg_attn_kind {
    LG_ATTN_FULL,
    LG_ATTN_SINK_WINDOW,
    LG_ATTN_BLOCK_STRIDED,
} lg_attn_kind;

typedef struct lg_layer_attn {
    lg_attn_kind kind;
    int sink, window;          /* sink_window */
    int block, local, stride;  /* block_strided */
} lg_layer_attn;

const char *lg_attn_kind_name(lg_attn_kind k);
int lg_attn_kind_from_name(const char *name, lg_attn_kind *out);

/* Does query position i attend to key position j (j <= i assumed by callers that also apply causality)? */
static inline int lg_attn_visible(const lg_layer_attn *a, long i, long j)
{
    if (j > i)
        return 0;
    switch (a->kind) {
    case LG_ATTN_SINK_WINDOW:
        return j < a->sink || i - j < a->window;
    case LG_ATTN_BLOCK_STRIDED: {
        long qb = i / a->block, kb = j / a->block;
        return qb - kb < a->local || (kb + 1) % a->stride == 0;
    }
    default:
        return 1;
    }
}

/* Key positions a layer's cache must hold after T tokens so that every later query still sees all
 * it may attend to: T for full; sink + window for sink_window; for block_strided the L most recent
 * blocks (the newest partly filled) plus every earlier block kb with (kb + 1) % stride == 0. */
long lg_attn_cached_positions(const lg_layer_attn *a, long T);

/* Checks a layer's parameters (positive sizes); 0 if fine. `what` names it in messages. */
int lg_layer_attn_check(const lg_layer_attn *a, const char *what, lg_err *err);

/* Serializes/parses one layer entry: {"kind":"sink_window","sink":64,"window":4096}. */
cJSON *lg_layer_attn_to_json(const lg_layer_attn *a);
int lg_layer_attn_from_json(const cJSON *j, lg_layer_attn *out, const char *what, lg_err *err);

/* Parses `longgen_plan.json` as the fixtures ship it: {"full_layers":[2,3],"sparse":{"kind":...}}
 * into a per-layer array of n_layers entries. */
int lg_plan_file_read(const char *path, int n_layers, lg_layer_attn *layers, lg_err *err);
/* The same for a plan held in memory (text, len bytes); `label` names it in messages. */
int lg_plan_parse(const char *text, size_t len, const char *label, int n_layers, lg_layer_attn *layers,
                  lg_err *err);

#endif
