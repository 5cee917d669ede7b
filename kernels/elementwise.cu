/* Row-wise kernels: embedding gather, RMSNorm (plain and fused with the residual add), residual add,
 * conversion, RoPE, SwiGLU, argmax. Memory-bound; the dtypes are read at run time (a uniform branch),
 * so one kernel serves every combination. CPU twins: runtime/forward_cpu.c (rmsnorm_rows, rope_*)
 * and kernels/check/check_kernels.c. */
#include <math.h>
#include <string.h>

#include "elementwise.h"
#include "kernel_common.cuh"

static int dt_ok(lg_kdtype dt)
{
    return dt == LG_KDT_F32 || dt == LG_KDT_F16 || dt == LG_KDT_BF16;
}

#define CHECK_DT(who, dt)                                                                         \
    do {                                                                                          \
        if (!dt_ok(dt))                                                                           \
            return lg_k_fail("%s: unknown dtype %d for %s", who, (int)(dt), #dt);                 \
    } while (0)

static int row_block(int cols)
{
    int t = 32;
    while (t < cols && t < 1024)
        t *= 2;
    return t;
}

/* ---------------------------------------------------------------- embedding */

__global__ void embed_kernel(void *out, int out_dt, int ldo, const void *table, int table_dt,
                             int vocab, const int *ids, int dim)
{
    lg_pdl_wait();
    lg_pdl_trigger();
    int t = blockIdx.x;
    int id = ids[t];
    bool ok = id >= 0 && id < vocab;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float v = ok ? lg_ld(table, table_dt, (size_t)id * dim + c) : 0.0f;
        lg_st(out, out_dt, (size_t)t * ldo + c, v);
    }
}

extern "C" int lg_k_embed(void *out, lg_kdtype out_dt, int ldo, const void *table,
                          lg_kdtype table_dt, int vocab, const int *ids, int n, int dim, void *stream)
{
    CHECK_DT("lg_k_embed", out_dt);
    CHECK_DT("lg_k_embed", table_dt);
    if (n < 0 || dim <= 0 || ldo < dim || vocab <= 0)
        return lg_k_fail("lg_k_embed: bad sizes n=%d dim=%d ldo=%d vocab=%d", n, dim, ldo, vocab);
    if (n == 0)
        return 0;
    lg_launch_pdl(embed_kernel, n, row_block(dim) > 256 ? 256 : row_block(dim), 0,
                  LG_CUDA_STREAM(stream), out, (int)out_dt, ldo, table, (int)table_dt, vocab, ids,
                  dim);
    LG_CUDA_LAUNCHED("lg_k_embed");
    return 0;
}

/* ---------------------------------------------------------------- RMSNorm */

/* One block per row. With `delta`, x += delta first (rounded to x's dtype and stored). RN > 0: a
 * thread holds its RN columns (c = threadIdx.x + j * blockDim.x) in registers between the sum of
 * squares and the scaling, and loads its norm weights before waiting for the kernel that writes x
 * (at decode this kernel sits between two GEMVs: its latency is the whole cost). RN = 0, any dim:
 * two passes over the row, each thread on the same columns in both, so the second pass reads its
 * own writes. */
