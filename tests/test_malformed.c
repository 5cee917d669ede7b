/* Malformed inputs: a corpus of broken checkpoints and options, each made here from a copy of the
 * tiny-llama-fp16 fixture (sharded, with an index) and then damaged in one way. lg-convert must
 * refuse every one with a non-zero exit (not a crash), a message naming the file or tensor and the
 * problem, and no output directory (final or temporary) left behind. The reader is also fed
 * truncated and mutated byte strings directly through lg_st_open_memory. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "test_env.h"

#define FIXTURE "tiny-llama-fp16"
#define INDEX "model.safetensors.index.json"
/* The shard most cases damage, and tensors in it (layer 2, in data order: input_layernorm,
 * down_proj, gate_proj, up_proj [180480, 270592], post_attention_layernorm [270592, 270848]). */
#define SHARD "model-00005-of-00010.safetensors"
#define OTHER_SHARD "model-00006-of-00010.safetensors"
#define UP "model.layers.2.mlp.up_proj.weight"
#define LAST "model.layers.2.post_attention_layernorm.weight"
#define INV_FREQ(layer) "model.layers." #layer ".self_attn.rotary_emb.inv_freq"

/* ---------------------------------------------------------------- scratch copies and editing */

static const char *join(char *buf, size_t n, const char *dir, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

/* Copies the fixture's files (not reference.safetensors, which lg-convert never reads) into a new
 * directory dst; the copies are writable, unlike the fixture. */
static int copy_fixture(const char *dst)
{
    char src[4096];
    lg_fixture(src, sizeof src, FIXTURE);
    if (mkdir(dst, 0755) != 0)
        return -1;
    DIR *d = opendir(src);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "reference.safetensors") == 0)
            continue;
        char from[4400], to[4400];
        size_t n;
        char *bytes = lg_read_file(join(from, sizeof from, src, e->d_name), &n);
        rc = bytes ? lg_write_file(join(to, sizeof to, dst, e->d_name), bytes, n) : -1;
        free(bytes);
    }
    closedir(d);
    return rc;
}

static cJSON *read_json(const char *dir, const char *name)
{
    char path[4400];
    char *text = lg_read_file(join(path, sizeof path, dir, name), NULL);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    free(text);
    return doc;
}

/* Writes doc to dir/name and frees it. */
static int write_json(const char *dir, const char *name, cJSON *doc)
{
    char path[4400];
    char *text = doc ? cJSON_Print(doc) : NULL;
    int rc = text ? lg_write_file(join(path, sizeof path, dir, name), text, strlen(text)) : -1;
    free(text);
    cJSON_Delete(doc);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[4400];
    return lg_write_file(join(path, sizeof path, dir, name), text, strlen(text));
}

/* A safetensors file taken apart: header as JSON and the data area as bytes. */
typedef struct shard {
    cJSON *header;
    char *data;
    size_t data_len;
} shard;

static int shard_load(const char *dir, const char *name, shard *s)
{
    char path[4400];
    size_t n;
    unsigned char *bytes = (unsigned char *)lg_read_file(join(path, sizeof path, dir, name), &n);
    memset(s, 0, sizeof *s);
    if (!bytes || n < 8) {
        free(bytes);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | bytes[i];
    if (hlen > n - 8) {
        free(bytes);
        return -1;
    }
    s->header = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)hlen);
    s->data_len = n - 8 - (size_t)hlen;
    s->data = malloc(s->data_len + 1);
    if (s->data)
        memcpy(s->data, bytes + 8 + hlen, s->data_len);
    free(bytes);
    return s->header && s->data ? 0 : -1;
}

static void shard_free(shard *s)
{
    cJSON_Delete(s->header);
    free(s->data);
    memset(s, 0, sizeof *s);
}

/* Writes 8-byte length `hlen_field`, the header bytes and the data area. */
static int write_image(const char *dir, const char *name, uint64_t hlen_field, const char *hdr,
                       size_t hdr_len, const char *data, size_t data_len)
{
    size_t n = 8 + hdr_len + data_len;
    unsigned char *buf = malloc(n);
    if (!buf)
        return -1;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen_field >> (8 * i));
    memcpy(buf + 8, hdr, hdr_len);
    memcpy(buf + 8 + hdr_len, data, data_len);
    char path[4400];
    int rc = lg_write_file(join(path, sizeof path, dir, name), buf, n);
    free(buf);
    return rc;
}

/* Writes the header text (space-padded to 8 bytes, as the reference writer does) and the data. */
static int write_with_header_text(const char *dir, const char *name, const char *text,
                                  const shard *s)
{
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *hdr = malloc(padded + 1);
    if (!hdr)
        return -1;
    memcpy(hdr, text, len);
    memset(hdr + len, ' ', padded - len);
    int rc = write_image(dir, name, padded, hdr, padded, s->data, s->data_len);
    free(hdr);
    return rc;
}

/* Saves the shard with its (edited) header and frees it. */
static int shard_save(const char *dir, const char *name, shard *s)
{
    char *text = cJSON_PrintUnformatted(s->header);
    int rc = text ? write_with_header_text(dir, name, text, s) : -1;
    free(text);
    shard_free(s);
    return rc;
}

static void get_offsets(const cJSON *t, uint64_t *begin, uint64_t *end)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    *begin = (uint64_t)cJSON_GetArrayItem(o, 0)->valuedouble;
    *end = (uint64_t)cJSON_GetArrayItem(o, 1)->valuedouble;
}

static void set_offsets(cJSON *t, uint64_t begin, uint64_t end)
{
    cJSON *o = cJSON_CreateArray();
    cJSON_AddItemToArray(o, cJSON_CreateNumber((double)begin));
    cJSON_AddItemToArray(o, cJSON_CreateNumber((double)end));
    cJSON_ReplaceItemInObjectCaseSensitive(t, "data_offsets", o);
}

/* Appends a tensor entry with its bytes at the end of the shard's data area. */
static int shard_append(shard *s, const char *name, const char *dtype, cJSON *shape,
                        const void *bytes, size_t n)
{
    char *grown = realloc(s->data, s->data_len + n + 1);
    if (!grown) {
        cJSON_Delete(shape);
        return -1;
    }
    s->data = grown;
    memcpy(s->data + s->data_len, bytes, n);
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "dtype", dtype);
    cJSON_AddItemToObject(t, "shape", shape);
    cJSON_AddItemToObject(t, "data_offsets", cJSON_CreateArray());
    set_offsets(t, s->data_len, s->data_len + n);
    s->data_len += n;
    cJSON_AddItemToObject(s->header, name, t);
    return 0;
}

