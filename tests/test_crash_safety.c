/* Crash safety of lg-convert and resource limits of the readers.
 *
 * - kill -9 at random points of a real conversion (kjv-pg-llama, 42 MB, into 5 MB shards), at
 *   least 50 times: afterwards the output path either does not exist or holds the complete result,
 *   identical byte for byte to an uninterrupted run (whose tensors are checked against the source),
 *   and a re-run beside the killed runs' leftovers succeeds;
 * - a full disk (the file size limit, with SIGXFSZ ignored so that write() fails with EFBIG) during
 *   the first shard and during the copy of tokenizer.json: a message naming the file, a non-zero
 *   exit, no output and no temporary directory;
 * - headers claiming 2^60 bytes, shapes of 10^11 elements and counts of 2^60 are refused before
 *   anything of that size is allocated (checked under a low address-space limit where the build
 *   allows one). */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "byteplane.h"
#include "checkpoint.h"
#include "hf_config.h"
#include "llama_tensors.h"
#include "outdir.h"
#include "package_manifest.h"
#include "safetensors.h"
#include "sentencepiece_model.h"
#include "test_env.h"

/* AddressSanitizer reserves terabytes of address space up front: no RLIMIT_AS under it. */
#if defined(__SANITIZE_ADDRESS__)
#define LG_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LG_UNDER_ASAN 1
#endif
#endif
#ifndef LG_UNDER_ASAN
#define LG_UNDER_ASAN 0
#endif

#define KILL_FIXTURE "kjv-pg-llama"
#define MIN_KILLS 50

/* ---------------------------------------------------------------- helpers */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *join(char *buf, size_t n, const char *dir, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

/* Starts lg-convert SRC -o OUT --shard-size 0.005 -q with its output discarded (5 MB shards: nine
 * files, so that kills land before, inside and between shards). */
static pid_t spawn_convert(const char *src, const char *out)
{
    char tool[4096];
    lg_tool(tool, sizeof tool, "lg-convert");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(tool, "lg-convert", src, "-o", out, "--shard-size", "0.005", "-q", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* 0 when the two files hold the same bytes. */
static int same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = lg_read_file(a, &na), *y = lg_read_file(b, &nb);
    int rc = x && y && na == nb && memcmp(x, y, na) == 0 ? 0 : -1;
    free(x);
    free(y);
    return rc;
}

/* 0 when dir holds exactly ref's files, each with the same bytes. */
static int same_tree(const char *dir, const char *ref)
{
    DIR *d = opendir(ref);
    if (!d)
        return -1;
    int rc = 0, n_ref = 0, n_dir = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char a[4400], b[4400];
        n_ref++;
        rc = same_file(join(a, sizeof a, dir, e->d_name), join(b, sizeof b, ref, e->d_name));
        if (rc)
            fprintf(stderr, "\n    %s differs from %s\n", a, b);
    }
    closedir(d);
    if ((d = opendir(dir)) == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n_dir += e->d_name[0] != '.';
    closedir(d);
    return rc == 0 && n_dir == n_ref ? 0 : -1;
}

/* A converted directory opens as a checkpoint whose tensors are exactly what its config implies. */
static int opens_and_checks(const char *dir)
{
    lg_err err;
    lg_hf_config *cfg = lg_hf_config_read(dir, &err);
    lg_checkpoint *ck = cfg ? lg_ckpt_open(dir, &err) : NULL;
    int rc = ck ? lg_llama_check(cfg, ck, 0, NULL, &err) : -1;
    if (rc)
        fprintf(stderr, "\n    %s: %s\n", dir, err.msg);
    lg_ckpt_close(ck);
    lg_hf_config_free(cfg);
    return rc;
}

/* Every tensor of src is in out with the same dtype, shape and bytes. */
static int tensors_match_source(const char *out, const char *src)
{
    lg_err err;
    lg_checkpoint *a = lg_ckpt_open(src, &err), *b = lg_ckpt_open(out, &err);
    int rc = a && b && a->n_tensors == b->n_tensors ? 0 : -1;
    for (int i = 0; rc == 0 && i < a->n_tensors; i++) {
        const lg_st_tensor *s = a->entries[i].tensor, *t = lg_ckpt_find(b, s->name);
        if (!t || t->dtype != s->dtype || t->ndim != s->ndim ||
            memcmp(t->shape, s->shape, sizeof t->shape[0] * (size_t)s->ndim) != 0 ||
            lg_st_nbytes(t) != lg_st_nbytes(s) || memcmp(t->data, s->data, lg_st_nbytes(s)) != 0)
            rc = -1;
        if (rc)
            fprintf(stderr, "\n    tensor %s differs from the source\n", s->name);
    }
    lg_ckpt_close(a);
    lg_ckpt_close(b);
    return rc;
}

/* Where a killed run stopped, from what its temporary directory holds: 0 no directory yet, 1 shards
 * being written (a .partial file or none), 2 every shard done, 3 index and config written too. */
static int stage_reached(const char *tmp, int n_shards)
{
    DIR *d = opendir(tmp);
    if (!d)
        return 0;
    int shards = 0, index = 0, config = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        shards += n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0;
        index += strcmp(e->d_name, LG_CKPT_INDEX) == 0;
        config += strcmp(e->d_name, "config.json") == 0;
    }
    closedir(d);
    return shards < n_shards ? 1 : index && config ? 3 : 2;
}

/* Removes dir's entries named NAME.tmp-*, noting in stages[] how far each got; returns how many
 * there were. */
static int remove_tmp_dirs(const char *dir, const char *name, int n_shards, int stages[4])
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s.tmp-", name);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            char path[4400];
            join(path, sizeof path, dir, e->d_name);
            stages[stage_reached(path, n_shards)]++;
            lg_remove_tree(path);
            n++;
        }
    closedir(d);
    return n;
}

