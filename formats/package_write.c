/* lg-pack's side of packages: a checkpoint directory -> NAME.lgpkg (layout in package.h).
 *
 * A tar header carries its member's size, and the manifest (first) carries every member's size and
 * sha256, so the compressed members are made before the archive: pass 1 compresses each tensor file
 * into a temporary directory beside the output (and hashes every file), pass 2 writes the manifest
 * and copies the members into the archive. Memory stays a few 16 MiB buffers plus zstd's. */
#include "package.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "hf_config.h"
#include "llama_tensors.h"
#include "outdir.h"
#include "package_manifest.h"
#include "progress.h"
#include "quant_format.h"
#include "sha256.h"

/* Bytes per read: bounds the buffers and how long an interrupt waits. */
#define IO_BYTES ((size_t)16 << 20)
#define PARTIAL_NAME "package.partial"

typedef struct packer {
    const lg_pack_opts *o;
    int level, workers;
    char **names;
    int n_names;
    lg_pkg_file *files;
    char tmp_dir[4200];
    unsigned char *buf;
    lg_progress progress;
    uint64_t done, total_in, total_stored;
    cJSON *model, *quant;
} packer;

static int check_interrupt(lg_err *err)
{
    return lg_package_interrupted ? lg_err_set(err, "interrupted") : 0;
}

