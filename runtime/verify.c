#include "verify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Rows of logits computed per forward call: bounds memory for long inputs (rows x vocab floats). */
#define VERIFY_CHUNK 128

static const lg_st_tensor *i32_vector(const lg_st_file *f, const char *name, lg_err *err)
{
    const lg_st_tensor *t = lg_st_find(f, name);
    if (t && (t->dtype != LG_DT_I32 || t->ndim != 1))
        lg_err_set(err, "%s: '%s' should be an I32 vector", f->path, name);
    else
        return t;
    return NULL;
}

static int ids_in_range(const lg_st_tensor *t, int vocab, const char *path, lg_err *err)
{
    for (int64_t i = 0; i < t->shape[0]; i++) {
        int32_t v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        if (v < 0 || v >= vocab)
            return lg_err_set(err, "%s: '%s'[%lld] = %d is outside the vocabulary (%d)", path,
                              t->name, (long long)i, v, vocab);
    }
    return 0;
}

static int *copy_ids(const lg_st_tensor *t)
{
    int *ids = malloc(sizeof(int) * (size_t)(t->shape[0] ? t->shape[0] : 1));
    for (int64_t i = 0; ids && i < t->shape[0]; i++) {
        int32_t v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        ids[i] = v;
    }
    return ids;
}

static int compare_logits(lg_engine *s, const lg_st_file *f, int vocab, lg_verify_result *r,
                          lg_err *err)
{
    const lg_st_tensor *in = i32_vector(f, "input_ids", err), *lg = lg_st_find(f, "logits");
    if (!in)
        return lg_err_set(err, "%s: no I32 vector 'input_ids'", f->path);
    if (ids_in_range(in, vocab, f->path, err))
        return -1;
    const lg_st_tensor *pos = lg_st_find(f, "logit_positions");
    int T = (int)in->shape[0];
    int P = pos ? (int)pos->shape[0] : T;
    if (!lg || lg->dtype != LG_DT_F32 || lg->ndim != 2 || lg->shape[0] != P || lg->shape[1] != vocab)
        return lg_err_set(err, "%s: 'logits' should be F32 [%d, %d]", f->path, P, vocab);
    if (pos && i32_vector(f, "logit_positions", err) == NULL)
        return -1;
    int *ids = copy_ids(in), *want = pos ? copy_ids(pos) : NULL;
    float *out = malloc(sizeof(float) * (size_t)VERIFY_CHUNK * (size_t)vocab);
    int rc = ids && out && (!pos || want) ? 0 : lg_err_set(err, "out of memory");
    double diff2 = 0, ref2 = 0;
    int agree = 0, k = 0; /* k: next reference row */
    for (int c0 = 0; rc == 0 && c0 < T; c0 += VERIFY_CHUNK) {
        int n = T - c0 < VERIFY_CHUNK ? T - c0 : VERIFY_CHUNK;
        rc = lg_engine_tokens(s, ids + c0, n, c0, LG_LOGITS_ALL, out, err);
        for (int i = 0; rc == 0 && i < n && k < P; i++) {
            int p = c0 + i;
            if (want && want[k] != p)
                continue;
            const float *o = out + (size_t)i * vocab, *ref = (const float *)lg->data + (size_t)k * vocab;
            double row2 = 0;
            for (int v = 0; v < vocab; v++) {
                double d = (double)o[v] - ref[v];
                diff2 += d * d;
                row2 += (double)ref[v] * ref[v];
                if (fabs(d) > r->max_abs_err)
                    r->max_abs_err = fabs(d);
            }
            ref2 += row2;
            int ours = lg_argmax(o, vocab), theirs = lg_argmax(ref, vocab);
            if (ours == theirs) {
                agree++;
            } else {
                double rms = sqrt(row2 / vocab), gap = (double)ref[theirs] - ref[ours];
                gap = rms > 0 ? gap / rms : (gap > 0 ? INFINITY : 0);
                if (gap > r->argmax_gap)
                    r->argmax_gap = gap;
            }
            k++;
        }
    }
    if (rc == 0 && k != P)
        rc = lg_err_set(err, "%s: logit_positions are not increasing positions below %d", f->path, T);
    r->rows = P;
    r->rel_err = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    r->argmax_agree = P ? (double)agree / P : 1.0;
    free(ids);
    free(want);
    free(out);
    return rc;
}

