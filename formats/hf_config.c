#include "hf_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json_file.h"

/* Limits far above any Llama (70B: hidden 8192, 80 layers, MLP 28672) that keep later size
 * arithmetic (hidden * vocab, layers * ...) inside 64 bits and refuse absurd configs early. */
#define MAX_DIM (1L << 20)
#define MAX_LAYERS 4096L
#define MAX_VOCAB (1L << 24)
#define MAX_POS (1L << 30)

static int rope_from_object(const cJSON *o, lg_rope *r, const char *label, lg_err *err)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
    if (!t)
        t = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsString(t))
        return lg_err_set(err, "%s: rope scaling has no 'rope_type' (or 'type') string", label);
    if (lg_rope_type_from_name(t->valuestring, &r->type) != 0)
        return lg_err_set(err, "%s: unsupported rope type '%s' (default, linear, dynamic, yarn, llama3)",
                          label, t->valuestring);
    double v;
    int rc;
    if ((rc = lg_json_num(o, "factor", &v, label, err)) < 0)
        return -1;
    if (rc == 0)
        r->factor = v;
    else if (r->type != LG_ROPE_DEFAULT)
        return lg_err_set(err, "%s: rope %s needs 'factor'", label, t->valuestring);
    long orig;
    if ((rc = lg_json_int(o, "original_max_position_embeddings", 1, MAX_POS, &orig, label, err)) < 0)
        return -1;
    if (rc == 0)
        r->original_max_pos = (int)orig;
    if (lg_json_num(o, "attention_factor", &r->attention_factor, label, err) < 0 ||
        lg_json_num(o, "beta_fast", &r->beta_fast, label, err) < 0 ||
        lg_json_num(o, "beta_slow", &r->beta_slow, label, err) < 0 ||
        lg_json_num(o, "low_freq_factor", &r->low_freq_factor, label, err) < 0 ||
        lg_json_num(o, "high_freq_factor", &r->high_freq_factor, label, err) < 0)
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(o, "mscale") || cJSON_GetObjectItemCaseSensitive(o, "mscale_all_dim"))
        return lg_err_set(err, "%s: yarn 'mscale'/'mscale_all_dim' are not supported for Llama", label);
    return 0;
}

/* v5: rope_parameters {rope_type, rope_theta, ...}; v4: rope_theta + rope_scaling (or null). */
static int read_rope(const cJSON *doc, lg_hf_config *c, lg_err *err)
{
    lg_rope *r = &c->rope;
    memset(r, 0, sizeof *r);
    r->theta = 10000.0;
    r->beta_fast = 32;
    r->beta_slow = 1;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(doc, "rope_parameters");
    if (params && !cJSON_IsNull(params)) {
        if (!cJSON_IsObject(params))
            return lg_err_set(err, "%s: 'rope_parameters' is not an object", c->path);
        c->v5_style = 1;
        if (rope_from_object(params, r, c->path, err) != 0 ||
            lg_json_num(params, "rope_theta", &r->theta, c->path, err) < 0)
            return -1;
    } else {
        if (lg_json_num(doc, "rope_theta", &r->theta, c->path, err) < 0)
            return -1;
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(doc, "rope_scaling");
        if (sc && !cJSON_IsNull(sc)) {
            if (!cJSON_IsObject(sc))
                return lg_err_set(err, "%s: 'rope_scaling' is not an object", c->path);
            if (rope_from_object(sc, r, c->path, err) != 0)
                return -1;
        }
    }
    if (r->beta_fast == 0)
        r->beta_fast = 32;
    if (r->beta_slow == 0)
        r->beta_slow = 1;
    return lg_rope_check(r, c->path, err);
}

