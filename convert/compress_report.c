#include "compress_report.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "byteplane.h"
#include "checkpoint.h"
#include "progress.h"

int lg_compress_kind_of(const char *name)
{
    if (strstr(name, "norm"))
        return LG_CR_NORM;
    if (strstr(name, "self_attn."))
        return LG_CR_ATTN;
    if (strstr(name, "mlp."))
        return LG_CR_MLP;
    if (strstr(name, "embed_tokens") || strncmp(name, "lm_head.", 8) == 0)
        return LG_CR_EMBED;
    return LG_CR_OTHER;
}

const char *lg_compress_kind_name(int kind)
{
    static const char *const names[LG_CR_KINDS] = {"attn", "mlp", "embed", "norm", "other"};
    return kind >= 0 && kind < LG_CR_KINDS ? names[kind] : "?";
}

/* ---------------------------------------------------------------- decompression threads */

typedef struct packed_tensor {
    const lg_st_tensor *t;
    void *data;
    size_t n;
    int ok;
} packed_tensor;

typedef struct decompress_job {
    packed_tensor *items;
    int n_items;
    lg_bp_params params;
    atomic_int next;
} decompress_job;

/* Byte planes only where they mean something: elements of two bytes (fp16, bf16). */
static lg_bp_params params_for(const lg_st_tensor *t, int transform)
{
    lg_bp_params p = {transform && lg_dtype_size(t->dtype) == 2, 0, LG_BP_CHUNK};
    return p;
}

static void *decompress_worker(void *arg)
{
    decompress_job *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->n_items;) {
        packed_tensor *p = &j->items[i];
        lg_bp_params bp = params_for(p->t, j->params.transform);
        void *out = NULL;
        size_t n = 0;
        lg_err err;
        uint64_t raw = lg_st_nbytes(p->t);
        p->ok = lg_bp_decompress_buffer(&bp, p->data, p->n, raw, &out, &n, &err) == 0 && n == raw &&
                memcmp(out, p->t->data, n) == 0;
        free(out);
    }
    return NULL;
}

/* ---------------------------------------------------------------- measurement */

static int run_mode(const lg_checkpoint *ck, int transform, int level, int threads,
                    lg_compress_report *r, lg_err *err)
{
    packed_tensor *items = calloc((size_t)ck->n_tensors, sizeof *items);
    if (!items)
        return lg_err_set(err, "out of memory");
    int rc = 0;
    lg_progress pg;
    lg_progress_start(&pg, transform ? "byte planes" : "plain zstd", (uint64_t)ck->n_tensors,
                      "tensors");
    for (int i = 0; i < ck->n_tensors && rc == 0; i++) {
        const lg_st_tensor *t = ck->entries[i].tensor;
        lg_compress_kind *k = &r->kinds[lg_compress_kind_of(t->name)];
        lg_bp_params bp = params_for(t, transform);
        items[i].t = t;
        double t0 = lg_now();
        rc = lg_bp_compress_buffer(&bp, level, 1, t->data, lg_st_nbytes(t), &items[i].data,
                                   &items[i].n, err);
        k->compress_s[transform] += lg_now() - t0;
        k->packed[transform] += items[i].n;
        if (transform == 0) {
            k->n_tensors++;
            k->raw += lg_st_nbytes(t);
        }
        lg_progress_update(&pg, (uint64_t)i + 1);
    }
    lg_progress_end(&pg);
    if (rc == 0) {
        decompress_job job = {items, ck->n_tensors, {transform, 0, LG_BP_CHUNK}, 0};
        pthread_t *tid = calloc((size_t)threads, sizeof *tid);
        int started = 0;
        double t0 = lg_now();
        for (; tid && started < threads; started++)
            if (pthread_create(&tid[started], NULL, decompress_worker, &job) != 0)
                break;
        if (started == 0)
            decompress_worker(&job);
        for (int i = 0; i < started; i++)
            pthread_join(tid[i], NULL);
        r->decompress_s[transform] = lg_now() - t0;
        free(tid);
        for (int i = 0; i < ck->n_tensors && rc == 0; i++)
            if (!items[i].ok)
                rc = lg_err_set(err, "%s: tensor '%s' does not round-trip bit for bit (%s)", ck->dir,
                                items[i].t->name, transform ? "byte planes" : "plain zstd");
        if (rc == 0 && transform)
            r->round_trips_ok = ck->n_tensors;
    }
    for (int i = 0; i < ck->n_tensors; i++)
        free(items[i].data);
    free(items);
    return rc;
}

int lg_compress_report_run(const char *dir, int level, int threads, lg_compress_report *r,
                           lg_err *err)
{
    memset(r, 0, sizeof *r);
    if (level < 1 || level > 19)
        return lg_err_set(err, "--level %d: zstd levels 1..19", level);
    if (threads <= 0)
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    r->threads = threads;
    r->level = level;
    lg_checkpoint *ck = lg_ckpt_open(dir, err);
    if (!ck)
        return -1;
    int rc = run_mode(ck, 0, level, threads, r, err);
    if (rc == 0)
        rc = run_mode(ck, 1, level, threads, r, err);
    lg_ckpt_close(ck);
    for (int k = 0; k < LG_CR_KINDS; k++) {
        lg_compress_kind *a = &r->kinds[k], *t = &r->total;
        t->n_tensors += a->n_tensors;
        t->raw += a->raw;
        for (int m = 0; m < 2; m++) {
            t->packed[m] += a->packed[m];
            t->compress_s[m] += a->compress_s[m];
        }
    }
    return rc;
}

static void print_row(FILE *f, const char *name, const lg_compress_kind *k)
{
    if (k->n_tensors == 0)
        return;
    double r0 = k->packed[0] ? (double)k->raw / k->packed[0] : 0;
    double r1 = k->packed[1] ? (double)k->raw / k->packed[1] : 0;
    fprintf(f, "| %s | %d | %.1f | %.3f | %.3f | %.2f | %.3f | %.3f |\n", name, k->n_tensors,
            k->raw / 1e6, r0, r1, r0 > 0 ? r1 / r0 : 0,
            k->compress_s[0] > 0 ? k->raw / 1e9 / k->compress_s[0] : 0,
            k->compress_s[1] > 0 ? k->raw / 1e9 / k->compress_s[1] : 0);
}

void lg_compress_report_print(const lg_compress_report *r, const char *dir, FILE *f)
{
    fprintf(f, "%s: zstd level %d; ratio = raw / compressed; compression one thread, tensor after "
               "tensor\n\n", dir, r->level);
    fprintf(f, "| kind | tensors | raw MB | ratio zstd | ratio byte planes | gain | compress GB/s "
               "zstd | compress GB/s planes |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int k = 0; k < LG_CR_KINDS; k++)
        print_row(f, lg_compress_kind_name(k), &r->kinds[k]);
    print_row(f, "**all**", &r->total);
    fprintf(f, "\ndecompression, %d threads over tensors: plain zstd %.2f GB/s, byte planes %.2f GB/s "
               "(of raw bytes)\n", r->threads,
            r->decompress_s[0] > 0 ? r->total.raw / 1e9 / r->decompress_s[0] : 0,
            r->decompress_s[1] > 0 ? r->total.raw / 1e9 / r->decompress_s[1] : 0);
    fprintf(f, "round trip: %d tensors bit-exact with both codecs\n", r->round_trips_ok);
}
