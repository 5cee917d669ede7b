/* The CPU float32 forward pass (runtime/model, forward_cpu, kvcache, matmul_cpu) against the Hugging
 * Face references in ../shared/fixtures, and the bounded sparse KV caches against a plain masked
 * attention over every position written here. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward_cpu.h"
#include "kvcache.h"
#include "matmul_cpu.h"
#include "model.h"
#include "safetensors.h"
#include "test_env.h"
#include "thread_pool.h"

/* The fixtures' logits come from transformers in float32; an independent float64 forward agrees with
 * them to 3e-6 relative (fixtures/README.md). Our float32 forward sums in other orders, so it may
 * differ from both by a few float32 roundings per operation: 1e-5 leaves room for that and is still
 * far below any real mistake (a wrong mask changes late logits by ~10%, a wrong RoPE by more). */
#define LOGITS_REL_TOL 1e-5

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_next(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static float rng_uniform(void) /* in [-1, 1) */
{
    return (float)rng_next() / 2147483648.0f - 1.0f;
}

static lg_model *load_fixture_model(const char *name)
{
    char dir[4096];
    lg_fixture(dir, sizeof dir, name);
    lg_err err = {{0}};
    lg_model *m = lg_model_load(dir, &err);
    if (!m)
        fprintf(stderr, "\n%s\n", err.msg);
    return m;
}

static int apply_fixture_plan(lg_model *m, const char *name)
{
    char path[4096], rel[512];
    snprintf(rel, sizeof rel, "%s/longgen_plan.json", name);
    lg_fixture(path, sizeof path, rel);
    lg_err err = {{0}};
    int rc = lg_model_load_plan(m, path, &err);
    if (rc != 0)
        fprintf(stderr, "\n%s\n", err.msg);
    return rc;
}

static lg_st_file *open_reference(const char *name)
{
    char path[4096], rel[512];
    snprintf(rel, sizeof rel, "%s/reference.safetensors", name);
    lg_fixture(path, sizeof path, rel);
    lg_err err = {{0}};
    lg_st_file *f = lg_st_open(path, &err);
    if (!f)
        fprintf(stderr, "\n%s\n", err.msg);
    return f;
}

/* A reference tensor of the given dtype, or NULL (absent or another dtype). */
static const lg_st_tensor *ref_get(const lg_st_file *f, const char *name, lg_dtype dt)
{
    const lg_st_tensor *t = lg_st_find(f, name);
    return t && t->dtype == dt ? t : NULL;
}

static lg_forward_state *new_state(const lg_model *m, int max_chunk, int n_threads)
{
    lg_forward_opts o = {.max_chunk = max_chunk, .n_threads = n_threads};
    lg_err err = {{0}};
    lg_forward_state *s = lg_forward_state_new(m, &o, &err);
    if (!s)
        fprintf(stderr, "\n%s\n", err.msg);
    return s;
}

/* ||a - b|| / ||b|| in double. */
static double rel_err_f(const float *a, const float *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d / r);
}

static double rel_err_fd(const float *a, const double *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        r += b[i] * b[i];
    }
    return sqrt(d / r);
}

