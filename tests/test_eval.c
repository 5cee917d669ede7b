/* lg-eval's measurements on converted fixtures against Hugging Face's references: logits, greedy
 * ids and perplexity, and the tools' command lines. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "engine.h"
#include "forward_cpu.h"
#include "model.h"
#include "perplexity.h"
#include "safetensors.h"
#include "test_env.h"
#include "tokenizer.h"
#include "verify.h"

/* Converts a fixture (trained LongGen ones with their plan and RoPE) into a scratch directory. */
static const char *converted(const char *fixture, char *out, size_t n)
{
    char src[4096], plan[4200];
    lg_fixture(src, sizeof src, fixture);
    snprintf(plan, sizeof plan, "%s/longgen_plan.json", src);
    snprintf(out, n, "%s/%s", lg_test_tmpdir(), fixture);
    lg_convert_opts o = {.src_dir = src, .out_dir = out, .quiet = 1};
    if (lg_path_exists(plan))
        o.plan.plan_file = plan;
    else
        o.plan.full_layers = "all"; /* plain Llamas: their references are full attention */
    o.plan.rope = "keep";
    lg_err err;
    if (lg_convert_run(&o, NULL, &err) != 0) {
        fprintf(stderr, "\n  %s\n", err.msg);
        return NULL;
    }
    return out;
}

/* verify on every fixture: relative error <= 1e-5 against the float32 reference (an independent
 * float64 implementation reproduces them to 3e-6, and our float32 sums differ from torch's in
 * order only), argmax agreement 100%, greedy ids identical. */
