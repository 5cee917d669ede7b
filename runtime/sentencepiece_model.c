#include "sentencepiece_model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the model struct */

/* sentencepiece's default unk_surface: " ⁇ " (U+2047 between spaces) */
static const char LG_SP_DEFAULT_UNK_SURFACE[] = " \xE2\x81\x87 ";

/* No tokenizer has this many pieces; a count past it means a corrupt file, not a big vocabulary. */
#define LG_SP_MAX_PIECES (1 << 24)

void lg_sp_model_init(lg_sp_model *m)
{
    memset(m, 0, sizeof *m);
    /* Llama-2's tokenizer.model values (printed from its trainer_spec and normalizer_spec). */
    m->spec.model_type = LG_SP_MODEL_BPE;
    m->spec.byte_fallback = 1;
    m->spec.unk_id = -1; /* the UNKNOWN piece decides, as in sentencepiece; a given unk_id must agree */
    m->spec.bos_id = 1;
    m->spec.eos_id = 2;
    m->spec.treat_whitespace_as_suffix = 0;
    m->spec.add_dummy_prefix = 1;
    m->spec.remove_extra_whitespaces = 0;
    m->spec.escape_whitespaces = 1;
}

const char *lg_sp_model_unk_surface(const lg_sp_model *m)
{
    return m->spec.unk_surface ? m->spec.unk_surface : LG_SP_DEFAULT_UNK_SURFACE;
}

void lg_sp_model_free(lg_sp_model *m)
{
    if (!m)
        return;
    free(m->pieces);
    free(m->text);
    free(m->spec.unk_surface);
    memset(m, 0, sizeof *m);
}

/* Returns buf with room for `need` elements (doubling *cap), or NULL when out of memory (buf is then
 * still valid). */
static void *grow(void *buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return buf;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p = cap2 <= SIZE_MAX / elem ? realloc(buf, cap2 * elem) : NULL;
    if (p)
        *cap = cap2;
    return p;
}

int lg_sp_model_add_piece(lg_sp_model *m, const char *piece, size_t len, float score, int type,
                          lg_err *err)
{
    if (m->n_pieces >= LG_SP_MAX_PIECES)
        return lg_err_set(err, "more than %d pieces", LG_SP_MAX_PIECES);
    if (len == 0) /* sentencepiece refuses these too ("piece must not be empty") */
        return lg_err_set(err, "piece %d is empty", m->n_pieces);
    /* offsets are uint32: the text of all pieces must stay below 4 GiB */
    if (len > UINT32_MAX - 1 || m->text_len + len + 1 > UINT32_MAX)
        return lg_err_set(err, "piece text too large");
    lg_sp_piece *pieces = grow(m->pieces, &m->pieces_cap, (size_t)m->n_pieces + 1, sizeof *m->pieces);
    if (pieces)
        m->pieces = pieces;
    char *text = grow(m->text, &m->text_cap, m->text_len + len + 1, 1);
    if (text)
        m->text = text;
    if (!pieces || !text)
        return lg_err_set(err, "out of memory (%d pieces)", m->n_pieces);
    lg_sp_piece *p = &m->pieces[m->n_pieces++];
    p->offset = (uint32_t)m->text_len;
    p->len = (uint32_t)len;
    p->score = score;
    p->type = type;
    memcpy(m->text + m->text_len, piece, len);
    m->text[m->text_len + len] = 0;
    m->text_len += len + 1;
    return 0;
}

/* "<0x0A>" -> 10; -1 when s is not exactly that form (upper-case hex, as sentencepiece writes it). */
int lg_sp_parse_byte_piece(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    const char *hi = memchr(hex, s[3], 16), *lo = memchr(hex, s[4], 16);
    if (!hi || !lo)
        return -1;
    return (int)((hi - hex) * 16 + (lo - hex));
}

/* ---------------------------------------------------------------- protobuf wire format */

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_BYTES = 2, PB_GROUP_START = 3, PB_GROUP_END = 4, PB_FIXED32 = 5 };

/* A cursor over one message: [p, end) inside the file that starts at base (for byte offsets in
 * messages). `what` names the message for errors ("ModelProto", "piece 17", "trainer_spec"). */
typedef struct pb_reader {
    const uint8_t *base, *p, *end;
    const char *what;
} pb_reader;

static size_t pb_offset(const pb_reader *r)
{
    return (size_t)(r->p - r->base);
}

