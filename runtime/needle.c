#include "needle.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plot_svg.h"
#include "progress.h"

#define LG_CORPUS_MAX_BYTES ((size_t)1 << 30)

static const char NEEDLE_INTRO[] = "This is a very long story book: <book> ";
static const char NEEDLE_OUTRO[] = " </book>.\nBased on the content of the book, Question: ";
static const char NEEDLE_ANSWER[] = "\nAnswer:";

/* ---------------------------------------------------------------- reading the text */

static int read_file(const char *path, char **buf, size_t *n, lg_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0, got;
    char *b = malloc(cap);
    while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len > LG_CORPUS_MAX_BYTES) {
            fclose(f);
            free(b);
            return lg_err_set(err, "%s: larger than the %zu-byte limit for a haystack", path,
                              LG_CORPUS_MAX_BYTES);
        }
        if (len == cap) {
            char *g = realloc(b, cap *= 2);
            if (!g)
                free(b);
            b = g;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!b)
        return lg_err_set(err, "%s: out of memory", path);
    if (bad) {
        free(b);
        return lg_err_set(err, "%s: read error", path);
    }
    *buf = b;
    *n = len;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int wanted_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".txt") == 0 && strncmp(name, "LICENSE", 7) != 0;
}

/* Appends src to *dst (growing it), separated by a blank line when *dst is not empty. */
static int append_text(char **dst, size_t *len, const char *src, size_t n)
{
    size_t sep = *len ? 2 : 0;
    char *g = realloc(*dst, *len + sep + n + 1);
    if (!g)
        return -1;
    memcpy(g + *len, "\n\n", sep);
    memcpy(g + *len + sep, src, n);
    *len += sep + n;
    g[*len] = 0;
    *dst = g;
    return 0;
}

static int read_dir(const char *path, char **text, size_t *len, lg_err *err)
{
    DIR *d = opendir(path);
    if (!d)
        return lg_err_set(err, "%s: cannot open directory: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!wanted_name(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **g = realloc(names, cap * sizeof *g);
            if (!g) {
                rc = lg_err_set(err, "%s: out of memory", path);
                break;
            }
            names = g;
        }
        if (!(names[n] = strdup(e->d_name)))
            rc = lg_err_set(err, "%s: out of memory", path);
        else
            n++;
    }
    closedir(d);
    if (rc == 0 && n == 0)
        rc = lg_err_set(err, "%s: no *.txt file in the directory", path);
    if (rc == 0)
        qsort(names, n, sizeof *names, cmp_str);
    *text = NULL;
    *len = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char file[8192], *buf = NULL;
        size_t flen = 0;
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        rc = read_file(file, &buf, &flen, err);
        if (rc == 0 && *len + flen > LG_CORPUS_MAX_BYTES)
            rc = lg_err_set(err, "%s: larger than the %zu-byte limit for a haystack", path,
                            LG_CORPUS_MAX_BYTES);
        if (rc == 0 && append_text(text, len, buf, flen) != 0)
            rc = lg_err_set(err, "%s: out of memory", path);
        free(buf);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc != 0) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

/* ---------------------------------------------------------------- sentences */

/* Invalid UTF-8 and NUL bytes become '?', and so does '▁' (U+2581), which the tokenizer would read
 * as its own space mark: afterwards every token maps back onto the text byte for byte. */
static void sanitize(char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (ok && len == 2)
            ok = c >= 0xC2;
        if (ok && len == 3) {
            unsigned cp = ((c & 0x0Fu) << 12) | (((unsigned char)s[i + 1] & 0x3Fu) << 6) |
                          ((unsigned char)s[i + 2] & 0x3Fu);
            ok = cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000);
            if (ok && cp == 0x2581) {
                memset(s + i, '?', 3);
            }
        }
        if (ok && len == 4) {
            unsigned cp = ((c & 0x07u) << 18) | (((unsigned char)s[i + 1] & 0x3Fu) << 12);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (!ok || c == 0) {
            s[i] = '?';
            len = 1;
        }
        i += len;
    }
}

static int is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* Just past closing quotes and brackets at i: " ' ) ] and the UTF-8 ’ ” */
static size_t skip_closers(const char *s, size_t i, size_t n)
{
    for (;;) {
        if (i < n && (s[i] == '"' || s[i] == '\'' || s[i] == ')' || s[i] == ']'))
            i++;
        else if (i + 2 < n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x80 &&
                 ((unsigned char)s[i + 2] == 0x99 || (unsigned char)s[i + 2] == 0x9D))
            i += 3;
        else
            return i;
    }
}

