/* The Llama-2 tokenizer, written to give exactly the ids of sentencepiece's BPE model
 * (bpe_model.cc, normalizer.cc and SentencePieceProcessor::Decode of sentencepiece 0.1.9x-0.2.x),
 * checked against ids printed by sentencepiece in ../shared/fixtures/llama2-tokenizer. */
#include "tokenizer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sentencepiece_model.h"

static const char LG_REPLACEMENT_CHAR[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Tokenizer files are at most a few MB; a bigger one is not a tokenizer. */
#define LG_TOKENIZER_FILE_MAX ((size_t)1 << 30)
/* Each input byte becomes at most 3 normalized bytes ('▁' or U+FFFD), and symbol indices are int32. */
#define LG_TEXT_MAX (((size_t)INT32_MAX - 8) / 3)

/* ---------------------------------------------------------------- piece index: text -> id */

/* Open addressing over piece ids; the key bytes live in the model's text. */
typedef struct lg_piece_index {
    int32_t *slots; /* -1: empty */
    size_t mask;
} lg_piece_index;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a: pieces are short, so a bytewise hash is enough */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int32_t index_find(const lg_piece_index *ix, const lg_sp_model *m, const char *s, size_t n)
{
    for (size_t i = hash_bytes(s, n) & ix->mask;; i = (i + 1) & ix->mask) {
        int32_t id = ix->slots[i];
        if (id < 0)
            return -1;
        const lg_sp_piece *p = &m->pieces[id];
        if (p->len == n && memcmp(m->text + p->offset, s, n) == 0)
            return id;
    }
}

/* Fails on a piece defined twice, as sentencepiece's ModelInterface does ("... is already defined"). */
static int index_build(lg_piece_index *ix, const lg_sp_model *m, lg_err *err)
{
    size_t size = 16;
    while (size < (size_t)m->n_pieces * 2)
        size *= 2;
    ix->slots = malloc(size * sizeof *ix->slots);
    if (!ix->slots)
        return lg_err_set(err, "out of memory");
    memset(ix->slots, 0xff, size * sizeof *ix->slots);
    ix->mask = size - 1;
    for (int id = 0; id < m->n_pieces; id++) {
        const char *s = lg_sp_model_piece(m, id);
        size_t n = m->pieces[id].len;
        int32_t other = index_find(ix, m, s, n);
        if (other >= 0)
            return lg_err_set(err, "piece '%s' is defined twice (ids %d and %d)", s, other, id);
        size_t i = hash_bytes(s, n) & ix->mask;
        while (ix->slots[i] >= 0)
            i = (i + 1) & ix->mask;
        ix->slots[i] = id;
    }
    return 0;
}

/* ---------------------------------------------------------------- the tokenizer */

struct lg_tokenizer {
    char *source; /* the file it was read from */
    lg_sp_model model;
    lg_piece_index index;
    int32_t byte_ids[256]; /* id of <0xNN>; the unk id where a byte piece is missing */
    int unk_id, bos_id, eos_id;
    uint32_t max_merge_len; /* longest piece a merge can make, in bytes: longer pairs need no lookup */
    int32_t *user_defined;  /* USER_DEFINED ids: matched whole in the text and never merged */
    int n_user_defined;
    int has_unused; /* UNUSED pieces may be merged through but are split again on output */
    /* ASCII bytes that no mergeable piece of two or more characters contains ('\n' for Llama-2): no
     * merge can cross one, so the text is encoded a segment at a time, with the same result */
    uint8_t barrier[128];
};

static int is_mergeable(int type)
{
    /* sentencepiece's `pieces_` map: only these can be the result of a merge. CONTROL, UNKNOWN and
     * BYTE pieces live in its reserved map, so "<s>" in the text is never the BOS id. */
    return type == LG_SP_NORMAL || type == LG_SP_USER_DEFINED || type == LG_SP_UNUSED;
}

static const char *model_type_name(int type)
{
    switch (type) {
    case LG_SP_MODEL_UNIGRAM: return "UNIGRAM";
    case LG_SP_MODEL_BPE: return "BPE";
    case LG_SP_MODEL_WORD: return "WORD";
    case LG_SP_MODEL_CHAR: return "CHAR";
    default: return "unknown";
    }
}

/* Settings this encoder cannot reproduce are refused rather than tokenized differently. */
static int check_spec(const lg_sp_spec *s, lg_err *err)
{
    if (s->model_type != LG_SP_MODEL_BPE)
        return lg_err_set(err, "model_type is %s (%d): only BPE models (Llama-2's) are supported",
                          model_type_name(s->model_type), s->model_type);
    if (s->treat_whitespace_as_suffix)
        return lg_err_set(err, "treat_whitespace_as_suffix is set: not supported");
    if (s->charsmap_len)
        return lg_err_set(err, "normalizer_spec has a %zu-byte precompiled_charsmap: only the identity "
                               "normalizer (Llama-2's) is supported", s->charsmap_len);
    if (s->denorm_charsmap_len)
        return lg_err_set(err, "denormalizer_spec has a %zu-byte precompiled_charsmap: not supported",
                          s->denorm_charsmap_len);
    return 0;
}

/* The checks of sentencepiece's ModelInterface::InitializePieces: one UNKNOWN piece, byte pieces
 * well formed and all 256 present exactly when byte_fallback is on. Fills byte_ids and unk_id. */
static int check_pieces(lg_tokenizer *t, lg_err *err)
{
    const lg_sp_model *m = &t->model;
    int have_byte[256] = {0};
    t->unk_id = -1;
    for (int id = 0; id < m->n_pieces; id++) {
        const lg_sp_piece *p = &m->pieces[id];
        const char *s = lg_sp_model_piece(m, id);
        if (p->type == LG_SP_UNKNOWN) {
            if (t->unk_id >= 0)
                return lg_err_set(err, "pieces %d and %d are both of type UNKNOWN", t->unk_id, id);
            t->unk_id = id;
        } else if (p->type == LG_SP_BYTE) {
            int b = lg_sp_parse_byte_piece(s, p->len);
            if (b < 0)
                return lg_err_set(err, "byte piece %d '%s' is not of the form <0xNN>", id, s);
            if (!m->spec.byte_fallback)
                return lg_err_set(err, "byte piece %d '%s' found although byte_fallback is off", id, s);
            have_byte[b] = 1;
            t->byte_ids[b] = id;
        }
    }
    if (t->unk_id < 0)
        return lg_err_set(err, "no piece of type UNKNOWN (<unk>)");
    if (m->spec.unk_id >= 0 && m->spec.unk_id != t->unk_id)
        return lg_err_set(err, "trainer_spec.unk_id is %d but the UNKNOWN piece is id %d", m->spec.unk_id,
                          t->unk_id);
    for (int b = 0; b < 256; b++) {
        if (m->spec.byte_fallback && !have_byte[b])
            return lg_err_set(err, "byte_fallback is on but byte piece <0x%02X> is missing", b);
        if (!have_byte[b])
            t->byte_ids[b] = t->unk_id;
    }
    const int *ids[] = {&m->spec.bos_id, &m->spec.eos_id};
    const char *names[] = {"bos_id", "eos_id"};
    for (int i = 0; i < 2; i++)
        if (*ids[i] < -1 || *ids[i] >= m->n_pieces)
            return lg_err_set(err, "trainer_spec.%s %d is outside the %d pieces", names[i], *ids[i], m->n_pieces);
    t->bos_id = m->spec.bos_id;
    t->eos_id = m->spec.eos_id;
    return 0;
}

static void find_barriers(lg_tokenizer *t)
{
    const lg_sp_model *m = &t->model;
    /* With UNUSED pieces the split recorded for one depends on the order of pushes across the whole
     * text (sentencepiece's rev_merge), so such models are encoded in one piece. */
    memset(t->barrier, !t->has_unused, sizeof t->barrier);
    for (int id = 0; id < m->n_pieces; id++) {
        const lg_sp_piece *p = &m->pieces[id];
        if (!is_mergeable(p->type) || p->len < 2)
            continue;
        const uint8_t *s = (const uint8_t *)m->text + p->offset;
        for (uint32_t i = 0; i < p->len; i++)
            if (s[i] < 128)
                t->barrier[s[i]] = 0;
    }
}

static int collect_merge_info(lg_tokenizer *t, lg_err *err)
{
    const lg_sp_model *m = &t->model;
    for (int id = 0; id < m->n_pieces; id++) {
        const lg_sp_piece *p = &m->pieces[id];
        if (is_mergeable(p->type) && p->len > t->max_merge_len)
            t->max_merge_len = p->len;
        if (p->type == LG_SP_UNUSED)
            t->has_unused = 1;
        if (p->type == LG_SP_USER_DEFINED) {
            int32_t *u = realloc(t->user_defined, (size_t)(t->n_user_defined + 1) * sizeof *u);
            if (!u)
                return lg_err_set(err, "out of memory");
            t->user_defined = u;
            u[t->n_user_defined++] = id;
        }
    }
    find_barriers(t);
    return 0;
}

/* ---------------------------------------------------------------- reading files */

/* The whole file, NUL-terminated, in a malloc'd buffer; NULL with err set (without the path). */
static char *read_whole_file(const char *path, size_t *n, lg_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        lg_err_set(err, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
        lg_err_set(err, "not a regular file");
    else if ((size_t)st.st_size > LG_TOKENIZER_FILE_MAX)
        lg_err_set(err, "%lld bytes is too large for a tokenizer file", (long long)st.st_size);
    else if (!(buf = malloc((size_t)st.st_size + 1)))
        lg_err_set(err, "out of memory");
    size_t size = buf ? (size_t)st.st_size : 0;
    size_t got = buf ? fread(buf, 1, size, f) : 0;
    fclose(f);
    if (buf && got != size) {
        lg_err_set(err, "read %zu of %zu bytes", got, size);
        free(buf);
        buf = NULL;
    }
    if (!buf)
        return NULL;
    buf[size] = 0;
    *n = size;
    return buf;
}

/* ---------------------------------------------------------------- loading */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A directory means DIR/tokenizer.model, else DIR/tokenizer.json. Returns a malloc'd path. */
static char *resolve_path(const char *path, lg_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        lg_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t n = strlen(path) + 32;
    char *file = malloc(n);
    if (!file) {
        lg_err_set(err, "out of memory");
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(file, n, "%s", path);
        return file;
    }
    static const char *names[] = {"tokenizer.model", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(file, n, "%s/%s", path, names[i]);
        if (stat(file, &st) == 0)
            return file;
    }
    free(file);
    lg_err_set(err, "%s: no tokenizer.model or tokenizer.json in this directory", path);
    return NULL;
}

/* Parses a file's bytes into t->model and builds the encoder's tables; the caller adds the file
 * name to errors. */
static int build_model(lg_tokenizer *t, const char *data, size_t n, int is_json, lg_err *err)
{
    int rc = is_json ? lg_sp_model_read_hf_json(&t->model, data, n, err)
                     : lg_sp_model_read_proto(&t->model, (const uint8_t *)data, n, err);
    if (rc == 0)
        rc = check_spec(&t->model.spec, err);
    if (rc == 0)
        rc = index_build(&t->index, &t->model, err);
    if (rc == 0)
        rc = check_pieces(t, err);
    if (rc == 0)
        rc = collect_merge_info(t, err);
    return rc;
}

static int load_model(lg_tokenizer *t, const char *file, lg_err *err)
{
    size_t n = 0;
    char *data = read_whole_file(file, &n, err);
    if (!data)
        return -1;
    int rc = build_model(t, data, n, has_suffix(file, ".json"), err);
    free(data);
    return rc;
}

lg_tokenizer *lg_tokenizer_load(const char *path, lg_err *err)
{
    char *file = resolve_path(path, err);
    if (!file)
        return NULL;
    lg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        free(file);
        lg_err_set(err, "out of memory");
        return NULL;
    }
    t->source = file;
    lg_sp_model_init(&t->model);
    int rc = load_model(t, file, err);
    if (rc != 0) {
        lg_err_prefix(err, "%s", file);
        lg_tokenizer_free(t);
        return NULL;
    }
    return t;
}

lg_tokenizer *lg_tokenizer_load_memory(const char *data, size_t n, int is_json, const char *label,
                                       lg_err *err)
{
    lg_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->source = strdup(label))) {
        free(t);
        lg_err_set(err, "%s: out of memory", label);
        return NULL;
    }
    lg_sp_model_init(&t->model);
    if (build_model(t, data, n, is_json, err) != 0) {
        lg_err_prefix(err, "%s", label);
        lg_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void lg_tokenizer_free(lg_tokenizer *t)
{
    if (!t)
        return;
    lg_sp_model_free(&t->model);
    free(t->index.slots);
    free(t->user_defined);
    free(t->source);
    free(t);
}

const char *lg_tokenizer_source(const lg_tokenizer *t)
{
    return t->source;
}

int lg_tokenizer_vocab_size(const lg_tokenizer *t)
{
    return t->model.n_pieces;
}

int lg_tokenizer_bos_id(const lg_tokenizer *t)
{
    return t->bos_id;
}

int lg_tokenizer_eos_id(const lg_tokenizer *t)
{
    return t->eos_id;
}

int lg_tokenizer_unk_id(const lg_tokenizer *t)
{
    return t->unk_id;
}

const char *lg_tokenizer_piece(const lg_tokenizer *t, int id)
{
    if (id < 0 || id >= t->model.n_pieces)
        return NULL;
    return lg_sp_model_piece(&t->model, id);
}

/* ---------------------------------------------------------------- UTF-8 */

static int is_trail(uint8_t b)
{
    return (b & 0xC0) == 0x80;
}

/* Length of the valid UTF-8 character at s (n > 0 bytes left), or 0 when it is malformed: truncated,
 * overlong, a surrogate or past U+10FFFF (sentencepiece's string_util::DecodeUTF8 rules). */
static size_t utf8_valid_len(const uint8_t *s, size_t n)
{
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xE0) == 0xC0) {
        if (n < 2 || !is_trail(s[1]))
            return 0;
        cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((s[0] & 0xF0) == 0xE0) {
        if (n < 3 || !is_trail(s[1]) || !is_trail(s[2]))
            return 0;
        cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000) ? 3 : 0;
    }
    if ((s[0] & 0xF8) == 0xF0) {
        if (n < 4 || !is_trail(s[1]) || !is_trail(s[2]) || !is_trail(s[3]))
            return 0;
        cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
             (s[3] & 0x3F);
        return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

/* Length of the character at s by its lead byte alone (normalized text is valid UTF-8). */
static size_t utf8_char_len(const uint8_t *s, size_t n)
{
    size_t len = s[0] < 0xC0 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
    return len < n ? len : n;
}

/* ---------------------------------------------------------------- normalization */

static size_t put_space(char *out, size_t o, int escape)
{
    if (!escape) {
        out[o] = ' ';
        return o + 1;
    }
    memcpy(out + o, LG_SP_SPACE, LG_SP_SPACE_LEN);
    return o + LG_SP_SPACE_LEN;
}

/* sentencepiece's Normalizer::Normalize with an empty charsmap (the identity, Llama-2's): invalid
 * UTF-8 bytes become U+FFFD one byte at a time, ' ' becomes '▁', a '▁' goes in front
 * (add_dummy_prefix), and remove_extra_whitespaces strips and squeezes spaces. `out` must hold
 * 3 * len + 3 bytes. Returns the normalized length (0 for empty or, with stripping, all-space text). */
static size_t normalize(const lg_sp_spec *spec, const uint8_t *text, size_t len, char *out)
{
    const int squeeze = spec->remove_extra_whitespaces, escape = spec->escape_whitespaces;
    size_t i = 0, o = 0;
    if (squeeze)
        while (i < len && text[i] == ' ')
            i++;
    if (i == len)
        return 0;
    if (spec->add_dummy_prefix)
        o = put_space(out, o, escape);
    int prev_space = squeeze;
    while (i < len) {
        size_t n = utf8_valid_len(text + i, len - i);
        const uint8_t *c = text + i;
        size_t clen = n;
        if (n == 0) {
            c = (const uint8_t *)LG_REPLACEMENT_CHAR;
            clen = 3;
            n = 1;
        }
        if (!(prev_space && c[0] == ' ')) {
            for (size_t k = 0; k < clen; k++) {
                if (c[k] == ' ' && escape)
                    o = put_space(out, o, escape);
                else
                    out[o++] = (char)c[k];
            }
            prev_space = c[clen - 1] == ' ';
        }
        if (!squeeze)
            prev_space = 0;
        i += n;
    }
    if (squeeze) {
        size_t sp = escape ? LG_SP_SPACE_LEN : 1;
        const char *space = escape ? LG_SP_SPACE : " ";
        while (o >= sp && memcmp(out + o - sp, space, sp) == 0)
            o -= sp;
    }
    return o;
}

/* ---------------------------------------------------------------- BPE (sentencepiece's bpe_model.cc) */

/* A span of the normalized text, linked to its live neighbours. A merge grows the left symbol and
 * empties the right one (len 0). */
typedef struct lg_bpe_symbol {
    int32_t prev, next;
    uint32_t start, len;
} lg_bpe_symbol;

/* A candidate merge of symbol `left` with its next neighbour into a piece of `size` bytes. The right
 * symbol is not stored: symbols only grow, so the pair is still valid exactly when left and its next
 * have the lengths they had when it was pushed (sentencepiece's check, with right = left.next). */
typedef struct lg_bpe_pair {
    float score;
    int32_t left;
    uint32_t size;
} lg_bpe_pair;

typedef struct lg_bpe {
    const lg_tokenizer *t;
    const char *text; /* normalized */
    lg_bpe_symbol *sym;
    int32_t n_sym;
    uint8_t *frozen; /* user-defined symbols, never merged; NULL when the model has none */
    lg_bpe_pair *heap;
    size_t heap_n, heap_cap;
    /* For UNUSED pieces, per id: the length of the left half of the last pair pushed that makes the
     * piece (sentencepiece's rev_merge; 0: none), to take the piece apart again on output. NULL when
     * the model has no UNUSED piece. */
    uint32_t *split_left;
    int *out;
    int n_out;
    int prev_unk; /* the last id emitted was <unk> (consecutive ones are merged) */
} lg_bpe;

/* Higher score first; equal scores: the leftmost pair (sentencepiece's SymbolPairComparator). */
static int pair_before(const lg_bpe_pair *a, const lg_bpe_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(lg_bpe *b, lg_bpe_pair p, lg_err *err)
{
    if (b->heap_n == b->heap_cap) {
        size_t cap = b->heap_cap ? b->heap_cap * 2 : 1024;
        lg_bpe_pair *h = realloc(b->heap, cap * sizeof *h);
        if (!h)
            return lg_err_set(err, "out of memory (%zu merge candidates)", cap);
        b->heap = h;
        b->heap_cap = cap;
    }
    size_t i = b->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &b->heap[parent]))
            break;
        b->heap[i] = b->heap[parent];
        i = parent;
    }
    b->heap[i] = p;
    return 0;
}