static int pb_varint(pb_reader *r, uint64_t *v, lg_err *err)
{
    size_t at = pb_offset(r);
    uint64_t x = 0;
    *v = 0;
    /* a varint is at most 10 bytes (64 bits, 7 per byte) */
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return lg_err_set(err, "%s: varint at byte %zu runs past the end of the message", r->what, at);
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return lg_err_set(err, "%s: varint at byte %zu is longer than 10 bytes", r->what, at);
}

/* Reads a field key; 1 when the message is exhausted, 0 when a key was read, -1 on error. */
static int pb_key(pb_reader *r, uint32_t *field, int *wire, lg_err *err)
{
    if (r->p >= r->end)
        return 1;
    size_t at = pb_offset(r);
    uint64_t key = 0;
    if (pb_varint(r, &key, err))
        return -1;
    if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return lg_err_set(err, "%s: field key at byte %zu has invalid field number %llu", r->what, at,
                          (unsigned long long)(key >> 3));
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    return 0;
}

static int pb_bytes(pb_reader *r, const uint8_t **data, size_t *n, lg_err *err)
{
    size_t at = pb_offset(r);
    *data = r->p;
    *n = 0;
    uint64_t len = 0;
    if (pb_varint(r, &len, err))
        return -1;
    size_t left = (size_t)(r->end - r->p);
    if (len > left)
        return lg_err_set(err, "%s: length %llu at byte %zu runs past the end of the message (%zu bytes left)",
                          r->what, (unsigned long long)len, at, left);
    *data = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int pb_fixed(pb_reader *r, size_t width, uint64_t *v, lg_err *err)
{
    *v = 0;
    if ((size_t)(r->end - r->p) < width)
        return lg_err_set(err, "%s: %zu-byte value at byte %zu runs past the end of the message", r->what,
                          width, pb_offset(r));
    uint64_t x = 0;
    for (size_t i = 0; i < width; i++) /* little-endian on the wire, whatever the host is */
        x |= (uint64_t)r->p[i] << (8 * i);
    r->p += width;
    *v = x;
    return 0;
}

static int pb_skip(pb_reader *r, uint32_t field, int wire, lg_err *err)
{
    uint64_t v = 0;
    const uint8_t *d;
    size_t n;
    switch (wire) {
    case PB_VARINT:
        return pb_varint(r, &v, err);
    case PB_FIXED64:
        return pb_fixed(r, 8, &v, err);
    case PB_BYTES:
        return pb_bytes(r, &d, &n, err);
    case PB_FIXED32:
        return pb_fixed(r, 4, &v, err);
    default:
        /* groups (3, 4) are deprecated and never written by sentencepiece; 6 and 7 do not exist */
        return lg_err_set(err, "%s: field %u at byte %zu has unsupported wire type %d", r->what, field,
                          pb_offset(r), wire);
    }
}

/* Known fields must come with the wire type their declaration implies. */
static int pb_expect(const pb_reader *r, uint32_t field, const char *name, int wire, int want, lg_err *err)
{
    if (wire == want)
        return 0;
    return lg_err_set(err, "%s: field %u (%s) at byte %zu has wire type %d, expected %d", r->what, field, name,
                      pb_offset(r), wire, want);
}

static pb_reader pb_sub(const pb_reader *parent, const uint8_t *data, size_t n, const char *what)
{
    pb_reader r = {parent->base, data, data + n, what};
    return r;
}

/* proto int32 fields are varints of the sign-extended 64-bit value: -1 is 10 bytes of 0xff.. */
static int32_t pb_int32(uint64_t v)
{
    return (int32_t)(uint32_t)v;
}

/* ---------------------------------------------------------------- ModelProto messages */

/* ModelProto.SentencePiece: piece = 1 (string), score = 2 (float), type = 3 (enum, default NORMAL). */
static int read_piece(lg_sp_model *m, pb_reader *r, lg_err *err)
{
    const uint8_t *text = (const uint8_t *)"";
    size_t len = 0;
    float score = 0;
    int type = LG_SP_NORMAL;
    uint32_t field = 0;
    int wire = 0, rc;
    while ((rc = pb_key(r, &field, &wire, err)) == 0) {
        uint64_t v = 0;
        if (field == 1) {
            if (pb_expect(r, field, "piece", wire, PB_BYTES, err) || pb_bytes(r, &text, &len, err))
                return -1;
        } else if (field == 2) {
            if (pb_expect(r, field, "score", wire, PB_FIXED32, err) || pb_fixed(r, 4, &v, err))
                return -1;
            uint32_t bits = (uint32_t)v;
            memcpy(&score, &bits, sizeof score);
            if (score != score) /* NaN would leave the merge order undefined */
                return lg_err_set(err, "%s: score is NaN", r->what);
        } else if (field == 3) {
            size_t at = pb_offset(r);
            if (pb_expect(r, field, "type", wire, PB_VARINT, err) || pb_varint(r, &v, err))
                return -1;
            if (v < LG_SP_NORMAL || v > LG_SP_BYTE)
                return lg_err_set(err, "%s: type %llu at byte %zu is not a SentencePiece type (1-6)", r->what,
                                  (unsigned long long)v, at);
            type = (int)v;
        } else if (pb_skip(r, field, wire, err)) {
            return -1;
        }
    }
    if (rc < 0)
        return -1;
    return lg_sp_model_add_piece(m, (const char *)text, len, score, type, err);
}

static int read_varint_field(pb_reader *r, uint32_t field, const char *name, int wire, uint64_t *v, lg_err *err)
{
    return pb_expect(r, field, name, wire, PB_VARINT, err) || pb_varint(r, v, err) ? -1 : 0;
}

static int set_unk_surface(lg_sp_model *m, const uint8_t *s, size_t n, lg_err *err)
{
    char *copy = malloc(n + 1);
    if (!copy)
        return lg_err_set(err, "out of memory");
    memcpy(copy, s, n);
    copy[n] = 0;
    free(m->spec.unk_surface);
    m->spec.unk_surface = copy;
    return 0;
}

/* TrainerSpec: model_type = 3, treat_whitespace_as_suffix = 24, byte_fallback = 35, unk_id = 40,
 * bos_id = 41, eos_id = 42, unk_surface = 44 (numbers from sentencepiece_model.proto). */
static int read_trainer_spec(lg_sp_model *m, pb_reader *r, lg_err *err)
{
    uint32_t field = 0;
    int wire = 0, rc;
    while ((rc = pb_key(r, &field, &wire, err)) == 0) {
        uint64_t v = 0;
        const uint8_t *s;
        size_t n;
        switch (field) {
        case 3:
            if (read_varint_field(r, field, "model_type", wire, &v, err))
                return -1;
            m->spec.model_type = pb_int32(v);
            break;
        case 24:
            if (read_varint_field(r, field, "treat_whitespace_as_suffix", wire, &v, err))
                return -1;
            m->spec.treat_whitespace_as_suffix = v != 0;
            break;
        case 35:
            if (read_varint_field(r, field, "byte_fallback", wire, &v, err))
                return -1;
            m->spec.byte_fallback = v != 0;
            break;
        case 40:
        case 41:
        case 42: {
            static const char *names[] = {"unk_id", "bos_id", "eos_id"};
            if (read_varint_field(r, field, names[field - 40], wire, &v, err))
                return -1;
            int *dst[] = {&m->spec.unk_id, &m->spec.bos_id, &m->spec.eos_id};
            *dst[field - 40] = pb_int32(v);
            break;
        }
        case 44:
            if (pb_expect(r, field, "unk_surface", wire, PB_BYTES, err) || pb_bytes(r, &s, &n, err) ||
                set_unk_surface(m, s, n, err))
                return -1;
            break;
        default:
            if (pb_skip(r, field, wire, err))
                return -1;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* NormalizerSpec: precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
 * escape_whitespaces = 5. `denormalizer` reads the same message as ModelProto.denormalizer_spec,
 * where only the charsmap matters. */
static int read_normalizer_spec(lg_sp_model *m, pb_reader *r, int denormalizer, lg_err *err)
{
    uint32_t field = 0;
    int wire = 0, rc;
    while ((rc = pb_key(r, &field, &wire, err)) == 0) {
        uint64_t v = 0;
        const uint8_t *s;
        size_t n;
        if (field == 2) {
            if (pb_expect(r, field, "precompiled_charsmap", wire, PB_BYTES, err) || pb_bytes(r, &s, &n, err))
                return -1;
            *(denormalizer ? &m->spec.denorm_charsmap_len : &m->spec.charsmap_len) = n;
        } else if (!denormalizer && field >= 3 && field <= 5) {
            static const char *names[] = {"add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces"};
            if (read_varint_field(r, field, names[field - 3], wire, &v, err))
                return -1;
            int *dst[] = {&m->spec.add_dummy_prefix, &m->spec.remove_extra_whitespaces,
                          &m->spec.escape_whitespaces};
            *dst[field - 3] = v != 0;
        } else if (pb_skip(r, field, wire, err)) {
            return -1;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* ModelProto: pieces = 1 (repeated), trainer_spec = 2, normalizer_spec = 3, self_test_data = 4,
 * denormalizer_spec = 5. */
int lg_sp_model_read_proto(lg_sp_model *m, const uint8_t *data, size_t n, lg_err *err)
{
    pb_reader top = {data, data, data + n, "ModelProto"};
    uint32_t field = 0;
    int wire = 0, rc;
    char what[64];
    while ((rc = pb_key(&top, &field, &wire, err)) == 0) {
        const uint8_t *sub;
        size_t sub_n;
        static const char *names[] = {"", "pieces", "trainer_spec", "normalizer_spec", "self_test_data",
                                      "denormalizer_spec"};
        if (field > 5 || field == 4) {
            if (pb_skip(&top, field, wire, err))
                return -1;
            continue;
        }
        if (pb_expect(&top, field, names[field], wire, PB_BYTES, err) || pb_bytes(&top, &sub, &sub_n, err))
            return -1;
        if (field == 1)
            snprintf(what, sizeof what, "piece %d", m->n_pieces);
        else
            snprintf(what, sizeof what, "%s", names[field]);
        pb_reader r = pb_sub(&top, sub, sub_n, what);
        int bad = field == 1   ? read_piece(m, &r, err)
                  : field == 2 ? read_trainer_spec(m, &r, err)
                               : read_normalizer_spec(m, &r, field == 5, err);
        if (bad)
            return -1;
    }
    if (rc < 0)
        return -1;
    if (m->n_pieces == 0)
        return lg_err_set(err, "no pieces (not a SentencePiece model?)");
    return 0;
}

/* ---------------------------------------------------------------- tokenizer.json (Hugging Face) */

/* Llama-2's tokenizer.model gives every piece made only of '▁' ("▁▁", "▁▁▁", ...) the score -1e9, so
 * runs of spaces merge last and left to right; every other normal piece has score -(id - 259). HF's
 * tokenizer.json keeps no scores and ranks its merges by the merged piece's id, which puts "▁▁" first
 * (why transformers' ids differ on runs of spaces). The scores below restore sentencepiece's order. */
#define LG_WHITESPACE_RUN_SCORE (-1e9f)

static int is_whitespace_run(const char *s, size_t n)
{
    if (n == 0 || n % LG_SP_SPACE_LEN)
        return 0;
    for (size_t i = 0; i < n; i += LG_SP_SPACE_LEN)
        if (memcmp(s + i, LG_SP_SPACE, LG_SP_SPACE_LEN) != 0)
            return 0;
    return 1;
}

/* cJSON numbers are doubles: an id must be a whole number within the piece limit. */
static int json_id(const cJSON *v, int *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= LG_SP_MAX_PIECES ||
        v->valuedouble != (double)(int)v->valuedouble)
        return -1;
    *id = (int)v->valuedouble;
    return 0;
}

/* Puts piece text `s` at id in `by_id` (sized for the largest id); the same id twice must name the
 * same text. */
static int json_place(const char **by_id, int id, const char *s, const char *where, lg_err *err)
{
    if (by_id[id] && strcmp(by_id[id], s) != 0)
        return lg_err_set(err, "%s: id %d is given to both '%s' and '%s'", where, id, by_id[id], s);
    by_id[id] = s;
    return 0;
}

/* The added token of this id, NULL if none. */
static const cJSON *json_added_token(const cJSON *added, int id)
{
    const cJSON *tok;
    cJSON_ArrayForEach(tok, added)
    {
        int tid;
        if (json_id(cJSON_GetObjectItemCaseSensitive(tok, "id"), &tid) == 0 && tid == id)
            return tok;
    }
    return NULL;
}

/* Reads model.vocab and added_tokens into a table id -> piece text; *n is 1 + the largest id. */
static int json_vocab_table(const cJSON *vocab, const cJSON *added, const char ***by_id_out, int *n, lg_err *err)
{
    int max_id = -1, id;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (json_id(e, &id))
            return lg_err_set(err, "model.vocab: '%s' has no valid id", e->string);
        max_id = id > max_id ? id : max_id;
    }
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) || !cJSON_IsString(content))
            return lg_err_set(err, "added_tokens: an entry lacks a valid id or content");
        max_id = id > max_id ? id : max_id;
    }
    if (max_id < 0)
        return lg_err_set(err, "model.vocab is empty");
    /* every id from 0 up needs a piece: more ids than entries leaves a hole, whatever the table */
    int n_given = cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added);
    if (max_id >= n_given)
        return lg_err_set(err, "model.vocab: ids run to %d but only %d pieces are given", max_id, n_given);
    const char **by_id = calloc((size_t)max_id + 1, sizeof *by_id);
    if (!by_id)
        return lg_err_set(err, "out of memory");
    *by_id_out = by_id;
    *n = max_id + 1;
    cJSON_ArrayForEach(e, vocab)
    {
        json_id(e, &id);
        if (json_place(by_id, id, e->string, "model.vocab", err))
            return -1;
    }
    cJSON_ArrayForEach(e, added)
    {
        json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id);
        if (json_place(by_id, id, cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring,
                       "added_tokens", err))
            return -1;
    }
    for (id = 0; id < *n; id++)
        if (!by_id[id])
            return lg_err_set(err, "model.vocab: id %d has no piece", id);
    return 0;
}

