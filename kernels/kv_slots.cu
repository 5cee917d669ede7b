/* Filling a sparse layer's slot cache after a prefill (kv_slots.h). */
#include <stdint.h>

#include "kernel_common.cuh"
#include "kv_slots.h"

/* One block per slot: copies the key and value rows of the position the slot keeps, 4 bytes (two
 * 2-byte elements) per thread and step; an empty slot gets only slot_pos = -1. */
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
                                      int ldk, const void *v, int ldv, int kv_dim, long n,
                                      void *stream)
{
    if (n_slots <= 0)
        return 0;
    /* rows are copied as 4-byte words: every row start and length must be a whole word */
    if (kv_dim <= 0 || kv_dim % 2 || ld_cache % 2 || ldk % 2 || ldv % 2 || kv_dim > ld_cache ||
        kv_dim > ldk || kv_dim > ldv)
        return lg_k_fail("lg_k_kv_fill_from_rows: kv_dim %d and leading dimensions %d, %d, %d must "
                         "be even with kv_dim <= each", kv_dim, ld_cache, ldk, ldv);
    if ((layout->mask.kind == LG_KMASK_SINK_WINDOW && layout->ring <= 0) ||
        (layout->mask.kind == LG_KMASK_BLOCK_STRIDED &&
         (layout->ring <= 0 || layout->mask.block <= 0 || layout->mask.stride <= 0)))
        return lg_k_fail("lg_k_kv_fill_from_rows: a sparse layout needs ring, block and stride > 0");
    if (((uintptr_t)k_cache | (uintptr_t)v_cache | (uintptr_t)k | (uintptr_t)v) % 4)
        return lg_k_fail("lg_k_kv_fill_from_rows: pointers must be 4-byte aligned");
    kv_fill_kernel<<<n_slots, 128, 0, LG_CUDA_STREAM(stream)>>>(
        (uint32_t *)k_cache, (uint32_t *)v_cache, ld_cache / 2, slot_pos, *layout,
        (const uint32_t *)k, ldk / 2, (const uint32_t *)v, ldv / 2, kv_dim / 2, n);
    LG_CUDA_LAUNCHED("lg_k_kv_fill_from_rows");
    return 0;
}