static int index_set(const char *dir, const char *tensor, const char *shard_name)
{
    cJSON *idx = read_json(dir, INDEX);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    if (!map) {
        cJSON_Delete(idx);
        return -1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(map, tensor);
    if (shard_name)
        cJSON_AddStringToObject(map, tensor, shard_name);
    return write_json(dir, INDEX, idx);
}

/* ---------------------------------------------------------------- the ways of breaking a copy */

struct malformed_case;
typedef int (*break_fn)(const char *dir, const struct malformed_case *c);

typedef struct malformed_case {
    const char *name;   /* the CUnit test */
    break_fn breaks;    /* damages the copy in dir (NULL: the options alone are wrong) */
    /* what `breaks` changes; each function documents how it reads them */
    const char *file, *tensor, *field, *value;
    const char *prefix;  /* shell text before the command (resource limits) */
    const char *options; /* extra lg-convert arguments; "@SRC" stands for the copy's path */
    const char *expect[2]; /* both must appear in lg-convert's message */
} malformed_case;

/* Keeps the first atoll(value) bytes of file. */
static int keep_first_bytes(const char *dir, const malformed_case *c)
{
    char path[4400];
    return truncate(join(path, sizeof path, dir, c->file), atoll(c->value));
}

/* Cuts atoll(value) bytes off the end of file. */
static int drop_last_bytes(const char *dir, const malformed_case *c)
{
    char path[4400];
    struct stat st;
    join(path, sizeof path, dir, c->file);
    if (stat(path, &st) != 0)
        return -1;
    return truncate(path, st.st_size - atoll(c->value));
}

/* Overwrites the 8-byte header length of file with strtoull(value), or with "one past the end of
 * the file" when value is "eof+1". */
static int set_header_length(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    char *text = cJSON_PrintUnformatted(s.header);
    size_t len = strlen(text);
    uint64_t field = strcmp(c->value, "eof+1") == 0 ? len + s.data_len + 1
                                                    : strtoull(c->value, NULL, 10);
    int rc = write_image(dir, c->file, field, text, len, s.data, s.data_len);
    free(text);
    shard_free(&s);
    return rc;
}

/* Replaces file's header by value, where "%s" stands for the original header text. */
static int rewrite_header_text(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    char *orig = cJSON_PrintUnformatted(s.header);
    const char *at = strstr(c->value, "%s");
    size_t n = strlen(c->value) + strlen(orig) + 1;
    char *text = malloc(n);
    if (at)
        snprintf(text, n, "%.*s%s%s", (int)(at - c->value), c->value, orig, at + 2);
    else
        snprintf(text, n, "%s", c->value);
    int rc = write_with_header_text(dir, c->file, text, &s);
    free(text);
    free(orig);
    shard_free(&s);
    return rc;
}

/* Replaces the first occurrence of `field` in file's compact header text by `value`. */
static int replace_in_header(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    char *orig = cJSON_PrintUnformatted(s.header);
    const char *at = strstr(orig, c->field);
    int rc = -1;
    if (at) {
        size_t n = strlen(orig) + strlen(c->value) + 1;
        char *text = malloc(n);
        snprintf(text, n, "%.*s%s%s", (int)(at - orig), orig, c->value, at + strlen(c->field));
        rc = write_with_header_text(dir, c->file, text, &s);
        free(text);
    }
    free(orig);
    shard_free(&s);
    return rc;
}

/* In file's header, sets tensor's `field` to the JSON `value` (the whole entry when field is
 * NULL); a NULL tensor means the header's top level (field "__metadata__"). */
static int set_header_field(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    cJSON *where = c->tensor ? cJSON_GetObjectItemCaseSensitive(s.header, c->tensor) : s.header;
    cJSON *v = cJSON_Parse(c->value);
    if (!where || !v) {
        cJSON_Delete(v);
        shard_free(&s);
        return -1;
    }
    if (c->tensor && !c->field)
        cJSON_ReplaceItemInObjectCaseSensitive(s.header, c->tensor, v);
    else
        cJSON_ReplaceItemInObjectCaseSensitive(where, c->field, v);
    return shard_save(dir, c->file, &s);
}

/* Grows the last tensor of file by one row in shape and offsets: self-consistent, but its bytes
 * would lie past the end of the data area. */
static int grow_last_tensor(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    cJSON *t = cJSON_GetObjectItemCaseSensitive(s.header, c->tensor);
    if (!t) {
        shard_free(&s);
        return -1;
    }
    cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "shape"), 0);
    uint64_t b, e;
    get_offsets(t, &b, &e);
    uint64_t row = (e - b) / (uint64_t)d0->valuedouble;
    cJSON_SetNumberValue(d0, d0->valuedouble + 1);
    set_offsets(t, b, e + row);
    return shard_save(dir, c->file, &s);
}

/* Lists tensor a second time in file's header (same dtype, shape and offsets). */
static int duplicate_in_header(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    cJSON *t = cJSON_GetObjectItemCaseSensitive(s.header, c->tensor);
    if (!t) {
        shard_free(&s);
        return -1;
    }
    cJSON_AddItemToObject(s.header, c->tensor, cJSON_Duplicate(t, 1));
    return shard_save(dir, c->file, &s);
}

/* Copies tensor (entry and bytes) from file into the shard named by value as well. */
static int copy_to_other_shard(const char *dir, const malformed_case *c)
{
    shard from, to;
    if (shard_load(dir, c->file, &from) != 0)
        return -1;
    if (shard_load(dir, c->value, &to) != 0) {
        shard_free(&from);
        return -1;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(from.header, c->tensor);
    uint64_t b, e;
    get_offsets(t, &b, &e);
    int rc = shard_append(&to, c->tensor,
                          cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring,
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(t, "shape"), 1),
                          from.data + b, (size_t)(e - b));
    shard_free(&from);
    return rc == 0 ? shard_save(dir, c->value, &to) : (shard_free(&to), -1);
}

/* Removes tensor from file (its entry and its bytes, later offsets moved down) and from the
 * index: the checkpoint is consistent, only the tensor is gone. */
static int remove_tensor(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    cJSON *t = cJSON_GetObjectItemCaseSensitive(s.header, c->tensor);
    if (!t) {
        shard_free(&s);
        return -1;
    }
    uint64_t b, e;
    get_offsets(t, &b, &e);
    memmove(s.data + b, s.data + e, s.data_len - e);
    s.data_len -= (size_t)(e - b);
    cJSON_DeleteItemFromObjectCaseSensitive(s.header, c->tensor);
    cJSON *it;
    cJSON_ArrayForEach(it, s.header)
    {
        uint64_t ib, ie;
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        get_offsets(it, &ib, &ie);
        if (ib >= e)
            set_offsets(it, ib - (e - b), ie - (e - b));
    }
    if (shard_save(dir, c->file, &s) != 0)
        return -1;
    return index_set(dir, c->tensor, NULL);
}

/* Appends tensor to file (and to the index): an F16 [4] of small values. */
static int add_extra_tensor(const char *dir, const malformed_case *c)
{
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    const uint16_t vals[4] = {0x3c00, 0x3800, 0xb800, 0x3400};
    cJSON *shape = cJSON_CreateArray();
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(4));
    if (shard_append(&s, c->tensor, "F16", shape, vals, sizeof vals) != 0 ||
        shard_save(dir, c->file, &s) != 0)
        return -1;
    return index_set(dir, c->tensor, c->file);
}