/* Entries of dir other than NAME and NAME.tmp-* (what a killed run must never leave). */
static int count_strays(const char *dir, const char *name)
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s.tmp-", name);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, name) == 0 ||
            strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            continue;
        fprintf(stderr, "\n    stray entry %s/%s\n", dir, e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* xorshift64*: a fixed sequence of kill times, so a failure can be replayed */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* ---------------------------------------------------------------- kill -9 */

static void test_kill_9_never_leaves_a_partial_output(void)
{
    char src[4096], ref[4400], kills[4400], out[4400];
    const char *dir = lg_test_tmpdir();
    lg_fixture(src, sizeof src, KILL_FIXTURE);
    join(ref, sizeof ref, dir, "ref");
    join(kills, sizeof kills, dir, "kills");
    join(out, sizeof out, kills, "out");
    CU_ASSERT_EQUAL_FATAL(mkdir(kills, 0755), 0);

    /* the uninterrupted run: its time spans the kill points, its output is what a finished run
     * must hold */
    double t0 = now_s();
    pid_t pid = spawn_convert(src, ref);
    int st = 0;
    waitpid(pid, &st, 0);
    double t_full = now_s() - t0;
    CU_ASSERT_FATAL(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL_FATAL(opens_and_checks(ref), 0);
    CU_ASSERT_EQUAL_FATAL(tensors_match_source(ref, src), 0);

    /* kill points: two in three uniform over 110% of a full run, one in three around its end
     * (85-115%), where the index, config, tokenizer and the rename happen in a few milliseconds */
    int n_killed = 0, n_finished = 0, n_complete_after_kill = 0, stages[4] = {0};
    lg_err err;
    lg_checkpoint *ck = lg_ckpt_open(ref, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
    int n_shards = ck->n_files;
    lg_ckpt_close(ck);
    double t_start = now_s();
    for (int attempt = 0; n_killed < MIN_KILLS && attempt < 3 * MIN_KILLS; attempt++) {
        double delay = attempt % 3 == 2 ? (0.85 + 0.3 * rng_uniform()) * t_full : rng_uniform() * 1.1 * t_full;
        double t_run = now_s();
        pid = spawn_convert(src, out);
        CU_ASSERT_FATAL(pid > 0);
        int done = 0;
        while (!done && now_s() - t_run < delay) {
            nanosleep(&(struct timespec){0, 1000000}, NULL);
            done = waitpid(pid, &st, WNOHANG) == pid;
        }
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        int killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
        if (killed) {
            n_killed++;
        } else {
            CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            n_finished++;
            /* the machine got faster (other load went away): follow it, so kills keep spanning
             * a run */
            t_full = 0.5 * t_full + 0.5 * (now_s() - t_run);
        }
        if (lg_path_exists(out)) {
            /* the rename happened: the output must be whole */
            n_complete_after_kill += killed;
            CU_ASSERT_EQUAL(same_tree(out, ref), 0);
            CU_ASSERT_EQUAL(opens_and_checks(out), 0);
            lg_remove_tree(out);
        } else {
            CU_ASSERT(killed); /* a run that finished must have published */
        }
        CU_ASSERT_EQUAL(count_strays(kills, "out"), 0);
        int left = remove_tmp_dirs(kills, "out", n_shards, stages);
        stages[0] += killed && !left && !lg_path_exists(out);
    }
    CU_ASSERT(n_killed >= MIN_KILLS);

    /* a killed run's temporary directory stays behind (nothing can remove it at SIGKILL); a new
     * run beside one must still succeed */
    pid = spawn_convert(src, out);
    nanosleep(&(struct timespec){0, (long)(0.3 * t_full * 1e9)}, NULL);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    pid = spawn_convert(src, out);
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL(same_tree(out, ref), 0);
    CU_ASSERT_EQUAL(opens_and_checks(out), 0);
    fprintf(stderr,
            "\n    a run takes ~%.2f s, %d shards; %d kills: %d before the temporary directory, %d while "
            "writing shards, %d after the shards, %d after the index and config, %d after the rename "
            "(output complete); %d runs finished first; %.1f s\n",
            t_full, n_shards, n_killed, stages[0], stages[1], stages[2], stages[3], n_complete_after_kill,
            n_finished, now_s() - t_start);
}

/* ---------------------------------------------------------------- a full disk */

/* A source directory of links to tiny-llama-fp16's files plus the Llama-2 tokenizer.json (3.6 MB,
 * bigger than any shard, so that a limit can let every shard through and stop the copy). */
static int make_linked_source(const char *src)
{
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors.index.json"};
    char from[4096], to[4400];
    if (mkdir(src, 0755) != 0)
        return -1;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tiny-llama-fp16/%s", files[i]);
        if (symlink(lg_fixture(from, sizeof from, rel), join(to, sizeof to, src, files[i])) != 0)
            return -1;
    }
    for (int s = 1; s <= 10; s++) {
        char name[64], rel[256];
        snprintf(name, sizeof name, "model-%05d-of-00010.safetensors", s);
        snprintf(rel, sizeof rel, "tiny-llama-fp16/%s", name);
        if (symlink(lg_fixture(from, sizeof from, rel), join(to, sizeof to, src, name)) != 0)
            return -1;
    }
    return symlink(lg_fixture(from, sizeof from, "llama2-tokenizer/tokenizer.json"),
                   join(to, sizeof to, src, "tokenizer.json"));
}

/* 1 when dir holds an entry starting with prefix. */
static int has_entry_with_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL)
        found = strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return found;
}

