/* Matrix products for prefill through cuBLAS: y[n, M] (=, or += when beta = 1) x[n, K] · W[M, K]^T,
 * W in Hugging Face's [out_features, in_features] layout. x and W float32, float16 or bfloat16 (the
 * same type), computed in float32 (CUBLAS_COMPUTE_32F, no reduced-precision reductions; float32
 * inputs with CUBLAS_COMPUTE_32F_PEDANTIC: no TF32); y float32 or the type of x. Conventions:
 * kernel_types.h. */
#ifndef LG_KERNELS_GEMM_H
#define LG_KERNELS_GEMM_H

#include "kernel_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A cuBLAS handle with its workspace (so that products can be captured in a CUDA graph). Made once,
 * used from one thread at a time; lg_blas_destroy frees it. */
typedef struct lg_blas lg_blas;

int lg_blas_create(lg_blas **out);
void lg_blas_destroy(lg_blas *b);

/* y = beta * y + x · W^T with beta 0 or 1 (1 fuses a residual add: y is the float32 residual).
 * ldx >= K, ldw >= K, ldy >= M. */
int lg_k_gemm(lg_blas *b, void *y, lg_kdtype y_dt, int ldy, const void *x, int ldx, const void *w,
              int ldw, lg_kdtype in_dt, int n, int M, int K, float beta, void *stream);

#ifdef __cplusplus
}
#endif

#endif
