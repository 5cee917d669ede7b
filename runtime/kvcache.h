/* The key/value cache of one attention layer, shaped by the layer's kind (formats/longgen.h):
 *   full:          every position, for good;
 *   sink_window:   the `sink` first positions for good, plus a ring of the most recent positions;
 *   block_strided: the positions of every key block kb with (kb + 1) % stride == 0 for good, plus a
 *                  ring of the most recent positions (the `local` latest blocks).
 * The ring holds window - 1 + max_chunk (sink_window) or local * block - 1 + max_chunk (block_strided)
 * positions: enough for every query of an appended chunk of up to max_chunk positions to find all the
 * keys its mask shows it, so a chunk is appended first and attends afterwards. A sink_window cache
 * therefore never grows with the sequence; a block_strided one grows by 1/stride of it.
 *
 * Both stores grow on demand up to those bounds (a window larger than the sequence costs only what the
 * sequence uses). `order` lists the live positions ascending, with pointers to their keys and values,
 * so that attention sums keys in the same order whatever the chunking: decode gives bitwise the
 * numbers of prefill. */
#ifndef LG_KVCACHE_H
#define LG_KVCACHE_H

#include <stddef.h>

#include "error.h"
#include "longgen.h"

/* Positions kept by one store; keys and values are [cap][kv_dim]. */
typedef struct lg_kv_store {
    float *k, *v;
    int *pos;
    int len, cap;
} lg_kv_store;

typedef struct lg_kvcache {
    lg_layer_attn attn;
    int kv_dim;     /* n_kv_heads * head_dim floats per position, for keys and for values */
    int max_chunk;  /* most positions one append may add */
    lg_kv_store kept; /* positions kept for good, ascending */
    lg_kv_store ring; /* recent positions; filled in turn once it has reached ring_max */
    int ring_max;     /* 0 for full layers */
    int ring_next;    /* slot the next ring position takes */
    /* the live positions by ascending position */
    int n_live, order_cap;
    int *order_pos;
    const float **order_k, **order_v;
    long n_pos;     /* positions appended since the last reset: the next one is n_pos */
} lg_kvcache;

/* Sets up an empty cache. `reserve` is a hint of how many positions a full cache will hold (it grows
 * past it). lg_kvcache_free releases it. */
int lg_kvcache_init(lg_kvcache *c, const lg_layer_attn *attn, int kv_dim, int max_chunk,
                    int reserve, lg_err *err);
void lg_kvcache_free(lg_kvcache *c);
/* Forgets every position (keeps the memory). */
void lg_kvcache_reset(lg_kvcache *c);

/* Appends keys and values of positions n_pos .. n_pos + n - 1 (rows `ld` floats apart; n <=
 * max_chunk), evicting what the layer's mask will never show again. */
int lg_kvcache_append(lg_kvcache *c, const float *k, const float *v, int ld, int n, lg_err *err);

/* Bytes of keys and values held now (live positions) and allocated (capacity). */
size_t lg_kvcache_live_bytes(const lg_kvcache *c);
size_t lg_kvcache_alloc_bytes(const lg_kvcache *c);

#endif
