/* Batch-1 (up to 4 rows at a time) GEMV for decode: y[t][m] = sum_k W[m][k] x[t][k].
 *
 * Memory-bound: W (M*K weights of 2 or 4 bytes) is read once; x (a few KB) stays in L1/L2. Each
 * warp owns ROWS consecutive rows of W; each lane reads 16 bytes (8 16-bit weights or 4 float32
 * ones) of each row per step, UNROLL steps at a time, so ROWS * UNROLL independent 16-byte loads are
 * in flight per lane before the first use (latency hiding without relying on occupancy alone).
 * Weights are loaded with the L1::no_allocate hint (streamed once, kept out of L1 where x lives).
 * Partial sums are float32 per lane, then summed across the warp with shuffles. The float32
 * instantiation (a float32 checkpoint run as such) is the same code with 4 elements a load. CPU
 * twins: lg_ops_gemv16 (16-bit weights) and lg_matmul (float32), in kernels/check/check_kernels.c. */
#include "gemv.h"
#include "kernel_common.cuh"

#define GEMV_WARPS 4

/* rows per warp and unroll of the vector kernel: (2, 4) by default, others for benchmarks */
static int gemv_rows = 2, gemv_unroll = 4;


template <typename T, int NT, int ROWS, int UNROLL>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_vec_kernel(void *y, int y_dt, int ldy, const T *__restrict__ w, int ldw,
                    const T *__restrict__ x, int ldx, int M, int K, int accumulate)
{
    int lane = threadIdx.x & 31;
    int row0 = (blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5)) * ROWS;
    if (row0 >= M)
        return;
    constexpr int EPV = lg_vec16<T>::N; /* elements per 16-byte load */
    int kv = K / EPV;                   /* 16-byte vectors per row */
    const uint4 *wr[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        int row = row0 + r < M ? row0 + r : M - 1; /* past the end: read a valid row, drop it */
        wr[r] = reinterpret_cast<const uint4 *>(w + (size_t)row * ldw);
    }
    /* the first step's weights (written by no kernel) start on their way to L2 before the wait:
     * one step, not the UNROLL of the first round, since in the decode chain the prefetches queue
     * behind the loads of the kernel still running (7B decode at 4K on an H100: 1% faster with 1
     * or 2 steps than with 4, slower with none; docs/BENCHMARKS.md) */
