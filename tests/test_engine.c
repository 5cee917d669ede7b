/* runtime/engine.h: the backend chosen at run time (the CPU engine is the CPU forward pass behind
 * function pointers; asking for a device the build or the machine lacks is a clear error), and the
 * slot layout of the CUDA KV caches (kernels/kv_slots.h, plain C), checked here without a GPU. */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/kv_slots.h"
#include "engine.h"
#include "forward_cpu.h"
#include "longgen.h"
#include "model.h"
#include "test_env.h"

static uint64_t rng = 0x243f6a8885a308d3ull;

static int rand_token(int vocab)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int)(rng % (uint64_t)vocab);
}

static lg_model *load(const char *fixture, const char *device)
{
    char dir[4096];
    lg_err err;
    return lg_engine_load_model(lg_fixture(dir, sizeof dir, fixture), device, &err);
}

/* The CPU engine is the CPU forward pass: the same logits bit for bit, through prefill and decode,
 * with nll and greedy continuing to agree. */
static void test_cpu_engine_gives_the_forward_passes_logits(void)
{
    lg_model *m = load("tiny-llama-fp16", "cpu");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_err err;
    lg_forward_opts fo = {.max_chunk = 16, .n_threads = 1};
    lg_engine_opts eo = {.max_chunk = 16, .n_threads = 1};
    lg_forward_state *s = lg_forward_state_new(m, &fo, &err);
    lg_engine *e = lg_engine_new(m, "cpu", &eo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(lg_engine_device(e), "cpu");
    int V = m->vocab_size, ids[41];
    for (int i = 0; i < 41; i++)
        ids[i] = rand_token(V);
    float *a = malloc(sizeof(float) * 40 * V), *b = malloc(sizeof(float) * 40 * V);
    CU_ASSERT_EQUAL(lg_forward_tokens(s, ids, 37, 0, LG_LOGITS_ALL, a, &err), 0);
    CU_ASSERT_EQUAL(lg_engine_tokens(e, ids, 37, 0, LG_LOGITS_ALL, b, &err), 0);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof(float) * 37 * V), 0);
    CU_ASSERT_EQUAL(lg_forward_tokens(s, ids + 37, 1, 37, LG_LOGITS_LAST, a, &err), 0);
    CU_ASSERT_EQUAL(lg_engine_tokens(e, ids + 37, 1, 37, LG_LOGITS_LAST, b, &err), 0);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof(float) * V), 0);
    CU_ASSERT_EQUAL(lg_engine_pos(e), 38);
    size_t live_s[3], live_e[3], alloc_e[3];
    lg_forward_kv_bytes(s, live_s, NULL);
    lg_engine_kv_bytes(e, live_e, alloc_e);
    CU_ASSERT_EQUAL(memcmp(live_s, live_e, sizeof live_s), 0);
    CU_ASSERT(live_e[LG_ATTN_FULL] > 0 && alloc_e[LG_ATTN_FULL] >= live_e[LG_ATTN_FULL]);
    float nll_s[40], nll_e[40];
    CU_ASSERT_EQUAL(lg_forward_nll(s, ids, 41, 0, nll_s, &err), 0);
    CU_ASSERT_EQUAL(lg_engine_nll(e, ids, 41, 0, nll_e, &err), 0);
    CU_ASSERT_EQUAL(memcmp(nll_s, nll_e, sizeof nll_s), 0);
    int g_s[6], g_e[6];
    CU_ASSERT_EQUAL(lg_forward_greedy(s, ids, 5, 6, g_s, &err), 0);
    CU_ASSERT_EQUAL(lg_engine_greedy(e, ids, 5, 6, g_e, &err), 0);
    CU_ASSERT_EQUAL(memcmp(g_s, g_e, sizeof g_s), 0);
    lg_engine_reset(e);
    CU_ASSERT_EQUAL(lg_engine_pos(e), 0);
    lg_engine_mem mem;
    lg_engine_mem_info(e, &mem);
    CU_ASSERT_STRING_EQUAL(mem.weight_dtype, "f32");
    CU_ASSERT_EQUAL(mem.weight_bytes, lg_model_weight_bytes(m));
    free(a);
    free(b);
    lg_engine_free(e);
    lg_forward_state_free(s);
    lg_model_free(m);
}