template <int RN>
__global__ void rmsnorm_kernel(void *out, int out_dt, int ldo, void *x, int x_dt, int ldx,
                               const void *delta, int d_dt, int ldd, const void *w, int w_dt, int dim,
                               float eps)
{
    float wv[RN > 0 ? RN : 1];
#pragma unroll
    for (int j = 0; j < RN; j++) {
        int c = threadIdx.x + j * blockDim.x;
        wv[j] = c < dim ? lg_ld(w, w_dt, c) : 0.0f;
    }
    /* the trigger before the wait: the next kernel (at decode a GEMV) is launched while the one
     * before this is still finishing, so its weight loads start under that kernel's tail (on an
     * H100, 7B shapes, q4 decode at context 128 took 2% less; float16 unchanged) */
    lg_pdl_trigger();
    lg_pdl_wait();
    __shared__ float red[32];
    size_t r = blockIdx.x;
    float ss = 0.0f;
    if constexpr (RN > 0) {
        float xv[RN];
#pragma unroll
        for (int j = 0; j < RN; j++) {
            int c = threadIdx.x + j * blockDim.x;
            float v = c < dim ? lg_ld(x, x_dt, r * ldx + c) : 0.0f;
            if (delta && c < dim) {
                v = lg_round_to(x_dt, v + lg_ld(delta, d_dt, r * ldd + c));
                lg_st(x, x_dt, r * ldx + c, v);
            }
            xv[j] = v;
            ss += v * v;
        }
        ss = lg_block_sum(ss, red);
        float rs = 1.0f / sqrtf(ss / (float)dim + eps);
#pragma unroll
        for (int j = 0; j < RN; j++) {
            int c = threadIdx.x + j * blockDim.x;
            if (c < dim)
                lg_st(out, out_dt, r * ldo + c, wv[j] * (xv[j] * rs));
        }
    } else {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            float v = lg_ld(x, x_dt, r * ldx + c);
            if (delta) {
                v = lg_round_to(x_dt, v + lg_ld(delta, d_dt, r * ldd + c));
                lg_st(x, x_dt, r * ldx + c, v);
            }
            ss += v * v;
        }
        ss = lg_block_sum(ss, red);
        float rs = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            float v = lg_ld(x, x_dt, r * ldx + c);
            lg_st(out, out_dt, r * ldo + c, lg_ld(w, w_dt, c) * (v * rs));
        }
    }
}

static int rmsnorm_launch(const char *who, void *out, lg_kdtype out_dt, int ldo, void *x,
                          lg_kdtype x_dt, int ldx, const void *delta, lg_kdtype d_dt, int ldd,
                          const void *w, lg_kdtype w_dt, int rows, int dim, float eps, void *stream)
{
    CHECK_DT(who, out_dt);
    CHECK_DT(who, x_dt);
    CHECK_DT(who, d_dt);
    CHECK_DT(who, w_dt);
    if (rows < 0 || dim <= 0 || ldo < dim || ldx < dim || (delta && ldd < dim))
        return lg_k_fail("%s: bad sizes rows=%d dim=%d ldo=%d ldx=%d ldd=%d", who, rows, dim, ldo,
                         ldx, ldd);
    if (rows == 0)
        return 0;
    int threads = row_block(dim / 4);
    if (threads > 1024)
        threads = 1024;
    void (*kern)(void *, int, int, void *, int, int, const void *, int, int, const void *, int,
                 int, float) = dim <= 4 * threads   ? rmsnorm_kernel<4>
                               : dim <= 8 * threads ? rmsnorm_kernel<8>
                                                    : rmsnorm_kernel<0>;
    lg_launch_pdl(kern, rows, threads, 0, LG_CUDA_STREAM(stream), out, (int)out_dt, ldo, x,
                  (int)x_dt, ldx, delta, (int)d_dt, ldd, w, (int)w_dt, dim, eps);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

extern "C" int lg_k_rmsnorm(void *out, lg_kdtype out_dt, int ldo, const void *x, lg_kdtype x_dt,
                            int ldx, const void *w, lg_kdtype w_dt, int rows, int dim, float eps,
                            void *stream)
{
    return rmsnorm_launch("lg_k_rmsnorm", out, out_dt, ldo, (void *)x, x_dt, ldx, NULL, x_dt, dim,
                          w, w_dt, rows, dim, eps, stream);
}

extern "C" int lg_k_add_rmsnorm(void *x, lg_kdtype x_dt, int ldx, const void *delta,
                                lg_kdtype delta_dt, int ldd, void *out, lg_kdtype out_dt, int ldo,
                                const void *w, lg_kdtype w_dt, int rows, int dim, float eps,
                                void *stream)
{
    if (!delta)
        return lg_k_fail("lg_k_add_rmsnorm: delta is NULL");
    return rmsnorm_launch("lg_k_add_rmsnorm", out, out_dt, ldo, x, x_dt, ldx, delta, delta_dt, ldd,
                          w, w_dt, rows, dim, eps, stream);
}

/* ---------------------------------------------------------------- add, convert */

/* dst = (accumulate ? dst : 0) + src, grid-stride over rows x cols. */
__global__ void add_kernel(void *dst, int d_dt, int ldd, const void *src, int s_dt, int lds,
                           int rows, int cols, int accumulate)
{
    lg_pdl_wait();
    lg_pdl_trigger();
    size_t total = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        float v = lg_ld(src, s_dt, r * lds + c);
        if (accumulate)
            v += lg_ld(dst, d_dt, r * ldd + c);
        lg_st(dst, d_dt, r * ldd + c, v);
    }
}

