#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lg_err_set(lg_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void lg_err_prefix(lg_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[LG_ERR_MAX], old[LG_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}
