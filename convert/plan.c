#include "plan.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lg_plan_default_full(int n_layers, unsigned char *is_full)
{
    int n_full = (int)lround(n_layers / 3.0);
    int start = (n_layers - n_full) / 2;
    for (int i = 0; i < n_layers; i++)
        is_full[i] = i >= start && i < start + n_full;
}

static int parse_index(const char **p, int n_layers, int *out, const char *list, lg_err *err)
{
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno || v < 0)
        return lg_err_set(err, "--full-layers '%s': expected a layer index at '%s'", list, *p);
    if (v >= n_layers)
        return lg_err_set(err, "--full-layers '%s': layer %ld does not exist (the model has %d layers, 0-%d)",
                          list, v, n_layers, n_layers - 1);
    *out = (int)v;
    *p = end;
    return 0;
}

int lg_plan_parse_layer_list(const char *s, int n_layers, unsigned char *is_full, lg_err *err)
{
    memset(is_full, 0, (size_t)n_layers);
    if (strcmp(s, "none") == 0)
        return 0;
    if (strcmp(s, "all") == 0) {
        memset(is_full, 1, (size_t)n_layers);
        return 0;
    }
    const char *p = s;
    for (;;) {
        int a = 0, b;
        if (parse_index(&p, n_layers, &a, s, err))
            return -1;
        b = a;
        if (*p == '-') {
            p++;
            if (parse_index(&p, n_layers, &b, s, err))
                return -1;
            if (b < a)
                return lg_err_set(err, "--full-layers '%s': range %d-%d runs backwards", s, a, b);
        }
        for (int i = a; i <= b; i++)
            is_full[i] = 1;
        if (*p == 0)
            return 0;
        if (*p != ',')
            return lg_err_set(err, "--full-layers '%s': unexpected '%c'", s, *p);
        p++;
    }
}

/* Reads "key=value" pairs separated by commas into a small table; returns the count or -1. */
typedef struct kv_pair {
    char key[32];
    double value;
} kv_pair;

static int parse_pairs(const char *s, kv_pair *pairs, int max, const char *opt, lg_err *err)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        if (n == max)
            return lg_err_set(err, "%s '%s': too many parameters", opt, s);
        const char *eq = strchr(p, '=');
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof pairs[n].key)
            return lg_err_set(err, "%s '%s': expected key=value at '%s'", opt, s, p);
        memcpy(pairs[n].key, p, (size_t)(eq - p));
        pairs[n].key[eq - p] = 0;
        char *end;
        errno = 0;
        pairs[n].value = strtod(eq + 1, &end);
        if (end == eq + 1 || errno || !isfinite(pairs[n].value))
            return lg_err_set(err, "%s '%s': '%s' needs a number", opt, s, pairs[n].key);
        n++;
        if (*end == ',')
            end++;
        else if (*end)
            return lg_err_set(err, "%s '%s': unexpected '%s'", opt, s, end);
        p = end;
    }
    return n;
}

/* Looks up `key` (marking it used); returns 1 when present. */
static int take(kv_pair *pairs, int n, const char *key, double *out)
{
    for (int i = 0; i < n; i++)
        if (strcmp(pairs[i].key, key) == 0) {
            *out = pairs[i].value;
            pairs[i].key[0] = 0;
            return 1;
        }
    return 0;
}

static int leftover(const kv_pair *pairs, int n, const char *opt, const char *s, lg_err *err)
{
    for (int i = 0; i < n; i++)
        if (pairs[i].key[0])
            return lg_err_set(err, "%s '%s': unknown parameter '%s'", opt, s, pairs[i].key);
    return 0;
}

static int int_param(kv_pair *pairs, int n, const char *key, int *out, const char *s, lg_err *err)
{
    double v;
    if (!take(pairs, n, key, &v))
        return 0;
    if (v != floor(v) || v < 0 || v > (1 << 30))
        return lg_err_set(err, "--sparse '%s': %s must be a whole number", s, key);
    *out = (int)v;
    return 0;
}

int lg_plan_parse_sparse(const char *s, lg_layer_attn *out, lg_err *err)
{
    char kind[32] = {0};
    const char *colon = strchr(s, ':');
    size_t klen = colon ? (size_t)(colon - s) : strlen(s);
    if (klen >= sizeof kind)
        return lg_err_set(err, "--sparse '%s': unknown kind", s);
    memcpy(kind, s, klen);
    memset(out, 0, sizeof *out);
    if (lg_attn_kind_from_name(kind, &out->kind) != 0 || out->kind == LG_ATTN_FULL)
        return lg_err_set(err, "--sparse '%s': kind must be sink_window or block_strided", s);
    kv_pair pairs[8];
    int n = colon ? parse_pairs(colon + 1, pairs, 8, "--sparse", err) : 0;
    if (n < 0)
        return -1;
    if (out->kind == LG_ATTN_SINK_WINDOW) {
        out->sink = 64;
        out->window = 4096;
        if (int_param(pairs, n, "sink", &out->sink, s, err) ||
            int_param(pairs, n, "window", &out->window, s, err))
            return -1;
    } else {
        /* Phi-3-small's block-sparse attention defaults */
        out->block = 64;
        out->local = 16;
        out->stride = 8;
        if (int_param(pairs, n, "block", &out->block, s, err) ||
            int_param(pairs, n, "local", &out->local, s, err) ||
            int_param(pairs, n, "stride", &out->stride, s, err))
            return -1;
    }
    if (leftover(pairs, n, "--sparse", s, err))
        return -1;
    char what[256];
    snprintf(what, sizeof what, "--sparse '%s'", s);
    return lg_layer_attn_check(out, what, err);
}