/* Converts under a file size limit of `kib` KiB; the tool must fail naming `file`. */
static void check_disk_full(int kib, const char *file)
{
    char src[4400], out[4400], tool[4096], cmd[16384], msg[8192];
    const char *dir = lg_test_tmpdir();
    join(src, sizeof src, dir, "src");
    join(out, sizeof out, dir, "out");
    CU_ASSERT_EQUAL_FATAL(make_linked_source(src), 0);
    /* ignoring SIGXFSZ makes write() past the limit fail with EFBIG, as on a full disk */
    /* float32 in shards of at most 1 MB: every shard is smaller than tokenizer.json */
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f %d; '%s' '%s' -o '%s' --dtype f32 --shard-size 0.001", kib,
             lg_tool(tool, sizeof tool, "lg-convert"), src, out);
    int status = lg_run_capture(cmd, msg, sizeof msg);
    int named = strstr(msg, file) != NULL && strstr(msg, "write failed") != NULL;
    int said = strstr(msg, "File too large") != NULL;
    CU_ASSERT(status > 0 && status < 128);
    CU_ASSERT(named);
    CU_ASSERT(said);
    CU_ASSERT_FALSE(lg_path_exists(out));
    CU_ASSERT_FALSE(has_entry_with_prefix(dir, "out.tmp-"));
    if (!(status > 0 && status < 128) || !named || !said)
        fprintf(stderr, "\n    limit %d KiB: status %d, lg-convert said: %s\n", kib, status, msg);
}

