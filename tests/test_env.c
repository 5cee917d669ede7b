#include "test_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *lg_fixtures_dir(void)
{
    static char dir[4096];
    if (!dir[0]) {
        const char *env = getenv("LG_FIXTURES");
        if (env && *env)
            snprintf(dir, sizeof dir, "%s", env);
        else
            snprintf(dir, sizeof dir, "%s/../shared/fixtures", LG_SOURCE_DIR);
    }
    return dir;
}

const char *lg_fixture(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", lg_fixtures_dir(), rel);
    return buf;
}

static char tmp_root[4096];

static void remove_tmp_root(void)
{
    if (tmp_root[0] && !getenv("LG_KEEP_TMP"))
        lg_rm_rf(tmp_root);
}

const char *lg_test_tmpdir(void)
{
    static int counter;
    static char dir[4096];
    if (!tmp_root[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmp_root, sizeof tmp_root, "%s/lg-tests-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp_root)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(remove_tmp_root);
    }
    snprintf(dir, sizeof dir, "%s/t%d", tmp_root, counter++);
    mkdir(dir, 0755);
    return dir;
}

const char *lg_tool(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", LG_BIN_DIR, name);
    return buf;
}

int lg_run_capture(const char *cmd, char *out, size_t out_n)
{
    char full[16384];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p)
        return -1;
    size_t used = 0;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, p)) > 0) {
        if (out && used + 1 < out_n) {
            size_t take = got < out_n - 1 - used ? got : out_n - 1 - used;
            memcpy(out + used, chunk, take);
            used += take;
        }
    }
    if (out && out_n)
        out[used] = 0;
    int st = pclose(p);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int lg_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

char *lg_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[sz] = 0;
        if (n)
            *n = (size_t)sz;
    }
    return buf;
}

int lg_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

void lg_rm_rf(const char *path)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}
