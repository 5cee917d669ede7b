/* Inputs the fuzz harnesses (tests/fuzz/, scripts/fuzz.sh) found to crash or misbehave, each a test
 * named after what went wrong, fed through the same entry points; plus the committed seed corpus,
 * so that the sanitizer build of CI runs every seed once even where clang is missing. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "hf_config.h"
#include "longgen.h"
#include "package_manifest.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "test_env.h"

/* ---------------------------------------------------------------- the entry points */

/* Each returns 1 when the input was accepted, 0 when refused with a message naming the input. */

static int feed_safetensors(const char *data, size_t n)
{
    lg_err err = {{0}};
    lg_st_file *f = lg_st_open_memory(data, n, "fuzz.safetensors", &err);
    if (!f) {
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "fuzz.safetensors: "));
        return 0;
    }
    lg_st_close(f);
    return 1;
}

static int feed_config(const char *data, size_t n)
{
    lg_err err = {{0}};
    lg_hf_config *c = lg_hf_config_parse(data, n, "config.json", &err);
    if (!c) {
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "config.json: "));
        return 0;
    }
    lg_hf_config_free(c);
    return 1;
}

static int feed_plan(const char *data, size_t n)
{
    lg_err err = {{0}};
    lg_layer_attn layers[80];
    if (lg_plan_parse(data, n, "longgen_plan.json", 80, layers, &err) != 0) {
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "longgen_plan.json: "));
        return 0;
    }
    return 1;
}

static int feed_package_manifest(const char *data, size_t n)
{
    lg_err err = {{0}};
    lg_pkg_manifest m;
    if (lg_pkg_manifest_parse(data, n, "MANIFEST.json", &m, &err) != 0) {
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "MANIFEST.json"));
        return 0;
    }
    lg_pkg_manifest_free(&m);
    return 1;
}

static int feed_tokenizer(const char *data, size_t n, int is_json)
{
    lg_err err = {{0}};
    const char *label = is_json ? "tokenizer.json" : "tokenizer.model";
    lg_tokenizer *t = lg_tokenizer_load_memory(data, n, is_json, label, &err);
    if (!t) {
        CU_ASSERT_EQUAL(strncmp(err.msg, label, strlen(label)), 0);
        return 0;
    }
    int *ids = NULL, n_ids = 0;
    static const char text[] = " Hello  world\n";
    CU_ASSERT_EQUAL(lg_tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n_ids, &err), 0);
    free(lg_tokenizer_decode(t, ids, n_ids, &err));
    free(ids);
    lg_tokenizer_free(t);
    return 1;
}

static int feed_tokenizer_model(const char *data, size_t n)
{
    return feed_tokenizer(data, n, 0);
}

static int feed_tokenizer_json(const char *data, size_t n)
{
    return feed_tokenizer(data, n, 1);
}

/* ---------------------------------------------------------------- the seed corpus */

/* Feeds every file of tests/fuzz/seeds/NAME; each seed is a valid input. */
static void feed_seed_dir(const char *name, int (*feed)(const char *, size_t))
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/seeds/%s", LG_SOURCE_DIR, name);
    DIR *d = opendir(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4400];
        size_t n = 0;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *data = lg_read_file(path, &n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        int ok = feed(data, n);
        CU_ASSERT(ok);
        if (!ok)
            fprintf(stderr, "\n    seed %s refused\n", path);
        free(data);
        n_files++;
    }
    closedir(d);
    CU_ASSERT(n_files > 0);
}

static void test_seed_corpus_is_accepted(void)
{
    feed_seed_dir("safetensors", feed_safetensors);
    feed_seed_dir("config", feed_config);
    feed_seed_dir("plan", feed_plan);
    feed_seed_dir("package_manifest", feed_package_manifest);
    feed_seed_dir("tokenizer_model", feed_tokenizer_model);
    feed_seed_dir("tokenizer_json", feed_tokenizer_json);
}

/* The index harness's entry point: an index given in memory opens the shards of a real directory,
 * and its refusals name the index. */
static void test_index_text_opens_the_fixture_shards(void)
{
    char dir[4096], path[4400];
    lg_fixture(dir, sizeof dir, "tiny-llama-fp16");
    snprintf(path, sizeof path, "%s/%s", dir, LG_CKPT_INDEX);
    size_t n = 0;
    char *text = lg_read_file(path, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    lg_err err = {{0}};
    lg_checkpoint *c = lg_ckpt_open_index_text(dir, text, n, &err);
    CU_ASSERT_PTR_NOT_NULL(c);
    if (c)
        CU_ASSERT_EQUAL(c->n_tensors, 2 + 9 * 6 + 1);
    lg_ckpt_close(c);
    static const char outside[] = "{\"weight_map\": {\"w\": \"../model-00001-of-00010.safetensors\"}}";
    CU_ASSERT_PTR_NULL(lg_ckpt_open_index_text(dir, outside, sizeof outside - 1, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, LG_CKPT_INDEX ": weight_map entry 'w' points outside the directory"));
    CU_ASSERT_PTR_NULL(lg_ckpt_open_index_text(dir, text, n / 2, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, LG_CKPT_INDEX ": not valid JSON"));
    free(text);
}

/* ---------------------------------------------------------------- findings
 * None of the harnesses has found a crash yet (docs/RELIABILITY.md). Each one they find gets a test
 * here, named after what went wrong, with the input inline. */

int lg_register_fuzz_regressions_tests(void)
{
    CU_pSuite s = CU_add_suite("fuzz_regressions", NULL, NULL);
    if (!s)
        return -1;
    if (!CU_add_test(s, "test_seed_corpus_is_accepted", test_seed_corpus_is_accepted) ||
        !CU_add_test(s, "test_index_text_opens_the_fixture_shards", test_index_text_opens_the_fixture_shards))
        return -1;
    return 0;
}
