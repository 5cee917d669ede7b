/* libFuzzer harness: the package reader as a whole (formats/package.c): the tar stream, the manifest
 * and its checksum, each member's entry checks, decoding and sha256, and lg-verify's consistency
 * check, through lg_package_verify_memory and lg_package_unpack_memory (the package never touches
 * the disk; the unpacked tree and verify's scratch directory go to a temporary directory made once,
 * on /dev/shm when there, so that unpack's fsyncs cost nothing).
 *
 * Promises checked on every input:
 *   - a refusal names the package, and leaves nothing behind (no OUT, no OUT.tmp-*, no scratch);
 *   - a package lg-verify accepts also unpacks;
 *   - an unpacked tree holds the manifest's files and nothing else, and lg-verify of that directory
 *     (its MANIFEST.json, then config vs tensors) agrees with lg-verify of the package.
 *
 * Random bytes would never get past the tar headers' checksums and the manifest's sha256, so a
 * custom mutator works on the archive's members: it mutates the manifest's text, or a member's
 * content (a zstd member decompressed, mutated and compressed again), then writes the manifest's
 * sizes and sha256 for the changed member and the manifest's checksum line, so that the reader's
 * later stages see the change; or it reorders, drops, duplicates, renames or retypes members. One
 * mutation in 8 is libFuzzer's own on the raw bytes (damaged tar structure), and one in 16 leaves
 * the sums as they were (the checks that refuse them). */
#include <archive.h>
#include <archive_entry.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "byteplane.h"
#include "outdir.h"
#include "package.h"
#include "package_manifest.h"
#include "sha256.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

#define LABEL "fuzz.lgpkg"
/* a decoded member larger than this is mutated as compressed bytes */
#define MAX_DECODED ((size_t)1 << 20)
#define MAX_ENTRIES 32

static char dir[4096], out_dir[4200];

static void remove_dir(void)
{
    lg_remove_tree(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
        base = "/dev/shm";
    snprintf(dir, sizeof dir, "%s/lg-fuzz-package-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    atexit(remove_dir);
    /* lg_package_verify makes its scratch directory under $TMPDIR */
    setenv("TMPDIR", dir, 1);
    snprintf(out_dir, sizeof out_dir, "%s/out", dir);
    return 0;
}

/* ---------------------------------------------------------------- the checks */

/* Entries of the scratch directory other than `allowed` (may be NULL). */
static int stray_entries(const char *allowed)
{
    DIR *d = opendir(dir);
    if (!d)
        return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            !(allowed && strcmp(e->d_name, allowed) == 0))
            n++;
    closedir(d);
    return n;
}

/* 1 when out_dir holds exactly MANIFEST.json and the regular files that manifest lists. */
static int tree_matches_manifest(void)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", out_dir, LG_PKG_MANIFEST);
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0 || (uint64_t)st.st_size > LG_PKG_MAX_MANIFEST) {
        if (f)
            fclose(f);
        return 0;
    }
    char *text = malloc((size_t)st.st_size + 1);
    size_t len = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    lg_err err;
    lg_pkg_manifest m;
    int ok = text && lg_pkg_manifest_parse(text, len, path, &m, &err) == 0;
    free(text);
    if (!ok)
        return 0;
    for (int i = 0; i < m.n_files && ok; i++) {
        snprintf(path, sizeof path, "%s/%s", out_dir, m.files[i].name);
        ok = lstat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == m.files[i].size;
    }
    int n_entries = 0;
    DIR *d = opendir(out_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n_entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    ok = ok && n_entries == m.n_files + 1;
    lg_pkg_manifest_free(&m);
    return ok;
}

/* A broken promise: says which before stopping (a replay shows it). */
static void fail(const char *why, const lg_err *err)
{
    fprintf(stderr, "fuzz_package: %s (last message: %s)\n", why, err->msg);
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_err err = {{0}};
    lg_verify_report rep;
    int verified = lg_package_verify_memory(data, size, LABEL, NULL, 1, &rep, &err) == 0;
    if (!verified && !strstr(err.msg, LABEL))
        fail("lg-verify's refusal does not name the package", &err);
    if (stray_entries(NULL))
        fail("lg-verify left its scratch directory", &err);

    lg_unpack_opts o = {.quiet = 1, .keep_manifest = 1};
    char id[65];
    int unpacked = lg_package_unpack_memory(data, size, LABEL, out_dir, &o, id, &err) == 0;
    if (!unpacked) {
        if (!strstr(err.msg, LABEL))
            fail("lg-unpack's refusal does not name the package", &err);
        if (stray_entries(NULL))
            fail("a refused unpack left something", &err);
        if (verified)
            fail("lg-unpack refused what lg-verify accepted", &err);
        return 0;
    }
    if (stray_entries("out"))
        fail("unpacking left something beside OUT", &err);
    if (!tree_matches_manifest())
        fail("the unpacked tree is not the manifest's files", &err);
    if (verified && strcmp(id, rep.manifest_sha256) != 0)
        fail("lg-unpack and lg-verify report different package ids", &err);
    lg_verify_report dir_rep;
    int dir_verified = lg_package_verify(out_dir, NULL, 1, &dir_rep, &err) == 0;
    if (dir_verified != verified)
        fail(verified ? "lg-verify accepts the package but not its unpacked directory"
                      : "lg-verify accepts the unpacked directory but not the package",
             &err);
    lg_remove_tree(out_dir);
    return 0;
}

