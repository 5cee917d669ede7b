#include "synth.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "convert.h"
#include "hf_config.h"
#include "json_file.h"
#include "llama_tensors.h"
#include "outdir.h"
#include "progress.h"
#include "safetensors.h"

int lg_synth_preset(const char *name, lg_synth_opts *o)
{
    static const struct {
        const char *name;
        int hidden, intermediate, layers, heads, kv_heads, vocab, max_pos;
    } presets[] = {
        /* widths from the Llama-2 releases' config.json */
        {"7b", 4096, 11008, 32, 32, 32, 32000, 4096},
        {"13b", 5120, 13824, 40, 40, 40, 32000, 4096},
        {"70b", 8192, 28672, 80, 64, 8, 32000, 4096},
        {"tiny", 128, 352, 6, 4, 2, 1024, 4096},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            o->hidden = presets[i].hidden;
            o->intermediate = presets[i].intermediate;
            o->layers = presets[i].layers;
            o->heads = presets[i].heads;
            o->kv_heads = presets[i].kv_heads;
            o->vocab = presets[i].vocab;
            o->max_pos = presets[i].max_pos;
            return 0;
        }
    return -1;
}

/* A Llama-2-style (transformers 4.x) config.json for the shape. */
static cJSON *synth_config(const lg_synth_opts *o)
{
    cJSON *c = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddNumberToObject(c, "bos_token_id", 1);
    cJSON_AddNumberToObject(c, "eos_token_id", 2);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "hidden_size", o->hidden);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "intermediate_size", o->intermediate);
    cJSON_AddNumberToObject(c, "max_position_embeddings", o->max_pos);
    cJSON_AddStringToObject(c, "model_type", "llama");
    cJSON_AddNumberToObject(c, "num_attention_heads", o->heads);
    cJSON_AddNumberToObject(c, "num_hidden_layers", o->layers);
    cJSON_AddNumberToObject(c, "num_key_value_heads", o->kv_heads);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNullToObject(c, "rope_scaling");
    cJSON_AddNumberToObject(c, "rope_theta", 10000.0);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", o->tie);
    cJSON_AddStringToObject(c, "torch_dtype", o->dtype == LG_DT_BF16 ? "bfloat16"
                                              : o->dtype == LG_DT_F32 ? "float32" : "float16");
    cJSON_AddStringToObject(c, "transformers_version", "4.31.0");
    cJSON_AddNumberToObject(c, "vocab_size", o->vocab);
    return c;
}

/* xorshift64*: fast, deterministic per (seed, tensor) */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* Uniform values with std 0.02 (Llama's initializer_range) for matrices; norms near 1. */
static void fill_random(void *buf, lg_dtype dt, size_t n, int is_norm, uint64_t *state)
{
    const float amp = 0.02f * 1.7320508f;
    for (size_t i = 0; i < n; i++) {
        float u = (float)(next_rand(state) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
        float v = is_norm ? 1.0f + 0.1f * u : amp * u;
        if (dt == LG_DT_F32)
            ((float *)buf)[i] = v;
        else if (dt == LG_DT_BF16)
            ((uint16_t *)buf)[i] = lg_f32_to_bf16(v);
        else
            ((uint16_t *)buf)[i] = lg_f32_to_f16(v);
    }
}

/* Values are drawn in blocks of SUB elements, each from its own generator seeded by (seed, tensor,
 * offset): the bytes depend on the seed alone, not on how many threads fill them. */
#define SUB ((size_t)1 << 16)

static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

typedef struct fill_job {
    void *buf;
    lg_dtype dt;
    size_t n;         /* elements in buf */
    uint64_t first;   /* tensor element of buf[0] (a multiple of SUB) */
    uint64_t tensor_seed;
    int is_norm;
    int part, parts;  /* this thread fills blocks part, part + parts, ... */
} fill_job;

static void *fill_part(void *arg)
{
    const fill_job *j = arg;
    size_t esz = lg_dtype_size(j->dt);
    for (size_t b = (size_t)j->part * SUB; b < j->n; b += (size_t)j->parts * SUB) {
        uint64_t state = splitmix(j->tensor_seed ^ splitmix(j->first + b)) | 1;
        size_t n = j->n - b < SUB ? j->n - b : SUB;
        fill_random((char *)j->buf + b * esz, j->dt, n, j->is_norm, &state);
    }
    return NULL;
}

/* Fills buf (n elements from tensor element `first`) on up to 16 threads. */
static void fill_parallel(void *buf, lg_dtype dt, size_t n, uint64_t first, uint64_t tensor_seed,
                          int is_norm)
{
    enum { MAX_THREADS = 16 };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int parts = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
    if ((size_t)parts * SUB > n)
        parts = (int)((n + SUB - 1) / SUB);
    fill_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int p = 0; p < parts; p++) {
        jobs[p] = (fill_job){buf, dt, n, first, tensor_seed, is_norm, p, parts};
        started[p] = p > 0 && pthread_create(&th[p], NULL, fill_part, &jobs[p]) == 0;
    }
    for (int p = 0; p < parts; p++)
        if (!started[p]) /* this thread's share, and any a thread could not take */
            fill_part(&jobs[p]);
    for (int p = 1; p < parts; p++)
        if (started[p])
            pthread_join(th[p], NULL);
}

static int write_synth_shard(const lg_synth_opts *o, const char *dir, const lg_tensor_spec *specs,
                             int first, int last, int shard, int n_shards, void *buf,
                             size_t buf_elems, lg_progress *pg, uint64_t *done, lg_err *err)
{
    char path[4300];
    if (n_shards == 1)
        snprintf(path, sizeof path, "%s/%s", dir, LG_CKPT_SINGLE);
    else
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, shard + 1, n_shards);
    lg_st_writer *w = lg_st_writer_create(path, err);
    if (!w)
        return -1;
    int rc = lg_st_writer_meta(w, "format", "pt", err);
    for (int i = first; i < last && rc == 0; i++)
        rc = lg_st_writer_add(w, specs[i].name, o->dtype, specs[i].ndim, specs[i].shape, err);
    if (rc == 0)
        rc = lg_st_writer_begin(w, err);
    size_t esz = lg_dtype_size(o->dtype);
    for (int i = first; i < last && rc == 0; i++) {
        uint64_t nelem;
        lg_shape_nelem(specs[i].ndim, specs[i].shape, &nelem);
        uint64_t tensor_seed = splitmix((o->seed + 1) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)i);
        int is_norm = strstr(specs[i].name, "norm") != NULL;
        for (uint64_t k = 0; k < nelem && rc == 0; k += buf_elems) {
            if (lg_convert_interrupted) {
                rc = lg_err_set(err, "interrupted");
                break;
            }
            size_t n = nelem - k < buf_elems ? (size_t)(nelem - k) : buf_elems;
            fill_parallel(buf, o->dtype, n, k, tensor_seed, is_norm);
            rc = lg_st_writer_write(w, buf, n * esz, err);
            *done += n * esz;
            lg_progress_update(pg, *done);
        }
    }
    if (rc != 0) {
        lg_st_writer_abort(w);
        return -1;
    }
    return lg_st_writer_finish(w, err);
}

