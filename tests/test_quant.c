/* Weight-only quantization: the encoders' error bounds, the q4 packing, the dequantizing CPU kernels
 * against float32 products of the dequantized weights, quantized conversions of a fixture against
 * its transformers reference, --quant-exclude, and malformed quantized checkpoints. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "compress_report.h"
#include "convert.h"
#include "engine.h"
#include "hf_config.h"
#include "json_file.h"
#include "llama_tensors.h"
#include "matmul_cpu.h"
#include "matmul_quant_cpu.h"
#include "model.h"
#include "quant_format.h"
#include "quant_report.h"
#include "quantize.h"
#include "safetensors.h"
#include "test_env.h"
#include "verify.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Weight-like values: Gaussian with a few outliers 8x larger (what makes per-group scales matter). */
static void random_weights(float *w, size_t n, float sigma)
{
    for (size_t i = 0; i < n; i++) {
        double g = sqrt(-2 * log(uniform() + 1e-300)) * cos(2 * M_PI * uniform());
        w[i] = (float)(g * sigma * (uniform() < 0.01 ? 8 : 1));
    }
}

typedef struct quantized {
    lg_quant_tensor t;
    void *qweight, *scales, *mins;
} quantized;

static int quantize(const lg_quant_scheme *s, const float *w, int rows, int cols, quantized *q)
{
    int ng = lg_quant_n_groups(s, cols);
    q->qweight = malloc(lg_quant_row_bytes(s, cols) * (size_t)rows);
    q->scales = malloc((size_t)rows * ng * 4);
    q->mins = malloc((size_t)rows * ng * 2);
    lg_err err;
    int rc = lg_quantize_rows(s, w, rows, cols, q->qweight, q->scales, q->mins, "test", &err);
    if (rc != 0)
        fprintf(stderr, "\n  %s\n", err.msg);
    q->t = (lg_quant_tensor){*s, rows, cols, q->qweight, q->scales, s->has_mins ? q->mins : NULL};
    return rc;
}

static void quantized_free(quantized *q)
{
    free(q->qweight);
    free(q->scales);
    free(q->mins);
}

/* A scratch path; 8 rotating buffers, so that a test may hold several at once. */
static const char *tmp_path(const char *name)
{
    static char bufs[8][4200];
    static int next;
    char *buf = bufs[next++ % 8];
    snprintf(buf, sizeof bufs[0], "%s/%s", lg_test_tmpdir(), name);
    return buf;
}

/* Converts fixture `name` (plain Llama, every layer full, RoPE kept) with quantization q into
 * the scratch directory `out`. */
static int convert_quantized(const char *name, const char *out, const lg_quant_config *q)
{
    char src[4096];
    lg_fixture(src, sizeof src, name);
    lg_convert_opts o = {.src_dir = src, .out_dir = out, .quiet = 1, .force = 1};
    o.plan.full_layers = "all";
    o.plan.rope = "keep";
    if (q)
        o.quant = *q;
    lg_err err;
    int rc = lg_convert_run(&o, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "\n  convert %s: %s\n", name, err.msg);
    return rc;
}

static lg_quant_config quant_config(lg_quant_method m, int group, int has_mins)
{
    lg_quant_config q;
    memset(&q, 0, sizeof q);
    q.scheme = (lg_quant_scheme){m, group, has_mins};
    return q;
}

/* ---------------------------------------------------------------- fp8 */

/* Every finite e4m3fn code decodes and encodes back to itself; a value halfway between two codes
 * goes to the one with an even mantissa; beyond 448 saturates; subnormals are exact. */
static void test_fp8_codes_round_trip_and_ties_go_to_even(void)
{
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f)
            continue; /* NaN */
        float v = lg_e4m3_to_f32((uint8_t)c);
        CU_ASSERT_EQUAL(lg_f32_to_e4m3(v), c == 0x80 ? 0x80 : c);
        if ((c & 0x7f) < 0x7e) {
            float next = lg_e4m3_to_f32((uint8_t)(c + 1)), mid = (v + next) / 2; /* exact */
            int even = (c & 1) ? c + 1 : c;
            CU_ASSERT_EQUAL(lg_f32_to_e4m3(mid), even);
        }
    }
    CU_ASSERT_EQUAL(lg_e4m3_to_f32(0x7e), 448.0f);
    CU_ASSERT_EQUAL(lg_e4m3_to_f32(0x01), 0x1p-9f);
    CU_ASSERT_EQUAL(lg_f32_to_e4m3(1e9f), 0x7e);
    CU_ASSERT_EQUAL(lg_f32_to_e4m3(-470.0f), 0xfe);
    CU_ASSERT_EQUAL(lg_f32_to_e4m3(0x1p-11f), 0x00); /* a quarter of the subnormal step: 0 */
    CU_ASSERT_TRUE(isnan(lg_e4m3_to_f32(0x7f)));
}