static lg_bpe_pair heap_pop(lg_bpe *b)
{
    lg_bpe_pair top = b->heap[0], last = b->heap[--b->heap_n];
    size_t i = 0, n = b->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_before(&b->heap[c + 1], &b->heap[c]))
            c++;
        if (!pair_before(&b->heap[c], &last))
            break;
        b->heap[i] = b->heap[c];
        i = c;
    }
    if (n)
        b->heap[i] = last;
    return top;
}

/* Pushes the merge of left with right when their concatenation is a piece a merge may make. */
static int maybe_add_pair(lg_bpe *b, int32_t left, int32_t right, lg_err *err)
{
    if (left < 0 || right < 0 || (b->frozen && (b->frozen[left] || b->frozen[right])))
        return 0;
    const lg_tokenizer *t = b->t;
    const lg_bpe_symbol *l = &b->sym[left];
    uint32_t size = l->len + b->sym[right].len;
    if (size > t->max_merge_len)
        return 0;
    int32_t id = index_find(&t->index, &t->model, b->text + l->start, size);
    if (id < 0 || !is_mergeable(t->model.pieces[id].type))
        return 0;
    if (t->model.pieces[id].type == LG_SP_UNUSED)
        b->split_left[id] = l->len;
    lg_bpe_pair p = {t->model.pieces[id].score, left, size};
    return heap_push(b, p, err);
}

