#include "convert.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "json_file.h"
#include "llama_tensors.h"
#include "outdir.h"
#include "progress.h"
#include "quantize.h"
#include "sha256.h"

volatile sig_atomic_t lg_convert_interrupted;

/* Bytes moved per write call: bounds the conversion buffer and how long an interrupt waits. */
#define CHUNK_BYTES ((size_t)32 << 20)

/* Files besides the weights that travel with a checkpoint (tokenizer, generation defaults, licence). */
static const char *const aux_files[] = {
    "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "generation_config.json", "LICENSE", "LICENSE.txt", "USE_POLICY.md",
    "NOTICE", "PROVENANCE.md", "README.md",
};

typedef struct out_tensor {
    const lg_st_tensor *src;
    lg_dtype dtype;
    uint64_t nbytes;
    int shard;
    int mapped; /* src->data lies in a file mapping of the checkpoint */
    /* the name and shape written: src's, or a part of its quantized form (quantize.h) */
    char name[LG_TENSOR_NAME_MAX + 16];
    int ndim;
    int64_t shape[LG_ST_MAX_DIMS];
    int quantized;      /* 1: this entry is part `part` of src quantized with o->quant.scheme */
    lg_quant_part part;
} out_tensor;

typedef struct conversion {
    const lg_convert_opts *o;
    lg_hf_config *cfg;
    lg_checkpoint *ck;
    lg_plan plan;
    out_tensor *tensors;
    int n_tensors, n_shards;
    int n_sources; /* source tensors written (a quantized one gives 2 or 3 entries) */
    /* scales and mins of the tensor being quantized, written after its qweight */
    void *q_scales, *q_mins;
    char tmp_dir[4096];
    lg_progress progress;
    uint64_t done;
    /* source checksums, computed by a second thread while the weights are written */
    pthread_t hasher;
    int hasher_started;
    int n_hashed;
    char (*hash_names)[256];
    char (*hashes)[65];
    int hash_rc;
    lg_err hash_err;
} conversion;

/* ---------------------------------------------------------------- source checksums */

