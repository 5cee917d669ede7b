#include "package_manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "json_file.h"
#include "package.h"

/* Sizes travel as JSON numbers (doubles): exact up to 2^53 bytes, far beyond any model. */
#define MAX_SIZE (1L << 53)

int lg_pkg_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > LG_PKG_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '\\')
            return 0;
    return 1;
}

static int is_reserved(const char *name)
{
    return strcmp(name, LG_PKG_MANIFEST) == 0 || strcmp(name, LG_PKG_MANIFEST_SUM) == 0;
}

static int hex_ok(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static const char *get_string(const cJSON *obj, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* A required integer member in [lo, hi]. */
static int need_int(const cJSON *obj, const char *key, long lo, long hi, long *out, const char *label,
                    lg_err *err)
{
    int rc = lg_json_int(obj, key, lo, hi, out, label, err);
    if (rc > 0)
        return lg_err_set(err, "%s: '%s' is missing", label, key);
    return rc;
}

/* name, size and sha256 of a file or of its stored member (*has_sha NULL: sha256 required) */
static int parse_identity(const cJSON *j, const char *label, char *name, uint64_t *size, char *sha,
                          int *has_sha, lg_err *err)
{
    const char *s = get_string(j, "name");
    if (!s)
        return lg_err_set(err, "%s: 'name' is missing or not a string", label);
    if (!lg_pkg_name_ok(s))
        return lg_err_set(err, "%s: '%s' is not a plain file name", label, s);
    snprintf(name, LG_PKG_NAME_MAX + 1, "%s", s);
    long v;
    if (need_int(j, "size", 0, MAX_SIZE, &v, label, err) != 0)
        return -1;
    *size = (uint64_t)v;
    s = get_string(j, "sha256");
    if (has_sha)
        *has_sha = s != NULL;
    if (!s && has_sha)
        return 0;
    if (!s || !hex_ok(s))
        return lg_err_set(err, "%s: 'sha256' is not 64 lowercase hex digits", label);
    memcpy(sha, s, 65);
    return 0;
}

static int parse_transform(const cJSON *t, lg_pkg_file *f, const char *label, lg_err *err)
{
    const char *kind = get_string(t, "kind");
    if (!kind || strcmp(kind, LG_PKG_TRANSFORM_BP16) != 0)
        return lg_err_set(err, "%s: unknown transform '%s' (this reader knows %s)", label,
                          kind ? kind : "?", LG_PKG_TRANSFORM_BP16);
    long skip, chunk;
    if (need_int(t, "skip", 0, (long)f->size, &skip, label, err) != 0 ||
        need_int(t, "chunk", 2, (long)LG_PKG_MAX_CHUNK, &chunk, label, err) != 0)
        return -1;
    if (chunk % 2 != 0)
        return lg_err_set(err, "%s: transform chunk %ld is odd", label, chunk);
    f->bp = (lg_bp_params){.transform = 1, .skip = (uint64_t)skip, .chunk = (size_t)chunk};
    return 0;
}

static int parse_file(const cJSON *j, int i, const char *mlabel, lg_pkg_file *f, lg_err *err)
{
    char label[512];
    snprintf(label, sizeof label, "%s: files[%d]", mlabel, i);
    if (!cJSON_IsObject(j))
        return lg_err_set(err, "%s: not an object", label);
    if (parse_identity(j, label, f->name, &f->size, f->sha256, NULL, err) != 0)
        return -1;
    snprintf(label, sizeof label, "%s: file '%s'", mlabel, f->name);
    if (is_reserved(f->name))
        return lg_err_set(err, "%s: the name is reserved for the package's own members", label);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stored");
    if (!cJSON_IsObject(st))
        return lg_err_set(err, "%s: 'stored' is missing", label);
    snprintf(label, sizeof label, "%s: file '%s' stored", mlabel, f->name);
    if (parse_identity(st, label, f->stored_name, &f->stored_size, f->stored_sha256, &f->has_stored_sha, err) != 0)
        return -1;
    if (is_reserved(f->stored_name))
        return lg_err_set(err, "%s: the name is reserved for the package's own members", label);
    const char *enc = get_string(st, "encoding");
    if (enc && strcmp(enc, "none") == 0) {
        f->encoding = LG_PKG_ENC_NONE;
        if (strcmp(f->stored_name, f->name) != 0 || f->stored_size != f->size ||
            (f->has_stored_sha && strcmp(f->stored_sha256, f->sha256) != 0))
            return lg_err_set(err, "%s: encoding 'none' but name, size or sha256 differ from the file's",
                              label);
        f->has_stored_sha = 0; /* the same bytes: the file's sha256 is checked */
    } else if (enc && strcmp(enc, "zstd") == 0) {
        f->encoding = LG_PKG_ENC_ZSTD;
        long level = 0;
        if (lg_json_int(st, "level", 1, 22, &level, label, err) < 0)
            return -1;
        f->level = (int)level;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(st, "transform");
        if (t && !cJSON_IsNull(t) && parse_transform(t, f, label, err) != 0)
            return -1;
    } else {
        return lg_err_set(err, "%s: unknown encoding '%s' (this reader knows none, zstd)", label,
                          enc ? enc : "?");
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Two files with one name, or two members with one name, would let one overwrite the other. */
static int check_unique(const lg_pkg_manifest *m, int stored, const char *label, lg_err *err)
{
    const char **names = malloc(sizeof *names * (size_t)m->n_files);
    if (!names)
        return lg_err_set(err, "%s: out of memory", label);
    for (int i = 0; i < m->n_files; i++)
        names[i] = stored ? m->files[i].stored_name : m->files[i].name;
    qsort(names, (size_t)m->n_files, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 1; i < m->n_files && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = lg_err_set(err, "%s: %s '%s' is listed twice", label, stored ? "member" : "file",
                            names[i]);
    free(names);
    return rc;
}

int lg_pkg_manifest_parse(const char *text, size_t len, const char *label, lg_pkg_manifest *m,
                          lg_err *err)
{
    memset(m, 0, sizeof *m);
    cJSON *doc = lg_json_parse(text, len, label, err);
    if (!doc)
        return -1;
    int rc = 0;
    long version = 0;
    const char *format = get_string(doc, "format");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(doc, "files");
    if (!format || strcmp(format, "lgpkg") != 0)
        rc = lg_err_set(err, "%s: 'format' is not \"lgpkg\" (not a LongGen package manifest)", label);
    else if (need_int(doc, "format_version", 1, 1000000, &version, label, err) != 0)
        rc = -1;
    else if (version > LG_PKG_FORMAT_VERSION)
        rc = lg_err_set(err, "%s: format_version %ld is newer than this tool reads (%d); update it",
                        label, version, LG_PKG_FORMAT_VERSION);
    else if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) < 1)
        rc = lg_err_set(err, "%s: 'files' is missing or empty", label);
    else if (cJSON_GetArraySize(files) > LG_PKG_MAX_FILES)
        rc = lg_err_set(err, "%s: lists %d files (limit %d)", label, cJSON_GetArraySize(files),
                        LG_PKG_MAX_FILES);
    if (rc == 0) {
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(doc, "model");
        const char *name = get_string(model, "name");
        snprintf(m->model, sizeof m->model, "%s", name ? name : "");
        m->files = calloc((size_t)cJSON_GetArraySize(files), sizeof *m->files);
        if (!m->files)
            rc = lg_err_set(err, "%s: out of memory", label);
    }
    const cJSON *it;
    if (rc == 0) {
        cJSON_ArrayForEach(it, files)
        {
            if (parse_file(it, m->n_files, label, &m->files[m->n_files], err) != 0) {
                rc = -1;
                break;
            }
            m->n_files++;
        }
    }
    if (rc == 0)
        rc = check_unique(m, 0, label, err);
    if (rc == 0)
        rc = check_unique(m, 1, label, err);
    cJSON_Delete(doc);
    if (rc != 0)
        lg_pkg_manifest_free(m);
    return rc;
}

void lg_pkg_manifest_free(lg_pkg_manifest *m)
{
    free(m->files);
    m->files = NULL;
    m->n_files = 0;
}

cJSON *lg_pkg_manifest_to_json(const lg_pkg_file *files, int n_files, cJSON *model, cJSON *quantization,
                               const char *tool)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "format", "lgpkg");
    cJSON_AddNumberToObject(doc, "format_version", LG_PKG_FORMAT_VERSION);
    cJSON_AddStringToObject(doc, "tool", tool);
    cJSON_AddStringToObject(doc, "zstd", ZSTD_versionString());
    cJSON_AddItemToObject(doc, "model", model);
    if (quantization)
        cJSON_AddItemToObject(doc, "quantization", quantization);
    else
        cJSON_AddStringToObject(doc, "quantization", "none");
    cJSON *arr = cJSON_AddArrayToObject(doc, "files");
    for (int i = 0; i < n_files; i++) {
        const lg_pkg_file *f = &files[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "name", f->name);
        cJSON_AddNumberToObject(j, "size", (double)f->size);
        cJSON_AddStringToObject(j, "sha256", f->sha256);
        cJSON *st = cJSON_AddObjectToObject(j, "stored");
        cJSON_AddStringToObject(st, "name", f->stored_name);
        cJSON_AddStringToObject(st, "encoding", f->encoding == LG_PKG_ENC_ZSTD ? "zstd" : "none");
        if (f->encoding == LG_PKG_ENC_ZSTD) {
            cJSON_AddNumberToObject(st, "level", f->level);
            if (f->bp.transform) {
                cJSON *t = cJSON_AddObjectToObject(st, "transform");
                cJSON_AddStringToObject(t, "kind", LG_PKG_TRANSFORM_BP16);
                cJSON_AddNumberToObject(t, "skip", (double)f->bp.skip);
                cJSON_AddNumberToObject(t, "chunk", (double)f->bp.chunk);
            }
        }
        cJSON_AddNumberToObject(st, "size", (double)f->stored_size);
        if (f->encoding == LG_PKG_ENC_NONE || f->has_stored_sha)
            cJSON_AddStringToObject(st, "sha256", f->encoding == LG_PKG_ENC_NONE ? f->sha256 : f->stored_sha256);
        cJSON_AddItemToArray(arr, j);
    }
    return doc;
}

size_t lg_pkg_manifest_sum_line(const char hex[65], char line[96])
{
    return (size_t)snprintf(line, 96, "%s  %s\n", hex, LG_PKG_MANIFEST);
}
