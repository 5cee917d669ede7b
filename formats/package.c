/* Reading packages (layout in package.h): one pass over the archive that checks every entry before
 * its bytes go anywhere, decodes members and checks their sha256; on top of it lg-unpack, lg-verify
 * and the runtime's package cache. */
#include "package.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "hf_config.h"
#include "json_file.h"
#include "llama_tensors.h"
#include "outdir.h"
#include "package_manifest.h"
#include "progress.h"
#include "safetensors.h"
#include "sha256.h"

volatile sig_atomic_t lg_package_interrupted;

#define READ_BYTES ((size_t)1 << 20)
#define SUM_LINE_LEN (64 + 2 + sizeof LG_PKG_MANIFEST - 1 + 1)

int lg_package_is_path(const char *path)
{
    size_t n = strlen(path), k = strlen(LG_PKG_EXT);
    return n > k && strcmp(path + n - k, LG_PKG_EXT) == 0;
}

/* ---------------------------------------------------------------- the archive stream */

typedef struct pkg_stream {
    const char *path;
    struct archive *a;
    lg_pkg_manifest m;
    char *manifest;
    size_t manifest_len;
    char manifest_sha[65];
    const lg_pkg_file **by_stored; /* the manifest's files sorted by stored name */
    unsigned char *buf;
    lg_progress progress;
    uint64_t done, total;
} pkg_stream;

/* What a reader does with each member's decoded bytes. */
typedef struct member_sink {
    int (*begin)(void *ctx, const lg_pkg_file *f, lg_err *err);
    int (*data)(void *ctx, const void *p, size_t n, lg_err *err);
    /* after the sizes and sha256 matched */
    int (*end)(void *ctx, const lg_pkg_file *f, lg_err *err);
    void *ctx;
} member_sink;

static void stream_close(pkg_stream *s)
{
    if (s->a)
        archive_read_free(s->a);
    lg_pkg_manifest_free(&s->m);
    free(s->manifest);
    free(s->by_stored);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

static int archive_fail(pkg_stream *s, lg_err *err)
{
    return lg_err_set(err, "%s: damaged or truncated archive: %s", s->path,
                      archive_error_string(s->a) ? archive_error_string(s->a) : "read error");
}

/* Every entry is checked before anything of it is used: a plain name (nothing absolute, no "..", no
 * directory part) and a regular file (no link, device, directory). */
static int check_entry(pkg_stream *s, struct archive_entry *e, lg_err *err)
{
    const char *name = archive_entry_pathname(e);
    const char *pkg = s->path;
    if (!name || !*name)
        return lg_err_set(err, "%s: an entry has no name", pkg);
    if (name[0] == '/')
        return lg_err_set(err, "%s: entry '%s' has an absolute path; refusing it", pkg, name);
    const char *p = name;
    while (p) {
        if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == 0))
            return lg_err_set(err, "%s: entry '%s' leads outside the target directory ('..'); refusing it",
                              pkg, name);
        p = strchr(p, '/');
        if (p)
            p++;
    }
    if (archive_entry_hardlink(e))
        return lg_err_set(err, "%s: entry '%s' is a hard link (to '%s'); packages hold regular files only",
                          pkg, name, archive_entry_hardlink(e));
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        break;
    case AE_IFLNK:
        return lg_err_set(err, "%s: entry '%s' is a symbolic link (to '%s'); packages hold regular files only",
                          pkg, name, archive_entry_symlink(e) ? archive_entry_symlink(e) : "?");
    case AE_IFDIR:
        return lg_err_set(err, "%s: entry '%s' is a directory; packages hold regular files only", pkg, name);
    case AE_IFCHR:
    case AE_IFBLK:
        return lg_err_set(err, "%s: entry '%s' is a device file; packages hold regular files only", pkg, name);
    default:
        return lg_err_set(err, "%s: entry '%s' is not a regular file (type %o); refusing it", pkg, name,
                          (unsigned)archive_entry_filetype(e));
    }
    if (strchr(name, '/'))
        return lg_err_set(err, "%s: entry '%s' has a directory part; package members are plain file names",
                          pkg, name);
    if (!lg_pkg_name_ok(name))
        return lg_err_set(err, "%s: entry '%s' is not a plain file name", pkg, name);
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
        return lg_err_set(err, "%s: entry '%s' has no size", pkg, name);
    return 0;
}

static int next_header(pkg_stream *s, struct archive_entry **e, lg_err *err)
{
    int r = archive_read_next_header(s->a, e);
    if (r == ARCHIVE_EOF)
        return 1;
    if (r != ARCHIVE_OK)
        return archive_fail(s, err);
    return check_entry(s, *e, err);
}