/* ---------------------------------------------------------------- the mutator */

typedef struct entry {
    char name[512];
    char link[512];      /* symbolic or hard link target */
    unsigned type;       /* AE_IFREG, AE_IFLNK, AE_IFDIR, AE_IFCHR */
    int hard;            /* a hard link (to link) */
    unsigned char *data; /* regular files: the content */
    size_t size;
} entry;

typedef struct archive_image {
    entry e[MAX_ENTRIES];
    int n;
} archive_image;

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return n ? (uint32_t)(rng_state % n) : 0;
}

static void image_free(archive_image *im)
{
    for (int i = 0; i < im->n; i++)
        free(im->e[i].data);
    im->n = 0;
}

static int image_read(const uint8_t *data, size_t size, archive_image *im)
{
    im->n = 0;
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    int rc = archive_read_open_memory(a, data, size) == ARCHIVE_OK ? 0 : -1;
    struct archive_entry *ae;
    while (rc == 0) {
        int r = archive_read_next_header(a, &ae);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK || im->n == MAX_ENTRIES || archive_entry_size(ae) < 0 ||
            (uint64_t)archive_entry_size(ae) > size) {
            rc = -1;
            break;
        }
        entry *e = &im->e[im->n++];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", archive_entry_pathname(ae) ? archive_entry_pathname(ae) : "");
        e->type = archive_entry_filetype(ae);
        const char *link = archive_entry_hardlink(ae);
        e->hard = link != NULL;
        if (!link)
            link = archive_entry_symlink(ae);
        snprintf(e->link, sizeof e->link, "%s", link ? link : "");
        e->size = (size_t)archive_entry_size(ae);
        e->data = malloc(e->size + 1);
        if (!e->data || (e->size && archive_read_data(a, e->data, e->size) != (la_ssize_t)e->size))
            rc = -1;
    }
    archive_read_free(a);
    if (rc != 0)
        image_free(im);
    return rc;
}

/* Writes the image as lg-pack does (pax, mode 0644, owner 0:0, mtime 0), without padding the last
 * block; returns the size, or 0 when it does not fit. */
static size_t image_write(const archive_image *im, uint8_t *out, size_t max)
{
    struct archive *a = archive_write_new();
    size_t used = 0;
    int ok = archive_write_set_format_pax(a) == ARCHIVE_OK &&
             archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK &&
             archive_write_open_memory(a, out, max, &used) == ARCHIVE_OK;
    for (int i = 0; i < im->n && ok; i++) {
        const entry *e = &im->e[i];
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e->name);
        archive_entry_set_filetype(ae, e->type);
        archive_entry_set_perm(ae, 0644);
        archive_entry_set_uid(ae, 0);
        archive_entry_set_gid(ae, 0);
        archive_entry_set_mtime(ae, 0, 0);
        if (e->hard)
            archive_entry_set_hardlink(ae, e->link);
        else if (e->type == AE_IFLNK)
            archive_entry_set_symlink(ae, e->link);
        size_t n = e->type == AE_IFREG && !e->hard ? e->size : 0;
        archive_entry_set_size(ae, (la_int64_t)n);
        ok = archive_write_header(a, ae) == ARCHIVE_OK &&
             (n == 0 || archive_write_data(a, e->data, n) == (la_ssize_t)n);
        archive_entry_free(ae);
    }
    ok = ok && archive_write_close(a) == ARCHIVE_OK;
    archive_write_free(a);
    return ok ? used : 0;
}

static int find_entry(const archive_image *im, const char *name)
{
    for (int i = 0; i < im->n; i++)
        if (strcmp(im->e[i].name, name) == 0)
            return i;
    return -1;
}

