/* One macro to check CUDA runtime calls. For .cu files and for C files that include
 * <cuda_runtime.h> themselves; this header alone pulls in no CUDA header, so gcc compiles it
 * anywhere (the macros expand only where used).
 *
 *   LG_CUDA_TRY(cudaMemcpyAsync(...));   on failure: records "file:line: call: cudaErrorX: text"
 *                                        as lg_k_last_error() and returns -1 from the function.
 *   LG_CUDA_LAUNCHED("name");            after a kernel launch: checks cudaGetLastError() likewise. */
#ifndef LG_CUDA_CHECK_H
#define LG_CUDA_CHECK_H

#include "kernel_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records a formatted message as lg_k_last_error() (printf-style). Always returns -1. */
int lg_k_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#ifdef __cplusplus
}
#endif

#define LG_CUDA_TRY(call)                                                                         \
    do {                                                                                          \
        cudaError_t lg_e_ = (call);                                                               \
        if (lg_e_ != cudaSuccess)                                                                 \
            return lg_k_fail("%s:%d: %s: %s: %s", __FILE__, __LINE__, #call,                      \
                             cudaGetErrorName(lg_e_), cudaGetErrorString(lg_e_));                 \
    } while (0)

#define LG_CUDA_LAUNCHED(name)                                                                    \
    do {                                                                                          \
        cudaError_t lg_e_ = cudaGetLastError();                                                   \
        if (lg_e_ != cudaSuccess)                                                                 \
            return lg_k_fail("%s: launch failed: %s: %s", (name), cudaGetErrorName(lg_e_),        \
                             cudaGetErrorString(lg_e_));                                          \
    } while (0)

#endif