/* ---------------------------------------------------------------- error bounds */

/* The bound of each scheme (quantize.h says why): for every weight, |w - dequant(w)| is at most
 *   q8: s / 2;  q4 symmetric: |s| (only a value at +8 s clips to +7 s), else s / 2;
 *   q4 with mins: s / 2 plus the F16 rounding of the min;  fp8: |w| / 16 + s 2^-10,
 * with s the stored scale of the weight's group, plus 2^-20 relative for the float32 division and
 * multiplication on the way (a few ulps of the weight). */
static void test_quantize_error_within_each_schemes_bound(void)
{
    const lg_quant_scheme schemes[] = {
        {LG_QUANT_Q8, 0, 0}, {LG_QUANT_Q8, 32, 0}, {LG_QUANT_Q4, 64, 0}, {LG_QUANT_Q4, 64, 1},
        {LG_QUANT_Q4, 32, 1}, {LG_QUANT_FP8, 0, 0}, {LG_QUANT_FP8, 128, 0},
    };
    const int rows = 37, cols = 200; /* 200 = 3 groups of 64 and one of 8 */
    float *w = malloc(sizeof(float) * rows * cols), *d = malloc(sizeof(float) * rows * cols);
    random_weights(w, (size_t)rows * cols, 0.02f);
    w[5] = 0; /* an exact zero stays zero in every symmetric scheme */
    for (size_t k = 0; k < sizeof schemes / sizeof schemes[0]; k++) {
        const lg_quant_scheme *s = &schemes[k];
        quantized q;
        CU_ASSERT_EQUAL_FATAL(quantize(s, w, rows, cols, &q), 0);
        lg_quant_dequant_rows(&q.t, 0, rows, d);
        int group = s->group ? s->group : cols, bad = 0;
        double err2 = 0, w2 = 0, step2 = 0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                float sc, mn;
                lg_quant_group_params(&q.t, r, c / group, &sc, &mn);
                float x = w[r * cols + c], e = fabsf(x - d[r * cols + c]);
                double bound;
                switch (s->method) {
                case LG_QUANT_Q8: bound = sc / 2; break;
                case LG_QUANT_Q4: bound = s->has_mins ? sc / 2 + 0x1p-10 * fabsf(mn) : fabsf(sc); break;
                default: bound = fabsf(x) / 16 + sc * 0x1p-10; break;
                }
                bound += 0x1p-20 * fabsf(x) + 1e-30;
                bad += e > bound;
                err2 += (double)e * e;
                w2 += (double)x * x;
                step2 += (double)sc * sc;
            }
        if (bad)
            fprintf(stderr, "\n  %s group %d mins %d: %d weights past the bound\n",
                    lg_quant_method_name(s->method), s->group, s->has_mins, bad);
        CU_ASSERT_EQUAL(bad, 0);
        if (s->method != LG_QUANT_Q4 || !s->has_mins)
            CU_ASSERT_EQUAL(d[5], 0.0f);
        /* and on average rounded to nearest: for the integer schemes the error is uniform over a
         * step, rms step / sqrt(12) = 0.289 step (truncation would give 0.577), so rms <= 0.35 rms
         * step; for fp8 uniform over +-1/32 of |w| relative, rms 1.8% (limit 3%) */
        double rel = s->method == LG_QUANT_FP8 ? sqrt(err2 / w2) : sqrt(err2 / step2);
        double limit = s->method == LG_QUANT_FP8 ? 0.03 : 0.35;
        if (rel > limit)
            fprintf(stderr, "\n  %s: rms error %.4f of the limit's unit\n",
                    lg_quant_method_name(s->method), rel);
        CU_ASSERT(rel <= limit);
        quantized_free(&q);
    }
    free(w);
    free(d);
}

