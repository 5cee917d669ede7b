/* The row attention kernel: one block per (slot split, query head, query), for decode over a KV
 * cache of slots in any order (ring buffers) and as the simple prefill path for head sizes or
 * alignments the tensor-core kernel does not take.
 *
 * Within a block, lanes work in groups of G: a group handles one key slot at a time, each lane
 * holding VEC consecutive elements of the head (16-byte loads when VEC = 8), so one key row is read
 * by G lanes in one coalesced access and the dot product is a reduction over the group. Each group
 * keeps its own online-softmax state (running max m, sum l, output acc in float32, base-2
 * exponentials); groups, then warps, then splits are merged with the usual rescaling
 * (flash-decoding). CPU twin: lg_attention_cpu (runtime/attention_cpu.c). */
#include <math.h>
#include <string.h>

#include "attention_internal.cuh"

#define ROWS_WARPS 4

template <typename T, int VEC> struct vec_io;
template <typename T> struct vec_io<T, 8> {
    static __device__ __forceinline__ void load(const T *p, float *f)
    {
        lg_unpack8<T>(*reinterpret_cast<const uint4 *>(p), f);
    }
};
template <typename T> struct vec_io<T, 2> {
    static __device__ __forceinline__ void load(const T *p, float *f)
    {
        float2 v = lg_elem<T>::pair_to_f2(*reinterpret_cast<const typename lg_elem<T>::pair *>(p));
        f[0] = v.x;
        f[1] = v.y;
    }
};

/* Merges state (m2, l2, a2) into (m, l, a); m = -inf means empty. */
__device__ __forceinline__ void merge_state(float &m, float &l, float *a, float m2, float l2,
                                            const float *a2, int na)
{
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY)
        return;
    float c1 = exp2f(m - mn), c2 = exp2f(m2 - mn);
    l = l * c1 + l2 * c2;
    for (int i = 0; i < na; i++)
        a[i] = a[i] * c1 + a2[i] * c2;
    m = mn;
}

