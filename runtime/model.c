#include "model.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "dtype.h"
#include "matmul_quant_cpu.h"

/* ---------------------------------------------------------------- tensor checks */

/* Finds `name` and checks it is a float tensor of shape [rows] (cols < 0) or [rows, cols]; the
 * `*_what` strings say which config value each dimension comes from, for the message. */
static const lg_st_tensor *need_tensor(const lg_checkpoint *ck, const char *name, int64_t rows,
                                       const char *rows_what, int64_t cols, const char *cols_what,
                                       lg_err *err)
{
    const lg_st_tensor *t = lg_ckpt_find(ck, name);
    if (!t) {
        lg_err_set(err, "tensor '%s' is missing", name);
        return NULL;
    }
    if (!lg_dtype_is_float(t->dtype)) {
        lg_err_set(err, "tensor '%s' has dtype %s, expected a float type", name,
                   lg_dtype_name(t->dtype));
        return NULL;
    }
    int ndim = cols < 0 ? 1 : 2;
    char want[64];
    if (ndim == 1)
        snprintf(want, sizeof want, "[%lld]", (long long)rows);
    else
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
    if (t->ndim != ndim) {
        lg_err_set(err, "tensor '%s' has %d dimensions, expected %d %s", name, t->ndim, ndim, want);
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        int64_t expect = d == 0 ? rows : cols;
        if (t->shape[d] != expect) {
            char got[64];
            if (ndim == 1)
                snprintf(got, sizeof got, "[%lld]", (long long)t->shape[0]);
            else
                snprintf(got, sizeof got, "[%lld, %lld]", (long long)t->shape[0],
                         (long long)t->shape[1]);
            lg_err_set(err,
                       "tensor '%s' has shape %s, expected %s: dimension %d should be %s = %lld",
                       name, got, want, d, d == 0 ? rows_what : cols_what, (long long)expect);
            return NULL;
        }
    }
    /* the safetensors reader has checked that the data spans shape x dtype bytes */
    return t;
}

/* A [n] vector as float32 (malloc'd). */
static float *load_vector(const lg_checkpoint *ck, const char *name, int n, const char *what,
                          lg_err *err)
{
    const lg_st_tensor *t = need_tensor(ck, name, n, what, -1, NULL, err);
    if (!t)
        return NULL;
    float *out = malloc((size_t)n * sizeof(float));
    if (!out) {
        lg_err_set(err, "tensor '%s': out of memory", name);
        return NULL;
    }
    lg_convert_floats(out, LG_DT_F32, t->data, t->dtype, (size_t)n);
    return out;
}

/* ---------------------------------------------------------------- quantized matrices */

/* The quantized form of `name` ([rows, cols]) when the checkpoint holds it: 1 found, 0 not, -1 bad. */
static int find_quant(const lg_model *m, const lg_checkpoint *ck, const char *name, int64_t rows,
                      int64_t cols, lg_quant_tensor *qt, lg_err *err)
{
    if (m->quant.scheme.method == LG_QUANT_NONE && !lg_ckpt_find(ck, name))
        return lg_quant_tensor_find(ck, name, NULL, rows, cols, qt, err); /* says what is wrong */
    if (m->quant.scheme.method == LG_QUANT_NONE)
        return 0;
    int found = lg_quant_tensor_find(ck, name, &m->quant.scheme, rows, cols, qt, err);
    if (found == 1 && qt->scheme.method == LG_QUANT_FP8) {
        /* e4m3fn's NaN codes: the converter never writes them (it saturates) */
        const uint8_t *q = qt->qweight;
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++)
            if ((q[i] & 0x7f) == 0x7f)
                return lg_err_set(err, "tensor '%s': fp8 code %zu is NaN", name, i);
    }
    return found;
}

/* Moves p's rows [0, row0) from its quantized form to float32 (a stacked matrix whose later part is
 * float: --quant-exclude may keep k_proj float beside a quantized q_proj). */
static int unquantize(lg_pmat *p, int row0, lg_err *err)
{
    lg_pmat f;
    if (lg_pmat_init(&f, p->rows, p->cols, err) != 0)
        return -1;
    float *buf = malloc((size_t)p->cols * sizeof(float));
    if (!buf) {
        lg_pmat_free(&f);
        return lg_err_set(err, "out of memory");
    }
    for (int r = 0; r < row0; r++) {
        lg_qmat_get_row(p->q, r, buf);
        lg_pmat_set_row(&f, r, buf);
    }
    free(buf);
    lg_pmat_free(p);
    *p = f;
    return 0;
}

/* Writes quantized tensor qt into rows row0 .. of p: kept quantized when p holds nothing else yet
 * (row0 0) or is quantized already, else (or when the model is loaded with dequantize) decoded. */