/* Appends an inv_freq buffer as transformers saved them in Llama-2 downloads: [n] values
 * 1 / theta^(2i/head_dim) computed in float32, head_dim 32 here; value is "theta n [dtype]" with
 * dtype F32 (the default, as transformers computes them) or F16/BF16 (as model.half() leaves them). */
static int add_inv_freq(const char *dir, const malformed_case *c)
{
    double theta;
    int n;
    char dt_name[8] = "F32";
    lg_dtype dt;
    if (sscanf(c->value, "%lf %d %7s", &theta, &n, dt_name) < 2 || n < 1 || n > 64 ||
        lg_dtype_from_name(dt_name, &dt) != 0)
        return -1;
    float f[64];
    unsigned char stored[64 * 8];
    for (int i = 0; i < n; i++)
        f[i] = 1.0f / powf((float)theta, (float)(2 * i) / 32.0f);
    if (lg_convert_floats(stored, dt, f, LG_DT_F32, (size_t)n) != 0)
        return -1;
    shard s;
    if (shard_load(dir, c->file, &s) != 0)
        return -1;
    cJSON *shape = cJSON_CreateArray();
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(n));
    if (shard_append(&s, c->tensor, dt_name, shape, stored, lg_dtype_size(dt) * (size_t)n) != 0 ||
        shard_save(dir, c->file, &s) != 0)
        return -1;
    return index_set(dir, c->tensor, c->file);
}

/* Sets the index's weight_map[tensor] to value (NULL removes the entry). */
static int set_index_entry(const char *dir, const malformed_case *c)
{
    return index_set(dir, c->tensor, c->value);
}

/* Points weight_map[tensor] at value and also puts a valid copy of file there, so that the
 * refusal is about the path, not a missing file. */
static int point_index_outside(const char *dir, const malformed_case *c)
{
    char from[4400], to[4400], sub[4400];
    size_t n;
    char *bytes = lg_read_file(join(from, sizeof from, dir, c->file), &n);
    if (!bytes)
        return -1;
    mkdir(join(sub, sizeof sub, dir, "sub"), 0755);
    if (c->value[0] != '/')
        lg_write_file(join(to, sizeof to, dir, c->value), bytes, n);
    free(bytes);
    return index_set(dir, c->tensor, c->value);
}

/* Lists tensor twice in the index's weight_map (a JSON object with a repeated key). */
static int duplicate_index_key(const char *dir, const malformed_case *c)
{
    cJSON *idx = read_json(dir, INDEX);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(map, c->tensor);
    if (!t) {
        cJSON_Delete(idx);
        return -1;
    }
    cJSON_AddStringToObject(map, c->tensor, t->valuestring);
    return write_json(dir, INDEX, idx);
}

/* Overwrites file with the text value. */
static int replace_file(const char *dir, const malformed_case *c)
{
    return write_text(dir, c->file, c->value);
}

/* Appends atoll(value) spaces to file: still valid JSON, but larger. */
static int pad_file(const char *dir, const malformed_case *c)
{
    char path[4400];
    size_t n, pad = (size_t)atoll(c->value);
    char *bytes = lg_read_file(join(path, sizeof path, dir, c->file), &n);
    char *grown = bytes ? realloc(bytes, n + pad) : NULL;
    if (!grown) {
        free(bytes);
        return -1;
    }
    memset(grown + n, ' ', pad);
    int rc = lg_write_file(path, grown, n + pad);
    free(grown);
    return rc;
}

static int remove_file(const char *dir, const malformed_case *c)
{
    char path[4400];
    return unlink(join(path, sizeof path, dir, c->file));
}

/* Replaces file by a directory of the same name. */
static int file_to_directory(const char *dir, const malformed_case *c)
{
    char path[4400];
    join(path, sizeof path, dir, c->file);
    return unlink(path) == 0 ? mkdir(path, 0755) : -1;
}

/* Merges the JSON object value into config.json: each key replaced, null deleting it. */
static int merge_config(const char *dir, const malformed_case *c)
{
    cJSON *cfg = read_json(dir, "config.json"), *patch = cJSON_Parse(c->value);
    if (!cfg || !patch) {
        cJSON_Delete(cfg);
        cJSON_Delete(patch);
        return -1;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, patch)
    {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, it->string);
        if (!cJSON_IsNull(it))
            cJSON_AddItemToObject(cfg, it->string, cJSON_Duplicate(it, 1));
    }
    cJSON_Delete(patch);
    return write_json(dir, "config.json", cfg);
}

/* ---------------------------------------------------------------- the corpus */