/* Reads a whole small member (the manifest and its checksum). */
static int read_small(pkg_stream *s, struct archive_entry *e, size_t max, char **out, size_t *n, lg_err *err)
{
    la_int64_t size = archive_entry_size(e);
    if ((uint64_t)size > max)
        return lg_err_set(err, "%s: %s is %lld bytes (limit %zu)", s->path, archive_entry_pathname(e),
                          (long long)size, max);
    char *buf = malloc((size_t)size + 1);
    if (!buf)
        return lg_err_set(err, "out of memory");
    size_t got = 0;
    while (got < (size_t)size) {
        la_ssize_t r = archive_read_data(s->a, buf + got, (size_t)size - got);
        if (r <= 0) {
            free(buf);
            return r < 0 ? archive_fail(s, err)
                         : lg_err_set(err, "%s: %s ends early", s->path, archive_entry_pathname(e));
        }
        got += (size_t)r;
    }
    buf[got] = 0;
    *out = buf;
    *n = got;
    return 0;
}

static int cmp_stored(const void *a, const void *b)
{
    return strcmp((*(const lg_pkg_file *const *)a)->stored_name, (*(const lg_pkg_file *const *)b)->stored_name);
}

/* Opens the archive, from the file `path` or, when data is not NULL, from size bytes in memory
 * (then `path` only names it in messages), and reads the manifest and its checksum, the two first
 * members. */
static int stream_open(pkg_stream *s, const char *path, const void *data, size_t size, lg_err *err)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    struct stat st;
    if (!data && stat(path, &st) != 0)
        return lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    if (!data && !S_ISREG(st.st_mode))
        return lg_err_set(err, "%s: not a package file", path);
    s->a = archive_read_new();
    s->buf = malloc(READ_BYTES);
    if (!s->a || !s->buf)
        return lg_err_set(err, "out of memory");
    /* tar only (pax, ustar, gnu), no compression filters: a package is never anything else */
    archive_read_support_format_tar(s->a);
    int opened = data ? archive_read_open_memory(s->a, data, size)
                      : archive_read_open_filename(s->a, path, 1 << 16);
    if (opened != ARCHIVE_OK)
        return lg_err_set(err, "%s: not a LongGen package (not a readable tar archive: %s)", path,
                          archive_error_string(s->a));
    struct archive_entry *e;
    int r = archive_read_next_header(s->a, &e);
    if (r == ARCHIVE_EOF)
        return lg_err_set(err, "%s: empty archive, no %s", path, LG_PKG_MANIFEST);
    if (r != ARCHIVE_OK)
        return lg_err_set(err, "%s: not a LongGen package (not a readable tar archive: %s)", path,
                          archive_error_string(s->a));
    if (check_entry(s, e, err) != 0)
        return -1;
    if (strcmp(archive_entry_pathname(e), LG_PKG_MANIFEST) != 0)
        return lg_err_set(err, "%s: the first entry is '%s', not %s (not a LongGen package, or a damaged one)",
                          path, archive_entry_pathname(e), LG_PKG_MANIFEST);
    if (read_small(s, e, LG_PKG_MAX_MANIFEST, &s->manifest, &s->manifest_len, err) != 0)
        return -1;
    lg_sha256_buffer_hex(s->manifest, s->manifest_len, s->manifest_sha);
    r = next_header(s, &e, err);
    if (r < 0)
        return -1;
    if (r > 0 || strcmp(archive_entry_pathname(e), LG_PKG_MANIFEST_SUM) != 0)
        return lg_err_set(err, "%s: %s does not follow %s (not a LongGen package, or a damaged one)", path,
                          LG_PKG_MANIFEST_SUM, LG_PKG_MANIFEST);
    char *sum = NULL, want[96];
    size_t sum_len = 0, want_len = lg_pkg_manifest_sum_line(s->manifest_sha, want);
    if (read_small(s, e, SUM_LINE_LEN, &sum, &sum_len, err) != 0)
        return -1;
    int same = sum_len == want_len && memcmp(sum, want, want_len) == 0;
    free(sum);
    if (!same)
        return lg_err_set(err, "%s: %s does not match %s (sha256 %s): the manifest is damaged", path,
                          LG_PKG_MANIFEST_SUM, LG_PKG_MANIFEST, s->manifest_sha);
    char label[4200];
    snprintf(label, sizeof label, "%s: %s", path, LG_PKG_MANIFEST);
    if (lg_pkg_manifest_parse(s->manifest, s->manifest_len, label, &s->m, err) != 0)
        return -1;
    s->by_stored = malloc(sizeof *s->by_stored * (size_t)s->m.n_files);
    if (!s->by_stored)
        return lg_err_set(err, "out of memory");
    for (int i = 0; i < s->m.n_files; i++) {
        s->by_stored[i] = &s->m.files[i];
        s->total += s->m.files[i].stored_size;
    }
    qsort(s->by_stored, (size_t)s->m.n_files, sizeof *s->by_stored, cmp_stored);
    return 0;
}

