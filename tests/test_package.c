/* Packages: the byte-plane codec round-trips any bytes exactly; lg-pack -> lg-unpack gives back the
 * tree bit for bit and the same tree always packs to the same bytes; a flipped byte in any member is
 * caught by lg-verify and lg-unpack; hostile archives made here with libarchive ('..', absolute
 * paths, links, devices, sizes that lie, unlisted or duplicate entries, truncation, no manifest) are
 * refused with a message and leave nothing, neither a target nor a temporary directory nor a file
 * outside; lg-eval and lg-run take a package directly through the cache. */
#include <CUnit/CUnit.h>
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

#include "byteplane.h"
#include "convert.h"
#include "outdir.h"
#include "package.h"
#include "package_manifest.h"
#include "progress.h"
#include "safetensors.h"
#include "sha256.h"
#include "test_env.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* splitmix64: any fixed sequence of non-trivial bytes will do */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned char *random_bytes(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)rng();
    return p;
}

static const char *path_in(char *buf, size_t n, const char *dir, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static int pack_dir(const char *dir, const char *out, int workers)
{
    lg_pack_opts o = {.model_dir = dir, .out_path = out, .quiet = 1, .workers = workers};
    lg_err err;
    int rc = lg_package_pack(&o, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "\n  pack %s: %s\n", dir, err.msg);
    return rc;
}

/* 1 when both directories hold the same names with the same bytes (regular files only, flat). */
static int same_tree(const char *a, const char *b)
{
    struct dirent **la = NULL, **lb = NULL;
    int na = scandir(a, &la, NULL, alphasort), nb = scandir(b, &lb, NULL, alphasort), same = na == nb && na > 0;
    for (int i = 0; same && i < na; i++) {
        same = strcmp(la[i]->d_name, lb[i]->d_name) == 0;
        if (!same || la[i]->d_name[0] == '.')
            continue;
        char pa[4400], pb[4400];
        size_t sa = 0, sb = 0;
        char *da = lg_read_file(path_in(pa, sizeof pa, a, la[i]->d_name), &sa);
        char *db = lg_read_file(path_in(pb, sizeof pb, b, lb[i]->d_name), &sb);
        same = da && db && sa == sb && memcmp(da, db, sa) == 0;
        if (!same)
            fprintf(stderr, "\n  %s differs between %s and %s\n", la[i]->d_name, a, b);
        free(da);
        free(db);
    }
    for (int i = 0; i < na; i++)
        free(la[i]);
    for (int i = 0; i < nb; i++)
        free(lb[i]);
    free(la);
    free(lb);
    return same;
}

/* 1 when dir holds an entry whose name starts with prefix (a leftover temporary directory). */
static int has_entry_with_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int found = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        found |= strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return found;
}

/* ---------------------------------------------------------------- byte planes */

static void test_byteplane_split_merge_round_trip_odd_lengths(void)
{
    /* layout: high bytes, then low bytes, then the odd last byte */
    const unsigned char in[5] = {0x11, 0xa1, 0x22, 0xb2, 0x33}, want[5] = {0xa1, 0xb2, 0x11, 0x22, 0x33};
    unsigned char out[5], back[5];
    lg_bp_split(in, 5, out);
    CU_ASSERT_EQUAL(memcmp(out, want, 5), 0);
    lg_bp_merge(out, 5, back);
    CU_ASSERT_EQUAL(memcmp(back, in, 5), 0);
    static const size_t lengths[] = {0, 1, 2, 3, 7, 1001, 65537, 1048575};
    for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
        size_t n = lengths[k];
        unsigned char *a = random_bytes(n), *planes = malloc(n + 1), *b = malloc(n + 1);
        lg_bp_split(a, n, planes);
        lg_bp_merge(planes, n, b);
        CU_ASSERT_EQUAL(memcmp(a, b, n), 0);
        free(a);
        free(planes);
        free(b);
    }
}

typedef struct sink_buf {
    unsigned char *data;
    size_t len, cap;
} sink_buf;

static int sink_append(void *ctx, const void *data, size_t n, lg_err *err)
{
    (void)err;
    sink_buf *b = ctx;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

/* Feeds buf to an encoder or decoder in pieces of random sizes, so chunk and skip boundaries fall
 * anywhere inside a write. */
static int feed_encoder(lg_bp_encoder *e, const unsigned char *p, size_t n, lg_err *err)
{
    while (n > 0) {
        size_t k = 1 + rng() % 5000;
        k = k < n ? k : n;
        if (lg_bp_encoder_write(e, p, k, err) != 0)
            return -1;
        p += k;
        n -= k;
    }
    return 0;
}

static int feed_decoder(lg_bp_decoder *d, const unsigned char *p, size_t n, lg_err *err)
{
    while (n > 0) {
        size_t k = 1 + rng() % 700;
        k = k < n ? k : n;
        if (lg_bp_decoder_write(d, p, k, err) != 0)
            return -1;
        p += k;
        n -= k;
    }
    return 0;
}

static void test_byteplane_stream_round_trip_is_bit_exact(void)
{
    static const size_t lengths[] = {0, 1, 3, 999, 4096, 3 * 4096 + 5, 200001};
    static const uint64_t skips[] = {0, 7, 13};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++)
        for (size_t si = 0; si < sizeof skips / sizeof skips[0]; si++)
            for (int transform = 0; transform < 2; transform++) {
                size_t n = lengths[li];
                /* a small chunk so that every length past 4 KiB spans several */
                lg_bp_params p = {.transform = transform, .skip = skips[si] < n ? skips[si] : n, .chunk = 4096};
                unsigned char *in = random_bytes(n);
                sink_buf z = {0}, out = {0};
                lg_err err;
                lg_bp_encoder *e = lg_bp_encoder_new(&p, 3, 2, n, sink_append, &z, &err);
                CU_ASSERT_PTR_NOT_NULL_FATAL(e);
                CU_ASSERT_EQUAL_FATAL(feed_encoder(e, in, n, &err), 0);
                CU_ASSERT_EQUAL_FATAL(lg_bp_encoder_finish(e, &err), 0);
                lg_bp_encoder_free(e);
                lg_bp_decoder *d = lg_bp_decoder_new(&p, n, sink_append, &out, &err);
                CU_ASSERT_PTR_NOT_NULL_FATAL(d);
                int rc = feed_decoder(d, z.data, z.len, &err);
                if (rc == 0)
                    rc = lg_bp_decoder_finish(d, &err);
                if (rc != 0)
                    fprintf(stderr, "\n  n=%zu skip=%llu transform=%d: %s\n", n,
                            (unsigned long long)p.skip, transform, err.msg);
                CU_ASSERT_EQUAL(rc, 0);
                CU_ASSERT_EQUAL(out.len, n);
                CU_ASSERT(out.len == n && (n == 0 || memcmp(out.data, in, n) == 0));
                lg_bp_decoder_free(d);
                free(in);
                free(z.data);
                free(out.data);
            }
}

