/* runtime/ops_cpu.c: the CPU twins that kernels/check compares the CUDA kernels with. They must be
 * right on their own, so each is checked here against a property or the CPU forward's own code. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "dtype.h"
#include "matmul_cpu.h"
#include "ops_cpu.h"

static uint64_t ops_rng = 0x2545f4914f6cdd1dull;

static float ops_uni(void)
{
    ops_rng ^= ops_rng << 13;
    ops_rng ^= ops_rng >> 7;
    ops_rng ^= ops_rng << 17;
    return (float)((ops_rng >> 40) * (1.0 / (1 << 23)) - 1.0);
}

static void test_ops_rope_at_position_zero_is_identity(void)
{
    enum { HD = 16, NH = 3 };
    float x[NH * HD], y[NH * HD], inv[HD / 2];
    for (int i = 0; i < NH * HD; i++)
        x[i] = y[i] = ops_uni();
    for (int i = 0; i < HD / 2; i++)
        inv[i] = powf(10000.0f, -2.0f * i / HD);
    int pos = 0;
    lg_ops_rope(y, NH * HD, 1, NH, HD, &pos, inv, 1.0f);
    for (int i = 0; i < NH * HD; i++) /* cos 0 = 1, sin 0 = 0: exact */
        CU_ASSERT_EQUAL(y[i], x[i]);
}

static void test_ops_rope_keeps_each_pair_length_and_scales_it(void)
{
    enum { HD = 32, NH = 2, ROWS = 5 };
    float x[ROWS * NH * HD], y[ROWS * NH * HD], inv[HD / 2];
    int pos[ROWS] = {1, 17, 4095, 65536, 131071};
    for (int i = 0; i < ROWS * NH * HD; i++)
        x[i] = y[i] = ops_uni();
    for (int i = 0; i < HD / 2; i++)
        inv[i] = powf(500000.0f, -2.0f * i / HD);
    const float scale = 1.25f; /* yarn's attention factor multiplies cos and sin */
    lg_ops_rope(y, NH * HD, ROWS, NH, HD, pos, inv, scale);
    for (int t = 0; t < ROWS; t++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < HD / 2; i++) {
                const float *a = x + (t * NH + h) * HD, *b = y + (t * NH + h) * HD;
                double n0 = hypot(a[i], a[i + HD / 2]), n1 = hypot(b[i], b[i + HD / 2]);
                /* a rotation in float32: a few float roundings, far under 1e-5 relative */
                CU_ASSERT(fabs(n1 - scale * n0) <= 1e-5 * (scale * n0) + 1e-7);
            }
}

static void test_ops_rmsnorm_rows_have_unit_rms_before_the_weight(void)
{
    enum { ROWS = 3, DIM = 4097 };
    float *x = malloc(sizeof(float) * ROWS * DIM), *y = malloc(sizeof(float) * ROWS * DIM);
    float *w = malloc(sizeof(float) * DIM);
    for (int i = 0; i < ROWS * DIM; i++)
        x[i] = 3.0f * ops_uni();
    for (int i = 0; i < DIM; i++)
        w[i] = 1.0f;
    lg_ops_rmsnorm(y, DIM, x, DIM, w, ROWS, DIM, 1e-6f);
    for (int t = 0; t < ROWS; t++) {
        double ss = 0;
        for (int i = 0; i < DIM; i++)
            ss += (double)y[t * DIM + i] * y[t * DIM + i];
        /* mean square ~3, so eps moves the result by ~3e-7; float rounding adds less */
        CU_ASSERT_DOUBLE_EQUAL(ss / DIM, 1.0, 1e-5);
    }
    free(x), free(y), free(w);
}

static void test_ops_swiglu_is_silu_gate_times_up(void)
{
    float gate[4] = {0.0f, 30.0f, -30.0f, 1.0f}, up[4] = {2.0f, 0.5f, 4.0f, 3.0f}, out[4];
    lg_ops_swiglu(out, 4, gate, 4, up, 4, 1, 4);
    CU_ASSERT_EQUAL(out[0], 0.0f);                      /* silu(0) = 0 */
    CU_ASSERT_DOUBLE_EQUAL(out[1], 15.0, 1e-5);         /* silu(g) -> g for large g */
    CU_ASSERT_DOUBLE_EQUAL(out[2], 0.0, 1e-10);         /* -> 0 for very negative g */
    CU_ASSERT_DOUBLE_EQUAL(out[3], 3.0 / (1.0 + exp(-1.0)), 1e-6);
}

static void test_ops_gemv16_matches_the_cpu_forward_matmul(void)
{
    enum { M = 37, K = 300, LDW = 304, N = 2 };
    uint16_t *w16 = malloc(2 * M * LDW);
    float *wf = malloc(sizeof(float) * M * K), *x = malloc(sizeof(float) * N * K);
    float y[N * M], ref[N * M];
    for (int dt = 0; dt < 2; dt++) {
        lg_dtype t = dt ? LG_DT_BF16 : LG_DT_F16;
        for (int m = 0; m < M; m++)
            for (int k = 0; k < LDW; k++) {
                float v = ops_uni();
                w16[m * LDW + k] = t == LG_DT_BF16 ? lg_f32_to_bf16(v) : lg_f32_to_f16(v);
                if (k < K)
                    wf[m * K + k] = t == LG_DT_BF16 ? lg_bf16_to_f32(w16[m * LDW + k])
                                                    : lg_f16_to_f32(w16[m * LDW + k]);
            }
        for (int i = 0; i < N * K; i++)
            x[i] = ops_uni();
        lg_pmat pm;
        lg_err err;
        CU_ASSERT_EQUAL_FATAL(lg_pmat_init(&pm, M, K, &err), 0);
        for (int m = 0; m < M; m++)
            lg_pmat_set_row(&pm, m, wf + m * K);
        lg_matmul(NULL, ref, M, x, K, N, &pm);
        lg_ops_gemv16(y, M, w16, t, LDW, x, K, N, M, K);
        for (int i = 0; i < N * M; i++) /* double vs float sums of 300 terms of size ~1: ~1e-5 */
            CU_ASSERT_DOUBLE_EQUAL(y[i], ref[i], 1e-4);
        lg_pmat_free(&pm);
    }
    free(w16), free(wf), free(x);
}

int lg_register_ops_cpu_tests(void)
{
    CU_pSuite s = CU_add_suite("ops_cpu", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "test_ops_rope_at_position_zero_is_identity", test_ops_rope_at_position_zero_is_identity);
    CU_add_test(s, "test_ops_rope_keeps_each_pair_length_and_scales_it", test_ops_rope_keeps_each_pair_length_and_scales_it);
    CU_add_test(s, "test_ops_rmsnorm_rows_have_unit_rms_before_the_weight", test_ops_rmsnorm_rows_have_unit_rms_before_the_weight);
    CU_add_test(s, "test_ops_swiglu_is_silu_gate_times_up", test_ops_swiglu_is_silu_gate_times_up);
    CU_add_test(s, "test_ops_gemv16_matches_the_cpu_forward_matmul", test_ops_gemv16_matches_the_cpu_forward_matmul);
    return 0;
}