static void join(char *buf, size_t n, const char *dir, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---------------------------------------------------------------- the files to pack */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files of the directory, sorted bytewise (the archive's order, on every machine). */
static int list_files(packer *p, lg_err *err)
{
    const char *dir = p->o->model_dir;
    DIR *d = opendir(dir);
    if (!d)
        return lg_err_set(err, "%s: cannot open the model directory: %s", dir, strerror(errno));
    int rc = 0, cap = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        char path[4352];
        struct stat st;
        join(path, sizeof path, dir, name);
        if (lstat(path, &st) != 0)
            rc = lg_err_set(err, "%s: cannot stat: %s", path, strerror(errno));
        else if (S_ISLNK(st.st_mode))
            rc = lg_err_set(err, "%s: is a symbolic link; packages hold regular files only (copy the file in)",
                            path);
        else if (S_ISDIR(st.st_mode))
            rc = lg_err_set(err, "%s: is a directory; a package holds the files of one flat directory",
                            path);
        else if (!S_ISREG(st.st_mode))
            rc = lg_err_set(err, "%s: is not a regular file", path);
        else if (strcmp(name, LG_PKG_MANIFEST) == 0 || strcmp(name, LG_PKG_MANIFEST_SUM) == 0)
            continue; /* left by an earlier unpack; the package gets a new one */
        else if (!lg_pkg_name_ok(name))
            rc = lg_err_set(err, "%s: the name cannot go into a package (control characters, '\\' or "
                            "longer than %d bytes)", path, LG_PKG_NAME_MAX);
        else if (p->n_names >= LG_PKG_MAX_FILES)
            rc = lg_err_set(err, "%s: more than %d files", dir, LG_PKG_MAX_FILES);
        if (rc != 0)
            break;
        if (p->n_names == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(p->names, sizeof *grown * (size_t)cap);
            if (!grown) {
                rc = lg_err_set(err, "out of memory");
                break;
            }
            p->names = grown;
        }
        if (!(p->names[p->n_names] = strdup(name)))
            rc = lg_err_set(err, "out of memory");
        else
            p->n_names++;
    }
    closedir(d);
    if (rc == 0 && p->n_names == 0)
        rc = lg_err_set(err, "%s: no files to pack", dir);
    if (rc == 0)
        qsort(p->names, (size_t)p->n_names, sizeof *p->names, cmp_names);
    return rc;
}

/* The package must not land in the directory it packs (it would pack its own temporary files). */
static int check_out_path(const lg_pack_opts *o, lg_err *err)
{
    char parent[4200], real_out[PATH_MAX], real_model[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", o->out_path);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = 0;
    else
        *slash = 0;
    if (!realpath(parent, real_out))
        return lg_err_set(err, "%s: the directory for the package does not exist: %s", parent,
                          strerror(errno));
    if (!realpath(o->model_dir, real_model))
        return lg_err_set(err, "%s: %s", o->model_dir, strerror(errno));
    if (strcmp(real_out, real_model) == 0)
        return lg_err_set(err, "%s: the package cannot be written inside the model directory it packs",
                          o->out_path);
    struct stat st;
    if (lstat(o->out_path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return lg_err_set(err, "%s: is a directory", o->out_path);
        if (!o->force)
            return lg_err_set(err, "%s: already exists (remove it or pass --force)", o->out_path);
    }
    return 0;
}

/* ---------------------------------------------------------------- model summary */

static const char *base_name(const char *dir, char *buf, size_t n)
{
    snprintf(buf, n, "%s", dir);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = 0;
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

static void attn_name(const lg_layer_attn *a, char *buf, size_t n)
{
    if (a->kind == LG_ATTN_SINK_WINDOW)
        snprintf(buf, n, "sink_window(sink=%d,window=%d)", a->sink, a->window);
    else if (a->kind == LG_ATTN_BLOCK_STRIDED)
        snprintf(buf, n, "block_strided(block=%d,local=%d,stride=%d)", a->block, a->local, a->stride);
    else
        snprintf(buf, n, "full");
}

static void appendf(char *buf, size_t n, size_t *used, const char *fmt, ...) LG_PRINTF(4, 5);
static void appendf(char *buf, size_t n, size_t *used, const char *fmt, ...)
{
    if (*used >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *used, n - *used, fmt, ap);
    va_end(ap);
    *used = w < 0 ? n : *used + (size_t)w;
}

/* "layers 2-3 full; layers 0-1,4-5 sink_window(sink=16,window=256)": each distinct pattern with
 * the runs of layers that use it. */
static void describe_layers(const lg_layer_attn *layers, int n_layers, char *buf, size_t n)
{
    char(*names)[128] = calloc((size_t)n_layers + 1, sizeof *names);
    size_t used = 0;
    buf[0] = 0;
    if (!names)
        return;
    for (int i = 0; i < n_layers; i++)
        attn_name(&layers[i], names[i], sizeof names[i]);
    for (int i = 0; i < n_layers; i++) {
        int seen = 0;
        for (int k = 0; k < i && !seen; k++)
            seen = strcmp(names[k], names[i]) == 0;
        if (seen)
            continue;
        appendf(buf, n, &used, "%slayers ", used ? "; " : "");
        int sep = 0;
        for (int k = i; k < n_layers; k++) {
            if (strcmp(names[k], names[i]) != 0 || (k > i && strcmp(names[k - 1], names[i]) == 0))
                continue; /* not this pattern, or inside a run already written */
            int end = k;
            while (end + 1 < n_layers && strcmp(names[end + 1], names[i]) == 0)
                end++;
            if (end > k)
                appendf(buf, n, &used, "%s%d-%d", sep ? "," : "", k, end);
            else
                appendf(buf, n, &used, "%s%d", sep ? "," : "", k);
            sep = 1;
        }
        appendf(buf, n, &used, " %s", names[i]);
    }
    free(names);
}

static void plan_summary(const lg_hf_config *c, const char *dir, char *buf, size_t n)
{
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(c->json, "longgen");
    const cJSON *plan = cJSON_GetObjectItemCaseSensitive(lg, "plan");
    char desc[768], path[4352];
    if (cJSON_IsString(plan)) {
        snprintf(buf, n, "%s", plan->valuestring);
        return;
    }
    if (c->has_longgen) {
        describe_layers(c->layers, c->n_layers, desc, sizeof desc);
        snprintf(buf, n, "%s", desc);
        return;
    }
    /* a plain config, perhaps with the plan to apply beside it (lg-eval --plan), as the bundled model */
    join(path, sizeof path, dir, "longgen_plan.json");
    lg_layer_attn *layers = calloc((size_t)c->n_layers, sizeof *layers);
    lg_err ignored;
    if (layers && access(path, F_OK) == 0 && lg_plan_file_read(path, c->n_layers, layers, &ignored) == 0) {
        describe_layers(layers, c->n_layers, desc, sizeof desc);
        snprintf(buf, n, "every layer full in config.json; longgen_plan.json: %s", desc);
    } else {
        snprintf(buf, n, "every layer full (no longgen object in config.json)");
    }
    free(layers);
}

/* Reads config.json and the tensor headers, checks they agree (a package of a broken model helps
 * nobody), and describes the model for the manifest. */
static int summarize_model(packer *p, lg_err *err)
{
    const char *dir = p->o->model_dir;
    lg_hf_config *c = lg_hf_config_read(dir, err);
    lg_checkpoint *ck = c ? lg_ckpt_open(dir, err) : NULL;
    int rc = ck ? lg_llama_check(c, ck, 0, NULL, err) : -1;
    if (rc == 0) {
        uint64_t params = 0;
        const char *dtype = NULL;
        for (int i = 0; i < ck->n_tensors; i++) {
            const lg_st_tensor *t = ck->entries[i].tensor;
            params += t->nelem;
            const char *dt = lg_dtype_name(t->dtype);
            dtype = !dtype || strcmp(dtype, dt) == 0 ? dt : "mixed";
        }
        char name_buf[4200], plan[1024];
        const char *name = p->o->name ? p->o->name : base_name(dir, name_buf, sizeof name_buf);
        const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c->json, "architectures"), 0);
        int n_full = 0;
        for (int i = 0; i < c->n_layers; i++)
            n_full += c->layers[i].kind == LG_ATTN_FULL;
        plan_summary(c, dir, plan, sizeof plan);
        cJSON *m = p->model = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "name", name);
        cJSON_AddStringToObject(m, "architecture", cJSON_IsString(arch) ? arch->valuestring : "LlamaForCausalLM");
        cJSON_AddNumberToObject(m, "layers", c->n_layers);
        cJSON_AddNumberToObject(m, "hidden_size", c->hidden_size);
        cJSON_AddNumberToObject(m, "heads", c->n_heads);
        cJSON_AddNumberToObject(m, "kv_heads", c->n_kv_heads);
        cJSON_AddNumberToObject(m, "vocab_size", c->vocab_size);
        cJSON_AddNumberToObject(m, "max_context", c->max_pos);
        cJSON_AddStringToObject(m, "dtype", dtype ? dtype : "none");
        cJSON_AddNumberToObject(m, "parameters", (double)params);
        cJSON_AddNumberToObject(m, "full_attention_layers", n_full);
        cJSON_AddStringToObject(m, "plan", plan);
        if (strlen(name) > LG_PKG_NAME_MAX)
            rc = lg_err_set(err, "--name '%s': longer than %d bytes", name, LG_PKG_NAME_MAX);
        lg_quant_config qc;
        int has_q = 0;
        if (rc == 0 && lg_quant_config_from_json(c->json, c->path, &qc, &has_q, err) != 0)
            rc = -1;
        if (rc == 0 && has_q)
            p->quant = lg_quant_config_to_json(&qc);
    }
    lg_ckpt_close(ck);
    lg_hf_config_free(c);
    return rc;
}

/* ---------------------------------------------------------------- pass 1: hash and compress */

/* Byte planes pay off when every element is 16 bits wide (fp16, bf16); the safetensors header is
 * left as it is so that the planes start on an element. */
static int choose_encoding(packer *p, const char *path, lg_pkg_file *f, lg_err *err)
{
    f->encoding = LG_PKG_ENC_ZSTD;
    f->level = p->level;
    lg_st_file *st = lg_st_open(path, err);
    if (!st)
        return -1;
    int all16 = st->n_tensors > 0;
    for (int i = 0; i < st->n_tensors; i++)
        all16 &= lg_dtype_size(st->tensors[i].dtype) == 2;
    all16 &= !p->o->no_byte_planes;
    if (all16)
        f->bp = (lg_bp_params){.transform = 1, .skip = st->data_start, .chunk = LG_BP_CHUNK};
    lg_st_close(st);
    snprintf(f->stored_name, sizeof f->stored_name, "%s%s", f->name,
             all16 ? LG_PKG_SUFFIX_BP16 : LG_PKG_SUFFIX_ZSTD);
    if (strlen(f->name) + strlen(all16 ? LG_PKG_SUFFIX_BP16 : LG_PKG_SUFFIX_ZSTD) > LG_PKG_NAME_MAX)
        return lg_err_set(err, "%s: the name is too long for a compressed member", path);
    return 0;
}

typedef struct spool_sink {
    int fd;
    const char *path;
    uint64_t bytes;
} spool_sink;

static int spool_write(void *ctx, const void *data, size_t n, lg_err *err)
{
    spool_sink *s = ctx;
    s->bytes += n;
    return lg_write_all(s->fd, data, n, s->path, err);
}

static ssize_t read_some(int fd, void *buf, size_t n)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

/* Hashes one file; a tensor file is also compressed into the temporary directory. */
static int prepare_file(packer *p, lg_pkg_file *f, lg_err *err)
{
    char path[4352], spool_path[4700] = "";
    join(path, sizeof path, p->o->model_dir, f->name);
    if (ends_with(f->name, ".safetensors") && choose_encoding(p, path, f, err) != 0)
        return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(e));
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    f->size = (uint64_t)st.st_size;
    lg_bp_encoder *enc = NULL;
    spool_sink sink = {.fd = -1};
    int rc = 0;
    if (f->encoding == LG_PKG_ENC_ZSTD) {
        join(spool_path, sizeof spool_path, p->tmp_dir, f->stored_name);
        sink.path = spool_path;
        sink.fd = open(spool_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (sink.fd < 0)
            rc = lg_err_set(err, "%s: cannot create: %s", spool_path, strerror(errno));
        else if (!(enc = lg_bp_encoder_new(&f->bp, p->level, p->workers, f->size, spool_write, &sink, err)))
            rc = -1;
    }
    lg_sha256 sha;
    lg_sha256_init(&sha);
    uint64_t got = 0;
    while (rc == 0 && (rc = check_interrupt(err)) == 0) {
        ssize_t r = read_some(fd, p->buf, IO_BYTES);
        if (r < 0) {
            rc = lg_err_set(err, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        got += (uint64_t)r;
        lg_sha256_update(&sha, p->buf, (size_t)r);
        if (enc && lg_bp_encoder_write(enc, p->buf, (size_t)r, err) != 0) {
            lg_err_prefix(err, "%s", path);
            rc = -1;
        }
        p->done += (uint64_t)r;
        lg_progress_update(&p->progress, p->done);
    }
    if (rc == 0 && got != f->size)
        rc = lg_err_set(err, "%s: changed while being packed (%llu bytes read, %llu expected)", path,
                        (unsigned long long)got, (unsigned long long)f->size);
    if (rc == 0 && enc && lg_bp_encoder_finish(enc, err) != 0) {
        lg_err_prefix(err, "%s", path);
        rc = -1;
    }
    lg_bp_encoder_free(enc);
    close(fd);
    if (sink.fd >= 0 && close(sink.fd) != 0 && rc == 0)
        rc = lg_err_set(err, "%s: close failed: %s", spool_path, strerror(errno));
    if (rc != 0)
        return -1;
    unsigned char digest[32];
    lg_sha256_final(&sha, digest);
    lg_sha256_hex(digest, f->sha256);
    if (f->encoding == LG_PKG_ENC_ZSTD) {
        f->stored_size = sink.bytes; /* no sha256 of its own: see lg_pkg_file.has_stored_sha */
    } else {
        snprintf(f->stored_name, sizeof f->stored_name, "%s", f->name);
        memcpy(f->stored_sha256, f->sha256, 65);
        f->stored_size = f->size;
    }
    return 0;
}

/* ---------------------------------------------------------------- pass 2: the archive */

static struct archive_entry *new_entry(const char *name, uint64_t size)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return NULL;
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_mtime(e, 0, 0);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    return e;
}

static int put_header(struct archive *a, const char *name, uint64_t size, const char *out, lg_err *err)
{
    struct archive_entry *e = new_entry(name, size);
    if (!e)
        return lg_err_set(err, "out of memory");
    int r = archive_write_header(a, e);
    archive_entry_free(e);
    if (r != ARCHIVE_OK)
        return lg_err_set(err, "%s: cannot write the header of %s: %s", out, name, archive_error_string(a));
    return 0;
}

static int put_data(struct archive *a, const void *data, size_t n, const char *out, lg_err *err)
{
    const char *p = data;
    while (n > 0) {
        la_ssize_t w = archive_write_data(a, p, n);
        if (w <= 0)
            return lg_err_set(err, "%s: write failed: %s", out, archive_error_string(a));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int put_memory(struct archive *a, const char *name, const void *data, size_t n, const char *out,
                      lg_err *err)
{
    if (put_header(a, name, n, out, err) != 0)
        return -1;
    return put_data(a, data, n, out, err);
}

/* Copies a member from its file (the source for plain files, the temporary directory for compressed
 * ones). A source file is hashed again: one changed since pass 1 is caught here; a compressed
 * member of another size is caught by the count. */
static int put_file(packer *p, struct archive *a, const lg_pkg_file *f, const char *out, lg_err *err)
{
    char path[4700];
    join(path, sizeof path, f->encoding == LG_PKG_ENC_NONE ? p->o->model_dir : p->tmp_dir, f->stored_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = put_header(a, f->stored_name, f->stored_size, out, err);
    lg_sha256 sha;
    lg_sha256_init(&sha);
    uint64_t left = f->stored_size;
    while (rc == 0 && left > 0 && (rc = check_interrupt(err)) == 0) {
        ssize_t r = read_some(fd, p->buf, left < IO_BYTES ? (size_t)left : IO_BYTES);
        if (r <= 0) {
            rc = lg_err_set(err, "%s: %s while packing", path, r < 0 ? strerror(errno) : "shrank");
            break;
        }
        if (f->encoding == LG_PKG_ENC_NONE)
            lg_sha256_update(&sha, p->buf, (size_t)r);
        rc = put_data(a, p->buf, (size_t)r, out, err);
        left -= (uint64_t)r;
        p->done += (uint64_t)r;
        lg_progress_update(&p->progress, p->done);
    }
    close(fd);
    if (rc != 0 || f->encoding != LG_PKG_ENC_NONE)
        return rc;
    unsigned char digest[32];
    char hex[65];
    lg_sha256_final(&sha, digest);
    lg_sha256_hex(digest, hex);
    if (strcmp(hex, f->stored_sha256) != 0)
        return lg_err_set(err, "%s: changed while being packed (its sha256 differs from the first read)",
                          path);
    return 0;
}

static int write_archive(packer *p, const char *manifest, size_t mlen, const char *partial, lg_err *err)
{
    const char *out = p->o->out_path;
    int fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return lg_err_set(err, "%s: cannot create: %s", partial, strerror(errno));
    struct archive *a = archive_write_new();
    int rc = 0;
    if (!a || archive_write_set_format_pax(a) != ARCHIVE_OK || archive_write_open_fd(a, fd) != ARCHIVE_OK)
        rc = lg_err_set(err, "%s: cannot start the archive: %s", out, a ? archive_error_string(a) : "out of memory");
    unsigned char digest[32];
    char hex[65], line[96];
    lg_sha256 sha;
    lg_sha256_init(&sha);
    lg_sha256_update(&sha, manifest, mlen);
    lg_sha256_final(&sha, digest);
    lg_sha256_hex(digest, hex);
    size_t line_len = lg_pkg_manifest_sum_line(hex, line);
    if (rc == 0)
        rc = put_memory(a, LG_PKG_MANIFEST, manifest, mlen, out, err);
    if (rc == 0)
        rc = put_memory(a, LG_PKG_MANIFEST_SUM, line, line_len, out, err);
    for (int i = 0; i < p->n_names && rc == 0; i++)
        rc = put_file(p, a, &p->files[i], out, err);
    if (rc == 0 && archive_write_close(a) != ARCHIVE_OK)
        rc = lg_err_set(err, "%s: cannot finish the archive: %s", out, archive_error_string(a));
    if (a)
        archive_write_free(a);
    if (rc == 0 && fsync(fd) != 0)
        rc = lg_err_set(err, "%s: fsync failed: %s", partial, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = lg_err_set(err, "%s: close failed: %s", partial, strerror(errno));
    return rc;
}

/* ---------------------------------------------------------------- lg_package_pack */

static int publish(const char *partial, const char *out, lg_err *err)
{
    if (rename(partial, out) != 0)
        return lg_err_set(err, "%s: rename from %s failed: %s", out, partial, strerror(errno));
    char parent[4200];
    snprintf(parent, sizeof parent, "%s", out);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = 0; /* "/name": the root */
    else
        *slash = 0;
    int dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static int pack_steps(packer *p, lg_pack_result *res, lg_err *err)
{
    const lg_pack_opts *o = p->o;
    if (check_out_path(o, err) != 0 || list_files(p, err) != 0 || summarize_model(p, err) != 0)
        return -1;
    p->files = calloc((size_t)p->n_names, sizeof *p->files);
    p->buf = malloc(IO_BYTES);
    if (!p->files || !p->buf)
        return lg_err_set(err, "out of memory");
    /* the temporary directory: beside the output, so that the final rename stays on one file system */
    snprintf(p->tmp_dir, sizeof p->tmp_dir, "%s.tmp-XXXXXX", o->out_path);
    if (!mkdtemp(p->tmp_dir)) {
        int e = errno;
        p->tmp_dir[0] = 0;
        return lg_err_set(err, "%s: cannot create a temporary directory beside it: %s", o->out_path,
                          strerror(e));
    }
    for (int i = 0; i < p->n_names; i++) {
        char path[4352];
        struct stat st;
        join(path, sizeof path, o->model_dir, p->names[i]);
        snprintf(p->files[i].name, sizeof p->files[i].name, "%s", p->names[i]);
        if (stat(path, &st) == 0)
            p->total_in += (uint64_t)st.st_size;
    }
    lg_progress_start(&p->progress, "lg-pack: compressing", p->total_in, "B");
    p->progress.enabled &= !o->quiet;
    for (int i = 0; i < p->n_names; i++) {
        if (prepare_file(p, &p->files[i], err) != 0)
            return -1;
        p->total_stored += p->files[i].stored_size;
    }
    lg_progress_end(&p->progress);

    char tool[64];
    snprintf(tool, sizeof tool, "lg-pack %s", LG_VERSION);
    cJSON *doc = lg_pkg_manifest_to_json(p->files, p->n_names, p->model, p->quant, tool);
    p->model = p->quant = NULL; /* the document owns them now */
    char *text = doc ? cJSON_Print(doc) : NULL;
    cJSON_Delete(doc);
    if (!text)
        return lg_err_set(err, "out of memory");
    size_t mlen = strlen(text);
    char *manifest = realloc(text, mlen + 2);
    if (!manifest) {
        free(text);
        return lg_err_set(err, "out of memory");
    }
    manifest[mlen++] = '\n';
    manifest[mlen] = 0;
    /* what a reader will check, checked before anyone reads it (catches two files whose members
     * would share a name, e.g. a.safetensors and a.safetensors.bp16.zst) */
    lg_pkg_manifest check;
    int rc = lg_pkg_manifest_parse(manifest, mlen, LG_PKG_MANIFEST, &check, err);
    lg_pkg_manifest_free(&check);

    char partial[4400];
    join(partial, sizeof partial, p->tmp_dir, PARTIAL_NAME);
    if (rc == 0) {
        p->done = 0;
        lg_progress_start(&p->progress, "lg-pack: writing", p->total_stored, "B");
        p->progress.enabled &= !o->quiet;
        rc = write_archive(p, manifest, mlen, partial, err);
        lg_progress_end(&p->progress);
    }
    struct stat st;
    if (rc == 0 && res) {
        res->n_files = p->n_names;
        res->bytes_in = p->total_in;
        res->bytes_out = stat(partial, &st) == 0 ? (uint64_t)st.st_size : 0;
        for (int i = 0; i < p->n_names; i++)
            if (p->files[i].encoding == LG_PKG_ENC_ZSTD) {
                res->tensor_bytes_in += p->files[i].size;
                res->tensor_bytes_stored += p->files[i].stored_size;
            }
        lg_sha256 sha;
        unsigned char digest[32];
        lg_sha256_init(&sha);
        lg_sha256_update(&sha, manifest, mlen);
        lg_sha256_final(&sha, digest);
        lg_sha256_hex(digest, res->manifest_sha256);
    }
    free(manifest);
    if (rc == 0)
        rc = publish(partial, o->out_path, err);
    return rc;
}

int lg_package_pack(const lg_pack_opts *o, lg_pack_result *res, lg_err *err)
{
    packer p = {.o = o};
    p.level = o->level ? o->level : LG_PKG_DEFAULT_LEVEL;
    p.workers = o->workers;
    if (p.workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.workers = n < 1 ? 1 : n > 64 ? 64 : (int)n;
    }
    if (res)
        memset(res, 0, sizeof *res);
    double t0 = lg_now();
    int rc = 0;
    if (p.level < 1 || p.level > 19)
        rc = lg_err_set(err, "zstd level %d: expected 1..19", p.level);
    if (rc == 0)
        rc = pack_steps(&p, res, err);
    if (rc != 0)
        lg_progress_end(&p.progress);
    if (p.tmp_dir[0])
        lg_remove_tree(p.tmp_dir);
    for (int i = 0; i < p.n_names; i++)
        free(p.names[i]);
    free(p.names);
    free(p.files);
    free(p.buf);
    cJSON_Delete(p.model);
    cJSON_Delete(p.quant);
    if (rc == 0 && res)
        res->seconds = lg_now() - t0;
    return rc;
}