static void test_byteplane_decoder_refuses_damaged_streams(void)
{
    size_t n = 50001;
    unsigned char *in = random_bytes(n);
    lg_bp_params p = {.transform = 1, .skip = 8, .chunk = 4096};
    void *z = NULL, *out = NULL;
    size_t zn = 0, out_n = 0;
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_bp_compress_buffer(&p, 3, 1, in, n, &z, &zn, &err), 0);
    /* cut short */
    CU_ASSERT_NOT_EQUAL(lg_bp_decompress_buffer(&p, z, zn - 3, n, &out, &out_n, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cut short"));
    /* a byte after the frame */
    unsigned char *longer = malloc(zn + 1);
    memcpy(longer, z, zn);
    longer[zn] = 0x28;
    CU_ASSERT_NOT_EQUAL(lg_bp_decompress_buffer(&p, longer, zn + 1, n, &out, &out_n, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "after the end"));
    /* more or fewer bytes than expected */
    CU_ASSERT_NOT_EQUAL(lg_bp_decompress_buffer(&p, z, zn, n - 1, &out, &out_n, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "more than"));
    CU_ASSERT_NOT_EQUAL(lg_bp_decompress_buffer(&p, z, zn, n + 1, &out, &out_n, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "expected"));
    /* a flipped byte: zstd's block checks or its frame checksum */
    memcpy(longer, z, zn);
    longer[zn / 2] ^= 0x40;
    CU_ASSERT_NOT_EQUAL(lg_bp_decompress_buffer(&p, longer, zn, n, &out, &out_n, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "zstd"));
    /* an odd chunk cannot hold whole elements */
    lg_bp_params odd = {.transform = 1, .chunk = 4097};
    CU_ASSERT_PTR_NULL(lg_bp_decoder_new(&odd, n, sink_append, NULL, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "even"));
    free(longer);
    free(z);
    free(in);
}

/* The claim behind the transform, measured on real trained fp16 weights (kjv-pg-llama's three
 * shards): byte planes compress smaller than plain zstd at the same level. */
static void test_byteplane_beats_plain_zstd_on_kjv_pg_llama_fp16(void)
{
    static const char *shards[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                   "model-00003-of-00003.safetensors"};
    uint64_t raw = 0, plain = 0, planes = 0;
    double t_plain = 0, t_planes = 0;
    for (int i = 0; i < 3; i++) {
        char rel[256], path[4400];
        snprintf(rel, sizeof rel, "kjv-pg-llama/%s", shards[i]);
        lg_fixture(path, sizeof path, rel);
        lg_err err;
        lg_st_file *st = lg_st_open(path, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(st);
        for (int k = 0; k < st->n_tensors; k++)
            CU_ASSERT_EQUAL(st->tensors[k].dtype, LG_DT_F16);
        lg_bp_params pp = {.transform = 0}, bp = {.transform = 1, .skip = st->data_start, .chunk = LG_BP_CHUNK};
        void *z = NULL, *back = NULL;
        size_t zn = 0, back_n = 0;
        double t0 = lg_now();
        CU_ASSERT_EQUAL_FATAL(lg_bp_compress_buffer(&pp, LG_PKG_DEFAULT_LEVEL, 2, st->map, st->map_size, &z, &zn, &err), 0);
        t_plain += lg_now() - t0;
        plain += zn;
        free(z);
        t0 = lg_now();
        CU_ASSERT_EQUAL_FATAL(lg_bp_compress_buffer(&bp, LG_PKG_DEFAULT_LEVEL, 2, st->map, st->map_size, &z, &zn, &err), 0);
        t_planes += lg_now() - t0;
        planes += zn;
        CU_ASSERT_EQUAL_FATAL(lg_bp_decompress_buffer(&bp, z, zn, st->map_size, &back, &back_n, &err), 0);
        CU_ASSERT(back_n == st->map_size && memcmp(back, st->map, back_n) == 0);
        raw += st->map_size;
        free(z);
        free(back);
        lg_st_close(st);
    }
    printf("\n  kjv-pg-llama fp16 shards, zstd level %d: %.2f MB -> plain %.2f MB (%.3f, %.2f s), "
           "byte planes %.2f MB (%.3f, %.2f s) ",
           LG_PKG_DEFAULT_LEVEL, raw / 1e6, plain / 1e6, (double)plain / raw, t_plain, planes / 1e6,
           (double)planes / raw, t_planes);
    CU_ASSERT(planes < plain);
}

/* ---------------------------------------------------------------- round trips */

static const char *bundled_model(void)
{
    static char dir[4200];
    snprintf(dir, sizeof dir, "%s/models/kjv-tiny-longgen", LG_SOURCE_DIR);
    return dir;
}

/* kjv-pg-llama converted by lg-convert (a LongGen checkpoint with its plan), in 2 shards + index. */
static const char *converted_kjv_pg(void)
{
    static char out[4200];
    if (out[0])
        return out;
    char src[4096];
    lg_fixture(src, sizeof src, "kjv-pg-llama");
    snprintf(out, sizeof out, "%s/kjv-pg-longgen", lg_test_tmpdir());
    lg_convert_opts o = {.src_dir = src, .out_dir = out, .quiet = 1, .shard_bytes = 30u << 20};
    o.plan.full_layers = "2,3";
    o.plan.sparse = "sink_window:sink=16,window=256";
    lg_err err;
    if (lg_convert_run(&o, NULL, &err) != 0) {
        fprintf(stderr, "\n  convert: %s\n", err.msg);
        out[0] = 0;
    }
    return out;
}

/* A small model with a member of every kind: tiny-llama-fp16 converted to one fp16 shard (byte
 * planes), its float32 reference.safetensors (plain zstd), and text files (stored as they are). */
static const char *small_model(void)
{
    static char out[4200];
    if (out[0])
        return out;
    char src[4096], from[4300], to[4400];
    lg_fixture(src, sizeof src, "tiny-llama-fp16");
    snprintf(out, sizeof out, "%s/tiny-one-shard", lg_test_tmpdir());
    lg_convert_opts o = {.src_dir = src, .out_dir = out, .quiet = 1};
    lg_err err;
    if (lg_convert_run(&o, NULL, &err) != 0) {
        fprintf(stderr, "\n  convert: %s\n", err.msg);
        out[0] = 0;
        return out;
    }
    size_t n = 0;
    char *ref = lg_read_file(path_in(from, sizeof from, src, "reference.safetensors"), &n);
    if (!ref || lg_write_file(path_in(to, sizeof to, out, "reference.safetensors"), ref, n) != 0)
        out[0] = 0;
    free(ref);
    return out;
}

static void test_pack_unpack_gives_bit_identical_tree(void)
{
    char tiny[4096];
    lg_fixture(tiny, sizeof tiny, "tiny-llama-fp16");
    const char *conv = converted_kjv_pg();
    CU_ASSERT_FATAL(conv[0] != 0);
    const char *models[] = {bundled_model(), tiny, conv};
    for (int i = 0; i < 3; i++) {
        const char *tmp = lg_test_tmpdir();
        char pkg[4400], out[4400], id[65];
        path_in(pkg, sizeof pkg, tmp, "m.lgpkg");
        path_in(out, sizeof out, tmp, "unpacked");
        CU_ASSERT_EQUAL_FATAL(pack_dir(models[i], pkg, 0), 0);
        lg_err err;
        lg_unpack_opts o = {.quiet = 1};
        int rc = lg_package_unpack(pkg, out, &o, id, &err);
        if (rc != 0)
            fprintf(stderr, "\n  unpack: %s\n", err.msg);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        CU_ASSERT_TRUE(same_tree(models[i], out));
        CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "unpacked.tmp-"));
        CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "m.lgpkg.tmp-"));
        lg_verify_report r;
        rc = lg_package_verify(pkg, NULL, 1, &r, &err);
        if (rc != 0)
            fprintf(stderr, "\n  verify: %s\n", err.msg);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_TRUE(r.is_package);
        CU_ASSERT_STRING_EQUAL(r.manifest_sha256, id);
        CU_ASSERT(r.n_tensors > 0 && r.n_layers == 6);
    }
    /* the converted model's manifest carries its plan, and its shards are byte planes */
    char pkg[4400];
    path_in(pkg, sizeof pkg, lg_test_tmpdir(), "conv.lgpkg");
    CU_ASSERT_EQUAL_FATAL(pack_dir(conv, pkg, 0), 0);
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    CU_ASSERT_EQUAL_FATAL(archive_read_open_filename(a, pkg, 65536), ARCHIVE_OK);
    struct archive_entry *e;
    CU_ASSERT_EQUAL_FATAL(archive_read_next_header(a, &e), ARCHIVE_OK);
    CU_ASSERT_STRING_EQUAL(archive_entry_pathname(e), LG_PKG_MANIFEST);
    size_t n = (size_t)archive_entry_size(e);
    char *text = calloc(n + 1, 1);
    CU_ASSERT_EQUAL((size_t)archive_read_data(a, text, n), n);
    archive_read_free(a);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"plan\":\t\"layers 0-1,4-5 sink_window(sink=16,window=256); layers 2-3 full\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"quantization\":\t\"none\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "model-00001-of-00002.safetensors.bp16.zst"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"kind\":\t\"byteplane16\""));
    free(text);
}