/* The end of the sentence that starts at i (a non-space character). */
static size_t sentence_end(const char *s, size_t i, size_t n)
{
    size_t start = i;
    while (i < n) {
        char c = s[i];
        if (c == '.' || c == '!' || c == '?') {
            size_t k = i + 1;
            while (k < n && (s[k] == '.' || s[k] == '!' || s[k] == '?'))
                k++;
            k = skip_closers(s, k, n);
            if (k == n || is_ws(s[k]))
                return k;
            unsigned char before = i > start ? (unsigned char)s[i - 1] : 0;
            if (isupper((unsigned char)s[k]) && (islower(before) || isdigit(before)))
                return k;
            i = k;
            continue;
        }
        if (c == '\n') {
            size_t k = i + 1;
            while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r'))
                k++;
            if (k < n && s[k] == '\n') {
                while (i > start && is_ws(s[i - 1]))
                    i--;
                return i;
            }
        }
        i++;
    }
    while (n > start && is_ws(s[n - 1]))
        n--;
    return n;
}

static int split_sentences(lg_corpus *c)
{
    size_t cap = c->len / 32 + 16;
    c->sent_start = malloc(cap * sizeof *c->sent_start);
    c->sent_end = malloc(cap * sizeof *c->sent_end);
    c->n_sent = 0;
    size_t i = 0;
    while (c->sent_start && c->sent_end) {
        while (i < c->len && is_ws(c->text[i]))
            i++;
        if (i >= c->len)
            return 0;
        if ((size_t)c->n_sent == cap) {
            cap *= 2;
            size_t *a = realloc(c->sent_start, cap * sizeof *a);
            if (a)
                c->sent_start = a;
            size_t *b = a ? realloc(c->sent_end, cap * sizeof *b) : NULL;
            if (!b)
                return -1;
            c->sent_end = b;
        }
        size_t e = sentence_end(c->text, i, c->len);
        c->sent_start[c->n_sent] = i;
        c->sent_end[c->n_sent++] = e;
        i = e;
    }
    return -1;
}

/* ---------------------------------------------------------------- token <-> byte map */

/* Bytes of the text a piece stands for: '▁' is one space, <0xNN> one byte; -1 for control pieces. */
static long piece_bytes(const lg_tokenizer *t, int id)
{
    const char *p = lg_tokenizer_piece(t, id);
    if (!p || id == lg_tokenizer_bos_id(t) || id == lg_tokenizer_eos_id(t) || id == lg_tokenizer_unk_id(t))
        return -1;
    size_t n = strlen(p);
    if (n == 6 && strncmp(p, "<0x", 3) == 0 && p[5] == '>')
        return 1;
    long b = 0;
    for (size_t i = 0; i < n; i++, b++)
        if ((unsigned char)p[i] == 0xE2 && i + 2 < n && (unsigned char)p[i + 1] == 0x96 &&
            (unsigned char)p[i + 2] == 0x81)
            i += 2;
    return b;
}

