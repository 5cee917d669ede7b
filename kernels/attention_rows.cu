/* The row attention kernel: one block per (slot split, query head, query), for decode over a KV
 * cache of slots in any order (ring buffers) and as the simple prefill path for head sizes or
 * alignments the tensor-core kernel does not take.
 *
 * Within a block, lanes work in groups of G: a group handles NS key slots a step, each lane
 * holding VEC consecutive elements of the head (16-byte loads when VEC = 8 of a 16-bit type or 4 of
 * float32; 4- or 8-byte loads when VEC = 2), so one key row is read by G lanes in one coalesced
 * access and the dot product is a reduction over the group; the NS slots' loads are in flight
 * together (one memory latency a step). Each group keeps its own online-softmax state (running max
 * m, sum l, output acc in float32, base-2 exponentials); groups, then warps, then splits are merged
 * with the usual rescaling (flash-decoding; the block of the last split of a query and head to
 * finish merges the splits). T is __half, __nv_bfloat16 or float (a float32
 * checkpoint run as such). CPU twin: lg_attention_cpu (runtime/attention_cpu.c). */
#include <math.h>
#include <string.h>

#include "attention_internal.cuh"

#define ROWS_WARPS 4
#define WHOLE_WARPS 16 /* a block over a whole short cache (decode): see lg_k_attn_cache */

/* VEC elements of a row: held as loaded (raw: 16, 8 or 4 bytes), unpacked to floats where used. */
template <typename T, int VEC> struct vec_io;
template <typename T> struct vec_io<T, 8> {
    typedef uint4 raw;
    static __device__ __forceinline__ raw load_raw(const T *p)
    {
        return *reinterpret_cast<const uint4 *>(p);
    }
    static __device__ __forceinline__ raw zero() { return make_uint4(0, 0, 0, 0); }
    static __device__ __forceinline__ void unpack(raw r, float *f) { lg_unpack8<T>(r, f); }
    static __device__ __forceinline__ void load(const T *p, float *f) { unpack(load_raw(p), f); }
};
template <typename T> struct vec_io<T, 2> {
    typedef uint32_t raw;
    static __device__ __forceinline__ raw load_raw(const T *p)
    {
        return *reinterpret_cast<const uint32_t *>(p);
    }
    static __device__ __forceinline__ raw zero() { return 0u; }
    static __device__ __forceinline__ void unpack(raw r, float *f)
    {
        typename lg_elem<T>::pair v = *reinterpret_cast<const typename lg_elem<T>::pair *>(&r);
        float2 x = lg_elem<T>::pair_to_f2(v);
        f[0] = x.x;
        f[1] = x.y;
    }
    static __device__ __forceinline__ void load(const T *p, float *f) { unpack(load_raw(p), f); }
};
/* float32: 4 elements in one 16-byte load, or 2 in an 8-byte one */
template <> struct vec_io<float, 4> {
    typedef uint4 raw;
    static __device__ __forceinline__ raw load_raw(const float *p)
    {
        return *reinterpret_cast<const uint4 *>(p);
    }
    static __device__ __forceinline__ raw zero() { return make_uint4(0, 0, 0, 0); }
    static __device__ __forceinline__ void unpack(raw r, float *f)
    {
        lg_vec16<float>::unpack(r, f);
    }
    static __device__ __forceinline__ void load(const float *p, float *f)
    {
        unpack(load_raw(p), f);
    }
};
template <> struct vec_io<float, 2> {
    typedef uint2 raw;
    static __device__ __forceinline__ raw load_raw(const float *p)
    {
        return *reinterpret_cast<const uint2 *>(p);
    }
    static __device__ __forceinline__ raw zero() { return make_uint2(0, 0); }
    static __device__ __forceinline__ void unpack(raw r, float *f)
    {
        f[0] = __uint_as_float(r.x);
        f[1] = __uint_as_float(r.y);
    }
    static __device__ __forceinline__ void load(const float *p, float *f)
    {
        unpack(load_raw(p), f);
    }
};

/* The keys and values of one step of a lane's group (NS slots), as loaded, and their positions
 * (-1: out of range, or a step the mask hides). */