#pragma unroll
    for (int r = 0; r < ROWS; r++)
        if (lane < kv)
            lg_prefetch_l2(wr[r] + lane);
    lg_pdl_wait();
    lg_pdl_trigger();
    float acc[NT][ROWS];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < ROWS; r++)
            acc[t][r] = 0.0f;

    for (int base = lane; base < kv; base += 32 * UNROLL) {
        uint4 wv[UNROLL][ROWS];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            int i = base + u * 32;
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                wv[u][r] = i < kv ? lg_ld_stream16(wr[r] + i) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            int i = base + u * 32;
            if (i < kv) {
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    float xf[EPV];
                    lg_vec16<T>::unpack(
                        __ldg(reinterpret_cast<const uint4 *>(x + (size_t)t * ldx) + i), xf);
#pragma unroll
                    for (int r = 0; r < ROWS; r++) {
                        float wf[EPV];
                        lg_vec16<T>::unpack(wv[u][r], wf);
#pragma unroll
                        for (int e = 0; e < EPV; e++)
                            acc[t][r] = fmaf(wf[e], xf[e], acc[t][r]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            float s = lg_warp_sum(acc[t][r]);
            if (lane == 0 && row0 + r < M) {
                size_t o = (size_t)t * ldy + row0 + r;
                lg_st(y, y_dt, o, accumulate ? lg_ld(y, y_dt, o) + s : s);
            }
        }
}

/* Any K, any alignment: one row per warp, scalar loads. */
template <typename T>
__global__ void gemv_scalar_kernel(void *y, int y_dt, int ldy, const T *__restrict__ w, int ldw,
                                   const T *__restrict__ x, int ldx, int n, int M, int K,
                                   int accumulate)
{
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= M)
        return;
    lg_pdl_wait();
    lg_pdl_trigger();
    for (int t = 0; t < n; t++) {
        float acc = 0.0f;
        for (int k = lane; k < K; k += 32)
            acc = fmaf(lg_elem<T>::to_f(w[(size_t)row * ldw + k]),
                       lg_elem<T>::to_f(x[(size_t)t * ldx + k]), acc);
        acc = lg_warp_sum(acc);
        if (lane == 0) {
            size_t o = (size_t)t * ldy + row;
            lg_st(y, y_dt, o, accumulate ? lg_ld(y, y_dt, o) + acc : acc);
        }
    }
}

template <typename T>
static void gemv_launch(void *y, int y_dt, int ldy, const void *w, int ldw, const void *x, int ldx,
                        int n, int M, int K, int acc, bool vec, cudaStream_t s)
{
    const T *wt = (const T *)w, *xt = (const T *)x;
    if (!vec) {
        unsigned blocks = (unsigned)((M + GEMV_WARPS - 1) / GEMV_WARPS);
        lg_launch_pdl(gemv_scalar_kernel<T>, blocks, GEMV_WARPS * 32, 0, s, y, y_dt, ldy, wt, ldw,
                      xt, ldx, n, M, K, acc);
        return;
    }
    int rows_per_block = GEMV_WARPS * gemv_rows;
    unsigned blocks = (unsigned)((M + rows_per_block - 1) / rows_per_block);
    int ysz = y_dt == LG_KDT_F32 ? 4 : 2;
    for (int t0 = 0; t0 < n; t0 += 4) {
        int nt = n - t0 < 4 ? n - t0 : 4;
        void *yt = (char *)y + (size_t)t0 * ldy * ysz;
        const T *xx = xt + (size_t)t0 * ldx;
        int v = gemv_rows * 100 + gemv_unroll;
#define GEMV_CASE(NT_, R_, U_)                                                                    \
    if (nt == NT_ && v == R_ * 100 + U_) {                                                        \
        lg_launch_pdl(gemv_vec_kernel<T, NT_, R_, U_>, blocks, GEMV_WARPS * 32, 0, s, yt, y_dt,    \
                      ldy, wt, ldw, xx, ldx, M, K, acc);                                          \
        continue;                                                                                 \
    }
#define GEMV_VARIANTS(NT_) GEMV_CASE(NT_, 2, 4) GEMV_CASE(NT_, 1, 8) GEMV_CASE(NT_, 4, 4) GEMV_CASE(NT_, 2, 8)
        GEMV_VARIANTS(1)
        GEMV_VARIANTS(2)
        GEMV_VARIANTS(3)
        GEMV_VARIANTS(4)
#undef GEMV_VARIANTS
#undef GEMV_CASE
    }
}

/* ---------------------------------------------------------------- read ceiling (benchmarks) */

#define READ_THREADS 256
#define READ_UNROLL 8

/* Two blocks of 256 threads an SM, each thread READ_UNROLL loads apart by the grid's width, several
 * rounds: on an H100 this read 25 MB in 9.4 us, where a grid of every block the SMs hold (each
 * thread's loads all out at once) took 12.2 us and one block an SM 10.1 us; 262 MB at 3.07 TB/s
 * (scripts/read-variants.cu, docs/BENCHMARKS.md). The dependents are let go after the wait, as
 * every kernel here does: let go first, the next reads overlapped this one whole (they wait only
 * to add to *sum), which a GEMV, whose products need the x an earlier kernel writes, cannot do. */
__global__ void __launch_bounds__(READ_THREADS)
    read_sum_kernel(unsigned *sum, const uint4 *__restrict__ buf, size_t n16)
{
    const size_t stride = (size_t)gridDim.x * READ_THREADS;
    unsigned acc = 0;
    for (size_t i = (size_t)blockIdx.x * READ_THREADS + threadIdx.x; i < n16;
         i += stride * READ_UNROLL) {
        uint4 v[READ_UNROLL];
#pragma unroll
        for (int u = 0; u < READ_UNROLL; u++) {
            size_t j = i + u * stride;
            v[u] = j < n16 ? lg_ld_stream16(buf + j) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < READ_UNROLL; u++)
            acc += v[u].x + v[u].y + v[u].z + v[u].w;
    }
    lg_pdl_wait(); /* *sum is written by earlier kernels */
    lg_pdl_trigger();
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0)
        atomicAdd(sum, acc);
}

