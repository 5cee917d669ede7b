#include "thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LG_POOL_MAX_THREADS 256

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
    unsigned long generation; /* bumped for every job; workers wait for a new one */
    int n_busy;               /* workers that have not finished the current job */
    int stop;
    /* the current job */
    lg_pool_fn fn;
    void *arg;
    int n_items, grain;
    atomic_int next;
};

static void pool_work(lg_pool *p, int thread)
{
    for (;;) {
        int b = atomic_fetch_add(&p->next, p->grain);
        if (b >= p->n_items)
            break;
        int e = b + p->grain < p->n_items ? b + p->grain : p->n_items;
        p->fn(p->arg, b, e, thread);
    }
}

static void *pool_main(void *arg)
{
    pool_worker *w = arg;
    lg_pool *p = w->pool;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->stop)
            pthread_cond_wait(&p->start_cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);

        pool_work(p, w->index);

        pthread_mutex_lock(&p->mu);
        if (--p->n_busy == 0)
            pthread_cond_signal(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
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
    atomic_init(&p->next, 0);
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
        p->stop = 1;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_items = n_items;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->n_busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);

    pool_work(p, 0);

    pthread_mutex_lock(&p->mu);
    while (p->n_busy > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