template <typename T, int VEC, int NPER, int NS> struct kv_step {
    typedef typename vec_io<T, VEC>::raw raw;
    raw k[NS][NPER], v[NS][NPER];
    int kpos[NS];
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

/* The sum (or the largest, max) of v over the block's threads, in every thread; red holds a value a
 * warp and may be reused once every thread has returned. */
__device__ __forceinline__ float block_reduce(float v, bool max, float *red)
{
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = max ? fmaxf(v, w) : v + w;
    }
    __syncthreads(); /* red's previous values are read */
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < ROWS_WARPS; w++)
        v = max ? fmaxf(v, red[w]) : v + red[w];
    return v;
}

#define MERGE_CHUNK (ROWS_WARPS * 32) /* splits weighed a round: one a thread */

/* out = merge of the n_splits partial states of (query t, head h), by the block of the last split
 * to finish. The partials come from other SMs: read through L2 (ld.cg), never from L1. This runs
 * after every other block of the head is done, so its latency is the decode step's: a thread loads
 * one split's max and sum, and an element's partials of every split are loaded together (unrolled),
 * a few L2 round trips in all rather than one a split. */
template <typename T> __device__ void merge_splits(const lg_rows_params &p, int t, int h)
{
    const int hd = p.head_dim, ns = p.n_splits;
    const size_t stride = (size_t)hd + 2;
    size_t row = (size_t)t * p.n_heads + h;
    const float *part = p.ws + row * ns * stride;
    __shared__ float red[ROWS_WARPS];
    __shared__ float weight[MERGE_CHUNK];

    float mm = -INFINITY;
    for (int sp = threadIdx.x; sp < ns; sp += blockDim.x)
        mm = fmaxf(mm, __ldcg(part + sp * stride));
    mm = block_reduce(mm, true, red);

    /* each split's weight exp2(m - mm), a chunk of splits at a time; head_dim <= 256: at most two
     * elements a thread */
    float lsum = 0.0f, a[2] = {0.0f, 0.0f};
    for (int c0 = 0; c0 < ns; c0 += MERGE_CHUNK) {
        const int sp = c0 + threadIdx.x, nc = min(MERGE_CHUNK, ns - c0);
        __syncthreads(); /* the previous chunk's weights are read */
        if (sp < ns) {
            const float *ps = part + sp * stride;
            float c = mm == -INFINITY ? 0.0f : exp2f(__ldcg(ps) - mm);
            weight[threadIdx.x] = c;
            lsum += c * __ldcg(ps + 1);
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int d = threadIdx.x + i * blockDim.x;
            if (d < hd) {
                const float *pa = part + c0 * stride + 2 + d;
#pragma unroll 8
                for (int j = 0; j < nc; j++)
                    a[i] += weight[j] * __ldcg(pa + j * stride);
            }
        }
    }
    const float lt = block_reduce(lsum, false, red);
    T *o = (T *)p.out + (size_t)t * p.ldo + (size_t)h * hd;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int d = threadIdx.x + i * blockDim.x;
        if (d < hd)
            o[d] = lg_elem<T>::from_f(lt > 0.0f ? a[i] / lt : 0.0f);
    }
}

/* Before the wait for the kernel that writes this step's key and value: the first PREFETCH_SLOTS
 * key and value rows of the split, sent to L2 (a prefetch reads nothing into registers, and L2 is
 * coherent, so the row being written is read fresh after the wait), so that the split's first loads
 * find them there. */
#define PREFETCH_SLOTS 128
template <typename T> __device__ __forceinline__ void prefetch_split(const lg_rows_params &p,
                                                                     int kvh, int s_begin,
                                                                     int max_slots)
{
    const int row_bytes = p.head_dim * (int)sizeof(T);
    const int lines = (row_bytes + 127) / 128; /* 128-byte lines a row, rows 16-byte aligned */
    const int slots = min(max_slots, p.n_slots - s_begin);
    for (int i = threadIdx.x; i < slots * lines * 2; i += blockDim.x) {
        int line = i % lines, s = s_begin + (i / lines) / 2;
        const T *base = (i / lines) % 2 ? (const T *)p.v + (size_t)s * p.ldv
                                        : (const T *)p.k + (size_t)s * p.ldk;
        const char *row = (const char *)(base + (size_t)kvh * p.head_dim);
        lg_prefetch_l2(row + min(line * 128, row_bytes - 1));
    }
}

