/* The tensor-parallel CUDA engine: one model split over `tp` GPUs of this host (tp_shard.h says
 * which part each holds), one thread per GPU, NCCL for the all-reduces (tp_comm.h). Compiled with
 * CUDA; lg_engine_new(..., "cuda", {.tp = N > 1}) reaches it.
 *
 * Why one process driving N GPUs rather than one process per GPU: the engine keeps the interface of
 * engine.h, so every tool (lg-eval, lg-run, lg-bench) gets --tp without a launcher such as mpirun,
 * and the logits of the ranks meet in host memory of one process. Each GPU still has its own thread,
 * stream, cuBLAS handle, communicator and decode graph, as in a process per GPU: the ranks enqueue
 * their work concurrently, never one after the other. */
#ifndef LG_FORWARD_TP_H
#define LG_FORWARD_TP_H

#include "engine.h"

/* Fills e with an engine of opts->tp ranks on GPUs 0 .. tp-1. -1 with a message when tp does not
 * divide the model's heads, fewer GPUs are present, or this build has no NCCL. */
int lg_engine_tp_init(lg_engine *e, const lg_model *m, const lg_engine_opts *opts, lg_err *err);

#endif