/* Index of the last token starting at or before byte x (starts ascending). */
static long token_holding(const long *starts, long n, size_t x)
{
    long lo = 0, hi = n; /* answer in [lo - 1, hi) */
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (starts[mid] <= (long)x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1 < 0 ? 0 : lo - 1;
}

/* Number of tokens starting before byte x. */
static long tokens_before(const long *starts, long n, size_t x)
{
    long lo = 0, hi = n;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (starts[mid] < (long)x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int map_tokens(lg_corpus *c, const lg_tokenizer *t, const char *label, lg_err *err)
{
    int *ids = NULL, n = 0;
    if (lg_tokenizer_encode(t, c->text, c->len, 0, &ids, &n, err) != 0) {
        lg_err_prefix(err, "%s", label);
        return -1;
    }
    long *starts = malloc(((size_t)n + 1) * sizeof *starts);
    int rc = starts ? 0 : lg_err_set(err, "%s: out of memory", label);
    /* the first piece's '▁' is the dummy prefix sentencepiece adds, not a byte of the text */
    long pos = -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        long b = piece_bytes(t, ids[i]);
        if (b < 0)
            rc = lg_err_set(err, "%s: token %d (id %d) is not text", label, i, ids[i]);
        starts[i] = pos < 0 ? 0 : pos;
        pos += b;
    }
    if (rc == 0 && pos != (long)c->len)
        rc = lg_err_set(err, "%s: the tokenizer's pieces cover %ld bytes of a %zu-byte text (it "
                        "normalizes the text; only tokenizers that keep it as is are supported)",
                        label, pos, c->len);
    c->tok_first = rc == 0 ? malloc(((size_t)c->n_sent + 1) * sizeof(long)) : NULL;
    c->tok_end = rc == 0 ? malloc(((size_t)c->n_sent + 1) * sizeof(long)) : NULL;
    if (rc == 0 && (!c->tok_first || !c->tok_end))
        rc = lg_err_set(err, "%s: out of memory", label);
    for (long k = 0; rc == 0 && k < c->n_sent; k++) {
        c->tok_first[k] = token_holding(starts, n, c->sent_start[k]);
        c->tok_end[k] = tokens_before(starts, n, c->sent_end[k]);
    }
    c->n_tokens = n;
    free(starts);
    free(ids);
    return rc;
}

/* ---------------------------------------------------------------- corpus */

void lg_corpus_free(lg_corpus *c)
{
    if (!c)
        return;
    free(c->text);
    free(c->sent_start);
    free(c->sent_end);
    free(c->tok_first);
    free(c->tok_end);
    memset(c, 0, sizeof *c);
}

static int corpus_build(lg_corpus *c, char *text, size_t len, const char *label, const lg_tokenizer *t,
                        lg_err *err)
{
    memset(c, 0, sizeof *c);
    c->text = text;
    c->len = len;
    sanitize(c->text, c->len);
    if (split_sentences(c) != 0) {
        lg_corpus_free(c);
        return lg_err_set(err, "%s: out of memory", label);
    }
    if (c->n_sent == 0) {
        lg_corpus_free(c);
        return lg_err_set(err, "%s: no text", label);
    }
    if (map_tokens(c, t, label, err) != 0) {
        lg_corpus_free(c);
        return -1;
    }
    return 0;
}

int lg_corpus_from_text(const char *text, size_t len, const char *label, const lg_tokenizer *t,
                        long min_tokens, lg_corpus *c, lg_err *err)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return lg_err_set(err, "%s: out of memory", label);
    memcpy(copy, text, len);
    copy[len] = 0;
    if (corpus_build(c, copy, len, label, t, err) != 0)
        return -1;
    if (c->n_tokens >= min_tokens)
        return 0;
    /* too short: the text repeated (joined by blank lines) until long enough, plus one copy of slack */
    long reps = min_tokens / (c->n_tokens > 0 ? c->n_tokens : 1) + 2;
    if ((double)reps * (double)(len + 2) > (double)LG_CORPUS_MAX_BYTES) {
        lg_corpus_free(c);
        return lg_err_set(err, "%s: %zu bytes repeated to %ld tokens would pass the %zu-byte limit", label,
                          len, min_tokens, LG_CORPUS_MAX_BYTES);
    }
    lg_corpus_free(c);
    char *big = NULL;
    size_t big_len = 0;
    for (long r = 0; r < reps; r++)
        if (append_text(&big, &big_len, text, len) != 0) {
            free(big);
            return lg_err_set(err, "%s: out of memory", label);
        }
    return corpus_build(c, big, big_len, label, t, err);
}

int lg_corpus_load(const char *path, const lg_tokenizer *t, long min_tokens, lg_corpus *c, lg_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    int rc = S_ISDIR(st.st_mode) ? read_dir(path, &text, &len, err) : read_file(path, &text, &len, err);
    if (rc != 0)
        return -1;
    rc = lg_corpus_from_text(text, len, path, t, min_tokens, c, err);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- haystack */

void lg_haystack_free(lg_haystack *h)
{
    if (!h)
        return;
    free(h->text);
    free(h->cut);
    free(h->cut_tok);
    memset(h, 0, sizeof *h);
}

static long count_tokens(const lg_tokenizer *t, const char *s, size_t n, int add_bos, lg_err *err)
{
    int *ids = NULL, k = 0;
    if (lg_tokenizer_encode(t, s, n, add_bos, &ids, &k, err) != 0)
        return -1;
    free(ids);
    return k;
}

/* The last sentence b >= a whose estimated span a..b is closest to want tokens. */
static long closest_end(const lg_corpus *c, long a, long want)
{
    long base = c->tok_first[a], lo = a, hi = c->n_sent;
    while (lo < hi) { /* first b with tok_end[b] - base >= want */
        long mid = lo + (hi - lo) / 2;
        if (c->tok_end[mid] - base >= want)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == c->n_sent)
        return c->n_sent - 1;
    if (lo > a && labs(c->tok_end[lo - 1] - base - want) <= labs(c->tok_end[lo] - base - want))
        return lo - 1;
    return lo;
}

static int haystack_fill(const lg_corpus *c, long a, long b, long n_tokens, lg_haystack *h, lg_err *err)
{
    memset(h, 0, sizeof *h);
    size_t off = c->sent_start[a];
    h->len = c->sent_end[b] - off;
    h->text = malloc(h->len + 1);
    h->n_sent = b - a + 1;
    h->first_sent = a;
    h->n_tokens = n_tokens;
    h->cut = malloc(((size_t)h->n_sent + 1) * sizeof *h->cut);
    h->cut_tok = malloc(((size_t)h->n_sent + 1) * sizeof *h->cut_tok);
    if (!h->text || !h->cut || !h->cut_tok) {
        lg_haystack_free(h);
        return lg_err_set(err, "out of memory for a haystack of %ld tokens", n_tokens);
    }
    memcpy(h->text, c->text + off, h->len);
    h->text[h->len] = 0;
    h->cut[0] = 0;
    h->cut_tok[0] = 0;
    for (long k = 1; k <= h->n_sent; k++) {
        h->cut[k] = c->sent_end[a + k - 1] - off;
        h->cut_tok[k] = c->tok_end[a + k - 1] - c->tok_first[a];
    }
    return 0;
}

int lg_haystack_cut(const lg_corpus *c, const lg_tokenizer *t, long n_tokens, lg_haystack *h, lg_err *err)
{
    memset(h, 0, sizeof *h);
    if (n_tokens < 1)
        return lg_err_set(err, "a haystack of %ld tokens was asked for", n_tokens);
    if (c->tok_end[c->n_sent - 1] - c->tok_first[0] < n_tokens)
        return lg_err_set(err, "the haystack text has %ld tokens, fewer than the %ld asked for",
                          c->tok_end[c->n_sent - 1] - c->tok_first[0], n_tokens);
    const long tol = n_tokens / 100; /* ±1% */
    /* The estimate from the corpus's tokenization can differ from the haystack's own by a token or
     * two at its ends, so each candidate within tolerance is encoded; a few tries is plenty. */
    const int max_tries = 64;
    long best_a = 0, best_b = closest_end(c, 0, n_tokens), best_n = -1, best_est_err = -1;
    int tries = 0;
    for (long a = 0; a < c->n_sent && tries < max_tries; a++) {
        long b = closest_end(c, a, n_tokens);
        long est = c->tok_end[b] - c->tok_first[a];
        if (est < n_tokens - tol - 2 && b == c->n_sent - 1)
            break; /* past here every span is shorter still */
        if (best_n < 0 && (best_est_err < 0 || labs(est - n_tokens) < best_est_err)) {
            best_est_err = labs(est - n_tokens);
            best_a = a;
            best_b = b;
        }
        if (labs(est - n_tokens) > tol + 2)
            continue;
        tries++;
        long got = count_tokens(t, c->text + c->sent_start[a], c->sent_end[b] - c->sent_start[a], 0, err);
        if (got < 0)
            return -1;
        if (best_n < 0 || labs(got - n_tokens) < labs(best_n - n_tokens)) {
            best_n = got;
            best_a = a;
            best_b = b;
        }
        if (labs(got - n_tokens) <= tol)
            break;
    }
    if (best_n < 0) {
        best_n = count_tokens(t, c->text + c->sent_start[best_a],
                              c->sent_end[best_b] - c->sent_start[best_a], 0, err);
        if (best_n < 0)
            return -1;
    }
    return haystack_fill(c, best_a, best_b, best_n, h, err);
}

long lg_haystack_cut_at_depth(const lg_haystack *h, double depth_pct)
{
    double want = depth_pct / 100.0 * (double)h->n_tokens;
    long best = 0;
    for (long k = 1; k <= h->n_sent; k++)
        if (fabs((double)h->cut_tok[k] - want) < fabs((double)h->cut_tok[best] - want))
            best = k;
    return best;
}

char *lg_haystack_insert(const lg_haystack *h, long cut, const char *needle, size_t *len, lg_err *err)
{
    if (cut < 0 || cut > h->n_sent) {
        lg_err_set(err, "cut %ld is outside the haystack's 0..%ld", cut, h->n_sent);
        return NULL;
    }
    size_t at = h->cut[cut], nl = strlen(needle);
    char *s = malloc(h->len + nl + 1);
    if (!s) {
        lg_err_set(err, "out of memory");
        return NULL;
    }
    memcpy(s, h->text, at);
    memcpy(s + at, needle, nl);
    memcpy(s + at + nl, h->text + at, h->len - at);
    *len = h->len + nl;
    s[*len] = 0;
    return s;
}

/* ---------------------------------------------------------------- prompt and score */

lg_needle_spec lg_needle_default_spec(void)
{
    lg_needle_spec s = {
        .needle = "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a "
                  "sunny day.\n",
        .question = "What is the best thing to do in San Francisco?",
        .answer = "eat a sandwich and sit in Dolores Park",
        .answer_prefix = "The best thing to do in San Francisco is",
    };
    return s;
}

char *lg_needle_prompt_text(const char *haystack, size_t hay_len, const lg_needle_spec *spec, size_t *len)
{
    const char *pre = spec->answer_prefix ? spec->answer_prefix : "";
    size_t n = strlen(NEEDLE_INTRO) + hay_len + strlen(NEEDLE_OUTRO) + strlen(spec->question) +
               strlen(NEEDLE_ANSWER) + 1 + strlen(pre) + 1;
    char *s = malloc(n);
    if (!s)
        return NULL;
    size_t o = 0;
#define PUT(p, k) (memcpy(s + o, (p), (k)), o += (k))
    PUT(NEEDLE_INTRO, strlen(NEEDLE_INTRO));
    PUT(haystack, hay_len);
    PUT(NEEDLE_OUTRO, strlen(NEEDLE_OUTRO));
    PUT(spec->question, strlen(spec->question));
    PUT(NEEDLE_ANSWER, strlen(NEEDLE_ANSWER));
    if (*pre) {
        PUT(" ", 1);
        PUT(pre, strlen(pre));
    }
#undef PUT
    s[o] = 0;
    *len = o;
    return s;
}

/* Lower-cased with every run of whitespace made one space, trimmed. */
static char *squeeze_lower(const char *s)
{
    char *o = malloc(strlen(s) + 1);
    size_t k = 0;
    if (!o)
        return NULL;
    for (; *s; s++) {
        if (is_ws(*s)) {
            if (k && o[k - 1] != ' ')
                o[k++] = ' ';
        } else {
            o[k++] = (char)tolower((unsigned char)*s);
        }
    }
    while (k && o[k - 1] == ' ')
        k--;
    o[k] = 0;
    return o;
}

/* The words of s (lower-cased runs of letters, digits and non-ASCII bytes), NUL-separated into *buf. */
static int split_words(const char *s, char ***words, char **buf)
{
    size_t n = strlen(s);
    char *b = malloc(n + 1);
    char **w = malloc((n / 2 + 2) * sizeof *w);
    int k = 0;
    if (!b || !w) {
        free(b);
        free(w);
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c >= 0x80)) {
            i++;
            continue;
        }
        w[k++] = b + o;
        while (i < n && (isalnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80))
            b[o++] = (char)tolower((unsigned char)s[i++]);
        b[o++] = 0;
    }
    *words = w;
    *buf = b;
    return k;
}

