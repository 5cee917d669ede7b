#include "quant_format.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "json_file.h"

/* ---------------------------------------------------------------- schemes */

const char *lg_quant_method_name(lg_quant_method m)
{
    switch (m) {
    case LG_QUANT_Q8:
        return "q8";
    case LG_QUANT_Q4:
        return "q4";
    case LG_QUANT_FP8:
        return "fp8";
    default:
        return "none";
    }
}

int lg_quant_method_from_name(const char *name, lg_quant_method *out)
{
    static const lg_quant_method all[] = {LG_QUANT_Q8, LG_QUANT_Q4, LG_QUANT_FP8};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, lg_quant_method_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    return -1;
}

int lg_quant_scheme_check(const lg_quant_scheme *s, lg_err *err)
{
    if (s->method != LG_QUANT_Q8 && s->method != LG_QUANT_Q4 && s->method != LG_QUANT_FP8)
        return lg_err_set(err, "unknown quantization method %d", (int)s->method);
    /* even: a q4 byte holds two columns of one group */
    if (s->group < 0 || s->group > LG_QUANT_MAX_GROUP || s->group % 2 != 0)
        return lg_err_set(err, "quantization group %d: expected 0 (per channel) or an even number "
                               "up to %d", s->group, LG_QUANT_MAX_GROUP);
    if (s->method == LG_QUANT_Q4 && s->group == 0)
        return lg_err_set(err, "q4 needs a group size (32, 64, 128, ...)");
    if (s->has_mins && s->method != LG_QUANT_Q4)
        return lg_err_set(err, "mins are only defined for q4");
    return 0;
}

int lg_quant_n_groups(const lg_quant_scheme *s, int64_t cols)
{
    if (s->group == 0)
        return 1;
    return (int)((cols + s->group - 1) / s->group);
}

lg_dtype lg_quant_part_dtype(const lg_quant_scheme *s, lg_quant_part part)
{
    if (part == LG_QPART_WEIGHT)
        return s->method == LG_QUANT_Q8 ? LG_DT_I8 : s->method == LG_QUANT_Q4 ? LG_DT_U8
                                                                              : LG_DT_F8_E4M3;
    /* fp8 scales in float32: amax / 448 of small weights is below F16's normal range */
    return part == LG_QPART_SCALES && s->method == LG_QUANT_FP8 ? LG_DT_F32 : LG_DT_F16;
}

size_t lg_quant_row_bytes(const lg_quant_scheme *s, int64_t cols)
{
    return s->method == LG_QUANT_Q4 ? (size_t)(cols + 1) / 2 : (size_t)cols;
}

void lg_quant_part_shape(const lg_quant_scheme *s, lg_quant_part part, int64_t rows, int64_t cols,
                         int64_t shape[2])
{
    shape[0] = rows;
    shape[1] = part == LG_QPART_WEIGHT ? (int64_t)lg_quant_row_bytes(s, cols)
                                       : lg_quant_n_groups(s, cols);
}

int lg_quant_n_parts(const lg_quant_scheme *s)
{
    return s->has_mins ? 3 : 2;
}

int lg_quant_part_name(const char *weight_name, lg_quant_part part, char *buf, size_t n)
{
    static const char suffix[] = ".weight";
    static const char *const parts[] = {".qweight", ".scales", ".mins"};
    size_t len = strlen(weight_name), sl = sizeof suffix - 1;
    if (len <= sl || strcmp(weight_name + len - sl, suffix) != 0)
        return -1;
    int w = snprintf(buf, n, "%.*s%s", (int)(len - sl), weight_name, parts[part]);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* ---------------------------------------------------------------- config object */

int lg_quant_config_from_json(const cJSON *config, const char *label, lg_quant_config *q,
                              int *present, lg_err *err)
{
    memset(q, 0, sizeof *q);
    *present = 0;
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(config, "longgen");
    const cJSON *o = cJSON_IsObject(lg) ? cJSON_GetObjectItemCaseSensitive(lg, "quantization") : NULL;
    if (!o || cJSON_IsNull(o))
        return 0;
    if (!cJSON_IsObject(o))
        return lg_err_set(err, "%s: longgen.quantization is not an object", label);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(o, "method");
    if (!cJSON_IsString(method) ||
        lg_quant_method_from_name(method->valuestring, &q->scheme.method) != 0)
        return lg_err_set(err, "%s: longgen.quantization.method should be \"q8\", \"q4\" or \"fp8\"",
                          label);
    long group = 0;
    if (lg_json_int(o, "group", 0, LG_QUANT_MAX_GROUP, &group, label, err) < 0)
        return -1;
    q->scheme.group = (int)group;
    const cJSON *zp = cJSON_GetObjectItemCaseSensitive(o, "zero_point");
    if (zp && !(cJSON_IsString(zp) && (strcmp(zp->valuestring, "min") == 0 ||
                                       strcmp(zp->valuestring, "none") == 0)))
        return lg_err_set(err, "%s: longgen.quantization.zero_point should be \"min\" or \"none\"",
                          label);
    q->scheme.has_mins = zp && strcmp(zp->valuestring, "min") == 0;
    static const char *const flags[] = {"embeddings", "lm_head"};
    for (int i = 0; i < 2; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, flags[i]);
        if (f && !cJSON_IsBool(f))
            return lg_err_set(err, "%s: longgen.quantization.%s is not a boolean", label, flags[i]);
        *(i == 0 ? &q->embeddings : &q->lm_head) = f && cJSON_IsTrue(f);
    }
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "excluded"), *e;
    if (ex && !cJSON_IsArray(ex))
        return lg_err_set(err, "%s: longgen.quantization.excluded is not an array", label);
    cJSON_ArrayForEach(e, ex)
    {
        if (!cJSON_IsString(e) || strlen(e->valuestring) >= sizeof q->excluded[0] ||
            q->n_excluded == LG_QUANT_MAX_EXCLUDED)
            return lg_err_set(err, "%s: longgen.quantization.excluded should hold at most %d strings "
                                   "of fewer than %zu bytes", label, LG_QUANT_MAX_EXCLUDED,
                              sizeof q->excluded[0]);
        snprintf(q->excluded[q->n_excluded++], sizeof q->excluded[0], "%s", e->valuestring);
    }
    if (lg_quant_scheme_check(&q->scheme, err) != 0) {
        lg_err_prefix(err, "%s: longgen.quantization", label);
        return -1;
    }
    *present = 1;
    return 0;
}