static void test_verify_passes_on_every_fixture(void)
{
    const char *fixtures[] = {"tiny-llama-fp16", "stories260K", "kjv-pg-llama", "kjv-pg-longgen",
                              "kjv-tiny-longgen"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char dir[4200], ref[4300];
        CU_ASSERT_PTR_NOT_NULL_FATAL(converted(fixtures[i], dir, sizeof dir));
        snprintf(ref, sizeof ref, "%s/%s/reference.safetensors", lg_fixtures_dir(), fixtures[i]);
        lg_err err;
        lg_model *m = lg_model_load(dir, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        lg_engine *s = lg_engine_new(m, "cpu", NULL, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        lg_verify_result r;
        int rc = lg_verify_run(s, m->vocab_size, ref, &r, &err);
        if (rc != 0)
            fprintf(stderr, "\n  %s\n", err.msg);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        if (r.rel_err > 1e-5 || r.argmax_agree != 1.0 || (r.has_greedy && !r.greedy_match))
            fprintf(stderr, "\n  %s: rel_err %.3g argmax %.4f greedy %d\n", fixtures[i], r.rel_err,
                    r.argmax_agree, r.greedy_match);
        CU_ASSERT(r.rel_err <= 1e-5);
        CU_ASSERT_EQUAL(r.argmax_agree, 1.0);
        if (r.has_greedy)
            CU_ASSERT_TRUE(r.greedy_match);
        /* the reference's own NLL gives the same perplexity to 1e-5 relative */
        CU_ASSERT_TRUE(r.has_nll);
        CU_ASSERT(fabs(r.ppl - r.ref_ppl) <= 1e-5 * r.ref_ppl);
        lg_engine_free(s);
        lg_model_free(m);
    }
}

static long heldout_tokens(const lg_tokenizer *t, int **out)
{
    const char *names[] = {"worked", "popular", "gap", "philosophy", "before", "love"};
    int *all = NULL;
    long total = 0;
    for (int i = 0; i < 6; i++) {
        char rel[256], path[4300];
        snprintf(rel, sizeof rel, "text/pg-essays/%s.txt", names[i]);
        size_t len;
        char *text = lg_read_file(lg_fixture(path, sizeof path, rel), &len);
        int *ids, n;
        lg_err err;
        if (!text || lg_tokenizer_encode(t, text, len, 1, &ids, &n, &err) != 0)
            return -1;
        all = realloc(all, sizeof(int) * (size_t)(total + n));
        memcpy(all + total, ids, sizeof(int) * (size_t)n);
        total += n;
        free(ids);
        free(text);
    }
    *out = all;
    return total;
}

/* Held-out perplexity as the fixtures' metadata and PROVENANCE state it (sentencepiece tokens,
 * windows of ctx + 1 every ctx): kjv-pg-llama 257.2258 (ctx 1024) and 260.7438 (ctx 512);
 * kjv-tiny-longgen with its plan 251.579 (ctx 1024) and 247.454 (ctx 4096). The issue allows 0.1. */
static void test_heldout_perplexity_matches_the_references(void)
{
    static const struct {
        const char *fixture;
        int ctx;
        double ppl;
    } cases[] = {{"kjv-pg-llama", 1024, 257.2258}, {"kjv-pg-llama", 512, 260.7438},
                 {"kjv-tiny-longgen", 1024, 251.579}, {"kjv-tiny-longgen", 4096, 247.454}};
    char tokdir[4096];
    lg_err err;
    lg_tokenizer *t = lg_tokenizer_load(lg_fixture(tokdir, sizeof tokdir, "llama2-tokenizer/tokenizer.model"), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    int *ids = NULL;
    long n = heldout_tokens(t, &ids);
    CU_ASSERT_EQUAL_FATAL(n, 59505);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[4200];
        CU_ASSERT_PTR_NOT_NULL_FATAL(converted(cases[i].fixture, dir, sizeof dir));
        lg_model *m = lg_model_load(dir, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        lg_engine_opts eo = {.max_seq = cases[i].ctx + 1};
        lg_engine *s = lg_engine_new(m, "cpu", &eo, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        lg_ppl_result r;
        CU_ASSERT_EQUAL_FATAL(lg_ppl_run(s, ids, n, cases[i].ctx, 0, &r, &err), 0);
        if (fabs(r.ppl - cases[i].ppl) > 0.1)
            fprintf(stderr, "\n  %s ctx %d: ppl %.4f, reference %.4f\n", cases[i].fixture,
                    cases[i].ctx, r.ppl, cases[i].ppl);
        CU_ASSERT(fabs(r.ppl - cases[i].ppl) <= 0.1);
        CU_ASSERT_EQUAL(r.predicted, n - 1);
        lg_engine_free(s);
        lg_model_free(m);
    }
    free(ids);
    lg_tokenizer_free(t);
}

static void test_tools_run_and_refuse_bad_input(void)
{
    char dir[4200], cmd[16384], out[8192], eval[4096], run[4096];
    CU_ASSERT_PTR_NOT_NULL_FATAL(converted("kjv-tiny-longgen", dir, sizeof dir));
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_tool(run, sizeof run, "lg-run");
    snprintf(cmd, sizeof cmd, "%s tokenize '%s' --text 'Hello world'", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "[1, 15043, 3186]\n");
    snprintf(cmd, sizeof cmd, "%s tokenize '%s' --decode '[1, 15043, 3186]'", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "Hello world\n");
    /* greedy generation is deterministic: the same text twice */
    char first[8192];
    snprintf(cmd, sizeof cmd, "%s '%s' -p 'And God said' -n 24 2>/dev/null", run, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, first, sizeof first), 0);
    CU_ASSERT(strncmp(first, "And God said", 12) == 0 && strlen(first) > 40);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, first);
    snprintf(cmd, sizeof cmd, "%s '%s' -p 'And God said' -n 24 --temp 0.8 --seed 3", run, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "tokens/s"));
    /* bad input: clear message, non-zero exit */
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference /nonexistent.safetensors", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent.safetensors: cannot open"));
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s/tiny-llama-fp16/reference.safetensors'", eval, dir,
             lg_fixtures_dir());
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "vocabulary"));
    snprintf(cmd, sizeof cmd, "%s '%s' -p hi --device tpu", run, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s ppl /nonexistent --text x", eval);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent"));
}