lg_needle_score lg_needle_score_answer(const char *output, const char *answer)
{
    lg_needle_score r = {0, 0, 0};
    char *o = squeeze_lower(output), *a = squeeze_lower(answer);
    r.contains = o && a && *a && strstr(o, a) != NULL;
    free(o);
    free(a);
    char **ow = NULL, **aw = NULL, *ob = NULL, *ab = NULL;
    int no = split_words(output, &ow, &ob), na = split_words(answer, &aw, &ab);
    if (no >= 0 && na > 0) {
        int hit = 0;
        for (int i = 0; i < na; i++) /* each output word matches one answer word at most */
            for (int j = 0; j < no; j++)
                if (ow[j] && strcmp(aw[i], ow[j]) == 0) {
                    ow[j] = NULL;
                    hit++;
                    break;
                }
        r.overlap = (double)hit / na;
    }
    free(ow);
    free(ob);
    free(aw);
    free(ab);
    r.score = (r.contains + r.overlap) / 2;
    return r;
}

/* ---------------------------------------------------------------- running */

int lg_needle_grid_init(lg_needle_grid *g, const long *lengths, int n_lengths, const double *depths,
                        int n_depths, int max_new, lg_err *err)
{
    memset(g, 0, sizeof *g);
    if (n_lengths < 1 || n_depths < 1)
        return lg_err_set(err, "the grid needs at least one length and one depth");
    if (max_new < 1)
        return lg_err_set(err, "max_new must be >= 1, got %d", max_new);
    for (int i = 0; i < n_lengths; i++)
        if (lengths[i] < 1)
            return lg_err_set(err, "length %ld is not positive", lengths[i]);
    for (int i = 0; i < n_depths; i++)
        if (!(depths[i] >= 0 && depths[i] <= 100))
            return lg_err_set(err, "depth %g is outside 0..100 (percent)", depths[i]);
    g->lengths = malloc((size_t)n_lengths * sizeof *g->lengths);
    g->depths = malloc((size_t)n_depths * sizeof *g->depths);
    g->cells = calloc((size_t)n_lengths * (size_t)n_depths, sizeof *g->cells);
    if (!g->lengths || !g->depths || !g->cells) {
        lg_needle_grid_free(g);
        return lg_err_set(err, "out of memory");
    }
    memcpy(g->lengths, lengths, (size_t)n_lengths * sizeof *lengths);
    memcpy(g->depths, depths, (size_t)n_depths * sizeof *depths);
    g->n_lengths = n_lengths;
    g->n_depths = n_depths;
    g->max_new = max_new;
    for (int d = 0; d < n_depths; d++)
        for (int l = 0; l < n_lengths; l++) {
            lg_needle_cell *c = &g->cells[d * n_lengths + l];
            c->length = lengths[l];
            c->depth = depths[d];
            c->s.score = c->s.overlap = NAN;
        }
    return 0;
}

