#include "checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json_file.h"

/* A shard named by the index must be a plain file name inside the directory: no separators, no
 * "..", nothing absolute (Hugging Face writes bare names). */
static int shard_name_ok(const char *name)
{
    return name[0] && strchr(name, '/') == NULL && strchr(name, '\\') == NULL &&
           strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int add_file(lg_checkpoint *c, const char *name, lg_err *err)
{
    for (int i = 0; i < c->n_files; i++)
        if (strcmp(c->file_names[i], name) == 0)
            return i;
    char *path = join(c->dir, name);
    lg_st_file *f = lg_st_open(path, err);
    free(path);
    if (!f)
        return -1;
    c->files = realloc(c->files, sizeof *c->files * (size_t)(c->n_files + 1));
    c->file_names = realloc(c->file_names, sizeof *c->file_names * (size_t)(c->n_files + 1));
    c->files[c->n_files] = f;
    c->file_names[c->n_files] = strdup(name);
    return c->n_files++;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const lg_ckpt_entry *)a)->tensor->name, ((const lg_ckpt_entry *)b)->tensor->name);
}

/* Collects every tensor of every file, sorted by name; a name in two files is an error. */
static int build_entries(lg_checkpoint *c, lg_err *err)
{
    size_t total = 0;
    for (int i = 0; i < c->n_files; i++)
        total += (size_t)c->files[i]->n_tensors;
    c->entries = calloc(total + 1, sizeof *c->entries);
    if (!c->entries)
        return lg_err_set(err, "%s: out of memory", c->dir);
    for (int i = 0; i < c->n_files; i++)
        for (int k = 0; k < c->files[i]->n_tensors; k++)
            c->entries[c->n_tensors++] = (lg_ckpt_entry){&c->files[i]->tensors[k], i};
    qsort(c->entries, (size_t)c->n_tensors, sizeof *c->entries, cmp_entry);
    for (int i = 1; i < c->n_tensors; i++)
        if (strcmp(c->entries[i - 1].tensor->name, c->entries[i].tensor->name) == 0)
            return lg_err_set(err, "%s: tensor '%s' appears in both %s and %s", c->dir,
                              c->entries[i].tensor->name, c->file_names[c->entries[i - 1].file],
                              c->file_names[c->entries[i].file]);
    return 0;
}

/* Opens the shards an index document lists and checks both agree; index_path names it in
 * messages. Takes ownership of root. */
static int open_index_doc(lg_checkpoint *c, cJSON *root, const char *index_path, lg_err *err)
{
    int rc = 0;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map) || !map->child)
        rc = lg_err_set(err, "%s: no weight_map object", index_path);
    const cJSON *it;
    if (rc == 0) {
        cJSON_ArrayForEach(it, map)
        {
            if (!cJSON_IsString(it)) {
                rc = lg_err_set(err, "%s: weight_map entry '%s' is not a file name", index_path,
                                it->string);
                break;
            }
            if (!shard_name_ok(it->valuestring)) {
                rc = lg_err_set(err, "%s: weight_map entry '%s' points outside the directory ('%s')",
                                index_path, it->string, it->valuestring);
                break;
            }
            if (add_file(c, it->valuestring, err) < 0) {
                rc = -1;
                break;
            }
        }
    }
    if (rc == 0)
        rc = build_entries(c, err);
    /* the index and the shards must agree both ways */
    if (rc == 0) {
        int listed = 0;
        cJSON_ArrayForEach(it, map)
        {
            listed++;
            const lg_ckpt_entry key = {.tensor = &(lg_st_tensor){.name = it->string}};
            const lg_ckpt_entry *e = bsearch(&key, c->entries, (size_t)c->n_tensors,
                                             sizeof *c->entries, cmp_entry);
            if (!e) {
                rc = lg_err_set(err, "%s: tensor '%s' is listed in %s but missing from %s",
                                c->dir, it->string, LG_CKPT_INDEX, it->valuestring);
                break;
            }
            if (strcmp(c->file_names[e->file], it->valuestring) != 0) {
                rc = lg_err_set(err, "%s: tensor '%s' is listed in %s but stored in %s", c->dir,
                                it->string, it->valuestring, c->file_names[e->file]);
                break;
            }
        }
        if (rc == 0 && listed != c->n_tensors) {
            for (int i = 0; i < c->n_tensors; i++)
                if (!cJSON_GetObjectItemCaseSensitive(map, c->entries[i].tensor->name)) {
                    rc = lg_err_set(err, "%s: tensor '%s' in %s is not listed in %s", c->dir,
                                    c->entries[i].tensor->name, c->file_names[c->entries[i].file],
                                    LG_CKPT_INDEX);
                    break;
                }
            if (rc == 0)
                rc = lg_err_set(err, "%s: %s lists a tensor twice", c->dir, LG_CKPT_INDEX);
        }
    }
    cJSON_Delete(root);
    return rc;
}

static int open_index(lg_checkpoint *c, const char *index_path, lg_err *err)
{
    cJSON *root = lg_json_read_file(index_path, 64u << 20, err);
    return root ? open_index_doc(c, root, index_path, err) : -1;
}

lg_checkpoint *lg_ckpt_open_index_text(const char *dir, const char *text, size_t len, lg_err *err)
{
    lg_checkpoint *c = calloc(1, sizeof *c);
    if (!c) {
        lg_err_set(err, "%s: out of memory", dir);
        return NULL;
    }
    c->dir = strdup(dir);
    char *index = join(dir, LG_CKPT_INDEX);
    cJSON *root = lg_json_parse(text, len, index, err);
    int rc = root ? open_index_doc(c, root, index, err) : -1;
    free(index);
    if (rc != 0) {
        lg_ckpt_close(c);
        return NULL;
    }
    return c;
}

lg_checkpoint *lg_ckpt_open(const char *dir, lg_err *err)
{
    lg_checkpoint *c = calloc(1, sizeof *c);
    if (!c) {
        lg_err_set(err, "%s: out of memory", dir);
        return NULL;
    }
    c->dir = strdup(dir);
    char *index = join(dir, LG_CKPT_INDEX);
    char *single = join(dir, LG_CKPT_SINGLE);
    struct stat st;
    int rc;
    if (stat(index, &st) == 0) {
        rc = open_index(c, index, err);
    } else if (stat(single, &st) == 0) {
        rc = add_file(c, LG_CKPT_SINGLE, err) < 0 ? -1 : build_entries(c, err);
    } else {
        rc = lg_err_set(err, "%s: no %s or %s", dir, LG_CKPT_SINGLE, LG_CKPT_INDEX);
    }
    free(index);
    free(single);
    if (rc != 0) {
        lg_ckpt_close(c);
        return NULL;
    }
    return c;
}

void lg_ckpt_close(lg_checkpoint *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_files; i++) {
        lg_st_close(c->files[i]);
        free(c->file_names[i]);
    }
    free(c->files);
    free(c->file_names);
    free(c->entries);
    free(c->dir);
    free(c);
}

const lg_st_tensor *lg_ckpt_find(const lg_checkpoint *c, const char *name)
{
    lg_st_tensor probe = {.name = (char *)name};
    const lg_ckpt_entry key = {.tensor = &probe};
    const lg_ckpt_entry *e =
        bsearch(&key, c->entries, (size_t)c->n_tensors, sizeof *c->entries, cmp_entry);
    return e ? e->tensor : NULL;
}

uint64_t lg_ckpt_data_bytes(const lg_checkpoint *c)
{
    uint64_t total = 0;
    for (int i = 0; i < c->n_tensors; i++)
        total += lg_st_nbytes(c->entries[i].tensor);
    return total;
}