/* `lg-eval reference` writes this run in verify's reference format: verifying the same model against
 * it gives identical logits, nll and greedy ids; another plan of the same weights does not pass it;
 * the file is complete or absent; --tp is refused where it cannot run. */
static void test_reference_round_trip_and_tp_refusals(void)
{
    char dir[4200], cmd[16384], out[8192], eval[4096], ref[4400], plan[4400];
    CU_ASSERT_PTR_NOT_NULL_FATAL(converted("kjv-tiny-longgen", dir, sizeof dir));
    lg_tool(eval, sizeof eval, "lg-eval");
    snprintf(ref, sizeof ref, "%s/kjv-tiny-longgen.self.safetensors", lg_test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s reference '%s' -o '%s' --random 300 --greedy 8", eval, dir, ref);
    CU_ASSERT_EQUAL_FATAL(lg_run_capture(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --json", eval, dir, ref);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"rel_err\": 0,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"greedy_match\": true"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"rows\": 300"));
    /* every layer sink_window(16, 32): 300 positions leave the window, the logits differ */
    snprintf(plan, sizeof plan, "%s/all-sparse-plan.json", lg_test_tmpdir());
    FILE *f = fopen(plan, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("{\"full_layers\": [], \"sparse\": {\"kind\": \"sink_window\", \"sink\": 16, "
          "\"window\": 32}}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --plan '%s' --json", eval, dir, ref,
             plan);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"pass\": false"));
    /* the ids of another file; a missing one leaves no output behind */
    char ref2[4400], src_ref[4400];
    snprintf(ref2, sizeof ref2, "%s/kjv-tiny-longgen.ids.safetensors", lg_test_tmpdir());
    snprintf(src_ref, sizeof src_ref, "%s/kjv-tiny-longgen/reference.safetensors", lg_fixtures_dir());
    snprintf(cmd, sizeof cmd, "%s reference '%s' -o '%s' --ids-from '%s' --greedy 0", eval, dir, ref2,
             src_ref);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "%s reference '%s' -o '%s.x' --ids-from /nonexistent.st", eval, dir,
             ref2);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent.st"));
    snprintf(cmd, sizeof cmd, "%s.x", ref2);
    CU_ASSERT_FALSE(lg_path_exists(cmd));
    snprintf(cmd, sizeof cmd, "%s reference '%s' -o x.st", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
    /* --tp: on the CPU, zero GPUs, and a count that does not divide the 4 KV heads */
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --tp 2", eval, dir, ref);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--device cuda"));
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --tp 0", eval, dir, ref);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --tp 3 --device cuda", eval, dir, ref);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "does not divide the heads") || strstr(out, "no CUDA support"));
    snprintf(cmd, sizeof cmd, "%s passkey '%s' --lengths 256 --trials 1 --tp 2", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--device cuda"));
    snprintf(cmd, sizeof cmd, "%s needle '%s' --lengths 256 --tp 9", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 2);
}

/* A copy of reference file src at dst, every tensor as it was but `name`, whose bytes are data. */
static int copy_with(const char *src, const char *dst, const char *name, const void *data)
{
    lg_err err;
    lg_st_file *f = lg_st_open(src, &err);
    if (!f)
        return -1;
    lg_st_writer *w = lg_st_writer_create(dst, &err);
    int rc = w ? 0 : -1;
    for (int i = 0; rc == 0 && i < f->n_tensors; i++) {
        const lg_st_tensor *t = &f->tensors[i];
        rc = lg_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, &err);
    }
    if (rc == 0)
        rc = lg_st_writer_begin(w, &err);
    for (int i = 0; rc == 0 && i < f->n_tensors; i++) {
        const lg_st_tensor *t = &f->tensors[i];
        rc = lg_st_writer_write(w, strcmp(t->name, name) == 0 ? data : t->data, lg_st_nbytes(t),
                                &err);
    }
    rc = rc == 0 ? lg_st_writer_finish(w, &err) : (w ? (lg_st_writer_abort(w), -1) : -1);
    lg_st_close(f);
    return rc;
}

