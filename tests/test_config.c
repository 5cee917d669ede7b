/* config.json in both transformers styles, RoPE frequencies, layer plans and their cache sizes. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hf_config.h"
#include "plan.h"
#include "test_env.h"

/* Llama-2-7b-hf's config.json as released (transformers 4.31 style), and the same model in the
 * transformers 5 style the fixtures use. */
static const char v4_config[] =
    "{\"_name_or_path\": \"meta-llama/Llama-2-7b-hf\", \"architectures\": [\"LlamaForCausalLM\"],"
    " \"bos_token_id\": 1, \"eos_token_id\": 2, \"hidden_act\": \"silu\", \"hidden_size\": 4096,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 11008, \"max_position_embeddings\": 4096,"
    " \"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_hidden_layers\": 32,"
    " \"num_key_value_heads\": 32, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05,"
    " \"rope_scaling\": null, \"tie_word_embeddings\": false, \"torch_dtype\": \"float16\","
    " \"transformers_version\": \"4.31.0.dev0\", \"use_cache\": true, \"vocab_size\": 32000}";
static const char v5_config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"dtype\": \"float16\", \"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 4096,"
    " \"intermediate_size\": 11008, \"max_position_embeddings\": 4096, \"model_type\": \"llama\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 32,"
    " \"rms_norm_eps\": 1e-05, \"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": \"default\"},"
    " \"tie_word_embeddings\": false, \"transformers_version\": \"5.17.0\", \"vocab_size\": 32000}";

static void assert_same_model(const lg_hf_config *a, const lg_hf_config *b)
{
    CU_ASSERT_EQUAL(a->hidden_size, b->hidden_size);
    CU_ASSERT_EQUAL(a->intermediate_size, b->intermediate_size);
    CU_ASSERT_EQUAL(a->n_layers, b->n_layers);
    CU_ASSERT_EQUAL(a->n_heads, b->n_heads);
    CU_ASSERT_EQUAL(a->n_kv_heads, b->n_kv_heads);
    CU_ASSERT_EQUAL(a->head_dim, b->head_dim);
    CU_ASSERT_EQUAL(a->vocab_size, b->vocab_size);
    CU_ASSERT_EQUAL(a->max_pos, b->max_pos);
    CU_ASSERT_EQUAL(a->tie_embeddings, b->tie_embeddings);
    CU_ASSERT_EQUAL(a->dtype, b->dtype);
    CU_ASSERT_EQUAL(a->rope.type, b->rope.type);
    CU_ASSERT_DOUBLE_EQUAL(a->rope.theta, b->rope.theta, 0);
    CU_ASSERT_DOUBLE_EQUAL(a->rms_eps, b->rms_eps, 0);
    CU_ASSERT_EQUAL(a->bos_id, b->bos_id);
    CU_ASSERT_EQUAL(a->eos_id, b->eos_id);
}