static void test_unknown_device_is_refused_with_the_devices_built(void)
{
    lg_err err;
    CU_ASSERT_EQUAL(lg_engine_check_device("cpu", &err), 0);
    CU_ASSERT_EQUAL(lg_engine_check_device("tpu", &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "--device tpu: unknown device (this build has: cpu"));
    CU_ASSERT_PTR_NULL(load("tiny-llama-fp16", "tpu"));
}

/* Without CUDA in the build, or without a GPU in the machine (CI), "cuda" fails with a message
 * saying which; with both it runs (the device check compares it with the CPU). */
static void test_cuda_engine_fails_cleanly_where_there_is_none(void)
{
    lg_err err;
    if (lg_engine_check_device("cuda", &err) != 0) {
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "this build has no CUDA support"));
        CU_ASSERT_PTR_NULL(load("tiny-llama-fp16", "cuda"));
        return;
    }
    lg_model *m = load("tiny-llama-fp16", "cuda");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_FALSE(m->has_weights); /* no float32 copy for the GPU */
    lg_engine *e = lg_engine_new(m, "cuda", NULL, &err);
    if (!e)
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "GPU"));
    lg_engine_free(e);
    lg_model_free(m);
}

static void test_cpu_engine_refuses_a_model_loaded_without_weights(void)
{
    char dir[4096];
    lg_err err;
    lg_model_load_opts o = {.no_weights = 1};
    lg_model *m = lg_model_load_ex(lg_fixture(dir, sizeof dir, "tiny-llama-fp16"), &o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->n_layers, 6);
    CU_ASSERT_PTR_NULL(lg_engine_new(m, "cpu", NULL, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "without float32 weights"));
    lg_model_free(m);
}

/* ---------------------------------------------------------------- the CUDA caches' slot layout */

/* Writes positions 0 .. n_total-1 in steps of `step` rows into slots by lg_kv_slot_of, as the CUDA
 * steps do, and after each step checks that every key each of the step's queries may see under the
 * mask is held (the ring is window - 1 + step or local * block - 1 + step slots, as forward_cuda.c
 * makes it). Halfway, the cache is also rebuilt as a prefill's fill kernel would
 * (lg_kv_pos_of_slot) and must hold every key the next steps need. */
static int check_layout(const lg_layer_attn *a, int step, long n_total, long fill_at)
{
    lg_kv_layout lay = {.mask = {(lg_kmask_kind)a->kind, a->sink, a->window, a->block, a->local,
                                 a->stride}};
    long span = (long)a->block * a->stride;
    lay.ring = a->kind == LG_ATTN_SINK_WINDOW ? a->window - 1 + step : a->local * a->block - 1 + step;
    lay.kept = a->kind == LG_ATTN_BLOCK_STRIDED ? (int)((n_total + span - 1) / span * a->block) : 0;
    long n_slots = lg_kv_slots(&lay, n_total);
    long *held = malloc(sizeof(long) * (size_t)n_slots);
    char *seen = malloc((size_t)n_total);
    int bad = 0;
    for (long s = 0; s < n_slots; s++)
        held[s] = -1;
    for (long p0 = 0; p0 < n_total && !bad; p0 += step) {
        long n = n_total - p0 < step ? n_total - p0 : step;
        if (p0 == fill_at) /* a prefill of p0 positions leaves the cache so */
            for (long s = 0; s < n_slots; s++) {
                long p = lg_kv_pos_of_slot(&lay, s, p0);
                bad |= p >= 0 && lg_kv_slot_of(&lay, p) != s; /* each position in its own slot */
                held[s] = p;
            }
        for (long t = 0; t < n; t++) {
            long s = lg_kv_slot_of(&lay, p0 + t);
            bad |= s < 0 || s >= n_slots;
            if (!bad)
                held[s] = p0 + t;
        }
        for (long i = p0; i < p0 + n && !bad; i++) {
            memset(seen, 0, (size_t)n_total);
            for (long s = 0; s < n_slots; s++)
                if (held[s] >= 0 && held[s] <= i)
                    seen[held[s]] = 1;
            for (long j = 0; j <= i; j++)
                if (lg_attn_visible(a, i, j) && !seen[j]) {
                    fprintf(stderr, "\n  %s step %d: query %ld misses key %ld\n",
                            lg_attn_kind_name(a->kind), step, i, j);
                    bad = 1;
                    break;
                }
        }
    }
    free(held);
    free(seen);
    return bad ? -1 : 0;
}