static void test_disk_full_in_the_first_shard_leaves_nothing(void)
{
    check_disk_full(64, "model-00001-of-");
}

static void test_disk_full_copying_the_tokenizer_leaves_nothing(void)
{
    /* the largest shard is 0.53 MB, tokenizer.json 3.6 MB */
    check_disk_full(2048, "tokenizer.json: write failed");
}

/* ---------------------------------------------------------------- resource limits */

/* Runs fn in a child whose address space may grow only `headroom` bytes past its current size
 * (no limit under AddressSanitizer), so that a reader that believes a claimed size fails there.
 * Returns fn's result, or -1 when the child died. */
static int run_with_little_memory(int (*fn)(void), size_t headroom)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!LG_UNDER_ASAN) {
            long pages = 0;
            FILE *f = fopen("/proc/self/statm", "r");
            if (f && fscanf(f, "%ld", &pages) != 1)
                pages = 0;
            if (f)
                fclose(f);
            if (pages > 0) {
                rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + headroom;
                struct rlimit rl = {lim, lim};
                setrlimit(RLIMIT_AS, &rl);
            }
        }
        _exit(fn() == 0 ? 0 : 1);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* 64 MiB: far more than any of these tiny inputs needs, far less than what they claim */
#define HEADROOM ((size_t)64 << 20)

/* 0 when a safetensors image is refused with a message holding `want`. */
static int st_refused(const void *buf, size_t n, const char *want)
{
    lg_err err = {{0}};
    lg_st_file *f = lg_st_open_memory(buf, n, "claim.safetensors", &err);
    if (f || !strstr(err.msg, want)) {
        fprintf(stderr, "\n    expected '%s', got '%s'\n", want, f ? "(accepted)" : err.msg);
        lg_st_close(f);
        return -1;
    }
    return 0;
}

/* An image with header text `hdr` (padded to 8) and `data` bytes of data. */
static size_t make_image(unsigned char *buf, size_t cap, const char *hdr, size_t data)
{
    size_t h = strlen(hdr), hp = (h + 7) & ~(size_t)7;
    if (8 + hp + data > cap)
        return 0;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hp >> (8 * i));
    memcpy(buf + 8, hdr, h);
    memset(buf + 8 + h, ' ', hp - h);
    for (size_t i = 0; i < data; i++)
        buf[8 + hp + i] = (unsigned char)(i * 131 + 7);
    return 8 + hp + data;
}

static int claim_huge_header(void)
{
    unsigned char buf[16] = {0};
    uint64_t claim = UINT64_C(1) << 60;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(claim >> (8 * i));
    memcpy(buf + 8, "{}      ", 8);
    return st_refused(buf, sizeof buf, "header length 1152921504606846976 exceeds the 100000000-byte limit");
}

static void test_header_claiming_2_60_bytes_is_refused_before_allocating(void)
{
    CU_ASSERT_EQUAL(run_with_little_memory(claim_huge_header, HEADROOM), 0);
}

