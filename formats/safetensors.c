#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Sane bound on tensors per file: the header limit allows ~1M entries anyway; this one keeps the
 * allocation a header can ask for small. */
#define LG_ST_MAX_TENSORS 1000000

int lg_shape_nelem(int ndim, const int64_t *shape, uint64_t *out)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > (UINT64_C(1) << 62) / d)
            return -1;
        n *= d;
    }
    *out = n;
    return 0;
}

/* ---------------------------------------------------------------- reader */

static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    /* 2^53: beyond it a JSON number is no longer an exact integer in a double */
    if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_metadata(lg_st_file *f, const cJSON *meta, lg_err *err)
{
    if (!cJSON_IsObject(meta))
        return lg_err_set(err, "%s: __metadata__ is not an object", f->path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    f->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values)
        return lg_err_set(err, "%s: out of memory", f->path);
    const cJSON *it;
    cJSON_ArrayForEach(it, meta)
    {
        if (!cJSON_IsString(it))
            return lg_err_set(err, "%s: __metadata__ value of '%s' is not a string", f->path,
                              it->string);
        for (int k = 0; k < f->n_meta; k++)
            if (strcmp(f->meta_keys[k], it->string) == 0)
                return lg_err_set(err, "%s: duplicate __metadata__ key '%s'", f->path, it->string);
        f->meta_keys[f->n_meta] = strdup(it->string);
        f->meta_values[f->n_meta] = strdup(it->valuestring);
        f->n_meta++;
    }
    return 0;
}

static int parse_tensor(lg_st_file *f, const cJSON *j, lg_st_tensor *t, lg_err *err)
{
    const char *name = j->string;
    t->name = strdup(name);
    if (!cJSON_IsObject(j))
        return lg_err_set(err, "%s: tensor '%s' is not an object", f->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt))
        return lg_err_set(err, "%s: tensor '%s' has no dtype string", f->path, name);
    if (lg_dtype_from_name(dt->valuestring, &t->dtype) != 0)
        return lg_err_set(err, "%s: tensor '%s' has unknown dtype '%s'", f->path, name,
                          dt->valuestring);
    if (!cJSON_IsArray(shape))
        return lg_err_set(err, "%s: tensor '%s' has no shape array", f->path, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > LG_ST_MAX_DIMS)
        return lg_err_set(err, "%s: tensor '%s' has %d dimensions (at most %d supported)", f->path,
                          name, nd, LG_ST_MAX_DIMS);
    t->ndim = nd;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (json_uint(cJSON_GetArrayItem(shape, i), &d) != 0)
            return lg_err_set(err, "%s: tensor '%s' shape[%d] is not a non-negative integer",
                              f->path, name, i);
        t->shape[i] = (int64_t)d;
    }
    if (lg_shape_nelem(nd, t->shape, &t->nelem) != 0)
        return lg_err_set(err, "%s: tensor '%s' shape overflows", f->path, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        json_uint(cJSON_GetArrayItem(offs, 0), &t->begin) != 0 ||
        json_uint(cJSON_GetArrayItem(offs, 1), &t->end) != 0)
        return lg_err_set(err, "%s: tensor '%s' data_offsets is not [begin, end]", f->path, name);
    if (t->end < t->begin)
        return lg_err_set(err, "%s: tensor '%s' data_offsets [%llu, %llu] end before start",
                          f->path, name, (unsigned long long)t->begin,
                          (unsigned long long)t->end);
    uint64_t esz = lg_dtype_size(t->dtype);
    if (t->nelem > UINT64_MAX / esz || t->nelem * esz != t->end - t->begin)
        return lg_err_set(err,
                          "%s: tensor '%s' shape x dtype is %llu bytes but data_offsets span %llu",
                          f->path, name, (unsigned long long)(t->nelem * esz),
                          (unsigned long long)(t->end - t->begin));
    return 0;
}