void lg_needle_grid_free(lg_needle_grid *g)
{
    if (!g)
        return;
    for (int i = 0; g->cells && i < g->n_lengths * g->n_depths; i++)
        free(g->cells[i].output);
    free(g->cells);
    free(g->lengths);
    free(g->depths);
    memset(g, 0, sizeof *g);
}

long lg_needle_overhead_tokens(const lg_tokenizer *t, const lg_needle_spec *spec, lg_err *err)
{
    size_t len;
    char *p = lg_needle_prompt_text(spec->needle, strlen(spec->needle), spec, &len);
    if (!p) {
        lg_err_set(err, "out of memory");
        return -1;
    }
    long n = count_tokens(t, p, len, 1, err);
    free(p);
    return n;
}

long lg_needle_haystack_tokens(long length, long overhead, int max_new, lg_err *err)
{
    /* the haystack may come out 1% longer than asked, and the needle and template may each gain a
     * token where they meet it: ask for less, so that the whole still fits the length */
    long n = (long)((double)(length - overhead - max_new - 2) / 1.01);
    if (n < 1)
        return lg_err_set(err, "length %ld leaves no room for a haystack: the prompt without it takes %ld "
                          "tokens and the answer %d", length, overhead, max_new);
    return n;
}

/* The greedy answer cut at EOS, or at the first line break after some text; spaces and line breaks
 * around it dropped. */
