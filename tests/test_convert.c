/* lg-convert end to end on the fixtures: every tensor survives bit for bit (or rounds exactly on a
 * dtype change), the plan and RoPE asked for are what the output config says, and failures leave
 * nothing behind. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "convert.h"
#include "hf_config.h"
#include "inspect.h"
#include "synth.h"
#include "test_env.h"

static const char *out_path(const char *name)
{
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s/%s", lg_test_tmpdir(), name);
    return buf;
}

/* Runs a conversion; returns 0 on success. */
static int convert(const char *src, const char *out, lg_convert_opts o)
{
    o.src_dir = src;
    o.out_dir = out;
    o.quiet = 1;
    lg_err err;
    int rc = lg_convert_run(&o, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "\n  convert %s: %s\n", src, err.msg);
    return rc;
}

/* Every tensor of src (except rotary inv_freq buffers) is in out with the same shape; its bytes are
 * identical, or (dtype change) each element equals the exact rounding of the source element. */
static void assert_tensors_preserved(const char *src_dir, const char *out_dir)
{
    lg_err err;
    lg_checkpoint *a = lg_ckpt_open(src_dir, &err), *b = lg_ckpt_open(out_dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(a->n_tensors, b->n_tensors);
    for (int i = 0; i < a->n_tensors; i++) {
        const lg_st_tensor *s = a->entries[i].tensor, *d = lg_ckpt_find(b, s->name);
        CU_ASSERT_PTR_NOT_NULL_FATAL(d);
        CU_ASSERT_EQUAL(s->ndim, d->ndim);
        CU_ASSERT_EQUAL(memcmp(s->shape, d->shape, sizeof(int64_t) * (size_t)s->ndim), 0);
        if (s->dtype == d->dtype) {
            CU_ASSERT_EQUAL_FATAL(memcmp(s->data, d->data, lg_st_nbytes(s)), 0);
            continue;
        }
        /* reference rounding: through float (exact for f16/bf16 sources) with our RNE converters */
        size_t esz = lg_dtype_size(d->dtype);
        unsigned char want[8];
        for (uint64_t k = 0; k < s->nelem; k++) {
            float v = lg_load_float(s->data, s->dtype, k);
            lg_convert_floats(want, d->dtype, &v, LG_DT_F32, 1);
            CU_ASSERT_EQUAL_FATAL(memcmp((const char *)d->data + k * esz, want, esz), 0);
        }
    }
    lg_ckpt_close(a);
    lg_ckpt_close(b);
}

static lg_hf_config *read_config(const char *dir)
{
    lg_err err;
    lg_hf_config *c = lg_hf_config_read(dir, &err);
    if (!c)
        fprintf(stderr, "\n  %s\n", err.msg);
    return c;
}

static void test_every_fixture_converts_bit_exact(void)
{
    static const struct {
        const char *name;
        int with_plan; /* trained LongGen models convert with their own plan and RoPE */
    } fixtures[] = {{"tiny-llama-fp16", 0}, {"stories260K", 0}, {"kjv-pg-llama", 0},
                    {"kjv-pg-longgen", 1}, {"kjv-tiny-longgen", 1}};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char src[4096], plan[4200];
        lg_fixture(src, sizeof src, fixtures[i].name);
        snprintf(plan, sizeof plan, "%s/longgen_plan.json", src);
        lg_convert_opts o = {0};
        if (fixtures[i].with_plan) {
            o.plan.plan_file = plan;
            o.plan.rope = "keep";
        }
        const char *out = out_path(fixtures[i].name);
        CU_ASSERT_EQUAL_FATAL(convert(src, out, o), 0);
        assert_tensors_preserved(src, out);
        lg_hf_config *in = read_config(src), *c = read_config(out);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        CU_ASSERT_TRUE(c->has_longgen);
        if (fixtures[i].with_plan) {
            /* the fixtures' plan: layers 2-3 full, the rest sink 16 + window 256 */
            for (int l = 0; l < c->n_layers; l++) {
                int full = l == 2 || l == 3;
                CU_ASSERT_EQUAL(c->layers[l].kind, full ? LG_ATTN_FULL : LG_ATTN_SINK_WINDOW);
                if (!full)
                    CU_ASSERT(c->layers[l].sink == 16 && c->layers[l].window == 256);
            }
            CU_ASSERT_EQUAL(c->max_pos, in->max_pos);
            CU_ASSERT_DOUBLE_EQUAL(c->rope.theta, in->rope.theta, 0);
        } else {
            CU_ASSERT_EQUAL(c->max_pos, LG_DEFAULT_MAX_CONTEXT);
            CU_ASSERT_DOUBLE_EQUAL(c->rope.theta, LG_DEFAULT_ROPE_THETA, 0);
        }
        /* the tokenizer travels with the weights */
        char tok[4300];
        snprintf(tok, sizeof tok, "%s/tokenizer.model", src);
        if (lg_path_exists(tok)) {
            snprintf(tok, sizeof tok, "%s/tokenizer.model", out);
            CU_ASSERT_TRUE(lg_path_exists(tok));
        }
        lg_hf_config_free(in);
        lg_hf_config_free(c);
    }
}

