/* safetensors reader and writer: fixtures written by Hugging Face open, our files open, and the
 * writer produces what the reference library expects (8-byte aligned header, space padding). */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "sha256.h"
#include "test_env.h"

static void test_fixture_shards_open_through_the_index(void)
{
    char dir[4096];
    lg_err err;
    lg_checkpoint *c = lg_ckpt_open(lg_fixture(dir, sizeof dir, "tiny-llama-fp16"), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->n_files, 10);
    CU_ASSERT_EQUAL(c->n_tensors, 2 + 9 * 6 + 1);
    const lg_st_tensor *t = lg_ckpt_find(c, "model.embed_tokens.weight");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->dtype, LG_DT_F16);
    CU_ASSERT_EQUAL(t->shape[0], 1024);
    CU_ASSERT_EQUAL(t->shape[1], 128);
    CU_ASSERT_PTR_NULL(lg_ckpt_find(c, "model.embed_tokens"));
    lg_ckpt_close(c);
}

static void test_reference_metadata_is_read(void)
{
    char path[4096];
    lg_err err;
    lg_st_file *f = lg_st_open(lg_fixture(path, sizeof path, "kjv-pg-llama/reference.safetensors"), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_STRING_EQUAL(lg_st_meta(f, "heldout_ppl_ctx1024"), "257.2258");
    const lg_st_tensor *nll = lg_st_find(f, "nll");
    CU_ASSERT_PTR_NOT_NULL_FATAL(nll);
    CU_ASSERT_EQUAL(nll->dtype, LG_DT_F32);
    CU_ASSERT_EQUAL(nll->shape[0], 1023);
    lg_st_close(f);
}

static void test_written_file_reads_back_exactly(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/w.safetensors", lg_test_tmpdir());
    lg_err err;
    lg_st_writer *w = lg_st_writer_create(path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    int64_t s1[2] = {3, 5}, s2[1] = {7}, s0[1] = {0};
    uint16_t a[15];
    float b[7];
    for (int i = 0; i < 15; i++)
        a[i] = (uint16_t)(0x3c00 + 37 * i);
    for (int i = 0; i < 7; i++)
        b[i] = 0.25f * (float)i - 1.0f;
    CU_ASSERT_EQUAL(lg_st_writer_meta(w, "format", "pt", &err), 0);
    CU_ASSERT_EQUAL(lg_st_writer_add(w, "a", LG_DT_F16, 2, s1, &err), 0);
    CU_ASSERT_EQUAL(lg_st_writer_add(w, "empty", LG_DT_F32, 1, s0, &err), 0);
    CU_ASSERT_EQUAL(lg_st_writer_add(w, "b", LG_DT_F32, 1, s2, &err), 0);
    CU_ASSERT_EQUAL(lg_st_writer_add(w, "a", LG_DT_F32, 1, s2, &err), -1); /* duplicate */
    CU_ASSERT_EQUAL(lg_st_writer_begin(w, &err), 0);
    /* data may arrive in pieces that straddle tensors */
    CU_ASSERT_EQUAL(lg_st_writer_write(w, a, 10, &err), 0);
    CU_ASSERT_EQUAL(lg_st_writer_write(w, (char *)a + 10, 20, &err), 0);
    CU_ASSERT_EQUAL(lg_st_writer_write(w, b, sizeof b, &err), 0);
    CU_ASSERT_FALSE(lg_path_exists(path)); /* only the .partial exists until finish */
    CU_ASSERT_EQUAL(lg_st_writer_finish(w, &err), 0);
    CU_ASSERT_TRUE(lg_path_exists(path));

    size_t n;
    unsigned char *raw = (unsigned char *)lg_read_file(path, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | raw[i];
    CU_ASSERT_EQUAL(hlen % 8, 0);
    CU_ASSERT_EQUAL(raw[8], '{');
    CU_ASSERT_EQUAL(n, 8 + hlen + sizeof a + sizeof b);
    free(raw);

    lg_st_file *f = lg_st_open(path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(f->n_tensors, 3);
    CU_ASSERT_STRING_EQUAL(f->tensors[0].name, "a"); /* declaration order is kept */
    CU_ASSERT_EQUAL(memcmp(lg_st_find(f, "a")->data, a, sizeof a), 0);
    CU_ASSERT_EQUAL(memcmp(lg_st_find(f, "b")->data, b, sizeof b), 0);
    CU_ASSERT_EQUAL(lg_st_nbytes(lg_st_find(f, "empty")), 0);
    CU_ASSERT_STRING_EQUAL(lg_st_meta(f, "format"), "pt");
    lg_st_close(f);
}

static void test_short_write_is_refused_and_leaves_nothing(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/short.safetensors", lg_test_tmpdir());
    lg_err err;
    lg_st_writer *w = lg_st_writer_create(path, &err);
    int64_t s[1] = {4};
    float x[3] = {1, 2, 3};
    lg_st_writer_add(w, "x", LG_DT_F32, 1, s, &err);
    lg_st_writer_begin(w, &err);
    lg_st_writer_write(w, x, sizeof x, &err);
    CU_ASSERT_EQUAL(lg_st_writer_finish(w, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "got 12 of its 16 bytes"));
    CU_ASSERT_FALSE(lg_path_exists(path));
    char partial[4300];
    snprintf(partial, sizeof partial, "%s.partial", path);
    CU_ASSERT_FALSE(lg_path_exists(partial));
}

/* The SHA-instruction path and the portable one agree on random data of every length around the
 * block size and on a large buffer fed in uneven pieces. */
static void test_sha256_cpu_instructions_match_portable_code(void)
{
    size_t n = (1 << 20) + 77;
    unsigned char *buf = malloc(n);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    size_t lens[] = {0, 1, 55, 56, 63, 64, 65, 119, 128, 1000, 4096 + 3, n};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        char fast[65], slow[65];
        lg_sha256_buffer_hex(buf, lens[k], fast);
        lg_sha256_force_portable(1);
        lg_sha256_buffer_hex(buf, lens[k], slow);
        lg_sha256_force_portable(0);
        CU_ASSERT_STRING_EQUAL(fast, slow);
    }
    free(buf);
}

static void test_sha256_known_answers(void)
{
    /* FIPS 180-4 examples */
    struct {
        const char *msg, *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < 3; i++) {
        lg_sha256 s;
        unsigned char d[32];
        char hex[65];
        lg_sha256_init(&s);
        /* feed byte by byte to cross block boundaries */
        for (const char *p = cases[i].msg; *p; p++)
            lg_sha256_update(&s, p, 1);
        lg_sha256_final(&s, d);
        lg_sha256_hex(d, hex);
        CU_ASSERT_STRING_EQUAL(hex, cases[i].hex);
    }
    /* the tokenizer's PROVENANCE.md gives its sha256 */
    char path[4096], hex[65];
    lg_err err;
    CU_ASSERT_EQUAL(lg_sha256_file(lg_fixture(path, sizeof path, "llama2-tokenizer/tokenizer.model"), hex, &err), 0);
    CU_ASSERT_STRING_EQUAL(hex, "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347");
}

int lg_register_safetensors_tests(void)
{
    CU_pSuite s = CU_add_suite("safetensors", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_fixture_shards_open_through_the_index", test_fixture_shards_open_through_the_index);
    CU_add_test(s, "test_reference_metadata_is_read", test_reference_metadata_is_read);
    CU_add_test(s, "test_written_file_reads_back_exactly", test_written_file_reads_back_exactly);
    CU_add_test(s, "test_short_write_is_refused_and_leaves_nothing", test_short_write_is_refused_and_leaves_nothing);
    CU_add_test(s, "test_sha256_known_answers", test_sha256_known_answers);
    CU_add_test(s, "test_sha256_cpu_instructions_match_portable_code", test_sha256_cpu_instructions_match_portable_code);
    return 0;
}