static char *answer_text(const lg_tokenizer *t, const int *ids, int n, lg_err *err)
{
    int keep = 0, seen_text = 0;
    for (; keep < n; keep++) {
        if (ids[keep] == lg_tokenizer_eos_id(t))
            break;
        const char *p = lg_tokenizer_piece(t, ids[keep]);
        int newline = p && strcmp(p, "<0x0A>") == 0;
        if (newline && seen_text)
            break;
        if (p && !newline && strcmp(p, "\xE2\x96\x81") != 0)
            seen_text = 1;
    }
    char *s = lg_tokenizer_decode(t, ids, keep, err);
    if (!s)
        return NULL;
    size_t a = 0, e = strlen(s);
    while (a < e && is_ws(s[a]))
        a++;
    while (e > a && is_ws(s[e - 1]))
        e--;
    memmove(s, s + a, e - a);
    s[e - a] = 0;
    return s;
}

int lg_needle_run_cell(lg_engine *s, const lg_tokenizer *t, const lg_haystack *h,
                       const lg_needle_spec *spec, double depth_pct, int max_new, lg_needle_cell *cell,
                       lg_err *err)
{
    double t0 = lg_now();
    long cut = lg_haystack_cut_at_depth(h, depth_pct);
    size_t hay_len = 0, len = 0;
    char *hay = lg_haystack_insert(h, cut, spec->needle, &hay_len, err);
    char *prompt = hay ? lg_needle_prompt_text(hay, hay_len, spec, &len) : NULL;
    int *ids = NULL, n = 0;
    int *out = malloc((size_t)max_new * sizeof *out);
    int rc = -1;
    if (hay && (!prompt || !out))
        lg_err_set(err, "out of memory");
    else if (prompt && lg_tokenizer_encode(t, prompt, len, 1, &ids, &n, err) == 0) {
        /* tokens before the needle: the intro and the haystack up to the cut */
        long before = count_tokens(t, prompt, strlen(NEEDLE_INTRO) + h->cut[cut], 1, err);
        /* the intro without its last space, which the haystack's first token carries */
        long intro = count_tokens(t, NEEDLE_INTRO, strlen(NEEDLE_INTRO) - 1, 1, err);
        if (before >= 0 && intro >= 0 && lg_engine_greedy(s, ids, n, max_new, out, err) == 0) {
            free(cell->output);
            cell->output = answer_text(t, out, max_new, err);
            rc = cell->output ? 0 : -1;
            cell->haystack_tokens = h->n_tokens;
            cell->prompt_tokens = n;
            cell->needle_token = before;
            /* at cut 0 the intro's last space stands alone before the needle */
            double d = cut == 0 ? 0 : 100.0 * (double)(before - intro) / (double)h->n_tokens;
            cell->needle_depth = d < 0 ? 0 : d > 100 ? 100 : d;
            if (rc == 0)
                cell->s = lg_needle_score_answer(cell->output, spec->answer);
        }
    }
    cell->seconds = lg_now() - t0;
    free(out);
    free(ids);
    free(prompt);
    free(hay);
    return rc;
}