/* libFuzzer's mutation of n bytes, in a buffer with room to grow; replaces *p. */
static size_t mutate_bytes(unsigned char **p, size_t n, size_t max)
{
    size_t cap = n + n / 4 + 64 < max ? n + n / 4 + 64 : max;
    if (cap < n)
        cap = n;
    unsigned char *buf = malloc(cap + 1);
    if (!buf)
        return n;
    memcpy(buf, *p, n);
    size_t got = LLVMFuzzerMutate(buf, n, cap);
    free(*p);
    *p = buf;
    return got;
}

/* The manifest's entry for stored name `name`, in doc (NULL when absent). */
static cJSON *manifest_file(cJSON *doc, const char *name)
{
    cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(doc, "files"))
    {
        const cJSON *stored = cJSON_GetObjectItemCaseSensitive(f, "stored");
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(stored, "name"));
        if (s && strcmp(s, name) == 0)
            return f;
    }
    return NULL;
}

static void set_number(cJSON *obj, const char *key, double v)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it)
        cJSON_SetNumberValue(it, v);
}

static void set_string(cJSON *obj, const char *key, const char *v)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(it))
        cJSON_SetValuestring(it, v);
}

/* The original file of a byteplane16 member's decoded planes (the decoder's merge, done at once). */
static void merge_planes(const cJSON *transform, unsigned char *planes, size_t n)
{
    double skip = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(transform, "skip"));
    double chunk = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(transform, "chunk"));
    if (!(skip >= 0 && chunk >= 2 && chunk <= (double)LG_PKG_MAX_CHUNK))
        return;
    unsigned char *tmp = malloc((size_t)chunk);
    if (!tmp)
        return;
    for (size_t off = skip < (double)n ? (size_t)skip : n; off < n; off += (size_t)chunk) {
        size_t k = n - off < (size_t)chunk ? n - off : (size_t)chunk;
        lg_bp_merge(planes + off, k, tmp);
        memcpy(planes + off, tmp, k);
    }
    free(tmp);
}

/* After member k changed: its file's size and sha256, its stored size (and sha256 when listed).
 * `file` is the decoded content (NULL: the member is the file), merged in place if needed. */
static void fix_member_sums(archive_image *im, int k, unsigned char *file, size_t file_n)
{
    int m = find_entry(im, LG_PKG_MANIFEST);
    if (m < 0)
        return;
    cJSON *doc = cJSON_ParseWithLength((const char *)im->e[m].data, im->e[m].size);
    cJSON *f = manifest_file(doc, im->e[k].name);
    if (!f) {
        cJSON_Delete(doc);
        return;
    }
    cJSON *stored = cJSON_GetObjectItemCaseSensitive(f, "stored");
    char hex[65];
    if (file) {
        merge_planes(cJSON_GetObjectItemCaseSensitive(stored, "transform"), file, file_n);
        lg_sha256_buffer_hex(file, file_n, hex);
    } else {
        lg_sha256_buffer_hex(im->e[k].data, im->e[k].size, hex);
        file_n = im->e[k].size;
    }
    set_number(f, "size", (double)file_n);
    set_string(f, "sha256", hex);
    set_number(stored, "size", (double)im->e[k].size);
    if (cJSON_GetObjectItemCaseSensitive(stored, "sha256")) {
        lg_sha256_buffer_hex(im->e[k].data, im->e[k].size, hex);
        set_string(stored, "sha256", hex);
    }
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (text) {
        free(im->e[m].data);
        im->e[m].data = (unsigned char *)text;
        im->e[m].size = strlen(text);
    }
}

static void fix_manifest_sum(archive_image *im)
{
    int m = find_entry(im, LG_PKG_MANIFEST), s = find_entry(im, LG_PKG_MANIFEST_SUM);
    if (m < 0 || s < 0)
        return;
    char hex[65], line[96];
    lg_sha256_buffer_hex(im->e[m].data, im->e[m].size, hex);
    size_t n = lg_pkg_manifest_sum_line(hex, line);
    unsigned char *p = malloc(n);
    if (!p)
        return;
    memcpy(p, line, n);
    free(im->e[s].data);
    im->e[s].data = p;
    im->e[s].size = n;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A member's content: a zstd member is decompressed, mutated and compressed again (one frame with
 * its content size and checksum, as lg-pack writes); others are mutated as they are. */
