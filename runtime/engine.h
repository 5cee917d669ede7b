/* The forward pass behind one interface, with the backend chosen once at run time (as calm does):
 * "cpu" is the float32 oracle (runtime/forward_cpu.h), "cuda" the GPU path in fp16, bf16 or
 * float32 (runtime/forward_cuda.h, present when the build found nvcc). Tools and evaluations call
 * lg_engine_* and never ask which backend they hold.
 *
 * The operations mean what the CPU forward's do (forward_cpu.h): a sequence at a time, prompt in
 * one call, then one token per call; logits in float32 on the host. */
#ifndef LG_ENGINE_H
#define LG_ENGINE_H

#include <stddef.h>

#include "error.h"
#include "forward_cpu.h"
#include "model.h"

typedef struct lg_engine_opts {
    int max_chunk;      /* rows per internal step (cpu: 256; cuda: prefill rows per product, 4096) */
    int max_seq;        /* positions reserved for full layers; 0 = the model's max_pos */
    int n_threads;      /* cpu: 0 = every online CPU */
    const char *dtype;  /* cuda: weights and activations "f32", "f16" or "bf16"; NULL: the
                         * checkpoint's float type (f16 for a quantized checkpoint) */
    int tp;             /* cuda: GPUs the model is split over (tensor parallel; 0 or 1: one GPU) */
    int tp_skip_comm;   /* cuda, tp > 1, benchmarks only: the all-reduces left out (wrong results:
                         * what the run costs without communication) */
} lg_engine_opts;

#define LG_ENGINE_MAX_DEVICES 8

/* What an engine holds, for reports. */
typedef struct lg_engine_mem {
    const char *weight_dtype; /* "f32", "f16", "bf16" */
    size_t weight_bytes;      /* weights held by the backend */
    size_t device_peak;       /* cuda: most device memory in use since the engine was made (0 on cpu) */
    size_t device_total;      /* cuda: the device's memory (0 on cpu) */
    size_t alloc_peak;        /* cuda: most device memory the engine itself held (0 on cpu) */
    char device_name[128];    /* "cpu (N threads)" or the GPU's name */
    /* cuda: per GPU (tensor parallel: one per rank; else one); the totals above are summed over
     * them, device_peak and device_total being those of the first GPU */
    int n_devices;
    size_t dev_peak[LG_ENGINE_MAX_DEVICES];
    size_t dev_weight_bytes[LG_ENGINE_MAX_DEVICES];
} lg_engine_mem;

/* The operations a backend implements; impl is its state. */
typedef struct lg_engine_ops {
    const char *name;
    void (*destroy)(void *impl);
    void (*reset)(void *impl);
    long (*pos)(const void *impl);
    int (*tokens)(void *impl, const int *tokens, int n, long pos0, lg_logits_rows rows,
                  float *logits, lg_err *err);
    int (*nll)(void *impl, const int *tokens, int n, long pos0, float *nll, lg_err *err);
    int (*greedy)(void *impl, const int *prompt, int n_prompt, int n_new, int *out, lg_err *err);
    void (*kv_bytes)(const void *impl, size_t *live, size_t *alloc);
    void (*mem)(const void *impl, lg_engine_mem *out);
} lg_engine_ops;

typedef struct lg_engine {
    const lg_engine_ops *ops;
    void *impl;
    const lg_model *m;
} lg_engine;

/* Parses a --tp value (GPUs, 1 .. LG_ENGINE_MAX_DEVICES) into *tp; -1 with a message. */
int lg_engine_parse_tp(const char *arg, int *tp, lg_err *err);

/* Checks a --dtype value ("f16", "bf16" or "f32": lg_engine_opts.dtype) and sets *dtype to it; -1
 * with a message. */
int lg_engine_parse_dtype(const char *arg, const char **dtype, lg_err *err);

/* 0 when `device` names a backend of this build ("cpu" always, "cuda" when built with CUDA); else -1
 * with a message saying which devices the build has. */
int lg_engine_check_device(const char *device, lg_err *err);

/* Loads a model directory the way `device` needs it: float32 weights for "cpu", configuration only
 * for "cuda" (which uploads its weights from the checkpoint itself). NULL on error, also for an
 * unknown or unavailable device, with a message saying which devices this build has. */
lg_model *lg_engine_load_model(const char *dir, const char *device, lg_err *err);

/* Makes an engine for m on `device` ("cpu" or "cuda") with the attention plan m has now. opts may be
 * NULL for defaults. The model must outlive the engine. NULL on error. */
lg_engine *lg_engine_new(const lg_model *m, const char *device, const lg_engine_opts *opts,
                         lg_err *err);
void lg_engine_free(lg_engine *e);

const char *lg_engine_device(const lg_engine *e);
void lg_engine_reset(lg_engine *e);
long lg_engine_pos(const lg_engine *e);
int lg_engine_tokens(lg_engine *e, const int *tokens, int n, long pos0, lg_logits_rows rows,
                     float *logits, lg_err *err);
int lg_engine_nll(lg_engine *e, const int *tokens, int n, long pos0, float *nll, lg_err *err);
int lg_engine_greedy(lg_engine *e, const int *prompt, int n_prompt, int n_new, int *out,
                     lg_err *err);
/* KV bytes summed by layer kind (indexed by lg_attn_kind, 3 entries): live and allocated. */
void lg_engine_kv_bytes(const lg_engine *e, size_t *live, size_t *alloc);
void lg_engine_mem_info(const lg_engine *e, lg_engine_mem *out);

#endif