static void test_dtype_change_rounds_exactly(void)
{
    char src[4096];
    lg_fixture(src, sizeof src, "tiny-llama-fp16");
    lg_convert_opts o = {.has_dtype = 1, .dtype = LG_DT_BF16};
    const char *out = out_path("bf16");
    CU_ASSERT_EQUAL_FATAL(convert(src, out, o), 0);
    assert_tensors_preserved(src, out);
    lg_hf_config *c = read_config(out);
    CU_ASSERT_EQUAL(c->dtype, LG_DT_BF16);
    lg_hf_config_free(c);
    /* f32 -> f16 rounds (stories260K is float32) */
    lg_fixture(src, sizeof src, "stories260K");
    o.dtype = LG_DT_F16;
    out = out_path("f16");
    CU_ASSERT_EQUAL_FATAL(convert(src, out, o), 0);
    assert_tensors_preserved(src, out);
}

static void test_requested_plan_and_rope_are_written(void)
{
    char src[4096];
    lg_fixture(src, sizeof src, "tiny-llama-fp16");
    lg_convert_opts o = {.plan = {.full_layers = "2,3", .sparse = "block_strided:block=8,local=2,stride=4",
                                  .rope = "yarn", .max_context = 65536}};
    const char *out = out_path("yarn");
    CU_ASSERT_EQUAL_FATAL(convert(src, out, o), 0);
    lg_hf_config *c = read_config(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (int l = 0; l < 6; l++) {
        if (l == 2 || l == 3) {
            CU_ASSERT_EQUAL(c->layers[l].kind, LG_ATTN_FULL);
        } else {
            CU_ASSERT_EQUAL(c->layers[l].kind, LG_ATTN_BLOCK_STRIDED);
            CU_ASSERT(c->layers[l].block == 8 && c->layers[l].local == 2 && c->layers[l].stride == 4);
        }
    }
    CU_ASSERT_EQUAL(c->rope.type, LG_ROPE_YARN);
    CU_ASSERT_DOUBLE_EQUAL(c->rope.factor, 16.0, 0); /* 65536 / 4096 */
    CU_ASSERT_EQUAL(c->rope.original_max_pos, 4096);
    CU_ASSERT_EQUAL(c->max_pos, 65536);
    CU_ASSERT_EQUAL(c->v5_style, 1); /* the source's style is kept */
    lg_hf_config_free(c);

    /* every layer sparse, sink_window, theta base */
    lg_convert_opts o2 = {.plan = {.full_layers = "none", .sparse = "sink_window:sink=4,window=16",
                                   .rope = "theta:base=500000"}};
    out = out_path("none");
    CU_ASSERT_EQUAL_FATAL(convert(src, out, o2), 0);
    c = read_config(out);
    for (int l = 0; l < 6; l++)
        CU_ASSERT(c->layers[l].kind == LG_ATTN_SINK_WINDOW && c->layers[l].sink == 4 &&
                  c->layers[l].window == 16);
    CU_ASSERT_DOUBLE_EQUAL(c->rope.theta, 500000.0, 0);
    CU_ASSERT_EQUAL(c->rope.type, LG_ROPE_DEFAULT);
    lg_hf_config_free(c);
}

/* A checkpoint whose config is written the transformers 4.x way (as Llama-2-7b-hf's) converts the
 * same, and its output keeps that style. */
static void test_v4_style_checkpoint_converts_like_v5(void)
{
    char src[4096], cmd[16384], out_buf[256];
    lg_fixture(src, sizeof src, "tiny-llama-fp16");
    char v4[4200];
    snprintf(v4, sizeof v4, "%s", out_path("v4src"));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s'/*.safetensors '%s'/model.safetensors.index.json '%s'/",
             v4, src, src, v4);
    CU_ASSERT_EQUAL_FATAL(lg_run_capture(cmd, out_buf, sizeof out_buf), 0);
    lg_hf_config *v5 = read_config(src);
    cJSON *doc = cJSON_Duplicate(v5->json, 1);
    cJSON_DeleteItemFromObject(doc, "rope_parameters");
    cJSON_DeleteItemFromObject(doc, "dtype");
    cJSON_AddNumberToObject(doc, "rope_theta", 10000.0);
    cJSON_AddNullToObject(doc, "rope_scaling");
    cJSON_AddStringToObject(doc, "torch_dtype", "float16");
    char *text = cJSON_Print(doc);
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/config.json", v4);
    CU_ASSERT_EQUAL(lg_write_file(cfg, text, strlen(text)), 0);
    free(text);
    cJSON_Delete(doc);

    lg_hf_config *a = read_config(v4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(a->v5_style, 0);
    CU_ASSERT(a->hidden_size == v5->hidden_size && a->n_kv_heads == v5->n_kv_heads &&
              a->dtype == v5->dtype && a->rope.theta == v5->rope.theta && a->max_pos == v5->max_pos);

    lg_convert_opts o = {.plan = {.rope = "linear"}};
    const char *out = out_path("v4out");
    CU_ASSERT_EQUAL_FATAL(convert(v4, out, o), 0);
    assert_tensors_preserved(v4, out);
    lg_hf_config *c = read_config(out);
    CU_ASSERT_EQUAL(c->v5_style, 0);
    CU_ASSERT_EQUAL(c->rope.type, LG_ROPE_LINEAR);
    CU_ASSERT_DOUBLE_EQUAL(c->rope.factor, 32.0, 0);
    CU_ASSERT_PTR_NULL(cJSON_GetObjectItem(c->json, "rope_parameters"));
    const cJSON *sc = cJSON_GetObjectItem(c->json, "rope_scaling");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(sc, "type")->valuestring, "linear");
    lg_hf_config_free(a);
    lg_hf_config_free(c);
    lg_hf_config_free(v5);
}