static void test_v4_and_v5_configs_read_the_same(void)
{
    lg_err err;
    lg_hf_config *a = lg_hf_config_parse(v4_config, strlen(v4_config), "v4", &err);
    lg_hf_config *b = lg_hf_config_parse(v5_config, strlen(v5_config), "v5", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    assert_same_model(a, b);
    CU_ASSERT_EQUAL(a->v5_style, 0);
    CU_ASSERT_EQUAL(b->v5_style, 1);
    CU_ASSERT_EQUAL(a->head_dim, 128);
    CU_ASSERT_EQUAL(a->has_longgen, 0);
    for (int l = 0; l < a->n_layers; l++)
        CU_ASSERT_EQUAL(a->layers[l].kind, LG_ATTN_FULL);
    lg_hf_config_free(a);
    lg_hf_config_free(b);
}

static void test_llama2_release_configs_parse(void)
{
    static const struct {
        const char *file;
        int layers, hidden, heads, kv;
    } cases[] = {{"configs/llama-2-7b-hf.config.json", 32, 4096, 32, 32},
                 {"configs/llama-2-13b-hf.config.json", 40, 5120, 40, 40},
                 {"configs/llama-2-70b-hf.config.json", 80, 8192, 64, 8}};
    for (size_t i = 0; i < 3; i++) {
        char path[4096];
        lg_err err;
        lg_hf_config *c = lg_hf_config_read(lg_fixture(path, sizeof path, cases[i].file), &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        CU_ASSERT_EQUAL(c->n_layers, cases[i].layers);
        CU_ASSERT_EQUAL(c->hidden_size, cases[i].hidden);
        CU_ASSERT_EQUAL(c->n_heads, cases[i].heads);
        CU_ASSERT_EQUAL(c->n_kv_heads, cases[i].kv);
        CU_ASSERT_EQUAL(c->head_dim, 128);
        CU_ASSERT_EQUAL(c->rope.type, LG_ROPE_DEFAULT);
        CU_ASSERT_DOUBLE_EQUAL(c->rope.theta, 10000.0, 0);
        lg_hf_config_free(c);
    }
}

static void test_missing_kv_heads_means_mha_and_rope_type_key_is_accepted(void)
{
    const char *cfg = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":100,"
                      "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,"
                      "\"rope_scaling\":{\"type\":\"linear\",\"factor\":4.0}}";
    lg_err err;
    lg_hf_config *c = lg_hf_config_parse(cfg, strlen(cfg), "cfg", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->n_kv_heads, 4);
    CU_ASSERT_EQUAL(c->head_dim, 16);
    CU_ASSERT_EQUAL(c->rope.type, LG_ROPE_LINEAR);
    CU_ASSERT_DOUBLE_EQUAL(c->rope.factor, 4.0, 0);
    lg_hf_config_free(c);
}

static int rope_equal(const lg_rope *a, const lg_rope *b)
{
    return a->type == b->type && a->theta == b->theta && a->factor == b->factor &&
           a->original_max_pos == b->original_max_pos && a->attention_factor == b->attention_factor &&
           a->beta_fast == b->beta_fast && a->beta_slow == b->beta_slow &&
           a->low_freq_factor == b->low_freq_factor && a->high_freq_factor == b->high_freq_factor;
}

/* Writing a rope into a config and reading it back gives the same rope, in both styles. */
static void test_rope_round_trips_through_config(void)
{
    lg_rope ropes[] = {
        {.type = LG_ROPE_DEFAULT, .theta = 5e6, .beta_fast = 32, .beta_slow = 1},
        {.type = LG_ROPE_LINEAR, .theta = 1e4, .factor = 32, .beta_fast = 32, .beta_slow = 1},
        {.type = LG_ROPE_DYNAMIC, .theta = 1e4, .factor = 32, .original_max_pos = 4096, .beta_fast = 32, .beta_slow = 1},
        {.type = LG_ROPE_YARN, .theta = 1e4, .factor = 32, .original_max_pos = 4096, .beta_fast = 32, .beta_slow = 1},
        {.type = LG_ROPE_LLAMA3, .theta = 5e5, .factor = 8, .original_max_pos = 8192,
         .low_freq_factor = 1, .high_freq_factor = 4, .beta_fast = 32, .beta_slow = 1},
    };
    for (int style = 0; style < 2; style++)
        for (size_t i = 0; i < sizeof ropes / sizeof ropes[0]; i++) {
            cJSON *doc = cJSON_Parse(style ? v5_config : v4_config);
            lg_rope_to_config(&ropes[i], doc, style);
            char *text = cJSON_Print(doc);
            lg_err err;
            lg_hf_config *c = lg_hf_config_parse(text, strlen(text), "roundtrip", &err);
            CU_ASSERT_PTR_NOT_NULL_FATAL(c);
            CU_ASSERT_EQUAL(c->v5_style, style);
            CU_ASSERT_TRUE(rope_equal(&c->rope, &ropes[i]));
            if (!style && ropes[i].type != LG_ROPE_DEFAULT) /* old transformers read `type` */
                CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"type\""));
            free(text);
            cJSON_Delete(doc);
            lg_hf_config_free(c);
        }
}

