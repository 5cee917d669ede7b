/* Flash-style prefill attention on the tensor cores (mma.sync m16n8k16, float32 accumulation), in
 * the manner of FlashAttention-2: a block owns BM = 16 * WARPS queries of one head, each warp 16 of
 * them, and walks the key tiles of BN = 64 keys the mask shows (tiles the mask hides entirely are
 * never loaded: sink_window and block_strided layers cost what they read). Per tile: S = Q K^T in
 * registers, online softmax with base-2 exponentials, O += P V with P taken straight from the S
 * accumulators as the A operand. K/V tiles are double-buffered in shared memory through cp.async;
 * the 16-byte chunks of each row are XOR-swizzled by the row so that ldmatrix reads are free of bank
 * conflicts.
 *
 * bfloat16 keeps only 8 bits of P, which alone would cost ~1.5e-3 relative error; there P is split
 * into hi + lo bfloat16 parts and both multiply V (one more MMA per tile for P V), so the result is
 * as accurate as the float16 path.
 *
 * Head sizes 32, 64, 128 with 16-byte aligned float16 or bfloat16 rows take this kernel; the
 * others, and float32 (the tensor cores would round it to 16 bits), take the row kernel
 * (attention_rows.cu). CPU twin: lg_attention_cpu (runtime/attention_cpu.c). */
#include <math.h>
#include <string.h>
#include <type_traits>

#include "attention_flash.cuh"

#define FA_BN 64
#define FA_WARPS 4

/* ---------------------------------------------------------------- the kernel */

