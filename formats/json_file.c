#include "json_file.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

cJSON *lg_json_parse(const char *text, size_t len, const char *label, lg_err *err)
{
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!doc) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1L;
        lg_err_set(err, "%s: not valid JSON (error near byte %ld)", label, off);
        return NULL;
    }
    for (const char *p = end; p && p < text + len; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != 0) {
            cJSON_Delete(doc);
            lg_err_set(err, "%s: trailing data after the JSON value", label);
            return NULL;
        }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        lg_err_set(err, "%s: not a JSON object", label);
        return NULL;
    }
    return doc;
}

cJSON *lg_json_read_file(const char *path, size_t max_bytes, lg_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    /* room for the file as it is (not the whole limit: 64 MiB for every index read); one byte
     * more tells a file that grew past the limit */
    struct stat st;
    size_t room = max_bytes;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0 &&
        (unsigned long long)st.st_size < max_bytes)
        room = (size_t)st.st_size;
    char *buf = malloc(room + 1);
    if (!buf) {
        fclose(f);
        lg_err_set(err, "%s: out of memory", path);
        return NULL;
    }
    size_t n = fread(buf, 1, room + 1, f);
    int bad = ferror(f);
    fclose(f);
    cJSON *doc = NULL;
    if (bad)
        lg_err_set(err, "%s: read error", path);
    else if (n > max_bytes)
        lg_err_set(err, "%s: larger than the %zu-byte limit for this file", path, max_bytes);
    else if (n > room)
        lg_err_set(err, "%s: changed while being read", path);
    else
        doc = lg_json_parse(buf, n, path, err);
    free(buf);
    return doc;
}

int lg_json_write_file(const char *path, const cJSON *doc, lg_err *err)
{
    char *text = cJSON_Print(doc);
    if (!text)
        return lg_err_set(err, "%s: out of memory", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", path);
    FILE *f = fopen(tmp, "wb");
    int rc = 0;
    if (!f) {
        rc = lg_err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        size_t len = strlen(text);
        if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF || fflush(f) != 0 ||
            fsync(fileno(f)) != 0)
            rc = lg_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        if (fclose(f) != 0 && rc == 0)
            rc = lg_err_set(err, "%s: close failed: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) != 0)
            rc = lg_err_set(err, "%s: rename failed: %s", path, strerror(errno));
        if (rc != 0)
            unlink(tmp);
    }
    free(text);
    return rc;
}

int lg_json_int(const cJSON *obj, const char *key, long lo, long hi, long *out, const char *label,
                lg_err *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j))
        return 1;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble))
        return lg_err_set(err, "%s: '%s' is not an integer", label, key);
    if (j->valuedouble < (double)lo || j->valuedouble > (double)hi)
        return lg_err_set(err, "%s: '%s' = %.0f is outside [%ld, %ld]", label, key, j->valuedouble,
                          lo, hi);
    *out = (long)j->valuedouble;
    return 0;
}

int lg_json_num(const cJSON *obj, const char *key, double *out, const char *label, lg_err *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j))
        return 1;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return lg_err_set(err, "%s: '%s' is not a number", label, key);
    *out = j->valuedouble;
    return 0;
}
