/* LongGen packages (.lgpkg): a model directory in one pax tar file, for distribution.
 *
 * Members, in this order:
 *   MANIFEST.json         what the package holds (below)
 *   MANIFEST.json.sha256  "<sha256 of MANIFEST.json>  MANIFEST.json\n", so that every byte of the
 *                         manifest is checked too (the same line `sha256sum -c` reads)
 *   one member per file, sorted by file name: the file as it is, or NAME.zst (zstd) or
 *   NAME.bp16.zst (zstd of byte planes, formats/byteplane.h) for *.safetensors files.
 * Every member is a regular file with mode 0644, owner 0:0 and mtime 0, so that one directory always
 * gives the same bytes (with the same libzstd).
 *
 * MANIFEST.json:
 *   {"format": "lgpkg", "format_version": 1, "tool": "lg-pack 0.1.0", "zstd": "1.5.4",
 *    "model": {"name", "architecture", "layers", "hidden_size", "heads", "kv_heads", "vocab_size",
 *              "max_context", "dtype", "parameters", "full_attention_layers", "plan"},
 *    "quantization": "none" or config.json's longgen.quantization object ({"method": "q4", ...}),
 *    "files": [{"name": "model.safetensors", "size": N, "sha256": "...",
 *               "stored": {"name": "model.safetensors.bp16.zst", "encoding": "zstd", "level": 3,
 *                          "transform": {"kind": "byteplane16", "skip": H, "chunk": 16777216},
 *                          "size": M}}, ...]}
 * `size`/`sha256` are those of the original file; `stored` describes the member. `encoding` is
 * "none" (then the stored name, size and sha256 equal the file's) or "zstd"; `transform` is absent
 * for plain zstd. A zstd member carries zstd's own checksum and is checked through the file's sha256
 * after decoding (a reader checks a stored "sha256" too when one is there).
 *
 * Readers (unpack, verify, the runtime's cache) stream the archive once: memory does not grow with
 * the model. They refuse anything but regular files with plain names listed in the manifest, each once
 * and of the size it lists, and check every sha256.
 */
#ifndef LG_PACKAGE_H
#define LG_PACKAGE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

#define LG_PKG_EXT ".lgpkg"
#define LG_PKG_MANIFEST "MANIFEST.json"
#define LG_PKG_MANIFEST_SUM "MANIFEST.json.sha256"
#define LG_PKG_FORMAT_VERSION 1
#define LG_PKG_DEFAULT_LEVEL 3
/* A manifest is a few KB per hundred files; anything near this is not ours. */
#define LG_PKG_MAX_MANIFEST ((size_t)16 << 20)
#define LG_PKG_MAX_FILES 100000

/* Set by a signal handler the tool installs: work stops at the next chunk, temporary files are
 * removed, and the call fails. */
extern volatile sig_atomic_t lg_package_interrupted;

/* 1 when path ends in .lgpkg. */
int lg_package_is_path(const char *path);

/* ---- packing ---- */
typedef struct lg_pack_opts {
    const char *model_dir, *out_path;
    const char *name;  /* model name in the manifest; NULL: the directory's base name */
    int level;         /* zstd level 1..19; 0: LG_PKG_DEFAULT_LEVEL */
    int workers;       /* zstd threads; 0: the number of CPUs (the output does not depend on it) */
    int force;         /* replace an existing out_path */
    int quiet;         /* no progress bar */
    int no_byte_planes; /* plain zstd for every tensor file (for comparing) */
} lg_pack_opts;

typedef struct lg_pack_result {
    int n_files;
    uint64_t bytes_in;      /* the model's files */
    uint64_t bytes_out;     /* the package */
    uint64_t tensor_bytes_in, tensor_bytes_stored; /* *.safetensors, before and after zstd */
    double seconds;
    char manifest_sha256[65];
} lg_pack_result;

/* Packs a checkpoint directory (regular files only, no subdirectories; a MANIFEST.json there, left
 * by an earlier unpack, is not packed). The model must be consistent (config vs tensors). Writes
 * out_path through a temporary directory beside it (which also holds the compressed members until
 * they are copied into the archive), renamed into place when complete. */
int lg_package_pack(const lg_pack_opts *o, lg_pack_result *res, lg_err *err);

/* ---- reading ---- */
typedef struct lg_unpack_opts {
    int force;          /* replace an existing out_dir */
    int keep_manifest;  /* also write MANIFEST.json into out_dir (the runtime's cache does) */
    int quiet;          /* no progress bar */
} lg_unpack_opts;

/* Unpacks into out_dir atomically: every file is written into out_dir.tmp-XXXXXX beside it and
 * checked; the directory is renamed into place only when all of them match the manifest. On any
 * error nothing is left. *manifest_sha256 (may be NULL) receives the package's id. */
int lg_package_unpack(const char *pkg, const char *out_dir, const lg_unpack_opts *o,
                      char manifest_sha256[65], lg_err *err);

typedef struct lg_verify_report {
    int is_package;
    int n_files;
    uint64_t bytes;             /* the files' sizes */
    int has_manifest;           /* a directory: MANIFEST.json was there and was checked */
    int n_tensors, n_layers;    /* the checkpoint's consistency check */
    char manifest_sha256[65];   /* packages and directories with a manifest */
    char model[256];            /* the manifest's model name, or empty */
} lg_verify_report;

/* Checks a package (every member's sha256, streamed; config.json and the safetensors headers are
 * decoded into memory for the consistency check) or a directory (its MANIFEST.json when there, then
 * the consistency check: config.json vs the tensors, as the runtime will load them). Lines naming
 * each checked file go to `log` when not NULL. */
int lg_package_verify(const char *path, FILE *log, int quiet, lg_verify_report *rep, lg_err *err);

/* lg_package_unpack and lg_package_verify of a package held in memory (size bytes at data), named
 * `label` in messages: the fuzz harness's entry points (tests/fuzz/fuzz_package.c). Verifying still
 * writes its scratch directory under $TMPDIR. */
int lg_package_unpack_memory(const void *data, size_t size, const char *label, const char *out_dir,
                             const lg_unpack_opts *o, char manifest_sha256[65], lg_err *err);
int lg_package_verify_memory(const void *data, size_t size, const char *label, FILE *log, int quiet,
                             lg_verify_report *rep, lg_err *err);

/* For the runtime: unpacks a package once into $XDG_CACHE_HOME/longgen/<manifest sha256> (or
 * ~/.cache/longgen/...) and returns that directory in dir_out. Later calls with the same package
 * find the directory and return at once (it only ever appears complete and verified). */
int lg_package_open_cached(const char *path, char *dir_out, size_t n, lg_err *err);

#endif