static int argmax_d(const double *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* ---------------------------------------------------------------- matmul */

/* Every instruction set, thread count and row count gives the same bits, close to a double product;
 * odd sizes cover partial panels and tiles. */
static void test_matmul_matches_double_on_odd_sizes(void)
{
    const int n = 13, k = 37, m = 45;
    float *x = malloc(sizeof(float) * n * k), *wr = malloc(sizeof(float) * m * k);
    float *y = malloc(sizeof(float) * n * m), *y0 = malloc(sizeof(float) * n * m);
    double *yd = malloc(sizeof(double) * n * m);
    for (int i = 0; i < n * k; i++)
        x[i] = rng_uniform();
    for (int i = 0; i < m * k; i++)
        wr[i] = rng_uniform();
    lg_pmat w;
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_pmat_init(&w, m, k, &err), 0);
    for (int r = 0; r < m; r++)
        lg_pmat_set_row(&w, r, wr + (size_t)r * k);
    float back[37];
    lg_pmat_get_row(&w, 44, back);
    CU_ASSERT_EQUAL(memcmp(back, wr + 44 * k, sizeof back), 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0;
            for (int c = 0; c < k; c++)
                s += (double)x[i * k + c] * wr[j * k + c];
            yd[i * m + j] = s;
        }

    const char *default_isa = lg_matmul_isa();
    const char *isas[] = {"generic", "sse2", "vector", "avx2", "avx512f"};
    lg_pool *pool = lg_pool_new(2, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
    int tried = 0;
    for (size_t a = 0; a < sizeof isas / sizeof isas[0]; a++) {
        if (lg_matmul_set_isa(isas[a]) != 0)
            continue;
        for (int threads = 1; threads <= 2; threads++) {
            memset(y, 0, sizeof(float) * n * m);
            lg_matmul(threads == 2 ? pool : NULL, y, m, x, k, n, &w);
            if (tried++ == 0)
                memcpy(y0, y, sizeof(float) * n * m);
            /* float32 sums of 37 terms of size ~1: ~1e-7 relative */
            CU_ASSERT(rel_err_fd(y, yd, (size_t)n * m) < 1e-6);
            CU_ASSERT_EQUAL(memcmp(y, y0, sizeof(float) * n * m), 0);
        }
        /* one row at a time (decode) gives the rows of the batch */
        for (int i = 0; i < n; i++) {
            float row[45];
            lg_matmul(pool, row, m, x + (size_t)i * k, k, 1, &w);
            CU_ASSERT_EQUAL(memcmp(row, y0 + (size_t)i * m, sizeof row), 0);
        }
    }
    CU_ASSERT(tried >= 2);
    CU_ASSERT_EQUAL(lg_matmul_set_isa(default_isa), 0);
    CU_ASSERT_EQUAL(lg_matmul_set_isa("no-such-isa"), -1);
    lg_pool_free(pool);
    lg_pmat_free(&w);
    free(x);
    free(wr);
    free(y);
    free(y0);
    free(yd);
}

/* ---------------------------------------------------------------- Hugging Face references */

typedef struct hidden_capture {
    int n_layers, T, dim;
    float *h; /* [n_layers, T, dim] */
} hidden_capture;

static void capture_hidden(void *user, int layer, long pos0, int n, const float *x)
{
    hidden_capture *c = user;
    for (int t = 0; t < n; t++)
        if (pos0 + t < c->T)
            memcpy(c->h + ((size_t)layer * c->T + pos0 + t) * c->dim, x + (size_t)t * c->dim,
                   sizeof(float) * c->dim);
}

/* Logits at the reference's positions (all of input_ids, or `logit_positions`): runs of wanted
 * positions are computed with LG_LOGITS_ALL, the gaps with LG_LOGITS_NONE. */
static void check_reference_logits(const lg_model *m, const lg_st_file *ref, int max_chunk,
                                   hidden_capture *hidden)
{
    const lg_st_tensor *ids = ref_get(ref, "input_ids", LG_DT_I32);
    const lg_st_tensor *lt = ref_get(ref, "logits", LG_DT_F32);
    const lg_st_tensor *pt = ref_get(ref, "logit_positions", LG_DT_I32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lt);
    int T = (int)ids->shape[0], V = m->vocab_size;
    const int *tok = ids->data;
    int P = pt ? (int)pt->shape[0] : T;
    CU_ASSERT_EQUAL_FATAL(lt->shape[0], P);
    CU_ASSERT_EQUAL_FATAL(lt->shape[1], V);
    int *positions = malloc(sizeof(int) * P);
    for (int p = 0; p < P; p++)
        positions[p] = pt ? ((const int *)pt->data)[p] : p;

    lg_forward_state *s = new_state(m, max_chunk, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    if (hidden)
        lg_forward_set_hidden_hook(s, capture_hidden, hidden);
    float *out = malloc(sizeof(float) * (size_t)P * V);
    lg_err err = {{0}};
    int cur = 0;
    for (int p = 0; p < P;) {
        int a = positions[p], b = a, q = p;
        CU_ASSERT_FATAL(a >= cur && a < T);
        while (q < P && positions[q] == b) {
            q++;
            b++;
        }
        if (a > cur)
            CU_ASSERT_EQUAL_FATAL(
                lg_forward_tokens(s, tok + cur, a - cur, cur, LG_LOGITS_NONE, NULL, &err), 0);
        CU_ASSERT_EQUAL_FATAL(lg_forward_tokens(s, tok + a, b - a, a, LG_LOGITS_ALL,
                                                out + (size_t)p * V, &err), 0);
        cur = b;
        p = q;
    }
    if (hidden && cur < T)
        CU_ASSERT_EQUAL(lg_forward_tokens(s, tok + cur, T - cur, cur, LG_LOGITS_NONE, NULL, &err),
                        0);

    const float *want = lt->data;
    double rel = rel_err_f(out, want, (size_t)P * V);
    int agree = 0;
    for (int p = 0; p < P; p++)
        agree += lg_argmax(out + (size_t)p * V, V) == lg_argmax(want + (size_t)p * V, V);
    printf("[logits rel %.2e, argmax %d/%d] ", rel, agree, P);
    CU_ASSERT(rel <= LOGITS_REL_TOL);
    CU_ASSERT_EQUAL(agree, P);
    free(out);
    free(positions);
    lg_forward_state_free(s);
}

/* Greedy continuation of greedy_prompt_ids (or the first greedy_prompt_len input ids); greedy_ids
 * holds the new tokens only, without the prompt. */
static void check_reference_greedy(const lg_model *m, const lg_st_file *ref)
{
    const lg_st_tensor *gi = ref_get(ref, "greedy_ids", LG_DT_I32);
    const lg_st_tensor *gp = ref_get(ref, "greedy_prompt_ids", LG_DT_I32);
    const lg_st_tensor *gl = ref_get(ref, "greedy_prompt_len", LG_DT_I32);
    const lg_st_tensor *ids = ref_get(ref, "input_ids", LG_DT_I32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gi);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gl);
    int n_prompt = ((const int *)gl->data)[0];
    const int *prompt = gp ? gp->data : ids->data;
    if (gp)
        CU_ASSERT_EQUAL_FATAL(gp->shape[0], n_prompt);
    int n_new = (int)gi->shape[0];
    int *got = calloc((size_t)n_new, sizeof(int));
    lg_forward_state *s = new_state(m, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_forward_greedy(s, prompt, n_prompt, n_new, got, &err), 0);
    int same = 0;
    while (same < n_new && got[same] == ((const int *)gi->data)[same])
        same++;
    printf("[greedy %d/%d] ", same, n_new);
    CU_ASSERT_EQUAL(same, n_new);
    free(got);
    lg_forward_state_free(s);
}

/* Per-token losses over nll_input_ids (or input_ids). The losses are differences of logits of size
 * ~10 and a log-sum-exp: float32 roundings of 1e-6 relative give ~1e-5 absolute; 1e-4 is that with
 * margin, while any real error moves them by far more. */
static void check_reference_nll(const lg_model *m, const lg_st_file *ref, int max_chunk)
{
    const lg_st_tensor *ids = ref_get(ref, "nll_input_ids", LG_DT_I32);
    if (!ids)
        ids = ref_get(ref, "input_ids", LG_DT_I32);
    const lg_st_tensor *nt = ref_get(ref, "nll", LG_DT_F32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nt);
    int T = (int)ids->shape[0];
    CU_ASSERT_EQUAL_FATAL(nt->shape[0], T - 1);
    float *nll = malloc(sizeof(float) * (T - 1));
    lg_forward_state *s = new_state(m, max_chunk, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_forward_nll(s, ids->data, T, 0, nll, &err), 0);
    const float *want = nt->data;
    double worst = 0, sum = 0, sum_ref = 0;
    for (int t = 0; t < T - 1; t++) {
        double d = fabs((double)nll[t] - want[t]);
        worst = d > worst ? d : worst;
        sum += nll[t];
        sum_ref += want[t];
    }
    printf("[nll max |d| %.1e, mean %.6f vs %.6f] ", worst, sum / (T - 1), sum_ref / (T - 1));
    CU_ASSERT(worst <= 1e-4);
    free(nll);
    lg_forward_state_free(s);
}

/* tiny-llama-fp16: GQA, fp16 shards, norms not 1. The residual stream after each layer is compared
 * too: its entries are O(1) sums of float32 products, so the float32 forwards differ by ~1e-7
 * relative per layer and the error grows with depth; 1e-5 relative per layer bounds that with margin
 * (a wrong norm, RoPE pairing or GQA mapping gives errors of order 1). transformers stores the last
 * layer's output after the final norm (hidden.5 here), so that one is compared normed. */
static void test_tiny_llama_logits_and_hidden_states_match_hf(void)
{
    lg_model *m = load_fixture_model("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_st_file *ref = open_reference("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    int T = (int)ref_get(ref, "input_ids", LG_DT_I32)->shape[0];
    hidden_capture hc = {m->n_layers, T, m->dim, calloc((size_t)m->n_layers * T * m->dim, 4)};
    /* chunks of 24: the 64 rows go through three prefill chunks */
    check_reference_logits(m, ref, 24, &hc);
    double worst = 0;
    for (int l = 0; l < m->n_layers; l++) {
        char name[32];
        snprintf(name, sizeof name, "hidden.%d", l);
        const lg_st_tensor *h = ref_get(ref, name, LG_DT_F32);
        CU_ASSERT_PTR_NOT_NULL_FATAL(h);
        CU_ASSERT_EQUAL_FATAL(h->nelem, (uint64_t)T * m->dim);
        float *got = hc.h + (size_t)l * T * m->dim;
        if (l == m->n_layers - 1) /* transformers' last hidden state is taken after model.norm */
            for (int t = 0; t < T; t++) {
                float *x = got + (size_t)t * m->dim;
                double ss = 0;
                for (int i = 0; i < m->dim; i++)
                    ss += (double)x[i] * x[i];
                double r = 1.0 / sqrt(ss / m->dim + m->rms_eps);
                for (int i = 0; i < m->dim; i++)
                    x[i] = (float)(x[i] * r * m->final_norm[i]);
            }
        double rel = rel_err_f(got, h->data, (size_t)T * m->dim);
        worst = rel > worst ? rel : worst;
        CU_ASSERT(rel <= 1e-5);
    }
    printf("[hidden worst rel %.2e] ", worst);
    check_reference_nll(m, ref, 24);
    free(hc.h);
    lg_st_close(ref);
    lg_model_free(m);
}

static void test_tiny_llama_greedy_matches_hf(void)
{
    lg_model *m = load_fixture_model("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_st_file *ref = open_reference("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    check_reference_greedy(m, ref);
    lg_st_close(ref);
    lg_model_free(m);
}

/* stories260K: a trained model with tied embeddings; HF's greedy run from BOS (199 tokens) is also
 * what llama2.c's run.c prints. */
static void test_stories260k_logits_and_greedy_from_bos_match_hf(void)
{
    lg_model *m = load_fixture_model("stories260K");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT(m->tied);
    lg_st_file *ref = open_reference("stories260K");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    check_reference_logits(m, ref, 50, NULL);
    check_reference_nll(m, ref, 50);
    check_reference_greedy(m, ref);
    lg_st_close(ref);
    lg_model_free(m);
}

/* kjv-pg-llama: the real Llama-2 vocabulary, 3 fp16 shards, untied head. */
static void test_kjv_pg_llama_logits_greedy_and_nll_match_hf(void)
{
    lg_model *m = load_fixture_model("kjv-pg-llama");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_st_file *ref = open_reference("kjv-pg-llama");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    check_reference_logits(m, ref, 0, NULL);
    check_reference_greedy(m, ref);
    check_reference_nll(m, ref, 0);
    lg_st_close(ref);
    lg_model_free(m);
}

/* ---------------------------------------------------------------- LongGen models and the pass key */

typedef struct passkey_case {
    int n_prompt, n_answer, n_greedy;
    int *prompt, *answer, *greedy;
    int length;
    double depth;
} passkey_case;

static int *json_int_array(const cJSON *a, int *n)
{
    *n = cJSON_GetArraySize(a);
    int *out = malloc(sizeof(int) * (*n > 0 ? *n : 1));
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) out[i++] = (int)it->valuedouble;
    return out;
}

static passkey_case *read_passkey_cases(const char *name, int *n_cases)
{
    char path[4096], rel[512];
    snprintf(rel, sizeof rel, "%s/passkey-reference.json", name);
    lg_fixture(path, sizeof path, rel);
    char *text = lg_read_file(path, NULL);
    if (!text)
        return NULL;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(doc, "cases");
    if (!cJSON_IsArray(cases)) {
        cJSON_Delete(doc);
        return NULL;
    }
    *n_cases = cJSON_GetArraySize(cases);
    passkey_case *out = calloc((size_t)*n_cases, sizeof *out);
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        passkey_case *p = &out[i++];
        p->prompt = json_int_array(cJSON_GetObjectItemCaseSensitive(c, "prompt_ids"), &p->n_prompt);
        p->answer = json_int_array(cJSON_GetObjectItemCaseSensitive(c, "answer_ids"), &p->n_answer);
        p->greedy =
            json_int_array(cJSON_GetObjectItemCaseSensitive(c, "fp32_greedy_ids"), &p->n_greedy);
        p->length = cJSON_GetObjectItemCaseSensitive(c, "length")->valueint;
        p->depth = cJSON_GetObjectItemCaseSensitive(c, "depth")->valuedouble;
    }
    cJSON_Delete(doc);
    return out;
}

static void free_passkey_cases(passkey_case *cs, int n)
{
    for (int i = 0; cs && i < n; i++) {
        free(cs[i].prompt);
        free(cs[i].answer);
        free(cs[i].greedy);
    }
    free(cs);
}

/* Under the plan of longgen_plan.json: logits at the reference positions (late ones differ by ~10%
 * under full attention, so they check the sink/window masks), per-token losses over 2048 tokens
 * (past the 1024 of the reference logits: ring wraps many times), and every pass-key case's float32
 * greedy continuation, decoded for as many tokens as the reference holds. */
static void check_longgen_fixture(const char *name)
{
    lg_model *m = load_fixture_model(name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL_FATAL(apply_fixture_plan(m, name), 0);
    CU_ASSERT_EQUAL(m->layers[0].kind, LG_ATTN_SINK_WINDOW);
    CU_ASSERT_EQUAL(m->layers[2].kind, LG_ATTN_FULL);
    lg_st_file *ref = open_reference(name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    check_reference_logits(m, ref, 100, NULL);
    check_reference_nll(m, ref, 0);
    lg_st_close(ref);

    int n_cases = 0;
    passkey_case *cs = read_passkey_cases(name, &n_cases);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cs);
    CU_ASSERT_EQUAL(n_cases, 12);
    lg_forward_state *s = new_state(m, 512, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int ok = 0;
    for (int i = 0; i < n_cases; i++) {
        int *got = calloc((size_t)cs[i].n_greedy, sizeof(int));
        lg_err err = {{0}};
        CU_ASSERT_EQUAL(lg_forward_greedy(s, cs[i].prompt, cs[i].n_prompt, cs[i].n_greedy, got,
                                          &err), 0);
        int same = memcmp(got, cs[i].greedy, sizeof(int) * cs[i].n_greedy) == 0;
        if (!same)
            printf("[case %d (%d tokens, depth %.1f) differs] ", i, cs[i].length, cs[i].depth);
        ok += same;
        free(got);
    }
    printf("[pass key %d/%d] ", ok, n_cases);
    CU_ASSERT_EQUAL(ok, n_cases);
    lg_forward_state_free(s);
    free_passkey_cases(cs, n_cases);
    lg_model_free(m);
}

static void test_kjv_pg_longgen_matches_reference_under_its_plan(void)
{
    check_longgen_fixture("kjv-pg-longgen");
}

static void test_kjv_tiny_longgen_matches_reference_under_its_plan(void)
{
    check_longgen_fixture("kjv-tiny-longgen");
}

/* A LongGen fixture's folder holds its plan beside a config without one: loaded as it is, every
 * layer runs full, and the tools say so (lg_model_plan_note) until the plan is applied. */
static void test_unapplied_plan_beside_the_config_is_noted(void)
{
    lg_model *m = load_fixture_model("kjv-tiny-longgen");
    CU_ASSERT_FATAL(m != NULL);
    char note[8448];
    const char *n = lg_model_plan_note(m, note, sizeof note);
    CU_ASSERT_PTR_NOT_NULL(n);
    if (n) {
        CU_ASSERT_PTR_NOT_NULL(strstr(n, "kjv-tiny-longgen/longgen_plan.json is not applied"));
        CU_ASSERT_PTR_NOT_NULL(strstr(n, "--plan "));
    }
    CU_ASSERT_EQUAL(apply_fixture_plan(m, "kjv-tiny-longgen"), 0);
    CU_ASSERT_PTR_NULL(lg_model_plan_note(m, note, sizeof note));
    lg_model_free(m);
    lg_model *plain = load_fixture_model("tiny-llama-fp16"); /* no plan file: nothing to say */
    CU_ASSERT_FATAL(plain != NULL);
    CU_ASSERT_PTR_NULL(lg_model_plan_note(plain, note, sizeof note));
    lg_model_free(plain);
}

/* With every layer sink_window (16 + 256) six layers reach back at most 6 x 255 positions, so a
 * needle further than that from the question cannot be found: the model answers something else. */
static void check_all_sparse_misses_distant_keys(const char *name)
{
    lg_model *m = load_fixture_model(name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_layer_attn *all = calloc((size_t)m->n_layers, sizeof *all);
    for (int l = 0; l < m->n_layers; l++)
        all[l] = (lg_layer_attn){.kind = LG_ATTN_SINK_WINDOW, .sink = 16, .window = 256};
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_model_set_layers(m, all, &err), 0);
    free(all);
    int n_cases = 0;
    passkey_case *cs = read_passkey_cases(name, &n_cases);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cs);
    lg_forward_state *s = new_state(m, 512, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int tried = 0, found = 0;
    for (int i = 0; i < n_cases; i++) {
        /* the needle sits about depth x length into the prompt */
        double distance = (1.0 - cs[i].depth) * cs[i].length;
        if (distance < 1800)
            continue;
        int *got = calloc((size_t)cs[i].n_answer, sizeof(int));
        CU_ASSERT_EQUAL(
            lg_forward_greedy(s, cs[i].prompt, cs[i].n_prompt, cs[i].n_answer, got, &err), 0);
        found += memcmp(got, cs[i].answer, sizeof(int) * cs[i].n_answer) == 0;
        tried++;
        free(got);
    }
    printf("[all sparse: %d of %d distant keys found] ", found, tried);
    CU_ASSERT(tried >= 3);
    CU_ASSERT_EQUAL(found, 0);
    lg_forward_state_free(s);
    free_passkey_cases(cs, n_cases);
    lg_model_free(m);
}

static void test_all_sparse_longgen_models_miss_distant_keys(void)
{
    check_all_sparse_misses_distant_keys("kjv-tiny-longgen");
    check_all_sparse_misses_distant_keys("kjv-pg-longgen");
}

/* ---------------------------------------------------------------- masked dense reference */

/* The straightforward forward pass: every activation in double, every position's keys and values
 * kept, query i attending to key j when lg_attn_visible says so. Returns logits [T, V]. */
typedef struct dense_weights {
    float *wqkv, *wo, *wgu, *wdown;
} dense_weights;

static float *unpack(const lg_pmat *p)
{
    float *w = malloc(sizeof(float) * (size_t)p->rows * p->cols);
    for (int r = 0; r < p->rows; r++)
        lg_pmat_get_row(p, r, w + (size_t)r * p->cols);
    return w;
}

static void dense_matvec(const float *w, int rows, int cols, const double *x, double *y)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)w[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static void dense_rmsnorm(const double *x, const float *w, int dim, double eps, double *out)
{
    double ss = 0;
    for (int i = 0; i < dim; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / dim + eps);
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * r * w[i];
}

static double *dense_logits(const lg_model *m, const lg_layer_attn *plan, const int *tok, int T)
{
    int H = m->dim, F = m->ffn_dim, hd = m->head_dim, nh = m->n_heads, nkv = m->n_kv_heads;
    int qd = nh * hd, kvd = nkv * hd, qkvd = qd + 2 * kvd, V = m->vocab_size, half = hd / 2;
    double *x = malloc(sizeof(double) * T * H), *xb = malloc(sizeof(double) * H);
    double *qkv = malloc(sizeof(double) * T * qkvd), *att = malloc(sizeof(double) * qd);
    double *o = malloc(sizeof(double) * H), *gu = malloc(sizeof(double) * 2 * F);
    double *sc = malloc(sizeof(double) * T), *logits = malloc(sizeof(double) * T * V);
    float inv_freq[512], scale;
    lg_rope_inv_freq(&m->rope, hd, m->max_pos, T, inv_freq, &scale);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < H; i++)
            x[t * H + i] = m->embed[(size_t)tok[t] * H + i];
    for (int l = 0; l < m->n_layers; l++) {
        const lg_layer_weights *lw = &m->w[l];
        float *wqkv = unpack(&lw->wqkv), *wo = unpack(&lw->wo);
        float *wgu = unpack(&lw->w_gate_up), *wd = unpack(&lw->w_down);
        for (int t = 0; t < T; t++) {
            dense_rmsnorm(x + t * H, lw->attn_norm, H, m->rms_eps, xb);
            double *row = qkv + (size_t)t * qkvd;
            dense_matvec(wqkv, qkvd, H, xb, row);
            for (int h = 0; h < nh + nkv; h++)
                for (int i = 0; i < half; i++) {
                    double a = (double)t * inv_freq[i], c = cos(a) * scale, s = sin(a) * scale;
                    double x0 = row[h * hd + i], x1 = row[h * hd + i + half];
                    row[h * hd + i] = x0 * c - x1 * s;
                    row[h * hd + i + half] = x1 * c + x0 * s;
                }
        }
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < nh; h++) {
                const double *q = qkv + (size_t)t * qkvd + h * hd;
                int kvo = (h / (nh / nkv)) * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    sc[j] = -INFINITY;
                    if (!lg_attn_visible(&plan[l], t, j))
                        continue;
                    const double *k = qkv + (size_t)j * qkvd + qd + kvo;
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += q[e] * k[e];
                    sc[j] = d / sqrt((double)hd);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j <= t; j++) {
                    sc[j] = exp(sc[j] - mx);
                    sum += sc[j];
                }
                for (int e = 0; e < hd; e++) {
                    double a = 0;
                    for (int j = 0; j <= t; j++)
                        a += sc[j] / sum * qkv[(size_t)j * qkvd + qd + kvd + kvo + e];
                    att[h * hd + e] = a;
                }
            }
            dense_matvec(wo, H, qd, att, o);
            for (int i = 0; i < H; i++)
                x[t * H + i] += o[i];
            dense_rmsnorm(x + t * H, lw->mlp_norm, H, m->rms_eps, xb);
            dense_matvec(wgu, 2 * F, H, xb, gu);
            for (int i = 0; i < F; i++)
                gu[i] = gu[i] / (1 + exp(-gu[i])) * gu[F + i];
            dense_matvec(wd, H, F, gu, o);
            for (int i = 0; i < H; i++)
                x[t * H + i] += o[i];
        }
        free(wqkv);
        free(wo);
        free(wgu);
        free(wd);
    }
    float *head = unpack(&m->lm_head);
    for (int t = 0; t < T; t++) {
        dense_rmsnorm(x + t * H, m->final_norm, H, m->rms_eps, xb);
        dense_matvec(head, V, H, xb, logits + (size_t)t * V);
    }
    free(head);
    free(x);
    free(xb);
    free(qkv);
    free(att);
    free(o);
    free(gu);
    free(sc);
    return logits;
}