int lg_needle_grid_run(lg_engine *s, const lg_tokenizer *t, const lg_corpus *c,
                       const lg_needle_spec *spec, lg_needle_grid *g, FILE *log, lg_err *err)
{
    long overhead = lg_needle_overhead_tokens(t, spec, err);
    if (overhead < 0)
        return -1;
    for (int l = 0; l < g->n_lengths; l++) {
        long want = lg_needle_haystack_tokens(g->lengths[l], overhead, g->max_new, err);
        lg_haystack h;
        if (want < 0 || lg_haystack_cut(c, t, want, &h, err) != 0)
            return -1;
        for (int d = 0; d < g->n_depths; d++) {
            lg_needle_cell *cell = &g->cells[d * g->n_lengths + l];
            if (lg_needle_run_cell(s, t, &h, spec, g->depths[d], g->max_new, cell, err) != 0) {
                lg_haystack_free(&h);
                return -1;
            }
            if (log) {
                char name[24];
                fprintf(log, "length %5s depth %5.1f%%: score %.2f (contains %d, overlap %.2f) %ld tokens, "
                        "%.1f s: \"%s\"\n", lg_length_name(cell->length, name), cell->depth, cell->s.score,
                        cell->s.contains, cell->s.overlap, cell->prompt_tokens, cell->seconds, cell->output);
                fflush(log);
            }
        }
        lg_haystack_free(&h);
    }
    return 0;
}

/* ---------------------------------------------------------------- outputs */

const char *lg_length_name(long n, char buf[24])
{
    if (n >= 1024 && n % 1024 == 0)
        snprintf(buf, 24, "%ldk", n / 1024);
    else
        snprintf(buf, 24, "%ld", n);
    return buf;
}

static double mean_score(const lg_needle_grid *g, int length_index)
{
    double sum = 0;
    int k = 0;
    for (int d = 0; d < g->n_depths; d++)
        for (int l = 0; l < g->n_lengths; l++)
            if ((length_index < 0 || l == length_index) && !isnan(g->cells[d * g->n_lengths + l].s.score)) {
                sum += g->cells[d * g->n_lengths + l].s.score;
                k++;
            }
    return k ? sum / k : NAN;
}

static void add_number_or_null(cJSON *o, const char *key, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, v);
}

