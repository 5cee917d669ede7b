#include "inspect.h"

#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "plan.h"
#include "quant_format.h"

lg_kv_bytes lg_kv_cache_bytes(const lg_hf_config *c, long T, int elem_bytes)
{
    double per_pos = 2.0 * c->n_kv_heads * c->head_dim * elem_bytes;
    lg_kv_bytes kv = {0, 0};
    for (int l = 0; l < c->n_layers; l++) {
        kv.full_model += per_pos * (double)T;
        kv.longgen += per_pos * (double)lg_attn_cached_positions(&c->layers[l], T);
    }
    return kv;
}

static void human_bytes(double b, char *buf, size_t n)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", b, units[u]);
}

/* Dtypes of the weights as "F16" or "F16 x 55, F32 x 2". */
static void dtype_summary(const lg_checkpoint *ck, char *buf, size_t n)
{
    int counts[LG_DT_COUNT] = {0};
    for (int i = 0; i < ck->n_tensors; i++)
        counts[ck->entries[i].tensor->dtype]++;
    size_t used = 0;
    int kinds = 0;
    for (int d = 0; d < LG_DT_COUNT; d++)
        kinds += counts[d] > 0;
    buf[0] = 0;
    for (int d = 0; d < LG_DT_COUNT; d++) {
        if (!counts[d])
            continue;
        int w = kinds == 1 ? snprintf(buf + used, n - used, "%s", lg_dtype_name((lg_dtype)d))
                           : snprintf(buf + used, n - used, "%s%s x %d", used ? ", " : "",
                                      lg_dtype_name((lg_dtype)d), counts[d]);
        if (w < 0 || (size_t)w >= n - used)
            break;
        used += (size_t)w;
    }
}

/* Cache element size: the weights' dtype when it is 16-bit (what a GPU runtime caches in),
 * else float32. */
static int cache_elem_bytes(const lg_checkpoint *ck)
{
    const lg_st_tensor *t = lg_ckpt_find(ck, "model.layers.0.self_attn.k_proj.weight");
    if (!t) /* quantized: the norms keep the activations' dtype */
        t = lg_ckpt_find(ck, "model.layers.0.input_layernorm.weight");
    return t && (t->dtype == LG_DT_F16 || t->dtype == LG_DT_BF16) ? 2 : 4;
}

