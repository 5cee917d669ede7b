/* Output directories that appear whole or not at all: built as OUT.tmp-XXXXXX beside OUT, then
 * renamed into place; on failure the temporary tree is removed. */
#ifndef LG_OUTDIR_H
#define LG_OUTDIR_H

#include <stddef.h>

#include "error.h"

/* Creates the temporary directory into tmp (n bytes). Refuses an existing OUT unless force. */
int lg_outdir_begin(const char *out, int force, char *tmp, size_t n, lg_err *err);
/* fsyncs tmp, renames it to out (an existing out is swapped aside first and removed after). */
int lg_outdir_publish(const char *tmp, const char *out, lg_err *err);
/* Writes all n bytes to fd (retrying short writes and EINTR); the message names path. */
int lg_write_all(int fd, const void *data, size_t n, const char *path, lg_err *err);
/* Removes a directory tree (no symlinks followed). */
void lg_remove_tree(const char *dir);

#endif