static int claim_huge_shape(void)
{
    unsigned char buf[512];
    /* 10^11 float32 elements = 400 GB of data claimed by a 100-byte file */
    size_t n = make_image(buf, sizeof buf,
                          "{\"w\":{\"dtype\":\"F32\",\"shape\":[100000000000],\"data_offsets\":[0,400000000000]}}", 16);
    size_t m = make_image(buf + 256, sizeof buf - 256,
                          "{\"w\":{\"dtype\":\"F32\",\"shape\":[100000,1000000],\"data_offsets\":[0,16]}}", 16);
    return st_refused(buf, n, "data_offsets [0, 400000000000] run past the end of the data (16 bytes)") ||
           st_refused(buf + 256, m, "shape x dtype is 400000000000 bytes but data_offsets span 16");
}

static void test_shape_of_100g_elements_is_refused_before_allocating(void)
{
    CU_ASSERT_EQUAL(run_with_little_memory(claim_huge_shape, HEADROOM), 0);
}

static int claim_huge_counts(void)
{
    lg_err err = {{0}};
    static const char config[] = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                                 "\"num_hidden_layers\":1152921504606846976,\"num_attention_heads\":4,"
                                 "\"vocab_size\":1152921504606846976}";
    lg_hf_config *c = lg_hf_config_parse(config, sizeof config - 1, "config.json", &err);
    int rc = c || !strstr(err.msg, "'num_hidden_layers' = 1152921504606846976 is outside [1, 4096]") ? -1 : 0;
    lg_hf_config_free(c);
    /* tokenizer.json gives ids, not a count: a largest id of 2^60, or of 2^24 - 1 with one piece,
     * must not size a table */
    static const char *vocabs[] = {"{\"model\":{\"vocab\":{\"a\":1152921504606846976}}}",
                                   "{\"model\":{\"vocab\":{\"a\":16777215}}}"};
    static const char *want[] = {"model.vocab: 'a' has no valid id",
                                 "model.vocab: ids run to 16777215 but only 1 pieces are given"};
    for (int i = 0; i < 2; i++) {
        lg_sp_model m;
        lg_sp_model_init(&m);
        memset(&err, 0, sizeof err);
        if (lg_sp_model_read_hf_json(&m, vocabs[i], strlen(vocabs[i]), &err) == 0 || !strstr(err.msg, want[i])) {
            fprintf(stderr, "\n    expected '%s', got '%s'\n", want[i], err.msg);
            rc = -1;
        }
        lg_sp_model_free(&m);
    }
    return rc;
}

static void test_counts_of_2_60_are_refused_before_allocating(void)
{
    /* 16 MiB: the 2^24-entry id table (128 MiB) must not be attempted */
    CU_ASSERT_EQUAL(run_with_little_memory(claim_huge_counts, (size_t)16 << 20), 0);
}

/* A byte-plane member of 1000 bytes whose manifest gives the largest chunk a reader accepts (256
 * MiB): the decoder buffers at most the file's planed bytes, so it needs no chunk-sized buffers. */
static unsigned char small_data[1000];
static void *small_stream;
static size_t small_stream_n;

static int decode_small_member_with_huge_chunk(void)
{
    lg_bp_params p = {.transform = 1, .skip = 24, .chunk = LG_PKG_MAX_CHUNK};
    void *out = NULL;
    size_t n = 0;
    lg_err err = {{0}};
    int rc = lg_bp_decompress_buffer(&p, small_stream, small_stream_n, sizeof small_data, &out, &n, &err);
    if (rc != 0)
        fprintf(stderr, "\n    decoding: %s\n", err.msg);
    rc = rc == 0 && n == sizeof small_data && memcmp(out, small_data, n) == 0 ? 0 : -1;
    free(out);
    return rc;
}

static void test_small_byte_plane_member_decodes_without_chunk_sized_buffers(void)
{
    for (size_t i = 0; i < sizeof small_data; i++)
        small_data[i] = (unsigned char)(i * 131 + 7);
    /* one chunk either way: a stream made with any chunk of at least 1000 - 24 bytes is the same */
    lg_bp_params p = {.transform = 1, .skip = 24, .chunk = 1024};
    lg_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(
        lg_bp_compress_buffer(&p, 3, 1, small_data, sizeof small_data, &small_stream, &small_stream_n, &err), 0);
    /* 2 x 256 MiB would not fit in 64 MiB */
    CU_ASSERT_EQUAL(run_with_little_memory(decode_small_member_with_huge_chunk, HEADROOM), 0);
    free(small_stream);
    small_stream = NULL;
}

