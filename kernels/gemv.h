/* Decode matrix-vector products: y[t][m] (=, or += when beta = 1) sum_k W[m][k] * x[t][k] for a few
 * rows t < n (1 for batch-1 decode), W [M, K] float32, float16 or bfloat16 (x the same type),
 * float32 accumulation, y float32 or the type of x. Memory-bound: each weight byte is read once per
 * call (rows of x are processed together, up to 4 per pass over W). Conventions: kernel_types.h.
 *
 * Fast path: K, ldw and ldx multiples of the elements in 16 bytes (8 for 16-bit types, 4 for
 * float32) and W, x 16-byte aligned (16-byte loads); otherwise a scalar path gives the same sums,
 * slowly. */
#ifndef LG_KERNELS_GEMV_H
#define LG_KERNELS_GEMV_H

#include "kernel_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = beta * y + x · W^T, beta 0 or 1. x rows ldx apart, y rows ldy apart. */
int lg_k_gemv(void *y, lg_kdtype y_dt, int ldy, const void *w, int ldw, const void *x, int ldx,
              lg_kdtype in_dt, int n, int M, int K, float beta, void *stream);

/* For benchmarks: rows of W per warp and loads in flight per row of the vector kernel; the
 * variants built are (2, 4) (the default), (1, 8), (4, 4) and (2, 8). Not thread-safe. */
int lg_k_gemv_set_variant(int rows_per_warp, int unroll);

/* For benchmarks, the limit a decode product of `bytes` of weights runs against: *sum += the sum of
 * the buffer's 32-bit words (mod 2^32), read as the GEMVs read weights (16-byte streaming loads) but
 * with nothing else to do, and every load issued before the programmatic-launch wait (no kernel
 * writes the buffer). A kernel of a few tens of MB pays its launch, its first loads' latency and
 * its tail on top of the transfer, so it reads below the copy bandwidth of a 1 GiB cudaMemcpy (an
 * H100: 25 MB at 90% of it, 9.4 MB at 68%); this measures by how much. bytes: a multiple of 16,
 * buf 16-byte aligned. */
int lg_k_read_sum(unsigned *sum, const void *buf, size_t bytes, void *stream);

#ifdef __cplusplus
}
#endif

#endif