cJSON *lg_quant_config_to_json(const lg_quant_config *q)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", lg_quant_method_name(q->scheme.method));
    cJSON_AddNumberToObject(o, "group", q->scheme.group);
    cJSON_AddStringToObject(o, "zero_point", q->scheme.has_mins ? "min" : "none");
    cJSON_AddStringToObject(o, "scale_dtype",
                            lg_dtype_name(lg_quant_part_dtype(&q->scheme, LG_QPART_SCALES)));
    cJSON_AddBoolToObject(o, "embeddings", q->embeddings);
    cJSON_AddBoolToObject(o, "lm_head", q->lm_head);
    cJSON *ex = cJSON_AddArrayToObject(o, "excluded");
    for (int i = 0; i < q->n_excluded; i++)
        cJSON_AddItemToArray(ex, cJSON_CreateString(q->excluded[i]));
    return o;
}

int lg_quant_excluded(const lg_quant_config *q, const char *name)
{
    for (int i = 0; i < q->n_excluded; i++) {
        const char *p = q->excluded[i];
        if (strpbrk(p, "*?[") ? fnmatch(p, name, 0) == 0 : strstr(name, p) != NULL)
            return 1;
    }
    return 0;
}

int lg_quant_wants(const lg_quant_config *q, const char *name, int ndim)
{
    size_t len = strlen(name);
    if (q->scheme.method == LG_QUANT_NONE || ndim != 2 || len < 7 ||
        strcmp(name + len - 7, ".weight") != 0)
        return 0;
    if (strcmp(name, "model.embed_tokens.weight") == 0 && !q->embeddings)
        return 0;
    if (strcmp(name, "lm_head.weight") == 0 && !q->lm_head)
        return 0;
    return !lg_quant_excluded(q, name);
}

/* ---------------------------------------------------------------- float8 e4m3fn */

float lg_e4m3_to_f32(uint8_t c)
{
    int e = (c >> 3) & 15, m = c & 7;
    float v;
    if (e == 15 && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9); /* subnormal: m * 2^-9 */
    else
        v = ldexpf((float)(8 + m), e - 10); /* (1 + m/8) 2^(e-7) */
    return (c & 0x80) ? -v : v;
}

uint8_t lg_f32_to_e4m3(float f)
{
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (isnan(f))
        return sign | 0x7f;
    if (!(a < 448.0f))
        return sign | 0x7e; /* saturate (448 itself is 0x7e) */
    if (a < 0x1p-6f) {
        /* subnormal step 2^-9; code 8 (a rounded up to 2^-6) is the smallest normal, as wanted */
        return sign | (uint8_t)nearbyintf(a * 512.0f);
    }
    int e;
    float fr = frexpf(a, &e); /* a = fr 2^e, fr in [0.5, 1) */
    /* mantissa steps of 2^(e-4); nearbyintf rounds half to even in the default mode */
    int q = (int)nearbyintf(fr * 16.0f); /* 8..16 */
    int exp = e - 1 + 7;
    if (q == 16) {
        q = 8;
        exp++;
    }
    int code = (exp << 3) | (q - 8);
    if (code > 0x7e)
        code = 0x7e;
    return sign | (uint8_t)code;
}

/* ---------------------------------------------------------------- decoding */

