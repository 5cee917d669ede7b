/* The Llama-2 tokenizer against sentencepiece: the reference ids in
 * ../shared/fixtures/llama2-tokenizer/tokenize-reference.json (sentencepiece 0.2.2), the held-out
 * essays' token count, small models written here to reach the rarer paths, and malformed files. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "test_env.h"
#include "tokenizer.h"

/* Loaded once for the suite: the same vocabulary read from both files. */
static lg_tokenizer *tok_model, *tok_json;

static int suite_init(void)
{
    char path[4096];
    lg_err err = {{0}};
    tok_model = lg_tokenizer_load(lg_fixture(path, sizeof path, "llama2-tokenizer/tokenizer.model"), &err);
    if (!tok_model)
        fprintf(stderr, "%s\n", err.msg);
    tok_json = lg_tokenizer_load(lg_fixture(path, sizeof path, "llama2-tokenizer/tokenizer.json"), &err);
    if (!tok_json)
        fprintf(stderr, "%s\n", err.msg);
    return tok_model && tok_json ? 0 : -1;
}

static int suite_cleanup(void)
{
    lg_tokenizer_free(tok_model);
    lg_tokenizer_free(tok_json);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

/* Encodes and returns the ids (malloc'd); fails the test on error. */
static int *encode(const lg_tokenizer *t, const char *text, size_t len, int add_bos, int *n)
{
    lg_err err = {{0}};
    int *ids = NULL;
    int rc = lg_tokenizer_encode(t, text, len, add_bos, &ids, n, &err);
    if (rc != 0)
        fprintf(stderr, "encode failed: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return ids;
}

static int ids_equal(const int *a, int na, const int *b, int nb)
{
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char *label, const int *ids, int n)
{
    fprintf(stderr, "%s:", label);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static void assert_encodes(const lg_tokenizer *t, const char *text, size_t len, int add_bos, const int *want,
                           int n_want)
{
    int n = 0;
    int *ids = encode(t, text, len, add_bos, &n);
    if (!ids_equal(ids, n, want, n_want)) {
        fprintf(stderr, "\n%s: text '%.*s'\n", lg_tokenizer_source(t), (int)len, text);
        print_ids("  want", want, n_want);
        print_ids("  got ", ids, n);
    }
    CU_ASSERT(ids_equal(ids, n, want, n_want));
    free(ids);
}

static void assert_decodes(const lg_tokenizer *t, const int *ids, int n, const char *want)
{
    lg_err err = {{0}};
    char *text = lg_tokenizer_decode(t, ids, n, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    if (strcmp(text, want) != 0)
        fprintf(stderr, "\ndecode: want '%s' got '%s'\n", want, text);
    CU_ASSERT_STRING_EQUAL(text, want);
    free(text);
}

/* The reference cases, parsed; free with cJSON_Delete. */
static cJSON *load_reference(void)
{
    char path[4096];
    char *text = lg_read_file(lg_fixture(path, sizeof path, "llama2-tokenizer/tokenize-reference.json"), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    cJSON *root = cJSON_Parse(text);
    free(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_FATAL(cJSON_GetArraySize(cJSON_GetObjectItem(root, "cases")) == 20);
    return root;
}

/* A JSON array of numbers as a malloc'd int array. */
static int *json_ints(const cJSON *arr, int *n)
{
    *n = cJSON_GetArraySize(arr);
    int *v = malloc(((size_t)*n + 1) * sizeof *v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    for (int i = 0; i < *n; i++)
        v[i] = cJSON_GetArrayItem(arr, i)->valueint;
    return v;
}

static void check_reference_cases(const lg_tokenizer *t)
{
    cJSON *root = load_reference();
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases"))
    {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int n_want;
        /* sentencepiece_ids, not ids: transformers' converted tokenizer differs on six cases */
        int *want = json_ints(cJSON_GetObjectItem(c, "sentencepiece_ids"), &n_want);
        assert_encodes(t, text, strlen(text), 1, want, n_want);
        free(want);
    }
    cJSON_Delete(root);
}

static void check_round_trips(const lg_tokenizer *t, const char *text, size_t len)
{
    int n = 0;
    int *ids = encode(t, text, len, 1, &n);
    lg_err err = {{0}};
    char *back = lg_tokenizer_decode(t, ids, n, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT(strlen(back) == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);
}

/* ---------------------------------------------------------------- Llama-2: reference cases */

static void test_model_file_encodes_like_sentencepiece(void)
{
    check_reference_cases(tok_model);
}

static void test_json_file_encodes_like_sentencepiece(void)
{
    check_reference_cases(tok_json);
}

static void test_decode_inverts_encode_on_reference_cases(void)
{
    cJSON *root = load_reference();
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases"))
    {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        check_round_trips(tok_model, text, strlen(text));
        check_round_trips(tok_json, text, strlen(text));
    }
    cJSON_Delete(root);
}

static void test_special_ids_and_pieces(void)
{
    const lg_tokenizer *both[] = {tok_model, tok_json};
    for (int i = 0; i < 2; i++) {
        const lg_tokenizer *t = both[i];
        CU_ASSERT_EQUAL(lg_tokenizer_vocab_size(t), 32000);
        CU_ASSERT_EQUAL(lg_tokenizer_bos_id(t), 1);
        CU_ASSERT_EQUAL(lg_tokenizer_eos_id(t), 2);
        CU_ASSERT_EQUAL(lg_tokenizer_unk_id(t), 0);
        CU_ASSERT_STRING_EQUAL(lg_tokenizer_piece(t, 1), "<s>");
        CU_ASSERT_STRING_EQUAL(lg_tokenizer_piece(t, 13), "<0x0A>");
        CU_ASSERT_STRING_EQUAL(lg_tokenizer_piece(t, 15043), "\xE2\x96\x81Hello");
        CU_ASSERT_PTR_NULL(lg_tokenizer_piece(t, -1));
        CU_ASSERT_PTR_NULL(lg_tokenizer_piece(t, 32000));
    }
}

static void test_literal_bos_text_is_not_the_bos_id(void)
{
    /* sentencepiece keeps CONTROL pieces out of merges: "<s>" is '▁<', 's', '>' (tokenize-reference) */
    static const int want[] = {529, 29879, 29958};
    assert_encodes(tok_model, "<s>", 3, 0, want, 3);
    assert_encodes(tok_json, "<s>", 3, 0, want, 3);
}

static void test_encode_reads_len_bytes_not_to_nul(void)
{
    static const int hello_world[] = {15043, 3186};
    assert_encodes(tok_model, "Hello worldXYZ", 11, 0, hello_world, 2);
    /* an embedded NUL is a character like any other: '▁', <0x00> (sentencepiece 0.1.97) */
    static const int nul[] = {29871, 3};
    assert_encodes(tok_model, "\0", 1, 0, nul, 2);
    int n = -1;
    int *ids = encode(tok_model, "", 0, 0, &n);
    CU_ASSERT_EQUAL(n, 0);
    free(ids);
}

static void test_invalid_utf8_becomes_replacement_character(void)
{
    /* each malformed byte is normalized to U+FFFD (30140), as sentencepiece 0.1.97 encodes b"a\xffb" */
    static const int want[] = {263, 30140, 29890};
    assert_encodes(tok_model, "a\xff" "b", 3, 0, want, 3);
}

static void test_decode_follows_sentencepiece(void)
{
    /* expected strings printed by sentencepiece 0.1.97's DecodeIds for the same ids */
    static const int bos_hello_eos[] = {1, 15043, 2};
    assert_decodes(tok_model, bos_hello_eos, 3, "Hello");
    static const int unk[] = {0};
    assert_decodes(tok_model, unk, 1, " \xE2\x81\x87 ");
    static const int lone_byte[] = {243}; /* <0xF0> alone is not UTF-8 */
    assert_decodes(tok_model, lone_byte, 1, "\xEF\xBF\xBD");
    static const int byte_then_word[] = {243, 15043}; /* text is no longer empty: the space stays */
    assert_decodes(tok_model, byte_then_word, 2, "\xEF\xBF\xBD Hello");
    static const int word_then_bytes[] = {15043, 243, 162};
    assert_decodes(tok_model, word_then_bytes, 3, "Hello\xEF\xBF\xBD\xEF\xBF\xBD");
    static const int spaces[] = {1, 29871, 29871, 15043}; /* only the first '▁' is dropped */
    assert_decodes(tok_model, spaces, 4, "  Hello");
    static const int emoji[] = {243, 162, 167, 154}; /* U+1F917 from four byte pieces */
    assert_decodes(tok_json, emoji, 4, "\xF0\x9F\xA4\x97");
    assert_decodes(tok_model, NULL, 0, "");
    /* <0x00> decodes to a NUL byte, which only the length shows */
    static const int nul[] = {29871, 3};
    size_t len = 99;
    lg_err err = {{0}};
    char *text = lg_tokenizer_decode_len(tok_model, nul, 2, &len, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT(len == 1 && text[0] == 0);
    free(text);
}

static void test_decode_rejects_ids_out_of_range(void)
{
    lg_err err = {{0}};
    static const int ids[] = {15043, 32000};
    CU_ASSERT_PTR_NULL(lg_tokenizer_decode(tok_model, ids, 2, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "id 32000 at position 1"));
    static const int negative[] = {-5};
    CU_ASSERT_PTR_NULL(lg_tokenizer_decode(tok_model, negative, 1, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "id -5"));
    CU_ASSERT_PTR_NULL(lg_tokenizer_decode(tok_model, ids, -1, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "negative id count"));
}

/* ---------------------------------------------------------------- Llama-2: bulk text */

/* Each held-out essay tokenized with BOS, in this order: 59,505 tokens by sentencepiece (the
 * protocol of kjv-pg-llama's held-out perplexity). */
static void test_heldout_essays_give_sentencepiece_token_count(void)
{
    static const char *essays[] = {"worked", "popular", "gap", "philosophy", "before", "love"};
    long total_model = 0, total_json = 0;
    for (int e = 0; e < 6; e++) {
        char rel[256], path[4096];
        snprintf(rel, sizeof rel, "text/pg-essays/%s.txt", essays[e]);
        size_t len = 0;
        char *text = lg_read_file(lg_fixture(path, sizeof path, rel), &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(text);
        int n1 = 0, n2 = 0;
        int *a = encode(tok_model, text, len, 1, &n1);
        int *b = encode(tok_json, text, len, 1, &n2);
        CU_ASSERT(ids_equal(a, n1, b, n2));
        total_model += n1;
        total_json += n2;
        check_round_trips(tok_model, text, len);
        free(a);
        free(b);
        free(text);
    }
    CU_ASSERT_EQUAL(total_model, 59505);
    CU_ASSERT_EQUAL(total_json, 59505);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* The whole King James Bible (4.3 MB) as one string. Count, checksum and the ends of the ids are
 * sentencepiece 0.1.97's (Debian's python3-sentencepiece) for the same text. */
static void test_kjv_encodes_like_sentencepiece_and_fast(void)
{
    char path[4096];
    size_t len = 0;
    char *text = lg_read_file(lg_fixture(path, sizeof path, "text/kjv.txt"), &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int n = 0;
    int *ids = encode(tok_model, text, len, 0, &n);
    double secs = seconds_since(&t0);
    printf("\n    kjv.txt: %zu bytes -> %d ids in %.2f s ", len, n, secs);
    CU_ASSERT_EQUAL(n, 1194699);
    long long sum = 0;
    for (int i = 0; i < n; i++)
        sum += ids[i];
    CU_ASSERT_EQUAL(sum, 9490342060LL);
    static const int head[] = {29871, 13, 15462, 6656, 29871, 29896, 13, 13, 259, 29896};
    static const int tail[] = {29889, 319, 1527, 29889, 13};
    CU_ASSERT(n >= 10 && memcmp(ids, head, sizeof head) == 0 && memcmp(ids + n - 5, tail, sizeof tail) == 0);
    /* O(n log n) takes about a second here; a quadratic merge loop would take hours. The bound leaves
     * room for sanitizer builds and a slow machine. */
    CU_ASSERT(secs < 30.0);
    lg_err err = {{0}};
    char *back = lg_tokenizer_decode(tok_model, ids, n, &err);
    CU_ASSERT(back && strlen(back) == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);
    free(text);
}

/* ---------------------------------------------------------------- loading from a directory */

static void copy_fixture(const char *rel, const char *dst)
{
    char path[4096];
    size_t n = 0;
    char *data = lg_read_file(lg_fixture(path, sizeof path, rel), &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    CU_ASSERT_EQUAL_FATAL(lg_write_file(dst, data, n), 0);
    free(data);
}

static void test_directory_prefers_tokenizer_model(void)
{
    char path[4096];
    lg_err err = {{0}};
    lg_tokenizer *t = lg_tokenizer_load(lg_fixture(path, sizeof path, "llama2-tokenizer"), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    const char *src = lg_tokenizer_source(t);
    CU_ASSERT(strlen(src) > 16 && strcmp(src + strlen(src) - 16, "/tokenizer.model") == 0);
    lg_tokenizer_free(t);
}

static void test_directory_with_only_json_uses_it(void)
{
    const char *dir = lg_test_tmpdir();
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    copy_fixture("llama2-tokenizer/tokenizer.json", dst);
    lg_err err = {{0}};
    lg_tokenizer *t = lg_tokenizer_load(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_STRING_EQUAL(lg_tokenizer_source(t), dst);
    static const int want[] = {1, 15043, 29871, 3186}; /* "Hello  world", where transformers differs */
    assert_encodes(t, "Hello  world", 12, 1, want, 4);
    lg_tokenizer_free(t);
}

/* ---------------------------------------------------------------- small models written here */

/* A protobuf writer, just enough to write ModelProto messages. */
typedef struct pbw {
    uint8_t *p;
    size_t n, cap;
} pbw;

static void pbw_raw(pbw *w, const void *d, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->p = realloc(w->p, w->cap);
        CU_ASSERT_PTR_NOT_NULL_FATAL(w->p);
    }
    if (n)
        memcpy(w->p + w->n, d, n);
    w->n += n;
}

static void pbw_varint(pbw *w, uint64_t v)
{
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            b |= 0x80;
        pbw_raw(w, &b, 1);
    } while (v);
}

static void pbw_key(pbw *w, unsigned field, int wire)
{
    pbw_varint(w, (uint64_t)field << 3 | (uint64_t)wire);
}

static void pbw_uint(pbw *w, unsigned field, int64_t v)
{
    pbw_key(w, field, 0);
    pbw_varint(w, (uint64_t)v); /* negative int32s are sign-extended to 10 bytes, as protobuf does */
}

static void pbw_bytes(pbw *w, unsigned field, const void *d, size_t n)
{
    pbw_key(w, field, 2);
    pbw_varint(w, n);
    pbw_raw(w, d, n);
}

/* Appends sub as field `field` and frees it. */
static void pbw_message(pbw *w, unsigned field, pbw *sub)
{
    pbw_bytes(w, field, sub->p, sub->n);
    free(sub->p);
    memset(sub, 0, sizeof *sub);
}

typedef struct piece_spec {
    const char *piece;
    float score;
    int type; /* 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE */
} piece_spec;

static void pbw_piece(pbw *w, const piece_spec *p)
{
    pbw sub = {0};
    pbw_bytes(&sub, 1, p->piece, strlen(p->piece));
    uint32_t bits;
    memcpy(&bits, &p->score, 4);
    uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
    pbw_key(&sub, 2, 5);
    pbw_raw(&sub, le, 4);
    pbw_uint(&sub, 3, p->type);
    pbw_message(w, 1, &sub);
}

/* "ab" is UNUSED (merged through, never output), "<u>" USER_DEFINED (kept whole), no byte pieces. */
static const piece_spec SMALL_PIECES[] = {
    {"<unk>", 0, 2}, {"<s>", 0, 3},  {"</s>", 0, 3},  {"\xE2\x96\x81", -100, 1}, {"a", -10, 1},
    {"b", -11, 1},   {"c", -12, 1},  {"ab", -1, 5},   {"abc", -2, 1},            {"<u>", 0, 4},
    {"\xE2\x96\x81" "a", -3, 1},
};

/* What a small model is written with; small_model_opts() gives the valid default. */
typedef struct model_opts {
    const piece_spec *pieces;
    int n_pieces;
    int model_type, byte_fallback, unk_id, bos_id, treat_as_suffix; /* unk_id < -1: not written */
    int remove_extra_whitespaces;
    const char *charsmap, *denorm_charsmap; /* NULL: not written */
} model_opts;

static model_opts small_model_opts(void)
{
    model_opts o = {SMALL_PIECES, (int)(sizeof SMALL_PIECES / sizeof SMALL_PIECES[0]), 2, 0, 0, 1, 0, 0, NULL,
                    NULL};
    return o;
}

static void write_model(pbw *w, const model_opts *o)
{
    for (int i = 0; i < o->n_pieces; i++)
        pbw_piece(w, &o->pieces[i]);
    pbw trainer = {0};
    pbw_uint(&trainer, 3, o->model_type);
    pbw_uint(&trainer, 24, o->treat_as_suffix);
    pbw_uint(&trainer, 35, o->byte_fallback);
    if (o->unk_id >= -1)
        pbw_uint(&trainer, 40, o->unk_id);
    pbw_uint(&trainer, 41, o->bos_id);
    pbw_uint(&trainer, 42, 2);
    pbw_bytes(&trainer, 44, " \xE2\x81\x87 ", 5);
    pbw_message(w, 2, &trainer);
    pbw normalizer = {0};
    pbw_bytes(&normalizer, 1, "identity", 8);
    if (o->charsmap)
        pbw_bytes(&normalizer, 2, o->charsmap, strlen(o->charsmap));
    pbw_uint(&normalizer, 3, 1);
    pbw_uint(&normalizer, 4, o->remove_extra_whitespaces);
    pbw_message(w, 3, &normalizer);
    if (o->denorm_charsmap) {
        pbw denorm = {0};
        pbw_bytes(&denorm, 2, o->denorm_charsmap, strlen(o->denorm_charsmap));
        pbw_message(w, 5, &denorm);
    }
}

/* Writes bytes to a fresh tmp file called `name`; returns its path in buf. */
static const char *write_tmp(char *buf, size_t n, const char *name, const void *data, size_t len)
{
    snprintf(buf, n, "%s/%s", lg_test_tmpdir(), name);
    CU_ASSERT_EQUAL_FATAL(lg_write_file(buf, data, len), 0);
    return buf;
}

static lg_tokenizer *load_small_model(const model_opts *o, char *path, size_t path_n, lg_err *err)
{
    pbw w = {0};
    write_model(&w, o);
    write_tmp(path, path_n, "tokenizer.model", w.p, w.n);
    free(w.p);
    return lg_tokenizer_load(path, err);
}

/* Expected ids from sentencepiece 0.1.97 loading the same bytes (written out by this writer). */
static void test_unused_pieces_merge_through_and_split_again(void)
{
    model_opts o = small_model_opts();
    char path[4096];
    lg_err err = {{0}};
    lg_tokenizer *t = load_small_model(&o, path, sizeof path, &err);
    if (!t)
        fprintf(stderr, "%s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    /* "ab" merges first (score -1) and is then split back: not "▁a" + "b" */
    static const int ab[] = {3, 4, 5};
    assert_encodes(t, "ab", 2, 0, ab, 3);
    /* merging through the UNUSED "ab" reaches "abc" */
    static const int abc[] = {3, 8};
    assert_encodes(t, "abc", 3, 0, abc, 2);
    static const int ba[] = {3, 5, 4};
    assert_encodes(t, "ba", 2, 0, ba, 3);
    lg_tokenizer_free(t);
}

static void test_user_defined_pieces_stay_whole(void)
{
    model_opts o = small_model_opts();
    char path[4096];
    lg_err err = {{0}};
    lg_tokenizer *t = load_small_model(&o, path, sizeof path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    static const int want[] = {10, 9, 5};
    assert_encodes(t, "a<u>b", 5, 0, want, 3);
    assert_decodes(t, want, 3, "a<u>b");
    lg_tokenizer_free(t);
}

static void test_unknown_run_is_one_unk_without_byte_fallback(void)
{
    model_opts o = small_model_opts();
    char path[4096];
    lg_err err = {{0}};
    lg_tokenizer *t = load_small_model(&o, path, sizeof path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    static const int want[] = {3, 0, 4};
    assert_encodes(t, "xyza", 4, 0, want, 3);
    assert_decodes(t, want, 3, " \xE2\x81\x87 a");
    lg_tokenizer_free(t);
}

static void test_remove_extra_whitespaces_strips_and_squeezes(void)
{
    model_opts o = small_model_opts();
    o.remove_extra_whitespaces = 1;
    char path[4096];
    lg_err err = {{0}};
    lg_tokenizer *t = load_small_model(&o, path, sizeof path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    static const int want[] = {10, 3, 5};
    assert_encodes(t, "  a  b  ", 8, 0, want, 3);
    assert_decodes(t, want, 3, "a b");
    int n = -1;
    int *ids = encode(t, "   ", 3, 0, &n);
    CU_ASSERT_EQUAL(n, 0);
    free(ids);
    lg_tokenizer_free(t);
    /* Llama-2's setting keeps every space */
    o.remove_extra_whitespaces = 0;
    t = load_small_model(&o, path, sizeof path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    static const int kept[] = {3, 3, 10, 3, 3, 5, 3, 3};
    assert_encodes(t, "  a  b  ", 8, 0, kept, 8);
    assert_decodes(t, kept, 8, "  a  b  ");
    lg_tokenizer_free(t);
}

static void test_model_without_bos_refuses_add_bos(void)
{
    model_opts o = small_model_opts();
    o.bos_id = -1; /* written as a 10-byte varint */
    char path[4096];
    lg_err err = {{0}};
    lg_tokenizer *t = load_small_model(&o, path, sizeof path, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(lg_tokenizer_bos_id(t), -1);
    int *ids = NULL, n = 0;
    CU_ASSERT_NOT_EQUAL(lg_tokenizer_encode(t, "a", 1, 1, &ids, &n, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no BOS piece"));
    CU_ASSERT_PTR_NULL(ids);
    lg_tokenizer_free(t);
}

/* ---------------------------------------------------------------- malformed files */

static void expect_load_error(const char *path, const char *needle)
{
    lg_err err = {{0}};
    lg_tokenizer *t = lg_tokenizer_load(path, &err);
    CU_ASSERT_PTR_NULL(t);
    lg_tokenizer_free(t);
    int names_file = strstr(err.msg, path) != NULL, says_what = strstr(err.msg, needle) != NULL;
    if (!names_file || !says_what)
        fprintf(stderr, "\nwanted '%s' naming %s, got: %s\n", needle, path, err.msg);
    CU_ASSERT(names_file);
    CU_ASSERT(says_what);
}

static void expect_model_error(const model_opts *o, const char *needle)
{
    pbw w = {0};
    write_model(&w, o);
    char path[4096];
    write_tmp(path, sizeof path, "tokenizer.model", w.p, w.n);
    free(w.p);
    expect_load_error(path, needle);
}

static void expect_bytes_error(const void *data, size_t n, const char *needle)
{
    char path[4096];
    expect_load_error(write_tmp(path, sizeof path, "tokenizer.model", data, n), needle);
}

static void test_truncated_model_is_rejected(void)
{
    char path[4096];
    size_t n = 0;
    char *data = lg_read_file(lg_fixture(path, sizeof path, "llama2-tokenizer/tokenizer.model"), &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    /* half way is inside a piece; 10 bytes short is inside normalizer_spec */
    expect_bytes_error(data, n / 2, "runs past the end");
    expect_bytes_error(data, n - 10, "runs past the end");
    free(data);
}

static void test_bad_wire_format_is_rejected(void)
{
    expect_bytes_error("", 0, "no pieces");
    static const char past_end[] = "\x0a\xe8\x07\x0a\x03"; /* pieces, length 1000, 3 bytes follow */
    expect_bytes_error(past_end, sizeof past_end - 1, "length 1000 at byte 1 runs past the end");
    /* field 6 (unknown, skipped) with an 11-byte varint */
    static const char long_varint[] = "\x30\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01";
    expect_bytes_error(long_varint, sizeof long_varint - 1, "longer than 10 bytes");
    expect_bytes_error("\x0a\x80", 2, "varint at byte 1 runs past the end");
    expect_bytes_error("\x33\x00", 2, "field 6 at byte 1 has unsupported wire type 3");
    expect_bytes_error("\x00\x01", 2, "invalid field number 0");
    expect_bytes_error("\x08\x01", 2, "field 1 (pieces) at byte 1 has wire type 0, expected 2");
    /* a piece whose score (fixed32) has one byte */
    expect_bytes_error("\x0a\x02\x15\x00", 4, "piece 0: 4-byte value at byte 3 runs past the end");
    /* garbage: a deterministic byte soup */
    uint8_t soup[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof soup; i++) {
        x = x * 1103515245u + 12345u;
        soup[i] = (uint8_t)(x >> 16);
    }
    char path[4096];
    lg_err err = {{0}};
    CU_ASSERT_PTR_NULL(lg_tokenizer_load(write_tmp(path, sizeof path, "tokenizer.model", soup, sizeof soup), &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, path));
}

static void test_bad_pieces_are_rejected(void)
{
    model_opts o = small_model_opts();
    piece_spec p[16];
    int n = o.n_pieces;
    memcpy(p, SMALL_PIECES, sizeof SMALL_PIECES);
    o.pieces = p;

    p[4].type = 9;
    expect_model_error(&o, "piece 4: type 9 at byte");
    p[4] = SMALL_PIECES[4];
    p[4].score = NAN;
    expect_model_error(&o, "piece 4: score is NaN");
    p[4] = SMALL_PIECES[4];

    p[4].piece = "";
    expect_model_error(&o, "piece 4 is empty");
    p[4].piece = "b";
    expect_model_error(&o, "piece 'b' is defined twice (ids 4 and 5)");
    p[4] = SMALL_PIECES[4];

    p[3].type = 2;
    expect_model_error(&o, "pieces 0 and 3 are both of type UNKNOWN");
    p[3] = SMALL_PIECES[3];
    p[0].type = 1;
    expect_model_error(&o, "no piece of type UNKNOWN");
    p[0] = SMALL_PIECES[0];

    p[n] = (piece_spec){"<0x41>", 0, 6};
    o.n_pieces = n + 1;
    expect_model_error(&o, "byte piece 11 '<0x41>' found although byte_fallback is off");
    o.byte_fallback = 1;
    expect_model_error(&o, "byte_fallback is on but byte piece <0x00> is missing");
    p[n].piece = "<0xzz>";
    expect_model_error(&o, "byte piece 11 '<0xzz>' is not of the form <0xNN>");
}

static void test_unsupported_settings_are_rejected(void)
{
    model_opts o = small_model_opts();
    o.model_type = 1;
    expect_model_error(&o, "model_type is UNIGRAM");
    o = small_model_opts();
    o.treat_as_suffix = 1;
    expect_model_error(&o, "treat_whitespace_as_suffix");
    o = small_model_opts();
    o.charsmap = "xyz";
    expect_model_error(&o, "3-byte precompiled_charsmap");
    o = small_model_opts();
    o.denorm_charsmap = "xy";
    expect_model_error(&o, "denormalizer_spec has a 2-byte precompiled_charsmap");
    o = small_model_opts();
    o.bos_id = 99;
    expect_model_error(&o, "trainer_spec.bos_id 99 is outside the 11 pieces");
    o = small_model_opts();
    o.unk_id = 5;
    expect_model_error(&o, "trainer_spec.unk_id is 5 but the UNKNOWN piece is id 0");
}

/* Cut and corrupted copies of the real model: each load fails with the file named, or (a cut that
 * lands between two pieces) loads fewer pieces; none crashes (run under LG_SANITIZE to see). */
static void test_damaged_models_never_crash(void)
{
    char src[4096], path[4096];
    size_t n = 0;
    uint8_t *data = (uint8_t *)lg_read_file(lg_fixture(src, sizeof src, "llama2-tokenizer/tokenizer.model"), &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    uint32_t x = 777;
    for (int trial = 0; trial < 96; trial++) {
        x = x * 1103515245u + 12345u;
        size_t at = (size_t)x % n;
        uint8_t saved = data[at];
        size_t len = n;
        if (trial % 2)
            data[at] ^= (uint8_t)(1u << (trial % 8));
        else
            len = at;
        lg_err err = {{0}};
        lg_tokenizer *t = lg_tokenizer_load(write_tmp(path, sizeof path, "tokenizer.model", data, len), &err);
        if (t) {
            int *ids = NULL, k = 0;
            CU_ASSERT_EQUAL(lg_tokenizer_encode(t, "Hello world", 11, 0, &ids, &k, &err), 0);
            free(ids);
        } else {
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, path));
        }
        lg_tokenizer_free(t);
        data[at] = saved;
    }
    free(data);
}

static void expect_json_error(const char *json, const char *needle)
{
    char path[4096];
    expect_load_error(write_tmp(path, sizeof path, "tokenizer.json", json, strlen(json)), needle);
}

static void test_bad_tokenizer_json_is_rejected(void)
{
    expect_json_error("{\"model\": {\"vocab\": {\"a\": 0,", "not valid JSON");
    expect_json_error("", "not valid JSON");
    expect_json_error("{\"version\": \"1.0\"}", "no \"model\" object");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "no model.vocab object");
    expect_json_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "model.type is 'Unigram'");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", "model.vocab is empty");
    expect_json_error("{\"model\": {\"vocab\": {\"<unk>\": 0, \"a\": \"x\"}}}", "'a' has no valid id");
    expect_json_error("{\"model\": {\"vocab\": {\"<unk>\": 0, \"a\": 1.5}}}", "'a' has no valid id");
    expect_json_error("{\"model\": {\"vocab\": {\"<unk>\": 0, \"a\": 2}}}", "ids run to 2 but only 2 pieces are given");
    expect_json_error("{\"model\": {\"byte_fallback\": false, \"vocab\": {\"<unk>\": 0, \"\": 1}}}",
                      "piece 1 is empty");
    expect_json_error("{\"model\": {\"vocab\": {\"<unk>\": 0, \"a\": 1}},"
                      " \"added_tokens\": [{\"id\": 1, \"content\": \"b\", \"special\": true}]}",
                      "added_tokens: id 1 is given to both 'a' and 'b'");
    expect_json_error("{\"model\": {\"vocab\": {\"<unk>\": 0}}, \"added_tokens\": {}}",
                      "added_tokens is not an array");
    expect_json_error("{\"model\": {\"vocab\": {\"<unk>\": 0}}, \"added_tokens\": [{\"id\": 0}]}",
                      "lacks a valid id or content");
    /* no <unk> piece: the same check as for tokenizer.model */
    expect_json_error("{\"model\": {\"byte_fallback\": false, \"vocab\": {\"a\": 0}}}", "no piece of type UNKNOWN");
}

static void test_bad_paths_are_rejected(void)
{
    const char *dir = lg_test_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/missing", dir);
    expect_load_error(path, "No such file");
    expect_load_error(dir, "no tokenizer.model or tokenizer.json in this directory");
    /* a directory where the file should be */
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(path, 0755), 0);
    expect_load_error(dir, "not a regular file");
}

/* ---------------------------------------------------------------- registration */

int lg_register_tokenizer_tests(void)
{
    CU_pSuite s = CU_add_suite("tokenizer", suite_init, suite_cleanup);
    if (!s)
        return -1;
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"test_model_file_encodes_like_sentencepiece", test_model_file_encodes_like_sentencepiece},
        {"test_json_file_encodes_like_sentencepiece", test_json_file_encodes_like_sentencepiece},
        {"test_decode_inverts_encode_on_reference_cases", test_decode_inverts_encode_on_reference_cases},
        {"test_special_ids_and_pieces", test_special_ids_and_pieces},
        {"test_literal_bos_text_is_not_the_bos_id", test_literal_bos_text_is_not_the_bos_id},
        {"test_encode_reads_len_bytes_not_to_nul", test_encode_reads_len_bytes_not_to_nul},
        {"test_invalid_utf8_becomes_replacement_character", test_invalid_utf8_becomes_replacement_character},
        {"test_decode_follows_sentencepiece", test_decode_follows_sentencepiece},
        {"test_decode_rejects_ids_out_of_range", test_decode_rejects_ids_out_of_range},
        {"test_heldout_essays_give_sentencepiece_token_count", test_heldout_essays_give_sentencepiece_token_count},
        {"test_kjv_encodes_like_sentencepiece_and_fast", test_kjv_encodes_like_sentencepiece_and_fast},
        {"test_directory_prefers_tokenizer_model", test_directory_prefers_tokenizer_model},
        {"test_directory_with_only_json_uses_it", test_directory_with_only_json_uses_it},
        {"test_unused_pieces_merge_through_and_split_again", test_unused_pieces_merge_through_and_split_again},
        {"test_user_defined_pieces_stay_whole", test_user_defined_pieces_stay_whole},
        {"test_unknown_run_is_one_unk_without_byte_fallback", test_unknown_run_is_one_unk_without_byte_fallback},
        {"test_remove_extra_whitespaces_strips_and_squeezes", test_remove_extra_whitespaces_strips_and_squeezes},
        {"test_model_without_bos_refuses_add_bos", test_model_without_bos_refuses_add_bos},
        {"test_truncated_model_is_rejected", test_truncated_model_is_rejected},
        {"test_bad_wire_format_is_rejected", test_bad_wire_format_is_rejected},
        {"test_bad_pieces_are_rejected", test_bad_pieces_are_rejected},
        {"test_unsupported_settings_are_rejected", test_unsupported_settings_are_rejected},
        {"test_damaged_models_never_crash", test_damaged_models_never_crash},
        {"test_bad_tokenizer_json_is_rejected", test_bad_tokenizer_json_is_rejected},
        {"test_bad_paths_are_rejected", test_bad_paths_are_rejected},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(s, tests[i].name, tests[i].fn))
            return -1;
    return 0;
}