template <typename T, int VEC, int G, int NPER>
__global__ void __launch_bounds__(ROWS_WARPS * 32) attn_rows_kernel(lg_rows_params p)
{
    constexpr int SPW = 32 / G; /* slots a warp handles per step */
    const int split = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gl = lane % G, gi = lane / G;
    const int hd = p.head_dim, nchunk = hd / VEC;
    const int kvh = h / p.group;
    const int qpos = p.q_pos ? p.q_pos[t] : p.q_pos0 + t;

    int s_begin = split * p.split_len;
    int s_end = min(s_begin + p.split_len, p.n_slots);
    if (p.n_live)
        s_end = min(s_end, *p.n_live);
    /* contiguous keys: a split the mask hides entirely is skipped */
    if (!p.slot_pos && s_begin < s_end &&
        !lg_dmask_any(p.mask, qpos, qpos, p.k_pos0 + s_begin, p.k_pos0 + s_end - 1))
        s_end = s_begin;

    /* this lane's query elements, pre-scaled */
    float qf[NPER][VEC];
    const T *qrow = (const T *)p.q + (size_t)t * p.ldq + (size_t)h * hd;
#pragma unroll
    for (int i = 0; i < NPER; i++) {
        int c = gl + G * i;
        if (c < nchunk) {
            vec_io<T, VEC>::load(qrow + c * VEC, qf[i]);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                qf[i][e] *= p.scale_log2;
        } else {
#pragma unroll
            for (int e = 0; e < VEC; e++)
                qf[i][e] = 0.0f;
        }
    }

    float m = -INFINITY, l = 0.0f, acc[NPER][VEC];
#pragma unroll
    for (int i = 0; i < NPER; i++)
#pragma unroll
        for (int e = 0; e < VEC; e++)
            acc[i][e] = 0.0f;

    const T *kbase = (const T *)p.k + (size_t)kvh * hd;
    const T *vbase = (const T *)p.v + (size_t)kvh * hd;
#pragma unroll 2
    for (int s0 = s_begin; s0 < s_end; s0 += ROWS_WARPS * SPW) {
        /* contiguous keys: skip a step the mask hides (uniform over the block) */
        if (!p.slot_pos &&
            !lg_dmask_any(p.mask, qpos, qpos, p.k_pos0 + s0,
                          p.k_pos0 + min(s0 + ROWS_WARPS * SPW, s_end) - 1))
            continue;
        int s = s0 + warp * SPW + gi;
        bool valid = s < s_end;
        int kpos = -1;
        if (valid) {
            kpos = p.slot_pos ? p.slot_pos[s] : p.k_pos0 + s;
            valid = kpos >= 0 && lg_dmask_visible(p.mask, qpos, kpos);
        }
        float kf[NPER][VEC], vf[NPER][VEC];
        const T *krow = kbase + (size_t)(valid ? s : 0) * p.ldk;
        const T *vrow = vbase + (size_t)(valid ? s : 0) * p.ldv;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < NPER; i++) {
            int c = gl + G * i;
            if (valid && c < nchunk) {
                vec_io<T, VEC>::load(krow + c * VEC, kf[i]);
                vec_io<T, VEC>::load(vrow + c * VEC, vf[i]);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    kf[i][e] = vf[i][e] = 0.0f;
            }
#pragma unroll
            for (int e = 0; e < VEC; e++)
                dot = fmaf(qf[i][e], kf[i][e], dot);
        }
#pragma unroll
        for (int o = G / 2; o > 0; o >>= 1)
            dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (valid) {
            float mn = fmaxf(m, dot);
            float corr = exp2f(m - mn), pr = exp2f(dot - mn);
            l = l * corr + pr;
#pragma unroll
            for (int i = 0; i < NPER; i++)
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    acc[i][e] = acc[i][e] * corr + pr * vf[i][e];
            m = mn;
        }
    }

    /* merge the groups of the warp (lanes with the same gl hold the same elements) */
#pragma unroll
    for (int o = G; o < 32; o <<= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
        float a2[NPER * VEC];
#pragma unroll
        for (int i = 0; i < NPER; i++)
#pragma unroll
            for (int e = 0; e < VEC; e++)
                a2[i * VEC + e] = __shfl_xor_sync(0xffffffffu, acc[i][e], o);
        merge_state(m, l, &acc[0][0], m2, l2, a2, NPER * VEC);
    }

    /* merge the warps through shared memory: warp w, lane gl < G writes its state */
    __shared__ float sm_m[ROWS_WARPS], sm_l[ROWS_WARPS];
    __shared__ float sm_acc[ROWS_WARPS][256];
    if (gi == 0) {
        if (gl == 0) {
            sm_m[warp] = m;
            sm_l[warp] = l;
        }
#pragma unroll
        for (int i = 0; i < NPER; i++) {
            int c = gl + G * i;
            if (c < nchunk)
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    sm_acc[warp][c * VEC + e] = acc[i][e];
        }
    }
    __syncthreads();
    /* every thread merges the 4 warp states for its output elements d = threadIdx.x + k*128 */
    float mm = -INFINITY;
    for (int w = 0; w < ROWS_WARPS; w++)
        mm = fmaxf(mm, sm_m[w]);
    float cw[ROWS_WARPS], lt = 0.0f;
    for (int w = 0; w < ROWS_WARPS; w++) {
        cw[w] = mm == -INFINITY ? 0.0f : exp2f(sm_m[w] - mm);
        lt += sm_l[w] * cw[w];
    }
    size_t row = (size_t)t * p.n_heads + h;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < ROWS_WARPS; w++)
            a += cw[w] * sm_acc[w][d];
        if (p.ws) {
            float *part = p.ws + (row * p.n_splits + split) * (size_t)(hd + 2);
            part[2 + d] = a;
        } else {
            T *o = (T *)p.out + (size_t)t * p.ldo + (size_t)h * hd;
            o[d] = lg_elem<T>::from_f(lt > 0.0f ? a / lt : 0.0f);
        }
    }
    if (p.ws && threadIdx.x == 0) {
        float *part = p.ws + (row * p.n_splits + split) * (size_t)(hd + 2);
        part[0] = mm;
        part[1] = lt;
    }
}