/* A copy of reference src whose row `row` has another token lead the argmax by gap times the row's
 * rms logit (the second best raised above the best), everything else as it was. */
static int write_with_flip(const char *src, const char *dst, int row, double gap)
{
    lg_err err;
    lg_st_file *f = lg_st_open(src, &err);
    const lg_st_tensor *t = f ? lg_st_find(f, "logits") : NULL;
    if (!t) {
        lg_st_close(f);
        return -1;
    }
    int vocab = (int)t->shape[1];
    float *logits = malloc(lg_st_nbytes(t));
    memcpy(logits, t->data, lg_st_nbytes(t));
    lg_st_close(f);
    float *x = logits + (size_t)row * vocab;
    int top = lg_argmax(x, vocab), second = top ? 0 : 1;
    double sum2 = 0;
    for (int v = 0; v < vocab; v++) {
        sum2 += (double)x[v] * x[v];
        if (v != top && x[v] > x[second])
            second = v;
    }
    x[second] = x[top] + (float)(gap * sqrt(sum2 / vocab));
    int rc = copy_with(src, dst, "logits", logits);
    free(logits);
    return rc;
}

/* kjv-tiny-longgen converted into dir, lg-eval's path in eval, and `lg-eval reference` of it with
 * args written to ref (kjv-tiny-longgen.<tag>.safetensors in the scratch directory): 0 when all
 * went. */
static int tiny_reference(char *dir, size_t n_dir, char *eval, size_t n_eval, char *ref,
                          size_t n_ref, const char *tag, const char *args)
{
    char cmd[16384], out[8192];
    if (!converted("kjv-tiny-longgen", dir, n_dir))
        return -1;
    lg_tool(eval, n_eval, "lg-eval");
    snprintf(ref, n_ref, "%s/kjv-tiny-longgen.%s.safetensors", lg_test_tmpdir(), tag);
    snprintf(cmd, sizeof cmd, "%s reference '%s' -o '%s' %s", eval, dir, ref, args);
    return lg_run_capture(cmd, out, sizeof out);
}

/* verify forgives an argmax that differs only at a near-tie: with --max-rel-err E, a row whose
 * reference puts another token ahead by 0.01 of its rms logit passes (limit 4 E = 0.04), one ahead
 * by 0.5 fails; the rows and the gap are reported. */
static void test_verify_forgives_argmax_flips_at_near_ties_only(void)
{
    char dir[4200], cmd[16384], out[8192], eval[4096], ref[4400], flip[4400];
    CU_ASSERT_EQUAL_FATAL(tiny_reference(dir, sizeof dir, eval, sizeof eval, ref, sizeof ref,
                                         "ties", "--random 64 --greedy 0"), 0);
    const double gaps[2] = {0.01, 0.5};
    for (int i = 0; i < 2; i++) {
        snprintf(flip, sizeof flip, "%s/kjv-tiny-longgen.flip%d.safetensors", lg_test_tmpdir(), i);
        CU_ASSERT_EQUAL_FATAL(write_with_flip(ref, flip, 5, gaps[i]), 0);
        snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --max-rel-err 0.01 --json", eval,
                 dir, flip);
        int rc = lg_run_capture(cmd, out, sizeof out);
        const char *g = strstr(out, "\"argmax_gap\": ");
        double gap = g ? atof(g + strlen("\"argmax_gap\": ")) : -1;
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"argmax_agree\": 0.984375")); /* 63 of 64 rows */
        CU_ASSERT(fabs(gap - gaps[i]) <= 0.1 * gaps[i]); /* the rms moved with the raised logit */
        CU_ASSERT_EQUAL(rc, i == 0 ? 0 : 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, i == 0 ? "\"pass\": true" : "\"pass\": false"));
    }
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --max-rel-err 0.01", eval, dir, flip);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "NOT near-ties"));
}