/* Logits of every position, fed in calls of the sizes in `calls` (cycled), by a state with chunks of
 * max_chunk rows. */
static float *runtime_logits_threads(const lg_model *m, const int *tok, int T, int max_chunk,
                                     const int *calls, int n_calls, int n_threads)
{
    lg_forward_state *s = new_state(m, max_chunk, n_threads);
    if (!s)
        return NULL;
    float *out = malloc(sizeof(float) * (size_t)T * m->vocab_size);
    lg_err err = {{0}};
    for (int t = 0, c = 0; t < T; c++) {
        int n = calls[c % n_calls] < T - t ? calls[c % n_calls] : T - t;
        if (lg_forward_tokens(s, tok + t, n, t, LG_LOGITS_ALL, out + (size_t)t * m->vocab_size,
                              &err) != 0) {
            fprintf(stderr, "\n%s\n", err.msg);
            free(out);
            out = NULL;
            break;
        }
        t += n;
    }
    lg_forward_state_free(s);
    return out;
}

static float *runtime_logits(const lg_model *m, const int *tok, int T, int max_chunk,
                             const int *calls, int n_calls)
{
    return runtime_logits_threads(m, tok, T, max_chunk, calls, n_calls, 0);
}

/* The bounded caches, decoding token by token (chunks of 1: the smallest rings, evicting at every
 * step) and in prefill calls of odd sizes with chunks of 7 (calls larger than a chunk, rings that wrap
 * mid-call), give the logits of the plain masked computation over every position. float32 against
 * double, so the tolerance of the HF comparisons; decode and chunked prefill sum the same keys in the
 * same order, so they agree to the bit (checked with 0 tolerance to catch any ordering slip), and so
 * do one and two threads. */