static int cmp_by_begin(const void *a, const void *b)
{
    const lg_st_tensor *x = *(const lg_st_tensor *const *)a, *y = *(const lg_st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp((*(const lg_st_tensor *const *)a)->name, (*(const lg_st_tensor *const *)b)->name);
}

/* The data area must be covered exactly: sorted by offset, each tensor starts where the previous
 * ended, the first at 0 and the last at the end of the file (the reference library's rule). */
static int check_layout(lg_st_file *f, uint64_t data_len, lg_err *err)
{
    int n = f->n_tensors;
    lg_st_tensor **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order)
        return lg_err_set(err, "%s: out of memory", f->path);
    for (int i = 0; i < n; i++)
        order[i] = &f->tensors[i];
    int rc = 0;
    qsort(order, (size_t)n, sizeof *order, cmp_names);
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            rc = lg_err_set(err, "%s: duplicate tensor '%s'", f->path, order[i]->name);
    qsort(order, (size_t)n, sizeof *order, cmp_by_begin);
    uint64_t expect = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const lg_st_tensor *t = order[i];
        if (t->begin < expect)
            rc = lg_err_set(err, "%s: tensor '%s' data_offsets [%llu, %llu] overlap the previous tensor",
                            f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
        else if (t->begin > expect)
            rc = lg_err_set(err, "%s: tensor '%s' data_offsets [%llu, %llu] leave a hole after byte %llu",
                            f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                            (unsigned long long)expect);
        else if (t->end > data_len)
            rc = lg_err_set(err,
                            "%s: tensor '%s' data_offsets [%llu, %llu] run past the end of the data (%llu bytes)",
                            f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                            (unsigned long long)data_len);
        expect = t->end;
    }
    if (rc == 0 && expect != data_len)
        rc = lg_err_set(err, "%s: tensors cover %llu bytes but the data area holds %llu",
                        f->path, (unsigned long long)expect, (unsigned long long)data_len);
    free(order);
    return rc;
}

static int parse_header(lg_st_file *f, const char *hdr, size_t hlen, uint64_t data_len, lg_err *err)
{
    if (hlen == 0 || hdr[0] != '{')
        return lg_err_set(err, "%s: header does not start with '{'", f->path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root)
        return lg_err_set(err, "%s: header is not valid JSON (near byte %ld)", f->path,
                          cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - hdr) + 8 : -1L);
    int rc = 0;
    /* anything after the object may only be the writer's space padding */
    for (const char *p = end; p && p < hdr + hlen && rc == 0; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0)
            rc = lg_err_set(err, "%s: trailing bytes after the header JSON", f->path);
    if (rc == 0 && !cJSON_IsObject(root))
        rc = lg_err_set(err, "%s: header is not a JSON object", f->path);
    int n = rc == 0 ? cJSON_GetArraySize(root) : 0;
    if (rc == 0 && n > LG_ST_MAX_TENSORS)
        rc = lg_err_set(err, "%s: header lists %d entries (limit %d)", f->path, n, LG_ST_MAX_TENSORS);
    if (rc == 0) {
        f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
        if (!f->tensors)
            rc = lg_err_set(err, "%s: out of memory", f->path);
    }
    int seen_meta = 0;
    const cJSON *it;
    if (rc == 0) {
        cJSON_ArrayForEach(it, root)
        {
            if (strcmp(it->string, "__metadata__") == 0) {
                if (seen_meta++)
                    rc = lg_err_set(err, "%s: duplicate __metadata__", f->path);
                else
                    rc = parse_metadata(f, it, err);
            } else {
                rc = parse_tensor(f, it, &f->tensors[f->n_tensors], err);
                f->n_tensors++;
            }
            if (rc)
                break;
        }
    }
    cJSON_Delete(root);
    if (rc == 0)
        rc = check_layout(f, data_len, err);
    return rc;
}

