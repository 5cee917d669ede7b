/* A progress bar on stderr for long work (conversion, perplexity), drawn only when stderr is a
 * terminal; every tool uses this one. */
#ifndef LG_PROGRESS_H
#define LG_PROGRESS_H

#include <stdint.h>

typedef struct lg_progress {
    const char *label;
    uint64_t total;
    int enabled;
    double start, last_draw;
    const char *unit; /* "B" for bytes (shown as GB), anything else shown as a count */
} lg_progress;

void lg_progress_start(lg_progress *p, const char *label, uint64_t total, const char *unit);
void lg_progress_update(lg_progress *p, uint64_t done);
/* Clears the bar line. */
void lg_progress_end(lg_progress *p);
/* Monotonic seconds. */
double lg_now(void);

#endif