static void print_text(const lg_hf_config *c, const lg_checkpoint *ck, long T, FILE *out)
{
    uint64_t params = 0;
    for (int i = 0; i < ck->n_tensors; i++)
        params += ck->entries[i].tensor->nelem;
    char size[32], dts[256], plan[2048], rope[256];
    human_bytes((double)lg_ckpt_data_bytes(ck), size, sizeof size);
    dtype_summary(ck, dts, sizeof dts);
    lg_plan_describe(c->layers, c->n_layers, plan, sizeof plan);
    lg_rope_describe(&c->rope, rope, sizeof rope);
    fprintf(out, "checkpoint  %s\n", ck->dir);
    fprintf(out, "model       Llama: %d layers, hidden %d, MLP %d, %d heads x %d, %d KV heads%s, vocab %d, %s embeddings\n",
            c->n_layers, c->hidden_size, c->intermediate_size, c->n_heads, c->head_dim,
            c->n_kv_heads, c->n_kv_heads < c->n_heads ? " (GQA)" : "", c->vocab_size,
            c->tie_embeddings ? "tied" : "untied");
    fprintf(out, "weights     %d file%s, %d tensors, %.2f M parameters, %s, %s\n", ck->n_files,
            ck->n_files == 1 ? "" : "s", ck->n_tensors, params / 1e6, size, dts);
    lg_quant_config q;
    int has_q = 0;
    lg_err qerr;
    if (lg_quant_config_from_json(c->json, c->path, &q, &has_q, &qerr) == 0 && has_q)
        fprintf(out, "quantized   %s, group %d%s (%s), embeddings %s, lm_head %s, %d exclusion%s\n",
                lg_quant_method_name(q.scheme.method), q.scheme.group,
                q.scheme.group ? "" : " = per channel", q.scheme.has_mins ? "with mins" : "symmetric",
                q.embeddings ? "too" : "float", q.lm_head ? "too" : "float", q.n_excluded,
                q.n_excluded == 1 ? "" : "s");
    fprintf(out, "context     max_position_embeddings %d\n", c->max_pos);
    fprintf(out, "rope        %s\n", rope);
    fprintf(out, "plan        %s%s\n", plan, c->has_longgen ? "" : " (no longgen object: a plain checkpoint)");
    int eb = cache_elem_bytes(ck);
    fprintf(out, "\nKV cache at context %ld (%d-byte elements):\n", T, eb);
    fprintf(out, "  layer  kind           positions held  bytes\n");
    double per_pos = 2.0 * c->n_kv_heads * c->head_dim * eb;
    for (int l = 0; l < c->n_layers; l++) {
        long pos = lg_attn_cached_positions(&c->layers[l], T);
        char b[32];
        human_bytes(per_pos * (double)pos, b, sizeof b);
        fprintf(out, "  %5d  %-13s  %14ld  %s\n", l, lg_attn_kind_name(c->layers[l].kind), pos, b);
    }
    lg_kv_bytes kv = lg_kv_cache_bytes(c, T, eb);
    char full[32], lg[32], fpt[32], lpt[32];
    human_bytes(kv.full_model, full, sizeof full);
    human_bytes(kv.longgen, lg, sizeof lg);
    human_bytes(kv.full_model / (double)T, fpt, sizeof fpt);
    human_bytes(kv.longgen / (double)T, lpt, sizeof lpt);
    fprintf(out, "  %-26s per token %-12s total %s\n", "every layer full:", fpt, full);
    fprintf(out, "  %-26s per token %-12s total %s (%.1f%% of full, %.1f%% less)\n",
            "this plan:", lpt, lg, 100 * kv.longgen / kv.full_model,
            100 * (1 - kv.longgen / kv.full_model));
}

static void print_json(const lg_hf_config *c, const lg_checkpoint *ck, long T, FILE *out)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "checkpoint", ck->dir);
    cJSON_AddNumberToObject(o, "layers", c->n_layers);
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(o, "weight_bytes", (double)lg_ckpt_data_bytes(ck));
    char rope[256];
    lg_rope_describe(&c->rope, rope, sizeof rope);
    cJSON_AddStringToObject(o, "rope_type", lg_rope_type_name(c->rope.type));
    cJSON_AddNumberToObject(o, "rope_theta", c->rope.theta);
    cJSON_AddStringToObject(o, "rope", rope);
    cJSON *layers = cJSON_AddArrayToObject(o, "layer_plan");
    for (int l = 0; l < c->n_layers; l++)
        cJSON_AddItemToArray(layers, lg_layer_attn_to_json(&c->layers[l]));
    int eb = cache_elem_bytes(ck);
    lg_kv_bytes kv = lg_kv_cache_bytes(c, T, eb);
    cJSON_AddNumberToObject(o, "context", (double)T);
    cJSON_AddNumberToObject(o, "kv_elem_bytes", eb);
    cJSON_AddNumberToObject(o, "kv_bytes_full", kv.full_model);
    cJSON_AddNumberToObject(o, "kv_bytes_longgen", kv.longgen);
    char *text = cJSON_Print(o);
    fprintf(out, "%s\n", text);
    free(text);
    cJSON_Delete(o);
}

int lg_inspect(const char *dir, long context, int json, FILE *out, lg_err *err)
{
    lg_hf_config *c = lg_hf_config_read(dir, err);
    if (!c)
        return -1;
    lg_checkpoint *ck = lg_ckpt_open(dir, err);
    if (!ck) {
        lg_hf_config_free(c);
        return -1;
    }
    long T = context > 0 ? context : c->max_pos;
    if (json)
        print_json(c, ck, T, out);
    else
        print_text(c, ck, T, out);
    lg_ckpt_close(ck);
    lg_hf_config_free(c);
    return 0;
}