/* Non-finite weights and scales past F16 are refused with the tensor named. */
static void test_quantize_refuses_nan_and_huge_weights(void)
{
    float w[64];
    random_weights(w, 64, 1.0f);
    w[7] = NAN;
    uint8_t q[64];
    uint16_t sc[2], mn[2];
    lg_err err;
    lg_quant_scheme s = {LG_QUANT_Q8, 32, 0};
    CU_ASSERT_EQUAL(lg_quantize_rows(&s, w, 1, 64, q, sc, NULL, "x.weight", &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'x.weight' [0, 7]"));
    w[7] = 1e10f; /* step 1e10 / 127 > 65504 */
    CU_ASSERT_EQUAL(lg_quantize_rows(&s, w, 1, 64, q, sc, NULL, "x.weight", &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "does not fit an F16 scale"));
    s = (lg_quant_scheme){LG_QUANT_Q4, 0, 1};
    CU_ASSERT_EQUAL(lg_quantize_rows(&s, w, 1, 64, q, sc, mn, "x.weight", &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "q4 needs a group size"));
}

/* ---------------------------------------------------------------- q4 packing */

/* Column 2j in the low nibble, 2j + 1 in the high one, rows of ceil(cols / 2) bytes; an odd number
 * of groups (5 of 32) and an odd number of columns (75: 3 groups, the last of 11, a last byte whose
 * high nibble is 0) decode like the per-element formula. */
static void test_q4_packing_of_odd_group_counts_and_odd_columns(void)
{
    const int shapes[][2] = {{3, 160}, {5, 75}};
    for (int k = 0; k < 2; k++) {
        int rows = shapes[k][0], cols = shapes[k][1];
        float *w = malloc(sizeof(float) * rows * cols), *d = malloc(sizeof(float) * rows * cols);
        random_weights(w, (size_t)rows * cols, 1.0f);
        lg_quant_scheme s = {LG_QUANT_Q4, 32, 1};
        quantized q;
        CU_ASSERT_EQUAL_FATAL(quantize(&s, w, rows, cols, &q), 0);
        CU_ASSERT_EQUAL(lg_quant_n_groups(&s, cols), k == 0 ? 5 : 3);
        size_t rb = lg_quant_row_bytes(&s, cols);
        CU_ASSERT_EQUAL(rb, (size_t)(cols + 1) / 2);
        lg_quant_dequant_rows(&q.t, 0, rows, d);
        const uint8_t *codes = q.qweight;
        for (int r = 0; r < rows; r++) {
            if (cols % 2)
                CU_ASSERT_EQUAL(codes[r * rb + rb - 1] >> 4, 0);
            for (int c = 0; c < cols; c++) {
                int nib = (codes[r * rb + c / 2] >> (c % 2 ? 4 : 0)) & 15;
                float sc, mn;
                lg_quant_group_params(&q.t, r, c / 32, &sc, &mn);
                CU_ASSERT_EQUAL(d[r * cols + c], mn + sc * (float)nib);
            }
        }
        quantized_free(&q);
        free(w);
        free(d);
    }
}

/* ---------------------------------------------------------------- kernels */

/* The dequantizing product equals lg_matmul on the dequantized matrix bit for bit (matmul_quant_cpu.h:
 * same decoded weights, same summation order), for every scheme, odd shapes (a partial panel,
 * a partial group, an odd q4 column count), 1 to 21 rows of x (decoded in registers, or a panel at a
 * time into floats), and every instruction set this CPU has. */
static void test_quantized_matmul_equals_float_matmul_of_dequantized_weights(void)
{
    const lg_quant_scheme schemes[] = {
        {LG_QUANT_Q8, 0, 0}, {LG_QUANT_Q8, 32, 0}, {LG_QUANT_Q4, 64, 1}, {LG_QUANT_Q4, 32, 0},
        {LG_QUANT_FP8, 0, 0},
    };
    const int shapes[][2] = {{37, 75}, {16, 160}, {53, 688}};
    const int ns[] = {1, 3, 13, 21}; /* 21: two tiles of 8 rows, the decoded-panel path */
    const char *isas[] = {"avx512f", "avx2", "sse2", "vector", "generic"};
    char saved[32];
    snprintf(saved, sizeof saved, "%s", lg_matmul_isa());
    lg_err err;
    lg_pool *pool = lg_pool_new(2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
    int tried = 0;
    for (size_t k = 0; k < sizeof schemes / sizeof schemes[0]; k++)
        for (int sh = 0; sh < 3; sh++) {
            int rows = shapes[sh][0], cols = shapes[sh][1];
            float *w = malloc(sizeof(float) * rows * cols), *d = malloc(sizeof(float) * rows * cols);
            float *x = malloc(sizeof(float) * 21 * (cols + 3));
            float *y1 = malloc(sizeof(float) * 21 * (rows + 5)), *y2 = malloc(sizeof(float) * 21 * (rows + 5));
            random_weights(w, (size_t)rows * cols, 0.05f);
            random_weights(x, (size_t)21 * (cols + 3), 1.0f);
            quantized q;
            CU_ASSERT_EQUAL_FATAL(quantize(&schemes[k], w, rows, cols, &q), 0);
            lg_quant_dequant_rows(&q.t, 0, rows, d);
            lg_pmat pf, pq = {0};
            lg_qmat *qm = calloc(1, sizeof *qm);
            CU_ASSERT_EQUAL_FATAL(lg_pmat_init(&pf, rows, cols, &err), 0);
            CU_ASSERT_EQUAL_FATAL(lg_qmat_init(qm, &schemes[k], rows, cols, &err), 0);
            for (int r = 0; r < rows; r++)
                lg_pmat_set_row(&pf, r, d + (size_t)r * cols);
            lg_qmat_set_rows(qm, 0, &q.t, rows);
            pq.rows = rows;
            pq.cols = cols;
            pq.q = qm;
            float *row = malloc(sizeof(float) * cols);
            for (int r = 0; r < rows; r++) {
                lg_pmat_get_row(&pq, r, row);
                CU_ASSERT_EQUAL(memcmp(row, d + (size_t)r * cols, sizeof(float) * cols), 0);
            }
            free(row);
            for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
                if (lg_matmul_set_isa(isas[i]) != 0)
                    continue;
                tried++;
                for (int t = 0; t < 4; t++) {
                    int n = ns[t], ldx = cols + 3, ldy = rows + 5;
                    memset(y1, 0, sizeof(float) * 21 * ldy);
                    memset(y2, 0, sizeof(float) * 21 * ldy);
                    lg_matmul(pool, y1, ldy, x, ldx, n, &pf);
                    lg_matmul(pool, y2, ldy, x, ldx, n, &pq);
                    if (memcmp(y1, y2, sizeof(float) * (size_t)n * ldy) != 0)
                        fprintf(stderr, "\n  %s group %d, [%d, %d], n %d, %s: differs\n",
                                lg_quant_method_name(schemes[k].method), schemes[k].group, rows,
                                cols, n, isas[i]);
                    CU_ASSERT_EQUAL(memcmp(y1, y2, sizeof(float) * (size_t)n * ldy), 0);
                }
            }
            lg_pmat_free(&pf);
            lg_pmat_free(&pq);
            quantized_free(&q);
            free(w);
            free(d);
            free(x);
            free(y1);
            free(y2);
        }
    CU_ASSERT(tried > 0);
    lg_matmul_set_isa(saved);
    lg_pool_free(pool);
}

/* ---------------------------------------------------------------- conversions */

static lg_model *load(const char *dir, int dequantize)
{
    lg_model_load_opts o = {.dequantize = dequantize};
    lg_err err;
    lg_model *m = lg_model_load_ex(dir, &o, &err);
    if (!m)
        fprintf(stderr, "\n  %s\n", err.msg);
    return m;
}

static int check_dir(const char *dir, lg_err *err)
{
    lg_hf_config *c = lg_hf_config_read(dir, err);
    lg_checkpoint *ck = c ? lg_ckpt_open(dir, err) : NULL;
    int rc = ck ? lg_llama_check(c, ck, 0, NULL, err) : -1;
    lg_ckpt_close(ck);
    lg_hf_config_free(c);
    return rc;
}

/* All logits of the reference's input_ids. */
static float *all_logits(lg_model *m, int *T)
{
    char ref[4300];
    lg_fixture(ref, sizeof ref, "tiny-llama-fp16/reference.safetensors");
    lg_err err;
    lg_st_file *f = lg_st_open(ref, &err);
    const lg_st_tensor *ids = f ? lg_st_find(f, "input_ids") : NULL;
    if (!ids)
        return NULL;
    *T = (int)ids->shape[0];
    int *tok = malloc(sizeof(int) * *T);
    memcpy(tok, ids->data, sizeof(int) * *T);
    lg_engine *e = lg_engine_new(m, "cpu", NULL, &err);
    float *out = malloc(sizeof(float) * (size_t)*T * m->vocab_size);
    if (!e || lg_engine_tokens(e, tok, *T, 0, LG_LOGITS_ALL, out, &err) != 0) {
        free(out);
        out = NULL;
    }
    lg_engine_free(e);
    free(tok);
    lg_st_close(f);
    return out;
}

/* tiny-llama-fp16 (random weights, 6 layers) quantized: the checkpoint passes lg_llama_check, holds
 * I8 / U8 codes and F16 scales, and its logits stay near transformers' float32 ones. Bounds (twice
 * what was measured): q8 per channel rel_err <= 0.05 (measured 0.023; ~0.9% rms error per matrix
 * through 42 matrices), argmax agreement >= 0.9 (0.97: the random model's logits are nearly flat, so
 * a small error flips close rows); q4 group 64 with mins rel_err <= 0.5 (0.29), agreement >= 0.6
 * (0.81). The quantized kernels give exactly the logits of the model decoded to float32 at load. */
static void test_quantized_tiny_llama_verifies_within_tolerance(void)
{
    static const struct {
        lg_quant_method m;
        int group, mins;
        double max_rel, min_agree;
        lg_dtype codes;
    } cases[] = {{LG_QUANT_Q8, 0, 0, 0.05, 0.9, LG_DT_I8}, {LG_QUANT_Q4, 64, 1, 0.5, 0.6, LG_DT_U8}};
    for (int k = 0; k < 2; k++) {
        const char *dir = tmp_path(k ? "tiny-q4" : "tiny-q8");
        lg_quant_config q = quant_config(cases[k].m, cases[k].group, cases[k].mins);
        CU_ASSERT_EQUAL_FATAL(convert_quantized("tiny-llama-fp16", dir, &q), 0);
        lg_err err;
        int rc = check_dir(dir, &err);
        if (rc != 0)
            fprintf(stderr, "\n  %s\n", err.msg);
        CU_ASSERT_EQUAL(rc, 0);
        lg_checkpoint *ck = lg_ckpt_open(dir, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
        const lg_st_tensor *qw = lg_ckpt_find(ck, "model.layers.2.mlp.down_proj.qweight");
        const lg_st_tensor *sc = lg_ckpt_find(ck, "model.layers.2.mlp.down_proj.scales");
        CU_ASSERT_PTR_NOT_NULL_FATAL(qw);
        CU_ASSERT_PTR_NOT_NULL_FATAL(sc);
        CU_ASSERT_EQUAL(qw->dtype, cases[k].codes);
        CU_ASSERT_EQUAL(sc->dtype, LG_DT_F16);
        CU_ASSERT_EQUAL(sc->shape[1], k ? 6 : 1); /* 352 columns: 6 groups of 64, the last of 32 */
        CU_ASSERT_PTR_NULL(lg_ckpt_find(ck, "model.layers.2.mlp.down_proj.weight"));
        CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "model.embed_tokens.weight")); /* kept float */
        CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "lm_head.weight"));
        lg_ckpt_close(ck);

        lg_model *m = load(dir, 0), *md = load(dir, 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        CU_ASSERT_PTR_NOT_NULL_FATAL(md);
        CU_ASSERT_PTR_NOT_NULL(m->w[0].wqkv.q);
        CU_ASSERT_PTR_NULL(md->w[0].wqkv.q);
        CU_ASSERT(lg_model_weight_bytes(m) < lg_model_weight_bytes(md));
        lg_engine *e = lg_engine_new(m, "cpu", NULL, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        char ref[4300];
        lg_fixture(ref, sizeof ref, "tiny-llama-fp16/reference.safetensors");
        lg_verify_result r;
        CU_ASSERT_EQUAL_FATAL(lg_verify_run(e, m->vocab_size, ref, &r, &err), 0);
        if (r.rel_err > cases[k].max_rel || r.argmax_agree < cases[k].min_agree)
            fprintf(stderr, "\n  %s: rel_err %.4f, argmax agreement %.3f\n",
                    lg_quant_method_name(cases[k].m), r.rel_err, r.argmax_agree);
        CU_ASSERT(r.rel_err <= cases[k].max_rel);
        CU_ASSERT(r.argmax_agree >= cases[k].min_agree);
        lg_engine_free(e);
        int T1 = 0, T2 = 0;
        float *a = all_logits(m, &T1), *b = all_logits(md, &T2);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        CU_ASSERT_EQUAL(memcmp(a, b, sizeof(float) * (size_t)T1 * m->vocab_size), 0);
        free(a);
        free(b);
        lg_model_free(m);
        lg_model_free(md);
    }
}

/* --quant-exclude keeps matching tensors float (a substring, and a glob); the config records the
 * patterns; the stacked q|k|v matrix with k float loads, and gives the logits of the model decoded
 * at load. --quant-head quantizes lm_head. */
static void test_quant_exclude_keeps_matching_tensors_float(void)
{
    const char *dir = tmp_path("tiny-q8-excl");
    lg_quant_config q = quant_config(LG_QUANT_Q8, 0, 0);
    q.n_excluded = 2;
    snprintf(q.excluded[0], sizeof q.excluded[0], "k_proj");
    snprintf(q.excluded[1], sizeof q.excluded[1], "model.layers.1.*");
    q.lm_head = 1;
    CU_ASSERT_EQUAL_FATAL(convert_quantized("tiny-llama-fp16", dir, &q), 0);
    lg_err err;
    CU_ASSERT_EQUAL(check_dir(dir, &err), 0);
    lg_checkpoint *ck = lg_ckpt_open(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
    CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "model.layers.0.self_attn.k_proj.weight"));
    CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "model.layers.0.self_attn.q_proj.qweight"));
    CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "model.layers.1.mlp.up_proj.weight"));
    CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "model.layers.2.mlp.up_proj.qweight"));
    CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "lm_head.qweight"));
    CU_ASSERT_PTR_NOT_NULL(lg_ckpt_find(ck, "model.embed_tokens.weight"));
    lg_ckpt_close(ck);
    lg_hf_config *c = lg_hf_config_read(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    lg_quant_config got;
    int present = 0;
    CU_ASSERT_EQUAL(lg_quant_config_from_json(c->json, c->path, &got, &present, &err), 0);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_EQUAL(got.n_excluded, 2);
    CU_ASSERT_STRING_EQUAL(got.excluded[1], "model.layers.1.*");
    CU_ASSERT_TRUE(got.lm_head);
    lg_hf_config_free(c);

    lg_model *m = load(dir, 0), *md = load(dir, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(md);
    CU_ASSERT_PTR_NULL(m->w[0].wqkv.q);       /* k float: q|k|v decoded */
    CU_ASSERT_PTR_NOT_NULL(m->w[0].wo.q);
    CU_ASSERT_PTR_NULL(m->w[1].w_gate_up.q);  /* layer 1 excluded */
    CU_ASSERT_PTR_NOT_NULL(m->lm_head.q);
    int T1 = 0, T2 = 0;
    float *a = all_logits(m, &T1), *b = all_logits(md, &T2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof(float) * (size_t)T1 * m->vocab_size), 0);
    free(a);
    free(b);
    lg_model_free(m);
    lg_model_free(md);
}

