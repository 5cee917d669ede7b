#include "llama_tensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant_format.h"

static void spec(lg_tensor_spec *s, const char *name, int64_t d0, int64_t d1)
{
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = d1 > 0 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1 > 0 ? d1 : 0;
}

int lg_llama_tensor_specs(const lg_hf_config *c, lg_tensor_spec **out)
{
    int n = 2 + 9 * c->n_layers + (c->tie_embeddings ? 0 : 1);
    lg_tensor_spec *s = calloc((size_t)n, sizeof *s);
    if (!s)
        return -1;
    int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int k = 0;
    spec(&s[k++], "model.embed_tokens.weight", V, H);
    for (int l = 0; l < c->n_layers; l++) {
        char name[LG_TENSOR_NAME_MAX];
#define LAYER(suffix, d0, d1)                                                    \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                \
    spec(&s[k++], name, d0, d1)
        LAYER("input_layernorm.weight", H, 0);
        LAYER("self_attn.q_proj.weight", q, H);
        LAYER("self_attn.k_proj.weight", kv, H);
        LAYER("self_attn.v_proj.weight", kv, H);
        LAYER("self_attn.o_proj.weight", H, q);
        LAYER("post_attention_layernorm.weight", H, 0);
        LAYER("mlp.gate_proj.weight", I, H);
        LAYER("mlp.up_proj.weight", I, H);
        LAYER("mlp.down_proj.weight", H, I);
#undef LAYER
    }
    spec(&s[k++], "model.norm.weight", H, 0);
    if (!c->tie_embeddings)
        spec(&s[k++], "lm_head.weight", V, H);
    *out = s;
    return k;
}

int lg_is_rotary_inv_freq(const char *name, int *layer)
{
    /* digits only, as transformers writes them (sscanf's %d would also take a sign, spaces, and
     * wrap 4294967298 around to 2) */
    static const char prefix[] = "model.layers.", suffix[] = ".self_attn.rotary_emb.inv_freq";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *digits = name + sizeof prefix - 1, *p = digits;
    int l = 0;
    while (*p >= '0' && *p <= '9' && p - digits < 9)
        l = 10 * l + (*p++ - '0');
    if (p == digits || (*digits == '0' && p - digits > 1) || strcmp(p, suffix) != 0)
        return 0;
    if (layer)
        *layer = l;
    return 1;
}

static int check_shape(const lg_tensor_spec *s, const lg_st_tensor *t, const char *dir, lg_err *err)
{
    static const char *const dim_names[2] = {"dimension 0 (rows)", "dimension 1 (columns)"};
    if (t->ndim != s->ndim)
        return lg_err_set(err, "%s: tensor '%s' has %d dimensions, the config implies %d", dir,
                          s->name, t->ndim, s->ndim);
    for (int d = 0; d < s->ndim; d++)
        if (t->shape[d] != s->shape[d])
            return lg_err_set(err, "%s: tensor '%s' %s is %lld, the config implies %lld", dir,
                              s->name, dim_names[d], (long long)t->shape[d], (long long)s->shape[d]);
    if (!lg_dtype_is_float(t->dtype))
        return lg_err_set(err, "%s: tensor '%s' has dtype %s, expected a float type", dir, s->name,
                          lg_dtype_name(t->dtype));
    return 0;
}

/* inv_freq buffers were saved by transformers from the model's own RoPE; they must agree with the
 * config: relative 1e-6 in float32 (torch's pow may differ from ours by an ulp); model.half() or
 * .bfloat16() also rounds them, so a half type is allowed one ulp of its own (2^-10 F16,
 * 2^-7 BF16) plus F16's smallest subnormal for the tiny frequencies of a large theta. */
static float inv_freq_tolerance(lg_dtype dt, float want)
{
    switch (dt) {
    case LG_DT_F16:
        return 0x1p-10f * fabsf(want) + 0x1p-24f;
    case LG_DT_BF16:
        return 0x1p-7f * fabsf(want) + 1e-12f;
    default:
        return 1e-6f * fabsf(want) + 1e-12f;
    }
}

