/* libFuzzer harness: model.safetensors.index.json (lg_ckpt_open_index_text). The input is the
 * index text; the shards it may name live in a scratch directory made once: two valid shards
 * (model-00001-of-00002.safetensors: a, b; model-00002-of-00002.safetensors: c), a file that is not
 * safetensors (config.json) and a directory (sub). An accepted checkpoint must find every tensor
 * its index lists in the shard the index names. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[4096];

static void remove_dir(void)
{
    const char *names[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "config.json"};
    char path[4200];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

typedef struct shard_tensor {
    const char *name;
    lg_dtype dtype;
    int ndim;
    int64_t shape[2];
} shard_tensor;

static int write_shard(const char *name, const shard_tensor *ts, int n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    lg_err err;
    lg_st_writer *w = lg_st_writer_create(path, &err);
    if (!w)
        return -1;
    for (int i = 0; i < n; i++)
        if (lg_st_writer_add(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].shape, &err) != 0)
            goto fail;
    if (lg_st_writer_begin(w, &err) != 0)
        goto fail;
    uint8_t bytes[64];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(37 * i + 11);
    for (int i = 0; i < n; i++) {
        uint64_t nelem;
        lg_shape_nelem(ts[i].ndim, ts[i].shape, &nelem);
        if (lg_st_writer_write(w, bytes, (size_t)(nelem * lg_dtype_size(ts[i].dtype)), &err) != 0)
            goto fail;
    }
    return lg_st_writer_finish(w, &err);
fail:
    lg_st_writer_abort(w);
    return -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/lg-fuzz-index-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    atexit(remove_dir);
    const shard_tensor one[] = {{"a", LG_DT_F32, 1, {2}}, {"b", LG_DT_F16, 2, {3, 2}}};
    const shard_tensor two[] = {{"c", LG_DT_BF16, 2, {1, 2}}};
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{\"model_type\": \"llama\"}\n", f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/sub", dir);
    mkdir(path, 0755);
    if (write_shard("model-00001-of-00002.safetensors", one, 2) != 0 ||
        write_shard("model-00002-of-00002.safetensors", two, 1) != 0) {
        fprintf(stderr, "fuzz_index: cannot write the shards in %s\n", dir);
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_err err;
    lg_checkpoint *c = lg_ckpt_open_index_text(dir, (const char *)data, size, &err);
    if (!c) {
        if (strncmp(err.msg, dir, strlen(dir)) != 0)
            __builtin_trap();
        return 0;
    }
    /* accepted: the index parses, so every weight_map entry must resolve to its named shard */
    cJSON *doc = cJSON_ParseWithLength((const char *)data, size);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(doc, "weight_map");
    const cJSON *it;
    int listed = 0;
    cJSON_ArrayForEach(it, map)
    {
        const lg_st_tensor *t = lg_ckpt_find(c, it->string);
        if (!t)
            __builtin_trap();
        listed++;
    }
    if (listed != c->n_tensors || lg_ckpt_data_bytes(c) > 64)
        __builtin_trap();
    cJSON_Delete(doc);
    lg_ckpt_close(c);
    return 0;
}
