/* Element types of safetensors files and conversions between the floating-point ones. */
#ifndef LG_DTYPE_H
#define LG_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum lg_dtype {
    LG_DT_F64, LG_DT_F32, LG_DT_F16, LG_DT_BF16,
    LG_DT_I64, LG_DT_I32, LG_DT_I16, LG_DT_I8,
    LG_DT_U64, LG_DT_U32, LG_DT_U16, LG_DT_U8,
    LG_DT_BOOL, LG_DT_F8_E4M3, LG_DT_F8_E5M2,
    LG_DT_COUNT
} lg_dtype;

/* Bytes per element. */
size_t lg_dtype_size(lg_dtype dt);
/* The safetensors spelling ("F16", "BF16", "F8_E4M3", ...). */
const char *lg_dtype_name(lg_dtype dt);
/* Parses a safetensors dtype string; 0 on success, -1 when unknown. */
int lg_dtype_from_name(const char *name, lg_dtype *out);
/* True for F32/F16/BF16/F64: the types the converter and runtime compute with. */
int lg_dtype_is_float(lg_dtype dt);

float lg_f16_to_f32(uint16_t h);
uint16_t lg_f32_to_f16(float f);   /* round to nearest even, overflow to inf, NaN kept */
float lg_bf16_to_f32(uint16_t b);
uint16_t lg_f32_to_bf16(float f);  /* round to nearest even, NaN kept quiet */

/* Converts n elements between float dtypes (F64/F32/F16/BF16). Same dtype is a copy.
 * Returns -1 if either dtype is not a float type. */
int lg_convert_floats(void *dst, lg_dtype dst_dt, const void *src, lg_dtype src_dt, size_t n);

/* Reads element i of a float array as float. */
float lg_load_float(const void *src, lg_dtype dt, size_t i);

#endif
