/* Flash-style prefill attention for Hopper (compute capability 9.0): the same algorithm as the
 * mma.sync kernel of attention_prefill.cu (tiles of keys, online softmax in base 2, masked tiles
 * never loaded), on the warpgroup tensor-core instructions (wgmma), which H100 runs at about twice
 * the rate of mma.sync.
 *
 * A block owns BM = 128 queries of one head: two warpgroups of 64 rows each. Key/value tiles of
 * BN = 128 rows stream through three shared-memory stages by cp.async. Per tile each warpgroup
 *   S = Q K^T      wgmma, both operands in shared memory (Q and K rows are K-major, 128-byte swizzle)
 *   O += P V       wgmma, P from registers (the S accumulators repacked), V transposed by the unit
 * and the two overlap across tiles: S of tile j is issued together with P V of tile j-1, so the
 * softmax of tile j runs while the tensor cores do P V (FlashAttention-3's in-warpgroup pipelining).
 * That needs K of tile j and V of tile j-1 at once, hence three stages.
 *
 * Shared-memory tiles are [HD / 64][rows][64]: 128-byte rows whose 16-byte chunks are XOR-swizzled
 * by the row's low three bits, the layout wgmma's 128-byte-swizzle descriptors describe.
 *
 * bfloat16 splits P into hi + lo parts (as the mma.sync kernel does, for the same accuracy as
 * float16), one more P V product per tile.
 *
 * Head size 128 only (Llama's); the others take the mma.sync kernel. CPU twin: lg_attention_cpu. */
#include <math.h>
#include <stdint.h>
#include <type_traits>

#include "attention_flash.cuh"

#define SM90_HD 128
#define SM90_BM 128
#define SM90_BN 128
#define SM90_STAGES 3
#define SM90_THREADS 256

/* Only the sm_90a build has wgmma; the portable compute_80 PTX gets an empty kernel that the
 * launcher never starts (lg_fa_sm90_takes is false off compute capability 9.0). */
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LG_HAVE_WGMMA 1
#endif

/* ---------------------------------------------------------------- wgmma wrappers */

#define WG_F4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WG_F16(i) WG_F4(i), WG_F4(i + 4), WG_F4(i + 8), WG_F4(i + 12)
#define WG_F64 WG_F16(0), WG_F16(16), WG_F16(32), WG_F16(48)
#define WG_D64                                                                                     \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "  \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "   \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "   \
    "%56, %57, %58, %59, %60, %61, %62, %63}"

#ifdef LG_HAVE_WGMMA
/* Shared-memory matrix descriptor: start address, leading / stride byte offsets (16-byte units),
 * 128-byte swizzle (layout type 1 in bits 62-63). */
static __device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
           ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

static __device__ __forceinline__ void wg_fence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

static __device__ __forceinline__ void wg_commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void wg_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* Keeps the compiler from moving reads or writes of d across a wgmma issue or wait: the
 * accumulators change behind its back between the two. */
static __device__ __forceinline__ void wg_hold(float (&d)[64])
{
#pragma unroll
    for (int i = 0; i < 64; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}

/* Shared memory written through the generic proxy (cp.async) made visible to wgmma's reads. */
static __device__ __forceinline__ void fence_async_smem()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* d (64x128 f32) = or += A (64x16, shared, K-major) * B (16x128, shared, K-major) */
template <bool BF>
static __device__ __forceinline__ void wg_ss(float (&d)[64], uint64_t da, uint64_t db, int acc)
{
    if constexpr (!BF)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " WG_D64
                     ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : WG_F64
                     : "l"(da), "l"(db), "r"(acc));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                     ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : WG_F64
                     : "l"(da), "l"(db), "r"(acc));
}

/* d (64x128 f32) += A (64x16, registers: each warp's 16 rows in the mma.sync A layout) *
 * B (16x128, shared, MN-major: rows of B are contiguous, the unit transposes) */