static int file_exists(const char *dir, const char *name)
{
    char path[4352];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void *hash_sources(void *arg)
{
    conversion *cv = arg;
    for (int i = 0; i < cv->n_hashed && !lg_convert_interrupted; i++) {
        char path[4352];
        snprintf(path, sizeof path, "%s/%s", cv->o->src_dir, cv->hash_names[i]);
        if (lg_sha256_file(path, cv->hashes[i], &cv->hash_err) != 0) {
            cv->hash_rc = -1;
            break;
        }
    }
    return NULL;
}

static int start_hashing(conversion *cv, lg_err *err)
{
    int max = cv->ck->n_files + 3 + (int)(sizeof aux_files / sizeof aux_files[0]);
    cv->hash_names = calloc((size_t)max, sizeof *cv->hash_names);
    cv->hashes = calloc((size_t)max, sizeof *cv->hashes);
    if (!cv->hash_names || !cv->hashes)
        return lg_err_set(err, "out of memory");
#define ADD(name) snprintf(cv->hash_names[cv->n_hashed++], sizeof cv->hash_names[0], "%s", name)
    ADD("config.json");
    if (file_exists(cv->o->src_dir, LG_CKPT_INDEX))
        ADD(LG_CKPT_INDEX);
    for (int i = 0; i < cv->ck->n_files; i++)
        ADD(cv->ck->file_names[i]);
    for (size_t i = 0; i < sizeof aux_files / sizeof aux_files[0]; i++)
        if (file_exists(cv->o->src_dir, aux_files[i]))
            ADD(aux_files[i]);
#undef ADD
    if (pthread_create(&cv->hasher, NULL, hash_sources, cv) != 0)
        return lg_err_set(err, "cannot start the checksum thread");
    cv->hasher_started = 1;
    return 0;
}

static int finish_hashing(conversion *cv, lg_err *err)
{
    if (!cv->hasher_started)
        return 0;
    pthread_join(cv->hasher, NULL);
    cv->hasher_started = 0;
    if (cv->hash_rc != 0) {
        *err = cv->hash_err;
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- output layout */

static lg_dtype out_dtype(const conversion *cv, const lg_st_tensor *t)
{
    return cv->o->has_dtype ? cv->o->dtype : t->dtype;
}

/* 1 when t belongs to a file lg_st_open mapped (not a caller's buffer, which must not be
 * madvised away). */
static int in_file_mapping(const lg_checkpoint *ck, const lg_st_tensor *t)
{
    for (int i = 0; i < ck->n_files; i++)
        for (int k = 0; k < ck->files[i]->n_tensors; k++)
            if (&ck->files[i]->tensors[k] == t)
                return ck->files[i]->owns_map;
    return 0;
}

/* Fills the entries src becomes (out[0] alone, or its 2-3 quantized parts); returns their count. */
static int set_outputs(const conversion *cv, const lg_st_tensor *src, out_tensor *out)
{
    const lg_quant_scheme *qs = &cv->o->quant.scheme;
    int quant = lg_quant_wants(&cv->o->quant, src->name, src->ndim);
    int parts = quant ? lg_quant_n_parts(qs) : 1;
    for (int p = 0; p < parts; p++) {
        out_tensor *t = &out[p];
        t->src = src;
        t->mapped = in_file_mapping(cv->ck, src);
        t->quantized = quant;
        t->part = (lg_quant_part)p;
        if (!quant) {
            snprintf(t->name, sizeof t->name, "%s", src->name);
            t->dtype = out_dtype(cv, src);
            t->ndim = src->ndim;
            memcpy(t->shape, src->shape, sizeof t->shape);
            t->nbytes = src->nelem * lg_dtype_size(t->dtype);
            continue;
        }
        lg_quant_part_name(src->name, t->part, t->name, sizeof t->name);
        t->dtype = lg_quant_part_dtype(qs, t->part);
        t->ndim = 2;
        lg_quant_part_shape(qs, t->part, src->shape[0], src->shape[1], t->shape);
        t->nbytes = (uint64_t)t->shape[0] * (uint64_t)t->shape[1] * lg_dtype_size(t->dtype);
    }
    return parts;
}

/* Canonical tensor order; consecutive tensors fill a shard up to shard_bytes (a tensor larger
 * than that gets a shard of its own). */
static int layout_tensors(conversion *cv, lg_err *err)
{
    lg_tensor_spec *specs;
    int n = lg_llama_tensor_specs(cv->cfg, &specs);
    if (n < 0)
        return lg_err_set(err, "out of memory");
    cv->tensors = calloc((size_t)n * 3, sizeof *cv->tensors); /* up to 3 parts when quantized */
    if (!cv->tensors) {
        free(specs);
        return lg_err_set(err, "out of memory");
    }
    uint64_t in_shard = 0, limit = cv->o->shard_bytes ? cv->o->shard_bytes : LG_DEFAULT_SHARD_BYTES;
    int shard = 0, k = 0;
    for (int i = 0; i < n; i++) {
        const lg_st_tensor *src = lg_ckpt_find(cv->ck, specs[i].name);
        if (!src) {
            lg_err_set(err, "%s: no tensor '%s' (a quantized checkpoint is not a source: convert "
                            "its float original)", cv->ck->dir, specs[i].name);
            free(specs);
            return -1;
        }
        /* a tensor's parts stay together in one shard */
        int parts = set_outputs(cv, src, &cv->tensors[k]);
        uint64_t bytes = 0;
        for (int p = 0; p < parts; p++)
            bytes += cv->tensors[k + p].nbytes;
        if (in_shard > 0 && in_shard + bytes > limit) {
            shard++;
            in_shard = 0;
        }
        for (int p = 0; p < parts; p++)
            cv->tensors[k + p].shard = shard;
        in_shard += bytes;
        k += parts;
    }
    cv->n_tensors = k;
    cv->n_sources = n;
    cv->n_shards = shard + 1;
    free(specs);
    return 0;
}

static void shard_name(const conversion *cv, int shard, char *buf, size_t n)
{
    if (cv->n_shards == 1)
        snprintf(buf, n, "%s", LG_CKPT_SINGLE);
    else
        snprintf(buf, n, "model-%05d-of-%05d.safetensors", shard + 1, cv->n_shards);
}

/* ---------------------------------------------------------------- writing */

static int check_interrupt(lg_err *err)
{
    if (lg_convert_interrupted)
        return lg_err_set(err, "interrupted");
    return 0;
}

/* Unmaps source pages once they are copied. They stay in the page cache (nothing is read twice),
 * but they leave this process's resident set: mapped file pages count in RSS, which would
 * otherwise grow by every byte of the model read (138 GB for a 70B in f16) instead of staying
 * near CHUNK_BYTES. Whole pages only; the mapping starts on a page. */
static void release_source(const void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = (uintptr_t)p & ~(page - 1), end = ((uintptr_t)p + n) & ~(page - 1);
    if (end > begin)
        madvise((void *)begin, end - begin, MADV_DONTNEED);
}

/* Writes part t->part of t->src quantized (convert/quantize.h). The qweight part converts blocks of
 * rows to float32 and quantizes them inside buf (memory stays bounded by it) and keeps the tensor's
 * scales and mins, which the parts that follow it write. */
static int write_quantized(conversion *cv, lg_st_writer *w, const out_tensor *t, void *buf,
                           lg_err *err)
{
    const lg_quant_scheme *qs = &cv->o->quant.scheme;
    const lg_st_tensor *src = t->src;
    if (t->part != LG_QPART_WEIGHT) {
        const void *side = t->part == LG_QPART_SCALES ? cv->q_scales : cv->q_mins;
        if (lg_st_writer_write(w, side, (size_t)t->nbytes, err) != 0)
            return -1;
        cv->done += t->nbytes;
        lg_progress_update(&cv->progress, cv->done);
        return 0;
    }
    int64_t rows = src->shape[0], cols = src->shape[1];
    size_t ng = (size_t)lg_quant_n_groups(qs, cols), rb = lg_quant_row_bytes(qs, cols);
    size_t ssz = lg_dtype_size(lg_quant_part_dtype(qs, LG_QPART_SCALES)), esz = lg_dtype_size(src->dtype);
    free(cv->q_scales);
    free(cv->q_mins);
    cv->q_scales = malloc((size_t)rows * ng * ssz);
    cv->q_mins = qs->has_mins ? malloc((size_t)rows * ng * 2) : NULL;
    if (!cv->q_scales || (qs->has_mins && !cv->q_mins))
        return lg_err_set(err, "tensor '%s': out of memory for its scales", src->name);
    int64_t per = (int64_t)(CHUNK_BYTES / ((size_t)cols * sizeof(float) + rb));
    if (per < 1)
        return lg_err_set(err, "tensor '%s': rows of %lld columns are too long to quantize",
                          src->name, (long long)cols);
    float *f = buf;
    uint8_t *codes = (uint8_t *)buf + (size_t)per * cols * sizeof(float);
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        if (check_interrupt(err))
            return -1;
        int64_t n = rows - r0 < per ? rows - r0 : per;
        const char *chunk = (const char *)src->data + (size_t)r0 * cols * esz;
        lg_convert_floats(f, LG_DT_F32, chunk, src->dtype, (size_t)(n * cols));
        if (lg_quantize_rows(qs, f, n, cols, codes, (char *)cv->q_scales + (size_t)r0 * ng * ssz,
                             cv->q_mins ? (char *)cv->q_mins + (size_t)r0 * ng * 2 : NULL,
                             src->name, err) != 0 ||
            lg_st_writer_write(w, codes, (size_t)n * rb, err) != 0)
            return -1;
        if (t->mapped)
            release_source(chunk, (size_t)(n * cols) * esz);
        cv->done += (uint64_t)n * rb;
        lg_progress_update(&cv->progress, cv->done);
    }
    return 0;
}

static int copy_tensor(conversion *cv, lg_st_writer *w, const out_tensor *t, void *buf, lg_err *err)
{
    if (t->quantized)
        return write_quantized(cv, w, t, buf, err);
    const char *src = t->src->data;
    size_t esz_in = lg_dtype_size(t->src->dtype), esz_out = lg_dtype_size(t->dtype);
    size_t per_chunk = CHUNK_BYTES / (esz_in > esz_out ? esz_in : esz_out);
    for (uint64_t i = 0; i < t->src->nelem; i += per_chunk) {
        if (check_interrupt(err))
            return -1;
        size_t n = t->src->nelem - i < per_chunk ? (size_t)(t->src->nelem - i) : per_chunk;
        const void *chunk = src + i * esz_in;
        if (t->dtype != t->src->dtype) {
            lg_convert_floats(buf, t->dtype, chunk, t->src->dtype, n);
            chunk = buf;
        }
        if (lg_st_writer_write(w, chunk, n * esz_out, err) != 0)
            return -1;
        if (t->mapped)
            release_source(src + i * esz_in, n * esz_in);
        cv->done += n * esz_out;
        lg_progress_update(&cv->progress, cv->done);
    }
    return 0;
}

static int write_shard(conversion *cv, int shard, void *buf, lg_err *err)
{
    char name[64], path[4200];
    shard_name(cv, shard, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", cv->tmp_dir, name);
    lg_st_writer *w = lg_st_writer_create(path, err);
    if (!w)
        return -1;
    int rc = lg_st_writer_meta(w, "format", "pt", err);
    for (int i = 0; i < cv->n_tensors && rc == 0; i++) {
        const out_tensor *t = &cv->tensors[i];
        if (t->shard == shard)
            rc = lg_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, err);
    }
    if (rc == 0)
        rc = lg_st_writer_begin(w, err);
    for (int i = 0; i < cv->n_tensors && rc == 0; i++)
        if (cv->tensors[i].shard == shard)
            rc = copy_tensor(cv, w, &cv->tensors[i], buf, err);
    if (rc != 0) {
        lg_st_writer_abort(w);
        return -1;
    }
    return lg_st_writer_finish(w, err);
}

static int write_index(conversion *cv, lg_err *err)
{
    if (cv->n_shards == 1)
        return 0;
    cJSON *doc = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(doc, "metadata");
    uint64_t total = 0, params = 0;
    for (int i = 0; i < cv->n_tensors; i++) {
        total += cv->tensors[i].nbytes;
        if (!cv->tensors[i].quantized || cv->tensors[i].part == LG_QPART_WEIGHT)
            params += cv->tensors[i].src->nelem;
    }
    cJSON_AddNumberToObject(meta, "total_parameters", (double)params);
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(doc, "weight_map");
    for (int i = 0; i < cv->n_tensors; i++) {
        char name[64];
        shard_name(cv, cv->tensors[i].shard, name, sizeof name);
        cJSON_AddStringToObject(map, cv->tensors[i].name, name);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", cv->tmp_dir, LG_CKPT_INDEX);
    int rc = lg_json_write_file(path, doc, err);
    cJSON_Delete(doc);
    return rc;
}

static const char *torch_dtype_name(lg_dtype dt)
{
    switch (dt) {
    case LG_DT_F16:
        return "float16";
    case LG_DT_BF16:
        return "bfloat16";
    case LG_DT_F64:
        return "float64";
    default:
        return "float32";
    }
}

static cJSON *longgen_object(const conversion *cv)
{
    cJSON *lg = cJSON_CreateObject();
    cJSON_AddNumberToObject(lg, "format_version", LG_LONGGEN_FORMAT_VERSION);
    cJSON_AddStringToObject(lg, "tool", "lg-convert " LG_VERSION);
    cJSON *layers = cJSON_AddArrayToObject(lg, "layers");
    for (int i = 0; i < cv->plan.n_layers; i++)
        cJSON_AddItemToArray(layers, lg_layer_attn_to_json(&cv->plan.layers[i]));
    char desc[2048];
    lg_plan_describe(cv->plan.layers, cv->plan.n_layers, desc, sizeof desc);
    cJSON_AddStringToObject(lg, "plan", desc);
    cJSON_AddNumberToObject(lg, "max_context", cv->plan.max_pos);
    if (cv->o->quant.scheme.method != LG_QUANT_NONE)
        cJSON_AddItemToObject(lg, "quantization", lg_quant_config_to_json(&cv->o->quant));
    cJSON *src = cJSON_AddObjectToObject(lg, "source");
    cJSON_AddNumberToObject(src, "max_position_embeddings", cv->cfg->max_pos);
    char rope[256];
    lg_rope_describe(&cv->cfg->rope, rope, sizeof rope);
    cJSON_AddStringToObject(src, "rope", rope);
    cJSON *files = cJSON_AddObjectToObject(src, "sha256");
    for (int i = 0; i < cv->n_hashed; i++)
        cJSON_AddStringToObject(files, cv->hash_names[i], cv->hashes[i]);
    return lg;
}

/* The source config with its keys kept, RoPE/context/dtype rewritten and the longgen object added. */
static int write_config(conversion *cv, lg_err *err)
{
    cJSON *doc = cJSON_Duplicate(cv->cfg->json, 1);
    if (!doc)
        return lg_err_set(err, "out of memory");
    lg_rope_to_config(&cv->plan.rope, doc, cv->cfg->v5_style);
    cJSON *max_pos = cJSON_CreateNumber(cv->plan.max_pos);
    if (cJSON_GetObjectItemCaseSensitive(doc, "max_position_embeddings"))
        cJSON_ReplaceItemInObjectCaseSensitive(doc, "max_position_embeddings", max_pos);
    else
        cJSON_AddItemToObject(doc, "max_position_embeddings", max_pos);
    if (cv->o->has_dtype) {
        const char *key = cv->cfg->v5_style ? "dtype" : "torch_dtype";
        cJSON *name = cJSON_CreateString(torch_dtype_name(cv->o->dtype));
        if (cJSON_GetObjectItemCaseSensitive(doc, key))
            cJSON_ReplaceItemInObjectCaseSensitive(doc, key, name);
        else
            cJSON_AddItemToObject(doc, key, name);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "longgen");
    cJSON_AddItemToObject(doc, "longgen", longgen_object(cv));
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", cv->tmp_dir);
    int rc = lg_json_write_file(path, doc, err);
    cJSON_Delete(doc);
    return rc;
}

static int copy_file(const char *from, const char *to, lg_err *err)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return lg_err_set(err, "%s: cannot open: %s", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return lg_err_set(err, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    ssize_t got;
    int rc = 0;
    while (rc == 0 && (got = read(in, buf, sizeof buf)) != 0) {
        if (got < 0) {
            rc = lg_err_set(err, "%s: read error: %s", from, strerror(errno));
            break;
        }
        rc = lg_write_all(out, buf, (size_t)got, to, err);
    }
    if (rc == 0 && fsync(out) != 0)
        rc = lg_err_set(err, "%s: write failed: %s", to, strerror(errno));
    close(in);
    if (close(out) != 0 && rc == 0)
        rc = lg_err_set(err, "%s: close failed: %s", to, strerror(errno));
    return rc;
}

static int copy_aux_files(conversion *cv, lg_err *err)
{
    for (size_t i = 0; i < sizeof aux_files / sizeof aux_files[0]; i++) {
        if (!file_exists(cv->o->src_dir, aux_files[i]))
            continue;
        char from[4352], to[4352];
        snprintf(from, sizeof from, "%s/%s", cv->o->src_dir, aux_files[i]);
        snprintf(to, sizeof to, "%s/%s", cv->tmp_dir, aux_files[i]);
        if (copy_file(from, to, err) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- driver */

static int convert_steps(conversion *cv, lg_convert_result *res, lg_err *err)
{
    const lg_convert_opts *o = cv->o;
    int n_extra = 0;
    if (!(cv->cfg = lg_hf_config_read(o->src_dir, err)))
        return -1;
    if (!(cv->ck = lg_ckpt_open(o->src_dir, err)))
        return -1;
    if (lg_llama_check(cv->cfg, cv->ck, o->allow_extra, &n_extra, err) != 0)
        return -1;
    if (o->has_dtype && !lg_dtype_is_float(o->dtype))
        return lg_err_set(err, "--dtype must be f16, bf16 or f32");
    if (o->quant.scheme.method != LG_QUANT_NONE && lg_quant_scheme_check(&o->quant.scheme, err) != 0)
        return -1;
    if (lg_plan_build(&o->plan, cv->cfg, &cv->plan, err) != 0)
        return -1;
    if (layout_tensors(cv, err) != 0 || lg_outdir_begin(o->out_dir, o->force, cv->tmp_dir, sizeof cv->tmp_dir, err) != 0 || start_hashing(cv, err) != 0)
        return -1;
    uint64_t total = 0;
    for (int i = 0; i < cv->n_tensors; i++)
        total += cv->tensors[i].nbytes;
    void *buf = malloc(CHUNK_BYTES);
    if (!buf)
        return lg_err_set(err, "out of memory");
    lg_progress_start(&cv->progress, "lg-convert", total, "B");
    int rc = 0;
    for (int s = 0; s < cv->n_shards && rc == 0; s++)
        rc = write_shard(cv, s, buf, err);
    lg_progress_end(&cv->progress);
    free(buf);
    if (rc != 0 || finish_hashing(cv, err) != 0)
        return -1;
    if (write_index(cv, err) || write_config(cv, err) || copy_aux_files(cv, err))
        return -1;
    if (check_interrupt(err) != 0)
        return -1;
    if (lg_outdir_publish(cv->tmp_dir, o->out_dir, err) != 0)
        return -1;
    cv->tmp_dir[0] = 0;
    res->n_tensors = cv->n_tensors;
    res->n_shards = cv->n_shards;
    res->n_dropped = cv->ck->n_tensors - cv->n_sources;
    res->bytes_written = total;
    return 0;
}

int lg_convert_run(const lg_convert_opts *o, lg_convert_result *res, lg_err *err)
{
    conversion cv = {.o = o};
    lg_convert_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    double t0 = lg_now();
    int rc = convert_steps(&cv, res, err);
    if (cv.hasher_started) {
        lg_err ignored;
        finish_hashing(&cv, &ignored);
    }
    if (rc != 0 && cv.tmp_dir[0])
        lg_remove_tree(cv.tmp_dir);
    res->seconds = lg_now() - t0;
    lg_plan_free(&cv.plan);
    free(cv.tensors);
    free(cv.q_scales);
    free(cv.q_mins);
    free(cv.hash_names);
    free(cv.hashes);
    lg_ckpt_close(cv.ck);
    lg_hf_config_free(cv.cfg);
    return rc;
}