static void check_sparse_plan_against_dense(const lg_layer_attn *plan, const char *what)
{
    lg_model *m = load_fixture_model("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_model_set_layers(m, plan, &err), 0);
    const int T = 100;
    int V = m->vocab_size, tok[100];
    for (int t = 0; t < T; t++)
        tok[t] = (int)(rng_next() % (uint32_t)V);

    double *want = dense_logits(m, plan, tok, T);
    int one = 1, odd[] = {5, 13, 1, 20, 7, 3};
    float *decoded = runtime_logits(m, tok, T, 1, &one, 1);
    float *chunked = runtime_logits(m, tok, T, 7, odd, 6);
    float *one_thread = runtime_logits_threads(m, tok, T, 7, odd, 6, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(decoded);
    CU_ASSERT_PTR_NOT_NULL_FATAL(chunked);
    CU_ASSERT_PTR_NOT_NULL_FATAL(one_thread);
    double rel = rel_err_fd(decoded, want, (size_t)T * V);
    int agree = 0;
    for (int t = 0; t < T; t++)
        agree += lg_argmax(decoded + (size_t)t * V, V) == argmax_d(want + (size_t)t * V, V);
    printf("[%s: rel %.2e, argmax %d/%d] ", what, rel, agree, T);
    CU_ASSERT(rel <= LOGITS_REL_TOL);
    CU_ASSERT_EQUAL(agree, T);
    CU_ASSERT_EQUAL(memcmp(decoded, chunked, sizeof(float) * T * V), 0);
    CU_ASSERT_EQUAL(memcmp(chunked, one_thread, sizeof(float) * T * V), 0);

    /* the masks matter at this length: full attention gives other logits */
    lg_layer_attn full[16];
    for (int l = 0; l < m->n_layers; l++)
        full[l] = (lg_layer_attn){.kind = LG_ATTN_FULL};
    double *dense_full = dense_logits(m, full, tok, T);
    CU_ASSERT(rel_err_fd(decoded, dense_full, (size_t)T * V) > 1e-3);

    free(dense_full);
    free(want);
    free(decoded);
    free(chunked);
    free(one_thread);
    lg_model_free(m);
}

static void test_sink_window_decode_matches_masked_dense_attention(void)
{
    lg_layer_attn sw = {.kind = LG_ATTN_SINK_WINDOW, .sink = 4, .window = 16};
    lg_layer_attn fu = {.kind = LG_ATTN_FULL};
    lg_layer_attn plan[6] = {sw, sw, fu, fu, sw, sw};
    check_sparse_plan_against_dense(plan, "sink 4 window 16");
}

static void test_block_strided_decode_matches_masked_dense_attention(void)
{
    lg_layer_attn bs = {.kind = LG_ATTN_BLOCK_STRIDED, .block = 8, .local = 2, .stride = 4};
    lg_layer_attn fu = {.kind = LG_ATTN_FULL};
    lg_layer_attn plan[6] = {bs, bs, fu, fu, bs, bs};
    check_sparse_plan_against_dense(plan, "block 8 local 2 stride 4");
}

/* A window at least as long as the sequence hides nothing: the logits of full attention, to the bit
 * (the same keys summed in the same order). */
static void test_sink_window_covering_the_sequence_equals_full_attention(void)
{
    lg_model *m = load_fixture_model("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    const int T = 64;
    int V = m->vocab_size, tok[64], calls[] = {9, 30, 1};
    for (int t = 0; t < T; t++)
        tok[t] = (int)(rng_next() % (uint32_t)V);
    float *full = runtime_logits(m, tok, T, 16, calls, 3);
    lg_layer_attn plan[6];
    for (int l = 0; l < 6; l++)
        plan[l] = (lg_layer_attn){.kind = LG_ATTN_SINK_WINDOW, .sink = 4, .window = T};
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_model_set_layers(m, plan, &err), 0);
    float *sparse = runtime_logits(m, tok, T, 16, calls, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(full);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sparse);
    CU_ASSERT_EQUAL(memcmp(full, sparse, sizeof(float) * T * V), 0);
    /* one position less of window does hide something */
    for (int l = 0; l < 6; l++)
        plan[l].window = T - 1 - 4;
    CU_ASSERT_EQUAL_FATAL(lg_model_set_layers(m, plan, &err), 0);
    float *narrower = runtime_logits(m, tok, T, 16, calls, 3);
    CU_ASSERT(rel_err_f(narrower, full, (size_t)T * V) > 0);
    free(full);
    free(sparse);
    free(narrower);
    lg_model_free(m);
}

/* A sink_window layer's cache stops growing at sink + window - 1 + max_chunk positions; a full
 * layer's holds every position; a block_strided one keeps the stride blocks plus its ring. */
static void test_sparse_cache_memory_is_bounded(void)
{
    lg_model *m = load_fixture_model("tiny-llama-fp16");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_layer_attn sw = {.kind = LG_ATTN_SINK_WINDOW, .sink = 4, .window = 16};
    lg_layer_attn bs = {.kind = LG_ATTN_BLOCK_STRIDED, .block = 8, .local = 2, .stride = 4};
    lg_layer_attn fu = {.kind = LG_ATTN_FULL};
    lg_layer_attn plan[6] = {sw, sw, fu, fu, bs, sw};
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(lg_model_set_layers(m, plan, &err), 0);
    const int C = 8;
    lg_forward_state *s = new_state(m, C, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    size_t row = (size_t)m->n_kv_heads * m->head_dim * 2 * sizeof(float);
    size_t sw_bound = 3 * (4 + 16 - 1 + C) * row;
    size_t live[3], alloc[3], alloc_mid = 0;
    int tok[500];
    for (int t = 0; t < 500; t++)
        tok[t] = (int)(rng_next() % (uint32_t)m->vocab_size);
    for (int t = 0; t < 500; t += 10) {
        CU_ASSERT_EQUAL_FATAL(
            lg_forward_tokens(s, tok + t, 10, t, LG_LOGITS_NONE, NULL, &err), 0);
        lg_forward_kv_bytes(s, live, alloc);
        int T = t + 10;
        CU_ASSERT(alloc[LG_ATTN_SINK_WINDOW] <= sw_bound);
        CU_ASSERT(live[LG_ATTN_SINK_WINDOW] <= sw_bound);
        CU_ASSERT_EQUAL(live[LG_ATTN_FULL], 2 * (size_t)T * row);
        /* stride blocks: every 4th block of 8 for good, plus at most 2 * 8 - 1 + C recent */
        size_t kept = (size_t)(T / 32) * 8 + (T % 32 > 24 ? (size_t)(T % 32 - 24) : 0);
        CU_ASSERT(live[LG_ATTN_BLOCK_STRIDED] <= (kept + 2 * 8 - 1 + C) * row);
        if (T == 250)
            alloc_mid = alloc[LG_ATTN_SINK_WINDOW];
    }
    CU_ASSERT_EQUAL(alloc[LG_ATTN_SINK_WINDOW], alloc_mid);
    lg_forward_state_free(s);
    lg_model_free(m);
}

/* ---------------------------------------------------------------- bad inputs */

/* A copy of a fixture checkpoint (weights linked) whose config.json has `from` replaced by `to`. */
static const char *fixture_with_config_edit(const char *name, const char *from, const char *to)
{
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir());
    char src[4096];
    lg_fixture(src, sizeof src, name);
    DIR *d = opendir(src);
    if (!d)
        return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "config.json") == 0)
            continue;
        char a[8192], b[8192];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dir, e->d_name);
        if (symlink(a, b) != 0) {
            closedir(d);
            return NULL;
        }
    }
    closedir(d);
    char path[8192];
    snprintf(path, sizeof path, "%s/config.json", src);
    size_t n;
    char *text = lg_read_file(path, &n);
    char *at = text ? strstr(text, from) : NULL;
    if (!at) {
        free(text);
        return NULL;
    }
    size_t out_n = n - strlen(from) + strlen(to);
    char *out = malloc(out_n + 1);
    size_t pre = (size_t)(at - text);
    memcpy(out, text, pre);
    memcpy(out + pre, to, strlen(to));
    memcpy(out + pre + strlen(to), at + strlen(from), n - pre - strlen(from));
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = lg_write_file(path, out, out_n);
    free(text);
    free(out);
    return rc == 0 ? dir : NULL;
}