static void json_piece_type(const char *s, const cJSON *added_tok, const char *unk, int byte_fallback,
                            int *type, float *score, int id)
{
    size_t n = strlen(s);
    *score = 0;
    if (strcmp(s, unk) == 0)
        *type = LG_SP_UNKNOWN;
    else if (added_tok)
        *type = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(added_tok, "special")) ? LG_SP_CONTROL
                                                                                       : LG_SP_USER_DEFINED;
    else if (byte_fallback && lg_sp_parse_byte_piece(s, n) >= 0)
        *type = LG_SP_BYTE;
    else {
        *type = LG_SP_NORMAL;
        /* sentencepiece's BPE trainer scores pieces by creation order, which is id order */
        *score = is_whitespace_run(s, n) ? LG_WHITESPACE_RUN_SCORE : -(float)id;
    }
}

/* pre_tokenizer Metaspace's prepend_scheme ("always", "first", "never") or older add_prefix_space
 * say whether a '▁' goes before the text; tokenizers with neither (Llama's, made by transformers 4.x,
 * prepend with a normalizer) keep Llama-2's add_dummy_prefix. */
static void json_read_prefix(const cJSON *root, lg_sp_spec *spec)
{
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "Metaspace") != 0)
        return;
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(pre, "prepend_scheme");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space");
    if (cJSON_IsString(scheme))
        spec->add_dummy_prefix = strcmp(scheme->valuestring, "never") != 0;
    else if (cJSON_IsBool(add))
        spec->add_dummy_prefix = cJSON_IsTrue(add);
}