static lg_st_file *open_image(const void *buf, size_t len, const char *label, lg_err *err)
{
    lg_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        lg_err_set(err, "%s: out of memory", label);
        return NULL;
    }
    f->path = strdup(label);
    f->map = (void *)buf;
    f->map_size = len;
    if (len < 8) {
        lg_err_set(err, "%s: file is %zu bytes, too short for a safetensors header", label, len);
        goto fail;
    }
    uint64_t hlen = 0;
    const unsigned char *b = buf;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | b[i];
    if (hlen > LG_ST_MAX_HEADER) {
        lg_err_set(err, "%s: header length %llu exceeds the %llu-byte limit", label,
                   (unsigned long long)hlen, (unsigned long long)LG_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > len - 8) {
        lg_err_set(err, "%s: header length %llu runs past the end of the file (%zu bytes)", label,
                   (unsigned long long)hlen, len);
        goto fail;
    }
    f->data_start = 8 + hlen;
    if (parse_header(f, (const char *)b + 8, (size_t)hlen, len - f->data_start, err) != 0)
        goto fail;
    for (int i = 0; i < f->n_tensors; i++)
        f->tensors[i].data = (const char *)buf + f->data_start + f->tensors[i].begin;
    return f;
fail:
    f->map = NULL;
    lg_st_close(f);
    return NULL;
}

lg_st_file *lg_st_open_memory(const void *buf, size_t len, const char *label, lg_err *err)
{
    return open_image(buf, len, label, err);
}

lg_st_file *lg_st_open(const char *path, lg_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        lg_err_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            lg_err_set(err, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            return NULL;
        }
    }
    close(fd);
    static const char empty[1];
    lg_st_file *f = open_image(map ? map : empty, len, path, err);
    if (!f) {
        if (map)
            munmap(map, len);
        return NULL;
    }
    f->owns_map = map != NULL;
    return f;
}

