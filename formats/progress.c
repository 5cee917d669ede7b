#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void lg_progress_start(lg_progress *p, const char *label, uint64_t total, const char *unit)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->unit = unit;
    p->enabled = isatty(fileno(stderr));
    p->start = lg_now();
}

void lg_progress_update(lg_progress *p, uint64_t done)
{
    if (!p->enabled)
        return;
    double now = lg_now();
    if (now - p->last_draw < 0.1 && done < p->total)
        return;
    p->last_draw = now;
    double frac = p->total ? (double)done / (double)p->total : 1.0;
    int width = 30, filled = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = 0;
    double el = now - p->start;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    if (strcmp(p->unit, "B") == 0)
        fprintf(stderr, "\r%s [%s] %5.1f%% %.2f/%.2f GB %.2f GB/s eta %.0fs ", p->label, bar,
                100 * frac, done / 1e9, p->total / 1e9, rate / 1e9, eta);
    else
        fprintf(stderr, "\r%s [%s] %5.1f%% %llu/%llu %s %.1f/s eta %.0fs ", p->label, bar,
                100 * frac, (unsigned long long)done, (unsigned long long)p->total, p->unit, rate,
                eta);
    fflush(stderr);
}

void lg_progress_end(lg_progress *p)
{
    if (p->enabled)
        fprintf(stderr, "\r%*s\r", 100, "");
}
