/* lg-eval needle and passkey on every fixture model, at lengths within each one's context. The scores
 * of models never trained for retrieval mean nothing; what is checked is the machinery: the JSON and
 * the heatmap the tool writes, the haystack's length, the needle's depth and token boundaries, the
 * pass-key prompt. The two LongGen fixtures were finetuned on pass-key prompts: with their plan they
 * find the key, with every layer sparse they miss it. tiny-llama-fp16 and stories260K have no
 * tokenizer (fixtures/README.md: used through token ids), and the tools say so. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "json_file.h"
#include "model.h"
#include "needle.h"
#include "passkey.h"
#include "test_env.h"
#include "tokenizer.h"

/* The fixtures that have a tokenizer; lengths: a short one and a long one within the model's
 * max_position_embeddings (the tools warn past it, and the tests require no warning), the whole
 * context for two of them; kjv-pg-longgen stops at 2K, as its 4K prompts take twice the CPU time
 * of kjv-tiny-longgen's. */
typedef struct eval_fixture {
    const char *name;
    const char *passkey_reference; /* a passkey-reference.json made with the Llama-2 tokenizer */
    int has_plan;                  /* longgen_plan.json beside config.json: run with --plan */
    long lengths[2];
} eval_fixture;

static const eval_fixture fixtures[] = {
    /* kjv-pg-longgen's tokenizer.json is kjv-pg-llama's (PROVENANCE): its reference prompts apply */
    {"kjv-pg-llama", "kjv-pg-longgen/passkey-reference.json", 0, {256, 1024}},
    {"kjv-pg-longgen", "kjv-pg-longgen/passkey-reference.json", 1, {512, 2048}},
    {"kjv-tiny-longgen", "kjv-tiny-longgen/passkey-reference.json", 1, {512, 4096}},
};
#define N_FIXTURES (sizeof fixtures / sizeof fixtures[0])

static const double depths[] = {0, 40, 100};
#define N_DEPTHS 3

static long encoded_len(const lg_tokenizer *t, const char *s, size_t n, int bos)
{
    int *ids = NULL, k = -1;
    lg_err err;
    if (lg_tokenizer_encode(t, s, n, bos, &ids, &k, &err) != 0)
        return -1;
    free(ids);
    return k;
}

static const char *fixture_plan(const eval_fixture *f, char *buf, size_t n)
{
    if (!f->has_plan)
        return NULL;
    snprintf(buf, n, "%s/%s/longgen_plan.json", lg_fixtures_dir(), f->name);
    return buf;
}

/* "--plan 'FILE'" or "" */
static const char *plan_arg(const char *plan, char *buf, size_t n)
{
    if (plan)
        snprintf(buf, n, "--plan '%s'", plan);
    else
        buf[0] = 0;
    return buf;
}

/* The tool's JSON document on stdout (stderr is captured with it). */
static cJSON *json_in_output(const char *out)
{
    const char *j = strchr(out, '{');
    lg_err err;
    return j ? lg_json_parse(j, strlen(j), "lg-eval output", &err) : NULL;
}

static int is_number(const cJSON *o, const char *key)
{
    return cJSON_IsNumber(cJSON_GetObjectItem(o, key));
}