/* Longest user-defined piece at s (n bytes left), 0 if none. */
static size_t match_user_defined(const lg_tokenizer *t, const char *s, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < t->n_user_defined; i++) {
        const lg_sp_piece *p = &t->model.pieces[t->user_defined[i]];
        if (p->len <= n && p->len > best && memcmp(s, t->model.text + p->offset, p->len) == 0)
            best = p->len;
    }
    return best;
}

/* One symbol per character, or per user-defined piece (frozen). */
static void split_symbols(lg_bpe *b, size_t n)
{
    size_t pos = 0;
    int32_t k = 0;
    while (pos < n) {
        size_t len = b->frozen ? match_user_defined(b->t, b->text + pos, n - pos) : 0;
        if (b->frozen)
            b->frozen[k] = len > 0;
        if (len == 0)
            len = utf8_char_len((const uint8_t *)b->text + pos, n - pos);
        b->sym[k] = (lg_bpe_symbol){k - 1, -1, (uint32_t)pos, (uint32_t)len};
        if (k > 0)
            b->sym[k - 1].next = k;
        pos += len;
        k++;
    }
    b->n_sym = k;
}

static int merge_all(lg_bpe *b, lg_err *err)
{
    for (int32_t i = 1; i < b->n_sym; i++)
        if (maybe_add_pair(b, i - 1, i, err))
            return -1;
    while (b->heap_n) {
        lg_bpe_pair top = heap_pop(b);
        lg_bpe_symbol *l = &b->sym[top.left];
        if (l->len == 0 || l->next < 0 || l->len + b->sym[l->next].len != top.size)
            continue; /* stale: one side was merged since this pair was pushed */
        lg_bpe_symbol *r = &b->sym[l->next];
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0)
            b->sym[r->next].prev = top.left;
        r->len = 0;
        if (maybe_add_pair(b, l->prev, top.left, err) || maybe_add_pair(b, top.left, l->next, err))
            return -1;
    }
    return 0;
}

