/* Tensor parallelism's slicing (runtime/tp_shard.h): for every TP size that divides the heads, the
 * ranks' blocks of every weight reassemble the original tensor exactly, each element held once
 * (norms: by every rank), split the way the row- and column-parallel products need; query heads stay
 * with their KV heads; bad sizes are refused with a reason. The GPU run itself is checked on the
 * device (scripts/device-tp.sh). */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "model.h"
#include "test_env.h"
#include "tp_comm.h"
#include "tp_shard.h"

/* widths of the fixtures, of Llama-2-7B and -70B, and odd ones (vocabulary and MLP widths that do
 * not split evenly) */
static const lg_tp_dims shapes[] = {
    {128, 352, 4, 2, 32, 1024},       /* tiny-llama-fp16 */
    {64, 172, 8, 4, 8, 512},          /* stories260K */
    {256, 688, 4, 4, 64, 32000},      /* kjv-pg-llama, kjv-pg-longgen */
    {128, 344, 4, 4, 32, 32000},      /* kjv-tiny-longgen */
    {4096, 11008, 32, 32, 128, 32000}, /* Llama-2-7B */
    {8192, 28672, 64, 8, 128, 32000}, /* Llama-2-70B */
    {96, 200, 24, 8, 4, 1001},        /* odd: vocab 1001, MLP 200 = 25 units of 8 */
};

static uint64_t rng = 0x243f6a8885a308d3ull;

static int64_t rand_below(int64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int64_t)(rng % (uint64_t)n);
}

static void tensor_shape(const lg_tp_dims *d, lg_tp_weight w, int64_t *rows, int64_t *cols)
{
    int64_t qd = (int64_t)d->n_heads * d->head_dim, kvd = (int64_t)d->n_kv_heads * d->head_dim;
    switch (w) {
    case LG_TPW_EMBED:
    case LG_TPW_LM_HEAD: *rows = d->vocab, *cols = d->dim; break;
    case LG_TPW_Q: *rows = qd, *cols = d->dim; break;
    case LG_TPW_K:
    case LG_TPW_V: *rows = kvd, *cols = d->dim; break;
    case LG_TPW_O: *rows = d->dim, *cols = qd; break;
    case LG_TPW_GATE:
    case LG_TPW_UP: *rows = d->ffn, *cols = d->dim; break;
    case LG_TPW_DOWN: *rows = d->dim, *cols = d->ffn; break;
    default: *rows = 1, *cols = d->dim; break;
    }
}

/* The split each weight must have: 1 by rows (column-parallel product, or vocabulary), 2 by
 * columns (row-parallel product), 0 replicated. */
static int split_kind(lg_tp_weight w)
{
    switch (w) {
    case LG_TPW_O:
    case LG_TPW_DOWN: return 2;
    case LG_TPW_NORM: return 0;
    default: return 1;
    }
}

/* Copies the block of src (a rows x cols tensor of distinct values) the way the engine's upload
 * does, with run lengths capped at random sizes so that runs are cut anywhere. */
static void gather_block(const lg_tp_block *b, const int32_t *src, int32_t *dst)
{
    int64_t n = lg_tp_block_elems(b);
    for (int64_t k = 0; k < n;) {
        int64_t at = -1;
        int64_t run = lg_tp_block_run(b, k, 1 + rand_below(3 * b->nc + 1), &at);
        CU_ASSERT_FATAL(run >= 1 && k + run <= n);
        CU_ASSERT_FATAL(at >= 0 && at + run <= b->rows * b->cols);
        memcpy(dst + k, src + at, sizeof *dst * (size_t)run);
        k += run;
    }
}

/* One weight of one shape at one TP size: every rank's block put back at (r0, c0) gives the
 * source tensor, each element from exactly one rank (norms: every rank holds all of it). */