static int req_int(const cJSON *doc, const char *key, long lo, long hi, int *out, const char *label,
                   lg_err *err)
{
    long v;
    int rc = lg_json_int(doc, key, lo, hi, &v, label, err);
    if (rc == 1)
        return lg_err_set(err, "%s: missing '%s'", label, key);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

static int opt_int(const cJSON *doc, const char *key, long lo, long hi, int *out, int dflt,
                   const char *label, lg_err *err)
{
    long v;
    int rc = lg_json_int(doc, key, lo, hi, &v, label, err);
    *out = rc == 0 ? (int)v : dflt;
    return rc < 0 ? -1 : 0;
}

static int check_architecture(const cJSON *doc, const char *label, lg_err *err)
{
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(doc, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(doc, "model_type");
    if (cJSON_IsArray(arch) && cJSON_GetArraySize(arch) > 0) {
        const cJSON *a0 = cJSON_GetArrayItem(arch, 0);
        if (!cJSON_IsString(a0) || strcmp(a0->valuestring, "LlamaForCausalLM") != 0)
            return lg_err_set(err, "%s: architecture '%s' is not LlamaForCausalLM", label,
                              cJSON_IsString(a0) ? a0->valuestring : "?");
    } else if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "llama") != 0) {
        return lg_err_set(err, "%s: neither 'architectures' nor 'model_type' says this is a Llama",
                          label);
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(doc, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return lg_err_set(err, "%s: hidden_act must be \"silu\"", label);
    const cJSON *bias;
    if ((bias = cJSON_GetObjectItemCaseSensitive(doc, "attention_bias")) && cJSON_IsTrue(bias))
        return lg_err_set(err, "%s: attention_bias=true is not supported", label);
    if ((bias = cJSON_GetObjectItemCaseSensitive(doc, "mlp_bias")) && cJSON_IsTrue(bias))
        return lg_err_set(err, "%s: mlp_bias=true is not supported", label);
    return 0;
}

static int read_dtype(const cJSON *doc, lg_hf_config *c, lg_err *err)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(doc, "dtype");
    if (!d || cJSON_IsNull(d))
        d = cJSON_GetObjectItemCaseSensitive(doc, "torch_dtype");
    if (!d || cJSON_IsNull(d))
        return 0;
    static const struct {
        const char *name;
        lg_dtype dt;
    } names[] = {{"float16", LG_DT_F16}, {"bfloat16", LG_DT_BF16}, {"float32", LG_DT_F32},
                 {"float64", LG_DT_F64}};
    if (cJSON_IsString(d))
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(d->valuestring, names[i].name) == 0) {
                c->dtype = names[i].dt;
                c->has_dtype = 1;
                return 0;
            }
    return lg_err_set(err, "%s: unsupported dtype '%s'", c->path,
                      cJSON_IsString(d) ? d->valuestring : "(not a string)");
}

static int read_longgen(const cJSON *doc, lg_hf_config *c, lg_err *err)
{
    c->layers = calloc((size_t)c->n_layers, sizeof *c->layers);
    if (!c->layers)
        return lg_err_set(err, "%s: out of memory", c->path);
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(doc, "longgen");
    if (!lg || cJSON_IsNull(lg))
        return 0; /* a plain checkpoint: every layer full */
    c->has_longgen = 1;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(lg, "layers");
    if (!cJSON_IsArray(layers))
        return lg_err_set(err, "%s: longgen.layers is not an array", c->path);
    if (cJSON_GetArraySize(layers) != c->n_layers)
        return lg_err_set(err, "%s: longgen.layers has %d entries but num_hidden_layers is %d",
                          c->path, cJSON_GetArraySize(layers), c->n_layers);
    long version;
    int rc = lg_json_int(lg, "format_version", 1, 1000, &version, c->path, err);
    if (rc < 0)
        return -1;
    if (rc == 0 && version > LG_LONGGEN_FORMAT_VERSION)
        return lg_err_set(err, "%s: longgen format_version %ld is newer than this tool's %d",
                          c->path, version, LG_LONGGEN_FORMAT_VERSION);
    for (int i = 0; i < c->n_layers; i++) {
        char what[4200];
        snprintf(what, sizeof what, "%s: longgen.layers[%d]", c->path, i);
        if (lg_layer_attn_from_json(cJSON_GetArrayItem(layers, i), &c->layers[i], what, err) != 0)
            return -1;
    }
    return 0;
}

static int read_fields(const cJSON *doc, lg_hf_config *c, lg_err *err)
{
    const char *p = c->path;
    if (check_architecture(doc, p, err) ||
        req_int(doc, "hidden_size", 1, MAX_DIM, &c->hidden_size, p, err) ||
        req_int(doc, "intermediate_size", 1, MAX_DIM, &c->intermediate_size, p, err) ||
        req_int(doc, "num_hidden_layers", 1, MAX_LAYERS, &c->n_layers, p, err) ||
        req_int(doc, "num_attention_heads", 1, MAX_DIM, &c->n_heads, p, err) ||
        req_int(doc, "vocab_size", 1, MAX_VOCAB, &c->vocab_size, p, err) ||
        opt_int(doc, "num_key_value_heads", 1, MAX_DIM, &c->n_kv_heads, c->n_heads, p, err) ||
        opt_int(doc, "max_position_embeddings", 1, MAX_POS, &c->max_pos, 2048, p, err) ||
        opt_int(doc, "bos_token_id", 0, MAX_VOCAB, &c->bos_id, -1, p, err) ||
        opt_int(doc, "eos_token_id", 0, MAX_VOCAB, &c->eos_id, -1, p, err))
        return -1;
    if (c->hidden_size % c->n_heads != 0 && !cJSON_GetObjectItemCaseSensitive(doc, "head_dim"))
        return lg_err_set(err, "%s: num_attention_heads %d does not divide hidden_size %d", p,
                          c->n_heads, c->hidden_size);
    if (opt_int(doc, "head_dim", 2, MAX_DIM, &c->head_dim, c->hidden_size / c->n_heads, p, err))
        return -1;
    if (c->head_dim % 2 != 0)
        return lg_err_set(err, "%s: head_dim %d is odd; RoPE needs pairs", p, c->head_dim);
    if (c->n_heads % c->n_kv_heads != 0)
        return lg_err_set(err, "%s: num_key_value_heads %d does not divide num_attention_heads %d",
                          p, c->n_kv_heads, c->n_heads);
    c->rms_eps = 1e-6;
    if (lg_json_num(doc, "rms_norm_eps", &c->rms_eps, p, err) < 0)
        return -1;
    if (!(c->rms_eps > 0))
        return lg_err_set(err, "%s: rms_norm_eps must be > 0", p);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(doc, "tie_word_embeddings");
    if (tie && !cJSON_IsBool(tie))
        return lg_err_set(err, "%s: tie_word_embeddings is not a boolean", p);
    c->tie_embeddings = tie ? cJSON_IsTrue(tie) : 0; /* LlamaConfig's default is False */
    if (read_dtype(doc, c, err) || read_rope(doc, c, err) || read_longgen(doc, c, err))
        return -1;
    return 0;
}