static void test_existing_output_needs_force_and_interrupt_leaves_nothing(void)
{
    char src[4096], out_buf[4096];
    lg_fixture(src, sizeof src, "stories260K");
    char out[4200];
    snprintf(out, sizeof out, "%s", out_path("twice"));
    lg_convert_opts o = {0};
    CU_ASSERT_EQUAL_FATAL(convert(src, out, o), 0);
    lg_err err;
    o.src_dir = src;
    o.out_dir = out;
    CU_ASSERT_EQUAL(lg_convert_run(&o, NULL, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "already exists"));
    o.force = 1;
    o.plan.full_layers = "none";
    CU_ASSERT_EQUAL(lg_convert_run(&o, NULL, &err), 0);
    lg_hf_config *c = read_config(out);
    CU_ASSERT_EQUAL(c->layers[2].kind, LG_ATTN_SINK_WINDOW); /* the new one replaced the old */
    lg_hf_config_free(c);

    char out2[4200], cmd[8400];
    snprintf(out2, sizeof out2, "%s", out_path("interrupted"));
    o.out_dir = out2;
    o.force = 0;
    lg_convert_interrupted = 1;
    CU_ASSERT_EQUAL(lg_convert_run(&o, NULL, &err), -1);
    lg_convert_interrupted = 0;
    CU_ASSERT_STRING_EQUAL(err.msg, "interrupted");
    CU_ASSERT_FALSE(lg_path_exists(out2));
    snprintf(cmd, sizeof cmd, "ls -d '%s'.tmp-* 2>/dev/null | wc -l", out2);
    lg_run_capture(cmd, out_buf, sizeof out_buf);
    CU_ASSERT_EQUAL(atoi(out_buf), 0);
}