static const malformed_case cases[] = {
    /* the file as a whole */
    {.name = "test_empty_file_is_rejected", .breaks = keep_first_bytes, .file = SHARD, .value = "0",
     .expect = {SHARD ": file is 0 bytes", "too short for a safetensors header"}},
    {.name = "test_file_shorter_than_8_bytes_is_rejected", .breaks = keep_first_bytes, .file = SHARD,
     .value = "5", .expect = {SHARD ": file is 5 bytes", "too short for a safetensors header"}},
    {.name = "test_file_truncated_in_header_is_rejected", .breaks = keep_first_bytes, .file = SHARD,
     .value = "100", .expect = {SHARD ": header length 544", "runs past the end of the file (100 bytes)"}},
    {.name = "test_file_truncated_in_data_is_rejected", .breaks = drop_last_bytes, .file = SHARD,
     .value = "100",
     .expect = {SHARD ": tensor '" LAST "'", "run past the end of the data (270748 bytes)"}},
    {.name = "test_header_length_past_eof_is_rejected", .breaks = set_header_length, .file = SHARD,
     .value = "eof+1", .expect = {SHARD ": header length", "runs past the end of the file"}},
    {.name = "test_huge_header_length_is_rejected", .breaks = set_header_length, .file = SHARD,
     .value = "1152921504606846976", /* 2^60 */
     .expect = {SHARD ": header length 1152921504606846976", "exceeds the 100000000-byte limit"}},
    {.name = "test_header_length_just_over_limit_is_rejected", .breaks = set_header_length,
     .file = SHARD, .value = "100000001",
     .expect = {SHARD ": header length 100000001", "exceeds the 100000000-byte limit"}},
    {.name = "test_zero_header_length_is_rejected", .breaks = set_header_length, .file = SHARD,
     .value = "0", .expect = {SHARD ": header does not start with '{'"}},
    /* the header text */
    {.name = "test_header_not_json_is_rejected", .breaks = rewrite_header_text, .file = SHARD,
     .value = "{\"" UP "\": {\"dtype\": \"F16\", \"shape\": [352,",
     .expect = {SHARD ": header is not valid JSON"}},
    {.name = "test_header_json_array_is_rejected", .breaks = rewrite_header_text, .file = SHARD,
     .value = "[1, 2, 3]", .expect = {SHARD ": header does not start with '{'"}},
    {.name = "test_header_not_starting_with_brace_is_rejected", .breaks = rewrite_header_text,
     .file = SHARD, .value = " %s", .expect = {SHARD ": header does not start with '{'"}},
    {.name = "test_trailing_bytes_after_header_are_rejected", .breaks = rewrite_header_text,
     .file = SHARD, .value = "%s}", .expect = {SHARD ": trailing bytes after the header JSON"}},
    /* data_offsets */
    {.name = "test_offsets_overlapping_are_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "data_offsets", .value = "[180478, 270590]",
     .expect = {SHARD ": tensor '" UP "' data_offsets [180478, 270590]", "overlap the previous tensor"}},
    {.name = "test_offsets_with_hole_are_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "data_offsets", .value = "[180482, 270594]",
     .expect = {SHARD ": tensor '" UP "' data_offsets [180482, 270594]", "leave a hole after byte 180480"}},
    {.name = "test_offsets_outside_data_area_are_rejected", .breaks = grow_last_tensor, .file = SHARD,
     .tensor = LAST,
     .expect = {SHARD ": tensor '" LAST "' data_offsets [270592, 270850]",
                "run past the end of the data (270848 bytes)"}},
    {.name = "test_offsets_end_before_start_are_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "data_offsets", .value = "[270592, 180480]",
     .expect = {SHARD ": tensor '" UP "' data_offsets [270592, 180480]", "end before start"}},
    {.name = "test_offsets_not_a_pair_are_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "data_offsets", .value = "[180480]",
     .expect = {SHARD ": tensor '" UP "'", "data_offsets is not [begin, end]"}},
    {.name = "test_fractional_offset_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "data_offsets", .value = "[180480, 270591.5]",
     .expect = {SHARD ": tensor '" UP "'", "data_offsets is not [begin, end]"}},
    /* shape and dtype */
    {.name = "test_shape_dtype_size_mismatch_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "shape", .value = "[351, 128]",
     .expect = {SHARD ": tensor '" UP "'", "shape x dtype is 89856 bytes but data_offsets span 90112"}},
    {.name = "test_negative_shape_dim_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "shape", .value = "[-352, 128]",
     .expect = {SHARD ": tensor '" UP "'", "shape[0] is not a non-negative integer"}},
    {.name = "test_fractional_shape_dim_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "shape", .value = "[352, 128.5]",
     .expect = {SHARD ": tensor '" UP "'", "shape[1] is not a non-negative integer"}},
    {.name = "test_overflowing_shape_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "shape", .value = "[1099511627776, 1099511627776]",
     .expect = {SHARD ": tensor '" UP "'", "shape overflows"}},
    {.name = "test_too_many_dims_are_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "shape", .value = "[1, 1, 1, 1, 1, 1, 1, 352, 128]",
     .expect = {SHARD ": tensor '" UP "'", "has 9 dimensions (at most 8 supported)"}},
    {.name = "test_unknown_dtype_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "dtype", .value = "\"Q4_0\"",
     .expect = {SHARD ": tensor '" UP "'", "unknown dtype 'Q4_0'"}},
    {.name = "test_dtype_not_a_string_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "dtype", .value = "16",
     .expect = {SHARD ": tensor '" UP "'", "has no dtype string"}},
    {.name = "test_tensor_entry_not_an_object_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .value = "[1]", .expect = {SHARD ": tensor '" UP "' is not an object"}},
    {.name = "test_integer_weight_dtype_is_rejected", .breaks = set_header_field, .file = SHARD,
     .tensor = UP, .field = "dtype", .value = "\"I16\"",
     .expect = {"tensor '" UP "' has dtype I16", "expected a float type"}},
    /* names and __metadata__ */
    {.name = "test_duplicate_tensor_in_one_header_is_rejected", .breaks = duplicate_in_header,
     .file = SHARD, .tensor = UP, .expect = {SHARD ": duplicate tensor '" UP "'"}},
    {.name = "test_metadata_non_string_value_is_rejected", .breaks = set_header_field, .file = SHARD,
     .field = "__metadata__", .value = "{\"format\": 1}",
     .expect = {SHARD ": __metadata__ value of 'format'", "is not a string"}},
    {.name = "test_metadata_not_an_object_is_rejected", .breaks = set_header_field, .file = SHARD,
     .field = "__metadata__", .value = "\"pt\"", .expect = {SHARD ": __metadata__ is not an object"}},
    {.name = "test_duplicate_metadata_key_is_rejected", .breaks = replace_in_header, .file = SHARD,
     .field = "{\"format\":\"pt\"}", .value = "{\"format\":\"pt\",\"format\":\"np\"}",
     .expect = {SHARD ": duplicate __metadata__ key 'format'"}},
    {.name = "test_two_metadata_objects_are_rejected", .breaks = replace_in_header, .file = SHARD,
     .field = "{\"format\":\"pt\"}", .value = "{},\"__metadata__\":{}",
     .expect = {SHARD ": duplicate __metadata__"}},
    /* shards and the index */
    {.name = "test_same_tensor_in_two_shards_is_rejected", .breaks = copy_to_other_shard,
     .file = SHARD, .tensor = UP, .value = OTHER_SHARD,
     .expect = {"tensor '" UP "' appears in both", OTHER_SHARD}},
    {.name = "test_missing_tensor_is_rejected", .breaks = remove_tensor, .file = SHARD, .tensor = UP,
     .expect = {"missing tensor '" UP "'"}},
    {.name = "test_index_parent_path_is_rejected", .breaks = point_index_outside, .file = SHARD,
     .tensor = UP, .value = "../x.safetensors",
     .expect = {INDEX ": weight_map entry '" UP "'", "points outside the directory ('../x.safetensors')"}},
    {.name = "test_index_absolute_path_is_rejected", .breaks = point_index_outside, .file = SHARD,
     .tensor = UP, .value = "/etc/passwd",
     .expect = {INDEX ": weight_map entry '" UP "'", "points outside the directory ('/etc/passwd')"}},
    {.name = "test_index_subdirectory_path_is_rejected", .breaks = point_index_outside, .file = SHARD,
     .tensor = UP, .value = "sub/x.safetensors",
     .expect = {INDEX ": weight_map entry '" UP "'", "points outside the directory ('sub/x.safetensors')"}},
    {.name = "test_index_naming_missing_shard_is_rejected", .breaks = set_index_entry, .tensor = UP,
     .value = "model-00011-of-00010.safetensors",
     .expect = {"model-00011-of-00010.safetensors: cannot open", "No such file"}},
    {.name = "test_index_not_json_is_rejected", .breaks = replace_file, .file = INDEX,
     .value = "{\"weight_map\": {\"" UP "\": \"" SHARD "\",",
     .expect = {INDEX ": not valid JSON"}},
    {.name = "test_index_without_weight_map_is_rejected", .breaks = replace_file, .file = INDEX,
     .value = "{\"metadata\": {\"total_size\": 2739456}}", .expect = {INDEX ": no weight_map object"}},
    {.name = "test_tensor_missing_from_index_is_rejected", .breaks = set_index_entry, .tensor = UP,
     .expect = {"tensor '" UP "' in " SHARD, "is not listed in " INDEX}},
    {.name = "test_index_entry_without_tensor_is_rejected", .breaks = set_index_entry,
     .tensor = "model.layers.9.mlp.up_proj.weight", .value = SHARD,
     .expect = {"tensor 'model.layers.9.mlp.up_proj.weight' is listed in " INDEX,
                "missing from " SHARD}},
    {.name = "test_index_naming_wrong_shard_is_rejected", .breaks = set_index_entry, .tensor = UP,
     .value = OTHER_SHARD,
     .expect = {"tensor '" UP "' is listed in " OTHER_SHARD, "but stored in " SHARD}},
    {.name = "test_index_listing_tensor_twice_is_rejected", .breaks = duplicate_index_key,
     .tensor = UP, .expect = {INDEX " lists a tensor twice"}},
    {.name = "test_shard_that_is_a_directory_is_rejected", .breaks = file_to_directory, .file = SHARD,
     .expect = {SHARD ": not a regular file"}},
    {.name = "test_checkpoint_without_weights_is_rejected", .breaks = remove_file, .file = INDEX,
     .expect = {"no model.safetensors or " INDEX}},
    /* the config and its agreement with the tensors */
    {.name = "test_wrong_shape_vs_config_names_tensor_and_dimension", .breaks = set_header_field,
     .file = SHARD, .tensor = UP, .field = "shape", .value = "[128, 352]",
     .expect = {"tensor '" UP "' dimension 0 (rows) is 128", "the config implies 352"}},
    {.name = "test_heads_not_dividing_hidden_size_are_rejected", .breaks = merge_config,
     .value = "{\"num_attention_heads\": 3, \"num_key_value_heads\": 1, \"head_dim\": null}",
     .expect = {"config.json: num_attention_heads 3", "does not divide hidden_size 128"}},
    {.name = "test_kv_heads_not_dividing_heads_are_rejected", .breaks = merge_config,
     .value = "{\"num_key_value_heads\": 3}",
     .expect = {"config.json: num_key_value_heads 3", "does not divide num_attention_heads 4"}},
    {.name = "test_config_not_json_is_rejected", .breaks = replace_file, .file = "config.json",
     .value = "{\"hidden_size\": 128,", .expect = {"config.json: not valid JSON"}},
    {.name = "test_config_not_an_object_is_rejected", .breaks = replace_file, .file = "config.json",
     .value = "[{\"hidden_size\": 128}]", .expect = {"config.json: not a JSON object"}},
    {.name = "test_oversized_config_is_rejected", .breaks = pad_file, .file = "config.json",
     .value = "16777216", .expect = {"config.json: larger than the 16777216-byte limit"}},
    {.name = "test_config_missing_hidden_size_is_rejected", .breaks = merge_config,
     .value = "{\"hidden_size\": null}", .expect = {"config.json: missing 'hidden_size'"}},
    {.name = "test_config_fractional_size_is_rejected", .breaks = merge_config,
     .value = "{\"intermediate_size\": 352.5}",
     .expect = {"config.json: 'intermediate_size' is not an integer"}},
    {.name = "test_config_huge_size_is_rejected", .breaks = merge_config,
     .value = "{\"hidden_size\": 1e12}",
     .expect = {"config.json: 'hidden_size' = 1000000000000", "is outside [1, 1048576]"}},
    {.name = "test_unknown_rope_type_is_rejected", .breaks = merge_config,
     .value = "{\"rope_parameters\": {\"rope_type\": \"ntk\", \"rope_theta\": 10000}}",
     .expect = {"config.json: unsupported rope type 'ntk'"}},
    {.name = "test_scaled_rope_without_factor_is_rejected", .breaks = merge_config,
     .value = "{\"rope_parameters\": {\"rope_type\": \"linear\", \"rope_theta\": 10000}}",
     .expect = {"config.json: rope linear needs 'factor'"}},
    {.name = "test_other_architecture_is_rejected", .breaks = merge_config,
     .value = "{\"architectures\": [\"MistralForCausalLM\"]}",
     .expect = {"config.json: architecture 'MistralForCausalLM' is not LlamaForCausalLM"}},
    {.name = "test_missing_config_is_rejected", .breaks = remove_file, .file = "config.json",
     .expect = {"config.json: cannot open"}},
    {.name = "test_lm_head_with_tied_embeddings_is_rejected", .breaks = merge_config,
     .value = "{\"tie_word_embeddings\": true}",
     .expect = {"tensor 'lm_head.weight' present but tie_word_embeddings is true"}},
    {.name = "test_odd_head_dim_is_rejected", .breaks = merge_config, .value = "{\"head_dim\": 33}",
     .expect = {"config.json: head_dim 33 is odd"}},
    {.name = "test_longgen_layers_not_matching_config_are_rejected", .breaks = merge_config,
     .value = "{\"longgen\": {\"format_version\": 1, \"layers\": [{\"kind\": \"full\"}]}}",
     .expect = {"config.json: longgen.layers has 1 entries", "num_hidden_layers is 6"}},
    /* tensors that are not weights */
    {.name = "test_unknown_extra_tensor_is_rejected", .breaks = add_extra_tensor, .file = SHARD,
     .tensor = "model.layers.2.mlp.extra_proj.weight",
     .expect = {"unknown tensor 'model.layers.2.mlp.extra_proj.weight'", "--allow-extra"}},
    {.name = "test_inv_freq_disagreeing_with_rope_is_rejected", .breaks = add_inv_freq,
     .file = SHARD, .tensor = INV_FREQ(2), .value = "500000 16",
     .expect = {"tensor '" INV_FREQ(2) "'[1]", "disagrees with the config's RoPE (default, theta 10000)"}},
    {.name = "test_inv_freq_of_wrong_length_is_rejected", .breaks = add_inv_freq, .file = SHARD,
     .tensor = INV_FREQ(2), .value = "10000 32",
     .expect = {"tensor '" INV_FREQ(2) "'", "should be a float vector of head_dim/2 = 16"}},
    {.name = "test_inv_freq_with_overflowing_layer_number_is_rejected", .breaks = add_inv_freq,
     .file = SHARD, .tensor = "model.layers.4294967298.self_attn.rotary_emb.inv_freq",
     .value = "10000 16",
     .expect = {"unknown tensor 'model.layers.4294967298.self_attn.rotary_emb.inv_freq'"}},
    {.name = "test_inv_freq_past_last_layer_is_rejected", .breaks = add_inv_freq, .file = SHARD,
     .tensor = INV_FREQ(6), .value = "10000 16",
     .expect = {"tensor '" INV_FREQ(6) "'", "names layer 6 but the config has 6 layers"}},
    /* options */
    {.name = "test_full_layers_past_last_layer_are_rejected", .options = "--full-layers 99",
     .expect = {"--full-layers '99': layer 99 does not exist", "(the model has 6 layers, 0-5)"}},
    {.name = "test_full_layers_backwards_range_is_rejected", .options = "--full-layers 4-2",
     .expect = {"--full-layers '4-2': range 4-2 runs backwards"}},
    {.name = "test_unknown_sparse_kind_is_rejected", .options = "--sparse bogus:x=1",
     .expect = {"--sparse 'bogus:x=1'", "kind must be sink_window or block_strided"}},
    {.name = "test_sparse_zero_window_is_rejected", .options = "--sparse sink_window:window=0",
     .expect = {"--sparse 'sink_window:window=0'", "window=0 must be in [1, 2^30]"}},
    {.name = "test_sparse_unknown_parameter_is_rejected", .options = "--sparse sink_window:sinks=4",
     .expect = {"--sparse 'sink_window:sinks=4'", "unknown parameter 'sinks'"}},
    {.name = "test_yarn_factor_mismatching_context_is_rejected", .options = "--rope yarn:factor=3",
     .expect = {"--rope 'yarn:factor=3'", "factor 3 x original context 4096 != max context 131072"}},
    {.name = "test_unknown_rope_option_is_rejected", .options = "--rope ntk",
     .expect = {"--rope 'ntk'", "kind must be keep, theta, linear, dynamic, yarn or llama3"}},
    {.name = "test_zero_max_context_is_rejected", .options = "--max-context 0",
     .expect = {"--max-context '0'", "expected a whole number in [1, 1073741824]"}},
    {.name = "test_unknown_output_dtype_is_rejected", .options = "--dtype f8",
     .expect = {"--dtype must be f16, bf16 or f32"}},
    {.name = "test_zero_shard_size_is_rejected", .options = "--shard-size 0",
     .expect = {"--shard-size '0': expected GB > 0"}},
    {.name = "test_plan_with_full_layers_is_rejected", .breaks = replace_file,
     .file = "longgen_plan.json",
     .value = "{\"full_layers\": [2, 3], \"sparse\": {\"kind\": \"sink_window\", \"sink\": 4, \"window\": 8}}",
     .options = "--plan @SRC/longgen_plan.json --full-layers 1",
     .expect = {"--plan cannot be combined with --full-layers or --sparse"}},
    {.name = "test_plan_file_layer_past_last_is_rejected", .breaks = replace_file,
     .file = "longgen_plan.json",
     .value = "{\"full_layers\": [2, 99], \"sparse\": {\"kind\": \"sink_window\", \"sink\": 4, \"window\": 8}}",
     .options = "--plan @SRC/longgen_plan.json",
     .expect = {"longgen_plan.json: full layer entry", "is not a layer index below 6"}},
    /* a failure after the temporary directory exists: the file size limit stops the first shard
     * (SIGXFSZ ignored so that write() fails with EFBIG instead of killing the tool) */
    {.name = "test_write_failure_leaves_no_output", .prefix = "trap '' XFSZ; ulimit -f 64;",
     .expect = {"model.safetensors.partial: write failed", "File too large"}},
};

#define N_CASES (sizeof cases / sizeof cases[0])

/* ---------------------------------------------------------------- running a case */

/* 1 when dir holds an entry starting with `prefix`. */
static int has_entry_with_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL)
        found = strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return found;
}

