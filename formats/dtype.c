#include "dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[LG_DT_COUNT] = {
    [LG_DT_F64] = {"F64", 8},   [LG_DT_F32] = {"F32", 4},  [LG_DT_F16] = {"F16", 2},
    [LG_DT_BF16] = {"BF16", 2}, [LG_DT_I64] = {"I64", 8},  [LG_DT_I32] = {"I32", 4},
    [LG_DT_I16] = {"I16", 2},   [LG_DT_I8] = {"I8", 1},    [LG_DT_U64] = {"U64", 8},
    [LG_DT_U32] = {"U32", 4},   [LG_DT_U16] = {"U16", 2},  [LG_DT_U8] = {"U8", 1},
    [LG_DT_BOOL] = {"BOOL", 1}, [LG_DT_F8_E4M3] = {"F8_E4M3", 1},
    [LG_DT_F8_E5M2] = {"F8_E5M2", 1},
};

size_t lg_dtype_size(lg_dtype dt)
{
    return (unsigned)dt < LG_DT_COUNT ? dtype_info[dt].size : 0;
}

const char *lg_dtype_name(lg_dtype dt)
{
    return (unsigned)dt < LG_DT_COUNT ? dtype_info[dt].name : "?";
}

int lg_dtype_from_name(const char *name, lg_dtype *out)
{
    for (int i = 0; i < LG_DT_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (lg_dtype)i;
            return 0;
        }
    }
    return -1;
}

int lg_dtype_is_float(lg_dtype dt)
{
    return dt == LG_DT_F32 || dt == LG_DT_F16 || dt == LG_DT_BF16 || dt == LG_DT_F64;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float lg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* subnormal: value = man * 2^-24, exact in float */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t lg_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return sign | 0x7e00 | (uint16_t)((abs >> 13) & 0x3ff);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00;
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (abs < 0x33000000u) /* < 2^-25 rounds to zero */
            return sign;
        uint32_t exp = abs >> 23;
        uint32_t man = (abs & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - exp; /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return sign | (uint16_t)half;
    }
    /* normal: rebias exponent, round mantissa to 10 bits, nearest even (carry may bump the exponent) */
    uint32_t v = abs - (112u << 23);
    uint32_t rem = v & 0x1fff;
    v >>= 13;
    if (rem > 0x1000 || (rem == 0x1000 && (v & 1)))
        v++;
    return sign | (uint16_t)v;
}

float lg_bf16_to_f32(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

uint16_t lg_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float lg_load_float(const void *src, lg_dtype dt, size_t i)
{
    uint16_t h;
    switch (dt) {
    case LG_DT_F32: {
        float f;
        memcpy(&f, (const char *)src + 4 * i, 4);
        return f;
    }
    case LG_DT_F16:
        memcpy(&h, (const char *)src + 2 * i, 2);
        return lg_f16_to_f32(h);
    case LG_DT_BF16:
        memcpy(&h, (const char *)src + 2 * i, 2);
        return lg_bf16_to_f32(h);
    case LG_DT_F64: {
        double d;
        memcpy(&d, (const char *)src + 8 * i, 8);
        return (float)d;
    }
    default:
        return 0.0f;
    }
}

static void store_float(void *dst, lg_dtype dt, size_t i, float v)
{
    uint16_t h;
    switch (dt) {
    case LG_DT_F32:
        memcpy((char *)dst + 4 * i, &v, 4);
        break;
    case LG_DT_F16:
        h = lg_f32_to_f16(v);
        memcpy((char *)dst + 2 * i, &h, 2);
        break;
    case LG_DT_BF16:
        h = lg_f32_to_bf16(v);
        memcpy((char *)dst + 2 * i, &h, 2);
        break;
    case LG_DT_F64: {
        double d = v;
        memcpy((char *)dst + 8 * i, &d, 8);
        break;
    }
    default:
        break;
    }
}

int lg_convert_floats(void *dst, lg_dtype dst_dt, const void *src, lg_dtype src_dt, size_t n)
{
    if (!lg_dtype_is_float(dst_dt) || !lg_dtype_is_float(src_dt))
        return -1;
    if (dst_dt == src_dt) {
        memmove(dst, src, n * lg_dtype_size(dst_dt));
        return 0;
    }
    if (src_dt == LG_DT_F64) {
        /* F64 -> F16/BF16 through float would round twice; such checkpoints do not occur in practice
         * and double rounding differs from torch only on exact ties of the float rounding. */
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const char *)src + 8 * i, 8);
            if (dst_dt == LG_DT_F64)
                memcpy((char *)dst + 8 * i, &d, 8);
            else
                store_float(dst, dst_dt, i, (float)d);
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        store_float(dst, dst_dt, i, lg_load_float(src, src_dt, i));
    return 0;
}
