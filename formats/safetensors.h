/* safetensors: an 8-byte little-endian header length, a JSON header, then the data area.
 * The reader maps the file and validates the header the way the reference library does; the writer
 * declares every tensor first (so the header can be written first) and then streams the bytes. */
#ifndef LG_SAFETENSORS_H
#define LG_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "dtype.h"
#include "error.h"

#define LG_ST_MAX_DIMS 8
/* The reference library refuses headers above 100 MB; so do we, before allocating anything. */
#define LG_ST_MAX_HEADER ((uint64_t)100000000)

typedef struct lg_st_tensor {
    char *name;
    lg_dtype dtype;
    int ndim;
    int64_t shape[LG_ST_MAX_DIMS];
    uint64_t nelem;
    uint64_t begin, end; /* byte offsets inside the data area */
    const void *data;    /* points into the mapping; nbytes = end - begin */
} lg_st_tensor;

typedef struct lg_st_file {
    char *path;
    void *map;        /* whole file (NULL for an empty data area opened from memory) */
    size_t map_size;
    int owns_map;     /* 1 when lg_st_close must munmap */
    uint64_t data_start; /* 8 + header length */
    int n_tensors;
    lg_st_tensor *tensors; /* in header order */
    int n_meta;
    char **meta_keys, **meta_values;
} lg_st_file;

/* Maps and validates a file. NULL on error with err naming the file and the problem. */
lg_st_file *lg_st_open(const char *path, lg_err *err);
/* Validates a safetensors image already in memory (not copied; must outlive the result).
 * `label` names it in messages. Used by the fuzz harness and by tests. */
lg_st_file *lg_st_open_memory(const void *buf, size_t len, const char *label, lg_err *err);
void lg_st_close(lg_st_file *f);

const lg_st_tensor *lg_st_find(const lg_st_file *f, const char *name);
/* Value of a __metadata__ key, or NULL. */
const char *lg_st_meta(const lg_st_file *f, const char *key);
/* Bytes of a tensor's data. */
static inline uint64_t lg_st_nbytes(const lg_st_tensor *t) { return t->end - t->begin; }

/* ---- writer ---- */
typedef struct lg_st_writer lg_st_writer;

/* Starts a file that will appear at `path` only when lg_st_writer_finish succeeds
 * (it is written as `path.partial` and renamed). */
lg_st_writer *lg_st_writer_create(const char *path, lg_err *err);
int lg_st_writer_meta(lg_st_writer *w, const char *key, const char *value, lg_err *err);
/* Declares the next tensor; data must later be written in declaration order. */
int lg_st_writer_add(lg_st_writer *w, const char *name, lg_dtype dtype, int ndim,
                     const int64_t *shape, lg_err *err);
/* Writes the header (padded with spaces to a multiple of 8, as the reference writer does). */
int lg_st_writer_begin(lg_st_writer *w, lg_err *err);
/* Appends data bytes; the writer checks that each tensor gets exactly its size. */
int lg_st_writer_write(lg_st_writer *w, const void *data, size_t n, lg_err *err);
/* Checks every declared byte was written, fsyncs, renames into place and frees w. */
int lg_st_writer_finish(lg_st_writer *w, lg_err *err);
/* Removes the partial file and frees w (safe on NULL). */
void lg_st_writer_abort(lg_st_writer *w);
/* Size the finished file will have (valid after all lg_st_writer_add calls). */
uint64_t lg_st_writer_file_size(lg_st_writer *w);

/* Multiplies a shape into an element count; -1 on overflow past 2^62 or a negative dimension. */
int lg_shape_nelem(int ndim, const int64_t *shape, uint64_t *out);

#endif