/* A copy of reference src with greedy_ids[k] = id, every other tensor as it was. */
static int write_with_greedy_id(const char *src, const char *dst, int k, int id)
{
    lg_err err;
    lg_st_file *f = lg_st_open(src, &err);
    const lg_st_tensor *g = f ? lg_st_find(f, "greedy_ids") : NULL;
    if (!g || k >= g->shape[0]) {
        lg_st_close(f);
        return -1;
    }
    int32_t *ids = malloc(lg_st_nbytes(g));
    memcpy(ids, g->data, lg_st_nbytes(g));
    lg_st_close(f);
    ids[k] = id;
    int rc = copy_with(src, dst, "greedy_ids", ids);
    free(ids);
    return rc;
}

/* verify's greedy continuation may leave the reference's only at a near-tie of our own logits there:
 * a reference whose greedy token 3 is our second best at that step passes when 4 E covers our gap
 * between the two (E = 1.25 gap / 4) and fails when it does not (0.8 gap / 4), with the gap
 * reported; a token far behind fails as NOT a near-tie. The logits match exactly (same engine), so
 * the greedy check alone decides. */
static void test_verify_forgives_greedy_split_at_near_tie_only(void)
{
    char dir[4200], cmd[16384], out[8192], eval[4096], ref[4400], alt[4400];
    CU_ASSERT_EQUAL_FATAL(tiny_reference(dir, sizeof dir, eval, sizeof eval, ref, sizeof ref,
                                         "greedy", "--random 40 --greedy 8"), 0);
    /* our logits after the 40 ids and the first 3 greedy ones: best (the reference's token) and
     * second best, and their gap over the row's rms logit */
    lg_err err;
    lg_st_file *f = lg_st_open(ref, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const lg_st_tensor *in = lg_st_find(f, "input_ids"), *g = lg_st_find(f, "greedy_ids");
    CU_ASSERT_FATAL(in && g && in->shape[0] == 40 && g->shape[0] == 8);
    int seq[43];
    for (int i = 0; i < 43; i++) {
        int32_t v;
        memcpy(&v, i < 40 ? (const char *)in->data + 4 * i : (const char *)g->data + 4 * (i - 40), 4);
        seq[i] = v;
    }
    int32_t want3;
    memcpy(&want3, (const char *)g->data + 12, 4);
    lg_st_close(f);
    lg_model *m = lg_model_load(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_engine *s = lg_engine_new(m, "cpu", NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int vocab = m->vocab_size;
    float *row = malloc(sizeof(float) * (size_t)vocab);
    CU_ASSERT_EQUAL_FATAL(lg_engine_tokens(s, seq, 43, 0, LG_LOGITS_LAST, row, &err), 0);
    int top = lg_argmax(row, vocab), second = top ? 0 : 1, last = top ? 0 : 1;
    double sum2 = 0;
    for (int v = 0; v < vocab; v++) {
        sum2 += (double)row[v] * row[v];
        if (v != top && row[v] > row[second])
            second = v;
        if (row[v] < row[last])
            last = v;
    }
    double rms = sqrt(sum2 / vocab), gap = (row[top] - row[second]) / rms;
    CU_ASSERT_EQUAL(top, want3);
    CU_ASSERT(gap > 0);
    free(row);
    lg_engine_free(s);
    lg_model_free(m);

    snprintf(alt, sizeof alt, "%s/kjv-tiny-longgen.greedy2.safetensors", lg_test_tmpdir());
    CU_ASSERT_EQUAL_FATAL(write_with_greedy_id(ref, alt, 3, second), 0);
    const double scale[2] = {1.25, 0.8};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --max-rel-err %.9g --json", eval,
                 dir, alt, scale[i] * gap / 4);
        int rc = lg_run_capture(cmd, out, sizeof out);
        const char *p = strstr(out, "\"greedy_gap\": ");
        double got = p ? atof(p + strlen("\"greedy_gap\": ")) : -1;
        CU_ASSERT(fabs(got - gap) <= 1e-4 * gap);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"greedy_match\": false"));
        CU_ASSERT_EQUAL(rc, i == 0 ? 0 : 1);
    }
    CU_ASSERT_EQUAL_FATAL(write_with_greedy_id(ref, alt, 3, last), 0);
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s'", eval, dir, alt);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "first difference at generated token 3"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "NOT a near-tie"));
}