static double number(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static int count_of(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* ---------------------------------------------------------------- fixtures without a tokenizer */

/* tiny-llama-fp16 (vocab 1024) and stories260K (vocab 512) come without a tokenizer; given the
 * Llama-2 one (32000 pieces) beside their weights, they would be fed ids past their embeddings. */
static void test_fixtures_without_a_tokenizer_are_refused_with_a_reason(void)
{
    const char *names[] = {"tiny-llama-fp16", "stories260K"};
    const int vocab[] = {1024, 512};
    char eval[4096], model[4096], tok[4096], text[4096], cmd[16384], out[8192];
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_fixture(tok, sizeof tok, "llama2-tokenizer/tokenizer.model");
    lg_fixture(text, sizeof text, "text/pg-essays/gap.txt");
    for (int i = 0; i < 2; i++) {
        lg_fixture(model, sizeof model, names[i]);
        const char *sub[] = {"needle", "passkey", "ppl"};
        for (int k = 0; k < 3; k++) {
            if (k < 2)
                snprintf(cmd, sizeof cmd, "%s %s '%s' --lengths 256", eval, sub[k], model);
            else
                snprintf(cmd, sizeof cmd, "%s ppl '%s' --by-position --text '%s' --ctx 256", eval, model, text);
            int rc = lg_run_capture(cmd, out, sizeof out);
            char want[4300];
            snprintf(want, sizeof want, "lg-eval %s: needs the model's own tokenizer: %s: no tokenizer.model or "
                     "tokenizer.json in this directory", sub[k], model);
            if (rc != 1 || !strstr(out, want))
                fprintf(stderr, "\n  %s: exit %d: %s\n", cmd, rc, out);
            CU_ASSERT_EQUAL(rc, 1);
            CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
        }
        /* the same weights with the Llama-2 tokenizer beside them */
        char dir[4200], want[4400];
        snprintf(dir, sizeof dir, "%s/%s+llama2-tokenizer", lg_test_tmpdir(), names[i]);
        snprintf(cmd, sizeof cmd, "mkdir '%s' && ln -s '%s'/* '%s' '%s'/", dir, model, tok, dir);
        CU_ASSERT_EQUAL_FATAL(lg_run_capture(cmd, out, sizeof out), 0);
        snprintf(cmd, sizeof cmd, "%s passkey '%s' --lengths 256 --trials 1", eval, dir);
        int rc = lg_run_capture(cmd, out, sizeof out);
        snprintf(want, sizeof want, "lg-eval passkey: needs the model's own tokenizer: %s/tokenizer.model has "
                 "32000 pieces, more than the model's vocab_size %d: it is not this model's tokenizer", dir,
                 vocab[i]);
        if (rc != 1 || !strstr(out, want))
            fprintf(stderr, "\n  %s: exit %d: %s\n", cmd, rc, out);
        CU_ASSERT_EQUAL(rc, 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    }
}

/* ---------------------------------------------------------------- needle */

static void check_grid_schema(const cJSON *g, const char *model, const long *lengths, int max_new)
{
    const char *strings[] = {"model", "haystack", "needle", "question", "answer", "answer_prefix"};
    for (int i = 0; i < 6; i++)
        CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(g, strings[i])));
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(g, "model")->valuestring, model);
    CU_ASSERT_EQUAL(number(g, "max_new"), max_new);
    const cJSON *ls = cJSON_GetObjectItem(g, "lengths"), *ds = cJSON_GetObjectItem(g, "depths");
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(ls), 2);
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(ds), N_DEPTHS);
    for (int l = 0; l < 2; l++)
        CU_ASSERT_EQUAL(cJSON_GetArrayItem(ls, l)->valuedouble, (double)lengths[l]);
    for (int d = 0; d < N_DEPTHS; d++)
        CU_ASSERT_EQUAL(cJSON_GetArrayItem(ds, d)->valuedouble, depths[d]);
    double mean = number(g, "mean_score");
    CU_ASSERT(mean >= 0 && mean <= 1);
    const cJSON *cells = cJSON_GetObjectItem(g, "cells");
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(cells), 2 * N_DEPTHS);
    const char *numbers[] = {"length", "depth", "haystack_tokens", "prompt_tokens", "needle_token",
                             "needle_depth", "overlap", "score", "seconds"};
    for (int i = 0; i < 2 * N_DEPTHS; i++) {
        const cJSON *c = cJSON_GetArrayItem(cells, i);
        for (size_t k = 0; k < sizeof numbers / sizeof numbers[0]; k++)
            CU_ASSERT(is_number(c, numbers[k]));
        CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(c, "output")));
        CU_ASSERT(cJSON_IsBool(cJSON_GetObjectItem(c, "contains")));
        /* depth-major */
        CU_ASSERT_EQUAL(number(c, "length"), (double)lengths[i % 2]);
        CU_ASSERT_EQUAL(number(c, "depth"), depths[i / 2]);
        CU_ASSERT(number(c, "score") >= 0 && number(c, "score") <= 1);
        CU_ASSERT(number(c, "seconds") > 0);
    }
}

/* One cell rebuilt from the haystack text and checked against what the tool reported, by encoding
 * the pieces of the prompt on their own:
 * - the haystack is within ±1% of the tokens asked for the length (the bound), the prompt plus
 *   max_new answer tokens fit the length;
 * - the tokens before the needle are exactly the encoding of the text before it (the needle starts a
 *   token: its leading line break, <0x0A>), and their count is the needle_token reported;
 * - the needle sits within one sentence of the asked depth: the haystack tokens before it are
 *   depth x haystack tokens, give or take the longer of the sentences on either side of its cut and
 *   one token where the two parts' encodings meet. */