/* The memory entry points (the fuzz harness's) read a package as the file ones do, and name it by
 * its label when they refuse it. */
static void test_package_in_memory_reads_like_the_file(void)
{
    const char *tmp = lg_test_tmpdir();
    char pkg[4400], out[4400], id_file[65], id_mem[65];
    path_in(pkg, sizeof pkg, tmp, "mem.lgpkg");
    path_in(out, sizeof out, tmp, "unpacked");
    CU_ASSERT_FATAL(small_model()[0] != 0);
    CU_ASSERT_EQUAL_FATAL(pack_dir(small_model(), pkg, 0), 0);
    size_t n = 0;
    char *bytes = lg_read_file(pkg, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
    lg_err err = {{0}};
    lg_verify_report rf, rm;
    CU_ASSERT_EQUAL(lg_package_verify(pkg, NULL, 1, &rf, &err), 0);
    int rc = lg_package_verify_memory(bytes, n, "in-memory.lgpkg", NULL, 1, &rm, &err);
    if (rc != 0)
        fprintf(stderr, "\n  verify in memory: %s\n", err.msg);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_TRUE(rm.is_package);
    CU_ASSERT_EQUAL(rm.n_files, rf.n_files);
    CU_ASSERT_EQUAL(rm.n_tensors, rf.n_tensors);
    CU_ASSERT_STRING_EQUAL(rm.manifest_sha256, rf.manifest_sha256);

    lg_unpack_opts o = {.quiet = 1};
    CU_ASSERT_EQUAL(lg_package_unpack(pkg, out, &o, id_file, &err), 0);
    lg_remove_tree(out);
    CU_ASSERT_EQUAL_FATAL(lg_package_unpack_memory(bytes, n, "in-memory.lgpkg", out, &o, id_mem, &err), 0);
    CU_ASSERT_STRING_EQUAL(id_mem, id_file);
    CU_ASSERT_TRUE(same_tree(small_model(), out));
    lg_remove_tree(out);

    /* cut half way */
    CU_ASSERT_NOT_EQUAL(lg_package_verify_memory(bytes, n / 2, "in-memory.lgpkg", NULL, 1, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "in-memory.lgpkg: "));
    CU_ASSERT_NOT_EQUAL(lg_package_unpack_memory(bytes, n / 2, "in-memory.lgpkg", out, &o, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "in-memory.lgpkg: "));
    CU_ASSERT_FALSE(lg_path_exists(out));
    CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "unpacked.tmp-"));
    free(bytes);
}

static void test_two_packs_of_one_tree_are_byte_identical(void)
{
    const char *tmp = lg_test_tmpdir();
    char a[4400], b[4400];
    path_in(a, sizeof a, tmp, "a.lgpkg");
    path_in(b, sizeof b, tmp, "b.lgpkg");
    /* one and three zstd threads: the bytes must not depend on the machine */
    CU_ASSERT_EQUAL_FATAL(pack_dir(bundled_model(), a, 1), 0);
    CU_ASSERT_EQUAL_FATAL(pack_dir(bundled_model(), b, 3), 0);
    size_t na = 0, nb = 0;
    char *da = lg_read_file(a, &na), *db = lg_read_file(b, &nb);
    CU_ASSERT_FATAL(da && db);
    CU_ASSERT_EQUAL(na, nb);
    CU_ASSERT(na == nb && memcmp(da, db, na) == 0);
    /* an existing package is not replaced without force */
    lg_pack_opts o = {.model_dir = bundled_model(), .out_path = a, .quiet = 1};
    lg_err err;
    CU_ASSERT_NOT_EQUAL(lg_package_pack(&o, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "already exists"));
    free(da);
    free(db);
}

/* ---------------------------------------------------------------- damage */

typedef struct tar_member {
    char name[101];
    size_t data_off, size;
} tar_member;

/* The members of a ustar/pax archive, read straight from the 512-byte headers (the package writer
 * adds no extended headers for names under 100 bytes and sizes under 8 GiB). */
static int tar_members(const unsigned char *t, size_t n, tar_member *out, int max)
{
    int k = 0;
    for (size_t off = 0; off + 512 <= n && t[off] && k < max;) {
        tar_member *m = &out[k++];
        memcpy(m->name, t + off, 100);
        m->name[100] = 0;
        char size[13];
        memcpy(size, t + off + 124, 12);
        size[12] = 0;
        m->size = (size_t)strtoull(size, NULL, 8);
        m->data_off = off + 512;
        off += 512 + (m->size + 511) / 512 * 512;
    }
    return k;
}