/* SentencePieceProcessor::PopulateSentencePieceText: an unknown symbol becomes its UTF-8 bytes
 * (byte_fallback) or <unk>, and a run of unknown symbols a single <unk>. */
static void emit_id(lg_bpe *b, int32_t id, uint32_t start, uint32_t len)
{
    const lg_tokenizer *t = b->t;
    int is_unk = id < 0 || id == t->unk_id;
    if (is_unk && t->model.spec.byte_fallback) {
        for (uint32_t i = 0; i < len; i++)
            b->out[b->n_out++] = t->byte_ids[(uint8_t)b->text[start + i]];
    } else if (!(is_unk && b->prev_unk)) {
        b->out[b->n_out++] = is_unk ? t->unk_id : id;
    }
    b->prev_unk = is_unk;
}

/* Emits the ids of one final symbol: its piece, or an UNUSED piece split back into the pieces it was
 * merged from (sentencepiece's resegment). */
static void emit_symbol(lg_bpe *b, uint32_t start, uint32_t len)
{
    const lg_tokenizer *t = b->t;
    int32_t id = index_find(&t->index, &t->model, b->text + start, len);
    if (id >= 0 && t->model.pieces[id].type == LG_SP_UNUSED && b->split_left[id]) {
        /* the recorded split is of the same text, so both halves are inside [start, start + len) */
        uint32_t left = b->split_left[id];
        emit_symbol(b, start, left);
        emit_symbol(b, start + left, len - left);
        return;
    }
    emit_id(b, id, start, len);
}