static void check_needle_cell(const lg_tokenizer *t, const lg_haystack *h, long want, const lg_needle_spec *spec,
                              const cJSON *cell, long length, double depth, int max_new)
{
    lg_err err;
    long hay = encoded_len(t, h->text, h->len, 0);
    CU_ASSERT_EQUAL(number(cell, "haystack_tokens"), (double)hay);
    if (labs(hay - want) > want / 100)
        fprintf(stderr, "\n  length %ld: haystack of %ld tokens, asked %ld\n", length, hay, want);
    CU_ASSERT(labs(hay - want) <= want / 100);

    long k = lg_haystack_cut_at_depth(h, depth);
    size_t hay_len = 0, len = 0;
    char *with = lg_haystack_insert(h, k, spec->needle, &hay_len, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(with);
    char *prompt = lg_needle_prompt_text(with, hay_len, spec, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(prompt);
    int *ids = NULL, n = 0, *pre = NULL, n_pre = 0;
    CU_ASSERT_EQUAL_FATAL(lg_tokenizer_encode(t, prompt, len, 1, &ids, &n, &err), 0);
    CU_ASSERT_EQUAL(number(cell, "prompt_tokens"), (double)n);
    CU_ASSERT(n + max_new <= length);
    /* the least the construction gives: ±1% of the haystack, the 1/1.01 margin, 4 join tokens */
    CU_ASSERT(n + max_new >= length - ceil(2.0 * (double)hay / 100) - 4);
    char *back = lg_tokenizer_decode(t, ids, n, &err);
    CU_ASSERT(back && strcmp(back, prompt) == 0); /* the prompt is text the tokenizer keeps as is */
    free(back);

    const char *at = strstr(prompt, spec->needle);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    size_t off = (size_t)(at - prompt);
    CU_ASSERT_EQUAL_FATAL(lg_tokenizer_encode(t, prompt, off, 1, &pre, &n_pre, &err), 0);
    CU_ASSERT_EQUAL(number(cell, "needle_token"), (double)n_pre);
    CU_ASSERT(n_pre < n && memcmp(pre, ids, sizeof(int) * (size_t)n_pre) == 0);
    CU_ASSERT(n_pre < n && strcmp(lg_tokenizer_piece(t, ids[n_pre]), "<0x0A>") == 0);

    long before = encoded_len(t, h->text, h->cut[k], 0);
    long prev = k > 0 ? encoded_len(t, h->text + h->cut[k - 1], h->cut[k] - h->cut[k - 1], 0) : 0;
    long next = k < h->n_sent ? encoded_len(t, h->text + h->cut[k], h->cut[k + 1] - h->cut[k], 0) : 0;
    long slack = (prev > next ? prev : next) + 1;
    double target = depth / 100 * (double)hay, landed = number(cell, "needle_depth");
    if (fabs((double)before - target) > (double)slack || fabs(landed - 100.0 * (double)before / (double)hay) >
                                                         100.0 * 2 / (double)hay)
        fprintf(stderr, "\n  length %ld depth %g: %ld haystack tokens before the needle (reported %.2f%%), "
                "wanted %.0f +- %ld\n", length, depth, before, landed, target, slack);
    CU_ASSERT(fabs((double)before - target) <= (double)slack);
    /* the reported depth is the same count, to the token where intro and haystack meet */
    CU_ASSERT(fabs(landed - 100.0 * (double)before / (double)hay) <= 100.0 * 2 / (double)hay);
    if (depth == 0)
        CU_ASSERT_EQUAL(h->cut[k], 0);
    if (depth == 100)
        CU_ASSERT_EQUAL(h->cut[k], h->len);
    free(pre);
    free(ids);
    free(prompt);
    free(with);
}

static void check_needle(const eval_fixture *f)
{
    char eval[4096], model[4096], plan_buf[4200], arg[4300], cmd[16384], out[16384], json[4300], svg[4300];
    const char *tmp = lg_test_tmpdir(), *plan = fixture_plan(f, plan_buf, sizeof plan_buf);
    setenv("LG_FIXTURES", lg_fixtures_dir(), 1); /* the default haystack is found through it */
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_fixture(model, sizeof model, f->name);
    snprintf(json, sizeof json, "%s/%s-needle.json", tmp, f->name);
    snprintf(svg, sizeof svg, "%s/%s-needle.svg", tmp, f->name);
    const int max_new = 8;
    snprintf(cmd, sizeof cmd, "%s needle '%s' %s --lengths %ld,%ld --depths 0,40,100 --max-new %d "
             "--json-out '%s' --svg '%s' --quiet", eval, model, plan_arg(plan, arg, sizeof arg), f->lengths[0],
             f->lengths[1], max_new, json, svg);
    int rc = lg_run_capture(cmd, out, sizeof out);
    if (rc != 0 || strstr(out, "warning"))
        fprintf(stderr, "\n  %s: exit %d: %s\n", cmd, rc, out);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NULL(strstr(out, "warning")); /* the longer length is the model's context */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "mean score"));

    size_t n_svg = 0;
    char *pic = lg_read_file(svg, &n_svg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pic);
    CU_ASSERT(strncmp(pic, "<svg", 4) == 0 && n_svg > 7 && strcmp(pic + n_svg - 7, "</svg>\n") == 0);
    CU_ASSERT_EQUAL(count_of(pic, "class=\"cell\""), 2 * N_DEPTHS);
    CU_ASSERT_PTR_NOT_NULL(strstr(pic, f->name)); /* the title names the model */
    free(pic);

    lg_err err;
    cJSON *g = lg_json_read_file(json, 1 << 24, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    check_grid_schema(g, model, f->lengths, max_new);

    /* the default haystack (the essays) and needle, with the model's own tokenizer */
    char essays[4096];
    lg_tokenizer *t = lg_tokenizer_load(model, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    lg_corpus c;
    CU_ASSERT_EQUAL_FATAL(lg_corpus_load(lg_fixture(essays, sizeof essays, "text/pg-essays"), t, 0, &c, &err), 0);
    lg_needle_spec spec = lg_needle_default_spec();
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(g, "needle")->valuestring, spec.needle);
    long overhead = lg_needle_overhead_tokens(t, &spec, &err);
    const cJSON *cells = cJSON_GetObjectItem(g, "cells");
    for (int l = 0; l < 2; l++) {
        long want = lg_needle_haystack_tokens(f->lengths[l], overhead, max_new, &err);
        lg_haystack h;
        CU_ASSERT_EQUAL_FATAL(lg_haystack_cut(&c, t, want, &h, &err), 0);
        for (int d = 0; d < N_DEPTHS; d++)
            check_needle_cell(t, &h, want, &spec, cJSON_GetArrayItem(cells, d * 2 + l), f->lengths[l], depths[d],
                              max_new);
        lg_haystack_free(&h);
    }
    lg_corpus_free(&c);
    lg_tokenizer_free(t);
    cJSON_Delete(g);
}

static void test_needle_grid_on_every_fixture_with_a_tokenizer(void)
{
    for (size_t i = 0; i < N_FIXTURES; i++)
        check_needle(&fixtures[i]);
}

/* ---------------------------------------------------------------- passkey */

/* The prompt for a length holds the most fillers that fit: one more would pass the length. The key's
 * five digits sit at the position lg_passkey_prompt reports, wherever the key goes. */
static void check_passkey_prompt(const lg_tokenizer *t, long length, long prompt_tokens)
{
    lg_err err;
    long n_fill = lg_passkey_fillers(t, length, &err);
    CU_ASSERT_FATAL(n_fill > 0);
    char *text = lg_passkey_text(n_fill, 0, 12345), *more = lg_passkey_text(n_fill + 1, 0, 12345);
    CU_ASSERT_EQUAL(encoded_len(t, text, strlen(text), 1), prompt_tokens);
    CU_ASSERT(prompt_tokens <= length);
    CU_ASSERT(encoded_len(t, more, strlen(more), 1) > length);
    free(text);
    free(more);
    const long ats[] = {0, n_fill / 3, n_fill};
    for (int i = 0; i < 3; i++) {
        int *ids = NULL, n = 0, key_pos = -1, key = 10000 + 8887 * (i + 1);
        CU_ASSERT_EQUAL_FATAL(lg_passkey_prompt(t, n_fill, ats[i], key, &ids, &n, &key_pos, &err), 0);
        CU_ASSERT_EQUAL(n, prompt_tokens);
        char *digits = key_pos > 0 && key_pos + 6 <= n ? lg_tokenizer_decode(t, ids + key_pos, 6, &err) : NULL;
        char want[16];
        snprintf(want, sizeof want, "%d", key);
        CU_ASSERT(digits && strcmp(digits, want) == 0); /* '▁' and five digits; decode drops the space */
        free(digits);
        free(ids);
    }
}

static int id_list(const cJSON *a, int *out, int cap)
{
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) if (n < cap) out[n++] = x->valueint;
    return n;
}