static int compare_nll(lg_engine *s, const lg_st_file *f, int vocab, lg_verify_result *r,
                       lg_err *err)
{
    const lg_st_tensor *nll = lg_st_find(f, "nll");
    if (!nll)
        return 0;
    const lg_st_tensor *in = lg_st_find(f, "nll_input_ids") ? i32_vector(f, "nll_input_ids", err)
                                                             : i32_vector(f, "input_ids", err);
    if (!in || ids_in_range(in, vocab, f->path, err))
        return -1;
    int T = (int)in->shape[0];
    if (nll->dtype != LG_DT_F32 || nll->ndim != 1 || nll->shape[0] != T - 1)
        return lg_err_set(err, "%s: 'nll' should be F32 [%d]", f->path, T - 1);
    int *ids = copy_ids(in);
    float *ours = malloc(sizeof(float) * (size_t)T);
    int rc = ids && ours ? lg_engine_nll(s, ids, T, 0, ours, err) : lg_err_set(err, "out of memory");
    if (rc == 0) {
        double a = 0, b = 0;
        for (int i = 0; i < T - 1; i++) {
            a += ours[i];
            b += ((const float *)nll->data)[i];
        }
        r->has_nll = 1;
        r->ppl = exp(a / (T - 1));
        r->ref_ppl = exp(b / (T - 1));
    }
    free(ids);
    free(ours);
    return rc;
}

/* Where our greedy continuation first leaves the reference's, at generated token i (our a, their
 * b): our logits after the prompt and the reference's first i ids, the prefix both runs share, and
 * the gap they put between a and b over the row's rms logit. compare_logits measures a flipped
 * argmax in the reference's row; the reference holds no logits for its continuation, so this one is
 * measured in ours, and rounding within the bound can flip a small gap either way. */
static int greedy_gap(lg_engine *s, const int *pids, int np, const int *ref, int i, int a, int b,
                      int vocab, double *gap, lg_err *err)
{
    int *seq = malloc(sizeof(int) * (size_t)(np + i));
    float *row = malloc(sizeof(float) * (size_t)vocab);
    int rc = seq && row ? 0 : lg_err_set(err, "out of memory");
    if (rc == 0) {
        memcpy(seq, pids, sizeof(int) * (size_t)np);
        memcpy(seq + np, ref, sizeof(int) * (size_t)i);
        rc = lg_engine_tokens(s, seq, np + i, 0, LG_LOGITS_LAST, row, err);
    }
    if (rc == 0) {
        double sum2 = 0;
        for (int v = 0; v < vocab; v++)
            sum2 += (double)row[v] * row[v];
        double rms = sqrt(sum2 / vocab), d = fabs((double)row[a] - row[b]);
        *gap = rms > 0 ? d / rms : (d > 0 ? INFINITY : 0);
    }
    free(seq);
    free(row);
    return rc;
}

static int compare_greedy(lg_engine *s, const lg_st_file *f, int vocab, lg_verify_result *r,
                          lg_err *err)
{
    const lg_st_tensor *g = lg_st_find(f, "greedy_ids");
    r->greedy_first_diff = -1;
    if (!g)
        return 0;
    if (!i32_vector(f, "greedy_ids", err) || ids_in_range(g, vocab, f->path, err))
        return -1;
    const lg_st_tensor *prompt = lg_st_find(f, "greedy_prompt_ids");
    int *pids;
    int np;
    if (prompt) {
        if (!i32_vector(f, "greedy_prompt_ids", err) || ids_in_range(prompt, vocab, f->path, err))
            return -1;
        pids = copy_ids(prompt);
        np = (int)prompt->shape[0];
    } else {
        /* the prompt is the first greedy_prompt_len tokens of input_ids */
        const lg_st_tensor *len = i32_vector(f, "greedy_prompt_len", err);
        const lg_st_tensor *in = i32_vector(f, "input_ids", err);
        if (!len || !in || len->shape[0] != 1)
            return lg_err_set(err, "%s: greedy_ids without greedy_prompt_ids or greedy_prompt_len", f->path);
        int32_t v;
        memcpy(&v, len->data, 4);
        if (v < 1 || v > in->shape[0])
            return lg_err_set(err, "%s: greedy_prompt_len %d outside input_ids", f->path, v);
        pids = copy_ids(in);
        np = v;
    }
    int n = (int)g->shape[0];
    int *out = malloc(sizeof(int) * (size_t)(n ? n : 1)), *want = copy_ids(g);
    int rc = pids && out && want ? lg_engine_greedy(s, pids, np, n, out, err)
                                 : lg_err_set(err, "out of memory");
    if (rc == 0) {
        r->has_greedy = 1;
        r->greedy_len = n;
        for (int i = 0; i < n && r->greedy_first_diff < 0; i++)
            if (out[i] != want[i])
                r->greedy_first_diff = i;
        r->greedy_match = r->greedy_first_diff < 0;
    }
    int i = r->greedy_first_diff;
    if (rc == 0 && i >= 0)
        rc = greedy_gap(s, pids, np, want, i, out[i], want[i], vocab, &r->greedy_gap, err);
    free(pids);
    free(out);
    free(want);
    return rc;
}

double lg_verify_default_bound(const char *act)
{
    if (act && strcmp(act, "bf16") == 0)
        return 1.6e-2;
    if (act && strcmp(act, "f16") == 0)
        return 2e-3;
    return 1e-4;
}

