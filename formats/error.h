/* Error reporting shared by every module: a fixed buffer the failing function fills with a message
 * naming the file and what is wrong. Functions that can fail return int (0 = ok) or NULL. */
#ifndef LG_ERROR_H
#define LG_ERROR_H

#include <stddef.h>

#define LG_ERR_MAX 1024

typedef struct lg_err {
    char msg[LG_ERR_MAX];
} lg_err;

#if defined(__GNUC__)
#define LG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LG_PRINTF(a, b)
#endif

/* Sets err->msg (err may be NULL). Always returns -1 so callers can `return lg_err_set(...)`. */
int lg_err_set(lg_err *err, const char *fmt, ...) LG_PRINTF(2, 3);

/* Prepends "prefix: " to an existing message (for adding the file name at an outer level). */
void lg_err_prefix(lg_err *err, const char *fmt, ...) LG_PRINTF(2, 3);

#endif