template <bool BF>
static __device__ __forceinline__ void wg_rs_t(float (&d)[64], const unsigned (&a)[4], uint64_t db)
{
    if constexpr (!BF)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " WG_D64
                     ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                     : WG_F64
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                     ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                     : WG_F64
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

/* Byte offset of 16-byte chunk c (0 .. HD/8 - 1) of row r in a [HD / 64][rows][64] tile. */
static __device__ __forceinline__ uint32_t sm90_chunk(int rows, int r, int c)
{
    return (uint32_t)((c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}
#endif

/* ---------------------------------------------------------------- the kernel */


template <typename T>
__global__ void __launch_bounds__(SM90_THREADS, 1) flash_prefill_sm90_kernel(fa_params p)
{
#ifdef LG_HAVE_WGMMA
    constexpr int HD = SM90_HD, BM = SM90_BM, BN = SM90_BN, C = HD / 8, NT = SM90_THREADS;
    constexpr int KSTEPS = HD / 16, PSTEPS = BN / 16;
    constexpr uint32_t TILE = BN * HD * 2; /* bytes of one K or V tile */
    constexpr bool BF = std::is_same<T, __nv_bfloat16>::value;
    extern __shared__ unsigned char sm90_raw[];
    /* 128-byte swizzle repeats every 1024 bytes and wgmma computes it from the address */
    unsigned char *smem = (unsigned char *)(((uintptr_t)sm90_raw + 1023) & ~(uintptr_t)1023);
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t q_s = sbase, kv_s = sbase + BM * HD * 2; /* stage st: K at kv_s + 2*st*TILE, V after */

    const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, wl = (tid >> 5) & 3;
    const int g = lane >> 2, tq = lane & 3;
    const int qtile = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
    const int h = blockIdx.y, kvh = h / p.group;
    const int m0 = qtile * BM, rows = min(BM, p.n - m0);
    const int qp0 = p.q_pos0 + m0, qp1 = qp0 + rows - 1;
    const int kend = min(p.T, qp1 - p.k_pos0 + 1);
    const int jend = kend > 0 ? (kend + BN - 1) / BN : 0;

    const T *qg = (const T *)p.q + (size_t)m0 * p.ldq + (size_t)h * HD;
    const T *kg = (const T *)p.k + (size_t)kvh * HD;
    const T *vg = (const T *)p.v + (size_t)kvh * HD;

    for (int i = tid; i < BM * C; i += NT) {
        int r = i / C, c = i % C;
        bool ok = r < rows;
        cp_async16(smem + sm90_chunk(BM, r, c), qg + (size_t)(ok ? r : 0) * p.ldq + c * 8, ok);
    }
    auto load_kv = [&](int jt, int st) {
        int r0 = jt * BN;
        unsigned char *kd = smem + BM * HD * 2 + 2 * st * TILE, *vd = kd + TILE;
        for (int i = tid; i < BN * C; i += NT) {
            int r = i / C, c = i % C;
            bool ok = r0 + r < p.T;
            size_t src = ok ? (size_t)(r0 + r) : 0;
            cp_async16(kd + sm90_chunk(BN, r, c), kg + src * p.ldk + c * 8, ok);
            cp_async16(vd + sm90_chunk(BN, r, c), vg + src * p.ldv + c * 8, ok);
        }
    };

    /* this warpgroup's 64 rows of Q; K and V of stage st */
    auto q_desc = [&](int kk) {
        return wg_desc(q_s + (kk >> 2) * BM * 128 + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
    };
    auto k_desc = [&](int st, int kk) {
        return wg_desc(kv_s + 2 * st * TILE + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
    };
    /* V as the MN-major B of P V: 64-column halves BN * 128 bytes apart, 8-key groups 1024 */
    auto v_desc = [&](int st, int kk) {
        return wg_desc(kv_s + 2 * st * TILE + TILE + kk * 16 * 128, BN * 128, 1024);
    };

    float o[64], s[64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        o[i] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    unsigned pa[PSTEPS][4], plo[BF ? PSTEPS : 1][4];
    const int row_in_block = wg * 64 + wl * 16 + g; /* and + 8 */

    /* S of tile jt scaled to base 2 and masked; then the online-softmax update of row r's max and
     * sum, leaving exp2(S - max) in s. Returns nothing: corr[r] is the rescale of the old O. */
    auto softmax = [&](int jt, float (&corr)[2]) {
        const int kr0 = jt * BN;
        const bool full = kr0 + BN <= p.T &&
                          lg_dmask_all(p.mask, qp0, qp1, p.k_pos0 + kr0, p.k_pos0 + kr0 + BN - 1);
#pragma unroll
        for (int i = 0; i < 64; i++) {
            float x = s[i] * p.scale_log2;
            if (!full) {
                int row = row_in_block + ((i >> 1) & 1) * 8;
                int kr = kr0 + (i >> 2) * 8 + tq * 2 + (i & 1);
                if (!(kr < p.T && lg_dmask_visible(p.mask, qp0 + row, p.k_pos0 + kr)))
                    x = -INFINITY;
            }
            s[i] = x;
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt * 4 + 2 * r], s[nt * 4 + 2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mn = fmaxf(mrow[r], mx);
            float mu = mn == -INFINITY ? 0.0f : mn; /* a row with nothing visible yet stays zero */
            corr[r] = exp2f(mrow[r] - mu);
            mrow[r] = mn;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
                s[nt * 4 + 2 * r] = exp2f(s[nt * 4 + 2 * r] - mu);
                s[nt * 4 + 2 * r + 1] = exp2f(s[nt * 4 + 2 * r + 1] - mu);
                sum += s[nt * 4 + 2 * r] + s[nt * 4 + 2 * r + 1];
            }
            lrow[r] = lrow[r] * corr[r] + sum;
        }
    };
    /* P (in s) as the A operand of P V, k-step kk = keys 16 kk .. 16 kk + 15 */
    auto pack_p = [&]() {
#pragma unroll
        for (int kk = 0; kk < PSTEPS; kk++) {
            const float *a = s + 8 * kk;
            pa[kk][0] = pack2<T>(a[0], a[1]);
            pa[kk][1] = pack2<T>(a[2], a[3]);
            pa[kk][2] = pack2<T>(a[4], a[5]);
            pa[kk][3] = pack2<T>(a[6], a[7]);
            if constexpr (BF) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 hi = unpack2<T>(pa[kk][i]);
                    plo[kk][i] = pack2<T>(a[2 * i] - hi.x, a[2 * i + 1] - hi.y);
                }
            }
        }
    };
    auto issue_s = [&](int st) {
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++)
            wg_ss<BF>(s, q_desc(kk), k_desc(st, kk), kk > 0);
    };
    auto issue_pv = [&](int st) {
#pragma unroll
        for (int kk = 0; kk < PSTEPS; kk++) {
            wg_rs_t<BF>(o, pa[kk], v_desc(st, kk));
            if constexpr (BF)
                wg_rs_t<BF>(o, plo[kk], v_desc(st, kk));
        }
    };

    int jcur = fa_next_tile<BN>(p, 0, jend, qp0, qp1);
    if (jcur < jend)
        load_kv(jcur, 0);
    cp_async_commit();
    cp_async_wait<0>();
    fence_async_smem();
    __syncthreads();
    int it = 0;
    if (jcur < jend) {
        int jn = fa_next_tile<BN>(p, jcur + 1, jend, qp0, qp1);
        if (jn < jend)
            load_kv(jn, 1);
        cp_async_commit();
        wg_fence();
        issue_s(0);
        wg_commit();
        wg_wait<0>();
        wg_hold(s);
        float corr[2];
        softmax(jcur, corr); /* o is zero: nothing to rescale */
        pack_p();
        jcur = jn;
        it = 1;
        while (jcur < jend) {
            cp_async_wait<0>(); /* tile jcur has landed */
            fence_async_smem();
            __syncthreads(); /* and every warpgroup is done with the stage refilled next */
            int jnext = fa_next_tile<BN>(p, jcur + 1, jend, qp0, qp1);
            if (jnext < jend)
                load_kv(jnext, (it + 1) % SM90_STAGES);
            cp_async_commit();
            wg_fence();
            issue_s(it % SM90_STAGES);
            wg_commit();
            issue_pv((it - 1) % SM90_STAGES);
            wg_commit();
            wg_wait<1>(); /* S is in; P V of the previous tile may still run */
            wg_hold(s);
            softmax(jcur, corr);
            wg_wait<0>();
            wg_hold(o);
#pragma unroll
            for (int i = 0; i < 64; i++)
                o[i] *= corr[(i >> 1) & 1];
            pack_p();
            jcur = jnext;
            it++;
        }
        wg_fence();
        issue_pv((it - 1) % SM90_STAGES);
        wg_commit();
        wg_wait<0>();
        wg_hold(o);
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        int row = row_in_block + r * 8;
        if (row < rows) {
            T *orow = (T *)p.out + (size_t)(m0 + row) * p.ldo + (size_t)h * HD;
#pragma unroll
            for (int nt = 0; nt < HD / 8; nt++) {
                typename lg_elem<T>::pair v =
                    lg_elem<T>::f2_to_pair(o[nt * 4 + 2 * r] * inv, o[nt * 4 + 2 * r + 1] * inv);
                *reinterpret_cast<typename lg_elem<T>::pair *>(orow + nt * 8 + tq * 2) = v;
            }
        }
    }
#endif
}

/* ---------------------------------------------------------------- the launcher */

bool lg_fa_sm90_takes(int hd, lg_kdtype dt)
{
    return hd == SM90_HD && (dt == LG_KDT_F16 || dt == LG_KDT_BF16) && lg_is_sm90();
}

template <typename T> static int sm90_launch(const fa_params &p, int n_heads, cudaStream_t s, const char *who)
{
    size_t smem = (size_t)SM90_BM * SM90_HD * 2 + (size_t)SM90_STAGES * 2 * SM90_BN * SM90_HD * 2 + 1024;
    static bool attr_set = false; /* once per instantiation */
    if (!attr_set) {
        LG_CUDA_TRY(cudaFuncSetAttribute(flash_prefill_sm90_kernel<T>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = true;
    }
    dim3 grid((p.n + SM90_BM - 1) / SM90_BM, n_heads);
    flash_prefill_sm90_kernel<T><<<grid, SM90_THREADS, smem, s>>>(p);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

int lg_fa_sm90_launch(const fa_params &p, lg_kdtype dt, int n_heads, cudaStream_t s, const char *who)
{
    return dt == LG_KDT_F16 ? sm90_launch<__half>(p, n_heads, s, who)
                            : sm90_launch<__nv_bfloat16>(p, n_heads, s, who);
}
