/* Flash-style prefill attention for Hopper (compute capability 9.0): the same algorithm as the
 * mma.sync kernel of attention_prefill.cu (tiles of keys, online softmax in base 2, masked tiles
 * never loaded), on the warpgroup tensor-core instructions (wgmma), which H100 runs at about twice
 * the rate of mma.sync, fed by the tensor memory accelerator (TMA), in the manner of
 * FlashAttention-3.
 *
 * The work items are BM = 128 queries of one head, head by head, longest first. Up to 16 items an
 * SM, the blocks are persistent, one an SM walking its share (no block starts cold, and its next
 * item's data arrive during the last one); beyond, a block an item, dealt out by the hardware
 * (H200, f16, 32 heads: 4K and 8K faster persistent by 12% and 4%, 16K and 32K slower by 3%).
 * A block has three warpgroups. The first is the producer: one thread walks the key
 * tiles the mask shows and has the TMA copy Q and each BN = 128-row tile of K and V into
 * double-buffered shared memory (an mbarrier per buffer says "full", another "empty" again), with
 * most of its registers handed to the others (setmaxnreg). It runs ahead into the next item, so a
 * new item starts with its data in place. The other two are the consumers, 64 query rows each. Per
 * tile each consumer
 *   S = Q K^T      wgmma, both operands in shared memory (Q and K rows are K-major, 128-byte swizzle)
 *   O += P V       wgmma, P from registers (the S accumulators repacked), V transposed by the unit
 * and the two overlap across tiles: S of tile j is issued together with P V of tile j-1, so the
 * softmax of tile j runs while the tensor cores do P V (FlashAttention-3's in-warpgroup pipelining);
 * K and V have buffers of their own because their tiles are released at different times. The two
 * consumers also take turns to issue (ping-pong).
 *
 * Shared-memory tiles are [HD / 64][rows][64]: 128-byte rows whose 16-byte chunks are XOR-swizzled
 * by the row's low three bits, the layout wgmma's 128-byte-swizzle descriptors describe.
 *
 * bfloat16: P rounded once to bfloat16 (8 bits) would cost most of the 2e-3 error bound, so P is
 * float16 (11 bits) or split in two bfloat16 parts. Given a workspace (lg_k_attn_prefill_ws_bytes),
 * a first kernel copies V to float16 there, tile by tile, and flags the 128-key tiles whose every
 * value comes back unchanged from float16 (every bfloat16 value from 2^-17 to 65504 in magnitude
 * does, and zero: the usual case); for those the producer loads the float16 copy and the consumers
 * multiply it by P in float16, one product a tile as for float16 inputs. Tiles not flagged, and every
 * tile without a workspace, take the split: P = hi + lo, both bfloat16, two P V products (the
 * mma.sync kernel does the same). A work item whose head has every tile flagged runs a loop with no
 * per-tile branch (on an H100 a single loop with the branch cost 10% at 16K).
 *
 * Head size 128 only (Llama's); the others take the mma.sync kernel. CPU twin: lg_attention_cpu. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <type_traits>

#include "attention_flash.cuh"

#define SM90_HD 128
#define SM90_BM 128
#define SM90_BN 128
#define SM90_THREADS 384 /* producer + two consumer warpgroups */
#define SM90_PERSISTENT_MAX 16 /* items an SM, beyond which the hardware deals them out */

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

/* 2^x on the special-function unit (inputs far below -126 give 0, -inf gives 0) */
static __device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Named barriers 1.. between the consumer warpgroups (0 is __syncthreads'): sync waits until
 * `count` threads have arrived or synced, arrive does not wait. */
static __device__ __forceinline__ void named_sync(int id, int count)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

static __device__ __forceinline__ void named_arrive(int id, int count)
{
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/* ---- mbarriers and the TMA */
static __device__ __forceinline__ void mbar_init(uint32_t bar, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}

static __device__ __forceinline__ void mbar_wait(uint32_t bar, int parity)
{
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}

static __device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

static __device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                 : "memory");
}

