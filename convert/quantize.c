#include "quantize.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- F16 rounding */

uint16_t lg_f16_round_up(float x)
{
    uint16_t h = lg_f32_to_f16(x);
    if (!(lg_f16_to_f32(h) < x))
        return h;
    /* the next F16 above h: one more unit of magnitude for positives, one less for negatives */
    if (h == 0x8000)
        return 0x0001;
    return (h & 0x8000) ? (uint16_t)(h - 1) : (uint16_t)(h + 1);
}

uint16_t lg_f16_round_down(float x)
{
    return lg_f16_round_up(-x) ^ 0x8000;
}

/* ---------------------------------------------------------------- per group */

static int f16_scale(float want, uint16_t *out, const char *label, int64_t row, lg_err *err)
{
    uint16_t h = want >= 0 ? lg_f16_round_up(want) : lg_f16_round_down(want);
    if (isinf(lg_f16_to_f32(h)))
        return lg_err_set(err, "tensor '%s' row %lld: a quantization step of %g does not fit an "
                               "F16 scale", label, (long long)row, want);
    *out = h;
    return 0;
}

static int q8_group(const float *w, int n, int8_t *q, uint16_t *scale, const char *label,
                    int64_t row, lg_err *err)
{
    float amax = 0;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    if (f16_scale(amax / 127.0f, scale, label, row, err) != 0)
        return -1;
    float s = lg_f16_to_f32(*scale);
    for (int i = 0; i < n; i++) {
        float v = s > 0 ? nearbyintf(w[i] / s) : 0;
        q[i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, v));
    }
    return 0;
}

/* Nibble c of a q4 row (column c). */
static void put_nibble(uint8_t *row, int64_t c, int v)
{
    if (c & 1)
        row[c / 2] = (uint8_t)((row[c / 2] & 0x0f) | (v << 4));
    else
        row[c / 2] = (uint8_t)((row[c / 2] & 0xf0) | v);
}

static int q4_group(const float *w, int n, uint8_t *row, int64_t c0, int has_mins, uint16_t *scale,
                    uint16_t *min, const char *label, int64_t r, lg_err *err)
{
    if (has_mins) {
        float mn = w[0], mx = w[0];
        for (int i = 1; i < n; i++) {
            mn = fminf(mn, w[i]);
            mx = fmaxf(mx, w[i]);
        }
        *min = lg_f16_round_down(mn);
        float m = lg_f16_to_f32(*min);
        if (isinf(m))
            return lg_err_set(err, "tensor '%s' row %lld: minimum %g does not fit F16", label,
                              (long long)r, mn);
        if (f16_scale((mx - m) / 15.0f, scale, label, r, err) != 0)
            return -1;
        float s = lg_f16_to_f32(*scale);
        for (int i = 0; i < n; i++) {
            float v = s > 0 ? nearbyintf((w[i] - m) / s) : 0;
            put_nibble(row, c0 + i, (int)fmaxf(0.0f, fminf(15.0f, v)));
        }
        return 0;
    }
    /* the value of largest magnitude maps to -8 exactly; the other side reaches +7 */
    float big = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(w[i]) > fabsf(big))
            big = w[i];
    if (f16_scale(big / -8.0f, scale, label, r, err) != 0)
        return -1;
    float s = lg_f16_to_f32(*scale);
    for (int i = 0; i < n; i++) {
        float v = s != 0 ? nearbyintf(w[i] / s) + 8.0f : 8.0f;
        put_nibble(row, c0 + i, (int)fmaxf(0.0f, fminf(15.0f, v)));
    }
    return 0;
}

static void fp8_group(const float *w, int n, uint8_t *q, float *scale)
{
    float amax = 0;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    float s = amax / 448.0f;
    *scale = s;
    for (int i = 0; i < n; i++)
        q[i] = s > 0 ? lg_f32_to_e4m3(w[i] / s) : 0;
}

/* ---------------------------------------------------------------- rows */

int lg_quantize_rows(const lg_quant_scheme *s, const float *w, int64_t n_rows, int64_t cols,
                     void *qweight, void *scales, void *mins, const char *label, lg_err *err)
{
    if (lg_quant_scheme_check(s, err) != 0)
        return -1;
    if (s->has_mins && !mins)
        return lg_err_set(err, "tensor '%s': q4 with mins needs a mins buffer", label);
    int64_t group = s->group ? s->group : cols;
    int ng = lg_quant_n_groups(s, cols);
    size_t rb = lg_quant_row_bytes(s, cols);
    for (int64_t r = 0; r < n_rows; r++) {
        const float *wr = w + (size_t)r * cols;
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(wr[c]))
                return lg_err_set(err, "tensor '%s' [%lld, %lld] is %g: only finite weights can be "
                                       "quantized", label, (long long)r, (long long)c, wr[c]);
        uint8_t *qr = (uint8_t *)qweight + (size_t)r * rb;
        if (s->method == LG_QUANT_Q4)
            memset(qr, 0, rb); /* the high nibble of an odd row's last byte stays 0 */
        for (int g = 0; g < ng; g++) {
            int64_t c0 = (int64_t)g * group;
            int n = (int)(cols - c0 < group ? cols - c0 : group);
            size_t si = (size_t)r * ng + g;
            int rc = 0;
            switch (s->method) {
            case LG_QUANT_Q8:
                rc = q8_group(wr + c0, n, (int8_t *)qr + c0, (uint16_t *)scales + si, label, r, err);
                break;
            case LG_QUANT_Q4:
                rc = q4_group(wr + c0, n, qr, c0, s->has_mins, (uint16_t *)scales + si,
                              s->has_mins ? (uint16_t *)mins + si : NULL, label, r, err);
                break;
            default:
                fp8_group(wr + c0, n, qr + c0, (float *)scales + si);
                break;
            }
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}
