/* lg-eval: verify a model against a transformers reference, measure perplexity, tokenize. */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "forward_cpu.h"
#include "long_eval_cli.h"
#include "quant_report.h"
#include "model.h"
#include "package.h"
#include "perplexity.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "verify.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-eval verify MODEL --reference FILE [--max-rel-err E] [--json] [--device cpu|cuda]\n"
"                     [--dtype f16|bf16|f32] [--tp N]\n"
"       lg-eval ppl MODEL --text FILE [--text FILE...] [--ctx N] [--json] [--device cpu|cuda]\n"
"                     [--dtype f16|bf16|f32] [--tp N]\n"
"       lg-eval tokenize MODEL --text STRING | --decode IDS\n"
"       lg-eval reference MODEL -o OUT.safetensors (--ids-from REF | --random N) [--greedy N]\n"
"                     [--device cpu|cuda] [--dtype f16|bf16|f32] [--tp N]\n"
"\n"
"verify   runs the reference's input_ids and compares logits (relative error ||out-ref||/||ref||,\n"
"         max abs error, argmax agreement), perplexity from its nll, and the greedy continuation;\n"
"         exit 0 only when rel_err <= E (default by the activations' type: 1e-4 in f32, the cpu\n"
"         path; on cuda 2e-3 in f16, 1.6e-2 in bf16, whose rounding step is 8 times f16's),\n"
"         the argmax agrees on every row but near-ties (rows where the reference's own logits of\n"
"         the two tokens differ by at most 4 E times the row's rms logit: errors within E can\n"
"         flip those) and the greedy ids match up to their first difference, if any, where our\n"
"         own logits must put the two tokens as near (later tokens are not compared)\n"
"ppl      tokenizes each file with BOS, concatenates, and scores windows of ctx+1 tokens every ctx\n"
"         tokens (default ctx: the model's max_position_embeddings, at most 4096)\n"
"tokenize prints the ids (BOS first) of STRING as a JSON array, or decodes a list like '[1,15043]'\n"
"reference writes this run's logits, nll and greedy continuation (default 32 tokens) of the input\n"
"         ids of REF, or of N random ids (BOS first, fixed seed), in verify's reference format: a\n"
"         later `verify --reference OUT` on another device or --tp compares against this run\n"
"MODEL is a checkpoint directory (a LongGen checkpoint, or a plain HF one: every layer full),\n"
"      or a .lgpkg package (unpacked and verified once into $XDG_CACHE_HOME/longgen or ~/.cache/longgen).\n"
"--plan FILE applies a longgen_plan.json to the model instead of its config's plan.\n"
"--device cuda runs the GPU forward pass, when built with CUDA: weights, activations and KV caches\n"
"      in the checkpoint's float type (f16 for a quantized one), or in --dtype's (f16, bf16, f32;\n"
"      a quantized checkpoint takes f16 or bf16). The CPU path computes in float32 only.\n"
"--tp N splits the model over N GPUs (tensor parallel over NCCL; with --device cuda). N must divide\n"
"      the attention heads and the key/value heads.\n");
    fprintf(f, "\nlong-context evaluations (lg-eval needle|passkey --help, lg-eval ppl --by-position --help):\n%s",
            lg_long_eval_usage);
    fprintf(f, "\nquantization (lg-eval quant-report --help):\n%s", lg_quant_report_usage);
}

typedef struct common_opts {
    const char *model, *plan, *device, *dtype;
    int json;
    int tp;
} common_opts;

static lg_model *open_model(const common_opts *c, lg_err *err)
{
    lg_model *m = lg_engine_load_model(c->model, c->device, err);
    if (m && c->plan && lg_model_load_plan(m, c->plan, err) != 0) {
        lg_model_free(m);
        return NULL;
    }
    if (m)
        lg_model_print_plan_note(m, "lg-eval");
    return m;
}