static int find_stored(const pkg_stream *s, const char *name)
{
    int lo = 0, hi = s->m.n_files - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(s->by_stored[mid]->stored_name, name);
        if (c == 0)
            return (int)(s->by_stored[mid] - s->m.files);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Decoded bytes: counted, hashed, passed on. */
typedef struct decoded {
    const member_sink *sink;
    lg_sha256 sha;
    uint64_t bytes, expect;
} decoded;

static int take_decoded(void *ctx, const void *p, size_t n, lg_err *err)
{
    decoded *d = ctx;
    if (n > d->expect - d->bytes)
        return lg_err_set(err, "holds more than the %llu bytes the manifest lists",
                          (unsigned long long)d->expect);
    d->bytes += n;
    lg_sha256_update(&d->sha, p, n);
    return d->sink->data ? d->sink->data(d->sink->ctx, p, n, err) : 0;
}

/* One member: stored bytes are hashed and decoded; both sha256 and sizes must match the manifest. */
static int read_member(pkg_stream *s, const lg_pkg_file *f, const member_sink *sink, lg_err *err)
{
    decoded d = {.sink = sink, .expect = f->size};
    lg_sha256_init(&d.sha);
    lg_sha256 stored_sha;
    lg_sha256_init(&stored_sha);
    lg_bp_decoder *dec = NULL;
    if (f->encoding == LG_PKG_ENC_ZSTD && !(dec = lg_bp_decoder_new(&f->bp, f->size, take_decoded, &d, err)))
        return -1;
    int rc = sink->begin ? sink->begin(sink->ctx, f, err) : 0;
    uint64_t got = 0;
    while (rc == 0) {
        if (lg_package_interrupted) {
            rc = lg_err_set(err, "interrupted");
            break;
        }
        la_ssize_t r = archive_read_data(s->a, s->buf, READ_BYTES);
        if (r < 0) {
            rc = archive_fail(s, err);
            break;
        }
        if (r == 0)
            break;
        got += (uint64_t)r;
        if (f->has_stored_sha)
            lg_sha256_update(&stored_sha, s->buf, (size_t)r);
        rc = dec ? lg_bp_decoder_write(dec, s->buf, (size_t)r, err) : take_decoded(&d, s->buf, (size_t)r, err);
        if (rc != 0 && dec)
            lg_err_prefix(err, "%s: member '%s'", s->path, f->stored_name);
        else if (rc != 0)
            lg_err_prefix(err, "%s: member '%s'", s->path, f->stored_name);
        s->done += (uint64_t)r;
        lg_progress_update(&s->progress, s->done);
    }
    if (rc == 0 && got != f->stored_size)
        rc = lg_err_set(err, "%s: member '%s' ends after %llu of %llu bytes (truncated archive)", s->path,
                        f->stored_name, (unsigned long long)got, (unsigned long long)f->stored_size);
    unsigned char digest[32];
    char hex[65];
    if (rc == 0 && f->has_stored_sha) {
        lg_sha256_final(&stored_sha, digest);
        lg_sha256_hex(digest, hex);
        if (strcmp(hex, f->stored_sha256) != 0)
            rc = lg_err_set(err, "%s: member '%s' is damaged: sha256 %s, the manifest lists %s", s->path,
                            f->stored_name, hex, f->stored_sha256);
    }
    if (rc == 0 && dec && lg_bp_decoder_finish(dec, err) != 0) {
        lg_err_prefix(err, "%s: member '%s'", s->path, f->stored_name);
        rc = -1;
    }
    if (rc == 0 && d.bytes != f->size)
        rc = lg_err_set(err, "%s: file '%s' is %llu bytes, the manifest lists %llu", s->path, f->name,
                        (unsigned long long)d.bytes, (unsigned long long)f->size);
    if (rc == 0) {
        lg_sha256_final(&d.sha, digest);
        lg_sha256_hex(digest, hex);
        if (strcmp(hex, f->sha256) != 0)
            rc = lg_err_set(err, "%s: file '%s' (member '%s') is damaged: sha256 %s, the manifest lists %s",
                            s->path, f->name, f->stored_name, hex, f->sha256);
    }
    lg_bp_decoder_free(dec);
    if (rc == 0 && sink->end)
        rc = sink->end(sink->ctx, f, err);
    return rc;
}

/* Every remaining entry: checked, found in the manifest (once, with its size), read. */
static int stream_members(pkg_stream *s, const member_sink *sink, lg_err *err)
{
    unsigned char *seen = calloc((size_t)s->m.n_files, 1);
    if (!seen)
        return lg_err_set(err, "out of memory");
    int rc = 0;
    for (;;) {
        struct archive_entry *e;
        int r = next_header(s, &e, err);
        if (r != 0) {
            rc = r < 0 ? -1 : 0;
            break;
        }
        const char *name = archive_entry_pathname(e);
        int k = find_stored(s, name);
        if (k < 0) {
            rc = lg_err_set(err, "%s: entry '%s' is not listed in %s", s->path, name, LG_PKG_MANIFEST);
            break;
        }
        const lg_pkg_file *f = &s->m.files[k];
        if (seen[k]) {
            rc = lg_err_set(err, "%s: entry '%s' appears twice", s->path, name);
            break;
        }
        seen[k] = 1;
        if ((uint64_t)archive_entry_size(e) != f->stored_size) {
            rc = lg_err_set(err, "%s: entry '%s' is %lld bytes, the manifest lists %llu", s->path, name,
                            (long long)archive_entry_size(e), (unsigned long long)f->stored_size);
            break;
        }
        if ((rc = read_member(s, f, sink, err)) != 0)
            break;
    }
    for (int i = 0; i < s->m.n_files && rc == 0; i++)
        if (!seen[i])
            rc = lg_err_set(err, "%s: '%s' is listed in %s but not in the archive (truncated package?)",
                            s->path, s->m.files[i].stored_name, LG_PKG_MANIFEST);
    free(seen);
    return rc;
}

/* ---------------------------------------------------------------- unpack */

typedef struct unpack_sink {
    int dirfd, fd;
    const char *tmp;
    char path[4500];
} unpack_sink;

static int unpack_begin(void *ctx, const lg_pkg_file *f, lg_err *err)
{
    unpack_sink *u = ctx;
    snprintf(u->path, sizeof u->path, "%s/%s", u->tmp, f->name);
    /* a fresh directory and a checked plain name: O_EXCL and O_NOFOLLOW are a second guard */
    u->fd = openat(u->dirfd, f->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (u->fd < 0)
        return lg_err_set(err, "%s: cannot create: %s", u->path, strerror(errno));
    return 0;
}

static int unpack_data(void *ctx, const void *p, size_t n, lg_err *err)
{
    unpack_sink *u = ctx;
    return lg_write_all(u->fd, p, n, u->path, err);
}

static int unpack_end(void *ctx, const lg_pkg_file *f, lg_err *err)
{
    (void)f;
    unpack_sink *u = ctx;
    int rc = 0;
    if (fsync(u->fd) != 0)
        rc = lg_err_set(err, "%s: fsync failed: %s", u->path, strerror(errno));
    if (close(u->fd) != 0 && rc == 0)
        rc = lg_err_set(err, "%s: close failed: %s", u->path, strerror(errno));
    u->fd = -1;
    return rc;
}

static int write_manifest_copy(const pkg_stream *s, int dirfd, const char *tmp, lg_err *err)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", tmp, LG_PKG_MANIFEST);
    int fd = openat(dirfd, LG_PKG_MANIFEST, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return lg_err_set(err, "%s: cannot create: %s", path, strerror(errno));
    int rc = lg_write_all(fd, s->manifest, s->manifest_len, path, err);
    if (rc == 0 && fsync(fd) != 0)
        rc = lg_err_set(err, "%s: fsync failed: %s", path, strerror(errno));
    close(fd);
    return rc;
}

typedef enum publish_mode {
    PUBLISH_REPLACE, /* lg_outdir_publish: an existing directory is swapped out */
    PUBLISH_KEEP,    /* the cache: if another process got there first, keep its copy */
} publish_mode;

static int unpack_stream(pkg_stream *s, const char *out_dir, const lg_unpack_opts *o, publish_mode mode,
                         lg_err *err)
{
    char tmp[4200];
    if (lg_outdir_begin(out_dir, o->force || mode == PUBLISH_KEEP, tmp, sizeof tmp, err) != 0)
        return -1;
    unpack_sink u = {.fd = -1, .tmp = tmp};
    u.dirfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = u.dirfd < 0 ? lg_err_set(err, "%s: cannot open: %s", tmp, strerror(errno)) : 0;
    member_sink sink = {unpack_begin, unpack_data, unpack_end, &u};
    lg_progress_start(&s->progress, "unpacking", s->total, "B");
    s->progress.enabled &= !o->quiet;
    if (rc == 0)
        rc = stream_members(s, &sink, err);
    lg_progress_end(&s->progress);
    if (u.fd >= 0)
        close(u.fd);
    if (rc == 0 && o->keep_manifest)
        rc = write_manifest_copy(s, u.dirfd, tmp, err);
    if (u.dirfd >= 0)
        close(u.dirfd);
    if (rc == 0 && mode == PUBLISH_REPLACE) {
        rc = lg_outdir_publish(tmp, out_dir, err);
    } else if (rc == 0) {
        if (rename(tmp, out_dir) != 0) {
            struct stat st;
            if (!((errno == EEXIST || errno == ENOTEMPTY) && stat(out_dir, &st) == 0 && S_ISDIR(st.st_mode)))
                rc = lg_err_set(err, "%s: rename from %s failed: %s", out_dir, tmp, strerror(errno));
        }
    }
    lg_remove_tree(tmp); /* a no-op once renamed */
    return rc;
}

static int unpack_from(const char *pkg, const void *data, size_t size, const char *out_dir,
                       const lg_unpack_opts *o, char manifest_sha256[65], lg_err *err)
{
    static const lg_unpack_opts defaults;
    /* "DIR/" would put the temporary directory inside DIR */
    char out[4096];
    size_t len = (size_t)snprintf(out, sizeof out, "%s", out_dir);
    while (len > 1 && out[len - 1] == '/')
        out[--len] = 0;
    pkg_stream s;
    int rc = stream_open(&s, pkg, data, size, err);
    if (rc == 0)
        rc = unpack_stream(&s, out, o ? o : &defaults, PUBLISH_REPLACE, err);
    if (rc == 0 && manifest_sha256)
        memcpy(manifest_sha256, s.manifest_sha, 65);
    stream_close(&s);
    return rc;
}

int lg_package_unpack(const char *pkg, const char *out_dir, const lg_unpack_opts *o,
                      char manifest_sha256[65], lg_err *err)
{
    return unpack_from(pkg, NULL, 0, out_dir, o, manifest_sha256, err);
}

/* data == NULL selects the file `pkg` below: an empty buffer must stay a buffer */
static const char no_bytes[1];

int lg_package_unpack_memory(const void *data, size_t size, const char *label, const char *out_dir,
                             const lg_unpack_opts *o, char manifest_sha256[65], lg_err *err)
{
    return unpack_from(label, data ? data : no_bytes, data ? size : 0, out_dir, o, manifest_sha256, err);
}

/* ---------------------------------------------------------------- consistency (config vs tensors) */

static int check_checkpoint(const char *dir, lg_verify_report *rep, lg_err *err)
{
    lg_hf_config *c = lg_hf_config_read(dir, err);
    lg_checkpoint *ck = c ? lg_ckpt_open(dir, err) : NULL;
    int rc = ck ? lg_llama_check(c, ck, 0, NULL, err) : -1;
    if (rc == 0) {
        rep->n_tensors = ck->n_tensors;
        rep->n_layers = c->n_layers;
    }
    lg_ckpt_close(ck);
    lg_hf_config_free(c);
    return rc;
}

/* What verify keeps of a package in memory: config.json, the index, and of each safetensors file
 * its header and the bytes of its rotary inv_freq tensors (the only data the check reads). */
typedef struct kept_range {
    uint64_t begin, end; /* file offsets */
    unsigned char *bytes;
} kept_range;

typedef struct kept_file {
    const lg_pkg_file *f;
    int whole;            /* config.json, the index */
    unsigned char *head;  /* whole file, or the safetensors header (8 + length) */
    uint64_t head_len, head_cap;
    int n_ranges;
    kept_range *ranges;
} kept_file;

typedef struct verify_sink {
    const char *pkg;
    kept_file *kept;
    int n_kept;
    kept_file *cur;
    uint64_t pos;
    FILE *log;
} verify_sink;

static int is_tensor_file(const char *name)
{
    size_t n = strlen(name), k = strlen(".safetensors");
    return n > k && strcmp(name + n - k, ".safetensors") == 0;
}

static int verify_begin(void *ctx, const lg_pkg_file *f, lg_err *err)
{
    verify_sink *v = ctx;
    v->cur = NULL;
    v->pos = 0;
    int whole = strcmp(f->name, "config.json") == 0 || strcmp(f->name, LG_CKPT_INDEX) == 0;
    if (!whole && !is_tensor_file(f->name))
        return 0;
    if (whole && f->size > (64u << 20))
        return lg_err_set(err, "%s: %s is %llu bytes, too large to check", v->pkg, f->name,
                          (unsigned long long)f->size);
    kept_file *k = &v->kept[v->n_kept++];
    memset(k, 0, sizeof *k);
    k->f = f;
    k->whole = whole;
    k->head_cap = whole ? f->size : 8;
    k->head = malloc(k->head_cap ? k->head_cap : 1);
    if (!k->head)
        return lg_err_set(err, "out of memory");
    v->cur = k;
    return 0;
}

/* Once a safetensors header is complete: note the inv_freq tensors' byte ranges to keep. */
static int plan_ranges(verify_sink *v, kept_file *k, lg_err *err)
{
    const char *label = k->f->name;
    cJSON *doc = cJSON_ParseWithLength((const char *)k->head + 8, (size_t)(k->head_len - 8));
    if (!doc)
        return 0; /* the consistency check reports the broken header */
    const cJSON *it;
    int rc = 0;
    cJSON_ArrayForEach(it, doc)
    {
        int layer;
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!it->string || !lg_is_rotary_inv_freq(it->string, &layer) || cJSON_GetArraySize(off) != 2)
            continue;
        double b = cJSON_GetArrayItem(off, 0)->valuedouble, e = cJSON_GetArrayItem(off, 1)->valuedouble;
        /* a head_dim/2 vector: anything larger is not a real one, and the check refuses its shape;
         * nor is one past the end of the file (whose offset would be written into the skeleton,
         * making it terabytes long, or not even fit in 64 bits) */
        if (!(b >= 0 && e >= b && e - b <= 65536 && e <= (double)(k->f->size - k->head_len)))
            continue;
        kept_range *grown = realloc(k->ranges, sizeof *grown * (size_t)(k->n_ranges + 1));
        if (!grown) {
            rc = lg_err_set(err, "%s: %s: out of memory", v->pkg, label);
            break;
        }
        k->ranges = grown;
        kept_range *r = &k->ranges[k->n_ranges++];
        r->begin = k->head_len + (uint64_t)b;
        r->end = k->head_len + (uint64_t)e;
        r->bytes = calloc((size_t)(r->end - r->begin) + 1, 1);
        if (!r->bytes)
            rc = lg_err_set(err, "out of memory");
    }
    cJSON_Delete(doc);
    return rc;
}

static int verify_data(void *ctx, const void *data, size_t n, lg_err *err)
{
    verify_sink *v = ctx;
    kept_file *k = v->cur;
    const unsigned char *p = data;
    uint64_t pos = v->pos;
    v->pos += n;
    if (!k)
        return 0;
    /* header bytes (for safetensors: the 8-byte length first, then the JSON it announces) */
    while (n > 0 && k->head_len < k->head_cap) {
        size_t take = k->head_cap - k->head_len < n ? (size_t)(k->head_cap - k->head_len) : n;
        memcpy(k->head + k->head_len, p, take);
        k->head_len += take;
        pos += take;
        p += take;
        n -= take;
        if (!k->whole && k->head_len == 8 && k->head_cap == 8) {
            uint64_t hlen = 0;
            for (int i = 7; i >= 0; i--)
                hlen = hlen << 8 | k->head[i];
            if (hlen > LG_ST_MAX_HEADER || hlen > k->f->size - 8)
                return 0; /* the consistency check reports it, from the 8 bytes kept */
            unsigned char *grown = realloc(k->head, (size_t)(8 + hlen));
            if (!grown)
                return lg_err_set(err, "out of memory");
            k->head = grown;
            k->head_cap = 8 + hlen;
        }
        if (!k->whole && k->head_len == k->head_cap && k->head_cap > 8 && plan_ranges(v, k, err) != 0)
            return -1;
    }
    for (int i = 0; i < k->n_ranges && n > 0; i++) {
        kept_range *r = &k->ranges[i];
        uint64_t lo = r->begin > pos ? r->begin : pos, hi = r->end < pos + n ? r->end : pos + n;
        if (lo < hi)
            memcpy(r->bytes + (lo - r->begin), p + (lo - pos), (size_t)(hi - lo));
    }
    return 0;
}

static int verify_end(void *ctx, const lg_pkg_file *f, lg_err *err)
{
    (void)err;
    verify_sink *v = ctx;
    if (v->log)
        fprintf(v->log, "ok  %s  %12llu  %s\n", f->sha256, (unsigned long long)f->size, f->name);
    return 0;
}

/* The kept pieces as a directory the checkpoint reader opens: the whole small files, and each
 * safetensors file as its header plus a hole of its full size (no disk used for the data), with the
 * inv_freq bytes in place. */
static int write_skeleton(const verify_sink *v, const char *dir, lg_err *err)
{
    for (int i = 0; i < v->n_kept; i++) {
        const kept_file *k = &v->kept[i];
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", dir, k->f->name);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return lg_err_set(err, "%s: cannot create: %s", path, strerror(errno));
        int rc = lg_write_all(fd, k->head, (size_t)k->head_len, path, err);
        if (rc == 0 && ftruncate(fd, (off_t)k->f->size) != 0)
            rc = lg_err_set(err, "%s: cannot size: %s", path, strerror(errno));
        for (int r = 0; r < k->n_ranges && rc == 0; r++) {
            const kept_range *kr = &k->ranges[r];
            if (pwrite(fd, kr->bytes, (size_t)(kr->end - kr->begin), (off_t)kr->begin) < 0)
                rc = lg_err_set(err, "%s: write failed: %s", path, strerror(errno));
        }
        close(fd);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Messages from the checkpoint reader name the skeleton directory; name the package instead. */
static void rename_in_message(lg_err *err, const char *from, const char *to)
{
    char out[LG_ERR_MAX];
    size_t used = 0, flen = strlen(from);
    const char *p = err->msg;
    while (*p && used + 1 < sizeof out) {
        if (strncmp(p, from, flen) == 0) {
            used += (size_t)snprintf(out + used, sizeof out - used, "%s", to);
            p += flen;
            if (used >= sizeof out)
                used = sizeof out - 1;
        } else {
            out[used++] = *p++;
        }
    }
    out[used] = 0;
    memcpy(err->msg, out, sizeof out);
}

static int verify_package(const char *path, const void *data, size_t size, FILE *log, int quiet,
                          lg_verify_report *rep, lg_err *err)
{
    pkg_stream s;
    int rc = stream_open(&s, path, data, size, err);
    verify_sink v = {.pkg = path, .log = log};
    if (rc == 0) {
        rep->is_package = 1;
        rep->has_manifest = 1;
        rep->n_files = s.m.n_files;
        memcpy(rep->manifest_sha256, s.manifest_sha, 65);
        snprintf(rep->model, sizeof rep->model, "%s", s.m.model);
        for (int i = 0; i < s.m.n_files; i++)
            rep->bytes += s.m.files[i].size;
        v.kept = calloc((size_t)s.m.n_files, sizeof *v.kept);
        if (!v.kept)
            rc = lg_err_set(err, "out of memory");
    }
    if (rc == 0) {
        member_sink sink = {verify_begin, verify_data, verify_end, &v};
        lg_progress_start(&s.progress, "verifying", s.total, "B");
        s.progress.enabled &= !quiet;
        rc = stream_members(&s, &sink, err);
        lg_progress_end(&s.progress);
    }
    if (rc == 0) {
        const char *base = getenv("TMPDIR");
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/lg-verify-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir)) {
            rc = lg_err_set(err, "%s: cannot create a scratch directory: %s", dir, strerror(errno));
        } else {
            rc = write_skeleton(&v, dir, err);
            if (rc == 0)
                rc = check_checkpoint(dir, rep, err);
            if (rc != 0)
                rename_in_message(err, dir, path);
            lg_remove_tree(dir);
        }
    }
    for (int i = 0; i < v.n_kept; i++) {
        free(v.kept[i].head);
        for (int r = 0; r < v.kept[i].n_ranges; r++)
            free(v.kept[i].ranges[r].bytes);
        free(v.kept[i].ranges);
    }
    free(v.kept);
    stream_close(&s);
    return rc;
}

/* A directory: its MANIFEST.json (when there) says what each file must hash to. */
static int verify_dir_manifest(const char *dir, FILE *log, lg_verify_report *rep, lg_err *err)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, LG_PKG_MANIFEST);
    size_t len = 0;
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : lg_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    /* a buffer of the file's size (a manifest is a few KB), not of the 16 MiB limit */
    struct stat fst;
    int sized = fstat(fileno(f), &fst) == 0 && fst.st_size >= 0 && (uint64_t)fst.st_size <= LG_PKG_MAX_MANIFEST;
    size_t cap = sized ? (size_t)fst.st_size + 1 : LG_PKG_MAX_MANIFEST + 1;
    text = malloc(cap);
    if (text)
        len = fread(text, 1, cap, f);
    fclose(f);
    if (!text)
        return lg_err_set(err, "out of memory");
    if (len > LG_PKG_MAX_MANIFEST) {
        free(text);
        return lg_err_set(err, "%s: larger than %zu bytes", path, LG_PKG_MAX_MANIFEST);
    }
    lg_pkg_manifest m;
    int rc = lg_pkg_manifest_parse(text, len, path, &m, err);
    if (rc == 0) {
        rep->has_manifest = 1;
        lg_sha256_buffer_hex(text, len, rep->manifest_sha256);
        snprintf(rep->model, sizeof rep->model, "%s", m.model);
    }
    free(text);
    for (int i = 0; i < m.n_files && rc == 0; i++) {
        const lg_pkg_file *pf = &m.files[i];
        char fpath[4400], hex[65];
        struct stat st;
        snprintf(fpath, sizeof fpath, "%s/%s", dir, pf->name);
        if (lstat(fpath, &st) != 0 || !S_ISREG(st.st_mode))
            rc = lg_err_set(err, "%s: listed in %s but missing or not a regular file", fpath, LG_PKG_MANIFEST);
        else if ((uint64_t)st.st_size != pf->size)
            rc = lg_err_set(err, "%s: %llu bytes, %s lists %llu", fpath, (unsigned long long)st.st_size,
                            LG_PKG_MANIFEST, (unsigned long long)pf->size);
        else if (lg_sha256_file(fpath, hex, err) != 0)
            rc = -1;
        else if (strcmp(hex, pf->sha256) != 0)
            rc = lg_err_set(err, "%s: damaged: sha256 %s, %s lists %s", fpath, hex, LG_PKG_MANIFEST, pf->sha256);
        else if (log)
            fprintf(log, "ok  %s  %12llu  %s\n", hex, (unsigned long long)pf->size, pf->name);
        rep->bytes += pf->size;
        rep->n_files++;
    }
    lg_pkg_manifest_free(&m);
    return rc;
}

