#include "thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LG_POOL_MAX_THREADS 256
/* how long a worker polls for the next job before sleeping: decode issues jobs back to back */
#define LG_POOL_SPIN 20000
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LG_POOL_PAUSE() __builtin_ia32_pause()
#else
#define LG_POOL_PAUSE() ((void)0)
#endif

/* How a job is shared: the caller publishes it under a new generation; anyone (the caller included)
 * claims chunks of items through `ticket`, which packs the generation (high 32 bits) with the next
 * unclaimed item, so a worker that wakes late for a finished job cannot claim items of the next one.
 * Jobs alternate between two slots, so the slot a late worker may still be reading is never the one
 * being filled. The caller waits for the items to be done, not for every worker to show up: when
 * another process holds a core, the caller simply does the work itself. */
typedef struct pool_job {
    /* atomic so that a late worker's read of a slot being refilled is not a data race; the
     * release/acquire pairs make a late worker that sees new fields also see the new ticket */
    _Atomic(lg_pool_fn) fn;
    _Atomic(void *) arg;
    atomic_int n_items, grain;
} pool_job;

typedef struct pool_worker {
    lg_pool *pool;
    int index;
} pool_worker;

struct lg_pool {
    int n_threads; /* including the caller */
    pthread_t *threads;
    pool_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    atomic_uint generation; /* of the latest job */
    atomic_int stop;
    pool_job jobs[2];       /* jobs[generation & 1] is the latest */
    _Atomic uint64_t ticket;
    atomic_int done;        /* items finished in the latest job */
};

/* Claims and runs chunks of job `gen` until none is left; returns when the ticket moves on. */
static void pool_work(lg_pool *p, unsigned gen, int thread)
{
    pool_job *j = &p->jobs[gen & 1];
    for (;;) {
        uint64_t t = atomic_load(&p->ticket);
        if ((unsigned)(t >> 32) != gen)
            return;
        int fn_items = atomic_load_explicit(&j->n_items, memory_order_acquire);
        int grain = atomic_load_explicit(&j->grain, memory_order_acquire);
        lg_pool_fn fn = atomic_load_explicit(&j->fn, memory_order_acquire);
        void *arg = atomic_load_explicit(&j->arg, memory_order_acquire);
        int b = (int)(uint32_t)t;
        if (b >= fn_items)
            return;
        int e = b + grain < fn_items ? b + grain : fn_items;
        /* the fields were read before this succeeds, so they belong to generation gen */
        if (!atomic_compare_exchange_weak(&p->ticket, &t, ((uint64_t)gen << 32) | (uint32_t)e))
            continue;
        fn(arg, b, e, thread);
        if (atomic_fetch_add(&p->done, e - b) + (e - b) == fn_items) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *pool_main(void *arg)
{
    pool_worker *w = arg;
    lg_pool *p = w->pool;
    unsigned seen = atomic_load(&p->generation);
    for (;;) {
        unsigned gen = atomic_load(&p->generation);
        for (int i = 0; i < LG_POOL_SPIN && gen == seen && !atomic_load(&p->stop); i++) {
            LG_POOL_PAUSE();
            gen = atomic_load(&p->generation);
        }
        if (gen == seen) {
            pthread_mutex_lock(&p->mu);
            while ((gen = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->start_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = gen;
        pool_work(p, gen, w->index);
    }
}

lg_pool *lg_pool_new(int n_threads, lg_err *err)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > LG_POOL_MAX_THREADS)
        n_threads = LG_POOL_MAX_THREADS;
    lg_pool *p = calloc(1, sizeof *p);
    if (!p) {
        lg_err_set(err, "thread pool: out of memory");
        return NULL;
    }
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->ticket, 0);
    atomic_init(&p->done, 0);
    for (int i = 0; i < 2; i++) {
        atomic_init(&p->jobs[i].fn, NULL);
        atomic_init(&p->jobs[i].arg, NULL);
        atomic_init(&p->jobs[i].n_items, 0);
        atomic_init(&p->jobs[i].grain, 1);
    }
    if (n_threads == 1)
        return p;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->threads || !p->workers) {
        lg_err_set(err, "thread pool: out of memory");
        p->n_threads = 1;
        lg_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        p->workers[i] = (pool_worker){p, i};
        if (pthread_create(&p->threads[i], NULL, pool_main, &p->workers[i]) != 0) {
            lg_err_set(err, "thread pool: could not start thread %d of %d", i + 1, n_threads);
            p->n_threads = i; /* only threads 1..i-1 exist */
            lg_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void lg_pool_free(lg_pool *p)
{
    if (!p)
        return;
    if (p->n_threads > 1) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->start_cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n_threads; i++)
            pthread_join(p->threads[i], NULL);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p->workers);
    free(p);
}

int lg_pool_threads(const lg_pool *p)
{
    return p ? p->n_threads : 1;
}

void lg_pool_run(lg_pool *p, int n_items, int grain, lg_pool_fn fn, void *arg)
{
    if (n_items <= 0)
        return;
    if (grain < 1)
        grain = 1;
    /* one chunk or one thread: waking the workers would cost more than it saves */
    if (!p || p->n_threads == 1 || n_items <= grain) {
        fn(arg, 0, n_items, 0);
        return;
    }
    unsigned gen = atomic_load(&p->generation) + 1;
    pool_job *j = &p->jobs[gen & 1];
    atomic_store_explicit(&j->fn, fn, memory_order_release);
    atomic_store_explicit(&j->arg, arg, memory_order_release);
    atomic_store_explicit(&j->n_items, n_items, memory_order_release);
    atomic_store_explicit(&j->grain, grain, memory_order_release);
    atomic_store(&p->done, 0);
    atomic_store(&p->ticket, (uint64_t)gen << 32);
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->generation, gen);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);

    pool_work(p, gen, 0);

    /* every item is claimed; wait for those other threads still run */
    for (int i = 0; i < LG_POOL_SPIN && atomic_load(&p->done) < n_items; i++)
        LG_POOL_PAUSE();
    if (atomic_load(&p->done) < n_items) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->done) < n_items)
            pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