static void expect_load_error(const char *dir, const char *needle)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    lg_err err = {{0}};
    lg_model *m = lg_model_load(dir, &err);
    CU_ASSERT_PTR_NULL(m);
    if (!strstr(err.msg, needle))
        printf("\n  message: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, needle));
    lg_model_free(m);
}

static void test_missing_tensor_is_named(void)
{
    expect_load_error(
        fixture_with_config_edit("tiny-llama-fp16", "\"num_hidden_layers\": 6",
                                 "\"num_hidden_layers\": 7"),
        "tensor 'model.layers.6.input_layernorm.weight' is missing");
}

static void test_wrong_shape_names_tensor_and_dimension(void)
{
    expect_load_error(fixture_with_config_edit("tiny-llama-fp16", "\"intermediate_size\": 352",
                                               "\"intermediate_size\": 350"),
                      "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [352, 128], "
                      "expected [350, 128]: dimension 0 should be intermediate_size = 350");
    expect_load_error(fixture_with_config_edit("tiny-llama-fp16", "\"vocab_size\": 1024",
                                               "\"vocab_size\": 1000"),
                      "tensor 'model.embed_tokens.weight' has shape [1024, 128], expected "
                      "[1000, 128]: dimension 0 should be vocab_size = 1000");
}

static void test_untied_config_needs_lm_head(void)
{
    expect_load_error(fixture_with_config_edit("stories260K", "\"tie_word_embeddings\": true",
                                                "\"tie_word_embeddings\": false"),
                      "tensor 'lm_head.weight' is missing");
}

