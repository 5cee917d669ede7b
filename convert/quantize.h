/* Weight-only quantization of float32 rows into the stored layout of formats/quant_format.h:
 * pure functions on arrays, called by the conversion one tensor (a block of rows) at a time.
 *
 * Scales are chosen so that no code is clipped, then rounded *up* to their stored precision (F16 for
 * q8/q4), and the codes are computed from the stored scale; so the error of each weight is at most
 * half a step of its group (see the bounds below), whatever the rounding of the scale. */
#ifndef LG_QUANTIZE_H
#define LG_QUANTIZE_H

#include <stdint.h>

#include "error.h"
#include "quant_format.h"

/* Quantizes rows w[n_rows][cols] into qweight (n_rows * lg_quant_row_bytes bytes), scales and mins
 * (n_rows * n_groups entries each, F16 bits as uint16_t or F32 per lg_quant_part_dtype; mins only for
 * q4 with mins, may be NULL otherwise). label names the tensor in messages. Fails on a non-finite
 * weight or a scale past F16's range.
 *
 * Per group with amax = max |w|, step s (the stored scale):
 *   q8        s = amax / 127 rounded up to F16; q = round(w / s) in [-127, 127]; |err| <= s / 2
 *   q4        s = m / -8 (m the weight of largest magnitude, as llama.cpp's Q4_0) rounded away from
 *             zero to F16; nibble = clamp(round(w / s) + 8, 0, 15); |err| <= |s| (only +8 s clips,
 *             to 7 s), else s / 2
 *   q4 mins   min = min(w) rounded down to F16, s = (max(w) - min) / 15 rounded up;
 *             nibble = round((w - min) / s); |err| <= s / 2
 *   fp8       s = amax / 448 in F32; q = e4m3(w / s), round to nearest even;
 *             |err| <= |w| / 16 + s 2^-10 (half a mantissa step, or half the subnormal step)
 */
int lg_quantize_rows(const lg_quant_scheme *s, const float *w, int64_t n_rows, int64_t cols,
                     void *qweight, void *scales, void *mins, const char *label, lg_err *err);

/* The smallest F16 value >= x, and the largest <= x (as F16 bits; +-inf past the range). */
uint16_t lg_f16_round_up(float x);
uint16_t lg_f16_round_down(float x);

#endif