/* The context the source model was trained for: its RoPE's original length when it already
 * scales, else max_position_embeddings. */
static int source_context(const lg_hf_config *src)
{
    if (src->rope.type != LG_ROPE_DEFAULT && src->rope.original_max_pos > 0)
        return src->rope.original_max_pos;
    if (src->rope.type == LG_ROPE_LINEAR && src->rope.factor > 1)
        return (int)lround(src->max_pos / src->rope.factor);
    return src->max_pos;
}

int lg_plan_parse_rope(const char *s, long max_context, const lg_hf_config *src, lg_rope *out,
                       int *max_pos, lg_err *err)
{
    const char *opt = "--rope";
    *out = src->rope;
    if (s && strcmp(s, "keep") == 0) {
        *max_pos = max_context > 0 ? (int)max_context : src->max_pos;
        return 0;
    }
    long ctx = max_context > 0 ? max_context : LG_DEFAULT_MAX_CONTEXT;
    int orig = source_context(src);
    *max_pos = (int)ctx;
    if (!s) {
        /* default: a larger base, as the LongGen recipe finetunes with (see LG_DEFAULT_ROPE_THETA) */
        memset(out, 0, sizeof *out);
        out->type = LG_ROPE_DEFAULT;
        out->theta = LG_DEFAULT_ROPE_THETA;
        return lg_rope_check(out, opt, err);
    }
    char kind[32] = {0};
    const char *colon = strchr(s, ':');
    size_t klen = colon ? (size_t)(colon - s) : strlen(s);
    if (klen >= sizeof kind)
        return lg_err_set(err, "%s '%s': unknown kind", opt, s);
    memcpy(kind, s, klen);
    kv_pair pairs[8];
    int n = colon ? parse_pairs(colon + 1, pairs, 8, opt, err) : 0;
    if (n < 0)
        return -1;
    lg_rope r = {.theta = src->rope.theta, .beta_fast = 32, .beta_slow = 1};
    double v;
    if (take(pairs, n, "base", &v))
        r.theta = v;
    double factor = (double)ctx / orig;
    int has_factor = take(pairs, n, "factor", &v);
    if (has_factor)
        factor = v;
    if (strcmp(kind, "theta") == 0) {
        r.type = LG_ROPE_DEFAULT;
        if (!colon || r.theta == src->rope.theta)
            return lg_err_set(err, "%s '%s': give the new base, e.g. theta:base=5000000", opt, s);
    } else if (strcmp(kind, "linear") == 0) {
        r.type = LG_ROPE_LINEAR;
        r.factor = factor;
    } else if (strcmp(kind, "dynamic") == 0) {
        /* transformers scales dynamic NTK relative to max_position_embeddings, so that stays the
         * source's trained context; the factor carries the extension */
        r.type = LG_ROPE_DYNAMIC;
        r.factor = factor;
        *max_pos = orig;
    } else if (strcmp(kind, "yarn") == 0) {
        r.type = LG_ROPE_YARN;
        r.factor = factor;
        r.original_max_pos = orig;
        take(pairs, n, "beta_fast", &r.beta_fast);
        take(pairs, n, "beta_slow", &r.beta_slow);
        take(pairs, n, "attention_factor", &r.attention_factor);
        /* transformers >= 4.48 recomputes yarn's factor as max_position_embeddings / original;
         * refuse a mismatch so every version computes the same frequencies */
        if (fabs(factor * orig - (double)ctx) > 0.5)
            return lg_err_set(err, "%s '%s': factor %g x original context %d != max context %ld "
                              "(transformers would use %g)", opt, s, factor, orig, ctx,
                              (double)ctx / orig);
    } else if (strcmp(kind, "llama3") == 0) {
        r.type = LG_ROPE_LLAMA3;
        r.factor = factor;
        r.original_max_pos = orig;
        r.low_freq_factor = 1;
        r.high_freq_factor = 4;
        take(pairs, n, "low", &r.low_freq_factor);
        take(pairs, n, "high", &r.high_freq_factor);
    } else {
        return lg_err_set(err, "%s '%s': kind must be keep, theta, linear, dynamic, yarn or llama3",
                          opt, s);
    }
    if (leftover(pairs, n, opt, s, err))
        return -1;
    *out = r;
    return lg_rope_check(out, opt, err);
}