/* The fixtures' passkey-reference.json ids (made with sentencepiece) from the model's own tokenizer:
 * tokenizer.json for the kjv-pg ones, tokenizer.model for kjv-tiny-longgen. */
static void check_passkey_reference(const lg_tokenizer *t, const char *reference)
{
    char path[4096];
    lg_err err;
    cJSON *ref = lg_json_read_file(lg_fixture(path, sizeof path, reference), 1 << 26, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    int *want = malloc(sizeof(int) * 8192), same = 0, total = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "cases"))
    {
        long length = (long)number(c, "length");
        long n_fill = lg_passkey_fillers(t, length, &err);
        int *ids = NULL, n = 0, n_want = id_list(cJSON_GetObjectItem(c, "prompt_ids"), want, 8192);
        int key = cJSON_GetObjectItem(c, "key")->valueint;
        if (lg_passkey_prompt(t, n_fill, lround(number(c, "depth") * (double)n_fill), key, &ids, &n, NULL, &err) == 0)
            same += n == n_want && memcmp(ids, want, sizeof(int) * (size_t)n) == 0;
        total++;
        free(ids);
    }
    if (same != total || total != 12)
        fprintf(stderr, "\n  %s: %d of %d prompts as in the reference\n", reference, same, total);
    CU_ASSERT_EQUAL(total, 12);
    CU_ASSERT_EQUAL(same, total);
    free(want);
    cJSON_Delete(ref);
}

