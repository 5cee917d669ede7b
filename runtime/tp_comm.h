/* The one place that talks to NCCL: communicators for the GPUs of one process and the sum
 * all-reduce that tensor parallelism needs (runtime/forward_tp.c). Builds without NCCL too: then
 * lg_tp_comm_available() is 0 and creating communicators fails with a message saying so. */
#ifndef LG_TP_COMM_H
#define LG_TP_COMM_H

#include <stddef.h>

#include "error.h"

/* 1 when this build links NCCL. */
int lg_tp_comm_available(void);

/* One communicator per device of devices[0..n) (ncclCommInitAll), rank i on devices[i], into
 * comms[i]. NVLink multicast (NVLS) is switched off first: NCCL_NVLS_ENABLE=0 (the device machines
 * require it; a program using multicast can take the host's GPUs out of service). 0 or -1. */
int lg_tp_comms_create(int n, const int *devices, void **comms, lg_err *err);
void lg_tp_comm_destroy(void *comm);
/* Ends the communicator at once, also while another thread's GPU work waits in one of its
 * collectives (those operations end unfinished); comm is gone afterwards. NULL: nothing. */
void lg_tp_comm_abort(void *comm);

/* recv = the sum over ranks of send (float32, count elements), queued on `stream` (a
 * cudaStream_t); send may equal recv. Every rank must call it, in the same order. 0, or -1 with
 * lg_k_last_error(). */
int lg_tp_allreduce_f32(void *comm, const float *send, float *recv, size_t count, void *stream);

/* NCCL's version as "2.27.3", or "none". */
const char *lg_tp_comm_version(void);

#endif
