/* Reading a small JSON file (config.json, index, plan) with a size limit, so that a huge or
 * malformed file is refused with a message naming it. */
#ifndef LG_JSON_FILE_H
#define LG_JSON_FILE_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "error.h"

cJSON *lg_json_read_file(const char *path, size_t max_bytes, lg_err *err);
cJSON *lg_json_parse(const char *text, size_t len, const char *label, lg_err *err);
/* Writes a document to path via path.partial + fsync + rename. */
int lg_json_write_file(const char *path, const cJSON *doc, lg_err *err);

/* Reads an integer member; 0 if present and integral in [lo, hi], 1 if absent (out untouched),
 * -1 with a message otherwise. */
int lg_json_int(const cJSON *obj, const char *key, long lo, long hi, long *out, const char *label,
                lg_err *err);
/* Reads a number member; 0 present, 1 absent, -1 not a number. */
int lg_json_num(const cJSON *obj, const char *key, double *out, const char *label, lg_err *err);

#endif