int lg_verify_run(lg_engine *s, int model_vocab, const char *ref_path, lg_verify_result *r,
                  lg_err *err)
{
    memset(r, 0, sizeof *r);
    lg_st_file *f = lg_st_open(ref_path, err);
    if (!f)
        return -1;
    const lg_st_tensor *lg = lg_st_find(f, "logits");
    int vocab = lg && lg->ndim == 2 ? (int)lg->shape[1] : 0;
    int rc = vocab > 0 ? 0 : lg_err_set(err, "%s: no 2-D 'logits' tensor", ref_path);
    if (rc == 0 && vocab != model_vocab)
        rc = lg_err_set(err, "%s: logits have %d columns but the model's vocabulary is %d", ref_path,
                        vocab, model_vocab);
    if (rc == 0)
        rc = compare_logits(s, f, vocab, r, err);
    if (rc == 0)
        rc = compare_nll(s, f, vocab, r, err);
    if (rc == 0)
        rc = compare_greedy(s, f, vocab, r, err);
    lg_st_close(f);
    return rc;
}

/* ---------------------------------------------------------------- writing a reference */

/* One tensor of the reference file. */
typedef struct ref_part {
    const char *name;
    lg_dtype dt;
    int ndim;
    int64_t shape[2];
    const void *data;
    size_t bytes;
} ref_part;

int lg_verify_write_reference(lg_engine *s, int vocab, const int *ids, int n, int n_greedy,
                              const char *path, lg_err *err)
{
    if (n < 2 || n_greedy < 0 || n_greedy > (1 << 20))
        return lg_err_set(err, "reference: %d input ids and %d greedy tokens (at least 2 ids)", n,
                          n_greedy);
    float *logits = malloc(sizeof(float) * (size_t)n * vocab);
    float *nll = malloc(sizeof(float) * (size_t)(n - 1));
    int32_t *in = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *greedy = malloc(sizeof(int32_t) * (size_t)(n_greedy ? n_greedy : 1));
    int *out = malloc(sizeof(int) * (size_t)(n_greedy ? n_greedy : 1));
    int rc = logits && nll && in && greedy && out ? 0 : lg_err_set(err, "reference: out of memory");
    /* the logits in chunks as compare_logits reads them, so both see the same calls */
    for (int r0 = 0; rc == 0 && r0 < n; r0 += VERIFY_CHUNK) {
        int c = n - r0 < VERIFY_CHUNK ? n - r0 : VERIFY_CHUNK;
        rc = lg_engine_tokens(s, ids + r0, c, r0, LG_LOGITS_ALL, logits + (size_t)r0 * vocab, err);
    }
    if (rc == 0)
        rc = lg_engine_nll(s, ids, n, 0, nll, err);
    if (rc == 0 && n_greedy > 0)
        rc = lg_engine_greedy(s, ids, n, n_greedy, out, err);
    for (int i = 0; rc == 0 && i < n; i++)
        in[i] = ids[i];
    for (int i = 0; rc == 0 && i < n_greedy; i++)
        greedy[i] = out[i];
    int32_t plen = n;
    ref_part parts[] = {
        {"input_ids", LG_DT_I32, 1, {n, 0}, in, sizeof(int32_t) * (size_t)n},
        {"logits", LG_DT_F32, 2, {n, vocab}, logits, sizeof(float) * (size_t)n * vocab},
        {"nll", LG_DT_F32, 1, {n - 1, 0}, nll, sizeof(float) * (size_t)(n - 1)},
        {"greedy_ids", LG_DT_I32, 1, {n_greedy, 0}, greedy, sizeof(int32_t) * (size_t)n_greedy},
        {"greedy_prompt_len", LG_DT_I32, 1, {1, 0}, &plen, sizeof plen},
    };
    int n_parts = n_greedy > 0 ? 5 : 3;
    lg_st_writer *w = rc == 0 ? lg_st_writer_create(path, err) : NULL;
    if (rc == 0 && !w)
        rc = -1;
    if (rc == 0)
        rc = lg_st_writer_meta(w, "made_by", "lg-eval reference", err);
    for (int i = 0; rc == 0 && i < n_parts; i++)
        rc = lg_st_writer_add(w, parts[i].name, parts[i].dt, parts[i].ndim, parts[i].shape, err);
    if (rc == 0)
        rc = lg_st_writer_begin(w, err);
    for (int i = 0; rc == 0 && i < n_parts; i++)
        rc = lg_st_writer_write(w, parts[i].data, parts[i].bytes, err);
    if (rc == 0)
        rc = lg_st_writer_finish(w, err);
    else if (w)
        lg_st_writer_abort(w);
    free(logits);
    free(nll);
    free(in);
    free(greedy);
    free(out);
    return rc;
}
