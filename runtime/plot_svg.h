/* Pictures a person can open in a browser, written as SVG without any plotting library: a heatmap
 * (the needle-in-a-haystack grid: depth x length, colour = score, as in gkamradt's test) and a line
 * plot (perplexity against context position). Files are written to PATH.partial and renamed. */
#ifndef LG_PLOT_SVG_H
#define LG_PLOT_SVG_H

#include "error.h"

/* Values in [0, 1] on a red - yellow - green scale (gkamradt's colours); NaN is drawn grey. */
typedef struct lg_heatmap {
    const char *title, *x_label, *y_label, *value_label;
    int n_cols, n_rows;
    const char *const *col_names; /* n_cols labels under the columns */
    const char *const *row_names; /* n_rows labels left of the rows, the first at the top */
    const double *values;         /* [n_rows][n_cols] */
} lg_heatmap;

/* One <rect class="cell"> per value, with a <title> tooltip; axis labels; a legend bar. */
int lg_svg_heatmap_write(const char *path, const lg_heatmap *h, lg_err *err);

typedef struct lg_line_series {
    const char *name; /* legend entry (no legend for a single unnamed series) */
    const double *x, *y;
    int n;
} lg_line_series;

typedef struct lg_line_plot {
    const char *title, *x_label, *y_label;
    const lg_line_series *series;
    int n_series;
} lg_line_plot;

/* Axes with rounded ticks spanning every finite point, one polyline and markers per series. */
int lg_svg_line_plot_write(const char *path, const lg_line_plot *p, lg_err *err);

/* "#rrggbb" of a value in [0, 1] on the heatmap's scale into buf (8 bytes); grey for NaN. */
void lg_svg_score_colour(double v, char buf[8]);

#endif