template <typename T, int VEC, int G, int NPER, int W = ROWS_WARPS, int NS = 4>
__global__ void __launch_bounds__(W * 32) attn_rows_kernel(lg_rows_params p)
{
    static_assert(W == ROWS_WARPS || W == WHOLE_WARPS, "blocks of ROWS_WARPS or WHOLE_WARPS warps");
    constexpr int SPW = 32 / G; /* slots a warp handles per step */
    const int split = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gl = lane % G, gi = lane / G;
    const int hd = p.head_dim, nchunk = hd / VEC;
    const int kvh = h / p.group;
    prefetch_split<T>(p, kvh, split * p.split_len, PREFETCH_SLOTS * W / ROWS_WARPS);
    lg_pdl_wait(); /* q, the cache and n_live come from earlier kernels */
    lg_pdl_trigger();
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
    /* A group takes NS slots a step, STEP apart. The loads of a step depend on nothing but the slot
     * index (a slot's position only decides whether its score counts), and the next step's loads
     * are issued before this step's arithmetic: two steps in flight, one memory latency hidden
     * behind the other. */
    constexpr int STEP = W * SPW;
    typedef kv_step<T, VEC, NPER, NS> step_t;
    auto issue = [&](step_t &b, int s0) {
        /* contiguous keys: a step the mask hides (uniform over the block) is not loaded */
        bool hidden = s0 >= s_end ||
                      (!p.slot_pos && !lg_dmask_any(p.mask, qpos, qpos, p.k_pos0 + s0,
                                                    p.k_pos0 + min(s0 + STEP * NS, s_end) - 1));
#pragma unroll
        for (int j = 0; j < NS; j++) {
            int s = s0 + j * STEP + warp * SPW + gi;
            bool in = !hidden && s < s_end;
            b.kpos[j] = in ? (p.slot_pos ? p.slot_pos[s] : p.k_pos0 + s) : -1;
            const T *krow = kbase + (size_t)(in ? s : s_begin) * p.ldk;
            const T *vrow = vbase + (size_t)(in ? s : s_begin) * p.ldv;
#pragma unroll
            for (int i = 0; i < NPER; i++) {
                int c = gl + G * i;
                bool ld = in && c < nchunk;
                b.k[j][i] = ld ? vec_io<T, VEC>::load_raw(krow + c * VEC) : vec_io<T, VEC>::zero();
                b.v[j][i] = ld ? vec_io<T, VEC>::load_raw(vrow + c * VEC) : vec_io<T, VEC>::zero();
            }
        }
    };
    auto consume = [&](const step_t &b) {
        float dot[NS], mx = m;
        bool valid[NS];
#pragma unroll
        for (int j = 0; j < NS; j++) {
            dot[j] = 0.0f;
#pragma unroll
            for (int i = 0; i < NPER; i++) {
                float kf[VEC];
                vec_io<T, VEC>::unpack(b.k[j][i], kf);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    dot[j] = fmaf(qf[i][e], kf[e], dot[j]);
            }
#pragma unroll
            for (int o = G / 2; o > 0; o >>= 1)
                dot[j] += __shfl_xor_sync(0xffffffffu, dot[j], o);
            valid[j] = b.kpos[j] >= 0 && lg_dmask_visible(p.mask, qpos, b.kpos[j]);
            if (valid[j])
                mx = fmaxf(mx, dot[j]);
        }
        if (mx == -INFINITY)
            return; /* nothing visible yet */
        float corr = exp2f(m - mx);
        l *= corr;
#pragma unroll
        for (int i = 0; i < NPER; i++)
#pragma unroll
            for (int e = 0; e < VEC; e++)
                acc[i][e] *= corr;
#pragma unroll
        for (int j = 0; j < NS; j++) {
            if (!valid[j])
                continue;
            float pr = exp2f(dot[j] - mx);
            l += pr;
#pragma unroll
            for (int i = 0; i < NPER; i++) {
                float vf[VEC];
                vec_io<T, VEC>::unpack(b.v[j][i], vf);
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    acc[i][e] = fmaf(pr, vf[e], acc[i][e]);
            }
        }
        m = mx;
    };
    step_t b0, b1;
    if (s_begin < s_end)
        issue(b0, s_begin);
    for (int s0 = s_begin; s0 < s_end; s0 += 2 * STEP * NS) {
        issue(b1, s0 + STEP * NS);
        consume(b0);
        if (s0 + STEP * NS >= s_end)
            break;
        issue(b0, s0 + 2 * STEP * NS);
        consume(b1);
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
    __shared__ float sm_m[W], sm_l[W];
    __shared__ float sm_acc[W][256];
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
    /* every thread merges the W warp states for its output elements d = threadIdx.x + k * 32W */
    float mm = -INFINITY;
    for (int w = 0; w < W; w++)
        mm = fmaxf(mm, sm_m[w]);
    float cw[W], lt = 0.0f;
    for (int w = 0; w < W; w++) {
        cw[w] = mm == -INFINITY ? 0.0f : exp2f(sm_m[w] - mm);
        lt += sm_l[w] * cw[w];
    }
    size_t row = (size_t)t * p.n_heads + h;
    float *part = p.ws ? p.ws + (row * p.n_splits + split) * (size_t)(hd + 2) : NULL;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < W; w++)
            a += cw[w] * sm_acc[w][d];
        if (part) {
            part[2 + d] = a;
        } else {
            T *o = (T *)p.out + (size_t)t * p.ldo + (size_t)h * hd;
            o[d] = lg_elem<T>::from_f(lt > 0.0f ? a / lt : 0.0f);
        }
    }
    /* whole-cache blocks are launched over one split only (lg_k_attn_cache): no partials, and no
     * merge, which is written for blocks of ROWS_WARPS */
    if constexpr (W != ROWS_WARPS)
        return;
    if (!part)
        return;
    if (threadIdx.x == 0) {
        part[0] = mm;
        part[1] = lt;
    }
    /* the last split of (query, head) to finish merges them all: no merge kernel to launch */
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicAdd(p.done + row, 1u) == (unsigned)p.n_splits - 1;
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    merge_splits<T>(p, t, h);
    if (threadIdx.x == 0)
        p.done[row] = 0; /* as the workspace was given */
}