static char *tool_cmd(char *buf, size_t n, const char *tool, const char *args)
{
    char t[4096];
    snprintf(buf, n, "%s %s", lg_tool(t, sizeof t, tool), args);
    return buf;
}

static void test_flipped_byte_in_any_member_is_detected(void)
{
    const char *tmp = lg_test_tmpdir();
    char pkg[4400];
    path_in(pkg, sizeof pkg, tmp, "good.lgpkg");
    CU_ASSERT_FATAL(small_model()[0] != 0);
    CU_ASSERT_EQUAL_FATAL(pack_dir(small_model(), pkg, 0), 0);
    size_t n = 0;
    unsigned char *good = (unsigned char *)lg_read_file(pkg, &n);
    tar_member m[64];
    int k = tar_members(good, n, m, 64);
    CU_ASSERT_FATAL(k >= 4);
    int kinds[3] = {0, 0, 0}; /* stored as is, .bp16.zst, plain .zst */
    for (int i = 2; i < k; i++)
        kinds[strstr(m[i].name, ".bp16.zst") ? 1 : strstr(m[i].name, ".zst") ? 2 : 0]++;
    CU_ASSERT(kinds[0] > 0 && kinds[1] > 0 && kinds[2] > 0);
    CU_ASSERT_STRING_EQUAL(m[0].name, LG_PKG_MANIFEST);
    CU_ASSERT_STRING_EQUAL(m[1].name, LG_PKG_MANIFEST_SUM);
    for (int i = 0; i < k; i++) {
        char bad[4400], out[4400], cmd[16384], msg[8192], args[9000];
        path_in(bad, sizeof bad, tmp, "bad.lgpkg");
        path_in(out, sizeof out, tmp, "out");
        /* a byte in the middle of the member: a digit of a hash, JSON text, or compressed data */
        good[m[i].data_off + m[i].size / 2] ^= 0x01;
        CU_ASSERT_EQUAL_FATAL(lg_write_file(bad, good, n), 0);
        good[m[i].data_off + m[i].size / 2] ^= 0x01;
        snprintf(args, sizeof args, "-q '%s'", bad);
        int rc = lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-verify", args), msg, sizeof msg);
        CU_ASSERT_EQUAL(rc, 1);
        if (!strstr(msg, m[i].name))
            fprintf(stderr, "\n  flip in %s: lg-verify said: %s\n", m[i].name, msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, m[i].name));
        snprintf(args, sizeof args, "-q '%s' -o '%s'", bad, out);
        rc = lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-unpack", args), msg, sizeof msg);
        CU_ASSERT_EQUAL(rc, 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, m[i].name));
        CU_ASSERT_FALSE(lg_path_exists(out));
        CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "out.tmp-"));
    }
    free(good);
}

static void test_truncated_package_is_refused(void)
{
    const char *tmp = lg_test_tmpdir();
    char pkg[4400];
    path_in(pkg, sizeof pkg, tmp, "good.lgpkg");
    CU_ASSERT_EQUAL_FATAL(pack_dir(bundled_model(), pkg, 0), 0);
    size_t n = 0;
    unsigned char *good = (unsigned char *)lg_read_file(pkg, &n);
    tar_member m[64];
    int k = tar_members(good, n, m, 64);
    CU_ASSERT_FATAL(k >= 4);
    /* inside the manifest, inside a header, half way, inside the last member */
    size_t cuts[] = {m[0].data_off + 100, m[2].data_off - 200, n / 2, m[k - 1].data_off + m[k - 1].size / 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char bad[4400], out[4400];
        path_in(bad, sizeof bad, tmp, "cut.lgpkg");
        path_in(out, sizeof out, tmp, "out");
        CU_ASSERT_EQUAL_FATAL(lg_write_file(bad, good, cuts[i]), 0);
        lg_err err;
        lg_unpack_opts o = {.quiet = 1};
        CU_ASSERT_NOT_EQUAL(lg_package_unpack(bad, out, &o, NULL, &err), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cut.lgpkg"));
        CU_ASSERT_FALSE(lg_path_exists(out));
        CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "out.tmp-"));
        CU_ASSERT_NOT_EQUAL(lg_package_verify(bad, NULL, 1, NULL, &err), 0);
    }
    free(good);
}

/* ---------------------------------------------------------------- crafted archives */

enum { E_FILE, E_SYMLINK, E_HARDLINK, E_CHARDEV, E_DIR };

typedef struct craft_entry {
    const char *name;
    int kind;
    const char *data;   /* E_FILE: the content */
    const char *target; /* links */
} craft_entry;

typedef struct listed_file {
    const char *name, *content;
    long size; /* -1: strlen(content) */
} listed_file;

/* A manifest listing files stored as they are, and its checksum line. */
static char *make_manifest(const listed_file *files, int n, char sum_line[96])
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "format", "lgpkg");
    cJSON_AddNumberToObject(doc, "format_version", 1);
    cJSON *arr = cJSON_AddArrayToObject(doc, "files");
    for (int i = 0; i < n; i++) {
        char hex[65];
        lg_sha256_buffer_hex(files[i].content, strlen(files[i].content), hex);
        double size = files[i].size >= 0 ? (double)files[i].size : (double)strlen(files[i].content);
        cJSON *f = cJSON_CreateObject(), *st;
        cJSON_AddStringToObject(f, "name", files[i].name);
        cJSON_AddNumberToObject(f, "size", size);
        cJSON_AddStringToObject(f, "sha256", hex);
        st = cJSON_AddObjectToObject(f, "stored");
        cJSON_AddStringToObject(st, "name", files[i].name);
        cJSON_AddStringToObject(st, "encoding", "none");
        cJSON_AddNumberToObject(st, "size", size);
        cJSON_AddStringToObject(st, "sha256", hex);
        cJSON_AddItemToArray(arr, f);
    }
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    char hex[65];
    lg_sha256_buffer_hex(text, strlen(text), hex);
    lg_pkg_manifest_sum_line(hex, sum_line);
    return text;
}

static void write_entries(struct archive *a, const craft_entry *entries, int n)
{
    for (int i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, entries[i].name);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_mtime(e, 0, 0);
        size_t len = 0;
        switch (entries[i].kind) {
        case E_FILE:
            len = strlen(entries[i].data);
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, (la_int64_t)len);
            break;
        case E_SYMLINK:
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, entries[i].target);
            break;
        case E_HARDLINK:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, entries[i].target);
            archive_entry_set_size(e, 0);
            break;
        case E_CHARDEV:
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_rdev(e, 0x0103); /* /dev/null's numbers */
            break;
        case E_DIR:
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, 0755);
            break;
        }
        CU_ASSERT(archive_write_header(a, e) == ARCHIVE_OK);
        if (len)
            CU_ASSERT_EQUAL(archive_write_data(a, entries[i].data, len), (la_ssize_t)len);
        archive_entry_free(e);
    }
}