static void test_inspect_reports_kv_savings(void)
{
    char src[4096], cmd[16384], out_buf[8192], tool[4096], out[4200];
    lg_fixture(src, sizeof src, "kjv-tiny-longgen");
    snprintf(out, sizeof out, "%s", out_path("inspect"));
    snprintf(cmd, sizeof cmd, "%s '%s' -o '%s' -q --plan '%s/longgen_plan.json' --rope keep && %s inspect '%s'",
             lg_tool(tool, sizeof tool, "lg-convert"), src, out, src, tool, out);
    CU_ASSERT_EQUAL_FATAL(lg_run_capture(cmd, out_buf, sizeof out_buf), 0);
    /* 2 full layers x 4096 + 4 sparse x (16 + 256) positions out of 6 x 4096 = 37.8% */
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "37.8% of full"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "layers 0-1,4-5 sink_window(sink=16,window=256); layers 2-3 full"));
    lg_err err;
    lg_hf_config *c = read_config(out);
    lg_kv_bytes kv = lg_kv_cache_bytes(c, 4096, 2);
    CU_ASSERT_DOUBLE_EQUAL(kv.full_model, 6.0 * 4096 * 2 * 4 * 32 * 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(kv.longgen, (2.0 * 4096 + 4 * 272) * 2 * 4 * 32 * 2, 0);
    lg_hf_config_free(c);
    (void)err;
}

static void test_synthetic_checkpoint_converts(void)
{
    lg_synth_opts s = {.shards = 3, .seed = 7, .dtype = LG_DT_F16};
    CU_ASSERT_EQUAL_FATAL(lg_synth_preset("tiny", &s), 0);
    s.layers = 3;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", out_path("synth"));
    s.out_dir = dir;
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_synth_write(&s, &err), 0);
    lg_checkpoint *ck = lg_ckpt_open(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
    CU_ASSERT_EQUAL(ck->n_files, 3);
    lg_ckpt_close(ck);
    lg_convert_opts o = {0};
    CU_ASSERT_EQUAL(convert(dir, out_path("synth-out"), o), 0);
}

int lg_register_convert_tests(void)
{
    CU_pSuite s = CU_add_suite("convert", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_every_fixture_converts_bit_exact", test_every_fixture_converts_bit_exact);
    CU_add_test(s, "test_dtype_change_rounds_exactly", test_dtype_change_rounds_exactly);
    CU_add_test(s, "test_requested_plan_and_rope_are_written", test_requested_plan_and_rope_are_written);
    CU_add_test(s, "test_v4_style_checkpoint_converts_like_v5", test_v4_style_checkpoint_converts_like_v5);
    CU_add_test(s, "test_existing_output_needs_force_and_interrupt_leaves_nothing", test_existing_output_needs_force_and_interrupt_leaves_nothing);
    CU_add_test(s, "test_inspect_reports_kv_savings", test_inspect_reports_kv_savings);
    CU_add_test(s, "test_synthetic_checkpoint_converts", test_synthetic_checkpoint_converts);
    return 0;
}