template <typename T, int VEC, int W>
static void rows_launch_vec(const lg_rows_params *p, int n, cudaStream_t s)
{
    dim3 grid(p->n_splits, p->n_heads, n);
    int chunks = p->head_dim / VEC;
    /* G lanes a slot: the smallest power of two covering the head's chunks, at most 32 (then each
     * lane holds up to 4 chunks: head_dim <= 256 with VEC = 2) */
    if (chunks <= 1)
        lg_launch_pdl(attn_rows_kernel<T, VEC, 1, 1, W>, grid, W * 32, 0, s, *p);
    else if (chunks <= 2)
        lg_launch_pdl(attn_rows_kernel<T, VEC, 2, 1, W>, grid, W * 32, 0, s, *p);
    else if (chunks <= 4)
        lg_launch_pdl(attn_rows_kernel<T, VEC, 4, 1, W>, grid, W * 32, 0, s, *p);
    else if (chunks <= 8)
        lg_launch_pdl(attn_rows_kernel<T, VEC, 8, 1, W>, grid, W * 32, 0, s, *p);
    else if (chunks <= 16)
        lg_launch_pdl(attn_rows_kernel<T, VEC, 16, 1, W>, grid, W * 32, 0, s, *p);
    else if (chunks <= 32)
        lg_launch_pdl(attn_rows_kernel<T, VEC, 32, 1, W>, grid, W * 32, 0, s, *p);
    else
        lg_launch_pdl(attn_rows_kernel<T, VEC, 32, 4, W>, grid, W * 32, 0, s, *p);
}

template <typename T>
static void rows_launch_t(const lg_rows_params *p, int n, bool wide, cudaStream_t s)
{
    if (p->whole_cache && wide)
        rows_launch_vec<T, lg_vec16<T>::N, WHOLE_WARPS>(p, n, s);
    else if (p->whole_cache)
        rows_launch_vec<T, 2, WHOLE_WARPS>(p, n, s);
    else if (wide)
        rows_launch_vec<T, lg_vec16<T>::N, ROWS_WARPS>(p, n, s);
    else
        rows_launch_vec<T, 2, ROWS_WARPS>(p, n, s);
}