static void check_weight(const lg_tp_dims *d, int tp, lg_tp_weight w)
{
    int64_t rows, cols;
    tensor_shape(d, w, &rows, &cols);
    size_t n = (size_t)(rows * cols);
    int32_t *src = malloc(sizeof *src * n), *back = calloc(n, sizeof *back), *blk = NULL;
    uint8_t *seen = calloc(n, 1);
    CU_ASSERT_FATAL(src && back && seen);
    for (size_t i = 0; i < n; i++)
        src[i] = (int32_t)(i * 2654435761u) ^ 0x5bd1e995;
    int64_t covered_rows = 0, covered_cols = 0;
    for (int r = 0; r < tp; r++) {
        lg_tp_shard s;
        lg_tp_shard_of(d, tp, r, &s);
        lg_tp_block b;
        lg_tp_weight_block(d, &s, w, &b);
        CU_ASSERT_EQUAL_FATAL(b.rows, rows);
        CU_ASSERT_EQUAL_FATAL(b.cols, cols);
        CU_ASSERT_FATAL(b.r0 >= 0 && b.nr >= 1 && b.r0 + b.nr <= rows);
        CU_ASSERT_FATAL(b.c0 >= 0 && b.nc >= 1 && b.c0 + b.nc <= cols);
        int kind = split_kind(w);
        if (kind == 1 || kind == 0)
            CU_ASSERT(b.c0 == 0 && b.nc == cols);
        if (kind == 2 || kind == 0)
            CU_ASSERT(b.r0 == 0 && b.nr == rows);
        blk = realloc(blk, sizeof *blk * (size_t)lg_tp_block_elems(&b));
        CU_ASSERT_FATAL(blk != NULL);
        gather_block(&b, src, blk);
        for (int64_t i = 0; i < b.nr; i++)
            for (int64_t j = 0; j < b.nc; j++) {
                size_t at = (size_t)((b.r0 + i) * cols + b.c0 + j);
                back[at] = blk[i * b.nc + j];
                seen[at]++;
            }
        covered_rows += b.nr;
        covered_cols += b.nc;
    }
    CU_ASSERT(memcmp(back, src, sizeof *src * n) == 0);
    int held = split_kind(w) == 0 ? tp : 1, bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += seen[i] != held;
    CU_ASSERT_EQUAL(bad, 0);
    if (split_kind(w) == 1)
        CU_ASSERT_EQUAL(covered_rows, rows);
    if (split_kind(w) == 2)
        CU_ASSERT_EQUAL(covered_cols, cols);
    free(src);
    free(back);
    free(seen);
    free(blk);
}

static void test_slices_reassemble_every_weight(void)
{
    int checked = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        lg_tp_dims d = shapes[i];
        /* the 7B and 70B widths are checked at full size only for the small weights */
        int big = (int64_t)d.dim * d.ffn > 4000000;
        for (int tp = 1; tp <= LG_TP_MAX; tp++) {
            lg_err err;
            if (d.n_heads % tp || d.n_kv_heads % tp) {
                CU_ASSERT_EQUAL(lg_tp_check(&d, tp, &err), -1);
                continue;
            }
            CU_ASSERT_EQUAL_FATAL(lg_tp_check(&d, tp, &err), 0);
            for (int w = 0; w < LG_TPW_COUNT; w++) {
                if (big && w != LG_TPW_NORM && w != LG_TPW_K)
                    continue;
                check_weight(&d, tp, (lg_tp_weight)w);
                checked++;
            }
        }
    }
    CU_ASSERT(checked > 100);
}

/* Shard arithmetic on the big shapes without materializing them: ranges tile the widths. */
static void test_shards_tile_the_widths(void)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const lg_tp_dims *d = &shapes[i];
        for (int tp = 1; tp <= LG_TP_MAX; tp++) {
            lg_err err;
            if (lg_tp_check(d, tp, &err) != 0)
                continue;
            int heads = 0, kv = 0, ffn = 0, vocab = 0;
            for (int r = 0; r < tp; r++) {
                lg_tp_shard s;
                lg_tp_shard_of(d, tp, r, &s);
                CU_ASSERT_EQUAL(s.head0, heads);
                CU_ASSERT_EQUAL(s.kv_head0, kv);
                CU_ASSERT_EQUAL(s.ffn0, ffn);
                CU_ASSERT_EQUAL(s.vocab0, vocab);
                CU_ASSERT(s.ffn >= 1 && s.vocab >= 1);
                if (d->ffn % 8 == 0 && d->ffn / 8 >= tp) /* 16-byte rows for the vector loads */
                    CU_ASSERT(s.ffn % 8 == 0 && s.ffn0 % 8 == 0);
                /* query head h reads KV head h / group: it must be one of this rank's */
                int group = d->n_heads / d->n_kv_heads;
                for (int h = s.head0; h < s.head0 + s.n_heads; h++)
                    CU_ASSERT(h / group >= s.kv_head0 && h / group < s.kv_head0 + s.n_kv_heads);
                heads += s.n_heads;
                kv += s.n_kv_heads;
                ffn += s.ffn;
                vocab += s.vocab;
            }
            CU_ASSERT_EQUAL(heads, d->n_heads);
            CU_ASSERT_EQUAL(kv, d->n_kv_heads);
            CU_ASSERT_EQUAL(ffn, d->ffn);
            CU_ASSERT_EQUAL(vocab, d->vocab);
        }
    }
    /* Llama-2-7B's MLP over 2 GPUs: 5504 columns each */
    lg_tp_shard s;
    lg_tp_shard_of(&shapes[4], 2, 1, &s);
    CU_ASSERT_EQUAL(s.ffn0, 5504);
    CU_ASSERT_EQUAL(s.ffn, 5504);
    CU_ASSERT_EQUAL(s.vocab0, 16000);
}