/* pre: entries before the manifest; then MANIFEST.json (listing `files`) and its checksum unless
 * no_manifest; then post entries. */
static void craft(const char *path, const craft_entry *pre, int n_pre, const listed_file *files, int n_files,
                  int no_manifest, int bad_sum, const craft_entry *post, int n_post)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax(a);
    CU_ASSERT_EQUAL_FATAL(archive_write_open_filename(a, path), ARCHIVE_OK);
    write_entries(a, pre, n_pre);
    if (!no_manifest) {
        char sum[96];
        char *text = make_manifest(files, n_files, sum);
        if (bad_sum)
            sum[0] = sum[0] == '0' ? '1' : '0';
        craft_entry m[2] = {{LG_PKG_MANIFEST, E_FILE, text, NULL}, {LG_PKG_MANIFEST_SUM, E_FILE, sum, NULL}};
        write_entries(a, m, 2);
        free(text);
    }
    write_entries(a, post, n_post);
    archive_write_close(a);
    archive_write_free(a);
}

static void expect_refused(const char *parent, const char *pkg, const char *want)
{
    char cmd[16384], msg[8192], args[9000], out[4400];
    path_in(out, sizeof out, parent, "out");
    snprintf(args, sizeof args, "-q '%s' -o '%s'", pkg, out);
    int rc = lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-unpack", args), msg, sizeof msg);
    CU_ASSERT_EQUAL(rc, 1);
    if (!strstr(msg, want))
        fprintf(stderr, "\n  expected '%s', lg-unpack said: %s\n", want, msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
    CU_ASSERT_FALSE(lg_path_exists(out));
    CU_ASSERT_FALSE(has_entry_with_prefix(parent, "out.tmp-"));
    snprintf(args, sizeof args, "-q '%s'", pkg);
    rc = lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-verify", args), msg, sizeof msg);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
}

static void test_crafted_archives_are_refused(void)
{
    const listed_file cfg[] = {{"config.json", "{\"x\": 1}\n", -1}};
    const craft_entry cfg_entry = {"config.json", E_FILE, "{\"x\": 1}\n", NULL};
    const char *parent = lg_test_tmpdir();
    char pkg[4400], outside[4400], abs_name[4400], probe[4600];
    path_in(pkg, sizeof pkg, parent, "crafted.lgpkg");
    path_in(outside, sizeof outside, parent, "outside");
    CU_ASSERT_EQUAL_FATAL(mkdir(outside, 0755), 0);

    /* '..': would land in parent/evil */
    craft_entry dotdot[] = {cfg_entry, {"../evil", E_FILE, "owned\n", NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, dotdot, 2);
    expect_refused(parent, pkg, "leads outside");
    CU_ASSERT_FALSE(lg_path_exists(path_in(probe, sizeof probe, parent, "evil")));

    /* an absolute path into the scratch directory */
    path_in(abs_name, sizeof abs_name, parent, "abs-evil");
    craft_entry absolute[] = {cfg_entry, {abs_name, E_FILE, "owned\n", NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, absolute, 2);
    expect_refused(parent, pkg, "absolute path");
    CU_ASSERT_FALSE(lg_path_exists(abs_name));

    /* a symlink to a directory outside, then a file through it */
    craft_entry through_link[] = {cfg_entry, {"link", E_SYMLINK, NULL, outside}, {"link/pwned", E_FILE, "owned\n", NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, through_link, 3);
    expect_refused(parent, pkg, "symbolic link");
    CU_ASSERT_FALSE(lg_path_exists(path_in(probe, sizeof probe, outside, "pwned")));

    /* a file through a path with a directory part, no link needed */
    craft_entry nested[] = {cfg_entry, {"sub/file", E_FILE, "x\n", NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, nested, 2);
    expect_refused(parent, pkg, "directory part");

    /* a hard link (to a file outside, as an extractor following it would write there) */
    craft_entry hard[] = {cfg_entry, {"hl", E_HARDLINK, NULL, "/etc/passwd"}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, hard, 2);
    expect_refused(parent, pkg, "hard link");

    /* a device file, a directory */
    craft_entry dev[] = {cfg_entry, {"null", E_CHARDEV, NULL, NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, dev, 2);
    expect_refused(parent, pkg, "device file");
    craft_entry dir[] = {{"config.json", E_DIR, NULL, NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, dir, 1);
    expect_refused(parent, pkg, "is a directory");

    /* an entry larger than the manifest says, and one smaller */
    const listed_file small[] = {{"config.json", "{\"x\": 1}\n", 3}};
    craft(pkg, NULL, 0, small, 1, 0, 0, &cfg_entry, 1);
    expect_refused(parent, pkg, "the manifest lists 3");
    const listed_file big[] = {{"config.json", "{\"x\": 1}\n", 400}};
    craft(pkg, NULL, 0, big, 1, 0, 0, &cfg_entry, 1);
    expect_refused(parent, pkg, "the manifest lists 400");

    /* an entry the manifest does not list; a duplicate; a listed file that never comes */
    craft_entry extra[] = {cfg_entry, {"extra.txt", E_FILE, "x\n", NULL}};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, extra, 2);
    expect_refused(parent, pkg, "not listed");
    craft_entry twice[] = {cfg_entry, cfg_entry};
    craft(pkg, NULL, 0, cfg, 1, 0, 0, twice, 2);
    expect_refused(parent, pkg, "appears twice");
    const listed_file two[] = {{"config.json", "{\"x\": 1}\n", -1}, {"tokenizer.model", "abc", -1}};
    craft(pkg, NULL, 0, two, 2, 0, 0, &cfg_entry, 1);
    expect_refused(parent, pkg, "not in the archive");

    /* no manifest; a manifest that is not first; a manifest whose checksum does not match */
    craft(pkg, NULL, 0, NULL, 0, 1, 0, &cfg_entry, 1);
    expect_refused(parent, pkg, "not MANIFEST.json");
    craft(pkg, &cfg_entry, 1, cfg, 1, 0, 0, NULL, 0);
    expect_refused(parent, pkg, "not MANIFEST.json");
    craft(pkg, NULL, 0, cfg, 1, 0, 1, &cfg_entry, 1);
    expect_refused(parent, pkg, "the manifest is damaged");

    /* a manifest naming a file outside: refused before any entry is read */
    const listed_file escape[] = {{"../evil", "owned\n", -1}};
    craft_entry escape_entry[] = {{"../evil", E_FILE, "owned\n", NULL}};
    craft(pkg, NULL, 0, escape, 1, 0, 0, escape_entry, 1);
    expect_refused(parent, pkg, "not a plain file name");
    CU_ASSERT_FALSE(lg_path_exists(path_in(probe, sizeof probe, parent, "evil")));

    /* not an archive at all */
    unsigned char *noise = random_bytes(3000);
    CU_ASSERT_EQUAL(lg_write_file(pkg, noise, 3000), 0);
    free(noise);
    expect_refused(parent, pkg, "not a LongGen package");

    /* nothing was ever written beside the target or outside */
    DIR *d = opendir(outside);
    int entries = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        entries += e->d_name[0] != '.';
    if (d)
        closedir(d);
    CU_ASSERT_EQUAL(entries, 0);
}

/* A package of files stored as they are (any bytes), with a valid manifest and checksum. */
static void write_plain_package(const char *path, const char *const *names, const unsigned char *const *data,
                                const size_t *sizes, int n)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "format", "lgpkg");
    cJSON_AddNumberToObject(doc, "format_version", 1);
    cJSON *arr = cJSON_AddArrayToObject(doc, "files");
    for (int i = 0; i < n; i++) {
        char hex[65];
        lg_sha256_buffer_hex(data[i], sizes[i], hex);
        cJSON *f = cJSON_CreateObject(), *st;
        cJSON_AddStringToObject(f, "name", names[i]);
        cJSON_AddNumberToObject(f, "size", (double)sizes[i]);
        cJSON_AddStringToObject(f, "sha256", hex);
        st = cJSON_AddObjectToObject(f, "stored");
        cJSON_AddStringToObject(st, "name", names[i]);
        cJSON_AddStringToObject(st, "encoding", "none");
        cJSON_AddNumberToObject(st, "size", (double)sizes[i]);
        cJSON_AddItemToArray(arr, f);
    }
    char *text = cJSON_Print(doc), hex[65], sum[96];
    cJSON_Delete(doc);
    lg_sha256_buffer_hex(text, strlen(text), hex);
    size_t sum_len = lg_pkg_manifest_sum_line(hex, sum);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax(a);
    CU_ASSERT_EQUAL_FATAL(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (int i = -2; i < n; i++) {
        const char *name = i == -2 ? LG_PKG_MANIFEST : i == -1 ? LG_PKG_MANIFEST_SUM : names[i];
        const void *p = i == -2 ? (const void *)text : i == -1 ? (const void *)sum : (const void *)data[i];
        size_t len = i == -2 ? strlen(text) : i == -1 ? sum_len : sizes[i];
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)len);
        CU_ASSERT(archive_write_header(a, e) == ARCHIVE_OK);
        CU_ASSERT_EQUAL(archive_write_data(a, p, len), (la_ssize_t)len);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    free(text);
}

/* lg-verify keeps each inv_freq tensor's bytes for the check and writes them into its skeleton at
 * their offset: offsets past the end of the file were written too. 10^13 made a 10 TB sparse file
 * (under this 512 KiB file size limit with SIGXFSZ ignored, the write failed with EFBIG instead of
 * the check reporting what is wrong); 10^300 was converted to uint64_t, undefined behaviour that
 * the sanitizer build (float-cast-overflow) stops at. */
static void test_inv_freq_offsets_past_the_file_are_not_written(void)
{
    static const char *const offsets[] = {"[10000000000000, 10000000000008]", "[1e300, 1e300]"};
    const char *tmp = lg_test_tmpdir();
    for (int i = 0; i < 2; i++) {
        char hdr[256], pkg[4400], cmd[16384], msg[8192], tool[4096];
        int h = snprintf(hdr, sizeof hdr,
                         "{\"model.layers.0.self_attn.rotary_emb.inv_freq\":{\"dtype\":\"F32\",\"shape\":[2],"
                         "\"data_offsets\":%s}}", offsets[i]);
        unsigned char st[512] = {0};
        size_t hp = ((size_t)h + 7) & ~(size_t)7;
        for (int b = 0; b < 8; b++)
            st[b] = (unsigned char)(hp >> (8 * b));
        memcpy(st + 8, hdr, (size_t)h);
        memset(st + 8 + h, ' ', hp - (size_t)h);
        static const char config[] = "{\"model_type\":\"llama\"}";
        const char *const names[] = {"config.json", "model.safetensors"};
        const unsigned char *const data[] = {(const unsigned char *)config, st};
        const size_t sizes[] = {sizeof config - 1, 8 + hp + 8};
        path_in(pkg, sizeof pkg, tmp, "inv-freq.lgpkg");
        write_plain_package(pkg, names, data, sizes, 2);
        snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f 1024; TMPDIR='%s' '%s' -q '%s'", tmp,
                 lg_tool(tool, sizeof tool, "lg-verify"), pkg);
        int rc = lg_run_capture(cmd, msg, sizeof msg);
        CU_ASSERT_EQUAL(rc, 1);
        if (strstr(msg, "write failed") || !strstr(msg, "inv-freq.lgpkg/config.json: missing 'hidden_size'"))
            fprintf(stderr, "\n  offsets %s: lg-verify said: %s\n", offsets[i], msg);
        CU_ASSERT_PTR_NULL(strstr(msg, "write failed"));
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "inv-freq.lgpkg/config.json: missing 'hidden_size'"));
        CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "lg-verify-"));
    }
}

