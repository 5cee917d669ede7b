#include "outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lg_write_all(int fd, const void *data, size_t n, const char *path, lg_err *err)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return lg_err_set(err, "%s: write failed: %s", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void lg_remove_tree(const char *dir)
{
    /* a file or a symlink (OUT replaced with --force) is removed itself, never followed */
    struct stat st;
    if (lstat(dir, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(dir);
        return;
    }
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[4352];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                lg_remove_tree(path);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void parent_dir(const char *path, char *buf, size_t n)
{
    snprintf(buf, n, "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash)
        snprintf(buf, n, ".");
    else if (slash == buf)
        buf[1] = 0;
    else
        *slash = 0;
}

int lg_outdir_begin(const char *out, int force, char *tmp, size_t n, lg_err *err)
{
    struct stat st;
    tmp[0] = 0;
    if (lstat(out, &st) == 0 && !force)
        return lg_err_set(err, "%s: already exists (remove it or pass --force)", out);
    snprintf(tmp, n, "%s.tmp-XXXXXX", out);
    if (!mkdtemp(tmp)) {
        int e = errno;
        tmp[0] = 0;
        return lg_err_set(err, "%s: cannot create a temporary directory beside it: %s", out,
                          strerror(e));
    }
    return 0;
}

int lg_outdir_publish(const char *tmp, const char *out, lg_err *err)
{
    char old[4200] = "";
    struct stat st;
    fsync_path(tmp);
    if (lstat(out, &st) == 0) {
        snprintf(old, sizeof old, "%s.old-%ld", out, (long)getpid());
        if (rename(out, old) != 0)
            return lg_err_set(err, "%s: cannot move the existing directory aside: %s", out,
                              strerror(errno));
    }
    if (rename(tmp, out) != 0) {
        int e = errno;
        if (old[0])
            rename(old, out);
        return lg_err_set(err, "%s: rename from %s failed: %s", out, tmp, strerror(e));
    }
    char parent[4200];
    parent_dir(out, parent, sizeof parent);
    fsync_path(parent);
    if (old[0])
        lg_remove_tree(old);
    return 0;
}