static int pack_quant_rows(const lg_model *m, lg_pmat *p, int row0, const lg_quant_tensor *qt,
                           const char *name, int dequantize, lg_err *err)
{
    if (!dequantize && (row0 == 0 || p->q)) {
        if (!p->q) {
            lg_qmat *q = calloc(1, sizeof *q);
            if (!q || lg_qmat_init(q, &m->quant.scheme, p->rows, p->cols, err) != 0) {
                free(q);
                return q ? -1 : lg_err_set(err, "tensor '%s': out of memory", name);
            }
            free(p->data);
            p->data = NULL;
            p->q = q;
        }
        lg_qmat_set_rows(p->q, row0, qt, (int)qt->rows);
        return 0;
    }
    float *buf = malloc((size_t)p->cols * sizeof(float));
    if (!buf)
        return lg_err_set(err, "tensor '%s': out of memory", name);
    for (int r = 0; r < (int)qt->rows; r++) {
        lg_quant_dequant_rows(qt, r, 1, buf);
        lg_pmat_set_row(p, row0 + r, buf);
    }
    free(buf);
    return 0;
}

/* Writes a [rows, cols] tensor into rows row0 .. row0 + rows - 1 of p (quantized ones as above). */
static int pack_rows(const lg_model *m, lg_pmat *p, int row0, const lg_checkpoint *ck,
                     const char *name, int rows, const char *rows_what, const char *cols_what,
                     lg_err *err)
{
    lg_quant_tensor qt;
    int found = find_quant(m, ck, name, rows, p->cols, &qt, err);
    if (found < 0)
        return -1;
    if (found)
        return pack_quant_rows(m, p, row0, &qt, name, m->quant_dequantize, err);
    if (p->q && unquantize(p, row0, err) != 0)
        return -1;
    const lg_st_tensor *t = need_tensor(ck, name, rows, rows_what, p->cols, cols_what, err);
    if (!t)
        return -1;
    float *buf = malloc((size_t)p->cols * sizeof(float));
    if (!buf)
        return lg_err_set(err, "tensor '%s': out of memory", name);
    size_t row_bytes = (size_t)p->cols * lg_dtype_size(t->dtype);
    for (int r = 0; r < rows; r++) {
        lg_convert_floats(buf, LG_DT_F32, (const char *)t->data + (size_t)r * row_bytes, t->dtype,
                          (size_t)p->cols);
        lg_pmat_set_row(p, row0 + r, buf);
    }
    free(buf);
    return 0;
}

/* ---------------------------------------------------------------- loading */

static int check_shape(const lg_hf_config *c, lg_err *err)
{
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab_size <= 0)
        return lg_err_set(err, "config: sizes must be positive");
    if (c->n_heads % c->n_kv_heads != 0)
        return lg_err_set(err, "config: num_attention_heads %d is not a multiple of "
                               "num_key_value_heads %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return lg_err_set(err, "config: head_dim %d must be even for RoPE", c->head_dim);
    /* every packed matrix dimension must fit an int */
    int64_t qkv = (int64_t)(c->n_heads + 2 * (int64_t)c->n_kv_heads) * c->head_dim;
    if (qkv > INT_MAX / 2 || 2 * (int64_t)c->intermediate_size > INT_MAX / 2 ||
        (int64_t)c->n_heads * c->head_dim > INT_MAX / 2)
        return lg_err_set(err, "config: layer sizes too large");
    return 0;
}

