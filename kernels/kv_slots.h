/* Where a layer's KV cache keeps each position (the slot layout of runtime/forward_cuda.c), and the
 * kernel that fills such a cache from keys and values laid out by position, as a prefill leaves
 * them. Plain C: the layout functions compile with gcc and nvcc alike.
 *
 * Slot layout by mask kind (kernel_types.h), with `ring` ring slots and, for block_strided, `kept`
 * slots for the blocks kept for good:
 *   full:          slot = position.
 *   sink_window:   position p < sink in slot p; later ones in slot sink + p % ring.
 *   block_strided: a position of a block kb with (kb + 1) % stride == 0 (kept for good) in slot
 *                  ring + (kb / stride) * block + p % block; the others in slot p % ring.
 * A ring of R slots holds the R latest positions of its kind, which covers every key a query can see
 * when R >= window - 1 + rows (sink_window) or local * block - 1 + rows (block_strided), for steps of
 * up to `rows` positions. */
#ifndef LG_KERNELS_KV_SLOTS_H
#define LG_KERNELS_KV_SLOTS_H

#include "kernel_types.h"

#ifdef __CUDACC__
#define LG_KV_HD __host__ __device__
#else
#define LG_KV_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_kv_layout {
    lg_kmask mask;
    int ring; /* ring slots (sink_window, block_strided) */
    int kept; /* slots for blocks kept for good (block_strided) */
} lg_kv_layout;

/* Slots of the cache: positions for full (its capacity), sink + ring, or ring + kept. */
static inline LG_KV_HD long lg_kv_slots(const lg_kv_layout *l, long full_capacity)
{
    switch (l->mask.kind) {
    case LG_KMASK_SINK_WINDOW:
        return (long)l->mask.sink + l->ring;
    case LG_KMASK_BLOCK_STRIDED:
        return (long)l->ring + l->kept;
    default:
        return full_capacity;
    }
}

static inline LG_KV_HD int lg_kv_kept_for_good(const lg_kv_layout *l, long p)
{
    return l->mask.kind == LG_KMASK_BLOCK_STRIDED &&
           (p / l->mask.block + 1) % l->mask.stride == 0;
}

/* The slot of position p (>= 0). */
static inline LG_KV_HD long lg_kv_slot_of(const lg_kv_layout *l, long p)
{
    switch (l->mask.kind) {
    case LG_KMASK_SINK_WINDOW:
        return p < l->mask.sink ? p : l->mask.sink + p % l->ring;
    case LG_KMASK_BLOCK_STRIDED:
        if (lg_kv_kept_for_good(l, p))
            return l->ring + (p / l->mask.block / l->mask.stride) * l->mask.block +
                   p % l->mask.block;
        return p % l->ring;
    default:
        return p;
    }
}

/* The position slot s holds once positions 0 .. n-1 have been written in order, or -1 if none. */
static inline LG_KV_HD long lg_kv_pos_of_slot(const lg_kv_layout *l, long s, long n)
{
    if (n <= 0)
        return -1;
    long last = n - 1, p;
    switch (l->mask.kind) {
    case LG_KMASK_SINK_WINDOW:
        if (s < l->mask.sink)
            return s < n ? s : -1;
        /* the latest p < n with p % ring == s - sink, if it is past the sink */
        p = last - ((last - (s - l->mask.sink)) % l->ring + l->ring) % l->ring;
        return p >= l->mask.sink ? p : -1;
    case LG_KMASK_BLOCK_STRIDED:
        if (s >= l->ring) {
            long k = s - l->ring, q = k / l->mask.block;
            p = (q * l->mask.stride + l->mask.stride - 1) * l->mask.block + k % l->mask.block;
            return p < n ? p : -1;
        }
        /* the latest p < n with p % ring == s; when that one is kept for good (it lives in the
         * kept slots), the one before it is older than any query can see */
        p = last - ((last - s) % l->ring + l->ring) % l->ring;
        return p >= 0 && !lg_kv_kept_for_good(l, p) ? p : -1;
    default:
        return s < n ? s : -1;
    }
}

/* Fills every slot s < n_slots of a cache (k_cache / v_cache rows ld_cache elements apart,
 * slot_pos: device int array) with the key and value rows of position lg_kv_pos_of_slot(layout, s,
 * n), read from k + p * ldk and v + p * ldv, and sets slot_pos[s] to that position (-1 for an empty
 * slot). kv_dim elements of type dt (float32, float16 or bfloat16) per row. */
int lg_k_kv_fill_from_rows(void *k_cache, void *v_cache, int ld_cache, int *slot_pos, int n_slots,
                           const lg_kv_layout *layout, const void *k, int ldk, const void *v,
                           int ldv, lg_kdtype dt, int kv_dim, long n, void *stream);

#ifdef __cplusplus
}
#endif

#endif
