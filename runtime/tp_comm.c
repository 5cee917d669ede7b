#include "tp_comm.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef LG_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "kernel_types.h"

int lg_k_fail(const char *fmt, ...); /* kernels/cuda_check.h, without its CUDA C++ macros */

int lg_tp_comm_available(void)
{
    return 1;
}

int lg_tp_comms_create(int n, const int *devices, void **comms, lg_err *err)
{
    int have = 0;
    cudaError_t ce = cudaGetDeviceCount(&have);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        return lg_err_set(err, "--tp %d: no usable GPU (%s)", n, cudaGetErrorString(ce));
    }
    if (have < n)
        return lg_err_set(err, "--tp %d needs %d GPUs; this machine has %d", n, n, have);
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    ncclComm_t c[8];
    if (n > 8)
        return lg_err_set(err, "--tp %d: at most 8", n);
    ncclResult_t r = ncclCommInitAll(c, n, devices);
    if (r != ncclSuccess)
        return lg_err_set(err, "--tp %d: NCCL could not connect the GPUs: %s", n,
                          ncclGetErrorString(r));
    for (int i = 0; i < n; i++)
        comms[i] = c[i];
    return 0;
}

void lg_tp_comm_destroy(void *comm)
{
    if (comm)
        ncclCommDestroy((ncclComm_t)comm);
}

void lg_tp_comm_abort(void *comm)
{
    if (comm)
        ncclCommAbort((ncclComm_t)comm);
}

int lg_tp_allreduce_f32(void *comm, const float *send, float *recv, size_t count, void *stream)
{
    ncclResult_t r = ncclAllReduce(send, recv, count, ncclFloat32, ncclSum, (ncclComm_t)comm,
                                   (cudaStream_t)stream);
    if (r != ncclSuccess)
        return lg_k_fail("all-reduce of %zu floats: %s", count, ncclGetErrorString(r));
    return 0;
}

const char *lg_tp_comm_version(void)
{
    static char v[32];
    int code = 0;
    if (ncclGetVersion(&code) != ncclSuccess)
        return "unknown";
    /* NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9 */
    snprintf(v, sizeof v, "%d.%d.%d", code / 10000, code / 100 % 100, code % 100);
    return v;
}

#else /* built without NCCL */

int lg_tp_comm_available(void)
{
    return 0;
}

int lg_tp_comms_create(int n, const int *devices, void **comms, lg_err *err)
{
    (void)devices;
    (void)comms;
    return lg_err_set(err, "--tp %d: this build has no NCCL (configure with NCCL's nccl.h and "
                           "libnccl found; see README)", n);
}

void lg_tp_comm_destroy(void *comm)
{
    (void)comm;
}

void lg_tp_comm_abort(void *comm)
{
    (void)comm;
}

int lg_tp_allreduce_f32(void *comm, const float *send, float *recv, size_t count, void *stream)
{
    (void)comm;
    (void)send;
    (void)recv;
    (void)count;
    (void)stream;
    return -1;
}

const char *lg_tp_comm_version(void)
{
    return "none";
}

#endif