/* The tool with --json at both lengths, one trial each (keys at random places); the LongGen fixtures,
 * with their plan, find the key at every length (PROVENANCE: 1.00 at 1K-4K, 12 of 12 reference
 * cases in float32). */
static void check_passkey(const eval_fixture *f)
{
    char eval[4096], model[4096], plan_buf[4200], arg[4300], cmd[16384], out[16384];
    const char *plan = fixture_plan(f, plan_buf, sizeof plan_buf);
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_fixture(model, sizeof model, f->name);
    snprintf(cmd, sizeof cmd, "%s passkey '%s' %s --lengths %ld,%ld --trials 1 --seed 7 --json", eval, model,
             plan_arg(plan, arg, sizeof arg), f->lengths[0], f->lengths[1]);
    int rc = lg_run_capture(cmd, out, sizeof out);
    if (rc != 0 || strstr(out, "warning"))
        fprintf(stderr, "\n  %s: exit %d: %s\n", cmd, rc, out);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NULL(strstr(out, "warning"));
    cJSON *j = json_in_output(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(j, "model")) &&
              strcmp(cJSON_GetObjectItem(j, "model")->valuestring, model) == 0);
    CU_ASSERT_EQUAL(number(j, "trials"), 1);
    CU_ASSERT_EQUAL(number(j, "seed"), 7);
    const cJSON *results = cJSON_GetObjectItem(j, "results");
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(results), 2);
    lg_err err;
    lg_tokenizer *t = lg_tokenizer_load(model, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    for (int l = 0; l < 2; l++) {
        const cJSON *r = cJSON_GetArrayItem(results, l);
        const char *keys[] = {"length", "prompt_tokens", "trials", "correct", "accuracy", "seconds"};
        for (int k = 0; k < 6; k++)
            CU_ASSERT(is_number(r, keys[k]));
        CU_ASSERT_EQUAL(number(r, "length"), (double)f->lengths[l]);
        CU_ASSERT_EQUAL(number(r, "trials"), 1);
        CU_ASSERT(number(r, "correct") == 0 || number(r, "correct") == 1);
        CU_ASSERT_EQUAL(number(r, "accuracy"), number(r, "correct"));
        CU_ASSERT(number(r, "seconds") > 0);
        check_passkey_prompt(t, f->lengths[l], (long)number(r, "prompt_tokens"));
        if (f->has_plan) {
            if (number(r, "correct") != 1)
                fprintf(stderr, "\n  %s with its plan, length %ld: key missed\n", f->name, f->lengths[l]);
            CU_ASSERT_EQUAL(number(r, "correct"), 1);
        }
    }
    check_passkey_reference(t, f->passkey_reference);
    lg_tokenizer_free(t);
    cJSON_Delete(j);
}