static int cmd_verify(const common_opts *c, const char *ref, double max_rel)
{
    lg_err err;
    lg_model *m = open_model(c, &err);
    lg_engine_opts eo = {.tp = c->tp, .dtype = c->dtype};
    lg_engine *s = m ? lg_engine_new(m, c->device, &eo, &err) : NULL;
    lg_verify_result r;
    if (s && max_rel < 0) { /* the rounding of the engine's activations */
        lg_engine_mem mem;
        lg_engine_mem_info(s, &mem);
        max_rel = lg_verify_default_bound(mem.weight_dtype);
    }
    if (!s || lg_verify_run(s, m->vocab_size, ref, &r, &err) != 0) {
        fprintf(stderr, "lg-eval verify: %s\n", err.msg);
        lg_engine_free(s);
        lg_model_free(m);
        return 1;
    }
    /* an argmax may flip where the reference's top two are closer than the errors allowed */
    double tie_limit = 4 * max_rel;
    int argmax_ok = r.argmax_agree == 1.0 || r.argmax_gap <= tie_limit;
    int greedy_ok = !r.has_greedy || r.greedy_match || r.greedy_gap <= tie_limit;
    int ok = r.rel_err <= max_rel && argmax_ok && greedy_ok;
    if (c->json) {
        printf("{\"rel_err\": %.9g, \"max_abs_err\": %.9g, \"argmax_agree\": %.6f, "
               "\"argmax_gap\": %.6g, \"greedy_match\": %s, \"greedy_gap\": %.6g, \"ppl\": %.6f, "
               "\"ref_ppl\": %.6f, \"rows\": %d, \"pass\": %s}\n",
               r.rel_err, r.max_abs_err, r.argmax_agree, r.argmax_gap,
               r.has_greedy ? (r.greedy_match ? "true" : "false") : "null", r.greedy_gap,
               r.has_nll ? r.ppl : 0.0,
               r.has_nll ? r.ref_ppl : 0.0, r.rows, ok ? "true" : "false");
    } else {
        printf("logits      %d rows: rel_err %.3g (limit %.3g), max_abs_err %.3g, argmax agreement %.2f%%\n",
               r.rows, r.rel_err, max_rel, r.max_abs_err, 100 * r.argmax_agree);
        if (r.argmax_agree < 1.0)
            printf("            rows that differ: the reference's gap is at most %.3g of the row's "
                   "rms logit (%s: near-ties up to %.3g)\n",
                   r.argmax_gap, argmax_ok ? "near-ties" : "NOT near-ties", tie_limit);
        if (r.has_nll)
            printf("perplexity  %.6f (reference %.6f)\n", r.ppl, r.ref_ppl);
        if (r.has_greedy)
            printf("greedy      %d tokens: %s\n", r.greedy_len,
                   r.greedy_match ? "identical" : "DIFFERENT");
        if (r.has_greedy && !r.greedy_match)
            printf("            first difference at generated token %d, where our logits put the two "
                   "tokens %.3g of the row's rms logit apart (%s: near-ties up to %.3g); later "
                   "tokens are not compared\n", r.greedy_first_diff, r.greedy_gap,
                   greedy_ok ? "a near-tie" : "NOT a near-tie", tie_limit);
        printf("%s\n", ok ? "PASS" : "FAIL");
    }
    lg_engine_free(s);
    lg_model_free(m);
    return ok ? 0 : 1;
}

static int read_text(const char *path, char **buf, size_t *n, lg_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap)
            b = realloc(b, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        return lg_err_set(err, "%s: read error", path);
    }
    *buf = b;
    *n = len;
    return 0;
}

/* Each file tokenized with BOS, concatenated in the order given. */
static int tokenize_files(const lg_tokenizer *t, const char **files, int n_files, int **out, long *n_out,
                          lg_err *err)
{
    int *all = NULL;
    long total = 0;
    for (int i = 0; i < n_files; i++) {
        char *text = NULL;
        size_t len = 0;
        int *ids = NULL, n = 0;
        if (read_text(files[i], &text, &len, err) != 0)
            goto fail;
        int rc = lg_tokenizer_encode(t, text, len, 1, &ids, &n, err);
        free(text);
        if (rc != 0)
            goto fail;
        int *grown = realloc(all, sizeof(int) * (size_t)(total + n));
        if (!grown) {
            free(ids);
            lg_err_set(err, "out of memory");
            goto fail;
        }
        all = grown;
        memcpy(all + total, ids, sizeof(int) * (size_t)n);
        total += n;
        free(ids);
    }
    *out = all;
    *n_out = total;
    return 0;
fail:
    free(all);
    return -1;
}