int lg_quant_tensor_find(const lg_checkpoint *ck, const char *weight_name, const lg_quant_scheme *s,
                         int64_t rows, int64_t cols, lg_quant_tensor *out, lg_err *err)
{
    static const char *const what[] = {"codes", "scales", "mins"};
    char names[3][256];
    const lg_st_tensor *parts[3];
    int any = 0;
    for (int p = 0; p < 3; p++) {
        if (lg_quant_part_name(weight_name, (lg_quant_part)p, names[p], sizeof names[p]) != 0)
            return 0;
        parts[p] = lg_ckpt_find(ck, names[p]);
        any |= parts[p] != NULL;
    }
    if (!any)
        return 0;
    if (lg_ckpt_find(ck, weight_name))
        return lg_err_set(err, "%s: tensor '%s' is there both as float and as quantized parts",
                          ck->dir, weight_name);
    if (!s || s->method == LG_QUANT_NONE)
        return lg_err_set(err, "%s: tensor '%s' is quantized but config.json has no "
                               "longgen.quantization object", ck->dir, names[0]);
    for (int p = 0; p < 3; p++) {
        int wanted = p < lg_quant_n_parts(s);
        if (!wanted && parts[p])
            return lg_err_set(err, "%s: tensor '%s' is unexpected: %s with zero_point \"none\" has "
                                   "no mins", ck->dir, names[p], lg_quant_method_name(s->method));
        if (!wanted)
            continue;
        if (!parts[p])
            return lg_err_set(err, "%s: tensor '%s' is missing (the %s of quantized '%s')", ck->dir,
                              names[p], what[p], weight_name);
        int64_t shape[2];
        lg_quant_part_shape(s, (lg_quant_part)p, rows, cols, shape);
        lg_dtype dt = lg_quant_part_dtype(s, (lg_quant_part)p);
        const lg_st_tensor *t = parts[p];
        if (t->dtype != dt)
            return lg_err_set(err, "%s: tensor '%s' has dtype %s, expected %s for %s", ck->dir,
                              names[p], lg_dtype_name(t->dtype), lg_dtype_name(dt),
                              lg_quant_method_name(s->method));
        if (t->ndim != 2 || t->shape[0] != shape[0] || t->shape[1] != shape[1])
            return lg_err_set(err, "%s: tensor '%s' should have shape [%lld, %lld] (%s, group %d, "
                                   "of a [%lld, %lld] weight)", ck->dir, names[p],
                              (long long)shape[0], (long long)shape[1],
                              lg_quant_method_name(s->method), s->group, (long long)rows,
                              (long long)cols);
    }
    out->scheme = *s;
    out->rows = rows;
    out->cols = cols;
    out->qweight = parts[0]->data;
    out->scales = parts[1]->data;
    out->mins = s->has_mins ? parts[2]->data : NULL;
    return 1;
}

void lg_quant_group_params(const lg_quant_tensor *t, int64_t r, int g, float *scale, float *min)
{
    int ng = lg_quant_n_groups(&t->scheme, t->cols);
    size_t i = (size_t)r * ng + g;
    uint16_t h;
    if (t->scheme.method == LG_QUANT_FP8) {
        memcpy(scale, (const char *)t->scales + 4 * i, 4);
    } else {
        memcpy(&h, (const char *)t->scales + 2 * i, 2);
        *scale = lg_f16_to_f32(h);
    }
    *min = 0;
    if (t->scheme.method == LG_QUANT_Q4) {
        if (t->scheme.has_mins) {
            memcpy(&h, (const char *)t->mins + 2 * i, 2);
            *min = lg_f16_to_f32(h);
        } else {
            *min = -8.0f * *scale; /* exact: a power of two */
        }
    }
}

void lg_quant_dequant_rows(const lg_quant_tensor *t, int64_t r0, int64_t n, float *out)
{
    const lg_quant_scheme *s = &t->scheme;
    int64_t cols = t->cols;
    int64_t group = s->group ? s->group : cols;
    size_t rb = lg_quant_row_bytes(s, cols);
    for (int64_t r = r0; r < r0 + n; r++) {
        const uint8_t *q = (const uint8_t *)t->qweight + (size_t)r * rb;
        float *o = out + (size_t)(r - r0) * cols;
        for (int64_t c0 = 0, g = 0; c0 < cols; c0 += group, g++) {
            float sc, mn;
            lg_quant_group_params(t, r, (int)g, &sc, &mn);
            int64_t c1 = c0 + group < cols ? c0 + group : cols;
            for (int64_t c = c0; c < c1; c++) {
                switch (s->method) {
                case LG_QUANT_Q8:
                    o[c] = sc * (float)(int8_t)q[c];
                    break;
                case LG_QUANT_Q4:
                    o[c] = mn + sc * (float)((q[c / 2] >> (4 * (c & 1))) & 15);
                    break;
                default:
                    o[c] = sc * lg_e4m3_to_f32(q[c]);
                    break;
                }
            }
        }
    }
}
