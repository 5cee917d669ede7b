#include "longgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_file.h"

static const char *const kind_names[] = {"full", "sink_window", "block_strided"};

const char *lg_attn_kind_name(lg_attn_kind k)
{
    return (unsigned)k < 3 ? kind_names[k] : "?";
}

int lg_attn_kind_from_name(const char *name, lg_attn_kind *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (lg_attn_kind)i;
            return 0;
        }
    return -1;
}

/* Context lengths beyond 2^30 are not meaningful and would overflow position arithmetic. */
#define LG_MAX_SPAN (1L << 30)

int lg_layer_attn_check(const lg_layer_attn *a, const char *what, lg_err *err)
{
    switch (a->kind) {
    case LG_ATTN_FULL:
        return 0;
    case LG_ATTN_SINK_WINDOW:
        if (a->sink < 0 || a->sink > LG_MAX_SPAN)
            return lg_err_set(err, "%s: sink_window sink=%d must be in [0, 2^30]", what, a->sink);
        if (a->window < 1 || a->window > LG_MAX_SPAN)
            return lg_err_set(err, "%s: sink_window window=%d must be in [1, 2^30]", what, a->window);
        return 0;
    case LG_ATTN_BLOCK_STRIDED:
        if (a->block < 1 || a->block > LG_MAX_SPAN)
            return lg_err_set(err, "%s: block_strided block=%d must be >= 1", what, a->block);
        if (a->local < 1 || a->local > LG_MAX_SPAN)
            return lg_err_set(err, "%s: block_strided local=%d must be >= 1", what, a->local);
        if (a->stride < 1 || a->stride > LG_MAX_SPAN)
            return lg_err_set(err, "%s: block_strided stride=%d must be >= 1", what, a->stride);
        return 0;
    }
    return lg_err_set(err, "%s: unknown attention kind", what);
}

long lg_attn_cached_positions(const lg_layer_attn *a, long T)
{
    if (T <= 0)
        return 0;
    switch (a->kind) {
    case LG_ATTN_SINK_WINDOW: {
        long keep = (long)a->sink + a->window;
        return T < keep ? T : keep;
    }
    case LG_ATTN_BLOCK_STRIDED: {
        long B = a->block, qb = (T - 1) / B;
        long local = qb + 1 < a->local ? qb + 1 : a->local;
        long first_local = qb - local + 1;
        long strided = first_local / a->stride; /* kb < first_local with (kb+1) % stride == 0 */
        return (local - 1) * B + (T - qb * B) + strided * B;
    }
    default:
        return T;
    }
}

cJSON *lg_layer_attn_to_json(const lg_layer_attn *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "kind", lg_attn_kind_name(a->kind));
    if (a->kind == LG_ATTN_SINK_WINDOW) {
        cJSON_AddNumberToObject(o, "sink", a->sink);
        cJSON_AddNumberToObject(o, "window", a->window);
    } else if (a->kind == LG_ATTN_BLOCK_STRIDED) {
        cJSON_AddNumberToObject(o, "block", a->block);
        cJSON_AddNumberToObject(o, "local", a->local);
        cJSON_AddNumberToObject(o, "stride", a->stride);
    }
    return o;
}

static int get_param(const cJSON *j, const char *key, int *out, const char *what, lg_err *err)
{
    long v;
    int rc = lg_json_int(j, key, 0, LG_MAX_SPAN, &v, what, err);
    if (rc == 1)
        return lg_err_set(err, "%s: missing '%s'", what, key);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

int lg_layer_attn_from_json(const cJSON *j, lg_layer_attn *out, const char *what, lg_err *err)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(j))
        return lg_err_set(err, "%s: not an object", what);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    if (!cJSON_IsString(kind))
        return lg_err_set(err, "%s: missing 'kind'", what);
    if (lg_attn_kind_from_name(kind->valuestring, &out->kind) != 0)
        return lg_err_set(err, "%s: unknown kind '%s' (full, sink_window, block_strided)", what,
                          kind->valuestring);
    int rc = 0;
    if (out->kind == LG_ATTN_SINK_WINDOW)
        rc = get_param(j, "sink", &out->sink, what, err) ||
             get_param(j, "window", &out->window, what, err);
    else if (out->kind == LG_ATTN_BLOCK_STRIDED)
        rc = get_param(j, "block", &out->block, what, err) ||
             get_param(j, "local", &out->local, what, err) ||
             get_param(j, "stride", &out->stride, what, err);
    if (rc)
        return -1;
    return lg_layer_attn_check(out, what, err);
}

/* Fills layers from a parsed plan document; path names it in messages. Frees doc. */
static int plan_from_doc(cJSON *doc, const char *path, int n_layers, lg_layer_attn *layers, lg_err *err)
{
    int rc = 0;
    lg_layer_attn sparse;
    const cJSON *full = cJSON_GetObjectItemCaseSensitive(doc, "full_layers");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(doc, "sparse");
    char what[4200];
    snprintf(what, sizeof what, "%s: sparse", path);
    if (!cJSON_IsArray(full))
        rc = lg_err_set(err, "%s: 'full_layers' is not an array of layer indices", path);
    else if (lg_layer_attn_from_json(sp, &sparse, what, err) != 0)
        rc = -1;
    else if (sparse.kind == LG_ATTN_FULL)
        rc = lg_err_set(err, "%s: 'sparse' kind must be sink_window or block_strided", path);
    for (int i = 0; rc == 0 && i < n_layers; i++)
        layers[i] = sparse;
    const cJSON *it;
    if (rc == 0) {
        cJSON_ArrayForEach(it, full)
        {
            double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
            if (d < 0 || d >= n_layers || d != (int)d) {
                rc = lg_err_set(err, "%s: full layer %s is not a layer index below %d", path,
                                cJSON_IsNumber(it) ? "entry" : "non-number", n_layers);
                break;
            }
            layers[(int)d] = (lg_layer_attn){.kind = LG_ATTN_FULL};
        }
    }
    cJSON_Delete(doc);
    return rc;
}

int lg_plan_file_read(const char *path, int n_layers, lg_layer_attn *layers, lg_err *err)
{
    cJSON *doc = lg_json_read_file(path, 1u << 20, err);
    return doc ? plan_from_doc(doc, path, n_layers, layers, err) : -1;
}

int lg_plan_parse(const char *text, size_t len, const char *label, int n_layers, lg_layer_attn *layers,
                  lg_err *err)
{
    cJSON *doc = lg_json_parse(text, len, label, err);
    return doc ? plan_from_doc(doc, label, n_layers, layers, err) : -1;
}