int lg_synth_write(const lg_synth_opts *o, lg_err *err)
{
    cJSON *cfg_json = synth_config(o);
    char *text = cJSON_Print(cfg_json);
    lg_hf_config *cfg = lg_hf_config_parse(text, strlen(text), "synth config", err);
    free(text);
    if (!cfg) {
        cJSON_Delete(cfg_json);
        return -1;
    }
    lg_tensor_spec *specs = NULL;
    int n = lg_llama_tensor_specs(cfg, &specs);
    char tmp[4200] = "";
    int rc = n < 0 ? lg_err_set(err, "out of memory") : 0;
    if (rc == 0)
        rc = lg_outdir_begin(o->out_dir, o->force, tmp, sizeof tmp, err);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t e;
        lg_shape_nelem(specs[i].ndim, specs[i].shape, &e);
        total += e * lg_dtype_size(o->dtype);
    }
    int n_shards = o->shards > 0 ? o->shards : 1;
    if (n_shards > n)
        n_shards = n;
    size_t buf_elems = (size_t)4 << 20;
    void *buf = malloc(buf_elems * 4);
    if (!buf && rc == 0)
        rc = lg_err_set(err, "out of memory");
    /* shards split the canonical tensor order into runs of about total / n_shards bytes */
    cJSON *index = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(index, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(index, "weight_map");
    lg_progress pg;
    lg_progress_start(&pg, "lg-convert synth", total, "B");
    uint64_t done = 0, acc = 0;
    int first = 0;
    for (int s = 0; s < n_shards && rc == 0; s++) {
        int last = first;
        uint64_t target = total / (uint64_t)n_shards * (uint64_t)(s + 1);
        while (last < n && (s == n_shards - 1 || acc < target || last == first)) {
            uint64_t e;
            lg_shape_nelem(specs[last].ndim, specs[last].shape, &e);
            acc += e * lg_dtype_size(o->dtype);
            char name[64];
            if (n_shards == 1)
                snprintf(name, sizeof name, "%s", LG_CKPT_SINGLE);
            else
                snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
            cJSON_AddStringToObject(map, specs[last].name, name);
            last++;
        }
        rc = write_synth_shard(o, tmp, specs, first, last, s, n_shards, buf, buf_elems, &pg, &done, err);
        first = last;
    }
    lg_progress_end(&pg);
    char path[4300];
    if (rc == 0 && n_shards > 1) {
        snprintf(path, sizeof path, "%s/%s", tmp, LG_CKPT_INDEX);
        rc = lg_json_write_file(path, index, err);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/config.json", tmp);
        rc = lg_json_write_file(path, cfg_json, err);
    }
    if (rc == 0)
        rc = lg_outdir_publish(tmp, o->out_dir, err);
    else if (tmp[0])
        lg_remove_tree(tmp);
    cJSON_Delete(index);
    cJSON_Delete(cfg_json);
    free(buf);
    free(specs);
    lg_hf_config_free(cfg);
    return rc;
}