static void test_default_inv_freq_matches_the_formula(void)
{
    lg_rope r = {.type = LG_ROPE_DEFAULT, .theta = 10000};
    float f[64], scale;
    lg_rope_inv_freq(&r, 128, 4096, 0, f, &scale);
    CU_ASSERT_EQUAL(scale, 1.0f);
    for (int i = 0; i < 64; i++) {
        double want = 1.0 / pow(10000.0, 2.0 * i / 128);
        /* float32 pow as torch computes it: within a few ulp of the exact value */
        CU_ASSERT(fabs(f[i] - want) <= 4e-7 * want);
    }
}

/* Scaled kinds keep the highest frequency (wavelength far below the original context) and divide
 * the lowest by the factor; yarn scales attention by 0.1 ln(factor) + 1. */
static void test_scaled_rope_kinds_bend_low_frequencies_only(void)
{
    float base[64], f[64], scale;
    lg_rope def = {.type = LG_ROPE_DEFAULT, .theta = 10000};
    lg_rope_inv_freq(&def, 128, 4096, 0, base, &scale);
    lg_rope yarn = {.type = LG_ROPE_YARN, .theta = 10000, .factor = 32, .original_max_pos = 4096,
                    .beta_fast = 32, .beta_slow = 1};
    lg_rope_inv_freq(&yarn, 128, 131072, 0, f, &scale);
    CU_ASSERT_DOUBLE_EQUAL(scale, 0.1 * log(32.0) + 1.0, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(f[0], base[0], 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(f[63], base[63] / 32, 1e-12);
    lg_rope l3 = {.type = LG_ROPE_LLAMA3, .theta = 10000, .factor = 8, .original_max_pos = 4096,
                  .low_freq_factor = 1, .high_freq_factor = 4};
    lg_rope_inv_freq(&l3, 128, 32768, 0, f, &scale);
    CU_ASSERT_DOUBLE_EQUAL(f[0], base[0], 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(f[63], base[63] / 8, 1e-12);
    for (int i = 1; i < 64; i++)
        CU_ASSERT(f[i] <= f[i - 1]); /* still monotone through the smooth band */
    lg_rope lin = {.type = LG_ROPE_LINEAR, .theta = 10000, .factor = 4};
    lg_rope_inv_freq(&lin, 128, 4096, 0, f, &scale);
    for (int i = 0; i < 64; i++)
        CU_ASSERT_DOUBLE_EQUAL(f[i], base[i] / 4, 1e-9);
    /* dynamic NTK: unchanged up to the trained context, a larger base beyond */
    lg_rope dyn = {.type = LG_ROPE_DYNAMIC, .theta = 10000, .factor = 2};
    lg_rope_inv_freq(&dyn, 128, 4096, 4096, f, &scale);
    CU_ASSERT_EQUAL(memcmp(f, base, sizeof f), 0);
    lg_rope_inv_freq(&dyn, 128, 4096, 8192, f, &scale);
    double nb = 10000 * pow(2.0 * 8192 / 4096 - 1, 128.0 / 126);
    CU_ASSERT(fabs(f[1] - 1 / pow(nb, 2.0 / 128)) < 1e-6 * f[1]);
}

static void test_default_plan_is_the_middle_third(void)
{
    unsigned char full[80];
    char buf[256];
    lg_layer_attn layers[80];
    struct {
        int L;
        const char *want;
    } cases[] = {{32, "10-20"}, {6, "2-3"}, {80, "26-52"}, {40, "13-25"}, {1, ""}, {2, "0"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_plan_default_full(cases[i].L, full);
        for (int l = 0; l < cases[i].L; l++)
            layers[l].kind = full[l] ? LG_ATTN_FULL : LG_ATTN_SINK_WINDOW;
        lg_layers_of_kind(layers, cases[i].L, LG_ATTN_FULL, buf, sizeof buf);
        CU_ASSERT_STRING_EQUAL(buf, cases[i].want);
    }
}

static void test_layer_lists_and_sparse_specs_parse(void)
{
    unsigned char full[32];
    lg_err err;
    CU_ASSERT_EQUAL(lg_plan_parse_layer_list("0-3,8,30-31", 32, full, &err), 0);
    int count = 0;
    for (int i = 0; i < 32; i++)
        count += full[i];
    CU_ASSERT_EQUAL(count, 7);
    CU_ASSERT(full[8] && full[31] && !full[4]);
    CU_ASSERT_EQUAL(lg_plan_parse_layer_list("none", 32, full, &err), 0);
    CU_ASSERT_EQUAL(memchr(full, 1, 32), NULL);
    CU_ASSERT_EQUAL(lg_plan_parse_layer_list("5-2", 32, full, &err), -1);
    CU_ASSERT_EQUAL(lg_plan_parse_layer_list("32", 32, full, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "does not exist"));
    CU_ASSERT_EQUAL(lg_plan_parse_layer_list("1,,2", 32, full, &err), -1);

    lg_layer_attn a;
    CU_ASSERT_EQUAL(lg_plan_parse_sparse("sink_window", &a, &err), 0);
    CU_ASSERT(a.kind == LG_ATTN_SINK_WINDOW && a.sink == 64 && a.window == 4096);
    CU_ASSERT_EQUAL(lg_plan_parse_sparse("block_strided:stride=4", &a, &err), 0);
    CU_ASSERT(a.kind == LG_ATTN_BLOCK_STRIDED && a.block == 64 && a.local == 16 && a.stride == 4);
    CU_ASSERT_EQUAL(lg_plan_parse_sparse("sink_window:sink=4,window=0", &a, &err), -1);
    CU_ASSERT_EQUAL(lg_plan_parse_sparse("sink_window:sinks=4", &a, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "unknown parameter 'sinks'"));
    CU_ASSERT_EQUAL(lg_plan_parse_sparse("full", &a, &err), -1);
}

/* The positions a cache holds equal the keys the newest query can see (brute force over the mask). */
static void test_cached_positions_equal_what_the_last_query_sees(void)
{
    lg_layer_attn pats[] = {
        {.kind = LG_ATTN_SINK_WINDOW, .sink = 4, .window = 16},
        {.kind = LG_ATTN_SINK_WINDOW, .sink = 0, .window = 1},
        {.kind = LG_ATTN_BLOCK_STRIDED, .block = 8, .local = 2, .stride = 4},
        {.kind = LG_ATTN_BLOCK_STRIDED, .block = 3, .local = 1, .stride = 1},
        {.kind = LG_ATTN_BLOCK_STRIDED, .block = 5, .local = 3, .stride = 7},
        {.kind = LG_ATTN_FULL},
    };
    for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++)
        for (long T = 1; T <= 300; T++) {
            long seen = 0;
            for (long j = 0; j < T; j++)
                seen += lg_attn_visible(&pats[p], T - 1, j);
            CU_ASSERT_EQUAL_FATAL(lg_attn_cached_positions(&pats[p], T), seen);
        }
}

int lg_register_config_tests(void)
{
    CU_pSuite s = CU_add_suite("config", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_v4_and_v5_configs_read_the_same", test_v4_and_v5_configs_read_the_same);
    CU_add_test(s, "test_llama2_release_configs_parse", test_llama2_release_configs_parse);
    CU_add_test(s, "test_missing_kv_heads_means_mha_and_rope_type_key_is_accepted", test_missing_kv_heads_means_mha_and_rope_type_key_is_accepted);
    CU_add_test(s, "test_rope_round_trips_through_config", test_rope_round_trips_through_config);
    CU_add_test(s, "test_default_inv_freq_matches_the_formula", test_default_inv_freq_matches_the_formula);
    CU_add_test(s, "test_scaled_rope_kinds_bend_low_frequencies_only", test_scaled_rope_kinds_bend_low_frequencies_only);
    CU_add_test(s, "test_default_plan_is_the_middle_third", test_default_plan_is_the_middle_third);
    CU_add_test(s, "test_layer_lists_and_sparse_specs_parse", test_layer_lists_and_sparse_specs_parse);
    CU_add_test(s, "test_cached_positions_equal_what_the_last_query_sees", test_cached_positions_equal_what_the_last_query_sees);
    return 0;
}
