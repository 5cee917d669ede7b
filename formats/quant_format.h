/* Weight-only quantized tensors in a safetensors checkpoint (docs/FORMAT.md, "Quantized weights").
 *
 * A quantized linear weight `P.weight` [rows, cols] is stored as companion tensors with standard
 * dtypes, so that stock safetensors readers open the file:
 *   P.qweight  q8:  I8 [rows, cols]             w = scale * q
 *              q4:  U8 [rows, ceil(cols / 2)]   column 2j in the low nibble, 2j + 1 in the high one;
 *                                               symmetric: w = scale * (nibble - 8)
 *                                               with mins: w = min + scale * nibble
 *              fp8: F8_E4M3 [rows, cols]        w = scale * e4m3(q)
 *   P.scales   F16 [rows, n_groups] (q8, q4), F32 [rows, n_groups] (fp8)
 *   P.mins     F16 [rows, n_groups] (q4 with mins only)
 * where a group is `group` consecutive columns of one row (the last one may be shorter) and
 * n_groups = ceil(cols / group); group 0 means one scale per output channel (n_groups = 1).
 * The scheme is recorded in config.json's `longgen.quantization` object; which tensors are quantized
 * is told by the file itself (P.qweight instead of P.weight).
 *
 * This module holds the layout (names, dtypes, shapes, the config object) and the decoding of stored
 * codes to float32; convert/quantize.h holds the encoders. */
#ifndef LG_QUANT_FORMAT_H
#define LG_QUANT_FORMAT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

typedef enum lg_quant_method {
    LG_QUANT_NONE,
    LG_QUANT_Q8,  /* symmetric int8 */
    LG_QUANT_Q4,  /* int4, symmetric (nibble - 8) or with a per-group min */
    LG_QUANT_FP8, /* float8 e4m3fn, saturating at +-448 */
} lg_quant_method;

typedef struct lg_quant_scheme {
    lg_quant_method method;
    int group;    /* columns per scale; 0 = per output channel */
    int has_mins; /* q4 only: `.mins` companion; else symmetric */
} lg_quant_scheme;

#define LG_QUANT_MAX_GROUP 65536
#define LG_QUANT_MAX_EXCLUDED 64

/* The `longgen.quantization` object of config.json. */
typedef struct lg_quant_config {
    lg_quant_scheme scheme;
    int embeddings, lm_head;             /* were they asked to be quantized */
    int n_excluded;
    char excluded[LG_QUANT_MAX_EXCLUDED][128]; /* --quant-exclude patterns, informational */
} lg_quant_config;

typedef enum lg_quant_part { LG_QPART_WEIGHT, LG_QPART_SCALES, LG_QPART_MINS } lg_quant_part;

const char *lg_quant_method_name(lg_quant_method m); /* "q8", "q4", "fp8", "none" */
int lg_quant_method_from_name(const char *name, lg_quant_method *out);
/* Checks group (0 or even, <= LG_QUANT_MAX_GROUP; q4 needs a group) and has_mins (q4 only). */
int lg_quant_scheme_check(const lg_quant_scheme *s, lg_err *err);

/* Groups per row and the dtypes / shapes of each part. */
int lg_quant_n_groups(const lg_quant_scheme *s, int64_t cols);
lg_dtype lg_quant_part_dtype(const lg_quant_scheme *s, lg_quant_part part);
/* Shape [2] of a part of a [rows, cols] weight; part LG_QPART_MINS is only for q4 with mins. */
void lg_quant_part_shape(const lg_quant_scheme *s, lg_quant_part part, int64_t rows, int64_t cols,
                         int64_t shape[2]);
/* Bytes of one row of qweight. */
size_t lg_quant_row_bytes(const lg_quant_scheme *s, int64_t cols);
/* Number of parts (2, or 3 with mins). */
int lg_quant_n_parts(const lg_quant_scheme *s);

/* "P.weight" -> "P.qweight" / "P.scales" / "P.mins" into buf; -1 when name does not end in
 * ".weight" or buf is too small. */
int lg_quant_part_name(const char *weight_name, lg_quant_part part, char *buf, size_t n);

/* Reads `longgen.quantization` from a config document. *present = 0 (and q zeroed) when absent.
 * label names the file in messages. */
int lg_quant_config_from_json(const cJSON *config, const char *label, lg_quant_config *q,
                              int *present, lg_err *err);
cJSON *lg_quant_config_to_json(const lg_quant_config *q);

/* 1 when q's patterns exclude tensor `name`: a pattern with a glob character (* ? [) is matched
 * against the whole name with fnmatch; any other pattern matches as a substring ("down_proj"). */
int lg_quant_excluded(const lg_quant_config *q, const char *name);
/* 1 when the converter quantizes tensor `name` of ndim dimensions under q: a 2-D "*.weight" of the
 * linear layers, the embeddings / lm_head only when asked, nothing excluded, nothing when the method
 * is LG_QUANT_NONE. */
int lg_quant_wants(const lg_quant_config *q, const char *name, int ndim);

/* float8 e4m3fn (1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities, 0x7f/0xff
 * NaN): decoding is exact; encoding rounds to nearest even and saturates to +-448. */
float lg_e4m3_to_f32(uint8_t c);
uint8_t lg_f32_to_e4m3(float f);

/* A stored quantized tensor, as the reader sees it (pointers into the mapping). */
typedef struct lg_quant_tensor {
    lg_quant_scheme scheme;
    int64_t rows, cols;
    const void *qweight, *scales, *mins; /* mins NULL unless has_mins */
} lg_quant_tensor;

/* Finds the parts of quantized `weight_name` ("P.weight", [rows, cols]) in ck and checks their
 * dtypes and shapes against scheme s. Returns 1 with *out filled when found, 0 when no part exists
 * (the tensor is not quantized), -1 with a message naming the part on any inconsistency (a part
 * missing, one too many, a wrong dtype or shape, or a float P.weight beside them). */
struct lg_checkpoint;
int lg_quant_tensor_find(const struct lg_checkpoint *ck, const char *weight_name,
                         const lg_quant_scheme *s, int64_t rows, int64_t cols, lg_quant_tensor *out,
                         lg_err *err);

/* Scale and min (0 when the scheme has none; -8 scale for symmetric q4) of row r, group g, as
 * float32: the exact values every decoder multiplies by. */
void lg_quant_group_params(const lg_quant_tensor *t, int64_t r, int g, float *scale, float *min);
/* Decodes rows [r0, r0 + n) into out[n][cols]. Element (r, c) is, exactly in float32:
 * q8: scale * q; q4: min + scale * nibble; fp8: scale * e4m3(q). */
void lg_quant_dequant_rows(const lg_quant_tensor *t, int64_t r0, int64_t n, float *out);

#endif
