/* Single-thread CPU time of y[n, rows] = x[n, cols] W^T with W in float32 (lg_pmat) and the same W
 * quantized (q8 per channel, q4 group 64 with mins, fp8 per channel), twice each, for
 * scripts/bench-quant-cpu.sh. Usage: quant-gemv ROWS COLS N */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "matmul_cpu.h"
#include "matmul_quant_cpu.h"
#include "quantize.h"

static double cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Mean seconds of one product, over at least a second of repeats. */
static double time_matmul(float *y, const float *x, int n, const lg_pmat *w)
{
    double t0 = cpu_seconds();
    int reps = 0;
    do {
        lg_matmul(NULL, y, w->rows, x, w->cols, n, w);
        reps++;
    } while (cpu_seconds() - t0 < 1.0);
    return (cpu_seconds() - t0) / reps;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int rows = atoi(argv[1]), cols = atoi(argv[2]), n = atoi(argv[3]);
    lg_err err;
    float *w = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * n * cols);
    float *y = malloc(sizeof(float) * n * rows);
    for (long i = 0; i < (long)rows * cols; i++)
        w[i] = (float)((rand() % 2001) - 1000) * 1e-5f;
    for (long i = 0; i < (long)n * cols; i++)
        x[i] = (float)((rand() % 2001) - 1000) * 1e-3f;
    lg_pmat pf;
    if (lg_pmat_init(&pf, rows, cols, &err) != 0)
        return 1;
    for (int r = 0; r < rows; r++)
        lg_pmat_set_row(&pf, r, w + (size_t)r * cols);
    const lg_quant_scheme schemes[3] = {{LG_QUANT_Q8, 0, 0}, {LG_QUANT_Q4, 64, 1}, {LG_QUANT_FP8, 0, 0}};
    printf("[%d, %d] x %d rows, one thread, %s:", rows, cols, n, lg_matmul_isa());
    for (int round = 0; round < 2; round++) {
        double tf = time_matmul(y, x, n, &pf);
        printf("\n  float32 %.3f ms", tf * 1e3);
        for (int k = 0; k < 3; k++) {
            const lg_quant_scheme *s = &schemes[k];
            int ng = lg_quant_n_groups(s, cols);
            void *q = malloc(lg_quant_row_bytes(s, cols) * rows);
            void *sc = malloc((size_t)rows * ng * 4), *mn = malloc((size_t)rows * ng * 2);
            lg_qmat *qm = calloc(1, sizeof *qm);
            if (lg_quantize_rows(s, w, rows, cols, q, sc, mn, "w", &err) != 0 ||
                lg_qmat_init(qm, s, rows, cols, &err) != 0)
                return 1;
            lg_quant_tensor t = {*s, rows, cols, q, sc, s->has_mins ? mn : NULL};
            lg_qmat_set_rows(qm, 0, &t, rows);
            lg_pmat pq = {.rows = rows, .cols = cols, .q = qm};
            double tq = time_matmul(y, x, n, &pq);
            printf(", %s %.3f ms (%.2fx float)", lg_quant_method_name(s->method), tq * 1e3, tq / tf);
            lg_pmat_free(&pq);
            free(q);
            free(sc);
            free(mn);
        }
    }
    printf("\n");
    lg_pmat_free(&pf);
    free(w);
    free(x);
    free(y);
    return 0;
}