static void mutate_member(archive_image *im, int k, size_t max, int fix_sums)
{
    entry *e = &im->e[k];
    unsigned long long dn = ends_with(e->name, LG_PKG_SUFFIX_ZSTD) ? ZSTD_getFrameContentSize(e->data, e->size)
                                                                    : ZSTD_CONTENTSIZE_ERROR;
    if (dn == ZSTD_CONTENTSIZE_ERROR || dn == ZSTD_CONTENTSIZE_UNKNOWN || dn > MAX_DECODED) {
        e->size = mutate_bytes(&e->data, e->size, max);
        if (fix_sums)
            fix_member_sums(im, k, NULL, 0);
        return;
    }
    unsigned char *plain = malloc((size_t)dn + 1);
    size_t got = plain ? ZSTD_decompress(plain, (size_t)dn, e->data, e->size) : 0;
    if (!plain || ZSTD_isError(got) || got != dn) {
        free(plain);
        e->size = mutate_bytes(&e->data, e->size, max);
        if (fix_sums)
            fix_member_sums(im, k, NULL, 0);
        return;
    }
    size_t n = mutate_bytes(&plain, got, max);
    size_t bound = ZSTD_compressBound(n);
    unsigned char *z = malloc(bound);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    size_t zn = 0;
    if (z && cctx) {
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
        zn = ZSTD_compress2(cctx, z, bound, plain, n);
    }
    ZSTD_freeCCtx(cctx);
    if (z && !ZSTD_isError(zn) && zn > 0) {
        free(e->data);
        e->data = z;
        e->size = zn;
        z = NULL;
        if (fix_sums)
            fix_member_sums(im, k, plain, n);
    }
    free(z);
    free(plain);
}

/* Order, presence, names and kinds of members: what the reader's entry checks are about. */
static void mutate_structure(archive_image *im)
{
    static const char *const prefixes[] = {"../", "/", "sub/", "./", ""};
    static const char *const suffixes[] = {"", "/", "/..", ".zst", "\n"};
    int k = (int)rnd((uint32_t)im->n), j = (int)rnd((uint32_t)im->n);
    entry *e = &im->e[k];
    switch (rnd(6)) {
    case 0: /* drop */
        free(e->data);
        memmove(e, e + 1, sizeof *e * (size_t)(im->n - k - 1));
        im->n--;
        break;
    case 1: /* duplicate */
        if (im->n < MAX_ENTRIES) {
            entry *d = &im->e[im->n++];
            *d = *e;
            d->data = malloc(e->size + 1);
            if (d->data)
                memcpy(d->data, e->data, e->size);
            else
                im->n--;
        }
        break;
    case 2: { /* swap */
        entry t = im->e[j];
        im->e[j] = *e;
        *e = t;
        break;
    }
    case 3: { /* rename, after another member or with a hostile path */
        char name[512];
        snprintf(name, sizeof name, "%s%s%s", prefixes[rnd(5)], im->e[j].name, suffixes[rnd(5)]);
        memcpy(e->name, name, sizeof name);
        break;
    }
    case 4: { /* another kind of entry */
        static const unsigned types[] = {AE_IFLNK, AE_IFDIR, AE_IFCHR, AE_IFIFO};
        e->type = types[rnd(4)];
        snprintf(e->link, sizeof e->link, "%s", im->e[j].name);
        break;
    }
    default: /* a hard link to another member */
        e->type = AE_IFREG;
        e->hard = 1;
        snprintf(e->link, sizeof e->link, "%s", im->e[j].name);
        break;
    }
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    rng_state = 0x9e3779b97f4a7c15ull ^ seed;
    archive_image im;
    if (rnd(8) == 0 || image_read(data, size, &im) != 0 || im.n == 0)
        return LLVMFuzzerMutate(data, size, max_size);
    int fix_sums = rnd(16) != 0;
    int m = find_entry(&im, LG_PKG_MANIFEST);
    if (rnd(16) == 0) {
        mutate_structure(&im);
    } else if (m >= 0 && rnd(4) == 0) {
        im.e[m].size = mutate_bytes(&im.e[m].data, im.e[m].size, max_size);
    } else {
        int k = (int)rnd((uint32_t)im.n);
        if (im.e[k].type == AE_IFREG && !im.e[k].hard)
            mutate_member(&im, k, max_size, fix_sums);
    }
    if (fix_sums)
        fix_manifest_sum(&im);
    uint8_t *out = malloc(max_size);
    size_t n = out ? image_write(&im, out, max_size) : 0;
    image_free(&im);
    if (n == 0) {
        free(out);
        return LLVMFuzzerMutate(data, size, max_size);
    }
    memcpy(data, out, n);
    free(out);
    return n;
}