static void bpe_free(lg_bpe *b)
{
    free(b->sym);
    free(b->frozen);
    free(b->heap);
    free(b->split_left);
}

/* End of the segment that starts at s: just past the next barrier byte, or n. */
static size_t segment_end(const lg_tokenizer *t, const char *text, size_t s, size_t n)
{
    while (s < n) {
        uint8_t c = (uint8_t)text[s++];
        if (c < 128 && t->barrier[c])
            break;
    }
    return s;
}

static size_t longest_segment(const lg_tokenizer *t, const char *text, size_t n)
{
    size_t longest = 0;
    for (size_t s = 0, e; s < n; s = e) {
        e = segment_end(t, text, s, n);
        longest = e - s > longest ? e - s : longest;
    }
    return longest;
}

/* Encodes normalized text (n > 0 bytes) appending to out, which has room for n more ids. */
static int bpe_encode(const lg_tokenizer *t, const char *text, size_t n, int *out, int *n_out, lg_err *err)
{
    lg_bpe b = {.t = t, .out = out, .n_out = *n_out};
    size_t max_symbols = longest_segment(t, text, n);
    b.sym = malloc(max_symbols * sizeof *b.sym);
    b.frozen = t->n_user_defined ? calloc(max_symbols, 1) : NULL;
    b.split_left = t->has_unused ? calloc((size_t)t->model.n_pieces, sizeof *b.split_left) : NULL;
    if (!b.sym || (t->n_user_defined && !b.frozen) || (t->has_unused && !b.split_left)) {
        bpe_free(&b);
        return lg_err_set(err, "out of memory encoding %zu bytes", n);
    }
    int rc = 0;
    for (size_t s = 0, e; rc == 0 && s < n; s = e) {
        e = segment_end(t, text, s, n);
        b.text = text + s;
        b.heap_n = 0;
        split_symbols(&b, e - s);
        rc = merge_all(&b, err);
        for (int32_t i = 0; rc == 0 && i >= 0; i = b.sym[i].next)
            emit_symbol(&b, b.sym[i].start, b.sym[i].len);
    }
    *n_out = b.n_out;
    bpe_free(&b);
    return rc;
}