/* box (64 columns x rows) at column x, row y of the tensor map's matrix into dst, 128-byte swizzled;
 * rows past the matrix's end arrive as zeros */
static __device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, int x, int y,
                                                uint32_t bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
                 "l"((uint64_t)map), "r"(x), "r"(y), "r"(bar)
                 : "memory");
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

/* The k-th work item of persistent block b of G (or -1): the items (numbered as item_geometry in
 * the kernel reads them: head by head, the longest query tile first) are dealt in rounds of G,
 * every other round backwards, so that no block always gets the longest of a round. */
static __device__ __forceinline__ int sm90_item(int k, int b, int G, int n_items)
{
    int idx = k * G + ((k & 1) ? G - 1 - b : b);
    return idx < n_items ? idx : -1;
}
#endif

/* ---------------------------------------------------------------- the kernel */

/* The kernel's argument: the tensor maps must live in parameter space (__grid_constant__). */
struct sm90_args {
    CUtensorMap q, k, v; /* [rows][ld] matrices, boxes of 64 columns x 128 rows */
    CUtensorMap v16;     /* bfloat16 with a workspace: V as float16, [T][kv_dim] */
    /* with v16: vfit[kv head * vfit_tiles + key tile] is 1 where that tile of v16 is exact */
    const unsigned char *vfit;
    int vfit_tiles;
    fa_params p;
    int n_qtiles, n_heads; /* work items: n_qtiles x n_heads */
};

/* V as float16 (the first kernel of a bfloat16 launch with a workspace): block (j, g) copies key
 * tile j of kv head g and sets vfit[g * tiles + j] to whether float16 holds all of it exactly. */
__global__ void __launch_bounds__(256)
    sm90_v_to_f16_kernel(__half *v16, int kvd, unsigned char *vfit, int tiles,
                         const __nv_bfloat16 *__restrict__ v, int ldv, int T)
{
    constexpr int VECS = SM90_HD / 8; /* 16-byte vectors of a row of one head */
    const int j = blockIdx.x, g = blockIdx.y, r0 = j * SM90_BN;
    const int rows = min(SM90_BN, T - r0);
    bool exact = true;
    for (int i = threadIdx.x; i < rows * VECS; i += blockDim.x) {
        const size_t r = (size_t)(r0 + i / VECS);
        const int c = g * SM90_HD + (i % VECS) * 8;
        float f[8];
        lg_unpack8<__nv_bfloat16>(*reinterpret_cast<const uint4 *>(v + r * ldv + c), f);
        uint4 out;
        unsigned *o = &out.x;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            __half2 h = __floats2half2_rn(f[2 * e], f[2 * e + 1]);
            float2 back = __half22float2(h);
            /* NaN compares unequal: such a tile keeps bfloat16 */
            exact = exact && back.x == f[2 * e] && back.y == f[2 * e + 1];
            o[e] = *reinterpret_cast<unsigned *>(&h);
        }
        *reinterpret_cast<uint4 *>(v16 + r * kvd + c) = out;
    }
    exact = __syncthreads_and(exact);
    if (threadIdx.x == 0)
        vfit[g * tiles + j] = exact;
}

