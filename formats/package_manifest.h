/* MANIFEST.json of a package (the layout is described in package.h): its parsed form, the parser
 * that validates everything a reader later relies on, and the rules for member names. Shared by the
 * package writer and reader; not part of the public API. */
#ifndef LG_PACKAGE_MANIFEST_H
#define LG_PACKAGE_MANIFEST_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "byteplane.h"
#include "error.h"

#define LG_PKG_NAME_MAX 255
#define LG_PKG_SUFFIX_ZSTD ".zst"
#define LG_PKG_SUFFIX_BP16 ".bp16.zst"
#define LG_PKG_TRANSFORM_BP16 "byteplane16"
/* Largest chunk a reader accepts from a manifest (its decoder allocates two of them). */
#define LG_PKG_MAX_CHUNK ((size_t)256 << 20)

typedef enum lg_pkg_encoding {
    LG_PKG_ENC_NONE,
    LG_PKG_ENC_ZSTD,
} lg_pkg_encoding;

typedef struct lg_pkg_file {
    char name[LG_PKG_NAME_MAX + 1];
    uint64_t size;
    char sha256[65];
    char stored_name[LG_PKG_NAME_MAX + 1];
    uint64_t stored_size;
    char stored_sha256[65];
    int has_stored_sha; /* zstd members: optional (zstd's frame checksum and the file's sha256 after
                         * decoding already cover them; hashing them too would double the work) */
    lg_pkg_encoding encoding;
    int level;          /* zstd level used (informational) */
    lg_bp_params bp;    /* transform 0: plain zstd (or no encoding) */
} lg_pkg_file;

typedef struct lg_pkg_manifest {
    int n_files;
    lg_pkg_file *files;
    char model[LG_PKG_NAME_MAX + 1]; /* model.name, may be empty */
} lg_pkg_manifest;

/* A member or file name: 1..255 bytes, no '/', '\\' or control characters, not "." or "..". */
int lg_pkg_name_ok(const char *name);

/* Parses and validates a manifest: format and version, every file's name, sizes, sha256 (64
 * lowercase hex digits), encoding and transform; names and stored names unique; none reserved.
 * `label` names it in messages. */
int lg_pkg_manifest_parse(const char *text, size_t len, const char *label, lg_pkg_manifest *m,
                          lg_err *err);
void lg_pkg_manifest_free(lg_pkg_manifest *m);

/* The manifest document for files[], a model summary object and the quantization (config.json's
 * `longgen.quantization`, or NULL for "none"); both are taken over. The caller frees the result. */
cJSON *lg_pkg_manifest_to_json(const lg_pkg_file *files, int n_files, cJSON *model, cJSON *quantization,
                               const char *tool);

/* "<hex>  MANIFEST.json\n" into line[96]; returns its length. */
size_t lg_pkg_manifest_sum_line(const char hex[65], char line[96]);

#endif
