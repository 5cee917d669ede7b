/* A small persistent pool of pthreads for the CPU forward pass: the caller hands it a range of work
 * items and a function; the items are taken in chunks from a shared counter by the workers and by the
 * calling thread, and lg_pool_run returns when every item is done. */
#ifndef LG_THREAD_POOL_H
#define LG_THREAD_POOL_H

#include "error.h"

typedef struct lg_pool lg_pool;

/* Processes items [begin, end); `thread` is 0 .. n_threads-1 (0 is the calling thread), for
 * per-thread scratch buffers. */
typedef void (*lg_pool_fn)(void *arg, int begin, int end, int thread);

/* n_threads counts the caller; <= 0 means the number of online CPUs. NULL on error. */
lg_pool *lg_pool_new(int n_threads, lg_err *err);
void lg_pool_free(lg_pool *p);
int lg_pool_threads(const lg_pool *p);

/* Runs fn over [0, n_items) in chunks of `grain` items (>= 1). p may be NULL: runs inline. */
void lg_pool_run(lg_pool *p, int n_items, int grain, lg_pool_fn fn, void *arg);

#endif