/* Replaces each "@SRC" in options by src. */
static void expand_options(const char *options, const char *src, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (const char *p = options; p && *p && used + 1 < n;) {
        if (strncmp(p, "@SRC", 4) == 0) {
            used += (size_t)snprintf(buf + used, n - used, "%s", src);
            p += 4;
        } else {
            buf[used++] = *p++;
            buf[used] = 0;
        }
        if (used >= n)
            used = n - 1;
    }
}

/* Runs lg-convert on src into dir/out; returns its status, message in msg. */
static int run_convert(const char *dir, const char *src, const char *prefix, const char *options,
                       char *msg, size_t msg_n)
{
    char tool[4096], opts[8192], cmd[16384];
    expand_options(options, src, opts, sizeof opts);
    snprintf(cmd, sizeof cmd, "%s '%s' '%s' -o '%s/out' %s", prefix ? prefix : "",
             lg_tool(tool, sizeof tool, "lg-convert"), src, dir, opts);
    return lg_run_capture(cmd, msg, msg_n);
}

/* A sanitizer build reports memory errors and leaks in the message and exits 1 like a refusal;
 * such a report is a failure of its own. */
static int sanitizer_spoke(const char *msg)
{
    return strstr(msg, "Sanitizer") != NULL || strstr(msg, "runtime error:") != NULL;
}