int lg_plan_build(const lg_plan_request *req, const lg_hf_config *src, lg_plan *out, lg_err *err)
{
    memset(out, 0, sizeof *out);
    int L = src->n_layers;
    out->n_layers = L;
    out->layers = calloc((size_t)L, sizeof *out->layers);
    unsigned char *is_full = calloc((size_t)L, 1);
    int rc = 0;
    if (!out->layers || !is_full) {
        rc = lg_err_set(err, "out of memory");
    } else if (req->plan_file) {
        if (req->full_layers || req->sparse)
            rc = lg_err_set(err, "--plan cannot be combined with --full-layers or --sparse");
        else
            rc = lg_plan_file_read(req->plan_file, L, out->layers, err);
    } else {
        lg_layer_attn sparse;
        if (req->full_layers)
            rc = lg_plan_parse_layer_list(req->full_layers, L, is_full, err);
        else
            lg_plan_default_full(L, is_full);
        if (rc == 0)
            rc = lg_plan_parse_sparse(req->sparse ? req->sparse : "sink_window", &sparse, err);
        for (int i = 0; rc == 0 && i < L; i++)
            out->layers[i] = is_full[i] ? (lg_layer_attn){.kind = LG_ATTN_FULL} : sparse;
    }
    if (rc == 0)
        rc = lg_plan_parse_rope(req->rope, req->max_context, src, &out->rope, &out->max_pos, err);
    free(is_full);
    if (rc != 0)
        lg_plan_free(out);
    return rc;
}

void lg_plan_free(lg_plan *p)
{
    free(p->layers);
    p->layers = NULL;
}

static int same_attn(const lg_layer_attn *a, const lg_layer_attn *b)
{
    return a->kind == b->kind && a->sink == b->sink && a->window == b->window &&
           a->block == b->block && a->local == b->local && a->stride == b->stride;
}

void lg_layers_of_kind(const lg_layer_attn *layers, int n_layers, lg_attn_kind kind, char *buf,
                       size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n_layers;) {
        if (layers[i].kind != kind) {
            i++;
            continue;
        }
        int j = i;
        while (j + 1 < n_layers && layers[j + 1].kind == kind)
            j++;
        int w = j > i ? snprintf(buf + used, n - used, "%s%d-%d", used ? "," : "", i, j)
                      : snprintf(buf + used, n - used, "%s%d", used ? "," : "", i);
        if (w < 0 || (size_t)w >= n - used)
            return;
        used += (size_t)w;
        i = j + 1;
    }
}

static void describe_attn(const lg_layer_attn *a, char *buf, size_t n)
{
    if (a->kind == LG_ATTN_SINK_WINDOW)
        snprintf(buf, n, "sink_window(sink=%d,window=%d)", a->sink, a->window);
    else if (a->kind == LG_ATTN_BLOCK_STRIDED)
        snprintf(buf, n, "block_strided(block=%d,local=%d,stride=%d)", a->block, a->local, a->stride);
    else
        snprintf(buf, n, "full");
}

void lg_plan_describe(const lg_layer_attn *layers, int n_layers, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    /* one group per distinct pattern, in order of first appearance */
    for (int i = 0; i < n_layers; i++) {
        int seen = 0;
        for (int k = 0; k < i && !seen; k++)
            seen = same_attn(&layers[k], &layers[i]);
        if (seen)
            continue;
        char list[1024] = "", attn[128];
        size_t lu = 0;
        for (int k = i; k < n_layers; k++) {
            if (!same_attn(&layers[k], &layers[i]))
                continue;
            int j = k;
            while (j + 1 < n_layers && same_attn(&layers[j + 1], &layers[i]))
                j++;
            int w = j > k ? snprintf(list + lu, sizeof list - lu, "%s%d-%d", lu ? "," : "", k, j)
                          : snprintf(list + lu, sizeof list - lu, "%s%d", lu ? "," : "", k);
            if (w > 0 && (size_t)w < sizeof list - lu)
                lu += (size_t)w;
            k = j;
        }
        describe_attn(&layers[i], attn, sizeof attn);
        int w = snprintf(buf + used, n - used, "%slayers %s %s", used ? "; " : "", list, attn);
        if (w < 0 || (size_t)w >= n - used)
            return;
        used += (size_t)w;
    }
}

void lg_rope_describe(const lg_rope *r, char *buf, size_t n)
{
    switch (r->type) {
    case LG_ROPE_DEFAULT:
        snprintf(buf, n, "default (theta %g)", r->theta);
        break;
    case LG_ROPE_LINEAR:
    case LG_ROPE_DYNAMIC:
        snprintf(buf, n, "%s (theta %g, factor %g)", lg_rope_type_name(r->type), r->theta, r->factor);
        break;
    case LG_ROPE_YARN:
        snprintf(buf, n, "yarn (theta %g, factor %g, original %d, beta_fast %g, beta_slow %g%s)", r->theta,
                 r->factor, r->original_max_pos, r->beta_fast, r->beta_slow,
                 r->attention_factor > 0 ? ", attention_factor set" : "");
        break;
    case LG_ROPE_LLAMA3:
        snprintf(buf, n, "llama3 (theta %g, factor %g, original %d, low %g, high %g)", r->theta,
                 r->factor, r->original_max_pos, r->low_freq_factor, r->high_freq_factor);
        break;
    }
}
