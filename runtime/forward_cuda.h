/* The CUDA forward pass, one backend of runtime/engine.h (compiled only when the build has CUDA;
 * lg_engine_new(..., "cuda", ...) reaches it). Weights live on the GPU in one dtype, uploaded once
 * from the checkpoint (no float32 copy on the host): lg_engine_opts.dtype, by default the
 * checkpoint's own float type (a float32 checkpoint runs in float32 and matches the CPU engine; a
 * quantized one keeps its codes, with fp16 activations). The residual stream is float32, the other
 * activations and the KV caches in that dtype, every product accumulates in float32.
 *
 * KV caches, one per layer, shaped by its kind (formats/longgen.h):
 *   full:          a slot per position (slot = position), max_seq slots;
 *   sink_window:   `sink` slots kept for good plus a ring of window - 1 + max_step slots;
 *   block_strided: a ring of local * block - 1 + max_step slots for recent positions plus the
 *                  blocks kb with (kb + 1) % stride == 0, kept for good (max_seq / stride of them).
 * A fresh prompt is run layer by layer over all its rows (prefill: cuBLAS products on chunks of
 * max_chunk rows, flash attention over the keys laid out by position), after which the positions a
 * sparse layer keeps are gathered into its cache. Later calls run steps of at most max_step rows
 * through every layer; a one-token step (decode) is a captured CUDA graph: matrix-vector products,
 * attention over the slots, no allocation and one host synchronization per token. */
#ifndef LG_FORWARD_CUDA_H
#define LG_FORWARD_CUDA_H

#include "engine.h"

/* Fills e (ops, impl) with a CUDA engine for m. m may lack float32 weights (lg_engine_load_model
 * loads it so for "cuda"); the weights are read from m->dir. */
int lg_engine_cuda_init(lg_engine *e, const lg_model *m, const lg_engine_opts *opts, lg_err *err);

#endif
