#include "quant_report.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"
#include "tokenizer.h"

/* Rows of logits per forward call: bounds memory to 2 x rows x vocab floats. */
#define QR_CHUNK 64

/* ---------------------------------------------------------------- measurement */

/* log(sum(exp(x))) in double, shifted by the max. */
static double log_sum_exp(const float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    return log(s) + mx;
}

double lg_kl_logits(const float *p_logits, const float *q_logits, int n, int target, double *nll_p,
                    double *nll_q)
{
    double lp = log_sum_exp(p_logits, n), lq = log_sum_exp(q_logits, n), kl = 0;
    for (int i = 0; i < n; i++) {
        double a = (double)p_logits[i] - lp, b = (double)q_logits[i] - lq;
        kl += exp(a) * (a - b);
    }
    if (nll_p)
        *nll_p = lp - p_logits[target];
    if (nll_q)
        *nll_q = lq - q_logits[target];
    return kl > 0 ? kl : 0; /* a rounding below zero when P == Q */
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int lg_quant_report_run(lg_engine *a, lg_engine *b, int vocab, const int *tokens, long n, int ctx,
                        int show_progress, lg_quant_report *r, lg_err *err)
{
    memset(r, 0, sizeof *r);
    if (ctx < 1)
        return lg_err_set(err, "ctx must be >= 1");
    if (n < 2)
        return lg_err_set(err, "need at least 2 tokens, got %ld", n);
    float *la = malloc(sizeof(float) * QR_CHUNK * (size_t)vocab);
    float *lb = malloc(sizeof(float) * QR_CHUNK * (size_t)vocab);
    double *kls = malloc(sizeof(double) * (size_t)(n - 1));
    if (!la || !lb || !kls) {
        free(la);
        free(lb);
        free(kls);
        return lg_err_set(err, "out of memory for %d rows of %d logits", QR_CHUNK, vocab);
    }
    long n_windows = (n - 1 + ctx - 1) / ctx, agree = 0;
    double nll_a = 0, nll_b = 0, kl_sum = 0;
    lg_progress pg;
    lg_progress_start(&pg, "quant-report", (uint64_t)n_windows, "windows");
    pg.enabled &= show_progress;
    double t0 = lg_now();
    int rc = 0;
    for (long start = 0; start + 1 < n && rc == 0; start += ctx) {
        int len = n - start < (long)ctx + 1 ? (int)(n - start) : ctx + 1;
        const int *w = tokens + start;
        /* feed w[0 .. len-1) and predict w[1 .. len) */
        for (int off = 0; off < len - 1 && rc == 0; off += QR_CHUNK) {
            int cn = len - 1 - off < QR_CHUNK ? len - 1 - off : QR_CHUNK;
            rc = lg_engine_tokens(a, w + off, cn, off, LG_LOGITS_ALL, la, err);
            if (rc == 0)
                rc = lg_engine_tokens(b, w + off, cn, off, LG_LOGITS_ALL, lb, err);
            for (int i = 0; rc == 0 && i < cn; i++) {
                const float *ra = la + (size_t)i * vocab, *rb = lb + (size_t)i * vocab;
                double na, nb, kl = lg_kl_logits(ra, rb, vocab, w[off + i + 1], &na, &nb);
                nll_a += na;
                nll_b += nb;
                kl_sum += kl;
                kls[r->predicted++] = kl;
                agree += lg_argmax(ra, vocab) == lg_argmax(rb, vocab);
            }
        }
        r->windows++;
        lg_progress_update(&pg, (uint64_t)r->windows);
    }
    lg_progress_end(&pg);
    if (rc == 0) {
        r->ppl_a = exp(nll_a / (double)r->predicted);
        r->ppl_b = exp(nll_b / (double)r->predicted);
        r->kl_mean = kl_sum / (double)r->predicted;
        r->top1_agree = (double)agree / (double)r->predicted;
        qsort(kls, (size_t)r->predicted, sizeof *kls, cmp_double);
        r->kl_p99 = kls[(size_t)((double)(r->predicted - 1) * 0.99)];
        r->kl_max = kls[r->predicted - 1];
    }
    r->seconds = lg_now() - t0;
    free(la);
    free(lb);
    free(kls);
    return rc;
}

/* ---------------------------------------------------------------- the subcommand */

const char lg_quant_report_usage[] =
"       lg-eval quant-report MODEL_A MODEL_B --text FILE [--text FILE...] [--ctx N] [--json]\n"
"                [--device cpu|cuda] [--dtype f16|bf16|f32]   ppl of both, KL(A||B) of next-token\n"
"                distributions, top-1 agreement (A is the reference, B e.g. its quantized\n"
"                conversion; with --dtype both run in that type on the GPU)\n";

static int read_text(const char *path, char **buf, size_t *n, lg_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0, got;
    char *b = malloc(cap);
    while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *grown = realloc(b, cap *= 2);
            if (!grown)
                free(b);
            b = grown;
        }
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

/* Each file tokenized with BOS and concatenated, as `lg-eval ppl` does. */
static long tokenize_files(const lg_tokenizer *t, char **files, int n_files, int **out, lg_err *err)
{
    int *all = NULL;
    long total = 0;
    for (int i = 0; i < n_files; i++) {
        char *text = NULL;
        size_t len = 0;
        int *ids = NULL, n = 0;
        if (read_text(files[i], &text, &len, err) != 0)
            break;
        int rc = lg_tokenizer_encode(t, text, len, 1, &ids, &n, err);
        free(text);
        if (rc != 0)
            break;
        int *grown = realloc(all, sizeof(int) * (size_t)(total + n));
        if (!grown) {
            free(ids);
            lg_err_set(err, "out of memory");
            break;
        }
        all = grown;
        memcpy(all + total, ids, sizeof(int) * (size_t)n);
        total += n;
        free(ids);
        if (i == n_files - 1) {
            *out = all;
            return total;
        }
    }
    free(all);
    return -1;
}

/* "q4 g64 min", "q8 per-channel", "float (f16)" */
static void describe_weights(const lg_model *m, char *buf, size_t n)
{
    const lg_quant_config *q = &m->quant;
    if (q->scheme.method == LG_QUANT_NONE) {
        snprintf(buf, n, "float");
        return;
    }
    char group[32];
    if (q->scheme.group)
        snprintf(group, sizeof group, "group %d", q->scheme.group);
    else
        snprintf(group, sizeof group, "per channel");
    snprintf(buf, n, "%s %s%s%s%s", lg_quant_method_name(q->scheme.method), group,
             q->scheme.has_mins ? " + min" : "", q->embeddings ? " +embed" : "",
             q->lm_head ? " +head" : "");
}

int lg_quant_report_main(int argc, char **argv)
{
    enum { O_TEXT = 256, O_CTX, O_JSON, O_DEVICE, O_DTYPE };
    static const struct option longs[] = {
        {"text", required_argument, 0, O_TEXT}, {"ctx", required_argument, 0, O_CTX},
        {"json", no_argument, 0, O_JSON}, {"device", required_argument, 0, O_DEVICE},
        {"dtype", required_argument, 0, O_DTYPE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    char **texts = calloc((size_t)argc + 1, sizeof *texts);
    int n_texts = 0, json = 0, c;
    long ctx = 0;
    const char *device = "cpu", *dtype = NULL;
    lg_err aerr;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case O_TEXT: texts[n_texts++] = optarg; break;
        case O_CTX:
            errno = 0;
            ctx = strtol(optarg, &end, 10);
            if (end == optarg || *end || errno || ctx < 1 || ctx > (1L << 24)) {
                fprintf(stderr, "lg-eval quant-report: --ctx '%s' must be a positive whole number\n",
                        optarg);
                free(texts);
                return 2;
            }
            break;
        case O_JSON: json = 1; break;
        case O_DEVICE: device = optarg; break;
        case O_DTYPE:
            if (lg_engine_parse_dtype(optarg, &dtype, &aerr) != 0) {
                fprintf(stderr, "lg-eval quant-report: %s\n", aerr.msg);
                free(texts);
                return 2;
            }
            break;
        case 'h': printf("usage:%s", lg_quant_report_usage + 6); free(texts); return 0;
        default: free(texts); return 2;
        }
    }
    if (optind != argc - 2 || n_texts == 0) {
        fprintf(stderr, "lg-eval quant-report: give MODEL_A MODEL_B and --text FILE (--help)\n");
        free(texts);
        return 2;
    }
    const char *dir_a = argv[optind], *dir_b = argv[optind + 1];
    lg_err err;
    lg_model *a = NULL, *b = NULL;
    lg_engine *ea = NULL, *eb = NULL;
    lg_tokenizer *t = NULL;
    int *ids = NULL, rc = 1;
    long n = -1;
    lg_quant_report r;
    if (!(a = lg_engine_load_model(dir_a, device, &err)) ||
        !(b = lg_engine_load_model(dir_b, device, &err)) ||
        !(t = lg_tokenizer_load(dir_a, &err)) ||
        (n = tokenize_files(t, texts, n_texts, &ids, &err)) < 0)
        goto done;
    if (a->vocab_size != b->vocab_size) {
        lg_err_set(&err, "%s has a vocabulary of %d, %s of %d", dir_a, a->vocab_size, dir_b,
                   b->vocab_size);
        goto done;
    }
    if (ctx == 0)
        ctx = a->max_pos < 4096 ? a->max_pos : 4096;
    lg_engine_opts eo = {.max_seq = (int)ctx + 1, .dtype = dtype};
    if (!(ea = lg_engine_new(a, device, &eo, &err)) || !(eb = lg_engine_new(b, device, &eo, &err)) ||
        lg_quant_report_run(ea, eb, a->vocab_size, ids, n, (int)ctx, 1, &r, &err) != 0)
        goto done;
    char wa[96], wb[96];
    describe_weights(a, wa, sizeof wa);
    describe_weights(b, wb, sizeof wb);
    double dppl = 100.0 * (r.ppl_b / r.ppl_a - 1.0);
    double mb_a = (a->has_weights ? lg_model_weight_bytes(a) : 0) / 1e6;
    double mb_b = (b->has_weights ? lg_model_weight_bytes(b) : 0) / 1e6;
    if (json) {
        printf("{\"ppl_a\": %.6f, \"ppl_b\": %.6f, \"ppl_change_percent\": %.6f, \"kl_mean\": %.9g, "
               "\"kl_p99\": %.9g, \"kl_max\": %.9g, \"top1_agree\": %.6f, \"predicted\": %ld, "
               "\"windows\": %ld, \"ctx\": %ld, \"seconds\": %.2f}\n",
               r.ppl_a, r.ppl_b, dppl, r.kl_mean, r.kl_p99, r.kl_max, r.top1_agree, r.predicted,
               r.windows, ctx, r.seconds);
    } else {
        printf("%ld tokens predicted (%d file%s, BOS each), %ld windows of ctx %ld, %.1f s\n\n",
               r.predicted, n_texts, n_texts == 1 ? "" : "s", r.windows, ctx, r.seconds);
        printf("| model | weights | weight MB | ppl | ppl change | KL mean | KL p99 | KL max | "
               "top-1 agree |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        printf("| A %s | %s | %.1f | %.4f | (reference) | | | | |\n", dir_a, wa, mb_a, r.ppl_a);
        printf("| B %s | %s | %.1f | %.4f | %+.3f%% | %.3g | %.3g | %.3g | %.2f%% |\n", dir_b, wb,
               mb_b, r.ppl_b, dppl, r.kl_mean, r.kl_p99, r.kl_max, 100 * r.top1_agree);
    }
    rc = 0;
done:
    if (rc != 0)
        fprintf(stderr, "lg-eval quant-report: %s\n", err.msg);
    lg_engine_free(ea);
    lg_engine_free(eb);
    lg_tokenizer_free(t);
    lg_model_free(a);
    lg_model_free(b);
    free(ids);
    free(texts);
    return rc;
}