static void run_case(const malformed_case *c)
{
    char dir[4096], src[4200], out[4200], msg[8192];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir());
    join(src, sizeof src, dir, "src");
    join(out, sizeof out, dir, "out");
    CU_ASSERT_EQUAL_FATAL(copy_fixture(src), 0);
    if (c->breaks)
        CU_ASSERT_EQUAL_FATAL(c->breaks(src, c), 0);
    int status = run_convert(dir, src, c->prefix, c->options, msg, sizeof msg);
    int ok = status > 0 && status < 128 && !sanitizer_spoke(msg);
    CU_ASSERT(status > 0);
    CU_ASSERT(status < 128); /* an exit, not a signal */
    CU_ASSERT_FALSE(sanitizer_spoke(msg));
    for (int i = 0; i < 2; i++)
        if (c->expect[i]) {
            int found = strstr(msg, c->expect[i]) != NULL;
            CU_ASSERT(found);
            ok = ok && found;
        }
    CU_ASSERT_FALSE(lg_path_exists(out));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.tmp-"));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.old-"));
    if (!ok)
        fprintf(stderr, "\n    %s: status %d, lg-convert said: %s\n", c->name, status, msg);
}

/* Every case is registered with this one function; it finds its row by the running test's name. */
static void test_malformed_case(void)
{
    const char *name = CU_get_current_test()->pName;
    for (size_t i = 0; i < N_CASES; i++)
        if (strcmp(cases[i].name, name) == 0) {
            run_case(&cases[i]);
            return;
        }
    CU_FAIL("no corpus row for this test");
}

/* ---------------------------------------------------------------- what must still be accepted */

/* The control: without a break the copy converts, so each refusal above is due to its break. */
static void test_unbroken_copy_converts(void)
{
    char dir[4096], src[4200], out[4200], msg[8192];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir());
    join(src, sizeof src, dir, "src");
    CU_ASSERT_EQUAL_FATAL(copy_fixture(src), 0);
    CU_ASSERT_EQUAL(run_convert(dir, src, NULL, "-q", msg, sizeof msg), 0);
    CU_ASSERT_FALSE(sanitizer_spoke(msg));
    CU_ASSERT_TRUE(lg_path_exists(join(out, sizeof out, dir, "out/model.safetensors")));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.tmp-"));
}