/* Runs cmd and checks its exit status and, when says is given, that its output says so. */
static void expect_exit(const char *cmd, int rc, const char *says)
{
    char out[8192];
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), rc);
    if (says)
        CU_ASSERT_PTR_NOT_NULL(strstr(out, says));
}

/* --dtype picks the GPU engine's type; the CPU engine, the oracle, takes float32 only and refuses the
 * others with the reason; a type we do not have is a usage error in every tool. verify's default
 * bound follows the activations' rounding (lg_verify_default_bound). */
static void test_dtype_option_and_verify_bound(void)
{
    CU_ASSERT_DOUBLE_EQUAL(lg_verify_default_bound("f32"), 1e-4, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lg_verify_default_bound("f16"), 2e-3, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lg_verify_default_bound("bf16"), 1.6e-2, 1e-12);
    char dir[4200], cmd[16384], eval[4096], run[4096], ref[4400];
    CU_ASSERT_PTR_NOT_NULL_FATAL(converted("kjv-tiny-longgen", dir, sizeof dir));
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_tool(run, sizeof run, "lg-run");
    snprintf(ref, sizeof ref, "%s/kjv-tiny-longgen/reference.safetensors", lg_fixtures_dir());
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --dtype f32", eval, dir, ref);
    expect_exit(cmd, 0, "(limit 0.0001)");
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --dtype bf16", eval, dir, ref);
    expect_exit(cmd, 1, "float32 only");
    snprintf(cmd, sizeof cmd, "%s verify '%s' --reference '%s' --dtype f8", eval, dir, ref);
    expect_exit(cmd, 2, "expected f16, bf16 or f32");
    snprintf(cmd, sizeof cmd, "%s passkey '%s' --lengths 256 --trials 1 --dtype f16", eval, dir);
    expect_exit(cmd, 1, "float32 only");
    snprintf(cmd, sizeof cmd, "%s ppl '%s' --by-position --text x --dtype half", eval, dir);
    expect_exit(cmd, 2, NULL);
    snprintf(cmd, sizeof cmd, "%s quant-report '%s' '%s' --text x --dtype q8", eval, dir, dir);
    expect_exit(cmd, 2, "--dtype 'q8'");
    snprintf(cmd, sizeof cmd, "%s '%s' -p hi -n 2 --dtype bf16", run, dir);
    expect_exit(cmd, 1, "float32 only");
    snprintf(cmd, sizeof cmd, "%s '%s' -p hi -n 2 --dtype fp16", run, dir);
    expect_exit(cmd, 2, NULL);
}

int lg_register_eval_tests(void)
{
    CU_pSuite s = CU_add_suite("eval", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_verify_passes_on_every_fixture", test_verify_passes_on_every_fixture);
    CU_add_test(s, "test_heldout_perplexity_matches_the_references", test_heldout_perplexity_matches_the_references);
    CU_add_test(s, "test_tools_run_and_refuse_bad_input", test_tools_run_and_refuse_bad_input);
    CU_add_test(s, "test_reference_round_trip_and_tp_refusals",
                test_reference_round_trip_and_tp_refusals);
    CU_add_test(s, "test_verify_forgives_argmax_flips_at_near_ties_only",
                test_verify_forgives_argmax_flips_at_near_ties_only);
    CU_add_test(s, "test_verify_forgives_greedy_split_at_near_tie_only",
                test_verify_forgives_greedy_split_at_near_tie_only);
    CU_add_test(s, "test_dtype_option_and_verify_bound", test_dtype_option_and_verify_bound);
    return 0;
}