/* ---------------------------------------------------------------- malformed files */

typedef enum mutation { DROP_SCALES, SCALES_SHAPE, SCALES_DTYPE, EXTRA_MINS, FLOAT_BESIDE, FP8_NAN } mutation;

/* Copies the single-file checkpoint src into dst, changing one tensor as `how` says. */
static int mutate(const char *src, const char *dst, mutation how, const char *target)
{
    char in[4300], out[4300], cmd[9000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' '%s/'", dst, dst,
             src, dst);
    if (system(cmd) != 0)
        return -1;
    snprintf(in, sizeof in, "%s/model.safetensors", src);
    snprintf(out, sizeof out, "%s/model.safetensors", dst);
    lg_err err;
    lg_st_file *f = lg_st_open(in, &err);
    lg_st_writer *w = f ? lg_st_writer_create(out, &err) : NULL;
    if (!w)
        return -1;
    char scales[256], mins[256], weight[256];
    snprintf(scales, sizeof scales, "%s.scales", target);
    snprintf(mins, sizeof mins, "%s.mins", target);
    snprintf(weight, sizeof weight, "%s.weight", target);
    int rc = 0;
    const lg_st_tensor *sc = lg_st_find(f, scales);
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (int i = 0; i < f->n_tensors && rc == 0; i++) {
            const lg_st_tensor *t = &f->tensors[i];
            int is_sc = strcmp(t->name, scales) == 0;
            if (is_sc && how == DROP_SCALES)
                continue;
            int64_t shape[2] = {t->shape[0], t->ndim > 1 ? t->shape[1] : 0};
            lg_dtype dt = t->dtype;
            if (is_sc && how == SCALES_SHAPE)
                shape[1] += 1;
            if (is_sc && how == SCALES_DTYPE)
                dt = LG_DT_F32;
            size_t nb = lg_st_nbytes(t) * (dt == t->dtype ? 1 : 2);
            if (pass == 0) {
                rc = lg_st_writer_add(w, t->name, dt, t->ndim, shape, &err);
            } else {
                char *buf = calloc(1, nb + (size_t)shape[0] * 8);
                memcpy(buf, t->data, lg_st_nbytes(t));
                if (how == FP8_NAN && strstr(t->name, ".qweight"))
                    buf[3] = 0x7f;
                size_t n = (size_t)shape[0] * (t->ndim > 1 ? (size_t)shape[1] : 1) * lg_dtype_size(dt);
                rc = lg_st_writer_write(w, buf, n, &err);
                free(buf);
            }
        }
        /* the extra tensor goes last */
        if (how == EXTRA_MINS || how == FLOAT_BESIDE) {
            int64_t shape[2] = {sc->shape[0], how == EXTRA_MINS ? sc->shape[1] : 8};
            const char *name = how == EXTRA_MINS ? mins : weight;
            size_t n = (size_t)shape[0] * shape[1] * 2;
            if (pass == 0) {
                rc = lg_st_writer_add(w, name, LG_DT_F16, 2, shape, &err);
            } else {
                char *buf = calloc(1, n);
                rc = lg_st_writer_write(w, buf, n, &err);
                free(buf);
            }
        }
        if (pass == 0 && rc == 0)
            rc = lg_st_writer_begin(w, &err);
    }
    rc = rc == 0 ? lg_st_writer_finish(w, &err) : (lg_st_writer_abort(w), -1);
    lg_st_close(f);
    if (rc != 0)
        fprintf(stderr, "\n  mutate: %s\n", err.msg);
    return rc;
}

