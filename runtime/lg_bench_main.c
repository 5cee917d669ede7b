/* lg-bench: prefill and decode speed, KV cache bytes and device memory of a model at given context
 * lengths, through the engine of any device (scripts/bench-gpu.sh runs it on a 7B-shaped model). */
#include <errno.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "model.h"
#include "progress.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-bench MODEL [--device cpu|cuda] [--ctx N[,N...]] [--decode N] [--dtype f16|bf16|f32]\n"
"                [--chunk N] [--seed S] [--plan FILE] [--tp N [--tp-no-comm]] [--max-seq N]\n"
"For each context N: a fresh engine (max_seq N + decode), a prompt of N random token ids (BOS\n"
"first), timed from the call to its last logits on the host (prefill), then --decode greedy tokens\n"
"(default 32) timed one by one (the median ms/token; 3 untimed tokens first, so that the CUDA\n"
"engine has captured its decode graph). A short prefill before the timed one loads every kernel.\n"
"Prints one JSON object per context: times, KV bytes by layer kind (live and allocated), weights,\n"
"peak device memory; a context that does not fit prints {\"ctx\": N, \"fits\": false, \"error\": ...}.\n"
"--dtype (cuda): the type of weights, activations and KV caches; by default the checkpoint's own\n"
"float type (f32, bf16, else f16; f16 for a quantized checkpoint, which takes no f32).\n"
"--tp N splits the model over N GPUs (tensor parallel); the JSON then has per-GPU weights and peak\n"
"memory. --tp-no-comm leaves the all-reduces out (wrong logits): the time a step takes without\n"
"communication, so that the share spent in all-reduce is 1 - t(no comm) / t.\n"
"--max-seq N makes every engine hold up to N positions (at least each context + decode + 3), as a\n"
"long generation or a server's session does: the caches are allocated for N while the timed\n"
"steps use their start.\n");
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || (*end && *end != ',') || errno || v < lo || v > hi) {
        fprintf(stderr, "lg-bench: %s '%s' must be a whole number in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static int next_token(int vocab)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return 3 + (int)((rng_state * 0x2545F4914F6CDD1DULL >> 33) % (uint64_t)(vocab - 3));
}

static void print_error(long ctx, const char *msg)
{
    printf("{\"ctx\": %ld, \"fits\": false, \"error\": \"", ctx);
    for (const char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if ((unsigned char)*p >= 0x20)
            putchar(*p);
    printf("\"}\n");
    fflush(stdout);
}

/* One context: 0 when measured (or when it did not fit, which is a result), -1 on other errors. */
static int bench_ctx(const lg_model *m, const char *device, const lg_engine_opts *base, long ctx,
                     int n_decode)
{
    lg_err err;
    lg_engine_opts o = *base;
    if (o.max_seq < ctx + n_decode + 3)
        o.max_seq = (int)(ctx + n_decode + 3);
    double t0 = lg_now();
    lg_engine *e = lg_engine_new(m, device, &o, &err);
    double t_engine = lg_now() - t0;
    int *ids = malloc(sizeof(int) * (size_t)(ctx + n_decode + 3));
    float *logits = malloc(sizeof(float) * (size_t)m->vocab_size);
    double *dt = malloc(sizeof(double) * (size_t)(n_decode > 0 ? n_decode : 1));
    int rc = 0;
    if (!e || !ids || !logits || !dt) {
        if (e)
            lg_err_set(&err, "out of memory");
        print_error(ctx, err.msg);
        goto done;
    }
    ids[0] = m->bos_id >= 0 ? m->bos_id : 1;
    for (long i = 1; i < ctx; i++)
        ids[i] = next_token(m->vocab_size);
    /* warm-up: every kernel loaded and cuBLAS's choices made before the timed prefill */
    long warm = ctx < 512 ? ctx : 512;
    if (lg_engine_tokens(e, ids, (int)warm, 0, LG_LOGITS_LAST, logits, &err) != 0)
        goto fail;
    t0 = lg_now();
    if (lg_engine_tokens(e, ids, (int)ctx, 0, LG_LOGITS_LAST, logits, &err) != 0)
        goto fail;
    double t_prefill = lg_now() - t0;
    long pos = ctx;
    for (int i = 0; i < 3 + n_decode; i++) {
        int next = lg_argmax(logits, m->vocab_size);
        double t = lg_now();
        if (lg_engine_tokens(e, &next, 1, pos++, LG_LOGITS_LAST, logits, &err) != 0)
            goto fail;
        if (i >= 3)
            dt[i - 3] = lg_now() - t;
    }
    double mean = 0;
    for (int i = 0; i < n_decode; i++)
        mean += dt[i];
    mean = n_decode ? mean / n_decode : 0;
    qsort(dt, (size_t)n_decode, sizeof *dt, cmp_double);
    double median = n_decode ? dt[n_decode / 2] : 0;
    size_t live[3], alloc[3];
    lg_engine_kv_bytes(e, live, alloc);
    lg_engine_mem mem;
    lg_engine_mem_info(e, &mem);
    printf("{\"ctx\": %ld, \"fits\": true, \"device\": \"%s\", \"engine_s\": %.3f, "
           "\"prefill_s\": %.4f, \"prefill_tok_s\": %.1f, \"decode_ms\": %.4f, "
           "\"decode_ms_mean\": %.4f, \"decode_tokens\": %d, "
           "\"kv_live\": {\"full\": %zu, \"sink_window\": %zu, \"block_strided\": %zu}, "
           "\"kv_alloc\": {\"full\": %zu, \"sink_window\": %zu, \"block_strided\": %zu}, "
           "\"weights_bytes\": %zu, \"weight_dtype\": \"%s\", \"embed_bytes\": %zu, "
           "\"tied\": %s, \"device_peak\": %zu, \"alloc_peak\": %zu, \"device_total\": %zu, "
           "\"tp\": %d, \"tp_no_comm\": %s, \"quant\": \"%s\", \"gpu_peak\": [",
           ctx, mem.device_name, t_engine, t_prefill, ctx / t_prefill, median * 1e3, mean * 1e3,
           n_decode, live[0], live[1], live[2], alloc[0], alloc[1], alloc[2], mem.weight_bytes,
           mem.weight_dtype,
           (size_t)m->vocab_size * m->dim * (strcmp(mem.weight_dtype, "f32") == 0 ? 4 : 2),
           m->tied ? "true" : "false", mem.device_peak, mem.alloc_peak, mem.device_total,
           o.tp > 1 ? o.tp : 1, o.tp_skip_comm ? "true" : "false",
           lg_quant_method_name(m->quant.scheme.method));
    for (int g = 0; g < mem.n_devices; g++)
        printf("%s%zu", g ? ", " : "", mem.dev_peak[g]);
    printf("], \"gpu_weights\": [");
    for (int g = 0; g < mem.n_devices; g++)
        printf("%s%zu", g ? ", " : "", mem.dev_weight_bytes[g]);
    printf("]}\n");
    fflush(stdout);
    goto done;
fail:
    /* running out of device memory mid-call is also "does not fit" */
    print_error(ctx, err.msg);
    rc = strstr(err.msg, "allocate") ? 0 : -1;
done:
    free(ids);
    free(logits);
    free(dt);
    lg_engine_free(e);
    return rc;
}

int main(int argc, char **argv)
{
    enum { O_DEVICE = 256, O_CTX, O_DECODE, O_DTYPE, O_CHUNK, O_SEED, O_PLAN, O_TP, O_NOCOMM,
           O_MAXSEQ };
    static const struct option longs[] = {
        {"device", required_argument, 0, O_DEVICE}, {"ctx", required_argument, 0, O_CTX},
        {"decode", required_argument, 0, O_DECODE}, {"dtype", required_argument, 0, O_DTYPE},
        {"chunk", required_argument, 0, O_CHUNK},   {"seed", required_argument, 0, O_SEED},
        {"plan", required_argument, 0, O_PLAN},     {"help", no_argument, 0, 'h'},
        {"tp", required_argument, 0, O_TP},         {"tp-no-comm", no_argument, 0, O_NOCOMM},
        {"max-seq", required_argument, 0, O_MAXSEQ}, {0, 0, 0, 0}};
    const char *device = "cpu", *ctx_list = "4096", *plan = NULL;
    lg_engine_opts eo = {0};
    long n_decode = 32, v;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (opt) {
        case O_DEVICE: device = optarg; break;
        case O_CTX: ctx_list = optarg; break;
        case O_DECODE:
            if (parse_long("--decode", optarg, 1, 100000, &n_decode))
                return 2;
            break;
        case O_DTYPE: {
            lg_err derr;
            if (lg_engine_parse_dtype(optarg, &eo.dtype, &derr) != 0) {
                fprintf(stderr, "lg-bench: %s\n", derr.msg);
                return 2;
            }
            break;
        }
        case O_CHUNK:
            if (parse_long("--chunk", optarg, 1, 1 << 20, &v))
                return 2;
            eo.max_chunk = (int)v;
            break;
        case O_SEED:
            if (parse_long("--seed", optarg, 0, 1L << 62, &v))
                return 2;
            rng_state ^= (uint64_t)v * 0x9E3779B97F4A7C15ull;
            break;
        case O_PLAN: plan = optarg; break;
        case O_TP: {
            lg_err terr;
            if (lg_engine_parse_tp(optarg, &eo.tp, &terr) != 0) {
                fprintf(stderr, "lg-bench: %s\n", terr.msg);
                return 2;
            }
            break;
        }
        case O_NOCOMM: eo.tp_skip_comm = 1; break;
        case O_MAXSEQ:
            if (parse_long("--max-seq", optarg, 2, 1L << 30, &v))
                return 2;
            eo.max_seq = (int)v;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lg-bench: give one MODEL directory (--help for usage)\n");
        return 2;
    }
    long ctxs[64];
    int n_ctx = 0;
    for (const char *p = ctx_list; *p && n_ctx < 64;) {
        if (parse_long("--ctx", p, 2, 1L << 24, &ctxs[n_ctx++]))
            return 2;
        p = strchr(p, ',');
        p = p ? p + 1 : "";
    }
    lg_err err;
    if (lg_engine_check_device(device, &err) != 0) {
        fprintf(stderr, "lg-bench: %s\n", err.msg);
        return 2;
    }
    lg_model *m = lg_engine_load_model(argv[optind], device, &err);
    if (!m || (plan && lg_model_load_plan(m, plan, &err) != 0)) {
        fprintf(stderr, "lg-bench: %s\n", err.msg);
        lg_model_free(m);
        return 1;
    }
    lg_model_print_plan_note(m, "lg-bench");
    int rc = 0;
    for (int i = 0; i < n_ctx && rc == 0; i++)
        rc = bench_ctx(m, device, &eo, ctxs[i], (int)n_decode);
    lg_model_free(m);
    return rc ? 1 : 0;
}