/* A one-layer checkpoint written here, with model.norm.weight given the dtype and shape asked. */
static const char *write_small_checkpoint(lg_dtype norm_dtype, int norm_2d)
{
    const char *dir = lg_test_tmpdir();
    static char out[4096];
    snprintf(out, sizeof out, "%s", dir);
    const char *config =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
        " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
        " \"vocab_size\": 16, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-05,"
        " \"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": \"default\"},"
        " \"tie_word_embeddings\": true, \"dtype\": \"float32\"}";
    char path[8192];
    snprintf(path, sizeof path, "%s/config.json", out);
    if (lg_write_file(path, config, strlen(config)) != 0)
        return NULL;
    struct {
        const char *name;
        int64_t r, c;
    } ts[] = {
        {"model.embed_tokens.weight", 16, 8},
        {"model.layers.0.input_layernorm.weight", 8, 0},
        {"model.layers.0.post_attention_layernorm.weight", 8, 0},
        {"model.layers.0.self_attn.q_proj.weight", 8, 8},
        {"model.layers.0.self_attn.k_proj.weight", 4, 8},
        {"model.layers.0.self_attn.v_proj.weight", 4, 8},
        {"model.layers.0.self_attn.o_proj.weight", 8, 8},
        {"model.layers.0.mlp.gate_proj.weight", 12, 8},
        {"model.layers.0.mlp.up_proj.weight", 12, 8},
        {"model.layers.0.mlp.down_proj.weight", 8, 12},
        {"model.norm.weight", 8, 0},
    };
    int n = (int)(sizeof ts / sizeof ts[0]);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    lg_err err = {{0}};
    lg_st_writer *w = lg_st_writer_create(path, &err);
    if (!w)
        return NULL;
    for (int i = 0; i < n; i++) {
        int is_norm = strcmp(ts[i].name, "model.norm.weight") == 0;
        int64_t shape[2] = {ts[i].r, ts[i].c};
        if (is_norm && norm_2d) {
            shape[0] = 1;
            shape[1] = 8;
        }
        int ndim = ts[i].c ? 2 : (is_norm && norm_2d ? 2 : 1);
        lg_st_writer_add(w, ts[i].name, is_norm ? norm_dtype : LG_DT_F32, ndim, shape, &err);
    }
    lg_st_writer_begin(w, &err);
    for (int i = 0; i < n; i++) {
        int is_norm = strcmp(ts[i].name, "model.norm.weight") == 0;
        size_t count = (size_t)ts[i].r * (ts[i].c ? ts[i].c : 1);
        float buf[192];
        for (size_t j = 0; j < count; j++)
            buf[j] = 0.5f * rng_uniform() + (ts[i].c ? 0.0f : 1.0f);
        lg_st_writer_write(w, buf, count * (is_norm ? lg_dtype_size(norm_dtype) : 4), &err);
    }
    if (lg_st_writer_finish(w, &err) != 0) {
        fprintf(stderr, "\n%s\n", err.msg);
        return NULL;
    }
    return out;
}