static int json_find(const char **by_id, int n, const char *s)
{
    for (int id = 0; id < n; id++)
        if (strcmp(by_id[id], s) == 0)
            return id;
    return -1;
}

static int json_fill_model(lg_sp_model *m, const cJSON *root, lg_err *err)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return lg_err_set(err, "no \"model\" object");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0)
        return lg_err_set(err, "model.type is '%s': only BPE (Llama-2's) is supported", type->valuestring);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return lg_err_set(err, "no model.vocab object");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsArray(added))
        return lg_err_set(err, "added_tokens is not an array");
    const cJSON *fallback = cJSON_GetObjectItemCaseSensitive(model, "byte_fallback");
    if (cJSON_IsBool(fallback))
        m->spec.byte_fallback = cJSON_IsTrue(fallback);
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const char *unk_piece = cJSON_IsString(unk) ? unk->valuestring : "<unk>";
    json_read_prefix(root, &m->spec);

    const char **by_id = NULL;
    int n = 0;
    int rc = json_vocab_table(vocab, added, &by_id, &n, err);
    for (int id = 0; rc == 0 && id < n; id++) {
        int ptype;
        float score;
        json_piece_type(by_id[id], json_added_token(added, id), unk_piece, m->spec.byte_fallback, &ptype,
                        &score, id);
        rc = lg_sp_model_add_piece(m, by_id[id], strlen(by_id[id]), score, ptype, err);
    }
    if (rc == 0) {
        /* tokenizer.json has no trainer_spec: BOS and EOS are the pieces of those names */
        m->spec.bos_id = json_find(by_id, n, "<s>");
        m->spec.eos_id = json_find(by_id, n, "</s>");
    }
    free(by_id);
    return rc;
}

int lg_sp_model_read_hf_json(lg_sp_model *m, const char *text, size_t n, lg_err *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!root) {
        size_t at = end && end >= text && end <= text + n ? (size_t)(end - text) : 0;
        return lg_err_set(err, "not valid JSON (error near byte %zu)", at);
    }
    int rc = json_fill_model(m, root, err);
    cJSON_Delete(root);
    return rc;
}
