/* Attention kernels: softmax(scale · q k^T) v per query head over the keys the mask shows, float32
 * accumulation and online softmax (no [queries x keys] matrix in memory). GQA: query head h reads kv
 * head h / (n_heads / n_kv_heads) (n_heads % n_kv_heads == 0). q, k, v and out share dt (float32,
 * float16 or bfloat16). Head h of row t of q is at q + t*ldq + h*head_dim; kv head g of key row j at
 * k + j*ldk + g*head_dim (v likewise); out like q. head_dim: even, 8 .. 256 (tensor-core path for
 * 32, 64 and 128 in float16 or bfloat16, on Hopper's wgmma for 128; the others, and float32, take a
 * simpler kernel).
 * Conventions and the mask: kernel_types.h. */
#ifndef LG_KERNELS_ATTENTION_H
#define LG_KERNELS_ATTENTION_H

#include <stddef.h>

#include "kernel_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_kattn_shape {
    int n_heads, n_kv_heads, head_dim;
    float scale; /* usually 1 / sqrt(head_dim) */
} lg_kattn_shape;

/* Prefill over keys stored contiguously by position: n queries at positions q_pos0 .. q_pos0+n-1
 * attend to key rows j < T at positions k_pos0 + j (causal: key position <= query position; the
 * mask on top). Key tiles the mask hides entirely are skipped, so sparse layers cost what they read.
 * Requires q_pos0 + n - 1 <= k_pos0 + T - 1 (the chunk's own keys are among the T); a query that
 * sees no key gets zeros. mask NULL = full (host pointer).
 * ws: device memory the call may use, ws_bytes of it (NULL, 0: none). bfloat16 on the wgmma kernel
 * runs faster with lg_k_attn_prefill_ws_bytes(dt, T, shape) bytes (V is copied to float16 there);
 * with less it gives the same results more slowly. Calls sharing a workspace must not overlap. */
int lg_k_attn_prefill(void *out, int ldo, const void *q, int ldq, const void *k, int ldk,
                      const void *v, int ldv, lg_kdtype dt, int n, int q_pos0, int T, int k_pos0,
                      const lg_kattn_shape *shape, const lg_kmask *mask, void *ws, size_t ws_bytes,
                      void *stream);

/* The workspace lg_k_attn_prefill uses for T keys on this device (0: it uses none): T * kv_dim
 * * 2 bytes and a little, for bfloat16 with head_dim 128 on compute capability 9.0. */
size_t lg_k_attn_prefill_ws_bytes(lg_kdtype dt, int T, const lg_kattn_shape *shape);

/* Bytes of device workspace lg_k_attn_cache needs for n queries over up to n_slots slots (0: none).
 * One workspace of the largest size serves calls of any n and n_slots, one at a time. */
size_t lg_k_attn_cache_ws_bytes(int n, const lg_kattn_shape *shape, int n_slots);

/* The n_slots to launch lg_k_attn_cache with while at most `live` slots are live (n_live's value),
 * for a caller that keeps one launch (a captured graph) while the cache fills: the smallest power of
 * two >= live, at least 128. The launch's shape follows n_slots, not n_live: a cache of capacity
 * 32768 holding 1000 slots would be split for 32768 (splits of 2048 slots for 32 heads, one doing
 * all the work); launched for 1024 it is split for what it holds. Powers of two keep the launch
 * shapes few (one graph each) and the slots scanned within twice the live ones. The caller takes
 * the smaller of this and its cache's capacity. */
long lg_k_attn_cache_slot_bound(long live);

/* Prepares a new workspace (its split counters to zero); every lg_k_attn_cache call leaves it so.
 * Call it once after allocating the workspace, before its first use. */
int lg_k_attn_cache_ws_init(void *ws, size_t ws_bytes, void *stream);

/* For benchmarks: the number of blocks (queries x heads x splits) lg_k_attn_cache's split length
 * aims at, 64 to 8192 (default 512; 0 restores it). lg_k_attn_cache_ws_bytes follows it, so change
 * it only before sizing a workspace. Not thread-safe. */
int lg_k_attn_cache_set_split_target(int blocks);

/* Attention of n queries (decode: n = 1) over a KV cache of n_slots slots in any order (a ring
 * buffer): slot s holds the key/value rows at k + s*ldk, v + s*ldv and the absolute position
 * slot_pos[s] (device int array; a negative position marks an empty slot). Query t has position
 * q_pos[t] (device int array) or, when q_pos is NULL, q_pos0 + t. A slot is read when
 * 0 <= slot_pos[s] <= query position and the mask shows it. n_live (device int, may be NULL): only
 * slots s < *n_live are considered, so that a captured CUDA graph can keep n_slots at the cache's
 * capacity while the cache fills. A cache of up to 512 slots is read by one block of 16 warps a
 * query and head (while the queries are few); a longer one is split into chunks processed in
 * parallel and merged (flash-decoding, the last split of each query and head to finish merging
 * them); ws:
 * lg_k_attn_cache_ws_bytes(n, shape, n_slots) bytes of device memory, set up by
 * lg_k_attn_cache_ws_init.
 * mask NULL = full (host pointer). */
int lg_k_attn_cache(void *out, int ldo, const void *q, int ldq, const void *k, int ldk,
                    const void *v, int ldv, lg_kdtype dt, const int *slot_pos, int n_slots,
                    const int *n_live, int n, const int *q_pos, int q_pos0,
                    const lg_kattn_shape *shape, const lg_kmask *mask, void *ws, size_t ws_bytes,
                    void *stream);

/* Writes n key/value rows into cache slots: row t of k (ldk apart) and of v go to slot slots[t]
 * (device int array) of k_cache / v_cache (rows ld_cache apart), and slot_pos[slots[t]] = pos[t]
 * (device int array) or pos0 + t when pos is NULL. kv_dim = n_kv_heads * head_dim elements. The
 * slots of one call must differ. */
int lg_k_kv_write(void *k_cache, void *v_cache, int ld_cache, int *slot_pos, const void *k,
                  int ldk, const void *v, int ldv, lg_kdtype dt, int kv_dim, const int *slots,
                  const int *pos, int pos0, int n, void *stream);

/* lg_k_attn_prefill's kernels. AUTO: the wgmma kernel on compute capability 9.0 for head_dim 128
 * (block_strided masks only with blocks of a multiple of 128 keys), else the mma.sync kernel for
 * head_dim 32/64/128 in float16/bfloat16, else the row kernel. */
typedef enum lg_kprefill_kernel {
    LG_KPREFILL_AUTO = 0,
    LG_KPREFILL_ROWS = 1, /* the row kernel for every shape */
    LG_KPREFILL_MMA = 2,  /* the mma.sync kernel where it takes the shape, else rows */
    LG_KPREFILL_WGMMA = 3 /* the wgmma kernel, any mask, where it takes the shape and device;
                             else as AUTO */
} lg_kprefill_kernel;

/* For tests and benchmarks: the kernel lg_k_attn_prefill takes from now on. Not thread-safe. */
void lg_k_attn_prefill_force(lg_kprefill_kernel which);

/* For benchmarks: how the wgmma kernel deals out its work items (128 queries of one head): 1 to
 * persistent blocks, one an SM; 2 a block an item, dealt by the hardware; 0 its own choice.
 * Not thread-safe. */
void lg_k_attn_prefill_set_schedule(int which);

/* Whether the wgmma kernel takes head_dim hd in dt on the current device. */
int lg_k_attn_prefill_wgmma_takes(int hd, lg_kdtype dt);

#ifdef __cplusplus
}
#endif

#endif