static void test_manifest_parser_refuses_bad_manifests(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"format\": \"zip\", \"format_version\": 1, \"files\": []}", "not \"lgpkg\""},
        {"{\"format\": \"lgpkg\", \"format_version\": 9, \"files\": []}", "newer than"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": []}", "missing or empty"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"a\", \"size\": 1, "
         "\"sha256\": \"XYZ\"}]}", "64 lowercase hex"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"a\", \"size\": -1}]}", "outside"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"a/b\"}]}", "not a plain file name"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"MANIFEST.json\", \"size\": 0, "
         "\"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}]}", "reserved"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"a\", \"size\": 0, "
         "\"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", \"stored\": {\"name\": "
         "\"a.z\", \"size\": 0, \"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", "
         "\"encoding\": \"lzma\"}}]}", "unknown encoding"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"a\", \"size\": 10, "
         "\"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", \"stored\": {\"name\": "
         "\"a.z\", \"size\": 0, \"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", "
         "\"encoding\": \"zstd\", \"transform\": {\"kind\": \"byteplane16\", \"skip\": 0, \"chunk\": 5}}}]}", "odd"},
        {"{\"format\": \"lgpkg\", \"format_version\": 1, \"files\": [{\"name\": \"a\", \"size\": 0, "
         "\"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", \"stored\": {\"name\": "
         "\"a\", \"size\": 0, \"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", "
         "\"encoding\": \"none\"}}, {\"name\": \"a\", \"size\": 0, "
         "\"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", \"stored\": {\"name\": "
         "\"a\", \"size\": 0, \"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", "
         "\"encoding\": \"none\"}}]}", "listed twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_pkg_manifest m;
        lg_err err;
        CU_ASSERT_NOT_EQUAL(lg_pkg_manifest_parse(cases[i].text, strlen(cases[i].text), "M", &m, &err), 0);
        if (!strstr(err.msg, cases[i].want))
            fprintf(stderr, "\n  case %zu: expected '%s', got: %s\n", i, cases[i].want, err.msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, cases[i].want));
    }
}