/* Each inconsistency of a quantized checkpoint is refused by lg_llama_check and by the loader with a
 * message naming the tensor and what is wrong; a config without the quantization object, too. */
static void test_malformed_quantized_files_give_clear_errors(void)
{
    char good[4300], good_fp8[4300], src[4096];
    snprintf(good, sizeof good, "%s", tmp_path("tiny-q8-one"));
    snprintf(good_fp8, sizeof good_fp8, "%s", tmp_path("tiny-fp8-one"));
    lg_fixture(src, sizeof src, "tiny-llama-fp16");
    lg_quant_config q = quant_config(LG_QUANT_Q8, 0, 0);
    CU_ASSERT_EQUAL_FATAL(convert_quantized("tiny-llama-fp16", good, &q), 0);
    const lg_quant_config q8 = quant_config(LG_QUANT_FP8, 0, 0);
    CU_ASSERT_EQUAL_FATAL(convert_quantized("tiny-llama-fp16", good_fp8, &q8), 0);
    const char *t = "model.layers.3.self_attn.o_proj";
    static const struct {
        mutation how;
        int fp8;
        const char *want;
    } cases[] = {
        {DROP_SCALES, 0, "'model.layers.3.self_attn.o_proj.scales' is missing (the scales of quantized"},
        {SCALES_SHAPE, 0, "'model.layers.3.self_attn.o_proj.scales' should have shape [128, 1]"},
        {SCALES_DTYPE, 0, "'model.layers.3.self_attn.o_proj.scales' has dtype F32, expected F16"},
        {EXTRA_MINS, 0, "'model.layers.3.self_attn.o_proj.mins' is unexpected"},
        {FLOAT_BESIDE, 0, "'model.layers.3.self_attn.o_proj.weight' is there both as float and as quantized"},
        {FP8_NAN, 1, "is NaN"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *bad = tmp_path("tiny-q-bad");
        CU_ASSERT_EQUAL_FATAL(mutate(cases[k].fp8 ? good_fp8 : good, bad, cases[k].how, t), 0);
        lg_err err;
        memset(&err, 0, sizeof err);
        int rc = cases[k].how == FP8_NAN ? 0 : check_dir(bad, &err);
        if (cases[k].how != FP8_NAN) {
            CU_ASSERT_EQUAL(rc, -1);
            if (!strstr(err.msg, cases[k].want))
                fprintf(stderr, "\n  check: got '%s', want '%s'\n", err.msg, cases[k].want);
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, cases[k].want));
        }
        lg_model *m = lg_model_load(bad, &err);
        CU_ASSERT_PTR_NULL(m);
        if (!strstr(err.msg, cases[k].want))
            fprintf(stderr, "\n  load: got '%s', want '%s'\n", err.msg, cases[k].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, cases[k].want));
        lg_model_free(m);
    }
    /* the codes without the config's quantization object */
    char cmd[9000];
    const char *bad = tmp_path("tiny-q-noconfig");
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s' && cp '%s/config.json' '%s/'", bad, good,
             bad, src, bad);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    lg_err err;
    CU_ASSERT_EQUAL(check_dir(bad, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "has no longgen.quantization object"));
    CU_ASSERT_PTR_NULL(lg_model_load(bad, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "has no longgen.quantization object"));
    /* a quantized checkpoint is not a conversion source */
    lg_convert_opts o = {.src_dir = good, .out_dir = tmp_path("tiny-q-again"), .quiet = 1};
    o.plan.full_layers = "all";
    o.plan.rope = "keep";
    CU_ASSERT_EQUAL(lg_convert_run(&o, NULL, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "a quantized checkpoint is not a source"));
}