cJSON *lg_needle_grid_json(const lg_needle_grid *g, const lg_needle_spec *spec, const char *model,
                           const char *haystack)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", model ? model : "");
    cJSON_AddStringToObject(j, "haystack", haystack ? haystack : "");
    cJSON_AddStringToObject(j, "needle", spec->needle);
    cJSON_AddStringToObject(j, "question", spec->question);
    cJSON_AddStringToObject(j, "answer", spec->answer);
    cJSON_AddStringToObject(j, "answer_prefix", spec->answer_prefix ? spec->answer_prefix : "");
    cJSON_AddNumberToObject(j, "max_new", g->max_new);
    cJSON *ls = cJSON_AddArrayToObject(j, "lengths"), *ds = cJSON_AddArrayToObject(j, "depths");
    for (int l = 0; l < g->n_lengths; l++)
        cJSON_AddItemToArray(ls, cJSON_CreateNumber((double)g->lengths[l]));
    for (int d = 0; d < g->n_depths; d++)
        cJSON_AddItemToArray(ds, cJSON_CreateNumber(g->depths[d]));
    cJSON *cells = cJSON_AddArrayToObject(j, "cells");
    for (int i = 0; i < g->n_lengths * g->n_depths; i++) {
        const lg_needle_cell *c = &g->cells[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "length", (double)c->length);
        cJSON_AddNumberToObject(o, "depth", c->depth);
        cJSON_AddNumberToObject(o, "haystack_tokens", (double)c->haystack_tokens);
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)c->prompt_tokens);
        cJSON_AddNumberToObject(o, "needle_token", (double)c->needle_token);
        cJSON_AddNumberToObject(o, "needle_depth", c->needle_depth);
        cJSON_AddStringToObject(o, "output", c->output ? c->output : "");
        cJSON_AddBoolToObject(o, "contains", c->s.contains);
        add_number_or_null(o, "overlap", c->s.overlap);
        add_number_or_null(o, "score", c->s.score);
        cJSON_AddNumberToObject(o, "seconds", c->seconds);
        cJSON_AddItemToArray(cells, o);
    }
    add_number_or_null(j, "mean_score", mean_score(g, -1));
    return j;
}

void lg_needle_grid_print(FILE *f, const lg_needle_grid *g)
{
    char name[24];
    fprintf(f, "depth \\ length");
    for (int l = 0; l < g->n_lengths; l++)
        fprintf(f, " %7s", lg_length_name(g->lengths[l], name));
    fprintf(f, "\n");
    for (int d = 0; d < g->n_depths; d++) {
        fprintf(f, "%13.1f%%", g->depths[d]);
        for (int l = 0; l < g->n_lengths; l++)
            fprintf(f, " %7.2f", g->cells[d * g->n_lengths + l].s.score);
        fprintf(f, "\n");
    }
    fprintf(f, "%14s", "mean");
    for (int l = 0; l < g->n_lengths; l++)
        fprintf(f, " %7.2f", mean_score(g, l));
    fprintf(f, "\nmean score %.3f over %d cells\n", mean_score(g, -1), g->n_lengths * g->n_depths);
}

int lg_needle_grid_svg(const char *path, const lg_needle_grid *g, const char *title, lg_err *err)
{
    size_t n_cells = (size_t)g->n_lengths * (size_t)g->n_depths;
    char (*names)[24] = malloc((size_t)(g->n_lengths + g->n_depths) * sizeof *names);
    const char **cols = malloc((size_t)g->n_lengths * sizeof *cols);
    const char **rows = malloc((size_t)g->n_depths * sizeof *rows);
    double *v = malloc(n_cells * sizeof *v);
    int rc;
    if (!names || !cols || !rows || !v) {
        rc = lg_err_set(err, "%s: out of memory", path);
    } else {
        for (int l = 0; l < g->n_lengths; l++)
            cols[l] = lg_length_name(g->lengths[l], names[l]);
        for (int d = 0; d < g->n_depths; d++) {
            snprintf(names[g->n_lengths + d], 24, "%g%%", g->depths[d]);
            rows[d] = names[g->n_lengths + d];
        }
        for (size_t i = 0; i < n_cells; i++)
            v[i] = g->cells[i].s.score;
        lg_heatmap h = {.title = title, .x_label = "context length (tokens)", .y_label = "needle depth",
                        .value_label = "score", .n_cols = g->n_lengths, .n_rows = g->n_depths,
                        .col_names = cols, .row_names = rows, .values = v};
        rc = lg_svg_heatmap_write(path, &h, err);
    }
    free(names);
    free(cols);
    free(rows);
    free(v);
    return rc;
}