/* A config within every per-field limit can still describe a model of 10^15 parameters; with a
 * tiny checkpoint beside it lg-convert must refuse on the tensors, not try to size anything by the
 * config. Run under a 1 GiB address-space limit (ulimit -v) where the build allows one. */
static void test_config_of_a_huge_model_is_refused_on_its_tensors(void)
{
    char src[4400], out[4400], path[4400], tool[4096], cmd[16384], msg[8192];
    const char *dir = lg_test_tmpdir();
    join(src, sizeof src, dir, "src");
    join(out, sizeof out, dir, "out");
    CU_ASSERT_EQUAL_FATAL(mkdir(src, 0755), 0);
    static const char config[] =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":1048576,\"intermediate_size\":1048576,"
        "\"num_hidden_layers\":4096,\"num_attention_heads\":8192,\"vocab_size\":16777216,"
        "\"max_position_embeddings\":1073741824}";
    CU_ASSERT_EQUAL_FATAL(lg_write_file(join(path, sizeof path, src, "config.json"), config, sizeof config - 1), 0);
    unsigned char img[256];
    size_t n = make_image(img, sizeof img,
                          "{\"model.embed_tokens.weight\":{\"dtype\":\"F16\",\"shape\":[4,2],\"data_offsets\":[0,16]}}", 16);
    CU_ASSERT_EQUAL_FATAL(lg_write_file(join(path, sizeof path, src, "model.safetensors"), img, n), 0);
    snprintf(cmd, sizeof cmd, "%s '%s' '%s' -o '%s'", LG_UNDER_ASAN ? "" : "ulimit -v 1048576;",
             lg_tool(tool, sizeof tool, "lg-convert"), src, out);
    int status = lg_run_capture(cmd, msg, sizeof msg);
    CU_ASSERT(status > 0 && status < 128);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "model.embed_tokens.weight"));
    CU_ASSERT_PTR_NULL(strstr(msg, "out of memory"));
    CU_ASSERT_FALSE(lg_path_exists(out));
    if (!(status > 0 && status < 128) || !strstr(msg, "model.embed_tokens.weight"))
        fprintf(stderr, "\n    status %d, lg-convert said: %s\n", status, msg);
}

int lg_register_crash_safety_tests(void)
{
    CU_pSuite s = CU_add_suite("crash_safety", NULL, NULL);
    if (!s)
        return -1;
    if (!CU_add_test(s, "test_kill_9_never_leaves_a_partial_output", test_kill_9_never_leaves_a_partial_output) ||
        !CU_add_test(s, "test_disk_full_in_the_first_shard_leaves_nothing",
                     test_disk_full_in_the_first_shard_leaves_nothing) ||
        !CU_add_test(s, "test_disk_full_copying_the_tokenizer_leaves_nothing",
                     test_disk_full_copying_the_tokenizer_leaves_nothing) ||
        !CU_add_test(s, "test_header_claiming_2_60_bytes_is_refused_before_allocating",
                     test_header_claiming_2_60_bytes_is_refused_before_allocating) ||
        !CU_add_test(s, "test_shape_of_100g_elements_is_refused_before_allocating",
                     test_shape_of_100g_elements_is_refused_before_allocating) ||
        !CU_add_test(s, "test_counts_of_2_60_are_refused_before_allocating",
                     test_counts_of_2_60_are_refused_before_allocating) ||
        !CU_add_test(s, "test_small_byte_plane_member_decodes_without_chunk_sized_buffers",
                     test_small_byte_plane_member_decodes_without_chunk_sized_buffers) ||
        !CU_add_test(s, "test_config_of_a_huge_model_is_refused_on_its_tensors",
                     test_config_of_a_huge_model_is_refused_on_its_tensors))
        return -1;
    return 0;
}