lg_hf_config *lg_hf_config_parse(const char *text, size_t len, const char *label, lg_err *err)
{
    lg_hf_config *c = calloc(1, sizeof *c);
    if (!c) {
        lg_err_set(err, "%s: out of memory", label);
        return NULL;
    }
    c->path = strdup(label);
    c->json = lg_json_parse(text, len, label, err);
    if (!c->json || read_fields(c->json, c, err) != 0) {
        lg_hf_config_free(c);
        return NULL;
    }
    return c;
}

lg_hf_config *lg_hf_config_read(const char *path, lg_err *err)
{
    char file[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(file, sizeof file, "%s/config.json", path);
    else
        snprintf(file, sizeof file, "%s", path);
    cJSON *doc = lg_json_read_file(file, 16u << 20, err);
    if (!doc)
        return NULL;
    lg_hf_config *c = calloc(1, sizeof *c);
    c->path = strdup(file);
    c->json = doc;
    if (read_fields(doc, c, err) != 0) {
        lg_hf_config_free(c);
        return NULL;
    }
    return c;
}

void lg_hf_config_free(lg_hf_config *c)
{
    if (!c)
        return;
    cJSON_Delete(c->json);
    free(c->layers);
    free(c->path);
    free(c);
}

static void add_rope_params(const lg_rope *r, cJSON *o)
{
    if (r->type != LG_ROPE_DEFAULT)
        cJSON_AddNumberToObject(o, "factor", r->factor);
    if ((r->type == LG_ROPE_YARN || r->type == LG_ROPE_LLAMA3 || r->type == LG_ROPE_DYNAMIC) &&
        r->original_max_pos > 0)
        cJSON_AddNumberToObject(o, "original_max_position_embeddings", r->original_max_pos);
    if (r->type == LG_ROPE_YARN) {
        if (r->attention_factor > 0)
            cJSON_AddNumberToObject(o, "attention_factor", r->attention_factor);
        cJSON_AddNumberToObject(o, "beta_fast", r->beta_fast);
        cJSON_AddNumberToObject(o, "beta_slow", r->beta_slow);
    }
    if (r->type == LG_ROPE_LLAMA3) {
        cJSON_AddNumberToObject(o, "low_freq_factor", r->low_freq_factor);
        cJSON_AddNumberToObject(o, "high_freq_factor", r->high_freq_factor);
    }
}

/* Replaces key in obj, keeping its position when it exists (so rewritten configs diff cleanly). */
static void put(cJSON *obj, const char *key, cJSON *value)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, value);
    else
        cJSON_AddItemToObject(obj, key, value);
}

void lg_rope_to_config(const lg_rope *r, cJSON *config, int v5_style)
{
    if (v5_style) {
        cJSON_DeleteItemFromObjectCaseSensitive(config, "rope_theta");
        cJSON_DeleteItemFromObjectCaseSensitive(config, "rope_scaling");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "rope_theta", r->theta);
        cJSON_AddStringToObject(o, "rope_type", lg_rope_type_name(r->type));
        add_rope_params(r, o);
        put(config, "rope_parameters", o);
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(config, "rope_parameters");
    put(config, "rope_theta", cJSON_CreateNumber(r->theta));
    if (r->type == LG_ROPE_DEFAULT) {
        put(config, "rope_scaling", cJSON_CreateNull());
        return;
    }
    /* `type` for transformers before 4.43, `rope_type` after: write both */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", lg_rope_type_name(r->type));
    cJSON_AddStringToObject(o, "rope_type", lg_rope_type_name(r->type));
    add_rope_params(r, o);
    put(config, "rope_scaling", o);
}
