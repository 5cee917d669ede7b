#include "plot_svg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a growing text buffer */

typedef struct svg_buf {
    char *p;
    size_t n, cap;
    int oom;
} svg_buf;

static void put(svg_buf *b, const char *fmt, ...) LG_PRINTF(2, 3);

static void put(svg_buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* Text content or attribute value with XML's five special characters escaped. */
static void put_text(svg_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': put(b, "&amp;"); break;
        case '<': put(b, "&lt;"); break;
        case '>': put(b, "&gt;"); break;
        case '"': put(b, "&quot;"); break;
        case '\'': put(b, "&apos;"); break;
        default: put(b, "%c", *s);
        }
    }
}

static int write_atomic(const char *path, const svg_buf *b, lg_err *err)
{
    if (b->oom)
        return lg_err_set(err, "%s: out of memory building the picture", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return lg_err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = 0;
    if (fwrite(b->p, 1, b->n, f) != b->n || fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = lg_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && rc == 0)
        rc = lg_err_set(err, "%s: close failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = lg_err_set(err, "%s: rename failed: %s", path, strerror(errno));
    if (rc != 0)
        unlink(tmp);
    return rc;
}

static void svg_open(svg_buf *b, int w, int h)
{
    put(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
           "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n", w, h, w, h);
    put(b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", w, h);
}

static void put_label(svg_buf *b, double x, double y, const char *anchor, const char *extra,
                      const char *text)
{
    put(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra ? extra : "");
    put_text(b, text);
    put(b, "</text>\n");
}

/* ---------------------------------------------------------------- heatmap */

/* gkamradt's LLMTest_NeedleInAHaystack colour map: #F0496E (0) - #EBB839 (0.5) - #0CD79F (1). */
void lg_svg_score_colour(double v, char buf[8])
{
    static const int stops[3][3] = {{0xF0, 0x49, 0x6E}, {0xEB, 0xB8, 0x39}, {0x0C, 0xD7, 0x9F}};
    if (isnan(v)) {
        snprintf(buf, 8, "#cccccc");
        return;
    }
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    int k = v < 0.5 ? 0 : 1;
    double f = (v - 0.5 * k) * 2;
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = (int)lround(stops[k][i] + f * (stops[k + 1][i] - stops[k][i]));
    snprintf(buf, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

int lg_svg_heatmap_write(const char *path, const lg_heatmap *h, lg_err *err)
{
    if (h->n_cols < 1 || h->n_rows < 1)
        return lg_err_set(err, "%s: a heatmap needs at least one row and one column", path);
    const int cw = h->n_cols > 14 ? 48 : 64, ch = h->n_rows > 16 ? 22 : 30;
    const int left = 110, top = 56, legend_w = 110, bottom = 70;
    const int gw = cw * h->n_cols, gh = ch * h->n_rows;
    /* wide enough for the title (bold 16 px: under 10 px a character) */
    const int title_w = h->title ? (int)strlen(h->title) * 10 + 20 : 0;
    const int w = left + gw + legend_w > title_w ? left + gw + legend_w : title_w, hh = top + gh + bottom;
    svg_buf b = {0};
    svg_open(&b, w, hh);
    put_label(&b, w / 2.0, 28, "middle", " font-size=\"16\" font-weight=\"bold\"", h->title);
    for (int r = 0; r < h->n_rows; r++) {
        for (int c = 0; c < h->n_cols; c++) {
            double v = h->values[(size_t)r * (size_t)h->n_cols + (size_t)c];
            char fill[8];
            lg_svg_score_colour(v, fill);
            int x = left + c * cw, y = top + r * ch;
            put(&b, "<rect class=\"cell\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" "
                    "stroke=\"white\"><title>", x, y, cw, ch, fill);
            put_text(&b, h->x_label);
            put(&b, " ");
            put_text(&b, h->col_names[c]);
            put(&b, ", ");
            put_text(&b, h->y_label);
            put(&b, " ");
            put_text(&b, h->row_names[r]);
            if (isnan(v))
                put(&b, ": no value</title></rect>\n");
            else
                put(&b, ": %.2f</title></rect>\n", v);
            if (!isnan(v))
                put(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                        "fill=\"#222\">%.2f</text>\n", x + cw / 2.0, y + ch / 2.0 + 4, v);
        }
    }
    for (int c = 0; c < h->n_cols; c++)
        put_label(&b, left + c * cw + cw / 2.0, top + gh + 16, "middle", NULL, h->col_names[c]);
    for (int r = 0; r < h->n_rows; r++)
        put_label(&b, left - 8, top + r * ch + ch / 2.0 + 4, "end", NULL, h->row_names[r]);
    put_label(&b, left + gw / 2.0, top + gh + 44, "middle", " font-size=\"13\"", h->x_label);
    put(&b, "<text x=\"24\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" "
            "transform=\"rotate(-90 24 %.1f)\">", top + gh / 2.0, top + gh / 2.0);
    put_text(&b, h->y_label);
    put(&b, "</text>\n");
    /* legend: a vertical gradient bar, 1 at the top */
    const int lx = left + gw + 30, lw = 18, lh = gh < 120 ? 120 : gh;
    put(&b, "<defs><linearGradient id=\"score\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (int i = 0; i <= 4; i++) {
        char col[8];
        lg_svg_score_colour(i / 4.0, col);
        put(&b, "<stop offset=\"%.2f\" stop-color=\"%s\"/>", i / 4.0, col);
    }
    put(&b, "</linearGradient></defs>\n");
    put(&b, "<rect class=\"legend\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"url(#score)\" "
            "stroke=\"#888\"/>\n", lx, top, lw, lh);
    for (int i = 0; i <= 2; i++) {
        double y = top + lh - i * lh / 2.0;
        char tick[16];
        snprintf(tick, sizeof tick, "%.1f", i / 2.0);
        put(&b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#444\"/>\n", lx + lw, y,
            lx + lw + 4, y);
        put_label(&b, lx + lw + 7, y + 4, "start", NULL, tick);
    }
    put_label(&b, lx + lw / 2.0, top - 8, "middle", NULL, h->value_label);
    put(&b, "</svg>\n");
    int rc = write_atomic(path, &b, err);
    free(b.p);
    return rc;
}

/* ---------------------------------------------------------------- line plot */

/* Ticks at multiples of 1, 2 or 5 x 10^k covering [lo, hi] with about 5 steps. */
static double nice_step(double span)
{
    if (!(span > 0))
        return 1;
    double raw = span / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void axis_range(double lo, double hi, double *a, double *b, double *step)
{
    if (!(hi > lo)) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad;
        hi += pad;
    }
    *step = nice_step(hi - lo);
    *a = floor(lo / *step) * *step;
    *b = ceil(hi / *step) * *step;
}

int lg_svg_line_plot_write(const char *path, const lg_line_plot *p, lg_err *err)
{
    static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < p->n_series; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            xlo = fmin(xlo, x);
            xhi = fmax(xhi, x);
            ylo = fmin(ylo, y);
            yhi = fmax(yhi, y);
        }
    if (!isfinite(xlo))
        return lg_err_set(err, "%s: nothing to plot (no finite point)", path);
    double x0, x1, xs, y0, y1, ys;
    axis_range(xlo < 0 ? xlo : 0, xhi, &x0, &x1, &xs);
    axis_range(ylo, yhi, &y0, &y1, &ys);
    const int left = 80, top = 50, pw = 620, ph = 340, w = left + pw + 40, h = top + ph + 70;
#define PX(x) (left + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (top + ph - ((y) - y0) / (y1 - y0) * ph)
    svg_buf b = {0};
    svg_open(&b, w, h);
    put_label(&b, left + pw / 2.0, 28, "middle", " font-size=\"16\" font-weight=\"bold\"", p->title);
    put(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", left,
        top, pw, ph);
    for (double t = x0; t <= x1 + xs * 1e-9; t += xs) {
        char lab[32];
        snprintf(lab, sizeof lab, "%g", t);
        put(&b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n", PX(t), top, PX(t),
            top + ph);
        put_label(&b, PX(t), top + ph + 16, "middle", NULL, lab);
    }
    for (double t = y0; t <= y1 + ys * 1e-9; t += ys) {
        char lab[32];
        snprintf(lab, sizeof lab, "%g", t);
        put(&b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, PY(t),
            left + pw, PY(t));
        put_label(&b, left - 6, PY(t) + 4, "end", NULL, lab);
    }
    put_label(&b, left + pw / 2.0, top + ph + 44, "middle", " font-size=\"13\"", p->x_label);
    put(&b, "<text x=\"22\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" "
            "transform=\"rotate(-90 22 %.1f)\">", top + ph / 2.0, top + ph / 2.0);
    put_text(&b, p->y_label);
    put(&b, "</text>\n");
    for (int s = 0; s < p->n_series; s++) {
        const lg_line_series *ser = &p->series[s];
        const char *col = palette[s % 6];
        put(&b, "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (int i = 0; i < ser->n; i++)
            if (isfinite(ser->x[i]) && isfinite(ser->y[i]))
                put(&b, "%.1f,%.1f ", PX(ser->x[i]), PY(ser->y[i]));
        put(&b, "\"/>\n");
        for (int i = 0; i < ser->n; i++)
            if (isfinite(ser->x[i]) && isfinite(ser->y[i]))
                put(&b, "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%g: %g"
                        "</title></circle>\n", PX(ser->x[i]), PY(ser->y[i]), col, ser->x[i], ser->y[i]);
        if (ser->name && (p->n_series > 1 || ser->name[0])) {
            double ly = top + 16 + 18 * s;
            put(&b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                left + pw - 170, ly - 4, left + pw - 150, ly - 4, col);
            put_label(&b, left + pw - 144, ly, "start", NULL, ser->name);
        }
    }
#undef PX
#undef PY
    put(&b, "</svg>\n");
    int rc = write_atomic(path, &b, err);
    free(b.p);
    return rc;
}
