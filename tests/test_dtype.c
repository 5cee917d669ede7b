/* dtype conversions: f16/bf16 round to nearest even exactly as torch's .half()/.bfloat16(). */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"

static void test_f16_roundtrip_is_exact_for_every_half(void)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = lg_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        CU_ASSERT_EQUAL_FATAL(lg_f32_to_f16(f), h);
    }
}

static void test_f16_rounding_ties_to_even(void)
{
    /* 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0) */
    CU_ASSERT_EQUAL(lg_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    /* 1 + 3*2^-11 lies halfway between 1+2^-10 (odd) and 1+2^-9 (even) */
    CU_ASSERT_EQUAL(lg_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    CU_ASSERT_EQUAL(lg_f32_to_f16(65504.0f), 0x7bff);
    CU_ASSERT_EQUAL(lg_f32_to_f16(65520.0f), 0x7c00);  /* rounds up to inf */
    CU_ASSERT_EQUAL(lg_f32_to_f16(65519.0f), 0x7bff);
    CU_ASSERT_EQUAL(lg_f32_to_f16(0x1p-24f), 0x0001);  /* smallest subnormal */
    CU_ASSERT_EQUAL(lg_f32_to_f16(0x1p-25f), 0x0000);  /* tie with zero goes to even (0) */
    CU_ASSERT_EQUAL(lg_f32_to_f16(0x1.8p-25f), 0x0001);
    CU_ASSERT_EQUAL(lg_f32_to_f16(-2.0f), 0xc000);
    CU_ASSERT(isnan(lg_f16_to_f32(lg_f32_to_f16(NAN))));
}

static void test_bf16_rounding(void)
{
    CU_ASSERT_EQUAL(lg_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between 1 and 1+2^-7: tie to even (1.0) */
    CU_ASSERT_EQUAL(lg_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    CU_ASSERT_EQUAL(lg_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    CU_ASSERT(isnan(lg_bf16_to_f32(lg_f32_to_bf16(NAN))));
    for (uint32_t b = 0; b < 0x10000; b++) {
        float f = lg_bf16_to_f32((uint16_t)b);
        if (!isnan(f))
            CU_ASSERT_EQUAL_FATAL(lg_f32_to_bf16(f), b);
    }
}

static void test_f16_to_bf16_goes_through_exact_float(void)
{
    uint16_t h[3] = {0x3c00, 0x3555, 0x0001}, b[3];
    CU_ASSERT_EQUAL(lg_convert_floats(b, LG_DT_BF16, h, LG_DT_F16, 3), 0);
    CU_ASSERT_EQUAL(b[0], 0x3f80);
    CU_ASSERT_EQUAL(lg_bf16_to_f32(b[1]), lg_bf16_to_f32(lg_f32_to_bf16(lg_f16_to_f32(0x3555))));
    CU_ASSERT_EQUAL(lg_convert_floats(b, LG_DT_I8, h, LG_DT_F16, 3), -1);
}

static void test_dtype_names_round_trip(void)
{
    for (int i = 0; i < LG_DT_COUNT; i++) {
        lg_dtype d;
        CU_ASSERT_EQUAL(lg_dtype_from_name(lg_dtype_name((lg_dtype)i), &d), 0);
        CU_ASSERT_EQUAL(d, i);
        CU_ASSERT(lg_dtype_size(d) > 0);
    }
    lg_dtype d;
    CU_ASSERT_EQUAL(lg_dtype_from_name("F4", &d), -1);
}

int lg_register_dtype_tests(void)
{
    CU_pSuite s = CU_add_suite("dtype", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_f16_roundtrip_is_exact_for_every_half", test_f16_roundtrip_is_exact_for_every_half);
    CU_add_test(s, "test_f16_rounding_ties_to_even", test_f16_rounding_ties_to_even);
    CU_add_test(s, "test_bf16_rounding", test_bf16_rounding);
    CU_add_test(s, "test_f16_to_bf16_goes_through_exact_float", test_f16_to_bf16_goes_through_exact_float);
    CU_add_test(s, "test_dtype_names_round_trip", test_dtype_names_round_trip);
    return 0;
}