static int check_inv_freq(const lg_hf_config *c, const lg_st_tensor *t, int layer, const char *dir,
                          lg_err *err)
{
    int half = c->head_dim / 2;
    if (layer >= c->n_layers)
        return lg_err_set(err, "%s: tensor '%s' names layer %d but the config has %d layers", dir,
                          t->name, layer, c->n_layers);
    if (t->ndim != 1 || t->shape[0] != half || !lg_dtype_is_float(t->dtype))
        return lg_err_set(err, "%s: tensor '%s' should be a float vector of head_dim/2 = %d", dir,
                          t->name, half);
    float *want = malloc(sizeof(float) * (size_t)half), scale;
    if (!want)
        return lg_err_set(err, "%s: out of memory", dir);
    lg_rope_inv_freq(&c->rope, c->head_dim, c->max_pos, 0, want, &scale);
    int rc = 0;
    for (int i = 0; i < half && rc == 0; i++) {
        float got = lg_load_float(t->data, t->dtype, (size_t)i);
        if (!(fabsf(got - want[i]) <= inv_freq_tolerance(t->dtype, want[i])))
            rc = lg_err_set(err,
                            "%s: tensor '%s'[%d] = %.9g disagrees with the config's RoPE (%s, theta %g): %.9g",
                            dir, t->name, i, got, lg_rope_type_name(c->rope.type), c->rope.theta,
                            want[i]);
    }
    free(want);
    return rc;
}

/* 1 when name is a quantized part of a matrix in specs. */
static int is_quant_part(const char *name, const lg_tensor_spec *specs, int n)
{
    static const char *const suffixes[] = {".qweight", ".scales", ".mins"};
    size_t len = strlen(name);
    for (int i = 0; i < 3; i++) {
        size_t sl = strlen(suffixes[i]);
        if (len <= sl || strcmp(name + len - sl, suffixes[i]) != 0)
            continue;
        char weight[LG_TENSOR_NAME_MAX + 16];
        snprintf(weight, sizeof weight, "%.*s.weight", (int)(len - sl), name);
        for (int k = 0; k < n; k++)
            if (specs[k].ndim == 2 && strcmp(specs[k].name, weight) == 0)
                return 1;
    }
    return 0;
}

int lg_llama_check(const lg_hf_config *c, const lg_checkpoint *ck, int allow_extra, int *n_extra,
                   lg_err *err)
{
    lg_tensor_spec *specs;
    int n = lg_llama_tensor_specs(c, &specs);
    if (n < 0)
        return lg_err_set(err, "%s: out of memory", ck->dir);
    lg_quant_config qc;
    int has_q = 0;
    int rc = c->json ? lg_quant_config_from_json(c->json, c->path, &qc, &has_q, err) : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const lg_st_tensor *t = lg_ckpt_find(ck, specs[i].name);
        int is_quant = 0;
        if (specs[i].ndim == 2) {
            lg_quant_tensor qt;
            is_quant = lg_quant_tensor_find(ck, specs[i].name, has_q ? &qc.scheme : NULL,
                                            specs[i].shape[0], specs[i].shape[1], &qt, err);
            rc = is_quant < 0 ? -1 : 0;
        }
        if (rc != 0 || is_quant)
            continue;
        if (!t)
            rc = lg_err_set(err, "%s: missing tensor '%s'", ck->dir, specs[i].name);
        else
            rc = check_shape(&specs[i], t, ck->dir, err);
    }
    /* every tensor not in the spec list is an inv_freq buffer or an extra */
    int extras = 0;
    for (int i = 0; i < ck->n_tensors && rc == 0; i++) {
        const lg_st_tensor *t = ck->entries[i].tensor;
        int layer, known = 0;
        if (lg_is_rotary_inv_freq(t->name, &layer)) {
            rc = check_inv_freq(c, t, layer, ck->dir, err);
            continue;
        }
        for (int k = 0; k < n && !known; k++)
            known = strcmp(specs[k].name, t->name) == 0;
        known = known || is_quant_part(t->name, specs, n);
        if (known)
            continue;
        if (c->tie_embeddings && strcmp(t->name, "lm_head.weight") == 0)
            rc = lg_err_set(err, "%s: tensor 'lm_head.weight' present but tie_word_embeddings is true",
                            ck->dir);
        else if (!allow_extra)
            rc = lg_err_set(err, "%s: unknown tensor '%s' (use --allow-extra to keep going without it)",
                            ck->dir, t->name);
        else
            extras++;
    }
    if (n_extra)
        *n_extra = extras;
    free(specs);
    return rc;
}
