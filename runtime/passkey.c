#include "passkey.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"

static const char NEEDLE_FMT[] = " The pass key is %d. Remember it. %d is the pass key.";

char *lg_passkey_text(long n_fill, long at, int key)
{
    if (n_fill < 0 || at < 0 || at > n_fill)
        return NULL;
    char needle[128];
    int nl = snprintf(needle, sizeof needle, NEEDLE_FMT, key, key);
    size_t fl = strlen(LG_PASSKEY_FILLER), il = strlen(LG_PASSKEY_INTRO), ql = strlen(LG_PASSKEY_QUESTION);
    size_t len = il + (size_t)n_fill * fl + (size_t)nl + ql;
    char *s = malloc(len + 1), *p = s;
    if (!s)
        return NULL;
    memcpy(p, LG_PASSKEY_INTRO, il);
    p += il;
    for (long i = 0; i < n_fill; i++) {
        if (i == at) {
            memcpy(p, needle, (size_t)nl);
            p += nl;
        }
        memcpy(p, LG_PASSKEY_FILLER, fl);
        p += fl;
    }
    if (at == n_fill) {
        memcpy(p, needle, (size_t)nl);
        p += nl;
    }
    memcpy(p, LG_PASSKEY_QUESTION, ql);
    p[ql] = 0;
    return s;
}

static long text_tokens(const lg_tokenizer *t, const char *s, size_t n, lg_err *err)
{
    int *ids = NULL, k = 0;
    if (lg_tokenizer_encode(t, s, n, 1, &ids, &k, err) != 0)
        return -1;
    free(ids);
    return k;
}

long lg_passkey_fillers(const lg_tokenizer *t, long length, lg_err *err)
{
    char *none = lg_passkey_text(0, 0, 12345), *one = lg_passkey_text(1, 0, 12345);
    long base = none && one ? text_tokens(t, none, strlen(none), err) : -1;
    long with = base >= 0 ? text_tokens(t, one, strlen(one), err) : -1;
    if (!none || !one)
        lg_err_set(err, "out of memory");
    free(none);
    free(one);
    if (with < 0)
        return -1;
    long n = (length - base) / (with - base);
    if (length < base + (with - base))
        return lg_err_set(err, "length %ld is too short for a pass-key prompt (%ld tokens with one filler)",
                          length, with);
    return n;
}

int lg_passkey_prompt(const lg_tokenizer *t, long n_fill, long at, int key, int **ids, int *n_ids,
                      int *key_pos, lg_err *err)
{
    if (key < 10000 || key > 99999)
        return lg_err_set(err, "pass key %d is not 5 digits", key);
    char *s = lg_passkey_text(n_fill, at, key);
    if (!s)
        return lg_err_set(err, "pass-key prompt with %ld fillers, key at %ld: bad position or out of memory",
                          n_fill, at);
    int rc = lg_tokenizer_encode(t, s, strlen(s), 1, ids, n_ids, err);
    if (rc == 0 && key_pos) {
        /* everything before the key's digits: " The pass key is" ends there, its "▁" starts the key */
        const char *mark = strstr(s + strlen(LG_PASSKEY_INTRO) + (size_t)at * strlen(LG_PASSKEY_FILLER),
                                  " The pass key is ");
        size_t upto = (size_t)(mark - s) + strlen(" The pass key is");
        long k = text_tokens(t, s, upto, err);
        if (k < 0) {
            free(*ids);
            *ids = NULL;
            rc = -1;
        } else {
            *key_pos = (int)k;
        }
    }
    free(s);
    return rc;
}

int lg_passkey_trial(lg_engine *s, const lg_tokenizer *t, long n_fill, long at, int key,
                     int *correct, char *out, lg_err *err)
{
    char digits[16];
    snprintf(digits, sizeof digits, "%d", key);
    int *ids = NULL, n = 0, *ans = NULL, n_ans = 0;
    if (lg_passkey_prompt(t, n_fill, at, key, &ids, &n, NULL, err) != 0)
        return -1;
    int rc = lg_tokenizer_encode(t, digits, strlen(digits), 0, &ans, &n_ans, err);
    int *gen = rc == 0 ? malloc((size_t)n_ans * sizeof *gen) : NULL;
    if (rc == 0 && !gen)
        rc = lg_err_set(err, "out of memory");
    char *text = NULL;
    if (rc == 0 && lg_engine_greedy(s, ids, n, n_ans, gen, err) != 0)
        rc = -1;
    if (rc == 0 && !(text = lg_tokenizer_decode(t, gen, n_ans, err)))
        rc = -1;
    if (rc == 0) {
        const char *p = text;
        while (*p == ' ')
            p++;
        *correct = strncmp(p, digits, strlen(digits)) == 0 && !isdigit((unsigned char)p[strlen(digits)]);
        if (out)
            snprintf(out, 32, "%s", text);
    }
    free(text);
    free(gen);
    free(ans);
    free(ids);
    return rc;
}

/* splitmix64 (Steele, Lea, Flood 2014): a seed gives the same keys and positions everywhere. */
static uint64_t next_random(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int lg_passkey_run(lg_engine *s, const lg_tokenizer *t, long length, int trials, uint64_t *rng,
                   lg_passkey_result *r, lg_err *err)
{
    memset(r, 0, sizeof *r);
    r->length = length;
    if (trials < 1)
        return lg_err_set(err, "trials must be >= 1, got %d", trials);
    r->n_fill = lg_passkey_fillers(t, length, err);
    if (r->n_fill < 0)
        return -1;
    double t0 = lg_now();
    for (int i = 0; i < trials; i++) {
        int key = 10000 + (int)(next_random(rng) % 90000);
        long at = (long)(next_random(rng) % (uint64_t)(r->n_fill + 1));
        int ok = 0;
        if (lg_passkey_trial(s, t, r->n_fill, at, key, &ok, NULL, err) != 0)
            return -1;
        r->correct += ok;
        r->trials++;
    }
    r->seconds = lg_now() - t0;
    r->accuracy = (double)r->correct / r->trials;
    /* the prompt's length does not depend on the key or its place (5 digits, whole fillers) */
    int *ids = NULL, n = 0;
    if (lg_passkey_prompt(t, r->n_fill, 0, 12345, &ids, &n, NULL, err) != 0)
        return -1;
    free(ids);
    r->prompt_tokens = n;
    return 0;
}