/* N ids: BOS, then xorshift draws over the vocabulary past the special ids (the same every run). */
static int *random_ids(const lg_model *m, int n)
{
    int *ids = malloc(sizeof(int) * (size_t)n);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; ids && i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids[i] = i == 0 && m->bos_id >= 0 ? m->bos_id : 3 + (int)(x % (uint64_t)(m->vocab_size - 3));
    }
    return ids;
}

/* The input_ids of a reference file. */
static int *ids_from(const char *path, int vocab, int *n, lg_err *err)
{
    lg_st_file *f = lg_st_open(path, err);
    if (!f)
        return NULL;
    const lg_st_tensor *t = lg_st_find(f, "input_ids");
    int *ids = NULL;
    if (!t || t->dtype != LG_DT_I32 || t->ndim != 1 || t->shape[0] < 2 || t->shape[0] > (1 << 24))
        lg_err_set(err, "%s: no I32 vector 'input_ids' of at least 2 ids", path);
    else if (!(ids = malloc(sizeof(int) * (size_t)t->shape[0])))
        lg_err_set(err, "out of memory");
    for (int64_t i = 0; ids && i < t->shape[0]; i++) {
        int32_t v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        if (v < 0 || v >= vocab) {
            lg_err_set(err, "%s: input_ids[%lld] = %d is outside the vocabulary (%d)", path,
                       (long long)i, v, vocab);
            free(ids);
            ids = NULL;
            break;
        }
        ids[i] = v;
        *n = (int)t->shape[0];
    }
    lg_st_close(f);
    return ids;
}

static int cmd_reference(const common_opts *c, const char *out, const char *from, long n_random,
                         long n_greedy)
{
    lg_err err;
    lg_model *m = open_model(c, &err);
    int n = (int)n_random, *ids = NULL;
    if (m)
        ids = from ? ids_from(from, m->vocab_size, &n, &err) : random_ids(m, n);
    if (m && !ids && !from)
        lg_err_set(&err, "out of memory");
    lg_engine_opts eo = {.max_seq = n + (int)n_greedy + 1, .tp = c->tp, .dtype = c->dtype};
    lg_engine *s = ids ? lg_engine_new(m, c->device, &eo, &err) : NULL;
    int rc = s ? lg_verify_write_reference(s, m->vocab_size, ids, n, (int)n_greedy, out, &err) : -1;
    if (rc != 0)
        fprintf(stderr, "lg-eval reference: %s\n", err.msg);
    else
        fprintf(stderr, "lg-eval reference: %s: %d input ids, %ld greedy tokens (%s)\n", out, n,
                n_greedy, lg_engine_device(s));
    free(ids);
    lg_engine_free(s);
    lg_model_free(m);
    return rc ? 1 : 0;
}

static int cmd_ppl(const common_opts *c, const char **files, int n_files, long ctx)
{
    lg_err err;
    int *ids = NULL;
    long n = 0;
    lg_model *m = open_model(c, &err);
    lg_tokenizer *t = m ? lg_tokenizer_load(c->model, &err) : NULL;
    if (!t || tokenize_files(t, files, n_files, &ids, &n, &err) != 0) {
        fprintf(stderr, "lg-eval ppl: %s\n", err.msg);
        lg_tokenizer_free(t);
        lg_model_free(m);
        return 1;
    }
    if (ctx == 0)
        ctx = m->max_pos < 4096 ? m->max_pos : 4096;
    lg_engine_opts eo = {.max_seq = (int)ctx + 1, .tp = c->tp, .dtype = c->dtype};
    lg_engine *s = lg_engine_new(m, c->device, &eo, &err);
    lg_ppl_result r;
    int rc = s ? lg_ppl_run(s, ids, n, (int)ctx, 1, &r, &err) : -1;
    if (rc != 0) {
        fprintf(stderr, "lg-eval ppl: %s\n", err.msg);
    } else if (c->json) {
        printf("{\"ppl\": %.6f, \"tokens\": %ld, \"predicted\": %ld, \"windows\": %ld, \"ctx\": %ld, "
               "\"tokens_per_s\": %.1f}\n", r.ppl, n, r.predicted, r.windows, ctx, r.tokens_per_s);
    } else {
        printf("tokens      %ld (%d file%s, BOS each)\n", n, n_files, n_files == 1 ? "" : "s");
        printf("windows     %ld of ctx %ld (+1), %ld tokens predicted\n", r.windows, ctx, r.predicted);
        printf("ppl         %.4f\n", r.ppl);
        printf("speed       %.1f tokens/s (%.1f s)\n", r.tokens_per_s, r.seconds);
    }
    lg_engine_free(s);
    free(ids);
    lg_tokenizer_free(t);
    lg_model_free(m);
    return rc ? 1 : 0;
}