/* Converts a copy damaged by c and checks the output lacks c->tensor. */
static void convert_drops(const malformed_case *c, const char *options)
{
    char dir[4096], src[4200], path[4200], msg[8192];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir());
    join(src, sizeof src, dir, "src");
    CU_ASSERT_EQUAL_FATAL(copy_fixture(src), 0);
    CU_ASSERT_EQUAL_FATAL(c->breaks(src, c), 0);
    int status = run_convert(dir, src, NULL, options, msg, sizeof msg);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_FALSE(sanitizer_spoke(msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "(inv_freq/extra tensors dropped)"));
    if (status != 0)
        fprintf(stderr, "\n    lg-convert said: %s\n", msg);
    lg_err err;
    lg_st_file *f = lg_st_open(join(path, sizeof path, dir, "out/model.safetensors"), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NULL(lg_st_find(f, c->tensor));
    CU_ASSERT_PTR_NOT_NULL(lg_st_find(f, UP));
    lg_st_close(f);
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.tmp-"));
}

static void test_extra_tensor_is_dropped_with_allow_extra(void)
{
    const malformed_case c = {.breaks = add_extra_tensor, .file = SHARD,
                              .tensor = "model.layers.2.mlp.extra_proj.weight"};
    convert_drops(&c, "--allow-extra");
}

/* Real Llama-2 downloads carry model.layers.N.self_attn.rotary_emb.inv_freq; a buffer agreeing
 * with the config is accepted and not written. */
static void test_matching_inv_freq_is_accepted_and_dropped(void)
{
    const malformed_case c = {.breaks = add_inv_freq, .file = SHARD, .tensor = INV_FREQ(2),
                              .value = "10000 16"};
    convert_drops(&c, "");
}

/* model.half() rounds the buffers too: a correct inv_freq in F16 or BF16 is accepted. */
static void test_matching_half_precision_inv_freq_is_accepted_and_dropped(void)
{
    const malformed_case f16 = {.breaks = add_inv_freq, .file = SHARD, .tensor = INV_FREQ(2),
                                .value = "10000 16 F16"};
    const malformed_case bf16 = {.breaks = add_inv_freq, .file = SHARD, .tensor = INV_FREQ(3),
                                 .value = "10000 16 BF16"};
    convert_drops(&f16, "");
    convert_drops(&bf16, "");
}

/* --force replaces OUT when it is a symlink or a file: the link goes, never what it points to. */
static void test_force_over_a_symlink_keeps_its_target(void)
{
    char dir[4096], src[4200], out[4200], target[4200], keep[4300], msg[8192];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir());
    join(src, sizeof src, dir, "src");
    join(out, sizeof out, dir, "out");
    join(target, sizeof target, dir, "precious");
    CU_ASSERT_EQUAL_FATAL(copy_fixture(src), 0);
    CU_ASSERT_EQUAL_FATAL(mkdir(target, 0755), 0);
    CU_ASSERT_EQUAL_FATAL(write_text(target, "keep.txt", "not lg-convert's to delete"), 0);
    CU_ASSERT_EQUAL_FATAL(symlink(target, out), 0);
    CU_ASSERT_EQUAL(run_convert(dir, src, NULL, "-q --force", msg, sizeof msg), 0);
    CU_ASSERT_FALSE(sanitizer_spoke(msg));
    CU_ASSERT_TRUE(lg_path_exists(join(keep, sizeof keep, target, "keep.txt")));
    CU_ASSERT_TRUE(lg_path_exists(join(keep, sizeof keep, out, "model.safetensors")));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.old-"));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.tmp-"));
}

static void test_force_over_a_file_leaves_nothing_aside(void)
{
    char dir[4096], src[4200], out[4200], msg[8192];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir());
    join(src, sizeof src, dir, "src");
    CU_ASSERT_EQUAL_FATAL(copy_fixture(src), 0);
    CU_ASSERT_EQUAL_FATAL(write_text(dir, "out", "a file where the output goes"), 0);
    CU_ASSERT_EQUAL(run_convert(dir, src, NULL, "-q --force", msg, sizeof msg), 0);
    CU_ASSERT_FALSE(sanitizer_spoke(msg));
    CU_ASSERT_TRUE(lg_path_exists(join(out, sizeof out, dir, "out/model.safetensors")));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.old-"));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.tmp-"));
}

/* ---------------------------------------------------------------- the reader on raw bytes */

/* A small valid file made by our writer: odd sizes (so later tensors are unaligned), an empty
 * tensor, an integer tensor and metadata. *n receives its size. */
static unsigned char *small_valid_file(size_t *n)
{
    char path[4200];
    join(path, sizeof path, lg_test_tmpdir(), "small.safetensors");
    lg_err err;
    lg_st_writer *w = lg_st_writer_create(path, &err);
    if (!w)
        return NULL;
    int64_t s_a[2] = {2, 3}, s_b[1] = {5}, s_e[1] = {0}, s_c[1] = {3};
    unsigned char bytes[24 + 10 + 3];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 37 + 11);
    int rc = lg_st_writer_meta(w, "format", "pt", &err) ||
             lg_st_writer_add(w, "a", LG_DT_F32, 2, s_a, &err) ||
             lg_st_writer_add(w, "b", LG_DT_F16, 1, s_b, &err) ||
             lg_st_writer_add(w, "empty", LG_DT_BF16, 1, s_e, &err) ||
             lg_st_writer_add(w, "c", LG_DT_I8, 1, s_c, &err) || lg_st_writer_begin(w, &err) ||
             lg_st_writer_write(w, bytes, sizeof bytes, &err);
    if (rc != 0) {
        lg_st_writer_abort(w);
        return NULL;
    }
    if (lg_st_writer_finish(w, &err) != 0)
        return NULL;
    return (unsigned char *)lg_read_file(path, n);
}

/* Opens a copy of buf in an allocation of exactly len bytes (so a sanitizer sees any read past
 * it); checks what a successful open promises. Returns 0 when it opened. */
static int open_exact(const unsigned char *buf, size_t len, lg_err *err)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (len)
        memcpy(copy, buf, len);
    err->msg[0] = 0;
    lg_st_file *f = lg_st_open_memory(copy, len, "mem.safetensors", err);
    int rc = -1;
    if (f) {
        rc = 0;
        for (int i = 0; i < f->n_tensors; i++) {
            const lg_st_tensor *t = &f->tensors[i];
            const unsigned char *p = t->data;
            CU_ASSERT(t->begin <= t->end);
            CU_ASSERT(f->data_start + t->end <= len);
            CU_ASSERT(p >= copy && p + lg_st_nbytes(t) <= copy + len);
            CU_ASSERT_EQUAL(t->nelem * lg_dtype_size(t->dtype), lg_st_nbytes(t));
        }
        lg_st_close(f);
    } else {
        CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "mem.safetensors: "));
    }
    free(copy);
    return rc;
}

