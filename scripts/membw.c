/* Memory read bandwidth of this machine for bench-cpu.sh: every thread sums its share of a
 * 1 GiB buffer (far larger than the caches), best of 5 passes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BYTES ((size_t)1 << 30)

typedef struct { const float *p; size_t n; float sum; } share;

static void *sum_share(void *arg)
{
    share *s = arg;
    float acc[16] = {0};
    for (size_t i = 0; i + 16 <= s->n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += s->p[i + k];
    for (int k = 0; k < 16; k++)
        s->sum += acc[k];
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1 || threads > 256)
        threads = 2;
    size_t n = BYTES / sizeof(float);
    float *buf = malloc(BYTES);
    if (!buf)
        return 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 1023);
    double best = 0;
    float total = 0;
    for (int pass = 0; pass < 5; pass++) {
        pthread_t th[256];
        share sh[256];
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int t = 0; t < threads; t++) {
            sh[t] = (share){buf + n / threads * t, n / threads, 0};
            pthread_create(&th[t], NULL, sum_share, &sh[t]);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            total += sh[t].sum;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        if (BYTES / s > best)
            best = BYTES / s;
    }
    printf("%.3f\n", best / 1e9);
    return total == 12345.0f; /* keep the sums alive */
}