template <typename T>
__global__ void __launch_bounds__(SM90_THREADS, 1)
    flash_prefill_sm90_kernel(const __grid_constant__ sm90_args args)
{
#ifdef LG_HAVE_WGMMA
    constexpr int HD = SM90_HD, BM = SM90_BM, BN = SM90_BN;
    constexpr int KSTEPS = HD / 16, PSTEPS = BN / 16;
    constexpr uint32_t TILE = BN * HD * 2, QTILE = BM * HD * 2; /* bytes */
    constexpr bool BF = std::is_same<T, __nv_bfloat16>::value;
    const fa_params &p = args.p;
    const int n_items = args.n_qtiles * args.n_heads, G = gridDim.x, b = blockIdx.x;
    extern __shared__ unsigned char sm90_raw[];
    /* full / empty pairs for Q[2], K[2], V[2]: buffer b of kind i (QB, KB, VB) has its full
     * barrier at bars[2 * (2 * i + b)], its empty one next to it */
    __shared__ __align__(8) uint64_t bars[12];
    /* 128-byte swizzle repeats every 1024 bytes and both the TMA and wgmma compute it from the
     * address */
    const uint32_t raw_s = (uint32_t)__cvta_generic_to_shared(sm90_raw);
    const uint32_t q_s = (raw_s + 1023) & ~1023u, k_s = q_s + 2 * QTILE, v_s = k_s + 2 * TILE;
    const uint32_t bar_s = (uint32_t)__cvta_generic_to_shared(bars);
    auto full_bar = [&](int buf, int i) { return bar_s + 16 * (2 * i + buf); };
    auto empty_bar = [&](int buf, int i) { return bar_s + 16 * (2 * i + buf) + 8; };
    enum { QB = 0, KB = 1, VB = 2 };

    const int tid = threadIdx.x, wg = tid >> 7;
    if (tid == 0) {
        for (int i = 0; i < 6; i++) {
            mbar_init(bar_s + 16 * i, 1);
            mbar_init(bar_s + 16 * i + 8, 2 * 128);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    /* The geometry of work item idx: head by head, inside a head the longest query tiles first.
     * (Measured on an H200 against groups of 2 to 32 heads dealt together, 4K and 16K tokens of 32
     * heads: the fastest, by 1 to 30%.) */
    int h = 0, kvh = 0, m0 = 0, rows = 0, qp0 = 0, qp1 = 0, jend = 0;
    auto item_geometry = [&](int idx) {
        int qtile = args.n_qtiles - 1 - idx % args.n_qtiles;
        h = idx / args.n_qtiles;
        kvh = h / p.group;
        m0 = qtile * BM;
        rows = min(BM, p.n - m0);
        qp0 = p.q_pos0 + m0;
        qp1 = qp0 + rows - 1;
        int kend = min(p.T, qp1 - p.k_pos0 + 1);
        jend = kend > 0 ? (kend + BN - 1) / BN : 0;
    };

    /* whether key tile j of this item's kv head comes as float16 (bfloat16 with a workspace) */
    auto v_half = [&](int j) { return BF && args.vfit && args.vfit[kvh * args.vfit_tiles + j]; };

    if (wg == 0) { /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
        if (tid != 0)
            return;
        int it = 0; /* tiles loaded so far, over all items: tile it goes to buffer it & 1 */
        for (int k = 0, idx; (idx = sm90_item(k, b, G, n_items)) >= 0; k++) {
            item_geometry(idx);
            int qb = k & 1;
            if (k >= 2)
                mbar_wait(empty_bar(qb, QB), ((k >> 1) - 1) & 1);
            mbar_expect(full_bar(qb, QB), QTILE);
            for (int half = 0; half < HD / 64; half++)
                tma_load(q_s + qb * QTILE + half * BM * 128, &args.q, h * HD + half * 64, m0,
                         full_bar(qb, QB));
            for (int j = fa_next_tile<BN>(p, 0, jend, qp0, qp1); j < jend;
                 j = fa_next_tile<BN>(p, j + 1, jend, qp0, qp1), it++) {
                int st = it & 1;
                if (it >= 2)
                    mbar_wait(empty_bar(st, KB), ((it >> 1) - 1) & 1);
                mbar_expect(full_bar(st, KB), TILE);
                for (int half = 0; half < HD / 64; half++)
                    tma_load(k_s + st * TILE + half * BN * 128, &args.k, kvh * HD + half * 64,
                             j * BN, full_bar(st, KB));
                if (it >= 2)
                    mbar_wait(empty_bar(st, VB), ((it >> 1) - 1) & 1);
                mbar_expect(full_bar(st, VB), TILE);
                const CUtensorMap *vmap = v_half(j) ? &args.v16 : &args.v;
                for (int half = 0; half < HD / 64; half++)
                    tma_load(v_s + st * TILE + half * BN * 128, vmap, kvh * HD + half * 64,
                             j * BN, full_bar(st, VB));
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
    const int cw = wg - 1; /* this consumer's 64 rows: cw * 64 .. */
    const int lane = tid & 31, wl = (tid >> 5) & 3, g = lane >> 2, tq = lane & 3;
    const int row_in_block = cw * 64 + wl * 16 + g; /* and + 8 */

    auto q_desc = [&](int qb, int kk) {
        return wg_desc(q_s + qb * QTILE + (kk >> 2) * BM * 128 + cw * 64 * 128 + (kk & 3) * 32, 16,
                       1024);
    };
    auto k_desc = [&](int st, int kk) {
        return wg_desc(k_s + st * TILE + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
    };
    /* V as the MN-major B of P V: 64-column halves BN * 128 bytes apart, 8-key groups 1024 */
    auto v_desc = [&](int st, int kk) {
        return wg_desc(v_s + st * TILE + kk * 16 * 128, BN * 128, 1024);
    };

    float o[64], s[64];
    float mrow[2], lrow[2];
    unsigned pa[PSTEPS][4], plo[BF ? PSTEPS : 1][4];
    /* S of tile jt scaled to base 2 and masked; then the online-softmax update of row r's max and
     * sum, leaving exp2(S - max) in s. Returns nothing: corr[r] is the rescale of the old O. */
    auto softmax = [&](int jt, float (&corr)[2]) {
        const int kr0 = jt * BN;
        const bool full = kr0 + BN <= p.T &&
                          lg_dmask_all(p.mask, qp0, qp1, p.k_pos0 + kr0, p.k_pos0 + kr0 + BN - 1);
        if (!full && p.mask.kind != LG_KMASK_BLOCK_STRIDED) {
            /* causal, and the sink + window: comparisons */
            const int qpos = qp0 + row_in_block, kbase = p.k_pos0 + kr0 + tq * 2;
            const bool sw = p.mask.kind == LG_KMASK_SINK_WINDOW;
#pragma unroll
            for (int i = 0; i < 64; i++) {
                int kpos = kbase + (i >> 2) * 8 + (i & 1), q = qpos + ((i >> 1) & 1) * 8;
                bool on = kpos - p.k_pos0 < p.T && kpos <= q &&
                          (!sw || kpos < p.mask.sink || q - kpos < p.mask.window);
                if (!on)
                    s[i] = -INFINITY;
            }
        } else if (!full) {
            /* block_strided (divisions): the visibility of this thread's 32 keys of each row as
             * bits, in a loop that is not unrolled, so the hot path stays short enough for the
             * instruction cache */
            uint32_t vis0 = 0, vis1 = 0; /* rows g and g + 8; bit 2 nt + e: key 8 nt + 2 tq + e */
#pragma unroll 1
            for (int b = 0; b < 32; b++) {
                int kr = kr0 + (b >> 1) * 8 + tq * 2 + (b & 1);
                int kpos = p.k_pos0 + kr, qpos = qp0 + row_in_block;
                vis0 |= (uint32_t)(kr < p.T && lg_dmask_visible(p.mask, qpos, kpos)) << b;
                vis1 |= (uint32_t)(kr < p.T && lg_dmask_visible(p.mask, qpos + 8, kpos)) << b;
            }
#pragma unroll
            for (int i = 0; i < 64; i++)
                if (!((((i >> 1) & 1 ? vis1 : vis0) >> ((i >> 2) * 2 + (i & 1))) & 1))
                    s[i] = -INFINITY;
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt * 4 + 2 * r], s[nt * 4 + 2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            /* the scale is positive: max(S) scale = max(S scale) */
            float mn = fmaxf(mrow[r], mx * p.scale_log2);
            float mu = mn == -INFINITY ? 0.0f : mn; /* a row with nothing visible yet stays zero */
            corr[r] = fast_exp2(mrow[r] - mu);
            mrow[r] = mn;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
                s[nt * 4 + 2 * r] = fast_exp2(fmaf(s[nt * 4 + 2 * r], p.scale_log2, -mu));
                s[nt * 4 + 2 * r + 1] = fast_exp2(fmaf(s[nt * 4 + 2 * r + 1], p.scale_log2, -mu));
                sum += s[nt * 4 + 2 * r] + s[nt * 4 + 2 * r + 1];
            }
            lrow[r] = lrow[r] * corr[r] + sum;
        }
    };
    /* P (in s) as the A operand of P V, k-step kk = keys 16 kk .. 16 kk + 15: in T, or float16
     * for a float16 V tile (vh), or for bfloat16 V split in hi + lo */
    auto pack_p = [&](bool vh) {
#pragma unroll
        for (int kk = 0; kk < PSTEPS; kk++) {
            const float *a = s + 8 * kk;
            if (BF && vh) {
#pragma unroll
                for (int i = 0; i < 4; i++)
                    pa[kk][i] = pack2<__half>(a[2 * i], a[2 * i + 1]);
                continue;
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
                pa[kk][i] = pack2<T>(a[2 * i], a[2 * i + 1]);
            if constexpr (BF) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 hi = unpack2<T>(pa[kk][i]);
                    plo[kk][i] = pack2<T>(a[2 * i] - hi.x, a[2 * i + 1] - hi.y);
                }
            }
        }
    };
    auto issue_s = [&](int qb, int st) {
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++)
            wg_ss<BF>(s, q_desc(qb, kk), k_desc(st, kk), kk > 0);
    };
    auto issue_pv = [&](int st, bool vh) {
        if (BF && vh) {
#pragma unroll
            for (int kk = 0; kk < PSTEPS; kk++)
                wg_rs_t<false>(o, pa[kk], v_desc(st, kk));
            return;
        }
#pragma unroll
        for (int kk = 0; kk < PSTEPS; kk++) {
            wg_rs_t<BF>(o, pa[kk], v_desc(st, kk));
            if constexpr (BF)
                wg_rs_t<BF>(o, plo[kk], v_desc(st, kk));
        }
    };

    /* Ping-pong (FlashAttention-3): the consumers take turns to issue their products, so that one's
     * softmax runs while the other's products keep the tensor cores busy. Named barrier 1 + c is
     * consumer c's turn: c waits on it, the other arrives. Consumer 0 goes first, and takes one
     * turn more than consumer 1 hands it, at the end. */
    if (cw == 1)
        named_arrive(1, 2 * 128);
    int it = 0; /* tiles consumed so far, over all items */
    for (int k = 0, idx; (idx = sm90_item(k, b, G, n_items)) >= 0; k++) {
        item_geometry(idx);
        const int qb = k & 1;
#pragma unroll
        for (int i = 0; i < 64; i++)
            o[i] = 0.0f;
        mrow[0] = mrow[1] = -INFINITY;
        lrow[0] = lrow[1] = 0.0f;
        mbar_wait(full_bar(qb, QB), (k >> 1) & 1);
        /* The item's tiles. MODE 0: in T (bfloat16: P split); 1: every V tile float16 (bfloat16 with
         * all of this kv head's tiles exact); 2: tile by tile. One loop each, so that the common
         * cases carry no branch on the tile's kind. */
        auto run_tiles = [&](auto mode) {
            constexpr int MODE = decltype(mode)::value;
            auto tile_half = [&](int j) { return MODE == 1 || (MODE == 2 && v_half(j)); };
            int li = 0;           /* tiles of this item */
            bool vh_prev = false; /* whether the previous tile's V is float16 (pack_p, issue_pv) */
            for (int j = fa_next_tile<BN>(p, 0, jend, qp0, qp1); j < jend; li++, it++) {
                const int st = it & 1, prev = st ^ 1;
                const int jn = fa_next_tile<BN>(p, j + 1, jend, qp0, qp1);
                float corr[2];
                mbar_wait(full_bar(st, KB), (it >> 1) & 1);
                if (li > 0)
                    mbar_wait(full_bar(prev, VB), ((it - 1) >> 1) & 1);
                named_sync(1 + cw, 2 * 128);
                wg_fence();
                issue_s(qb, st);
                wg_commit();
                if (li > 0)
                    issue_pv(prev, vh_prev);
                wg_commit();
                named_arrive(2 - cw, 2 * 128);
                wg_wait<1>(); /* S is in; P V of the previous tile may still run */
                wg_hold(s);
                mbar_arrive(empty_bar(st, KB));
                softmax(j, corr); /* on the first tile corr is 0 and o still zero */
                wg_wait<0>();
                wg_hold(o);
                if (li > 0)
                    mbar_arrive(empty_bar(prev, VB));
#pragma unroll
                for (int i = 0; i < 64; i++)
                    o[i] *= corr[(i >> 1) & 1];
                vh_prev = tile_half(j);
                pack_p(vh_prev);
                j = jn;
            }
            if (li > 0) {
                const int last = (it - 1) & 1;
                mbar_wait(full_bar(last, VB), ((it - 1) >> 1) & 1);
                wg_fence();
                issue_pv(last, vh_prev);
                wg_commit();
                wg_wait<0>();
                wg_hold(o);
                mbar_arrive(empty_bar(last, VB));
            }
        };
        if constexpr (BF) {
            /* every flag of the head at once (loads in flight together, no early exit) */
            unsigned all = args.vfit != nullptr;
            for (int j = 0; all && j < jend; j += 64) {
                unsigned a = 1;
#pragma unroll 16
                for (int i = j; i < min(j + 64, jend); i++)
                    a &= args.vfit[kvh * args.vfit_tiles + i];
                all = a;
            }
            if (all)
                run_tiles(std::integral_constant<int, 1>());
            else
                run_tiles(std::integral_constant<int, 2>());
        } else {
            run_tiles(std::integral_constant<int, 0>());
        }
        mbar_arrive(empty_bar(qb, QB)); /* every S of this item is done */

        fa_store_o<T, HD>(o, lrow, p, m0, row_in_block, rows, h, tq);
    }
    if (cw == 0) /* consumer 1's last hand-over, which no turn of consumer 0 took */
        named_sync(1, 2 * 128);
#endif
}

/* ---------------------------------------------------------------- the launcher */

/* cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda); NULL
 * where the driver lacks it. Looked up once (a function-local static: safe from several threads). */
static PFN_cuTensorMapEncodeTiled_v12000 load_tensor_map_encoder()
{
    void *f = NULL;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                     cudaEnableDefault, &q);
#else /* deprecated from CUDA 12.5 on */
    cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &q);
#endif
    return e == cudaSuccess && q == cudaDriverEntryPointSuccess
               ? (PFN_cuTensorMapEncodeTiled_v12000)f
               : NULL;
}

static PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder()
{
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = load_tensor_map_encoder();
    return fn;
}

static int schedule = 0; /* 0: chosen per launch, 1: persistent, 2: a block per item */

extern "C" void lg_k_attn_prefill_set_schedule(int which)
{
    schedule = which == 1 || which == 2 ? which : 0;
}

bool lg_fa_sm90_takes(int hd, lg_kdtype dt)
{
    return hd == SM90_HD && (dt == LG_KDT_F16 || dt == LG_KDT_BF16) && lg_is_sm90() &&
           tensor_map_encoder() != NULL;
}

bool lg_fa_sm90_prefers(const lg_dmask &m)
{
    /* blocks narrower than a 128-key tile leave most tiles partly masked: the mma.sync kernel's
     * 64-key tiles waste less (H200, block_strided(64, 16, 16) at 16K: 57 against 124 TFLOP/s) */
    return m.kind != LG_KMASK_BLOCK_STRIDED || m.block % SM90_BN == 0;
}

/* rows x ld matrix of 16-bit elements at base, read in boxes of 64 columns x 128 rows */
static int tensor_map(CUtensorMap *m, lg_kdtype dt, const void *base, int ld, int rows, const char *who)
{
    cuuint64_t dims[2] = {(cuuint64_t)ld, (cuuint64_t)rows};
    cuuint64_t strides[1] = {(cuuint64_t)ld * 2};
    cuuint32_t box[2] = {64, 128}, estr[2] = {1, 1};
    CUresult r = tensor_map_encoder()(
        m, dt == LG_KDT_F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
        (void *)base, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
        CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return lg_k_fail("%s: cuTensorMapEncodeTiled failed (%d) for ld %d, %d rows", who, (int)r, ld,
                         rows);
    return 0;
}

template <typename T> static int sm90_launch(const sm90_args &a, cudaStream_t s, const char *who)
{
    /* Q, K and V double-buffered, and the 1024-byte alignment */
    size_t smem = 2 * (size_t)SM90_BM * SM90_HD * 2 + 4 * (size_t)SM90_BN * SM90_HD * 2 + 1024;
    static unsigned long long optin_done; /* per instantiation, a bit per device */
    if (lg_smem_optin((const void *)flash_prefill_sm90_kernel<T>, smem, &optin_done) != 0)
        return -1;
    /* persistent: one block an SM walks its share of the work items; else the hardware deals
     * them out, a block each */
    int items = a.n_qtiles * a.n_heads, sms = lg_sm_count();
    bool persistent = schedule == 1 || (schedule == 0 && items <= SM90_PERSISTENT_MAX * sms);
    int grid = persistent ? min(items, sms) : items;
    flash_prefill_sm90_kernel<T><<<grid, SM90_THREADS, smem, s>>>(a);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

/* The workspace: V as float16 ([T][kv_dim], 256-byte aligned), then a flag per kv head and key tile. */
static size_t v16_bytes(int T, int n_kv_heads)
{
    return ((size_t)T * n_kv_heads * SM90_HD * 2 + 255) & ~(size_t)255;
}

size_t lg_fa_sm90_ws_bytes(lg_kdtype dt, int T, int n_kv_heads, int hd)
{
    if (dt != LG_KDT_BF16 || hd != SM90_HD || T < 1 || n_kv_heads < 1)
        return 0;
    return v16_bytes(T, n_kv_heads) + (size_t)n_kv_heads * ((T + SM90_BN - 1) / SM90_BN);
}

/* bfloat16 with a workspace large enough: V copied to float16 by the first kernel, a.v16 and the
 * tiles' flags set; otherwise nothing (every tile takes the split). */
static int sm90_v_half(sm90_args &a, const fa_params &p, int n_kv_heads, cudaStream_t s,
                       const char *who)
{
    size_t need = lg_fa_sm90_ws_bytes(LG_KDT_BF16, p.T, n_kv_heads, SM90_HD);
    if (!p.ws || need == 0 || p.ws_bytes < need)
        return 0;
    const int kvd = n_kv_heads * SM90_HD, tiles = (p.T + SM90_BN - 1) / SM90_BN;
    __half *v16 = (__half *)p.ws;
    unsigned char *fit = (unsigned char *)p.ws + v16_bytes(p.T, n_kv_heads);
    sm90_v_to_f16_kernel<<<dim3((unsigned)tiles, (unsigned)n_kv_heads), 256, 0, s>>>(
        v16, kvd, fit, tiles, (const __nv_bfloat16 *)p.v, p.ldv, p.T);
    LG_CUDA_LAUNCHED(who);
    if (tensor_map(&a.v16, LG_KDT_F16, v16, kvd, p.T, who))
        return -1;
    a.vfit = fit;
    a.vfit_tiles = tiles;
    return 0;
}

int lg_fa_sm90_launch(const fa_params &p, lg_kdtype dt, int n_heads, cudaStream_t s, const char *who)
{
    sm90_args a;
    memset(&a, 0, sizeof a);
    a.p = p;
    if (tensor_map(&a.q, dt, p.q, p.ldq, p.n, who) || tensor_map(&a.k, dt, p.k, p.ldk, p.T, who) ||
        tensor_map(&a.v, dt, p.v, p.ldv, p.T, who))
        return -1;
    if (dt == LG_KDT_BF16 && sm90_v_half(a, p, n_heads / p.group, s, who))
        return -1;
    a.n_qtiles = (p.n + SM90_BM - 1) / SM90_BM;
    a.n_heads = n_heads;
    return dt == LG_KDT_F16 ? sm90_launch<__half>(a, s, who) : sm90_launch<__nv_bfloat16>(a, s, who);
}