template <typename T, int HD>
__global__ void __launch_bounds__(FA_WARPS * 32) flash_prefill_kernel(fa_params p)
{
    constexpr int BM = 16 * FA_WARPS, BN = FA_BN, C = HD / 8, NT = FA_WARPS * 32;
    constexpr int SWZ = (C < 8 ? C : 8) - 1;
    constexpr bool BF16 = std::is_same<T, __nv_bfloat16>::value;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    T *Qs = reinterpret_cast<T *>(fa_smem);
    T *Ks = Qs + BM * HD;     /* [2][BN][HD] */
    T *Vs = Ks + 2 * BN * HD; /* [2][BN][HD] */
    /* element offset of the 8-element chunk c of row r */
    auto swz = [](int r, int c) { return r * HD + ((c ^ (r & SWZ)) << 3); };

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int qtile = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
    const int h = blockIdx.y, kvh = h / p.group;
    const int m0 = qtile * BM, rows = min(BM, p.n - m0);
    const int qp0 = p.q_pos0 + m0, qp1 = qp0 + rows - 1;
    const int kend = min(p.T, qp1 - p.k_pos0 + 1); /* key rows [0, kend) may be visible */
    const int jend = kend > 0 ? (kend + BN - 1) / BN : 0;

    const T *qg = (const T *)p.q + (size_t)m0 * p.ldq + (size_t)h * HD;
    const T *kg = (const T *)p.k + (size_t)kvh * HD;
    const T *vg = (const T *)p.v + (size_t)kvh * HD;

    for (int i = tid; i < BM * C; i += NT) {
        int r = i / C, c = i % C;
        bool ok = r < rows;
        cp_async16(Qs + swz(r, c), qg + (size_t)(ok ? r : 0) * p.ldq + c * 8, ok);
    }
    cp_async_commit();

    auto load_kv = [&](int jt, int b) {
        int r0 = jt * BN;
        T *kd = Ks + b * BN * HD, *vd = Vs + b * BN * HD;
        for (int i = tid; i < BN * C; i += NT) {
            int r = i / C, c = i % C;
            bool ok = r0 + r < p.T;
            size_t src = ok ? (size_t)(r0 + r) : 0;
            cp_async16(kd + swz(r, c), kg + src * p.ldk + c * 8, ok);
            cp_async16(vd + swz(r, c), vg + src * p.ldv + c * 8, ok);
        }
    };

    int j = fa_next_tile<BN>(p, 0, jend, qp0, qp1);
    if (j < jend)
        load_kv(j, 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    unsigned qf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
        ldsm_x4(qf[kk], Qs + swz(warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * kk + (lane >> 4)));

    float o[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    const int g = lane >> 2, tq = lane & 3;

    int buf = 0;
    while (j < jend) {
        int jn = fa_next_tile<BN>(p, j + 1, jend, qp0, qp1);
        if (jn < jend)
            load_kv(jn, buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>(); /* tile j has landed (only jn's copies may still be in flight) */
        __syncthreads();
        const T *Kb = Ks + buf * BN * HD, *Vb = Vs + buf * BN * HD;

        float s[BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
            for (int jp = 0; jp < BN / 16; jp++) {
                unsigned b[4];
                ldsm_x4(b, Kb + swz(jp * 16 + (lane & 7) + (lane >> 4) * 8, 2 * kk + ((lane >> 3) & 1)));
                lg_mma16816<T>(s[2 * jp], qf[kk], b[0], b[1]);
                lg_mma16816<T>(s[2 * jp + 1], qf[kk], b[2], b[3]);
            }

        const int kr0 = j * BN;
        const bool full = kr0 + BN <= p.T &&
                          lg_dmask_all(p.mask, qp0, qp1, p.k_pos0 + kr0, p.k_pos0 + kr0 + BN - 1);
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[nt][e] * p.scale_log2;
                if (!full) {
                    int row = warp * 16 + g + (e >> 1) * 8;
                    int kr = kr0 + nt * 8 + tq * 2 + (e & 1);
                    if (!(kr < p.T && lg_dmask_visible(p.mask, qp0 + row, p.k_pos0 + kr)))
                        x = -INFINITY;
                }
                s[nt][e] = x;
            }

#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mn = fmaxf(mrow[r], mx);
            float mu = mn == -INFINITY ? 0.0f : mn; /* a row with nothing visible yet stays zero */
            float corr = exp2f(mrow[r] - mu);
            mrow[r] = mn;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
                s[nt][2 * r] = exp2f(s[nt][2 * r] - mu);
                s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - mu);
                sum += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            lrow[r] = lrow[r] * corr + sum;
#pragma unroll
            for (int d = 0; d < HD / 8; d++) {
                o[d][2 * r] *= corr;
                o[d][2 * r + 1] *= corr;
            }
        }

#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            unsigned a[4], alo[4];
            a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            if constexpr (BF16) {
                const float *src[4] = {&s[2 * kk][0], &s[2 * kk][2], &s[2 * kk + 1][0],
                                       &s[2 * kk + 1][2]};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 hi = unpack2<T>(a[i]);
                    alo[i] = pack2<T>(src[i][0] - hi.x, src[i][1] - hi.y);
                }
            }
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                unsigned b[4];
                ldsm_x4_trans(b, Vb + swz(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * dp + (lane >> 4)));
                lg_mma16816<T>(o[2 * dp], a, b[0], b[1]);
                lg_mma16816<T>(o[2 * dp + 1], a, b[2], b[3]);
                if constexpr (BF16) {
                    lg_mma16816<T>(o[2 * dp], alo, b[0], b[1]);
                    lg_mma16816<T>(o[2 * dp + 1], alo, b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* every warp is done with this buffer before it is refilled */
        j = jn;
        buf ^= 1;
    }

    fa_store_o<T, HD>(&o[0][0], lrow, p, m0, warp * 16 + g, rows, h, tq);
}

template <typename T, int HD>
static int fa_launch(const fa_params &p, int n_heads, cudaStream_t s, const char *who)
{
    constexpr int BM = 16 * FA_WARPS;
    size_t smem = (size_t)(BM + 4 * FA_BN) * HD * sizeof(T);
    static unsigned long long optin_done; /* per instantiation, a bit per device */
    if (lg_smem_optin((const void *)flash_prefill_kernel<T, HD>, smem, &optin_done) != 0)
        return -1;
    dim3 grid((p.n + BM - 1) / BM, n_heads);
    flash_prefill_kernel<T, HD><<<grid, FA_WARPS * 32, smem, s>>>(p);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

/* ---------------------------------------------------------------- the launcher */

static lg_kprefill_kernel forced = LG_KPREFILL_AUTO;

extern "C" void lg_k_attn_prefill_force(lg_kprefill_kernel which)
{
    forced = which;
}

extern "C" int lg_k_attn_prefill_wgmma_takes(int hd, lg_kdtype dt)
{
    return lg_fa_sm90_takes(hd, dt);
}

static bool aligned16(const void *ptr)
{
    return ((uintptr_t)ptr & 15) == 0;
}

extern "C" size_t lg_k_attn_prefill_ws_bytes(lg_kdtype dt, int T, const lg_kattn_shape *shape)
{
    if (!shape || shape->n_kv_heads < 1 || !lg_fa_sm90_takes(shape->head_dim, dt))
        return 0;
    return lg_fa_sm90_ws_bytes(dt, T, shape->n_kv_heads, shape->head_dim);
}

extern "C" int lg_k_attn_prefill(void *out, int ldo, const void *q, int ldq, const void *k, int ldk,
                                 const void *v, int ldv, lg_kdtype dt, int n, int q_pos0, int T,
                                 int k_pos0, const lg_kattn_shape *shape, const lg_kmask *mask,
                                 void *ws, size_t ws_bytes, void *stream)
{
    const char *who = "lg_k_attn_prefill";
    if (lg_attn_shape_check(shape, who))
        return -1;
    if (dt != LG_KDT_F32 && dt != LG_KDT_F16 && dt != LG_KDT_BF16)
        return lg_k_fail("%s: dtype %d must be float32, float16 or bfloat16", who, (int)dt);
    int hd = shape->head_dim, qd = shape->n_heads * hd, kvd = shape->n_kv_heads * hd;
    if (n < 0 || T < 1 || q_pos0 < 0 || k_pos0 < 0 || ldq < qd || ldo < qd || ldk < kvd ||
        ldv < kvd)
        return lg_k_fail("%s: bad sizes n=%d T=%d q_pos0=%d k_pos0=%d ldq=%d ldo=%d ldk=%d ldv=%d",
                         who, n, T, q_pos0, k_pos0, ldq, ldo, ldk, ldv);
    if (n > 0 && (long)q_pos0 + n - 1 > (long)k_pos0 + T - 1)
        return lg_k_fail("%s: queries up to position %ld but keys only up to %ld", who,
                         (long)q_pos0 + n - 1, (long)k_pos0 + T - 1);
    lg_dmask m;
    if (lg_dmask_from(mask, &m, who))
        return -1;
    if (n == 0)
        return 0;
    cudaStream_t s = LG_CUDA_STREAM(stream);
    bool tc = forced != LG_KPREFILL_ROWS && dt != LG_KDT_F32 && (hd == 32 || hd == 64 || hd == 128) &&
              ldq % 8 == 0 && ldk % 8 == 0 && ldv % 8 == 0 && ldo % 8 == 0 && aligned16(q) &&
              aligned16(k) && aligned16(v) && aligned16(out);
    if (tc) {
        fa_params p;
        memset(&p, 0, sizeof p);
        p.out = out;
        p.ldo = ldo;
        p.q = q;
        p.ldq = ldq;
        p.k = k;
        p.ldk = ldk;
        p.v = v;
        p.ldv = ldv;
        p.n = n;
        p.q_pos0 = q_pos0;
        p.T = T;
        p.k_pos0 = k_pos0;
        p.group = shape->n_heads / shape->n_kv_heads;
        p.scale_log2 = shape->scale * 1.4426950408889634f;
        p.mask = m;
        p.ws = ws;
        p.ws_bytes = ws_bytes;
        int nh = shape->n_heads;
        if (lg_fa_sm90_takes(hd, dt) &&
            (forced == LG_KPREFILL_WGMMA || (forced == LG_KPREFILL_AUTO && lg_fa_sm90_prefers(m))))
            return lg_fa_sm90_launch(p, dt, nh, s, who);
        if (dt == LG_KDT_F16)
            return hd == 32 ? fa_launch<__half, 32>(p, nh, s, who)
                 : hd == 64 ? fa_launch<__half, 64>(p, nh, s, who)
                            : fa_launch<__half, 128>(p, nh, s, who);
        return hd == 32 ? fa_launch<__nv_bfloat16, 32>(p, nh, s, who)
             : hd == 64 ? fa_launch<__nv_bfloat16, 64>(p, nh, s, who)
                        : fa_launch<__nv_bfloat16, 128>(p, nh, s, who);
    }
    lg_rows_params p;
    memset(&p, 0, sizeof p);
    p.out = out;
    p.ldo = ldo;
    p.q = q;
    p.ldq = ldq;
    p.k = k;
    p.ldk = ldk;
    p.v = v;
    p.ldv = ldv;
    p.slot_pos = NULL;
    p.k_pos0 = k_pos0;
    p.n_slots = T;
    p.q_pos0 = q_pos0;
    p.n_heads = shape->n_heads;
    p.group = shape->n_heads / shape->n_kv_heads;
    p.head_dim = hd;
    p.scale_log2 = shape->scale * 1.4426950408889634f;
    p.mask = m;
    p.split_len = T;
    p.n_splits = 1;
    return lg_rows_launch(&p, dt, n, s, who);
}
