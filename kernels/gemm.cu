/* Prefill matrix products through cuBLAS (cublasGemmEx, float32 compute; pedantic for float32
 * inputs, so that no TF32 tensor-core path ever rounds them to 10-bit mantissas, which would undo
 * the point of running a float32 checkpoint in float32). cuBLAS is column-major:
 * row-major y[n, M] is the column-major [M, n] matrix y^T = W · x^T, where row-major W[M, K] read
 * column-major is W^T (so transa = T) and row-major x[n, K] is x^T (transb = N):
 * gemm(T, N, m = M, n = n, k = K, A = W (lda = ldw), B = x (ldb = ldx), C = y (ldc = ldy)). */
#include <cublas_v2.h>
#include <stdlib.h>

#include "gemm.h"
#include "kernel_common.cuh"

/* A fixed workspace makes cuBLAS usable under stream capture (no allocation while capturing). */
#define LG_BLAS_WORKSPACE ((size_t)32 << 20)

struct lg_blas {
    cublasHandle_t h;
    void *workspace;
};

static const char *blas_status(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cublas error";
    }
}

#define BLAS_TRY(who, call)                                                                       \
    do {                                                                                          \
        cublasStatus_t s_ = (call);                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return lg_k_fail("%s: %s: %s", who, #call, blas_status(s_));                          \
    } while (0)

extern "C" int lg_blas_create(lg_blas **out)
{
    *out = NULL;
    lg_blas *b = (lg_blas *)calloc(1, sizeof *b);
    if (!b)
        return lg_k_fail("lg_blas_create: out of host memory");
    cublasStatus_t s = cublasCreate(&b->h);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(b);
        return lg_k_fail("lg_blas_create: cublasCreate: %s", blas_status(s));
    }
    cudaError_t e = cudaMalloc(&b->workspace, LG_BLAS_WORKSPACE);
    if (e != cudaSuccess) {
        cublasDestroy(b->h);
        free(b);
        return lg_k_fail("lg_blas_create: cudaMalloc workspace: %s", cudaGetErrorString(e));
    }
    if (cublasSetWorkspace(b->h, b->workspace, LG_BLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(b->h, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                               CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)) !=
            CUBLAS_STATUS_SUCCESS) {
        lg_blas_destroy(b);
        return lg_k_fail("lg_blas_create: cannot set the workspace or math mode");
    }
    *out = b;
    return 0;
}

extern "C" void lg_blas_destroy(lg_blas *b)
{
    if (!b)
        return;
    cublasDestroy(b->h);
    cudaFree(b->workspace);
    free(b);
}

static cudaDataType_t cuda_type(lg_kdtype dt)
{
    return dt == LG_KDT_F32 ? CUDA_R_32F : dt == LG_KDT_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

extern "C" int lg_k_gemm(lg_blas *b, void *y, lg_kdtype y_dt, int ldy, const void *x, int ldx,
                         const void *w, int ldw, lg_kdtype in_dt, int n, int M, int K, float beta,
                         void *stream)
{
    const char *who = "lg_k_gemm";
    if (!b)
        return lg_k_fail("%s: no cuBLAS handle", who);
    if (in_dt != LG_KDT_F32 && in_dt != LG_KDT_F16 && in_dt != LG_KDT_BF16)
        return lg_k_fail("%s: inputs must be float32, float16 or bfloat16 (dtype %d)", who,
                         (int)in_dt);
    if (y_dt != LG_KDT_F32 && y_dt != in_dt)
        return lg_k_fail("%s: output must be float32 or the input type (dtype %d)", who, (int)y_dt);
    if (beta != 0.0f && beta != 1.0f)
        return lg_k_fail("%s: beta must be 0 or 1 (got %g)", who, beta);
    if (n < 0 || M <= 0 || K <= 0 || ldx < K || ldw < K || ldy < M)
        return lg_k_fail("%s: bad sizes n=%d M=%d K=%d ldx=%d ldw=%d ldy=%d", who, n, M, K, ldx,
                         ldw, ldy);
    if (n == 0)
        return 0;
    float alpha = 1.0f;
    cublasComputeType_t compute =
        in_dt == LG_KDT_F32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    BLAS_TRY(who, cublasSetStream(b->h, LG_CUDA_STREAM(stream)));
    BLAS_TRY(who, cublasGemmEx(b->h, CUBLAS_OP_T, CUBLAS_OP_N, M, n, K, &alpha, w, cuda_type(in_dt),
                               ldw, x, cuda_type(in_dt), ldx, &beta, y, cuda_type(y_dt), ldy,
                               compute, CUBLAS_GEMM_DEFAULT));
    return 0;
}