/* ---------------------------------------------------------------- tools */

/* lg-convert refuses bad --quant options with a message; lg-eval quant-report prints its table
 * (a model against itself: ppl change 0, KL 0, top-1 100%). */
static void test_tools_take_quant_options_and_report(void)
{
    char conv[4096], eval[4096], cmd[16384], out[8192], src[4096];
    lg_tool(conv, sizeof conv, "lg-convert");
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_fixture(src, sizeof src, "kjv-tiny-longgen");
    snprintf(cmd, sizeof cmd, "%s '%s' -o '%s' --quant q3 2>&1", conv, src, tmp_path("x"));
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--quant must be q8, q4 or fp8"));
    snprintf(cmd, sizeof cmd, "%s '%s' -o '%s' --quant q4 --group 33 2>&1", conv, src, tmp_path("x"));
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "quantization group 33"));
    snprintf(cmd, sizeof cmd, "%s '%s' -o '%s' --group 64 2>&1", conv, src, tmp_path("x"));
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "need --quant"));

    const char *q8 = tmp_path("kjv-tiny-q8");
    snprintf(cmd, sizeof cmd, "%s '%s' -o '%s' --rope keep --plan '%s/longgen_plan.json' --quant q8 "
             "--quant-head -q --force 2>&1", conv, src, q8, src);
    CU_ASSERT_EQUAL_FATAL(lg_run_capture(cmd, out, sizeof out), 0);
    char text[4300];
    lg_fixture(text, sizeof text, "text/pg-essays/gap.txt");
    snprintf(cmd, sizeof cmd, "%s quant-report '%s' '%s' --text '%s' --ctx 128 --json 2>/dev/null",
             eval, q8, q8, text);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"ppl_change_percent\": 0.000000"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"top1_agree\": 1.000000"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"kl_max\": 0,"));
    snprintf(cmd, sizeof cmd, "%s quant-report '%s' --text '%s' 2>&1", eval, q8, text);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
}

