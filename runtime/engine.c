#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda.h"
#include "forward_tp.h"

/* The one place that knows whether this build has CUDA: CMake defines LG_HAVE_CUDA for lg_runtime
 * when it compiles runtime/forward_cuda.c and links the kernels. */
#ifdef LG_HAVE_CUDA
#define HAVE_CUDA 1
#else
#define HAVE_CUDA 0
#endif

/* ---------------------------------------------------------------- cpu backend */

static void cpu_destroy(void *impl)
{
    lg_forward_state_free(impl);
}

static void cpu_reset(void *impl)
{
    lg_forward_reset(impl);
}

static long cpu_pos(const void *impl)
{
    return lg_forward_pos(impl);
}

static int cpu_tokens(void *impl, const int *tokens, int n, long pos0, lg_logits_rows rows,
                      float *logits, lg_err *err)
{
    return lg_forward_tokens(impl, tokens, n, pos0, rows, logits, err);
}

static int cpu_nll(void *impl, const int *tokens, int n, long pos0, float *nll, lg_err *err)
{
    return lg_forward_nll(impl, tokens, n, pos0, nll, err);
}

static int cpu_greedy(void *impl, const int *prompt, int n_prompt, int n_new, int *out,
                      lg_err *err)
{
    return lg_forward_greedy(impl, prompt, n_prompt, n_new, out, err);
}

static void cpu_kv_bytes(const void *impl, size_t *live, size_t *alloc)
{
    lg_forward_kv_bytes(impl, live, alloc);
}

/* The CPU state does not expose its model or thread count; the engine fills those in. */
static void cpu_mem(const void *impl, lg_engine_mem *out)
{
    (void)impl;
    memset(out, 0, sizeof *out);
    out->weight_dtype = "f32";
}

static const lg_engine_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .reset = cpu_reset,
    .pos = cpu_pos,
    .tokens = cpu_tokens,
    .nll = cpu_nll,
    .greedy = cpu_greedy,
    .kv_bytes = cpu_kv_bytes,
    .mem = cpu_mem,
};

/* ---------------------------------------------------------------- choosing */

int lg_engine_check_device(const char *device, lg_err *err)
{
    if (!device || strcmp(device, "cpu") == 0)
        return 0;
    if (strcmp(device, "cuda") == 0) {
        if (HAVE_CUDA)
            return 0;
        return lg_err_set(err, "--device cuda: this build has no CUDA support (nvcc was not found "
                               "when it was configured); use --device cpu");
    }
    return lg_err_set(err, "--device %s: unknown device (this build has: cpu%s)", device,
                      HAVE_CUDA ? ", cuda" : "");
}

int lg_engine_parse_tp(const char *arg, int *tp, lg_err *err)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end || v < 1 || v > LG_ENGINE_MAX_DEVICES)
        return lg_err_set(err, "--tp '%s' must be a number of GPUs from 1 to %d", arg,
                          LG_ENGINE_MAX_DEVICES);
    *tp = (int)v;
    return 0;
}

int lg_engine_parse_dtype(const char *arg, const char **dtype, lg_err *err)
{
    static const char *const known[] = {"f16", "bf16", "f32"};
    for (int i = 0; i < 3; i++)
        if (strcmp(arg, known[i]) == 0) {
            *dtype = known[i];
            return 0;
        }
    return lg_err_set(err, "--dtype '%s': expected f16, bf16 or f32", arg);
}

lg_model *lg_engine_load_model(const char *dir, const char *device, lg_err *err)
{
    if (lg_engine_check_device(device, err) != 0)
        return NULL;
    lg_model_load_opts o = {.no_weights = device && strcmp(device, "cuda") == 0};
    return lg_model_load_ex(dir, &o, err);
}

lg_engine *lg_engine_new(const lg_model *m, const char *device, const lg_engine_opts *opts,
                         lg_err *err)
{
    if (lg_engine_check_device(device, err) != 0)
        return NULL;
    lg_engine *e = calloc(1, sizeof *e);
    if (!e) {
        lg_err_set(err, "engine: out of memory");
        return NULL;
    }
    e->m = m;
    lg_engine_opts o = {0};
    if (opts)
        o = *opts;
    if (o.tp > 1 && !(device && strcmp(device, "cuda") == 0)) {
        lg_err_set(err, "--tp %d: tensor parallelism runs on GPUs: add --device cuda", o.tp);
        free(e);
        return NULL;
    }
    if (o.dtype && strcmp(o.dtype, "f32") != 0 && !(device && strcmp(device, "cuda") == 0)) {
        lg_err_set(err, "--dtype %s: the CPU engine computes in float32 only (it is the oracle the "
                        "GPU path is checked against); add --device cuda", o.dtype);
        free(e);
        return NULL;
    }
    if (device && strcmp(device, "cuda") == 0) {
#ifdef LG_HAVE_CUDA
        /* with one GPU the single-GPU engine itself, not a group of one */
        if ((o.tp > 1 ? lg_engine_tp_init(e, m, &o, err) : lg_engine_cuda_init(e, m, &o, err)) == 0)
            return e;
#endif
        free(e);
        return NULL;
    }
    if (!m->has_weights) {
        lg_err_set(err, "%s: the model was loaded without float32 weights (for another device); "
                        "load it with lg_engine_load_model(..., \"cpu\")", m->dir);
        free(e);
        return NULL;
    }
    lg_forward_opts fo = {.max_chunk = o.max_chunk, .max_seq = o.max_seq, .n_threads = o.n_threads};
    e->impl = lg_forward_state_new(m, &fo, err);
    if (!e->impl) {
        free(e);
        return NULL;
    }
    e->ops = &cpu_ops;
    return e;
}

void lg_engine_free(lg_engine *e)
{
    if (!e)
        return;
    if (e->ops)
        e->ops->destroy(e->impl);
    free(e);
}

/* ---------------------------------------------------------------- operations */

const char *lg_engine_device(const lg_engine *e)
{
    return e->ops->name;
}

void lg_engine_reset(lg_engine *e)
{
    e->ops->reset(e->impl);
}

long lg_engine_pos(const lg_engine *e)
{
    return e->ops->pos(e->impl);
}

int lg_engine_tokens(lg_engine *e, const int *tokens, int n, long pos0, lg_logits_rows rows,
                     float *logits, lg_err *err)
{
    return e->ops->tokens(e->impl, tokens, n, pos0, rows, logits, err);
}

int lg_engine_nll(lg_engine *e, const int *tokens, int n, long pos0, float *nll, lg_err *err)
{
    return e->ops->nll(e->impl, tokens, n, pos0, nll, err);
}

int lg_engine_greedy(lg_engine *e, const int *prompt, int n_prompt, int n_new, int *out,
                     lg_err *err)
{
    return e->ops->greedy(e->impl, prompt, n_prompt, n_new, out, err);
}

void lg_engine_kv_bytes(const lg_engine *e, size_t *live, size_t *alloc)
{
    e->ops->kv_bytes(e->impl, live, alloc);
}

void lg_engine_mem_info(const lg_engine *e, lg_engine_mem *out)
{
    e->ops->mem(e->impl, out);
    if (e->ops == &cpu_ops) {
        out->weight_bytes = lg_model_weight_bytes(e->m);
        snprintf(out->device_name, sizeof out->device_name, "cpu");
    }
}