static int load_layer(lg_model *m, const lg_checkpoint *ck, int l, lg_err *err)
{
    lg_layer_weights *w = &m->w[l];
    char name[256];
    int hd = m->head_dim, q_rows = m->n_heads * hd, kv_rows = m->n_kv_heads * hd;

#define LAYER_NAME(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
    w->attn_norm =
        load_vector(ck, LAYER_NAME("input_layernorm.weight"), m->dim, "hidden_size", err);
    if (!w->attn_norm)
        return -1;
    w->mlp_norm =
        load_vector(ck, LAYER_NAME("post_attention_layernorm.weight"), m->dim, "hidden_size", err);
    if (!w->mlp_norm)
        return -1;
    if (lg_pmat_init(&w->wqkv, q_rows + 2 * kv_rows, m->dim, err) != 0 ||
        pack_rows(m, &w->wqkv, 0, ck, LAYER_NAME("self_attn.q_proj.weight"), q_rows,
                  "num_attention_heads * head_dim", "hidden_size", err) != 0 ||
        pack_rows(m, &w->wqkv, q_rows, ck, LAYER_NAME("self_attn.k_proj.weight"), kv_rows,
                  "num_key_value_heads * head_dim", "hidden_size", err) != 0 ||
        pack_rows(m, &w->wqkv, q_rows + kv_rows, ck, LAYER_NAME("self_attn.v_proj.weight"), kv_rows,
                  "num_key_value_heads * head_dim", "hidden_size", err) != 0)
        return -1;
    if (lg_pmat_init(&w->wo, m->dim, q_rows, err) != 0 ||
        pack_rows(m, &w->wo, 0, ck, LAYER_NAME("self_attn.o_proj.weight"), m->dim, "hidden_size",
                  "num_attention_heads * head_dim", err) != 0)
        return -1;
    if (lg_pmat_init(&w->w_gate_up, 2 * m->ffn_dim, m->dim, err) != 0 ||
        pack_rows(m, &w->w_gate_up, 0, ck, LAYER_NAME("mlp.gate_proj.weight"), m->ffn_dim,
                  "intermediate_size", "hidden_size", err) != 0 ||
        pack_rows(m, &w->w_gate_up, m->ffn_dim, ck, LAYER_NAME("mlp.up_proj.weight"), m->ffn_dim,
                  "intermediate_size", "hidden_size", err) != 0)
        return -1;
    if (lg_pmat_init(&w->w_down, m->dim, m->ffn_dim, err) != 0 ||
        pack_rows(m, &w->w_down, 0, ck, LAYER_NAME("mlp.down_proj.weight"), m->dim, "hidden_size",
                  "intermediate_size", err) != 0)
        return -1;
#undef LAYER_NAME
    return 0;
}

static int load_weights(lg_model *m, const lg_checkpoint *ck, lg_err *err)
{
    const char *emb = "model.embed_tokens.weight";
    size_t n = (size_t)m->vocab_size * m->dim;
    lg_quant_tensor qemb;
    int emb_quant = find_quant(m, ck, emb, m->vocab_size, m->dim, &qemb, err);
    const lg_st_tensor *t = emb_quant ? NULL : need_tensor(ck, emb, m->vocab_size, "vocab_size",
                                                           m->dim, "hidden_size", err);
    if (emb_quant < 0 || (!emb_quant && !t))
        return -1;
    m->embed = malloc(n * sizeof(float));
    if (!m->embed)
        return lg_err_set(err, "tensor '%s': out of memory", emb);
    if (emb_quant)
        lg_quant_dequant_rows(&qemb, 0, m->vocab_size, m->embed);
    else
        lg_convert_floats(m->embed, LG_DT_F32, t->data, t->dtype, n);

    for (int l = 0; l < m->n_layers; l++)
        if (load_layer(m, ck, l, err) != 0)
            return -1;
    m->final_norm = load_vector(ck, "model.norm.weight", m->dim, "hidden_size", err);
    if (!m->final_norm)
        return -1;

    if (lg_pmat_init(&m->lm_head, m->vocab_size, m->dim, err) != 0)
        return -1;
    if (m->tied && emb_quant) /* the head is the quantized embedding */
        return pack_quant_rows(m, &m->lm_head, 0, &qemb, emb, m->quant_dequantize, err);
    if (m->tied) {
        for (int r = 0; r < m->vocab_size; r++)
            lg_pmat_set_row(&m->lm_head, r, m->embed + (size_t)r * m->dim);
        return 0;
    }
    return pack_rows(m, &m->lm_head, 0, ck, "lm_head.weight", m->vocab_size, "vocab_size",
                     "hidden_size", err);
}

const lg_st_tensor *lg_model_need_tensor(const lg_checkpoint *ck, const char *name, int64_t rows,
                                         const char *rows_what, int64_t cols,
                                         const char *cols_what, lg_err *err)
{
    return need_tensor(ck, name, rows, rows_what, cols, cols_what, err);
}

lg_model *lg_model_load(const char *dir, lg_err *err)
{
    return lg_model_load_ex(dir, NULL, err);
}