/* out = merge of the n_splits partial states of each (query, head); one block per pair. */
template <typename T>
__global__ void attn_merge_kernel(lg_rows_params p)
{
    const int h = blockIdx.x, t = blockIdx.y, hd = p.head_dim;
    size_t row = (size_t)t * p.n_heads + h;
    const float *part = p.ws + row * p.n_splits * (size_t)(hd + 2);
    float mm = -INFINITY;
    for (int sp = 0; sp < p.n_splits; sp++)
        mm = fmaxf(mm, part[(size_t)sp * (hd + 2)]);
    float lt = 0.0f;
    for (int sp = 0; sp < p.n_splits; sp++) {
        const float *ps = part + (size_t)sp * (hd + 2);
        lt += mm == -INFINITY ? 0.0f : ps[1] * exp2f(ps[0] - mm);
    }
    T *o = (T *)p.out + (size_t)t * p.ldo + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        if (mm != -INFINITY)
            for (int sp = 0; sp < p.n_splits; sp++) {
                const float *ps = part + (size_t)sp * (hd + 2);
                a += ps[2 + d] * exp2f(ps[0] - mm);
            }
        o[d] = lg_elem<T>::from_f(lt > 0.0f ? a / lt : 0.0f);
    }
}

template <typename T, int VEC>
static void rows_launch_vec(const lg_rows_params *p, int n, cudaStream_t s)
{
    dim3 grid(p->n_splits, p->n_heads, n);
    int chunks = p->head_dim / VEC;
    /* G lanes a slot: the smallest power of two covering the head's chunks, at most 32 (then each
     * lane holds up to 4 chunks: head_dim <= 256 with VEC = 2) */
    if (chunks <= 1)
        attn_rows_kernel<T, VEC, 1, 1><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
    else if (chunks <= 2)
        attn_rows_kernel<T, VEC, 2, 1><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
    else if (chunks <= 4)
        attn_rows_kernel<T, VEC, 4, 1><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
    else if (chunks <= 8)
        attn_rows_kernel<T, VEC, 8, 1><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
    else if (chunks <= 16)
        attn_rows_kernel<T, VEC, 16, 1><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
    else if (chunks <= 32)
        attn_rows_kernel<T, VEC, 32, 1><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
    else
        attn_rows_kernel<T, VEC, 32, 4><<<grid, ROWS_WARPS * 32, 0, s>>>(*p);
}

template <typename T>
static void rows_launch_t(const lg_rows_params *p, int n, bool vec8, cudaStream_t s)
{
    if (vec8)
        rows_launch_vec<T, 8>(p, n, s);
    else
        rows_launch_vec<T, 2>(p, n, s);
    if (p->n_splits > 1) {
        dim3 grid(p->n_heads, n);
        attn_merge_kernel<T><<<grid, 128, 0, s>>>(*p);
    }
}