void lg_st_close(lg_st_file *f)
{
    if (!f)
        return;
    if (f->owns_map && f->map)
        munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    /* a failed parse may have set the name of the tensor it stopped at */
    if (f->tensors && f->tensors[f->n_tensors].name)
        free(f->tensors[f->n_tensors].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

const lg_st_tensor *lg_st_find(const lg_st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *lg_st_meta(const lg_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

/* ---------------------------------------------------------------- writer */

typedef struct writer_tensor {
    char *name;
    lg_dtype dtype;
    int ndim;
    int64_t shape[LG_ST_MAX_DIMS];
    uint64_t nbytes;
} writer_tensor;

struct lg_st_writer {
    char *path, *partial;
    FILE *fp;
    cJSON *meta;
    writer_tensor *tensors;
    int n, cap;
    char *header;      /* serialized and padded, set by begin */
    size_t header_len;
    int cur;           /* tensor being written */
    uint64_t cur_done; /* bytes of it written */
};

lg_st_writer *lg_st_writer_create(const char *path, lg_err *err)
{
    lg_st_writer *w = calloc(1, sizeof *w);
    if (!w) {
        lg_err_set(err, "%s: out of memory", path);
        return NULL;
    }
    w->path = strdup(path);
    size_t n = strlen(path) + 16;
    w->partial = malloc(n);
    snprintf(w->partial, n, "%s.partial", path);
    w->fp = fopen(w->partial, "wb");
    if (!w->fp) {
        lg_err_set(err, "%s: cannot create: %s", w->partial, strerror(errno));
        free(w->partial);
        w->partial = NULL;
        lg_st_writer_abort(w);
        return NULL;
    }
    return w;
}

int lg_st_writer_meta(lg_st_writer *w, const char *key, const char *value, lg_err *err)
{
    (void)err;
    if (!w->meta)
        w->meta = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    cJSON_AddStringToObject(w->meta, key, value);
    return 0;
}

int lg_st_writer_add(lg_st_writer *w, const char *name, lg_dtype dtype, int ndim,
                     const int64_t *shape, lg_err *err)
{
    if (w->header)
        return lg_err_set(err, "%s: tensor '%s' declared after the header was written", w->path, name);
    if (ndim < 0 || ndim > LG_ST_MAX_DIMS)
        return lg_err_set(err, "%s: tensor '%s' has %d dimensions", w->path, name, ndim);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return lg_err_set(err, "%s: tensor '%s' declared twice", w->path, name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        writer_tensor *t = realloc(w->tensors, sizeof *t * (size_t)cap);
        if (!t)
            return lg_err_set(err, "%s: out of memory", w->path);
        w->tensors = t;
        w->cap = cap;
    }
    writer_tensor *t = &w->tensors[w->n];
    uint64_t nelem;
    if (lg_shape_nelem(ndim, shape, &nelem) != 0)
        return lg_err_set(err, "%s: tensor '%s' shape overflows", w->path, name);
    t->name = strdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    t->nbytes = nelem * lg_dtype_size(dtype);
    w->n++;
    return 0;
}

static int serialize_header(lg_st_writer *w, lg_err *err)
{
    cJSON *root = cJSON_CreateObject();
    if (w->meta)
        cJSON_AddItemReferenceToObject(root, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        writer_tensor *t = &w->tensors[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dtype", lg_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
        cJSON_AddItemToObject(root, t->name, o);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text)
        return lg_err_set(err, "%s: out of memory", w->path);
    size_t len = strlen(text);
    size_t padded = (len + 7) & ~(size_t)7;
    w->header = malloc(padded);
    memcpy(w->header, text, len);
    memset(w->header + len, ' ', padded - len);
    w->header_len = padded;
    free(text);
    return 0;
}

uint64_t lg_st_writer_file_size(lg_st_writer *w)
{
    if (!w->header && serialize_header(w, NULL) != 0)
        return 0;
    uint64_t total = 8 + w->header_len;
    for (int i = 0; i < w->n; i++)
        total += w->tensors[i].nbytes;
    return total;
}

static int write_all(lg_st_writer *w, const void *p, size_t n, lg_err *err)
{
    if (n && fwrite(p, 1, n, w->fp) != n)
        return lg_err_set(err, "%s: write failed: %s", w->partial, strerror(errno));
    return 0;
}

/* Skips tensors with no bytes so that `cur` always names one still to be filled. */
static void advance_past_empty(lg_st_writer *w)
{
    while (w->cur < w->n && w->cur_done == w->tensors[w->cur].nbytes) {
        w->cur++;
        w->cur_done = 0;
    }
}

int lg_st_writer_begin(lg_st_writer *w, lg_err *err)
{
    if (!w->header && serialize_header(w, err) != 0)
        return -1;
    unsigned char len8[8];
    uint64_t hl = w->header_len;
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(hl >> (8 * i));
    if (write_all(w, len8, 8, err) || write_all(w, w->header, w->header_len, err))
        return -1;
    advance_past_empty(w);
    return 0;
}

int lg_st_writer_write(lg_st_writer *w, const void *data, size_t n, lg_err *err)
{
    const char *p = data;
    while (n > 0) {
        if (w->cur >= w->n)
            return lg_err_set(err, "%s: more data written than the tensors declared", w->path);
        writer_tensor *t = &w->tensors[w->cur];
        uint64_t room = t->nbytes - w->cur_done;
        size_t take = n < room ? n : (size_t)room;
        if (write_all(w, p, take, err))
            return -1;
        w->cur_done += take;
        p += take;
        n -= take;
        advance_past_empty(w);
    }
    return 0;
}

static void free_writer(lg_st_writer *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    cJSON_Delete(w->meta);
    free(w->header);
    free(w->path);
    free(w->partial);
    free(w);
}

int lg_st_writer_finish(lg_st_writer *w, lg_err *err)
{
    if (!w->header) {
        lg_err_set(err, "%s: finished before the header was written", w->path);
        goto fail;
    }
    if (w->cur < w->n) {
        lg_err_set(err, "%s: tensor '%s' got %llu of its %llu bytes", w->path,
                   w->tensors[w->cur].name, (unsigned long long)w->cur_done,
                   (unsigned long long)w->tensors[w->cur].nbytes);
        goto fail;
    }
    if (fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0) {
        lg_err_set(err, "%s: write failed: %s", w->partial, strerror(errno));
        goto fail;
    }
    int rc = fclose(w->fp);
    w->fp = NULL;
    if (rc != 0) {
        lg_err_set(err, "%s: close failed: %s", w->partial, strerror(errno));
        goto fail;
    }
    if (rename(w->partial, w->path) != 0) {
        lg_err_set(err, "%s: rename failed: %s", w->path, strerror(errno));
        goto fail;
    }
    free_writer(w);
    return 0;
fail:
    lg_st_writer_abort(w);
    return -1;
}

void lg_st_writer_abort(lg_st_writer *w)
{
    if (!w)
        return;
    if (w->fp)
        fclose(w->fp);
    if (w->partial)
        unlink(w->partial);
    free_writer(w);
}