static int cmp_dirent(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int verify_dir(const char *dir, FILE *log, lg_verify_report *rep, lg_err *err)
{
    if (verify_dir_manifest(dir, log, rep, err) != 0)
        return -1;
    if (!rep->has_manifest) {
        /* nothing to compare with: list each file's sha256 for comparing by hand */
        struct dirent **list = NULL;
        int n = scandir(dir, &list, NULL, cmp_dirent);
        if (n < 0)
            return lg_err_set(err, "%s: cannot open: %s", dir, strerror(errno));
        int rc = 0;
        for (int i = 0; i < n; i++) {
            char path[4400], hex[65];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
            if (rc == 0 && list[i]->d_name[0] != '.' && lstat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                rc = lg_sha256_file(path, hex, err);
                if (rc == 0 && log)
                    fprintf(log, "    %s  %12llu  %s\n", hex, (unsigned long long)st.st_size, list[i]->d_name);
                rep->bytes += (uint64_t)st.st_size;
                rep->n_files++;
            }
            free(list[i]);
        }
        free(list);
        if (rc != 0)
            return -1;
    }
    return check_checkpoint(dir, rep, err);
}

int lg_package_verify(const char *path, FILE *log, int quiet, lg_verify_report *rep, lg_err *err)
{
    lg_verify_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    struct stat st;
    if (stat(path, &st) != 0)
        return lg_err_set(err, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return verify_dir(path, log, rep, err);
    return verify_package(path, NULL, 0, log, quiet, rep, err);
}

int lg_package_verify_memory(const void *data, size_t size, const char *label, FILE *log, int quiet,
                             lg_verify_report *rep, lg_err *err)
{
    lg_verify_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    return verify_package(label, data ? data : no_bytes, data ? size : 0, log, quiet, rep, err);
}

/* ---------------------------------------------------------------- the runtime's cache */

static int make_dirs(char *path, lg_err *err)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc != 0 && errno != EEXIST)
            return lg_err_set(err, "%s: cannot create: %s", path, strerror(errno));
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return lg_err_set(err, "%s: cannot create: %s", path, strerror(errno));
    return 0;
}