static void test_tensor_dtype_and_rank_are_checked(void)
{
    const char *ok = write_small_checkpoint(LG_DT_F32, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ok);
    lg_err err = {{0}};
    lg_model *m = lg_model_load(ok, &err);
    if (!m)
        printf("\n  %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL(m);
    lg_model_free(m);
    expect_load_error(write_small_checkpoint(LG_DT_I32, 0),
                      "tensor 'model.norm.weight' has dtype I32, expected a float type");
    expect_load_error(write_small_checkpoint(LG_DT_F32, 1),
                      "tensor 'model.norm.weight' has 2 dimensions, expected 1 [8]");
}

static void test_bad_calls_are_refused(void)
{
    lg_model *m = load_fixture_model("stories260K");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_err err = {{0}};
    lg_layer_attn plan[5];
    for (int l = 0; l < 5; l++)
        plan[l] = (lg_layer_attn){.kind = LG_ATTN_SINK_WINDOW, .sink = 4, .window = 0};
    CU_ASSERT_EQUAL(lg_model_set_layers(m, plan, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "layer 0: sink_window window=0"));

    lg_forward_opts huge = {.max_chunk = 1 << 20};
    CU_ASSERT_PTR_NULL(lg_forward_state_new(m, &huge, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_chunk 1048576 is above 65536"));

    lg_forward_state *s = new_state(m, 4, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int tok[3] = {1, 2, 3}, bad[2] = {1, 512};
    float logits[512], nll[2];
    CU_ASSERT_EQUAL(lg_forward_tokens(s, tok, 0, 0, LG_LOGITS_NONE, NULL, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "0 tokens; at least one is needed"));
    CU_ASSERT_EQUAL(lg_forward_tokens(s, bad, 2, 0, LG_LOGITS_NONE, NULL, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "token 512 at index 1 is outside the vocabulary"));
    CU_ASSERT_EQUAL(lg_forward_tokens(s, tok, 3, 0, LG_LOGITS_LAST, NULL, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "logits requested without a buffer"));
    CU_ASSERT_EQUAL(lg_forward_tokens(s, tok, 3, 0, LG_LOGITS_LAST, logits, &err), 0);
    CU_ASSERT_EQUAL(lg_forward_pos(s), 3);
    CU_ASSERT_EQUAL(lg_forward_tokens(s, tok, 1, 5, LG_LOGITS_LAST, logits, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "pos0 5, but the cache holds positions 0..2"));
    CU_ASSERT_EQUAL(lg_forward_nll(s, tok, 1, 0, nll, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "1 tokens; at least 2 are needed"));
    lg_forward_state_free(s);

    lg_kvcache c;
    lg_layer_attn sw = {.kind = LG_ATTN_SINK_WINDOW, .sink = 1, .window = 2};
    CU_ASSERT_EQUAL_FATAL(lg_kvcache_init(&c, &sw, 4, 2, 0, &err), 0);
    float kv[12] = {0};
    CU_ASSERT_EQUAL(lg_kvcache_append(&c, kv, kv, 4, 3, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "append of 3 positions"));
    lg_kvcache_free(&c);
    lg_model_free(m);
}

int lg_register_forward_cpu_tests(void)
{
    CU_pSuite s = CU_add_suite("forward_cpu", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_matmul_matches_double_on_odd_sizes", test_matmul_matches_double_on_odd_sizes);
    CU_add_test(s, "test_tiny_llama_logits_and_hidden_states_match_hf", test_tiny_llama_logits_and_hidden_states_match_hf);
    CU_add_test(s, "test_tiny_llama_greedy_matches_hf", test_tiny_llama_greedy_matches_hf);
    CU_add_test(s, "test_stories260k_logits_and_greedy_from_bos_match_hf", test_stories260k_logits_and_greedy_from_bos_match_hf);
    CU_add_test(s, "test_kjv_pg_llama_logits_greedy_and_nll_match_hf", test_kjv_pg_llama_logits_greedy_and_nll_match_hf);
    CU_add_test(s, "test_kjv_pg_longgen_matches_reference_under_its_plan", test_kjv_pg_longgen_matches_reference_under_its_plan);
    CU_add_test(s, "test_kjv_tiny_longgen_matches_reference_under_its_plan", test_kjv_tiny_longgen_matches_reference_under_its_plan);
    CU_add_test(s, "test_unapplied_plan_beside_the_config_is_noted", test_unapplied_plan_beside_the_config_is_noted);
    CU_add_test(s, "test_all_sparse_longgen_models_miss_distant_keys", test_all_sparse_longgen_models_miss_distant_keys);
    CU_add_test(s, "test_sink_window_decode_matches_masked_dense_attention", test_sink_window_decode_matches_masked_dense_attention);
    CU_add_test(s, "test_block_strided_decode_matches_masked_dense_attention", test_block_strided_decode_matches_masked_dense_attention);
    CU_add_test(s, "test_sink_window_covering_the_sequence_equals_full_attention", test_sink_window_covering_the_sequence_equals_full_attention);
    CU_add_test(s, "test_sparse_cache_memory_is_bounded", test_sparse_cache_memory_is_bounded);
    CU_add_test(s, "test_missing_tensor_is_named", test_missing_tensor_is_named);
    CU_add_test(s, "test_wrong_shape_names_tensor_and_dimension", test_wrong_shape_names_tensor_and_dimension);
    CU_add_test(s, "test_untied_config_needs_lm_head", test_untied_config_needs_lm_head);
    CU_add_test(s, "test_tensor_dtype_and_rank_are_checked", test_tensor_dtype_and_rank_are_checked);
    CU_add_test(s, "test_bad_calls_are_refused", test_bad_calls_are_refused);
    return 0;
}