extern "C" int lg_k_read_sum(unsigned *sum, const void *buf, size_t bytes, void *stream)
{
    const char *who = "lg_k_read_sum";
    if (!sum || !buf || bytes % 16 != 0 || ((uintptr_t)buf & 15) != 0)
        return lg_k_fail("%s: needs a sum, and a 16-byte aligned buffer of a multiple of 16 bytes "
                         "(%zu bytes)", who, bytes);
    if (bytes == 0)
        return 0;
    size_t n16 = bytes / 16, need = (n16 + READ_THREADS - 1) / READ_THREADS;
    size_t grid = 2 * (size_t)lg_sm_count();
    lg_launch_pdl(read_sum_kernel, (unsigned)(need < grid ? need : grid), READ_THREADS, 0,
                  LG_CUDA_STREAM(stream), sum, (const uint4 *)buf, n16);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

extern "C" int lg_k_gemv_set_variant(int rows_per_warp, int unroll)
{
    int v = rows_per_warp * 100 + unroll;
    if (v != 204 && v != 108 && v != 404 && v != 208)
        return lg_k_fail("lg_k_gemv_set_variant: no variant rows %d unroll %d", rows_per_warp,
                         unroll);
    gemv_rows = rows_per_warp;
    gemv_unroll = unroll;
    return 0;
}

extern "C" int lg_k_gemv(void *y, lg_kdtype y_dt, int ldy, const void *w, int ldw, const void *x,
                         int ldx, lg_kdtype in_dt, int n, int M, int K, float beta, void *stream)
{
    const char *who = "lg_k_gemv";
    if (in_dt != LG_KDT_F32 && in_dt != LG_KDT_F16 && in_dt != LG_KDT_BF16)
        return lg_k_fail("%s: inputs must be float32, float16 or bfloat16 (dtype %d)", who,
                         (int)in_dt);
    if (y_dt != LG_KDT_F32 && y_dt != in_dt)
        return lg_k_fail("%s: output must be float32 or the input type (dtype %d)", who, (int)y_dt);
    if (beta != 0.0f && beta != 1.0f)
        return lg_k_fail("%s: beta must be 0 or 1 (got %g)", who, beta);
    if (n < 0 || M <= 0 || K <= 0 || ldw < K || ldx < K || ldy < M)
        return lg_k_fail("%s: bad sizes n=%d M=%d K=%d ldw=%d ldx=%d ldy=%d", who, n, M, K, ldw,
                         ldx, ldy);
    if (n == 0)
        return 0;
    int epv = 16 / lg_kdtype_size(in_dt); /* elements per 16-byte load */
    bool vec = K % epv == 0 && ldw % epv == 0 && ldx % epv == 0 && ((uintptr_t)w & 15) == 0 &&
               ((uintptr_t)x & 15) == 0;
    int acc = beta != 0.0f;
    cudaStream_t s = LG_CUDA_STREAM(stream);
    if (in_dt == LG_KDT_F32)
        gemv_launch<float>(y, y_dt, ldy, w, ldw, x, ldx, n, M, K, acc, vec, s);
    else if (in_dt == LG_KDT_F16)
        gemv_launch<__half>(y, y_dt, ldy, w, ldw, x, ldx, n, M, K, acc, vec, s);
    else
        gemv_launch<__nv_bfloat16>(y, y_dt, ldy, w, ldw, x, ldx, n, M, K, acc, vec, s);
    LG_CUDA_LAUNCHED(who);
    return 0;
}