static void test_kv_slots_hold_every_key_the_mask_shows(void)
{
    static const lg_layer_attn layers[] = {
        {LG_ATTN_SINK_WINDOW, 4, 16, 0, 0, 0},
        {LG_ATTN_SINK_WINDOW, 1, 3, 0, 0, 0},
        {LG_ATTN_SINK_WINDOW, 7, 29, 0, 0, 0},
        {LG_ATTN_BLOCK_STRIDED, 0, 0, 4, 2, 3},
        {LG_ATTN_BLOCK_STRIDED, 0, 0, 5, 1, 2},
        {LG_ATTN_BLOCK_STRIDED, 0, 0, 3, 3, 4},
    };
    static const int steps[] = {1, 3, 8};
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
            int step = steps[k];
            /* decode only; then after a prefill of 37 positions (not a multiple of any size) */
            CU_ASSERT_EQUAL(check_layout(&layers[i], step, 211, -1), 0);
            CU_ASSERT_EQUAL(check_layout(&layers[i], step, 211, 37 / step * step), 0);
            CU_ASSERT_EQUAL(check_layout(&layers[i], step, 97, 96 / step * step), 0);
        }
}

/* Slots of a full layer are positions; a sink_window layer's count is sink + ring. */
static void test_kv_slot_counts_follow_the_layer_kind(void)
{
    lg_kv_layout full = {.mask = {LG_KMASK_FULL, 0, 0, 0, 0, 0}};
    CU_ASSERT_EQUAL(lg_kv_slots(&full, 4096), 4096);
    CU_ASSERT_EQUAL(lg_kv_slot_of(&full, 1234), 1234);
    CU_ASSERT_EQUAL(lg_kv_pos_of_slot(&full, 5, 5), -1);
    CU_ASSERT_EQUAL(lg_kv_pos_of_slot(&full, 4, 5), 4);
    lg_kv_layout sw = {.mask = {LG_KMASK_SINK_WINDOW, 64, 4096, 0, 0, 0}, .ring = 4095 + 256};
    CU_ASSERT_EQUAL(lg_kv_slots(&sw, 131072), 64 + 4351);
    CU_ASSERT_EQUAL(lg_kv_slot_of(&sw, 63), 63);
    CU_ASSERT_EQUAL(lg_kv_slot_of(&sw, 64 + 4351), 64 + (64 + 4351) % 4351);
    lg_kv_layout bs = {.mask = {LG_KMASK_BLOCK_STRIDED, 0, 0, 64, 16, 8}, .ring = 1279, .kept = 64};
    CU_ASSERT_EQUAL(lg_kv_slots(&bs, 4096), 1279 + 64);
    CU_ASSERT_TRUE(lg_kv_kept_for_good(&bs, 7 * 64));
    CU_ASSERT_FALSE(lg_kv_kept_for_good(&bs, 8 * 64));
    CU_ASSERT_EQUAL(lg_kv_slot_of(&bs, 7 * 64 + 5), 1279 + 5);
}

int lg_register_engine_tests(void)
{
    CU_pSuite s = CU_add_suite("engine", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_cpu_engine_gives_the_forward_passes_logits",
                test_cpu_engine_gives_the_forward_passes_logits);
    CU_add_test(s, "test_unknown_device_is_refused_with_the_devices_built",
                test_unknown_device_is_refused_with_the_devices_built);
    CU_add_test(s, "test_cuda_engine_fails_cleanly_where_there_is_none",
                test_cuda_engine_fails_cleanly_where_there_is_none);
    CU_add_test(s, "test_cpu_engine_refuses_a_model_loaded_without_weights",
                test_cpu_engine_refuses_a_model_loaded_without_weights);
    CU_add_test(s, "test_kv_slots_hold_every_key_the_mask_shows",
                test_kv_slots_hold_every_key_the_mask_shows);
    CU_add_test(s, "test_kv_slot_counts_follow_the_layer_kind",
                test_kv_slot_counts_follow_the_layer_kind);
    return 0;
}