static void test_passkey_on_every_fixture_with_a_tokenizer(void)
{
    for (size_t i = 0; i < N_FIXTURES; i++)
        check_passkey(&fixtures[i]);
}

/* ---------------------------------------------------------------- retrieval needs the full layers */

/* The fixture directory with a plan file, as `lg-eval passkey MODEL --plan FILE` loads it. Keys at
 * 1K in the first half of the fillers (at least 19 of 39, 456 tokens, after them), past the sparse
 * layers' window of 256: PROVENANCE measures 1.00 with the plan and, with every layer sink_window,
 * finds only the keys in the last 256 tokens (0.25 over 20 evenly spaced depths). Greedy float32
 * decoding is deterministic, so the counts are exact: all found with the plan, none without the
 * full layers. */
static int keys_found(const char *model, const char *plan, int trials)
{
    lg_err err;
    lg_model *m = lg_engine_load_model(model, "cpu", &err);
    lg_tokenizer *t = m ? lg_tokenizer_load(model, &err) : NULL;
    int found = -1;
    if (t && lg_model_load_plan(m, plan, &err) == 0) {
        lg_engine_opts eo = {.max_seq = 1024};
        lg_engine *e = lg_engine_new(m, "cpu", &eo, &err);
        long n_fill = e ? lg_passkey_fillers(t, 1024, &err) : -1;
        found = n_fill > 0 ? 0 : -1;
        for (int i = 0; found >= 0 && i < trials; i++) {
            int ok = 0, key = 10000 + (int)((37813u * (unsigned)(i + 3)) % 90000);
            long at = lround(0.5 * (double)n_fill * i / (trials - 1));
            if (lg_passkey_trial(e, t, n_fill, at, key, &ok, NULL, &err) != 0)
                found = -1;
            else
                found += ok;
        }
        lg_engine_free(e);
    }
    if (found < 0)
        fprintf(stderr, "\n  %s: %s\n", model, err.msg);
    lg_tokenizer_free(t);
    lg_model_free(m);
    return found;
}

static void test_longgen_fixtures_find_the_key_with_their_plan_only(void)
{
    char sparse[4200], model[4096], plan[4200];
    snprintf(sparse, sizeof sparse, "%s/all-sparse.json", lg_test_tmpdir());
    const char *doc = "{\"full_layers\": [], \"sparse\": {\"kind\": \"sink_window\", \"sink\": 16, \"window\": 256}}";
    CU_ASSERT_EQUAL_FATAL(lg_write_file(sparse, doc, strlen(doc)), 0);
    const int trials = 4;
    for (size_t i = 0; i < N_FIXTURES; i++) {
        if (!fixtures[i].has_plan)
            continue;
        lg_fixture(model, sizeof model, fixtures[i].name);
        fixture_plan(&fixtures[i], plan, sizeof plan);
        int with_plan = keys_found(model, plan, trials), all_sparse = keys_found(model, sparse, trials);
        if (with_plan != trials || all_sparse != 0)
            fprintf(stderr, "\n  %s, 1k: plan %d of %d, every layer sparse %d of %d\n", fixtures[i].name, with_plan,
                    trials, all_sparse, trials);
        CU_ASSERT_EQUAL(with_plan, trials);
        CU_ASSERT_EQUAL(all_sparse, 0);
    }
}

int lg_register_long_eval_models_tests(void)
{
    CU_pSuite s = CU_add_suite("long_eval_models", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_fixtures_without_a_tokenizer_are_refused_with_a_reason",
                test_fixtures_without_a_tokenizer_are_refused_with_a_reason);
    CU_add_test(s, "test_needle_grid_on_every_fixture_with_a_tokenizer",
                test_needle_grid_on_every_fixture_with_a_tokenizer);
    CU_add_test(s, "test_passkey_on_every_fixture_with_a_tokenizer", test_passkey_on_every_fixture_with_a_tokenizer);
    CU_add_test(s, "test_longgen_fixtures_find_the_key_with_their_plan_only",
                test_longgen_fixtures_find_the_key_with_their_plan_only);
    return 0;
}