/* ---------------------------------------------------------------- consistency */

/* A package whose config says 7 layers around tensors of 6 (made here: lg-pack refuses such a
 * model), and the same as a directory: lg-verify must name the missing tensor. */
static void test_lg_verify_finds_config_that_disagrees_with_tensors(void)
{
    const char *tmp = lg_test_tmpdir();
    char path[4400], dir[4400], pkg[4400];
    size_t n_cfg = 0, n_st = 0;
    char *cfg = lg_read_file(path_in(path, sizeof path, bundled_model(), "config.json"), &n_cfg);
    char *st = lg_read_file(path_in(path, sizeof path, bundled_model(), "model.safetensors"), &n_st);
    CU_ASSERT_FATAL(cfg && st);
    char *at = strstr(cfg, "\"num_hidden_layers\": 6");
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    at[strlen("\"num_hidden_layers\": ")] = '7';
    path_in(dir, sizeof dir, tmp, "seven");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
    CU_ASSERT_EQUAL(lg_write_file(path_in(path, sizeof path, dir, "config.json"), cfg, n_cfg), 0);
    CU_ASSERT_EQUAL(lg_write_file(path_in(path, sizeof path, dir, "model.safetensors"), st, n_st), 0);
    lg_err err;
    CU_ASSERT_NOT_EQUAL(lg_package_verify(dir, NULL, 1, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.layers.6."));
    /* lg-pack refuses it */
    path_in(pkg, sizeof pkg, tmp, "seven.lgpkg");
    lg_pack_opts o = {.model_dir = dir, .out_path = pkg, .quiet = 1};
    CU_ASSERT_NOT_EQUAL(lg_package_pack(&o, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "missing tensor"));
    CU_ASSERT_FALSE(lg_path_exists(pkg));
    CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "seven.lgpkg"));
    /* crafted: both files stored as they are, the manifest and every hash right */
    const listed_file files[] = {{"config.json", cfg, -1}, {"model.safetensors", "", (long)n_st}};
    char sum[96];
    char *text = make_manifest(files, 2, sum);
    /* make_manifest hashed "" for the binary file: put the real hash in */
    char empty_hex[65], real_hex[65];
    lg_sha256_buffer_hex("", 0, empty_hex);
    lg_sha256_buffer_hex(st, n_st, real_hex);
    for (char *p = strstr(text, empty_hex); p; p = strstr(p, empty_hex))
        memcpy(p, real_hex, 64);
    char hex[65];
    lg_sha256_buffer_hex(text, strlen(text), hex);
    lg_pkg_manifest_sum_line(hex, sum);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax(a);
    CU_ASSERT_EQUAL_FATAL(archive_write_open_filename(a, pkg), ARCHIVE_OK);
    craft_entry m[3] = {{LG_PKG_MANIFEST, E_FILE, text, NULL}, {LG_PKG_MANIFEST_SUM, E_FILE, sum, NULL},
                        {"config.json", E_FILE, cfg, NULL}};
    write_entries(a, m, 3);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "model.safetensors");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)n_st);
    CU_ASSERT_EQUAL(archive_write_header(a, e), ARCHIVE_OK);
    CU_ASSERT_EQUAL(archive_write_data(a, st, n_st), (la_ssize_t)n_st);
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
    int rc = lg_package_verify(pkg, NULL, 1, NULL, &err);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    if (!strstr(err.msg, "model.layers.6."))
        fprintf(stderr, "\n  lg-verify said: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.layers.6."));
    /* the message names the package, not the scratch directory the check used */
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "seven.lgpkg"));
    CU_ASSERT_PTR_NULL(strstr(err.msg, "lg-verify-"));
    free(text);
    free(cfg);
    free(st);
}

/* ---------------------------------------------------------------- the runtime's cache */

static void test_cache_unpacks_once_and_lg_eval_lg_run_take_a_package(void)
{
    const char *tmp = lg_test_tmpdir();
    char pkg[4400], cache[4400], dir1[4096], dir2[4096];
    path_in(pkg, sizeof pkg, tmp, "kjv-tiny.lgpkg");
    path_in(cache, sizeof cache, tmp, "cache");
    CU_ASSERT_EQUAL_FATAL(pack_dir(bundled_model(), pkg, 0), 0);
    const char *old = getenv("XDG_CACHE_HOME");
    char *saved = old ? strdup(old) : NULL;
    setenv("XDG_CACHE_HOME", cache, 1);
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_package_open_cached(pkg, dir1, sizeof dir1, &err), 0);
    struct stat st1, st2;
    char cfg[4200];
    CU_ASSERT_EQUAL(stat(path_in(cfg, sizeof cfg, dir1, "config.json"), &st1), 0);
    CU_ASSERT_EQUAL_FATAL(lg_package_open_cached(pkg, dir2, sizeof dir2, &err), 0);
    CU_ASSERT_STRING_EQUAL(dir1, dir2);
    /* found, not unpacked again: the same file */
    CU_ASSERT_EQUAL(stat(path_in(cfg, sizeof cfg, dir2, "config.json"), &st2), 0);
    CU_ASSERT_EQUAL(st1.st_ino, st2.st_ino);
    CU_ASSERT_PTR_NOT_NULL(strstr(dir1, "/cache/longgen/"));
    /* the cache keeps the manifest, so the directory stays verifiable */
    lg_verify_report r;
    CU_ASSERT_EQUAL(lg_package_verify(dir1, NULL, 1, &r, &err), 0);
    CU_ASSERT_TRUE(r.has_manifest);
    if (saved)
        setenv("XDG_CACHE_HOME", saved, 1);
    else
        unsetenv("XDG_CACHE_HOME");
    free(saved);

    /* the tools on the package and on the directory print the same */
    char cmd[16384], a[8192], b[8192], args[9000];
    snprintf(args, sizeof args, "tokenize '%s' --text 'In the beginning God created'", bundled_model());
    CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-eval", args), a, sizeof a), 0);
    snprintf(args, sizeof args, "tokenize '%s' --text 'In the beginning God created'", pkg);
    char env_cmd[17000];
    snprintf(env_cmd, sizeof env_cmd, "XDG_CACHE_HOME='%s' %s", cache, tool_cmd(cmd, sizeof cmd, "lg-eval", args));
    CU_ASSERT_EQUAL(lg_run_capture(env_cmd, b, sizeof b), 0);
    CU_ASSERT_STRING_EQUAL(a, b);
    snprintf(args, sizeof args, "'%s' -p 'And God said' -n 6 2>/dev/null", bundled_model());
    CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-run", args), a, sizeof a), 0);
    snprintf(args, sizeof args, "'%s' -p 'And God said' -n 6 2>/dev/null", pkg);
    snprintf(env_cmd, sizeof env_cmd, "XDG_CACHE_HOME='%s' %s", cache, tool_cmd(cmd, sizeof cmd, "lg-run", args));
    CU_ASSERT_EQUAL(lg_run_capture(env_cmd, b, sizeof b), 0);
    CU_ASSERT_STRING_EQUAL(a, b);

    /* a damaged cache file is caught by lg-verify on the directory */
    char victim[4200];
    size_t n = 0;
    char *bytes = lg_read_file(path_in(victim, sizeof victim, dir1, "tokenizer_config.json"), &n);
    CU_ASSERT_FATAL(bytes && n > 2);
    bytes[1] ^= 0x20;
    CU_ASSERT_EQUAL(lg_write_file(victim, bytes, n), 0);
    free(bytes);
    CU_ASSERT_NOT_EQUAL(lg_package_verify(dir1, NULL, 1, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "tokenizer_config.json: damaged"));
}