static void test_every_prefix_of_a_valid_file_fails_cleanly(void)
{
    size_t n;
    unsigned char *buf = small_valid_file(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    lg_err err;
    CU_ASSERT_EQUAL(open_exact(buf, n, &err), 0);
    for (size_t len = 0; len < n; len++)
        CU_ASSERT_EQUAL(open_exact(buf, len, &err), -1);
    free(buf);
}

/* Each header byte (and length byte) set to characters that matter to JSON and to numbers: the
 * reader either accepts a still-valid file or refuses it, never reads out of bounds. */
static void test_single_byte_mutations_never_crash(void)
{
    static const unsigned char values[] = {0, 1, 0x7f, 0x80, 0xff, '{', '}', '[', ']', '"', ',',
                                           ':', '-', '.', 'e', '0', '9', ' ', '\\', 'n'};
    size_t n;
    unsigned char *buf = small_valid_file(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    lg_err err;
    int accepted = 0;
    for (size_t pos = 0; pos < 8 + hlen; pos++)
        for (size_t v = 0; v < sizeof values; v++) {
            unsigned char keep = buf[pos];
            buf[pos] = values[v];
            accepted += open_exact(buf, n, &err) == 0;
            buf[pos] = keep;
        }
    /* some mutations are harmless (a space in the padding, a digit in a name) */
    CU_ASSERT(accepted > 0);
    free(buf);
}

/* Random multi-byte damage with a fixed seed (xorshift64), for combinations single bytes miss. */
static void test_random_mutations_never_crash(void)
{
    size_t n;
    unsigned char *buf = small_valid_file(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    unsigned char *work = malloc(n);
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    lg_err err;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(work, buf, n);
        int k = 1 + (int)(s % 4);
        for (int j = 0; j < k; j++) {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            uint64_t r = s * 0x2545F4914F6CDD1DULL;
            work[(r >> 8) % n] = (unsigned char)r;
        }
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        size_t len = (s >> 3) % 8 == 0 ? (size_t)((s >> 16) % n) : n; /* sometimes cut too */
        open_exact(work, len, &err);
    }
    free(work);
    free(buf);
}

/* Writes an 8-byte length then text into buf; returns the image size. */
static size_t image(unsigned char *buf, uint64_t hlen, const char *text, size_t text_len)
{
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, text, text_len);
    return 8 + text_len;
}

static void expect_refusal(const unsigned char *buf, size_t len, const char *want)
{
    lg_err err;
    CU_ASSERT_EQUAL(open_exact(buf, len, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
    if (!strstr(err.msg, want))
        fprintf(stderr, "\n    wanted '%s', got '%s'\n", want, err.msg);
}

static void test_short_byte_strings(void)
{
    unsigned char buf[256] = {0};
    lg_err err;
    expect_refusal(buf, 0, "file is 0 bytes");
    expect_refusal(buf, image(buf, 0, "", 0) - 1, "file is 7 bytes");
    expect_refusal(buf, image(buf, 0, "", 0), "header does not start with '{'");
    /* the smallest valid file: "{}" and nothing else */
    CU_ASSERT_EQUAL(open_exact(buf, image(buf, 2, "{}", 2), &err), 0);
    CU_ASSERT_EQUAL(open_exact(buf, image(buf, 8, "{}      ", 8), &err), 0);
    expect_refusal(buf, image(buf, 2, "{}x", 3), "tensors cover 0 bytes but the data area holds 1");
    expect_refusal(buf, image(buf, 3, "{}x", 3), "trailing bytes after the header JSON");
    expect_refusal(buf, image(buf, 4, "{\"a\"", 4), "header is not valid JSON");
    expect_refusal(buf, image(buf, 2, "[]", 2), "header does not start with '{'");
    const char *nul = "{\"a\":{\"dtype\":\"F\0\"}}";
    expect_refusal(buf, image(buf, 20, nul, 20), "mem.safetensors: ");
    const char *scalar = "{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}";
    unsigned char one[128];
    size_t len = image(one, strlen(scalar), scalar, strlen(scalar));
    one[len] = 42;
    CU_ASSERT_EQUAL(open_exact(one, len + 1, &err), 0); /* a 0-d tensor holds one element */
    const char *nan = "{\"a\":{\"dtype\":\"U8\",\"shape\":[NaN],\"data_offsets\":[0,1]}}";
    len = image(one, strlen(nan), nan, strlen(nan));
    one[len] = 42;
    expect_refusal(one, len + 1, "mem.safetensors: ");
}

/* A header of nested brackets must not exhaust the stack (cJSON stops at a nesting limit). */
static void test_deeply_nested_header_is_rejected(void)
{
    size_t depth = 200000;
    unsigned char *buf = malloc(8 + 5 + depth);
    memcpy(buf + 8, "{\"a\":", 5);
    memset(buf + 13, '[', depth);
    size_t hlen = 5 + depth;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    expect_refusal(buf, 8 + hlen, "header is not valid JSON");
    free(buf);
}

int lg_register_malformed_tests(void)
{
    CU_pSuite s = CU_add_suite("malformed", NULL, NULL);
    if (!s)
        return -1;
    for (size_t i = 0; i < N_CASES; i++)
        if (!CU_add_test(s, cases[i].name, test_malformed_case))
            return -1;
    if (!CU_add_test(s, "test_unbroken_copy_converts", test_unbroken_copy_converts) ||
        !CU_add_test(s, "test_extra_tensor_is_dropped_with_allow_extra",
                     test_extra_tensor_is_dropped_with_allow_extra) ||
        !CU_add_test(s, "test_matching_inv_freq_is_accepted_and_dropped",
                     test_matching_inv_freq_is_accepted_and_dropped) ||
        !CU_add_test(s, "test_matching_half_precision_inv_freq_is_accepted_and_dropped",
                     test_matching_half_precision_inv_freq_is_accepted_and_dropped) ||
        !CU_add_test(s, "test_force_over_a_symlink_keeps_its_target",
                     test_force_over_a_symlink_keeps_its_target) ||
        !CU_add_test(s, "test_force_over_a_file_leaves_nothing_aside",
                     test_force_over_a_file_leaves_nothing_aside) ||
        !CU_add_test(s, "test_every_prefix_of_a_valid_file_fails_cleanly",
                     test_every_prefix_of_a_valid_file_fails_cleanly) ||
        !CU_add_test(s, "test_single_byte_mutations_never_crash",
                     test_single_byte_mutations_never_crash) ||
        !CU_add_test(s, "test_random_mutations_never_crash", test_random_mutations_never_crash) ||
        !CU_add_test(s, "test_short_byte_strings", test_short_byte_strings) ||
        !CU_add_test(s, "test_deeply_nested_header_is_rejected", test_deeply_nested_header_is_rejected))
        return -1;
    return 0;
}