static void test_bad_tp_sizes_are_refused(void)
{
    lg_err err;
    const lg_tp_dims *fx = &shapes[0]; /* 4 heads, 2 KV heads */
    CU_ASSERT_EQUAL(lg_tp_check(fx, 4, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "2 key/value heads"));
    CU_ASSERT_EQUAL(lg_tp_check(fx, 3, &err), -1);
    CU_ASSERT_EQUAL(lg_tp_check(fx, 0, &err), -1);
    CU_ASSERT_EQUAL(lg_tp_check(&shapes[5], 16, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "between 1 and 8"));
    CU_ASSERT_EQUAL(lg_tp_check(&shapes[5], 8, &err), 0);
    int tp = 0;
    CU_ASSERT_EQUAL(lg_engine_parse_tp("0", &tp, &err), -1);
    CU_ASSERT_EQUAL(lg_engine_parse_tp("2x", &tp, &err), -1);
    CU_ASSERT_EQUAL(lg_engine_parse_tp("2", &tp, &err), 0);
    CU_ASSERT_EQUAL(tp, 2);
}

/* --tp on the CPU is refused with a reason; on a machine without 2 GPUs (CI) so is --tp 2 on cuda,
 * whether the build has CUDA and NCCL or not, without crashing or hanging. */
static void test_engine_refuses_tp_it_cannot_run(void)
{
    char dir[4096];
    lg_fixture(dir, sizeof dir, "tiny-llama-fp16");
    lg_err err;
    lg_model *m = lg_model_load(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_engine_opts o = {.tp = 2};
    lg_engine *e = lg_engine_new(m, "cpu", &o, &err);
    CU_ASSERT_PTR_NULL(e);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "--device cuda"));
    int gpus = getenv("LG_TEST_GPUS") ? atoi(getenv("LG_TEST_GPUS")) : 0;
    if (gpus < 2) {
        e = lg_engine_new(m, "cuda", &o, &err);
        CU_ASSERT_PTR_NULL(e);
        CU_ASSERT(strlen(err.msg) > 0);
        /* which reason depends on the build: no CUDA, no NCCL, or too few GPUs */
        if (lg_engine_check_device("cuda", &err) == 0 && !lg_tp_comm_available()) {
            e = lg_engine_new(m, "cuda", &o, &err);
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no NCCL"));
        }
        lg_engine_free(e);
    }
    o.tp = 4; /* 2 KV heads */
    e = lg_engine_new(m, "cuda", &o, &err);
    CU_ASSERT_PTR_NULL(e);
    lg_model_free(m);
}

int lg_register_tp_tests(void)
{
    CU_pSuite s = CU_add_suite("tp", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_slices_reassemble_every_weight", test_slices_reassemble_every_weight);
    CU_add_test(s, "test_shards_tile_the_widths", test_shards_tile_the_widths);
    CU_add_test(s, "test_bad_tp_sizes_are_refused", test_bad_tp_sizes_are_refused);
    CU_add_test(s, "test_engine_refuses_tp_it_cannot_run", test_engine_refuses_tp_it_cannot_run);
    return 0;
}