lg_model *lg_model_load_ex(const char *dir, const lg_model_load_opts *opts, lg_err *err)
{
    lg_hf_config *cfg = lg_hf_config_read(dir, err);
    if (!cfg)
        return NULL;
    lg_model *m = calloc(1, sizeof *m);
    if (!m || check_shape(cfg, err) != 0) {
        if (!m)
            lg_err_set(err, "out of memory");
        lg_err_prefix(err, "%s", dir);
        lg_hf_config_free(cfg);
        free(m);
        return NULL;
    }
    m->dim = cfg->hidden_size;
    m->ffn_dim = cfg->intermediate_size;
    m->n_layers = cfg->n_layers;
    m->n_heads = cfg->n_heads;
    m->n_kv_heads = cfg->n_kv_heads;
    m->head_dim = cfg->head_dim;
    m->vocab_size = cfg->vocab_size;
    m->max_pos = cfg->max_pos;
    /* HF adds eps to a float32 tensor: it acts as a float32 value */
    m->rms_eps = (float)cfg->rms_eps;
    m->tied = cfg->tie_embeddings;
    m->rope = cfg->rope;
    m->bos_id = cfg->bos_id;
    m->eos_id = cfg->eos_id;
    m->dir = strdup(dir);
    m->layers = calloc((size_t)m->n_layers, sizeof *m->layers);
    m->w = calloc((size_t)m->n_layers, sizeof *m->w);
    if (!m->dir || !m->layers || !m->w) {
        lg_err_set(err, "%s: out of memory", dir);
        lg_hf_config_free(cfg);
        lg_model_free(m);
        return NULL;
    }
    memcpy(m->layers, cfg->layers, (size_t)m->n_layers * sizeof *m->layers);
    m->has_plan = cfg->has_longgen;
    int has_quant;
    if (lg_quant_config_from_json(cfg->json, cfg->path, &m->quant, &has_quant, err) != 0) {
        lg_hf_config_free(cfg);
        lg_model_free(m);
        return NULL;
    }
    m->quant_dequantize = opts && opts->dequantize;
    lg_hf_config_free(cfg);
    if (opts && opts->no_weights)
        return m; /* the backend reads the checkpoint itself */
    m->has_weights = 1;

    lg_checkpoint *ck = lg_ckpt_open(dir, err);
    if (!ck) {
        lg_model_free(m);
        return NULL;
    }
    int rc = load_weights(m, ck, err);
    lg_ckpt_close(ck);
    if (rc != 0) {
        lg_err_prefix(err, "%s", dir);
        lg_model_free(m);
        return NULL;
    }
    return m;
}

void lg_model_free(lg_model *m)
{
    if (!m)
        return;
    if (m->w) {
        for (int l = 0; l < m->n_layers; l++) {
            lg_layer_weights *w = &m->w[l];
            free(w->attn_norm);
            free(w->mlp_norm);
            lg_pmat_free(&w->wqkv);
            lg_pmat_free(&w->wo);
            lg_pmat_free(&w->w_gate_up);
            lg_pmat_free(&w->w_down);
        }
        free(m->w);
    }
    free(m->embed);
    free(m->final_norm);
    lg_pmat_free(&m->lm_head);
    free(m->layers);
    free(m->dir);
    free(m);
}

/* ---------------------------------------------------------------- plan */

int lg_model_set_layers(lg_model *m, const lg_layer_attn *layers, lg_err *err)
{
    for (int l = 0; l < m->n_layers; l++) {
        char what[32];
        snprintf(what, sizeof what, "layer %d", l);
        if (lg_layer_attn_check(&layers[l], what, err) != 0)
            return -1;
    }
    memcpy(m->layers, layers, (size_t)m->n_layers * sizeof *layers);
    m->has_plan = 1;
    return 0;
}

const char *lg_model_plan_note(const lg_model *m, char *buf, size_t cap)
{
    char path[4096];
    struct stat st;
    if (m->has_plan || !m->dir)
        return NULL;
    snprintf(path, sizeof path, "%s/longgen_plan.json", m->dir);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    snprintf(buf, cap, "%s is not applied: %s/config.json has no longgen layout, so every layer "
             "runs full attention (--plan %s applies it; lg-convert --plan writes it into the "
             "config)", path, m->dir, path);
    return buf;
}

void lg_model_print_plan_note(const lg_model *m, const char *who)
{
    char note[8448];
    if (lg_model_plan_note(m, note, sizeof note))
        fprintf(stderr, "%s: note: %s\n", who, note);
}

int lg_model_load_plan(lg_model *m, const char *plan_path, lg_err *err)
{
    lg_layer_attn *layers = calloc((size_t)m->n_layers, sizeof *layers);
    if (!layers)
        return lg_err_set(err, "%s: out of memory", plan_path);
    int rc = lg_plan_file_read(plan_path, m->n_layers, layers, err);
    if (rc == 0)
        rc = lg_model_set_layers(m, layers, err);
    free(layers);
    return rc;
}

size_t lg_model_weight_bytes(const lg_model *m)
{
    size_t b = (size_t)m->vocab_size * m->dim * sizeof(float) + lg_pmat_bytes(&m->lm_head) +
               (size_t)m->dim * sizeof(float);
    for (int l = 0; l < m->n_layers; l++) {
        const lg_layer_weights *w = &m->w[l];
        b += 2 * (size_t)m->dim * sizeof(float) + lg_pmat_bytes(&w->wqkv) + lg_pmat_bytes(&w->wo) +
             lg_pmat_bytes(&w->w_gate_up) + lg_pmat_bytes(&w->w_down);
    }
    return b;
}
