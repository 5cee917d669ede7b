/* A checkpoint directory: one model.safetensors, or shards listed by model.safetensors.index.json.
 * Tensors are looked up by name across shards; every shard stays mapped until lg_ckpt_close. */
#ifndef LG_CHECKPOINT_H
#define LG_CHECKPOINT_H

#include "error.h"
#include "safetensors.h"

#define LG_CKPT_INDEX "model.safetensors.index.json"
#define LG_CKPT_SINGLE "model.safetensors"

typedef struct lg_ckpt_entry {
    const lg_st_tensor *tensor;
    int file; /* index into files */
} lg_ckpt_entry;

typedef struct lg_checkpoint {
    char *dir;
    int n_files;
    lg_st_file **files;   /* files[i]->path is the full path */
    char **file_names;    /* names relative to dir, as in the index */
    int n_tensors;
    lg_ckpt_entry *entries; /* sorted by tensor name */
} lg_checkpoint;

lg_checkpoint *lg_ckpt_open(const char *dir, lg_err *err);
/* The same with the index given in memory (text, len bytes) instead of dir's index file; the
 * shards it lists are opened from dir. For the fuzz harness and tests. */
lg_checkpoint *lg_ckpt_open_index_text(const char *dir, const char *text, size_t len, lg_err *err);
void lg_ckpt_close(lg_checkpoint *c);
const lg_st_tensor *lg_ckpt_find(const lg_checkpoint *c, const char *name);
/* Total bytes of tensor data. */
uint64_t lg_ckpt_data_bytes(const lg_checkpoint *c);

#endif