/* ---------------------------------------------------------------- tools and bad inputs */

static void test_tools_print_help_and_refuse_bad_use(void)
{
    static const char *tools[] = {"lg-pack", "lg-unpack", "lg-verify"};
    char cmd[16384], msg[8192];
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, tools[i], "--help"), msg, sizeof msg), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "usage:"));
        CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, tools[i], ""), msg, sizeof msg), 2);
    }
}

static void test_pack_and_unpack_refuse_bad_directories(void)
{
    const char *tmp = lg_test_tmpdir();
    char dir[4400], path[4600], pkg[4400], cmd[16384], msg[8192], args[9000];
    path_in(dir, sizeof dir, tmp, "model");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
    static const char *names[] = {"config.json", "model.safetensors", "tokenizer.model"};
    for (int i = 0; i < 3; i++) {
        char src[4400];
        size_t n = 0;
        char *b = lg_read_file(path_in(src, sizeof src, bundled_model(), names[i]), &n);
        CU_ASSERT_EQUAL(lg_write_file(path_in(path, sizeof path, dir, names[i]), b, n), 0);
        free(b);
    }
    path_in(pkg, sizeof pkg, tmp, "m.lgpkg");
    lg_pack_opts o = {.model_dir = dir, .out_path = pkg, .quiet = 1};
    lg_err err;
    /* a symbolic link in the directory */
    CU_ASSERT_EQUAL(symlink("/etc/passwd", path_in(path, sizeof path, dir, "link")), 0);
    CU_ASSERT_NOT_EQUAL(lg_package_pack(&o, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "symbolic link"));
    unlink(path);
    /* a subdirectory */
    CU_ASSERT_EQUAL(mkdir(path_in(path, sizeof path, dir, "original"), 0755), 0);
    CU_ASSERT_NOT_EQUAL(lg_package_pack(&o, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "is a directory"));
    rmdir(path);
    /* the package inside the directory it packs */
    char inside[4600];
    lg_pack_opts o2 = o;
    o2.out_path = path_in(inside, sizeof inside, dir, "m.lgpkg");
    CU_ASSERT_NOT_EQUAL(lg_package_pack(&o2, NULL, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "inside the model directory"));
    CU_ASSERT_FALSE(has_entry_with_prefix(tmp, "m.lgpkg"));
    /* now it packs; an existing target directory needs --force, and then is replaced whole */
    CU_ASSERT_EQUAL_FATAL(lg_package_pack(&o, NULL, &err), 0);
    char out[4400];
    path_in(out, sizeof out, tmp, "out");
    CU_ASSERT_EQUAL(mkdir(out, 0755), 0);
    CU_ASSERT_EQUAL(lg_write_file(path_in(path, sizeof path, out, "old-file"), "x", 1), 0);
    snprintf(args, sizeof args, "-q '%s' -o '%s'", pkg, out);
    CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-unpack", args), msg, sizeof msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "already exists"));
    snprintf(args, sizeof args, "-q --force '%s' -o '%s/'", pkg, out);
    CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-unpack", args), msg, sizeof msg), 0);
    CU_ASSERT_TRUE(same_tree(dir, out));
    /* lg-verify on the package passes and says so */
    snprintf(args, sizeof args, "'%s'", pkg);
    CU_ASSERT_EQUAL(lg_run_capture(tool_cmd(cmd, sizeof cmd, "lg-verify", args), msg, sizeof msg), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "PASS"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "ok  "));
}

int lg_register_package_tests(void)
{
    CU_pSuite s = CU_add_suite("package", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_byteplane_split_merge_round_trip_odd_lengths", test_byteplane_split_merge_round_trip_odd_lengths);
    CU_add_test(s, "test_byteplane_stream_round_trip_is_bit_exact", test_byteplane_stream_round_trip_is_bit_exact);
    CU_add_test(s, "test_byteplane_decoder_refuses_damaged_streams", test_byteplane_decoder_refuses_damaged_streams);
    CU_add_test(s, "test_byteplane_beats_plain_zstd_on_kjv_pg_llama_fp16", test_byteplane_beats_plain_zstd_on_kjv_pg_llama_fp16);
    CU_add_test(s, "test_pack_unpack_gives_bit_identical_tree", test_pack_unpack_gives_bit_identical_tree);
    CU_add_test(s, "test_package_in_memory_reads_like_the_file", test_package_in_memory_reads_like_the_file);
    CU_add_test(s, "test_two_packs_of_one_tree_are_byte_identical", test_two_packs_of_one_tree_are_byte_identical);
    CU_add_test(s, "test_flipped_byte_in_any_member_is_detected", test_flipped_byte_in_any_member_is_detected);
    CU_add_test(s, "test_truncated_package_is_refused", test_truncated_package_is_refused);
    CU_add_test(s, "test_crafted_archives_are_refused", test_crafted_archives_are_refused);
    CU_add_test(s, "test_inv_freq_offsets_past_the_file_are_not_written", test_inv_freq_offsets_past_the_file_are_not_written);
    CU_add_test(s, "test_manifest_parser_refuses_bad_manifests", test_manifest_parser_refuses_bad_manifests);
    CU_add_test(s, "test_lg_verify_finds_config_that_disagrees_with_tensors", test_lg_verify_finds_config_that_disagrees_with_tensors);
    CU_add_test(s, "test_cache_unpacks_once_and_lg_eval_lg_run_take_a_package", test_cache_unpacks_once_and_lg_eval_lg_run_take_a_package);
    CU_add_test(s, "test_tools_print_help_and_refuse_bad_use", test_tools_print_help_and_refuse_bad_use);
    CU_add_test(s, "test_pack_and_unpack_refuse_bad_directories", test_pack_and_unpack_refuse_bad_directories);
    return 0;
}