int lg_rows_launch(const lg_rows_params *p, lg_kdtype dt, int n, cudaStream_t s, const char *who)
{
    int hd = p->head_dim, esz = lg_kdtype_size(dt), wv = 16 / esz;
    uintptr_t any = (uintptr_t)p->q | (uintptr_t)p->k | (uintptr_t)p->v;
    /* VEC = wv (16-byte loads) when every row start is 16-byte aligned and one chunk a lane covers
     * the head; else VEC = 2 (loads of two elements, 4 or 8 bytes). The second condition only bites
     * float32 heads over 128: four 16-byte chunks a lane would spill registers, four pairs do
     * not. */
    bool wide = hd % wv == 0 && hd / wv <= 32 && p->ldq % wv == 0 && p->ldk % wv == 0 &&
                p->ldv % wv == 0 && (any & 15) == 0;
    bool pairs = p->ldq % 2 == 0 && p->ldk % 2 == 0 && p->ldv % 2 == 0 &&
                 (any & (uintptr_t)(2 * esz - 1)) == 0;
    if (!wide && !pairs)
        return lg_k_fail("%s: q, k, v rows must be %d-byte aligned (even ld, aligned pointers)",
                         who, 2 * esz);
    if (hd > 256)
        return lg_k_fail("%s: head_dim %d too large (at most 256)", who, hd);
    if (dt == LG_KDT_F32)
        rows_launch_t<float>(p, n, wide, s);
    else if (dt == LG_KDT_F16)
        rows_launch_t<__half>(p, n, wide, s);
    else
        rows_launch_t<__nv_bfloat16>(p, n, wide, s);
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

#define SPLIT_TARGET_DEFAULT 512
static int split_target = SPLIT_TARGET_DEFAULT; /* blocks the splits aim at (set_split_target) */

extern "C" int lg_k_attn_cache_set_split_target(int blocks)
{
    if (blocks != 0 && (blocks < 64 || blocks > 8192))
        return lg_k_fail("lg_k_attn_cache_set_split_target: %d blocks (64 to 8192, or 0)", blocks);
    split_target = blocks ? blocks : SPLIT_TARGET_DEFAULT;
    return 0;
}

/* A short cache (decode at short context, a small sliding window's ring) gets one block of
 * WHOLE_WARPS warps per query and head, over every slot: its loads are in flight in one or two
 * round trips (128 slots a step, two steps in flight) and there is no split to merge (the merge's
 * partials, fence, counter and L2 reads are on a decode step's critical path). Only while the
 * whole-cache blocks' warps stay within the split target's. 512 slots (prefetch_split's reach at
 * WHOLE_WARPS): on an 8-layer 7B on the H200 these blocks made a token 2-6% faster up to 448 slots
 * and 7% slower at 1088 (docs/BENCHMARKS.md). */
#define WHOLE_MAX_SLOTS 512

static bool cache_whole(int n, int n_heads, int n_slots)
{
    return n_slots <= WHOLE_MAX_SLOTS &&
           (long)n * n_heads * WHOLE_WARPS <= (long)split_target * ROWS_WARPS;
}

/* Slots per split: enough splits that n * n_heads * splits fills the GPU a few times over (about
 * split_target blocks), but at least 128 slots a split so the merge stays cheap; one split when the
 * blocks take whole caches. Depends only on the arguments, so lg_k_attn_cache_ws_bytes and the
 * launcher agree. */
static int cache_split_len(int n, int n_heads, int n_slots, int *n_splits)
{
    if (cache_whole(n, n_heads, n_slots)) {
        *n_splits = 1;
        return n_slots;
    }
    long per = (long)n * n_heads;
    long want = (split_target + per - 1) / per;
    long len = (n_slots + want - 1) / want;
    if (len < 128)
        len = 128;
    len = (len + 63) / 64 * 64;
    *n_splits = (int)((n_slots + len - 1) / len);
    if (*n_splits < 1)
        *n_splits = 1;
    return (int)len;
}

extern "C" long lg_k_attn_cache_slot_bound(long live)
{
    long b = 128; /* a split's least length */
    while (b < live && b < (1L << 40))
        b <<= 1;
    return b;
}

/* The workspace: a counter per (query, head) of how many of its splits are done, then the splits'
 * partial states. Splits exist only while n * n_heads < split_target <= 8192, so the counters fit a
 * region of fixed size, which every call (any n, any layer) finds at the same place, zeroed. */
#define DONE_BYTES (8192 * sizeof(unsigned))

extern "C" size_t lg_k_attn_cache_ws_bytes(int n, const lg_kattn_shape *shape, int n_slots)
{
    if (!shape || n <= 0 || n_slots <= 0 || shape->n_heads <= 0)
        return 0;
    int splits;
    cache_split_len(n, shape->n_heads, n_slots, &splits);
    if (splits <= 1)
        return 0;
    return DONE_BYTES + (size_t)n * shape->n_heads * splits * (shape->head_dim + 2) * sizeof(float);
}

extern "C" int lg_k_attn_cache_ws_init(void *ws, size_t ws_bytes, void *stream)
{
    if (!ws || ws_bytes < DONE_BYTES)
        return 0; /* too small for any split: lg_k_attn_cache will not use it */
    LG_CUDA_TRY(cudaMemsetAsync(ws, 0, DONE_BYTES, LG_CUDA_STREAM(stream)));
    return 0;
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
    if (dt != LG_KDT_F32 && dt != LG_KDT_F16 && dt != LG_KDT_BF16)
        return lg_k_fail("%s: dtype %d must be float32, float16 or bfloat16", who, (int)dt);
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
    p.whole_cache = cache_whole(n, shape->n_heads, n_slots);
    if (p.n_splits > 1) {
        size_t need = lg_k_attn_cache_ws_bytes(n, shape, n_slots);
        if (!ws || ws_bytes < need)
            return lg_k_fail("%s: workspace of %zu bytes given, %zu needed", who, ws_bytes, need);
        p.done = (unsigned *)ws;
        p.ws = (float *)((char *)ws + DONE_BYTES);
    }
    return lg_rows_launch(&p, dt, n, LG_CUDA_STREAM(stream), who);
}

/* ---------------------------------------------------------------- writing the cache */

/* Block (t, 0) copies k row t to its slot, block (t, 1) v row t; 16-byte units when every row is
 * 16-byte aligned (unit 16), else one element at a time (unit = esz: 4 or 2 bytes). */
__global__ void kv_write_kernel(void *kc, void *vc, int ldc, int *slot_pos, const void *k, int ldk,
                                const void *v, int ldv, int esz, int kv_dim, const int *slots,
                                const int *pos, int pos0, int unit)
{
    int t = blockIdx.x, which = blockIdx.y;
    lg_pdl_wait();
    lg_pdl_trigger();
    int s = slots[t];
    const char *src = which ? (const char *)v + (size_t)t * ldv * esz
                            : (const char *)k + (size_t)t * ldk * esz;
    char *dst = (char *)(which ? vc : kc) + (size_t)s * ldc * esz;
    int bytes = kv_dim * esz;
    if (unit == 16)
        for (int i = threadIdx.x; i < bytes / 16; i += blockDim.x)
            ((uint4 *)dst)[i] = ((const uint4 *)src)[i];
    else if (unit == 4)
        for (int i = threadIdx.x; i < bytes / 4; i += blockDim.x)
            ((uint32_t *)dst)[i] = ((const uint32_t *)src)[i];
    else
        for (int i = threadIdx.x; i < bytes / 2; i += blockDim.x)
            ((uint16_t *)dst)[i] = ((const uint16_t *)src)[i];
    if (which == 0 && threadIdx.x == 0)
        slot_pos[s] = pos ? pos[t] : pos0 + t;
}

extern "C" int lg_k_kv_write(void *k_cache, void *v_cache, int ld_cache, int *slot_pos,
                             const void *k, int ldk, const void *v, int ldv, lg_kdtype dt,
                             int kv_dim, const int *slots, const int *pos, int pos0, int n,
                             void *stream)
{
    const char *who = "lg_k_kv_write";
    if (dt != LG_KDT_F32 && dt != LG_KDT_F16 && dt != LG_KDT_BF16)
        return lg_k_fail("%s: dtype %d must be float32, float16 or bfloat16", who, (int)dt);
    if (n < 0 || kv_dim <= 0 || ld_cache < kv_dim || ldk < kv_dim || ldv < kv_dim)
        return lg_k_fail("%s: bad sizes n=%d kv_dim=%d ld_cache=%d ldk=%d ldv=%d", who, n, kv_dim,
                         ld_cache, ldk, ldv);
    if (!slots || !slot_pos)
        return lg_k_fail("%s: slots and slot_pos are required", who);
    if (n == 0)
        return 0;
    int esz = lg_kdtype_size(dt);
    uintptr_t any = (uintptr_t)k_cache | (uintptr_t)v_cache | (uintptr_t)k | (uintptr_t)v;
    int unit = (kv_dim * esz) % 16 == 0 && (ld_cache * esz) % 16 == 0 && (ldk * esz) % 16 == 0 &&
                       (ldv * esz) % 16 == 0 && (any & 15) == 0
                   ? 16
                   : esz;
    lg_launch_pdl(kv_write_kernel, dim3((unsigned)n, 2), 256, 0, LG_CUDA_STREAM(stream), k_cache,
                  v_cache, ld_cache, slot_pos, k, ldk, v, ldv, esz, kv_dim, slots, pos, pos0, unit);
    LG_CUDA_LAUNCHED(who);
    return 0;
}