static int parse_id_list(const char *s, int **out, int *n, lg_err *err)
{
    int cap = 16, k = 0;
    int *ids = malloc(sizeof(int) * (size_t)cap);
    const char *p = s;
    while (ids && *p) {
        if (*p == '[' || *p == ']' || *p == ',' || *p == ' ') {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > (1L << 30)) {
            free(ids);
            return lg_err_set(err, "--decode: '%s' is not a list of token ids", s);
        }
        if (k == cap)
            ids = realloc(ids, sizeof(int) * (size_t)(cap *= 2));
        if (ids)
            ids[k++] = (int)v;
        p = end;
    }
    if (!ids)
        return lg_err_set(err, "out of memory");
    *out = ids;
    *n = k;
    return 0;
}

static int cmd_tokenize(const common_opts *c, const char *text, const char *decode)
{
    lg_err err;
    lg_tokenizer *t = lg_tokenizer_load(c->model, &err);
    int *ids = NULL, n = 0, rc = 0;
    if (!t) {
        rc = -1;
    } else if (decode) {
        char *s = NULL;
        rc = parse_id_list(decode, &ids, &n, &err);
        if (rc == 0 && !(s = lg_tokenizer_decode(t, ids, n, &err)))
            rc = -1;
        if (s)
            printf("%s\n", s);
        free(s);
    } else {
        rc = lg_tokenizer_encode(t, text, strlen(text), 1, &ids, &n, &err);
        for (int i = 0; rc == 0 && i < n; i++)
            printf("%s%d", i ? ", " : "[", ids[i]);
        if (rc == 0)
            printf("]\n");
    }
    if (rc != 0)
        fprintf(stderr, "lg-eval tokenize: %s\n", err.msg);
    free(ids);
    lg_tokenizer_free(t);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (lg_long_eval_handles(argc, argv)) /* needle, passkey, ppl --by-position: long_eval_cli.c */
        return lg_long_eval_main(argc, argv);
    if (strcmp(cmd, "quant-report") == 0) /* two models: quant_report.c */
        return lg_quant_report_main(argc - 1, argv + 1);
    enum { O_REF = 256, O_MAXREL, O_JSON, O_DEVICE, O_TEXT, O_CTX, O_DECODE, O_PLAN, O_TP,
           O_IDS_FROM, O_RANDOM, O_GREEDY, O_DTYPE };
    static const struct option longs[] = {
        {"reference", required_argument, 0, O_REF}, {"max-rel-err", required_argument, 0, O_MAXREL},
        {"json", no_argument, 0, O_JSON}, {"device", required_argument, 0, O_DEVICE},
        {"text", required_argument, 0, O_TEXT}, {"ctx", required_argument, 0, O_CTX},
        {"decode", required_argument, 0, O_DECODE}, {"plan", required_argument, 0, O_PLAN},
        {"tp", required_argument, 0, O_TP}, {"ids-from", required_argument, 0, O_IDS_FROM},
        {"random", required_argument, 0, O_RANDOM}, {"greedy", required_argument, 0, O_GREEDY},
        {"dtype", required_argument, 0, O_DTYPE},
        {"output", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL, *ids_from_path = NULL;
    long n_random = 0, n_greedy = 32;
    common_opts c = {0};
    lg_err aerr;
    const char *ref = NULL, *decode = NULL;
    const char **texts = calloc((size_t)argc, sizeof *texts);
    int n_texts = 0, opt;
    double max_rel = -1; /* the device's default */
    long ctx = 0;
    char *end;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "ho:", longs, NULL)) != -1) {
        switch (opt) {
        case O_REF: ref = optarg; break;
        case O_MAXREL:
            max_rel = strtod(optarg, &end);
            if (end == optarg || *end || !(max_rel >= 0)) {
                fprintf(stderr, "lg-eval: --max-rel-err '%s' is not a number >= 0\n", optarg);
                return 2;
            }
            break;
        case O_JSON: c.json = 1; break;
        case O_DEVICE: c.device = optarg; break;
        case O_TEXT: texts[n_texts++] = optarg; break;
        case O_CTX:
            ctx = strtol(optarg, &end, 10);
            if (end == optarg || *end || ctx < 1 || ctx > (1L << 24)) {
                fprintf(stderr, "lg-eval: --ctx '%s' must be a positive whole number\n", optarg);
                return 2;
            }
            break;
        case O_DECODE: decode = optarg; break;
        case O_PLAN: c.plan = optarg; break;
        case 'o': out = optarg; break;
        case O_IDS_FROM: ids_from_path = optarg; break;
        case O_RANDOM:
        case O_GREEDY: {
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < (opt == O_RANDOM ? 2 : 0) || v > (1L << 20)) {
                fprintf(stderr, "lg-eval: --%s '%s' must be a whole number from %d to %ld\n",
                        opt == O_RANDOM ? "random" : "greedy", optarg, opt == O_RANDOM ? 2 : 0,
                        1L << 20);
                free(texts);
                return 2;
            }
            *(opt == O_RANDOM ? &n_random : &n_greedy) = v;
            break;
        }
        case O_DTYPE:
            if (lg_engine_parse_dtype(optarg, &c.dtype, &aerr) != 0) {
                fprintf(stderr, "lg-eval: %s\n", aerr.msg);
                free(texts);
                return 2;
            }
            break;
        case O_TP:
            if (lg_engine_parse_tp(optarg, &c.tp, &aerr) != 0) {
                fprintf(stderr, "lg-eval: %s\n", aerr.msg);
                free(texts);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lg-eval %s: give one MODEL directory (--help for usage)\n", cmd);
        return 2;
    }
    c.model = argv[optind];
    char pkg_dir[4096];
    if (lg_package_is_path(c.model)) {
        lg_err perr;
        if (lg_package_open_cached(c.model, pkg_dir, sizeof pkg_dir, &perr) != 0) {
            fprintf(stderr, "lg-eval: %s\n", perr.msg);
            free(texts);
            return 1;
        }
        c.model = pkg_dir;
    }
    int rc;
    if (strcmp(cmd, "verify") == 0 && ref)
        rc = cmd_verify(&c, ref, max_rel);
    else if (strcmp(cmd, "ppl") == 0 && n_texts > 0)
        rc = cmd_ppl(&c, texts, n_texts, ctx);
    else if (strcmp(cmd, "reference") == 0 && out && (ids_from_path != NULL) != (n_random > 0))
        rc = cmd_reference(&c, out, ids_from_path, n_random, n_greedy);
    else if (strcmp(cmd, "tokenize") == 0 && (n_texts == 1 || decode))
        rc = cmd_tokenize(&c, n_texts ? texts[0] : NULL, decode);
    else {
        fprintf(stderr, "lg-eval: '%s' needs %s (--help for usage)\n", cmd,
                strcmp(cmd, "verify") == 0 ? "--reference FILE"
                : strcmp(cmd, "ppl") == 0 ? "--text FILE"
                : strcmp(cmd, "tokenize") == 0 ? "--text STRING or --decode IDS"
                : strcmp(cmd, "reference") == 0 ? "-o OUT and one of --ids-from REF, --random N"
                : "a known command: verify, ppl, tokenize, reference");
        rc = 2;
    }
    free(texts);
    return rc;
}