int lg_tokenizer_encode(const lg_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                        int *n_ids, lg_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (add_bos && t->bos_id < 0)
        return lg_err_set(err, "%s: the tokenizer has no BOS piece", t->source);
    if (len > LG_TEXT_MAX)
        return lg_err_set(err, "text of %zu bytes is too long to encode (limit %zu)", len, LG_TEXT_MAX);
    char *norm = malloc(3 * len + 3);
    if (!norm)
        return lg_err_set(err, "out of memory encoding %zu bytes", len);
    size_t n = normalize(&t->model.spec, (const uint8_t *)text, len, norm);
    /* every id covers at least one normalized byte, so n + 1 (BOS) ids is enough */
    int *out = malloc((n + 1) * sizeof *out);
    if (!out) {
        free(norm);
        return lg_err_set(err, "out of memory encoding %zu bytes", len);
    }
    int count = 0;
    if (add_bos)
        out[count++] = t->bos_id;
    int rc = n ? bpe_encode(t, norm, n, out, &count, err) : 0;
    free(norm);
    if (rc) {
        free(out);
        return -1;
    }
    *ids = out;
    *n_ids = count;
    return 0;
}

/* ---------------------------------------------------------------- decoding */

typedef struct lg_strbuf {
    char *p;
    size_t n, cap;
    int oom;
} lg_strbuf;