static int add_launch(const char *who, void *dst, lg_kdtype d_dt, int ldd, const void *src,
                      lg_kdtype s_dt, int lds, int rows, int cols, int accumulate, void *stream)
{
    CHECK_DT(who, d_dt);
    CHECK_DT(who, s_dt);
    if (rows < 0 || cols <= 0 || ldd < cols || lds < cols)
        return lg_k_fail("%s: bad sizes rows=%d cols=%d ldd=%d lds=%d", who, rows, cols, ldd, lds);
    if (rows == 0)
        return 0;
    size_t total = (size_t)rows * cols;
    size_t blocks = (total + 255) / 256;
    if (blocks > 65536)
        blocks = 65536;
    lg_launch_pdl(add_kernel, (unsigned)blocks, 256, 0, LG_CUDA_STREAM(stream), dst, (int)d_dt,
                  ldd, src, (int)s_dt, lds, rows, cols, accumulate);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

extern "C" int lg_k_add(void *x, lg_kdtype x_dt, int ldx, const void *delta, lg_kdtype delta_dt,
                        int ldd, int rows, int cols, void *stream)
{
    return add_launch("lg_k_add", x, x_dt, ldx, delta, delta_dt, ldd, rows, cols, 1, stream);
}

extern "C" int lg_k_convert(void *dst, lg_kdtype dst_dt, int ldd, const void *src,
                            lg_kdtype src_dt, int lds, int rows, int cols, void *stream)
{
    return add_launch("lg_k_convert", dst, dst_dt, ldd, src, src_dt, lds, rows, cols, 0, stream);
}

/* ---------------------------------------------------------------- RoPE */

/* One block per (row, head) of q then of k, one thread per pair (i, i + half): at decode (one row)
 * the 64 to 128 heads spread over as many SMs. The angle as transformers forms it (float32 product),
 * cos/sin in double rounded once, as runtime/forward_cpu.c. With a cache destination (dst.k_cache)
 * the blocks of k also store the rotated pair and the value pair (i, i + half) of their head in the
 * row's cache slot, as lg_k_kv_write would: a decode step then needs no kernel between RoPE and
 * attention. */
__global__ void rope_kernel(void *q, int ldq, int nh, void *k, int ldk, int nkv, int dt,
                            int head_dim, const int *pos, int pos0, const float *inv_freq,
                            float attn_scale, lg_kcache_dst dst)
{
    int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    int half = head_dim / 2;
    /* the angle before the wait: positions and inv_freq come from the host, not from a kernel */
    int ip = pos ? pos[t] : pos0 + t;
    float c = 0.0f, s = 0.0f;
    if (i < half)
        lg_rope_cs(ip, inv_freq[i], attn_scale, &c, &s);
    lg_pdl_wait();
    lg_pdl_trigger();
    if (i >= half)
        return;
    void *base = h < nh ? q : k;
    size_t off = h < nh ? (size_t)t * ldq + (size_t)h * head_dim
                        : (size_t)t * ldk + (size_t)(h - nh) * head_dim;
    float y0, y1;
    lg_rope_rotate(lg_ld(base, dt, off + i), lg_ld(base, dt, off + i + half), c, s, &y0, &y1);
    lg_st(base, dt, off + i, y0);
    lg_st(base, dt, off + i + half, y1);
    if (h < nh || !dst.k_cache)
        return;
    int slot = dst.slots[t];
    size_t co = (size_t)slot * dst.ld_cache + (size_t)(h - nh) * head_dim;
    size_t vo = (size_t)t * dst.ldv + (size_t)(h - nh) * head_dim;
    lg_st(dst.k_cache, dt, co + i, y0); /* rounded as the in-place store above */
    lg_st(dst.k_cache, dt, co + i + half, y1);
    lg_st(dst.v_cache, dt, co + i, lg_ld(dst.v, dt, vo + i));
    lg_st(dst.v_cache, dt, co + i + half, lg_ld(dst.v, dt, vo + i + half));
    if (h == nh && i == 0)
        dst.slot_pos[slot] = ip;
}

static int rope_launch(const char *who, void *q, int ldq, int n_heads, void *k, int ldk,
                       int n_kv_heads, lg_kdtype dt, int rows, int head_dim, const int *pos,
                       int pos0, const float *inv_freq, float attn_scale,
                       const lg_kcache_dst *dst, void *stream)
{
    CHECK_DT(who, dt);
    if (rows < 0 || head_dim <= 0 || head_dim % 2 || head_dim > 2048 || n_heads <= 0 ||
        ldq < n_heads * head_dim || (k && (n_kv_heads <= 0 || ldk < n_kv_heads * head_dim)) ||
        n_heads + (k ? n_kv_heads : 0) > 65535)
        return lg_k_fail("%s: bad sizes rows=%d head_dim=%d n_heads=%d ldq=%d n_kv_heads=%d "
                         "ldk=%d", who, rows, head_dim, n_heads, ldq, n_kv_heads, ldk);
    lg_kcache_dst d;
    memset(&d, 0, sizeof d);
    if (dst) {
        int kvd = n_kv_heads * head_dim;
        if (!k || !dst->k_cache || !dst->v_cache || !dst->v || !dst->slots || !dst->slot_pos)
            return lg_k_fail("%s: k, the caches, v, slots and slot_pos are required", who);
        if (dst->ld_cache < kvd || dst->ldv < kvd)
            return lg_k_fail("%s: bad sizes ld_cache=%d ldv=%d for kv_dim %d", who,
                             dst->ld_cache, dst->ldv, kvd);
        d = *dst;
    }
    if (rows == 0)
        return 0;
    dim3 grid((unsigned)rows, (unsigned)(n_heads + (k ? n_kv_heads : 0)));
    unsigned threads = (unsigned)((head_dim / 2 + 31) / 32 * 32);
    lg_launch_pdl(rope_kernel, grid, threads, 0, LG_CUDA_STREAM(stream), q, ldq, n_heads, k, ldk,
                  n_kv_heads, (int)dt, head_dim, pos, pos0, inv_freq, attn_scale, d);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

extern "C" int lg_k_rope(void *q, int ldq, int n_heads, void *k, int ldk, int n_kv_heads,
                         lg_kdtype dt, int rows, int head_dim, const int *pos, int pos0,
                         const float *inv_freq, float attn_scale, void *stream)
{
    return rope_launch("lg_k_rope", q, ldq, n_heads, k, ldk, n_kv_heads, dt, rows, head_dim, pos,
                       pos0, inv_freq, attn_scale, NULL, stream);
}

extern "C" int lg_k_rope_kv(void *q, int ldq, int n_heads, void *k, int ldk, int n_kv_heads,
                            lg_kdtype dt, int rows, int head_dim, const int *pos, int pos0,
                            const float *inv_freq, float attn_scale, const lg_kcache_dst *dst,
                            void *stream)
{
    if (!dst)
        return lg_k_fail("lg_k_rope_kv: no cache destination");
    return rope_launch("lg_k_rope_kv", q, ldq, n_heads, k, ldk, n_kv_heads, dt, rows, head_dim,
                       pos, pos0, inv_freq, attn_scale, dst, stream);
}

/* ---------------------------------------------------------------- SwiGLU */

__global__ void swiglu_kernel(void *out, int out_dt, int ldo, const void *gate, int ldg,
                              const void *up, int ldu, int in_dt, int rows, int ffn)
{
    lg_pdl_wait();
    lg_pdl_trigger();
    size_t total = (size_t)rows * ffn;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / ffn, c = i % ffn;
        float g = lg_ld(gate, in_dt, r * ldg + c), u = lg_ld(up, in_dt, r * ldu + c);
        lg_st(out, out_dt, r * ldo + c, lg_silu_mul(g, u));
    }
}

extern "C" int lg_k_swiglu(void *out, lg_kdtype out_dt, int ldo, const void *gate, int ldg,
                           const void *up, int ldu, lg_kdtype in_dt, int rows, int ffn, void *stream)
{
    CHECK_DT("lg_k_swiglu", out_dt);
    CHECK_DT("lg_k_swiglu", in_dt);
    if (rows < 0 || ffn <= 0 || ldo < ffn || ldg < ffn || ldu < ffn)
        return lg_k_fail("lg_k_swiglu: bad sizes rows=%d ffn=%d ldo=%d ldg=%d ldu=%d", rows, ffn,
                         ldo, ldg, ldu);
    if (rows == 0)
        return 0;
    size_t blocks = ((size_t)rows * ffn + 255) / 256;
    if (blocks > 65536)
        blocks = 65536;
    lg_launch_pdl(swiglu_kernel, (unsigned)blocks, 256, 0, LG_CUDA_STREAM(stream), out,
                  (int)out_dt, ldo, gate, ldg, up, ldu, (int)in_dt, rows, ffn);
    LG_CUDA_LAUNCHED("lg_k_swiglu");
    return 0;
}

/* ---------------------------------------------------------------- argmax */

__global__ void argmax_kernel(int *idx, const float *x, int ldx, int cols)
{
    lg_pdl_wait();
    lg_pdl_trigger();
    __shared__ float bv[32];
    __shared__ int bi[32];
    size_t r = blockIdx.x;
    float best = -INFINITY;
    int besti = 0x7fffffff;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = x[r * ldx + c];
        if (v > best) { /* ascending c per thread: the first maximum stays */
            best = v;
            besti = c;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, besti, o);
        if (ov > best || (ov == best && oi < besti)) {
            best = ov;
            besti = oi;
        }
    }
    if (lane == 0) {
        bv[warp] = best;
        bi[warp] = besti;
    }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        best = lane < nw ? bv[lane] : -INFINITY;
        besti = lane < nw ? bi[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, besti, o);
            if (ov > best || (ov == best && oi < besti)) {
                best = ov;
                besti = oi;
            }
        }
        if (lane == 0)
            idx[r] = besti == 0x7fffffff ? 0 : besti; /* all NaN or -inf: column 0 */
    }
}

extern "C" int lg_k_argmax(int *idx, const float *x, int ldx, int rows, int cols, void *stream)
{
    if (rows < 0 || cols <= 0 || ldx < cols)
        return lg_k_fail("lg_k_argmax: bad sizes rows=%d cols=%d ldx=%d", rows, cols, ldx);
    if (rows == 0)
        return 0;
    lg_launch_pdl(argmax_kernel, rows, 1024, 0, LG_CUDA_STREAM(stream), idx, x, ldx, cols);
    LG_CUDA_LAUNCHED("lg_k_argmax");
    return 0;
}