/* KL of a distribution with itself is 0; of two known ones, the closed form. */
static void test_kl_of_logits_matches_closed_form(void)
{
    float p[3] = {0, 0, 0}, q[3] = {logf(2), 0, 0}; /* P uniform; Q = (1/2, 1/4, 1/4) */
    double na, nb;
    CU_ASSERT_DOUBLE_EQUAL(lg_kl_logits(p, p, 3, 0, &na, &nb), 0, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(na, log(3), 1e-12);
    /* sum 1/3 log((1/3) / q_i) = 1/3 (log(2/3) + 2 log(4/3)) */
    double want = (log(2.0 / 3) + 2 * log(4.0 / 3)) / 3;
    CU_ASSERT_DOUBLE_EQUAL(lg_kl_logits(p, q, 3, 0, &na, &nb), want, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(nb, log(2), 1e-7);
}

/* compress-report on a fixture: every tensor classified, both codecs round-trip every tensor bit for
 * bit (the run fails otherwise), byte planes never lose to plain zstd on the fp16 embeddings (their
 * high bytes, sign and exponent, take few values), and a bad level is refused. */
static void test_compress_report_round_trips_bit_exact(void)
{
    char dir[4096];
    lg_fixture(dir, sizeof dir, "tiny-llama-fp16");
    lg_compress_report r;
    lg_err err;
    int rc = lg_compress_report_run(dir, 3, 2, &r, &err);
    if (rc != 0)
        fprintf(stderr, "\n  %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(r.round_trips_ok, r.total.n_tensors);
    CU_ASSERT_EQUAL(r.kinds[LG_CR_ATTN].n_tensors, 24);
    CU_ASSERT_EQUAL(r.kinds[LG_CR_MLP].n_tensors, 18);
    CU_ASSERT_EQUAL(r.kinds[LG_CR_EMBED].n_tensors, 2);
    CU_ASSERT_EQUAL(r.kinds[LG_CR_NORM].n_tensors, 13);
    CU_ASSERT(r.kinds[LG_CR_EMBED].packed[1] < r.kinds[LG_CR_EMBED].packed[0]);
    CU_ASSERT(r.total.packed[0] < r.total.raw);
    CU_ASSERT_EQUAL(lg_compress_report_run(dir, 25, 2, &r, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "zstd levels 1..19"));
}

int lg_register_quant_tests(void)
{
    CU_pSuite s = CU_add_suite("quant", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_fp8_codes_round_trip_and_ties_go_to_even", test_fp8_codes_round_trip_and_ties_go_to_even);
    CU_add_test(s, "test_quantize_error_within_each_schemes_bound", test_quantize_error_within_each_schemes_bound);
    CU_add_test(s, "test_quantize_refuses_nan_and_huge_weights", test_quantize_refuses_nan_and_huge_weights);
    CU_add_test(s, "test_q4_packing_of_odd_group_counts_and_odd_columns", test_q4_packing_of_odd_group_counts_and_odd_columns);
    CU_add_test(s, "test_quantized_matmul_equals_float_matmul_of_dequantized_weights", test_quantized_matmul_equals_float_matmul_of_dequantized_weights);
    CU_add_test(s, "test_quantized_tiny_llama_verifies_within_tolerance", test_quantized_tiny_llama_verifies_within_tolerance);
    CU_add_test(s, "test_quant_exclude_keeps_matching_tensors_float", test_quant_exclude_keeps_matching_tensors_float);
    CU_add_test(s, "test_malformed_quantized_files_give_clear_errors", test_malformed_quantized_files_give_clear_errors);
    CU_add_test(s, "test_tools_take_quant_options_and_report", test_tools_take_quant_options_and_report);
    CU_add_test(s, "test_kl_of_logits_matches_closed_form", test_kl_of_logits_matches_closed_form);
    CU_add_test(s, "test_compress_report_round_trips_bit_exact", test_compress_report_round_trips_bit_exact);
    return 0;
}