static void strbuf_put(lg_strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* A run of byte pieces: each valid UTF-8 character as is, each byte that starts none as U+FFFD. */
static void put_bytes(lg_strbuf *out, const uint8_t *bytes, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t len = utf8_valid_len(bytes + i, n - i);
        if (len == 0)
            strbuf_put(out, LG_REPLACEMENT_CHAR, 3);
        else
            strbuf_put(out, (const char *)bytes + i, len);
        i += len ? len : 1;
    }
}

/* A non-byte piece; returns whether it consumed the text's leading '▁' (sentencepiece's bos_ws). */
static int put_piece(const lg_tokenizer *t, lg_strbuf *out, int id, int strip_leading_space)
{
    const lg_sp_model *m = &t->model;
    const lg_sp_piece *p = &m->pieces[id];
    if (p->type == LG_SP_CONTROL)
        return 0;
    if (p->type == LG_SP_UNKNOWN) {
        const char *s = lg_sp_model_unk_surface(m);
        strbuf_put(out, s, strlen(s));
        return 0;
    }
    const char *s = m->text + p->offset, *end = s + p->len;
    int stripped = 0;
    if (strip_leading_space && (m->spec.add_dummy_prefix || m->spec.remove_extra_whitespaces) &&
        p->len >= LG_SP_SPACE_LEN && memcmp(s, LG_SP_SPACE, LG_SP_SPACE_LEN) == 0) {
        s += LG_SP_SPACE_LEN;
        /* with remove_extra_whitespaces every leading '▁' goes, so the next may be stripped too */
        stripped = !m->spec.remove_extra_whitespaces;
    }
    while (s < end) {
        const char *sp = end - s >= LG_SP_SPACE_LEN ? memmem(s, (size_t)(end - s), LG_SP_SPACE, LG_SP_SPACE_LEN) : NULL;
        const char *stop = sp ? sp : end;
        strbuf_put(out, s, (size_t)(stop - s));
        if (!sp)
            break;
        strbuf_put(out, " ", 1);
        s = sp + LG_SP_SPACE_LEN;
    }
    return stripped;
}

