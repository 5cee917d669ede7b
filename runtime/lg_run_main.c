/* lg-run: generate text from a model, streaming it as it comes. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "model.h"
#include "package.h"
#include "progress.h"
#include "sampler.h"
#include "tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-run MODEL -p PROMPT [-n N] [--temp T] [--top-p P] [--seed S] [--device cpu|cuda]\n"
"  -p, --prompt TEXT   prompt (BOS is added)\n"
"  -n, --tokens N      tokens to generate (default 128; stops early at EOS)\n"
"  --temp T            temperature (default 0: greedy)\n"
"  --top-p P           nucleus sampling threshold (default 0.9, with --temp > 0)\n"
"  --seed S            random seed for sampling (default 42)\n"
"  --plan FILE         apply a longgen_plan.json instead of the config's plan\n"
"  --device D          cpu (float32, default) or cuda (on the GPU, when built with CUDA)\n"
"  --dtype T           with --device cuda: weights, activations and KV caches in f16, bf16 or\n"
"                      f32 (default: the checkpoint's float type; f16 for a quantized one)\n"
"  --tp N              with --device cuda: split the model over N GPUs (tensor parallel, NCCL)\n"
"MODEL is a checkpoint directory, or a .lgpkg package (unpacked and verified once into\n"
"$XDG_CACHE_HOME/longgen or ~/.cache/longgen).\n"
"Prints the prompt and the generation as they come, then prompt and generation tokens/s on stderr.\n");
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "lg-run: %s '%s' must be a number in [%g, %g]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Prints what decode(ids[0..n)) adds beyond the `shown` bytes already printed. */
static int stream_text(const lg_tokenizer *t, const int *ids, int n, size_t *shown, lg_err *err)
{
    char *text = lg_tokenizer_decode(t, ids, n, err);
    if (!text)
        return -1;
    size_t len = strlen(text);
    if (len > *shown) {
        fputs(text + *shown, stdout);
        fflush(stdout);
        *shown = len;
    }
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_TEMP = 256, O_TOPP, O_SEED, O_DEVICE, O_PLAN, O_TP, O_DTYPE };
    static const struct option longs[] = {
        {"prompt", required_argument, 0, 'p'}, {"tokens", required_argument, 0, 'n'},
        {"temp", required_argument, 0, O_TEMP}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"device", required_argument, 0, O_DEVICE},
        {"plan", required_argument, 0, O_PLAN}, {"tp", required_argument, 0, O_TP},
        {"dtype", required_argument, 0, O_DTYPE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *prompt = NULL, *device = "cpu", *plan = NULL, *dtype = NULL;
    int tp = 1;
    lg_err err;
    double n_new = 128, temp = 0, top_p = 0.9, seed = 42;
    int opt;
    while ((opt = getopt_long(argc, argv, "p:n:h", longs, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'p': prompt = optarg; break;
        case 'n': bad = parse_num("-n", optarg, 1, 1 << 24, &n_new); break;
        case O_TEMP: bad = parse_num("--temp", optarg, 0, 100, &temp); break;
        case O_TOPP: bad = parse_num("--top-p", optarg, 0, 1, &top_p); break;
        case O_SEED: bad = parse_num("--seed", optarg, 0, 1e15, &seed); break;
        case O_DEVICE: device = optarg; break;
        case O_PLAN: plan = optarg; break;
        case O_TP:
            if ((bad = lg_engine_parse_tp(optarg, &tp, &err)) != 0)
                fprintf(stderr, "lg-run: %s\n", err.msg);
            break;
        case O_DTYPE:
            if ((bad = lg_engine_parse_dtype(optarg, &dtype, &err)) != 0)
                fprintf(stderr, "lg-run: %s\n", err.msg);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad)
            return 2;
    }
    if (optind != argc - 1 || !prompt) {
        fprintf(stderr, "lg-run: give one MODEL directory and -p PROMPT (--help for usage)\n");
        return 2;
    }
    if (lg_engine_check_device(device, &err) != 0) {
        fprintf(stderr, "lg-run: %s\n", err.msg);
        return 2;
    }
    const char *dir = argv[optind];
    char pkg_dir[4096];
    if (lg_package_is_path(dir)) {
        if (lg_package_open_cached(dir, pkg_dir, sizeof pkg_dir, &err) != 0) {
            fprintf(stderr, "lg-run: %s\n", err.msg);
            return 1;
        }
        dir = pkg_dir;
    }
    lg_model *m = lg_engine_load_model(dir, device, &err);
    lg_tokenizer *t = m ? lg_tokenizer_load(dir, &err) : NULL;
    int *ids = NULL, n_prompt = 0, rc = 0;
    lg_engine *s = NULL;
    float *logits = NULL;
    lg_sampler sampler = {0};
    if (!t || (plan && lg_model_load_plan(m, plan, &err) != 0) ||
        lg_tokenizer_encode(t, prompt, strlen(prompt), 1, &ids, &n_prompt, &err) != 0) {
        rc = -1;
        goto done;
    }
    lg_model_print_plan_note(m, "lg-run");
    int total = n_prompt + (int)n_new;
    lg_engine_opts eo = {.max_seq = total, .tp = tp, .dtype = dtype};
    s = lg_engine_new(m, device, &eo, &err);
    ids = realloc(ids, sizeof(int) * (size_t)total);
    logits = malloc(sizeof(float) * (size_t)m->vocab_size);
    if (!s || !ids || !logits || lg_sampler_init(&sampler, m->vocab_size, (float)temp, (float)top_p,
                                                  (uint64_t)seed) != 0) {
        if (s)
            lg_err_set(&err, "out of memory");
        rc = -1;
        goto done;
    }
    size_t shown = 0;
    double t0 = lg_now();
    rc = lg_engine_tokens(s, ids, n_prompt, 0, LG_LOGITS_LAST, logits, &err);
    double t_prompt = lg_now() - t0;
    if (rc == 0)
        rc = stream_text(t, ids, n_prompt, &shown, &err);
    int n = n_prompt;
    double t1 = lg_now();
    while (rc == 0 && n < total) {
        int next = lg_sampler_sample(&sampler, logits);
        ids[n++] = next;
        if (next == m->eos_id)
            break;
        rc = stream_text(t, ids, n, &shown, &err);
        if (rc == 0 && n < total)
            rc = lg_engine_tokens(s, &next, 1, n - 1, LG_LOGITS_LAST, logits, &err);
    }
    double t_gen = lg_now() - t1;
    if (rc == 0) {
        printf("\n");
        fflush(stdout);
        lg_engine_mem mem;
        lg_engine_mem_info(s, &mem);
        fprintf(stderr, "weights: %.1f MB %s on %s\n", mem.weight_bytes / 1e6, mem.weight_dtype,
                mem.device_name);
        fprintf(stderr, "prompt: %d tokens, %.1f tokens/s; generation: %d tokens, %.1f tokens/s\n",
                n_prompt, t_prompt > 0 ? n_prompt / t_prompt : 0.0, n - n_prompt,
                t_gen > 0 ? (n - n_prompt) / t_gen : 0.0);
        size_t live[3], alloc[3];
        lg_engine_kv_bytes(s, live, alloc);
        fprintf(stderr, "kv cache: full %.3f MB, sink_window %.3f MB, block_strided %.3f MB held "
                "(%.3f MB allocated)", live[0] / 1e6, live[1] / 1e6, live[2] / 1e6,
                (alloc[0] + alloc[1] + alloc[2]) / 1e6);
        for (int g = 0; g < mem.n_devices; g++)
            fprintf(stderr, "%s%.2f GiB", g == 0 ? "; device memory peak " : ", ",
                    mem.dev_peak[g] / 1073741824.0);
        if (mem.device_total)
            fprintf(stderr, " (of %.2f GiB%s)", mem.device_total / 1073741824.0,
                    mem.n_devices > 1 ? " each" : "");
        fprintf(stderr, "\n");
    }
done:
    if (rc != 0)
        fprintf(stderr, "lg-run: %s\n", err.msg);
    lg_sampler_free(&sampler);
    free(logits);
    free(ids);
    lg_engine_free(s);
    lg_tokenizer_free(t);
    lg_model_free(m);
    return rc ? 1 : 0;
}
