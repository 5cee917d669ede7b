/* Filling a sparse layer's slot cache after a prefill (kv_slots.h). */
#include <stdint.h>

#include "kernel_common.cuh"
#include "kv_slots.h"

/* One block per slot: copies the key and value rows of the position the slot keeps, a 4-byte word
 * (two 16-bit elements or one float32) per thread and step; an empty slot gets only
 * slot_pos = -1. */
__global__ void kv_fill_kernel(uint32_t *kc, uint32_t *vc, int ld_cache_w, int *slot_pos,
                               lg_kv_layout layout, const uint32_t *k, int ldk_w,
                               const uint32_t *v, int ldv_w, int row_w, long n)
{
    long s = blockIdx.x;
    long p = lg_kv_pos_of_slot(&layout, s, n);
    if (threadIdx.x == 0)
        slot_pos[s] = (int)p;
    if (p < 0)
        return;
    const uint32_t *ks = k + (size_t)p * ldk_w, *vs = v + (size_t)p * ldv_w;
    uint32_t *kd = kc + (size_t)s * ld_cache_w, *vd = vc + (size_t)s * ld_cache_w;
    for (int i = threadIdx.x; i < row_w; i += blockDim.x) {
        kd[i] = ks[i];
        vd[i] = vs[i];
    }
}

extern "C" int lg_k_kv_fill_from_rows(void *k_cache, void *v_cache, int ld_cache, int *slot_pos,
                                      int n_slots, const lg_kv_layout *layout, const void *k,
                                      int ldk, const void *v, int ldv, lg_kdtype dt, int kv_dim,
                                      long n, void *stream)
{
    if (n_slots <= 0)
        return 0;
    int esz = lg_kdtype_size(dt);
    if (esz == 0)
        return lg_k_fail("lg_k_kv_fill_from_rows: unknown dtype %d", (int)dt);
    /* rows are copied as 4-byte words: every row start and length must be a whole word (for 16-bit
     * elements: even counts) */
    int per_word = 4 / esz;
    if (kv_dim <= 0 || kv_dim % per_word || ld_cache % per_word || ldk % per_word ||
        ldv % per_word || kv_dim > ld_cache || kv_dim > ldk || kv_dim > ldv)
        return lg_k_fail("lg_k_kv_fill_from_rows: kv_dim %d and leading dimensions %d, %d, %d must "
                         "be multiples of %d with kv_dim <= each", kv_dim, ld_cache, ldk, ldv,
                         per_word);
    if ((layout->mask.kind == LG_KMASK_SINK_WINDOW && layout->ring <= 0) ||
        (layout->mask.kind == LG_KMASK_BLOCK_STRIDED &&
         (layout->ring <= 0 || layout->mask.block <= 0 || layout->mask.stride <= 0)))
        return lg_k_fail("lg_k_kv_fill_from_rows: a sparse layout needs ring, block and stride > 0");
    if (((uintptr_t)k_cache | (uintptr_t)v_cache | (uintptr_t)k | (uintptr_t)v) % 4)
        return lg_k_fail("lg_k_kv_fill_from_rows: pointers must be 4-byte aligned");
    kv_fill_kernel<<<n_slots, 128, 0, LG_CUDA_STREAM(stream)>>>(
        (uint32_t *)k_cache, (uint32_t *)v_cache, ld_cache / per_word, slot_pos, *layout,
        (const uint32_t *)k, ldk / per_word, (const uint32_t *)v, ldv / per_word,
        kv_dim / per_word, n);
    LG_CUDA_LAUNCHED("lg_k_kv_fill_from_rows");
    return 0;
}
