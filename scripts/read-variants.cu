/* How fast can a kernel read N bytes, in the conditions of the decode GEMVs' benchmark (bursts of
 * 12 launches with programmatic dependent launch, copies rotating through L2)? The grid shapes that
 * lg_k_read_sum (kernels/gemv.cu) chose from, and the 1 GiB copy the "% of copy" figures divide by,
 * with random bytes and with one repeated byte. Not built by CMake; on the device machine:
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Ikernels -o /tmp/rv \
 *       scripts/read-variants.cu kernels/kernel_types.cu
 *   /tmp/rv
 * Prints, per size, the median us a read for each variant: U loads in flight a thread, threads a
 * block, the dependents let go before the loads (early) or after the wait (late), and blocks an SM
 * (bps; "full": every block the SMs hold). docs/BENCHMARKS.md has its figures. */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "kernel_common.cuh"

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e = (x);                                                                       \
        if (e) {                                                                                   \
            printf("err %s line %d\n", cudaGetErrorString(e), __LINE__);                          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* lg_k_read_sum's kernel with its choices as parameters */
template <int U, int EARLY>
__global__ void rk(unsigned *sum, const uint4 *__restrict__ buf, size_t n16)
{
    if (EARLY)
        lg_pdl_trigger();
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    unsigned acc = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += stride * U) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            size_t j = i + u * stride;
            v[u] = j < n16 ? lg_ld_stream16(buf + j) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++)
            acc += v[u].x + v[u].y + v[u].z + v[u].w;
    }
    lg_pdl_wait();
    if (!EARLY)
        lg_pdl_trigger();
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_xor_sync(~0u, acc, o);
    if ((threadIdx.x & 31) == 0)
        atomicAdd(sum, acc);
}

template <int U, int EARLY>
float run(size_t bytes, int threads, int bps_cap, std::vector<void *> &bufs, unsigned *sum) {
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    int per = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, rk<U, EARLY>, threads, 0));
    if (bps_cap && per > bps_cap)
        per = bps_cap;
    size_t n16 = bytes / 16, need = (n16 + threads - 1) / threads;
    size_t res = (size_t)per * sms;
    unsigned g = (unsigned)std::min(need, res);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<float> t;
    int c = 0;
    for (int r = -3; r < 15; r++) {
        cudaEventRecord(e0);
        for (int b = 0; b < 12; b++)
            lg_launch_pdl(rk<U, EARLY>, g, threads, 0, 0, sum,
                          (const uint4 *)bufs[(c++) % bufs.size()], n16);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r >= 0)
            t.push_back(ms / 12 * 1000);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

static void fill_random(void *d, size_t bytes) {
    std::vector<uint64_t> h(bytes / 8);
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (auto &v : h) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        v = r;
    }
    CK(cudaMemcpy(d, h.data(), bytes, cudaMemcpyHostToDevice));
}
static float copy_ms(void *a, void *b, size_t bytes) {
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<float> t;
    for (int r = -2; r < 11; r++) {
        cudaEventRecord(e0);
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r >= 0)
            t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}
int main() {
    unsigned *sum;
    CK(cudaMalloc(&sum, 4));
    {
        size_t bytes = (size_t)1 << 30;
        void *a, *b;
        CK(cudaMalloc(&a, bytes));
        CK(cudaMalloc(&b, bytes));
        CK(cudaMemset(a, 1, bytes));
        float m1 = copy_ms(a, b, bytes);
        fill_random(a, bytes);
        float m2 = copy_ms(a, b, bytes);
        printf("copy 1 GiB: one repeated byte %.1f GB/s, random bytes %.1f GB/s (read + write)\n",
               2.0 * bytes / (m1 * 1e-3) / 1e9, 2.0 * bytes / (m2 * 1e-3) / 1e9);
        cudaFree(a);
        cudaFree(b);
    }
    /* q4 g64 11008 x 4096, q4 4096 x 4096, q8 12288 x 4096, fp16 11008 x 4096, fp16 32000 x 4096 */
    size_t sizes[] = {25370624, 9437184, 50397184, 90177536, 262144000};
    for (size_t bytes : sizes) {
        bytes = (bytes + 15) / 16 * 16;
        int copies =
            std::max<size_t>(2, std::min<size_t>(16, (3 * 50 * 1048576 + bytes - 1) / bytes));
        std::vector<void *> bufs(copies);
        for (auto &b : bufs) {
            CK(cudaMalloc(&b, bytes));
            fill_random(b, bytes);
        }
        printf("%zu bytes, %d copies, random:", bytes, copies);
        printf(" U8/256/late/full %.2f", run<8, 0>(bytes, 256, 0, bufs, sum));
        printf(" U8/256/early/full %.2f", run<8, 1>(bytes, 256, 0, bufs, sum));
        printf(" U8/1024/early/full %.2f", run<8, 1>(bytes, 1024, 0, bufs, sum));
        printf(" U8/256/late/2bps %.2f", run<8, 0>(bytes, 256, 2, bufs, sum));
        printf(" U8/256/late/1bps %.2f", run<8, 0>(bytes, 256, 1, bufs, sum));
        printf(" U4/256/late/1bps %.2f", run<4, 0>(bytes, 256, 1, bufs, sum));
        for (int b = 1; b <= 4; b++)
            printf(" U8/256/early/%dbps %.2f", b, run<8, 1>(bytes, 256, b, bufs, sum));
        printf(" U4/256/early/1bps %.2f", run<4, 1>(bytes, 256, 1, bufs, sum));
        printf(" U16/256/early/1bps %.2f", run<16, 1>(bytes, 256, 1, bufs, sum));
        printf(" U8/512/early/1bps %.2f", run<8, 1>(bytes, 512, 1, bufs, sum));
        for (auto &b : bufs)
            CK(cudaMemset(b, 1, bytes));
        printf(" | one byte: U8/256/early/1bps %.2f us\n", run<8, 1>(bytes, 256, 1, bufs, sum));
        fflush(stdout);
        for (auto b : bufs)
            cudaFree(b);
    }
}