char *lg_tokenizer_decode(const lg_tokenizer *t, const int *ids, int n_ids, lg_err *err)
{
    return lg_tokenizer_decode_len(t, ids, n_ids, NULL, err);
}

char *lg_tokenizer_decode_len(const lg_tokenizer *t, const int *ids, int n_ids, size_t *len, lg_err *err)
{
    const lg_sp_model *m = &t->model;
    if (n_ids < 0) {
        lg_err_set(err, "decode: negative id count %d", n_ids);
        return NULL;
    }
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= m->n_pieces) {
            lg_err_set(err, "decode: id %d at position %d is outside the vocabulary [0, %d)", ids[i], i,
                       m->n_pieces);
            return NULL;
        }
    }
    lg_strbuf out = {0};
    strbuf_put(&out, "", 0);
    uint8_t *bytes = malloc((size_t)n_ids + 1); /* the pending run of byte pieces */
    size_t n_bytes = 0;
    if (!bytes)
        out.oom = 1;
    /* sentencepiece drops the leading '▁' of the first piece that has text, once */
    int is_bos_ws = 1, bos_ws_seen = 0;
    for (int i = 0; i < n_ids && !out.oom; i++) {
        const lg_sp_piece *p = &m->pieces[ids[i]];
        if (p->type == LG_SP_BYTE) {
            bytes[n_bytes++] = (uint8_t)lg_sp_parse_byte_piece(m->text + p->offset, p->len);
            continue;
        }
        put_bytes(&out, bytes, n_bytes);
        n_bytes = 0;
        if (bos_ws_seen || out.n > 0)
            is_bos_ws = 0;
        bos_ws_seen = put_piece(t, &out, ids[i], is_bos_ws);
    }
    put_bytes(&out, bytes, n_bytes);
    free(bytes);
    if (out.oom) {
        free(out.p);
        lg_err_set(err, "out of memory decoding %d ids", n_ids);
        return NULL;
    }
    if (len)
        *len = out.n;
    return out.p;
}