static int cache_root(char *buf, size_t n, lg_err *err)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/') /* the XDG spec: a relative value is ignored */
        snprintf(buf, n, "%s/longgen", xdg);
    else if (home && home[0] == '/')
        snprintf(buf, n, "%s/.cache/longgen", home);
    else
        return lg_err_set(err, "no cache directory: set XDG_CACHE_HOME or HOME");
    return make_dirs(buf, err);
}

/* 1 when dir holds the unpacked package of this manifest (its copy of the manifest is identical). */
static int cache_hit(const char *dir, const pkg_stream *s)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, LG_PKG_MANIFEST);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char *buf = malloc(s->manifest_len + 1);
    size_t n = buf ? fread(buf, 1, s->manifest_len + 1, f) : 0;
    fclose(f);
    int same = buf && n == s->manifest_len && memcmp(buf, s->manifest, n) == 0;
    free(buf);
    return same;
}

int lg_package_open_cached(const char *path, char *dir_out, size_t n, lg_err *err)
{
    char root[4096], dir[4200] = "";
    pkg_stream s;
    int rc = stream_open(&s, path, NULL, 0, err);
    if (rc == 0)
        rc = cache_root(root, sizeof root, err);
    if (rc == 0) {
        snprintf(dir, sizeof dir, "%s/%s", root, s.manifest_sha);
        if (!cache_hit(dir, &s)) {
            lg_unpack_opts o = {.keep_manifest = 1, .force = 1};
            /* a directory that is there but does not match (damaged by hand) is replaced */
            struct stat st;
            publish_mode mode = lstat(dir, &st) == 0 ? PUBLISH_REPLACE : PUBLISH_KEEP;
            rc = unpack_stream(&s, dir, &o, mode, err);
        }
    }
    if (rc == 0 && (size_t)snprintf(dir_out, n, "%s", dir) >= n)
        rc = lg_err_set(err, "%s: cache path too long", dir);
    stream_close(&s);
    return rc;
}
