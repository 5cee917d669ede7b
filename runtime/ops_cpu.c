#include "ops_cpu.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

void lg_ops_rmsnorm(float *out, int ldo, const float *x, int ldx, const float *w, int n, int dim,
                    float eps)
{
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * ldx;
        float *o = out + (size_t)t * ldo;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float var = (float)(ss / dim);
        float r = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < dim; i++)
            o[i] = w[i] * (xr[i] * r);
    }
}

void lg_ops_rope(float *x, int ldx, int rows, int n_heads, int head_dim, const int *pos,
                 const float *inv_freq, float attn_scale)
{
    int half = head_dim / 2;
    for (int t = 0; t < rows; t++) {
        float p = (float)pos[t];
        for (int i = 0; i < half; i++) {
            float angle = p * inv_freq[i];
            float c = (float)cos((double)angle) * attn_scale;
            float s = (float)sin((double)angle) * attn_scale;
            for (int h = 0; h < n_heads; h++) {
                float *v = x + (size_t)t * ldx + (size_t)h * head_dim;
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x1 * c + x0 * s;
            }
        }
    }
}

void lg_ops_swiglu(float *out, int ldo, const float *gate, int ldg, const float *up, int ldu,
                   int rows, int ffn)
{
    for (int t = 0; t < rows; t++)
        for (int c = 0; c < ffn; c++) {
            float g = gate[(size_t)t * ldg + c];
            out[(size_t)t * ldo + c] = g / (1.0f + expf(-g)) * up[(size_t)t * ldu + c];
        }
}

void lg_ops_gemv16(float *y, int ldy, const void *w, lg_dtype w_dt, int ldw, const float *x,
                   int ldx, int n, int M, int K)
{
    const uint16_t *wh = w;
    for (int t = 0; t < n; t++)
        for (int m = 0; m < M; m++) {
            const uint16_t *wr = wh + (size_t)m * ldw;
            const float *xr = x + (size_t)t * ldx;
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float wv = w_dt == LG_DT_BF16 ? lg_bf16_to_f32(wr[k]) : lg_f16_to_f32(wr[k]);
                acc += (double)wv * xr[k];
            }
            y[(size_t)t * ldy + m] = (float)acc;
        }
}