int lg_rows_launch(const lg_rows_params *p, lg_kdtype dt, int n, cudaStream_t s, const char *who)
{
    int hd = p->head_dim;
    /* VEC = 8 (16-byte loads) when every row start is 16-byte aligned; else VEC = 2 (4 bytes) */
    bool vec8 = hd % 8 == 0 && p->ldq % 8 == 0 && p->ldk % 8 == 0 && p->ldv % 8 == 0 &&
                ((uintptr_t)p->q & 15) == 0 && ((uintptr_t)p->k & 15) == 0 &&
                ((uintptr_t)p->v & 15) == 0;
    bool vec2 = p->ldq % 2 == 0 && p->ldk % 2 == 0 && p->ldv % 2 == 0 &&
                ((uintptr_t)p->q & 3) == 0 && ((uintptr_t)p->k & 3) == 0 &&
                ((uintptr_t)p->v & 3) == 0;
    if (!vec8 && !vec2)
        return lg_k_fail("%s: q, k, v rows must be 4-byte aligned (even ld, aligned pointers)", who);
    if (hd > 256)
        return lg_k_fail("%s: head_dim %d too large (at most 256)", who, hd);
    if (dt == LG_KDT_F16)
        rows_launch_t<__half>(p, n, vec8, s);
    else
        rows_launch_t<__nv_bfloat16>(p, n, vec8, s);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

int lg_attn_shape_check(const lg_kattn_shape *sh, const char *who)
{
    if (!sh)
        return lg_k_fail("%s: no shape", who);
    if (sh->n_heads <= 0 || sh->n_kv_heads <= 0 || sh->n_heads % sh->n_kv_heads)
        return lg_k_fail("%s: n_heads %d must be a positive multiple of n_kv_heads %d", who,
                         sh->n_heads, sh->n_kv_heads);
    if (sh->head_dim < 2 || sh->head_dim > 256 || sh->head_dim % 2)
        return lg_k_fail("%s: head_dim %d must be even, 2..256", who, sh->head_dim);
    if (!(sh->scale > 0.0f))
        return lg_k_fail("%s: scale %g must be positive", who, sh->scale);
    return 0;
}

/* ---------------------------------------------------------------- the cache (decode) launcher */

/* Slots per split: enough splits that n * n_heads * splits fills the GPU a few times over (about
 * 512 blocks), but at least 128 slots a split so the merge stays cheap. Depends only on the
 * arguments, so lg_k_attn_cache_ws_bytes and the launcher agree. */
static int cache_split_len(int n, int n_heads, int n_slots, int *n_splits)
{
    long per = (long)n * n_heads;
    long want = (512 + per - 1) / per;
    long len = (n_slots + want - 1) / want;
    if (len < 128)
        len = 128;
    len = (len + 63) / 64 * 64;
    *n_splits = (int)((n_slots + len - 1) / len);
    if (*n_splits < 1)
        *n_splits = 1;
    return (int)len;
}

extern "C" size_t lg_k_attn_cache_ws_bytes(int n, const lg_kattn_shape *shape, int n_slots)
{
    if (!shape || n <= 0 || n_slots <= 0 || shape->n_heads <= 0)
        return 0;
    int splits;
    cache_split_len(n, shape->n_heads, n_slots, &splits);
    if (splits <= 1)
        return 0;
    return (size_t)n * shape->n_heads * splits * (shape->head_dim + 2) * sizeof(float);
}

extern "C" int lg_k_attn_cache(void *out, int ldo, const void *q, int ldq, const void *k, int ldk,
                               const void *v, int ldv, lg_kdtype dt, const int *slot_pos,
                               int n_slots, const int *n_live, int n, const int *q_pos, int q_pos0,
                               const lg_kattn_shape *shape, const lg_kmask *mask, void *ws,
                               size_t ws_bytes, void *stream)
{
    const char *who = "lg_k_attn_cache";
    if (lg_attn_shape_check(shape, who))
        return -1;
    if (dt != LG_KDT_F16 && dt != LG_KDT_BF16)
        return lg_k_fail("%s: dtype %d must be float16 or bfloat16", who, (int)dt);
    int hd = shape->head_dim, qd = shape->n_heads * hd, kvd = shape->n_kv_heads * hd;
    if (n < 0 || n_slots < 0 || ldq < qd || ldo < qd || ldk < kvd || ldv < kvd)
        return lg_k_fail("%s: bad sizes n=%d n_slots=%d ldq=%d ldo=%d ldk=%d ldv=%d", who, n,
                         n_slots, ldq, ldo, ldk, ldv);
    if (!slot_pos)
        return lg_k_fail("%s: slot_pos is NULL", who);
    lg_rows_params p;
    memset(&p, 0, sizeof p);
    if (lg_dmask_from(mask, &p.mask, who))
        return -1;
    if (n == 0)
        return 0;
    if (n_slots == 0)
        n_slots = 1; /* every query then sees nothing: zeros (slot 0 is skipped via n_live) */
    p.out = out;
    p.ldo = ldo;
    p.q = q;
    p.ldq = ldq;
    p.k = k;
    p.ldk = ldk;
    p.v = v;
    p.ldv = ldv;
    p.slot_pos = slot_pos;
    p.n_slots = n_slots;
    p.n_live = n_live;
    p.q_pos = q_pos;
    p.q_pos0 = q_pos0;
    p.n_heads = shape->n_heads;
    p.group = shape->n_heads / shape->n_kv_heads;
    p.head_dim = hd;
    p.scale_log2 = shape->scale * 1.4426950408889634f;
    p.split_len = cache_split_len(n, shape->n_heads, n_slots, &p.n_splits);
    if (p.n_splits > 1) {
        size_t need = lg_k_attn_cache_ws_bytes(n, shape, n_slots);
        if (!ws || ws_bytes < need)
            return lg_k_fail("%s: workspace of %zu bytes given, %zu needed", who, ws_bytes, need);
        p.ws = (float *)ws;
    }
    return lg_rows_launch(&p, dt, n, LG_CUDA_STREAM(stream), who);
}

/* ---------------------------------------------------------------- writing the cache */

__global__ void kv_write_kernel(void *kc, void *vc, int ldc, int *slot_pos, const void *k, int ldk,
                                const void *v, int ldv, int esz, int kv_dim, const int *slots,
                                const int *pos, int pos0)
{
    int t = blockIdx.x;
    int s = slots[t];
    const char *kr = (const char *)k + (size_t)t * ldk * esz;
    const char *vr = (const char *)v + (size_t)t * ldv * esz;
    char *kd = (char *)kc + (size_t)s * ldc * esz;
    char *vd = (char *)vc + (size_t)s * ldc * esz;
    int bytes = kv_dim * esz;
    for (int i = threadIdx.x; i < bytes / 2; i += blockDim.x) {
        ((uint16_t *)kd)[i] = ((const uint16_t *)kr)[i];
        ((uint16_t *)vd)[i] = ((const uint16_t *)vr)[i];
    }
    if (threadIdx.x == 0)
        slot_pos[s] = pos ? pos[t] : pos0 + t;
}

extern "C" int lg_k_kv_write(void *k_cache, void *v_cache, int ld_cache, int *slot_pos,
                             const void *k, int ldk, const void *v, int ldv, lg_kdtype dt,
                             int kv_dim, const int *slots, const int *pos, int pos0, int n,
                             void *stream)
{
    const char *who = "lg_k_kv_write";
    if (dt != LG_KDT_F16 && dt != LG_KDT_BF16)
        return lg_k_fail("%s: dtype %d must be float16 or bfloat16", who, (int)dt);
    if (n < 0 || kv_dim <= 0 || ld_cache < kv_dim || ldk < kv_dim || ldv < kv_dim)
        return lg_k_fail("%s: bad sizes n=%d kv_dim=%d ld_cache=%d ldk=%d ldv=%d", who, n, kv_dim,
                         ld_cache, ldk, ldv);
    if (!slots || !slot_pos)
        return lg_k_fail("%s: slots and slot_pos are required", who);
    if (n == 0)
        return 0;
    kv_write_kernel<<<n, 256, 0, LG_CUDA_STREAM(stream)>>>(k_cache, v_cache, ld_cache, slot_pos, k,
                                                           ldk, v, ldv, 2, kv_dim, slots, pos,
                                                           pos0);
    LG_CUDA_LAUNCHED(who);
    return 0;
}
