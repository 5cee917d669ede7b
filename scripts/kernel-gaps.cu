/* What a kernel boundary costs at decode, and what a grid-wide barrier inside one persistent kernel
 * would cost instead: the two numbers that price a persistent per-layer decode kernel against the
 * chain of small kernels a layer is now (docs/BENCHMARKS.md).
 *
 *   boundaries: a chain of 100 kernels, each waiting on the one before (block 0 increments a
 *     counter the previous kernel incremented), launched on a stream, captured in a graph, and
 *     captured in a graph with programmatic dependent launch (every kernel waits, then lets the
 *     next one be scheduled: lg_launch_pdl, as the engine's kernels do); the us a kernel, median of
 *     20 runs of the chain, for grids of the decode kernels' sizes.
 *   barriers: one kernel of co-resident blocks (a cooperative launch) crossing 1000 grid-wide
 *     barriers (an arrival counter and a generation, as a persistent kernel would keep them); the us
 *     a barrier, median of 20 runs.
 * Not built by CMake; on the device machine:
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Ikernels -o /tmp/kg \
 *       scripts/kernel-gaps.cu kernels/kernel_types.cu
 *   /tmp/kg */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernel_common.cuh"

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_) {                                                                                  \
            printf("error: %s (line %d)\n", cudaGetErrorString(e_), __LINE__);                    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHAIN 100
#define RUNS 20
#define BARRIERS 1000

/* One link of the chain: the dependency is real (block 0 reads what the kernel before wrote). */
__global__ void link_kernel(unsigned *counter)
{
    lg_pdl_wait();
    lg_pdl_trigger();
    if (blockIdx.x == 0 && threadIdx.x == 0)
        *counter += 1;
}

enum { STREAM, GRAPH, GRAPH_PDL };

static void launch_chain(int mode, int blocks, int threads, unsigned *counter, cudaStream_t s)
{
    for (int i = 0; i < CHAIN; i++) {
        if (mode == GRAPH_PDL)
            lg_launch_pdl(link_kernel, dim3(blocks), dim3(threads), 0, s, counter);
        else
            link_kernel<<<blocks, threads, 0, s>>>(counter);
    }
    CK(cudaGetLastError());
}

static double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* The us a kernel of the chain, median of RUNS. */
static double time_chain(int mode, int blocks, int threads, unsigned *counter, cudaStream_t s)
{
    cudaGraphExec_t exec = NULL;
    if (mode != STREAM) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        launch_chain(mode, blocks, threads, counter, s);
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&exec, g, 0));
        CK(cudaGraphDestroy(g));
    }
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<double> us;
    for (int r = 0; r < RUNS + 2; r++) {
        CK(cudaEventRecord(a, s));
        if (exec)
            CK(cudaGraphLaunch(exec, s));
        else
            launch_chain(mode, blocks, threads, counter, s);
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (r >= 2) /* the first runs load the module and warm the launch path */
            us.push_back(ms * 1e3 / CHAIN);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    if (exec)
        CK(cudaGraphExecDestroy(exec));
    return median(us);
}

/* A grid-wide barrier of co-resident blocks: the last block to arrive resets the count and moves
 * the generation on; the others spin on the generation. The fences order each block's writes before
 * its arrival and the others' writes before its departure. */
__device__ __forceinline__ void grid_barrier(unsigned *count, volatile unsigned *gen)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned g = *gen;
        __threadfence();
        if (atomicAdd(count, 1u) == gridDim.x - 1) {
            *count = 0;
            __threadfence();
            atomicAdd((unsigned *)gen, 1u);
        } else {
            while (*gen == g) {
            }
        }
        __threadfence();
    }
    __syncthreads();
}

__global__ void barrier_kernel(unsigned *count, unsigned *gen, int n)
{
    for (int i = 0; i < n; i++)
        grid_barrier(count, gen);
}

/* The us a barrier for a grid of blocks x threads (co-resident: a cooperative launch), or a
 * negative value when the GPU cannot hold the grid at once. */
static double time_barrier(int blocks, int threads, unsigned *sync, cudaStream_t s)
{
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, barrier_kernel, threads, 0));
    if (per_sm * lg_sm_count() < blocks)
        return -1.0;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<double> us;
    unsigned *count = sync, *gen = sync + 1;
    int n = BARRIERS;
    void *args[] = {&count, &gen, &n};
    for (int r = 0; r < RUNS + 2; r++) {
        CK(cudaMemsetAsync(sync, 0, 2 * sizeof(unsigned), s));
        CK(cudaEventRecord(a, s));
        CK(cudaLaunchCooperativeKernel((void *)barrier_kernel, dim3(blocks), dim3(threads), args, 0,
                                       s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (r >= 2)
            us.push_back(ms * 1e3 / BARRIERS);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return median(us);
}

int main(void)
{
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int sms = lg_sm_count();
    printf("%s, %d SMs; programmatic dependent launch %s\n", prop.name, sms,
           lg_pdl_enabled() ? "on" : "off (not compute capability 9.0, or LG_PDL=0)");
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    unsigned *d;
    CK(cudaMalloc((void **)&d, 4 * sizeof(unsigned)));
    CK(cudaMemset(d, 0, 4 * sizeof(unsigned)));

    /* the engine's decode grids: RMSNorm (1 block), attention at context 128 (64 blocks), the
     * one-row GEMVs (a block a tile or pair of tiles: 1 to 3 an SM) */
    const int grids[][2] = {{1, 1024}, {64, 128}, {sms, 512}, {2 * sms, 512}, {3 * sms, 256}};
    printf("\nkernel boundary, us a kernel (a chain of %d dependent kernels, median of %d)\n",
           CHAIN, RUNS);
    printf("| blocks x threads | stream | graph | graph + PDL |\n| --- | --- | --- | --- |\n");
    for (const auto &g : grids)
        printf("| %d x %d | %.2f | %.2f | %.2f |\n", g[0], g[1],
               time_chain(STREAM, g[0], g[1], d, s), time_chain(GRAPH, g[0], g[1], d, s),
               time_chain(GRAPH_PDL, g[0], g[1], d, s));

    printf("\ngrid-wide barrier in one kernel, us a barrier (%d barriers, median of %d)\n",
           BARRIERS, RUNS);
    printf("| blocks x threads | us |\n| --- | --- |\n");
    const int bgrids[][2] = {{sms, 512}, {2 * sms, 512}, {3 * sms, 256}};
    for (const auto &g : bgrids) {
        double us = time_barrier(g[0], g[1], d + 2, s);
        if (us < 0)
            printf("| %d x %d | (not co-resident) |\n", g[0], g[1]);
        else
            printf("| %d x %d | %.2f |\n", g[0], g[1], us);
    }
    unsigned h = 0;
    CK(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost));
    const unsigned want = (unsigned)(sizeof grids / sizeof grids[0]) * 3 * (RUNS + 2) * CHAIN;
    printf("\nchain counter %u of %u: %s\n", h, want, h == want ? "every link ran" : "LINKS LOST");
    CK(cudaFree(d));
    CK(cudaStreamDestroy(s));
    return 0;
}
