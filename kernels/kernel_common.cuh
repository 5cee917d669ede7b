/* Device-side helpers shared by the kernels of kernels/ (not part of the C API): element loads and
 * stores for a dtype known at run time or at compile time, warp reductions, launch checks. */
#ifndef LG_KERNEL_COMMON_CUH
#define LG_KERNEL_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <type_traits>

#include "cuda_check.h"
#include "kernel_types.h"

#define LG_CUDA_STREAM(s) ((cudaStream_t)(s))

/* ---------------------------------------------------------------- element access */

/* Run-time dtype: for memory-bound row kernels, where a uniform branch costs nothing. */
__device__ __forceinline__ float lg_ld(const void *p, int dt, size_t i)
{
    if (dt == LG_KDT_F32)
        return ((const float *)p)[i];
    if (dt == LG_KDT_F16)
        return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

__device__ __forceinline__ void lg_st(void *p, int dt, size_t i, float v)
{
    if (dt == LG_KDT_F32)
        ((float *)p)[i] = v;
    else if (dt == LG_KDT_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

/* The value v takes once stored in dt (float32 arithmetic on what the memory will hold). */
__device__ __forceinline__ float lg_round_to(int dt, float v)
{
    if (dt == LG_KDT_F16)
        return __half2float(__float2half_rn(v));
    if (dt == LG_KDT_BF16)
        return __bfloat162float(__float2bfloat16_rn(v));
    return v;
}

/* SwiGLU's silu(g) u, in one place: the fused gate|up product (gemv_quant.cu) must give what
 * lg_k_swiglu gives, bit for bit. */
__device__ __forceinline__ float lg_silu_mul(float g, float u)
{
    const float silu = g / (1.0f + expf(-g));
    return silu * u;
}

/* RoPE (elementwise.h, lg_k_rope): the cos and sin of pair i at position p (inv_freq is
 * inv_freq[i]), and the rotation of the pair (x0, x1) = (x[i], x[i + head_dim / 2]). In one place:
 * the RoPE kernel and the q|k|v product's epilogue (gemv_quant.cu) must agree bit for bit. */
__device__ __forceinline__ void lg_rope_cs(int p, float inv_freq, float attn_scale, float *c,
                                           float *s)
{
    const float angle = __fmul_rn((float)p, inv_freq);
    double sd, cd;
    sincos((double)angle, &sd, &cd);
    *c = (float)cd * attn_scale, *s = (float)sd * attn_scale;
}

__device__ __forceinline__ void lg_rope_rotate(float x0, float x1, float c, float s, float *y0,
                                               float *y1)
{
    *y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    *y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
}

/* Compile-time dtype. */
template <typename T> struct lg_elem;
template <> struct lg_elem<__half> {
    typedef __half2 pair;
    static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
    static __device__ __forceinline__ float2 pair_to_f2(__half2 x) { return __half22float2(x); }
    static __device__ __forceinline__ __half2 f2_to_pair(float a, float b)
    {
        return __floats2half2_rn(a, b);
    }
};
template <> struct lg_elem<__nv_bfloat16> {
    typedef __nv_bfloat162 pair;
    static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
    static __device__ __forceinline__ float2 pair_to_f2(__nv_bfloat162 x)
    {
        return __bfloat1622float2(x);
    }
    static __device__ __forceinline__ __nv_bfloat162 f2_to_pair(float a, float b)
    {
        return __floats2bfloat162_rn(a, b);
    }
};
/* float32 as an element type: the identity, for kernels templated on T that also take float. */
template <> struct lg_elem<float> {
    typedef float2 pair;
    static __device__ __forceinline__ float to_f(float x) { return x; }
    static __device__ __forceinline__ float from_f(float x) { return x; }
    static __device__ __forceinline__ float2 pair_to_f2(float2 x) { return x; }
    static __device__ __forceinline__ float2 f2_to_pair(float a, float b)
    {
        return make_float2(a, b);
    }
};

/* 8 packed 16-bit elements (one 16-byte load) to floats. */
template <typename T>
__device__ __forceinline__ void lg_unpack8(uint4 u, float *f)
{
    typedef typename lg_elem<T>::pair P;
    const P *p = reinterpret_cast<const P *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v = lg_elem<T>::pair_to_f2(p[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

/* One 16-byte load of T as floats: N elements (8 of a 16-bit type, 4 of float32). */
template <typename T> struct lg_vec16 {
    static constexpr int N = 8;
    static __device__ __forceinline__ void unpack(uint4 u, float *f) { lg_unpack8<T>(u, f); }
};
template <> struct lg_vec16<float> {
    static constexpr int N = 4;
    static __device__ __forceinline__ void unpack(uint4 u, float *f)
    {
        f[0] = __uint_as_float(u.x);
        f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z);
        f[3] = __uint_as_float(u.w);
    }
};

/* ---------------------------------------------------------------- reductions */

__device__ __forceinline__ float lg_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float lg_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
 * `red` is 32 floats of shared memory. */
__device__ __forceinline__ float lg_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lg_warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return lg_warp_sum(v);
}

/* ---------------------------------------------------------------- mask visibility */

/* Mirror of formats/longgen.h lg_attn_visible (kernels see no formats/ header). */
struct lg_dmask {
    int kind, sink, window, block, local, stride;
};

__host__ __device__ __forceinline__ bool lg_dmask_visible(const lg_dmask &m, int i, int j)
{
    if (j > i || j < 0)
        return false;
    if (m.kind == LG_KMASK_SINK_WINDOW)
        return j < m.sink || i - j < m.window;
    if (m.kind == LG_KMASK_BLOCK_STRIDED) {
        int qb = i / m.block, kb = j / m.block;
        return qb - kb < m.local || (kb + 1) % m.stride == 0;
    }
    return true;
}

/* Does any query position in [q0, q1] see any key position in [k0, k1]? (Conservative: true when
 * unsure, never false when some pair is visible.) */
__host__ __device__ __forceinline__ bool lg_dmask_any(const lg_dmask &m, int q0, int q1, int k0,
                                                      int k1)
{
    if (k0 > q1 || k1 < 0)
        return false;
    if (k0 < 0)
        k0 = 0;
    if (m.kind == LG_KMASK_SINK_WINDOW)
        return k0 < m.sink || q0 - k1 < m.window;
    if (m.kind == LG_KMASK_BLOCK_STRIDED) {
        int qb0 = q0 / m.block, kb0 = k0 / m.block, kb1 = k1 / m.block;
        if (qb0 - kb1 < m.local)
            return true;
        /* some kb in [kb0, kb1] with (kb + 1) % stride == 0 */
        int first = ((kb0 + 1 + m.stride - 1) / m.stride) * m.stride - 1;
        return first <= kb1;
    }
    return true;
}

/* Does every query position in [q0, q1] see every key position in [k0, k1] (0 <= k0)? */
__host__ __device__ __forceinline__ bool lg_dmask_all(const lg_dmask &m, int q0, int q1, int k0,
                                                      int k1)
{
    if (k1 > q0 || k0 < 0)
        return false;
    if (m.kind == LG_KMASK_SINK_WINDOW)
        return k1 < m.sink || q1 - k0 < m.window;
    if (m.kind == LG_KMASK_BLOCK_STRIDED) {
        int qb1 = q1 / m.block, kb0 = k0 / m.block, kb1 = k1 / m.block;
        return qb1 - kb0 < m.local || (kb0 == kb1 && (kb0 + 1) % m.stride == 0);
    }
    return true;
}

/* Checks a host mask description and converts it (NULL = full). */
int lg_dmask_from(const lg_kmask *mask, lg_dmask *out, const char *who);

/* ---------------------------------------------------------------- programmatic dependent launch

 * Hopper lets a kernel start while the one before it in the stream is still finishing
 * (programmatic dependent launch): its blocks are scheduled early and wait in lg_pdl_wait() until
 * the earlier grid has completed and its writes are visible. What comes before the wait (index
 * arithmetic, prefetching weights that no kernel writes) overlaps the previous kernel's tail and the
 * launch gap, which at decode (about ten small kernels a layer) is a large part of a token's time.
 *
 * Rules for a kernel launched with lg_launch_pdl:
 *   - it calls lg_pdl_wait() before it reads anything an earlier kernel writes and before it writes
 *     anything (a block that returns without touching memory may skip it);
 *   - it may call lg_pdl_trigger() to let the next kernel's blocks be scheduled; every kernel here
 *     does so right after the wait but RMSNorm, which does so before it. Either is safe because
 *     the next kernel waits in turn, and the next kernel is only launched once every block of
 *     this one has been scheduled, so early blocks never hold back an earlier grid.
 * Waiting on the previous grid is transitive: that grid waited for its own predecessor before it
 * completed. Kernels launched with <<< >>> (cuBLAS's too) keep the full stream order. */
__device__ __forceinline__ void lg_pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void lg_pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Whether launches on the current device use programmatic dependent launch: only on compute
 * capability 9.0, whose sm_90a code has the waits (the portable PTX target runs on other GPUs,
 * where a JIT of compute_80 code would have none), and not with LG_PDL=0 in the environment. */
bool lg_pdl_enabled();

/* The current device's SM count (1 if it cannot be read). */
int lg_sm_count();

/* Whether the current device is compute capability 9.0 (H100/H200), whose sm_90a code has the
 * wgmma kernels (the portable compute_80 PTX target has them compiled out). */
bool lg_is_sm90();

/* Lets fn use up to `bytes` of dynamic shared memory on the current device (the attribute is the
 * device's: a tensor-parallel engine sets it on each). done: one bit per device already set, kept
 * by the caller (a static per kernel). 0, or -1 with lg_k_last_error(). */
int lg_smem_optin(const void *fn, size_t bytes, unsigned long long *done);

/* kern<<<grid, block, smem, s>>>(args...), with programmatic dependent launch where
 * lg_pdl_enabled(). kern must follow the rules above. Errors: cudaGetLastError, as with <<< >>>. */
template <typename... KArgs, typename... Args>
static inline void lg_launch_pdl(void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                 cudaStream_t s, Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = lg_pdl_enabled() ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, kern, ((KArgs)args)...);
}

/* ---------------------------------------------------------------- PTX shared by the GEMVs and attention */

/* 16 bytes from global memory that is read once: through the non-coherent path, not kept in L1. */
__device__ __forceinline__ uint4 lg_ld_stream16(const void *p)
{
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

/* Starts bringing the 128-byte line of p into L2 (no register waits on it). */
__device__ __forceinline__ void lg_prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* c += a (16x16, row) * b (16x8, col) on the tensor cores, float32 accumulation; T is __half or
 * __nv_bfloat16. */
template <typename T>
__device__ __forceinline__ void lg_mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    if constexpr (std::is_same<T, __half>::value)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif
