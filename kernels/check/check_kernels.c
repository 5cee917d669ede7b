/* lg-kernel-check: every CUDA kernel of kernels/ against its CPU twin on random data, then timings.
 *
 *   lg-kernel-check [--no-bench | --checks-quant | --bench-gemv | --bench-quant | --bench-fused |
 *                    --bench-prefill | --bench-decode-splits | --help]
 *
 * Each check draws fresh random inputs (never zeros), rounds them to the kernel's input types so that
 * the CPU twin sees exactly the values the GPU reads, poisons the outputs (all bits set: NaN in every
 * float type, so an element the kernel forgets to write fails the check), runs both, and prints
 *   kernel, shape, rel = ||gpu - ref|| / ||ref||, max |gpu - ref|, rel32, pass/FAIL
 * where ref is the CPU result rounded to the kernel's output type and rel32 the same against the
 * unrounded float32 result (for information: it includes the output's own storage rounding, up to
 * 2^-9 relative for bfloat16, which no kernel can avoid).
 *
 * Bound: rel <= 2e-3 for every 16-bit path with float16 or float32 output (the issue's figure). What
 * remains after the common rounding of inputs and outputs is the kernel's float32 arithmetic in
 * another order (~1e-6) and, in attention, P rounded to float16 for the tensor cores (2^-11
 * relative); either sits one to three orders of magnitude under the bound, so a failure means a
 * wrong result, not noise. With bfloat16 output, 1.6e-2: its rounding step is 8 times float16's
 * (2^-8 relative), and a float32 sum in another order now and then lands on the other side of a
 * rounding boundary, one value one step off. Among the few dozen outputs of the smallest checks one
 * such step is 1e-3 to 3e-3 of the norm (an H100 measured 2.55e-3: one of 48 SwiGLU outputs whose
 * gate and up sums are rounded to bfloat16 first), so 2e-3 would fail a correct kernel by chance;
 * a wrong one misses by orders of magnitude either way.
 *
 * Bound for float32 paths (inputs and output float32, as a float32 checkpoint runs): rel <= 1e-5.
 * Nothing is rounded there but float32 arithmetic itself, in another order than the CPU twin's: a
 * K-term dot product of random values summed one term after another drifts by ~2^-24 * sqrt(K) / 3
 * relative (2e-6 at K = 11008, the largest here; the GPU's 32 lane sums ~3e-7), softmax's exp2f
 * against expf a few ulps (~1e-7). A path that rounds anything to 16 bits or TF32 (2^-11 relative a
 * value, ~1e-4 and more after a sum) fails it by an order of magnitude at least.
 *
 * Timings (median of repeated launches timed with CUDA events, inputs larger than L2 or rotated):
 * GEMV against cuBLAS on 11008x4096 and 4096x11008 (GB/s and the fraction of the measured
 * device-to-device copy bandwidth), the quantized GEMV on Llama-2-7B's shapes (GB/s of the codes,
 * scales, mins and x it reads, the speedup over the float16 GEMV of the same shape, and its time
 * against lg_k_read_sum of as many bytes: what a kernel of that size can reach), decode's fused
 * quantized products (SwiGLU, RoPE) on 7B's shapes and their tensor-parallel shards, and the
 * dequantization, prefill attention in TFLOP/s (4 * head_dim * visible pairs per head).
 * Exits 1 when any check fails, 2 when the program itself cannot run.
 *
 * Quantized weights are random bytes in the checkpoint's layout; the twins are the CPU runtime's
 * quantized product (lg_qmat_matmul) and lg_quant_dequant_rows, and the dequantization must match
 * the latter bit for bit. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_cpu.h"
#include "dtype.h"
#include "hf_config.h"
#include "kv_slots.h"
#include "kvcache.h"
#include "lg_kernels.h"
#include "matmul_cpu.h"
#include "matmul_quant_cpu.h"
#include "ops_cpu.h"
#include "quant_format.h"

#define REL_BOUND 2e-3
#define REL_BOUND_F32 1e-5

static int n_pass, n_fail;

/* ---------------------------------------------------------------- plumbing */

#define CK(call)                                                                                  \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                              \
        }                                                                                         \
    } while (0)

/* a launcher that fails on valid input is a failed check, and the run cannot go on */
#define KK(call)                                                                                  \
    do {                                                                                          \
        if ((call) != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, lg_k_last_error());     \
            exit(2);                                                                              \
        }                                                                                         \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_u64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* uniform in [-1, 1) */
static float uni(void)
{
    return (float)((next_u64() >> 40) * (1.0 / (1 << 23)) - 1.0);
}

static lg_dtype hdt(lg_kdtype k)
{
    return k == LG_KDT_F32 ? LG_DT_F32 : k == LG_KDT_F16 ? LG_DT_F16 : LG_DT_BF16;
}

static const char *dname(lg_kdtype k)
{
    return k == LG_KDT_F32 ? "f32" : k == LG_KDT_F16 ? "f16" : "bf16";
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

/* x rounded to dt in place */
static void round_to(float *x, size_t n, lg_kdtype dt)
{
    if (dt == LG_KDT_F32)
        return;
    uint16_t *tmp = xmalloc(n * 2);
    lg_convert_floats(tmp, hdt(dt), x, LG_DT_F32, n);
    lg_convert_floats(x, LG_DT_F32, tmp, hdt(dt), n);
    free(tmp);
}

/* n random values scale * [-1, 1) + offset, exactly representable in dt */
static float *rnd(size_t n, float scale, float offset, lg_kdtype dt)
{
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = offset + scale * uni();
    round_to(x, n, dt);
    return x;
}

static void *dpoison(size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes ? bytes : 16));
    CK(cudaMemset(d, 0xff, bytes ? bytes : 16));
    return d;
}

static void *up(const float *h, size_t n, lg_kdtype dt)
{
    size_t es = (size_t)lg_kdtype_size(dt);
    void *tmp = xmalloc(n * es);
    lg_convert_floats(tmp, hdt(dt), h, LG_DT_F32, n);
    void *d = dpoison(n * es);
    CK(cudaMemcpy(d, tmp, n * es, cudaMemcpyHostToDevice));
    free(tmp);
    return d;
}

static int *up_int(const int *h, size_t n)
{
    int *d = dpoison(n * sizeof(int));
    CK(cudaMemcpy(d, h, n * sizeof(int), cudaMemcpyHostToDevice));
    return d;
}

static float *down(const void *d, size_t n, lg_kdtype dt)
{
    CK(cudaDeviceSynchronize());
    size_t es = (size_t)lg_kdtype_size(dt);
    void *tmp = xmalloc(n * es);
    CK(cudaMemcpy(tmp, d, n * es, cudaMemcpyDeviceToHost));
    float *h = xmalloc(n * sizeof(float));
    lg_convert_floats(h, LG_DT_F32, tmp, hdt(dt), n);
    free(tmp);
    return h;
}

/* The bound of a check (see the top): float32's when the kernel reads and writes float32 only, 8
 * times the 16-bit one for a bfloat16 output. */
static double bound_of(lg_kdtype in_dt, lg_kdtype out_dt)
{
    if (in_dt == LG_KDT_F32 && out_dt == LG_KDT_F32)
        return REL_BOUND_F32;
    return out_dt == LG_KDT_BF16 ? 8 * REL_BOUND : REL_BOUND;
}

/* Compares rows x cols (rows ld apart in both) against ref32 rounded to out_dt (unchanged for
 * float32) and prints one table line; passes when rel <= bound. */
static void report(const char *kernel, const char *shape, const float *gpu, const float *ref32,
                   int rows, int cols, int ld, lg_kdtype out_dt, double bound)
{
    size_t n = (size_t)rows * ld;
    float *ref = xmalloc(n * sizeof(float));
    memcpy(ref, ref32, n * sizeof(float));
    round_to(ref, n, out_dt);
    double d2 = 0, r2 = 0, d2_32 = 0, r2_32 = 0, maxabs = 0;
    int bad = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t i = (size_t)r * ld + c;
            double g = gpu[i], e = ref[i], e32 = ref32[i];
            if (!isfinite(g))
                bad = 1;
            d2 += (g - e) * (g - e);
            r2 += e * e;
            d2_32 += (g - e32) * (g - e32);
            r2_32 += e32 * e32;
            if (fabs(g - e) > maxabs)
                maxabs = fabs(g - e);
        }
    double rel = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    double rel32 = r2_32 > 0 ? sqrt(d2_32 / r2_32) : sqrt(d2_32);
    int ok = !bad && rel <= bound;
    printf("%-20s %-52s %9.2e %9.2e %9.2e  %s\n", kernel, shape, bad ? NAN : rel, maxabs, rel32,
           ok ? "pass" : "FAIL");
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
    free(ref);
}

static void report_exact(const char *kernel, const char *shape, int ok)
{
    printf("%-20s %-52s %9s %9s %9s  %s\n", kernel, shape, "-", "-", "-", ok ? "pass" : "FAIL");
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

/* ---------------------------------------------------------------- elementwise */

static void check_embed(lg_kdtype tdt, lg_kdtype odt, int vocab, int n, int dim)
{
    float *table = rnd((size_t)vocab * dim, 1.0f, 0.0f, tdt);
    int *ids = xmalloc(n * sizeof(int));
    for (int t = 0; t < n; t++)
        ids[t] = (int)(next_u64() % (uint64_t)vocab);
    int ldo = dim + 3;
    float *ref = xmalloc((size_t)n * ldo * sizeof(float));
    for (int t = 0; t < n; t++)
        memcpy(ref + (size_t)t * ldo, table + (size_t)ids[t] * dim, dim * sizeof(float));
    void *dt_ = up(table, (size_t)vocab * dim, tdt);
    int *di = up_int(ids, n);
    void *dout = dpoison((size_t)n * ldo * lg_kdtype_size(odt));
    KK(lg_k_embed(dout, odt, ldo, dt_, tdt, vocab, di, n, dim, NULL));
    float *g = down(dout, (size_t)n * ldo, odt);
    char shape[96];
    snprintf(shape, sizeof shape, "%s->%s vocab %d n %d dim %d", dname(tdt), dname(odt), vocab, n,
             dim);
    report("embed", shape, g, ref, n, dim, ldo, odt, bound_of(tdt, odt));
    free(table), free(ids), free(ref), free(g);
    cudaFree(dt_), cudaFree(di), cudaFree(dout);
}

static void check_rmsnorm(lg_kdtype xdt, lg_kdtype wdt, lg_kdtype odt, int rows, int dim, int fused,
                          lg_kdtype ddt)
{
    int ld = dim + (dim & 1 ? 1 : 8);
    size_t n = (size_t)rows * ld;
    float *x = rnd(n, 2.0f, 0.0f, xdt), *w = rnd(dim, 0.5f, 1.0f, wdt);
    float *d = fused ? rnd(n, 1.0f, 0.0f, ddt) : NULL;
    float *xs = xmalloc(n * sizeof(float)), *ref = xmalloc(n * sizeof(float));
    memcpy(xs, x, n * sizeof(float));
    if (fused) {
        for (size_t i = 0; i < n; i++)
            xs[i] = x[i] + d[i];
        round_to(xs, n, xdt);
    }
    lg_ops_rmsnorm(ref, ld, xs, ld, w, rows, dim, 1e-5f);
    void *dx = up(x, n, xdt), *dw = up(w, dim, wdt), *dd = fused ? up(d, n, ddt) : NULL;
    void *dout = dpoison(n * lg_kdtype_size(odt));
    char shape[96];
    if (fused) {
        KK(lg_k_add_rmsnorm(dx, xdt, ld, dd, ddt, ld, dout, odt, ld, dw, wdt, rows, dim, 1e-5f,
                            NULL));
        float *gx = down(dx, n, xdt);
        snprintf(shape, sizeof shape, "x %s += %s, rows %d dim %d (x)", dname(xdt), dname(ddt),
                 rows, dim);
        report("add_rmsnorm", shape, gx, xs, rows, dim, ld, xdt, bound_of(ddt, xdt));
        free(gx);
    } else {
        KK(lg_k_rmsnorm(dout, odt, ld, dx, xdt, ld, dw, wdt, rows, dim, 1e-5f, NULL));
    }
    float *g = down(dout, n, odt);
    snprintf(shape, sizeof shape, "%s w %s -> %s, rows %d dim %d", dname(xdt), dname(wdt),
             dname(odt), rows, dim);
    report(fused ? "add_rmsnorm" : "rmsnorm", shape, g, ref, rows, dim, ld, odt,
           bound_of(xdt == wdt ? xdt : LG_KDT_F16, odt));
    free(x), free(w), free(d), free(xs), free(ref), free(g);
    cudaFree(dx), cudaFree(dw), cudaFree(dd), cudaFree(dout);
}

static void check_add_convert(lg_kdtype xdt, lg_kdtype ddt, int rows, int cols, int convert)
{
    int ld = cols + 5;
    size_t n = (size_t)rows * ld;
    float *x = rnd(n, 1.0f, 0.0f, xdt), *d = rnd(n, 1.0f, 0.0f, ddt);
    float *ref = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        ref[i] = convert ? d[i] : x[i] + d[i];
    void *dx = convert ? dpoison(n * lg_kdtype_size(xdt)) : up(x, n, xdt), *dd = up(d, n, ddt);
    if (convert)
        KK(lg_k_convert(dx, xdt, ld, dd, ddt, ld, rows, cols, NULL));
    else
        KK(lg_k_add(dx, xdt, ld, dd, ddt, ld, rows, cols, NULL));
    float *g = down(dx, n, xdt);
    char shape[96];
    snprintf(shape, sizeof shape, "%s %s %s, %d x %d", dname(xdt), convert ? "=" : "+=",
             dname(ddt), rows, cols);
    report(convert ? "convert" : "add", shape, g, ref, rows, cols, ld, xdt, bound_of(ddt, xdt));
    free(x), free(d), free(ref), free(g);
    cudaFree(dx), cudaFree(dd);
}

static void check_rope(lg_kdtype dt, int rows, int nh, int nkv, int hd, const lg_rope *rope,
                       const char *rope_name, int with_pos)
{
    int half = hd / 2;
    float *inv = xmalloc(half * sizeof(float)), attn_scale = 1.0f;
    lg_rope_inv_freq(rope, hd, 4096, 4096, inv, &attn_scale);
    int ldq = nh * hd + 8, ldk = nkv * hd + 2;
    float *q = rnd((size_t)rows * ldq, 1.0f, 0.0f, dt), *k = rnd((size_t)rows * ldk, 1.0f, 0.0f, dt);
    int *pos = xmalloc(rows * sizeof(int));
    int pos0 = 1000;
    for (int t = 0; t < rows; t++)
        pos[t] = with_pos ? (int)(next_u64() % 131072) : pos0 + t;
    void *dq = up(q, (size_t)rows * ldq, dt), *dk = up(k, (size_t)rows * ldk, dt);
    int *dpos = up_int(pos, rows);
    float *dinv;
    CK(cudaMalloc((void **)&dinv, half * sizeof(float)));
    CK(cudaMemcpy(dinv, inv, half * sizeof(float), cudaMemcpyHostToDevice));
    KK(lg_k_rope(dq, ldq, nh, dk, ldk, nkv, dt, rows, hd, with_pos ? dpos : NULL, pos0, dinv,
                 attn_scale, NULL));
    lg_ops_rope(q, ldq, rows, nh, hd, pos, inv, attn_scale);
    lg_ops_rope(k, ldk, rows, nkv, hd, pos, inv, attn_scale);
    float *gq = down(dq, (size_t)rows * ldq, dt), *gk = down(dk, (size_t)rows * ldk, dt);
    char shape[96];
    snprintf(shape, sizeof shape, "%s %s rows %d heads %d/%d hd %d%s", dname(dt), rope_name, rows,
             nh, nkv, hd, with_pos ? " pos[]" : "");
    report("rope q", shape, gq, q, rows, nh * hd, ldq, dt, bound_of(dt, dt));
    report("rope k", shape, gk, k, rows, nkv * hd, ldk, dt, bound_of(dt, dt));
    free(inv), free(q), free(k), free(pos), free(gq), free(gk);
    cudaFree(dq), cudaFree(dk), cudaFree(dpos), cudaFree(dinv);
}

/* lg_k_rope_kv: RoPE as lg_k_rope (q and k in place, against lg_ops_rope), and the rotated k rows
 * and the v rows written to their slots (from the last one down) of random caches: a slot's key equals
 * the rotated row the kernel left in k, its value the v row, bit for bit; every other slot and the
 * rows' padding keep their bytes; slot_pos gets the positions. */
static void check_rope_kv(lg_kdtype dt, int rows, int nh, int nkv, int hd, const lg_rope *rope,
                          int with_pos)
{
    int half = hd / 2, kvd = nkv * hd, n_slots = rows + 5, ldc = kvd + 4;
    float *inv = xmalloc(half * sizeof(float)), attn_scale = 1.0f;
    lg_rope_inv_freq(rope, hd, 4096, 4096, inv, &attn_scale);
    int ldq = nh * hd + 8, ldk = kvd + 2, ldv = kvd + 6;
    float *q = rnd((size_t)rows * ldq, 1.0f, 0.0f, dt), *k = rnd((size_t)rows * ldk, 1.0f, 0.0f, dt);
    float *v = rnd((size_t)rows * ldv, 1.0f, 0.0f, dt);
    float *kc = rnd((size_t)n_slots * ldc, 1.0f, 0.0f, dt);
    float *vc = rnd((size_t)n_slots * ldc, 1.0f, 0.0f, dt);
    int *pos = xmalloc(rows * sizeof(int)), *slots = xmalloc(rows * sizeof(int));
    int *spos = xmalloc(n_slots * sizeof(int)), pos0 = 700;
    for (int s = 0; s < n_slots; s++)
        spos[s] = -1;
    for (int t = 0; t < rows; t++) {
        pos[t] = with_pos ? (int)(next_u64() % 131072) : pos0 + t;
        slots[t] = n_slots - 1 - t;
    }
    void *dq = up(q, (size_t)rows * ldq, dt), *dk = up(k, (size_t)rows * ldk, dt);
    void *dv = up(v, (size_t)rows * ldv, dt);
    void *dkc = up(kc, (size_t)n_slots * ldc, dt), *dvc = up(vc, (size_t)n_slots * ldc, dt);
    int *dpos = up_int(pos, rows), *dslots = up_int(slots, rows), *dspos = up_int(spos, n_slots);
    float *dinv;
    CK(cudaMalloc((void **)&dinv, half * sizeof(float)));
    CK(cudaMemcpy(dinv, inv, half * sizeof(float), cudaMemcpyHostToDevice));
    lg_kcache_dst dst = {dkc, dvc, ldc, dspos, dslots, dv, ldv};
    KK(lg_k_rope_kv(dq, ldq, nh, dk, ldk, nkv, dt, rows, hd, with_pos ? dpos : NULL, pos0, dinv,
                    attn_scale, &dst, NULL));
    lg_ops_rope(q, ldq, rows, nh, hd, pos, inv, attn_scale);
    lg_ops_rope(k, ldk, rows, nkv, hd, pos, inv, attn_scale);
    float *gq = down(dq, (size_t)rows * ldq, dt), *gk = down(dk, (size_t)rows * ldk, dt);
    float *gkc = down(dkc, (size_t)n_slots * ldc, dt), *gvc = down(dvc, (size_t)n_slots * ldc, dt);
    int *gspos = xmalloc(n_slots * sizeof(int));
    CK(cudaMemcpy(gspos, dspos, n_slots * sizeof(int), cudaMemcpyDeviceToHost));
    int ok = 1;
    for (int t = 0; t < rows; t++) {
        /* the expected caches: the kernel's own rotated k (checked against the CPU below) */
        memcpy(kc + (size_t)slots[t] * ldc, gk + (size_t)t * ldk, kvd * sizeof(float));
        memcpy(vc + (size_t)slots[t] * ldc, v + (size_t)t * ldv, kvd * sizeof(float));
        spos[slots[t]] = pos[t];
    }
    for (size_t i = 0; i < (size_t)n_slots * ldc; i++)
        ok &= gkc[i] == kc[i] && gvc[i] == vc[i];
    ok &= memcmp(gspos, spos, n_slots * sizeof(int)) == 0;
    char shape[96];
    snprintf(shape, sizeof shape, "%s rows %d heads %d/%d hd %d%s", dname(dt), rows, nh, nkv, hd,
             with_pos ? " pos[]" : "");
    report("rope_kv q", shape, gq, q, rows, nh * hd, ldq, dt, bound_of(dt, dt));
    report("rope_kv k", shape, gk, k, rows, kvd, ldk, dt, bound_of(dt, dt));
    report_exact("rope_kv cache", shape, ok);
    free(inv), free(q), free(k), free(v), free(kc), free(vc), free(pos), free(slots), free(spos);
    free(gq), free(gk), free(gkc), free(gvc), free(gspos);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dkc), cudaFree(dvc), cudaFree(dpos);
    cudaFree(dslots), cudaFree(dspos), cudaFree(dinv);
}

static void check_swiglu(lg_kdtype idt, lg_kdtype odt, int rows, int ffn, int fused)
{
    /* fused: [rows, 2*ffn] gate | up; else two matrices with their own padding */
    int ldg = fused ? 2 * ffn : ffn + 3, ldu = fused ? 2 * ffn : ffn + 7, ldo = ffn + 1;
    float *gate = rnd((size_t)rows * ldg, 4.0f, 0.0f, idt);
    float *upm = fused ? gate + ffn : rnd((size_t)rows * ldu, 2.0f, 0.0f, idt);
    float *ref = xmalloc((size_t)rows * ldo * sizeof(float));
    lg_ops_swiglu(ref, ldo, gate, ldg, upm, ldu, rows, ffn);
    void *dg = up(gate, (size_t)rows * ldg, idt);
    void *du = fused ? (char *)dg + (size_t)ffn * lg_kdtype_size(idt)
                     : up(upm, (size_t)rows * ldu, idt);
    void *dout = dpoison((size_t)rows * ldo * lg_kdtype_size(odt));
    KK(lg_k_swiglu(dout, odt, ldo, dg, ldg, du, ldu, idt, rows, ffn, NULL));
    float *g = down(dout, (size_t)rows * ldo, odt);
    char shape[96];
    snprintf(shape, sizeof shape, "%s -> %s rows %d ffn %d %s", dname(idt), dname(odt), rows, ffn,
             fused ? "fused gate_up" : "separate");
    report("swiglu", shape, g, ref, rows, ffn, ldo, odt, bound_of(idt, odt));
    free(gate), free(ref), free(g);
    if (!fused)
        free(upm), cudaFree(du);
    cudaFree(dg), cudaFree(dout);
}

static void check_argmax(int rows, int cols)
{
    int ldx = cols + 1;
    float *x = rnd((size_t)rows * ldx, 10.0f, 0.0f, LG_KDT_F32);
    int *ref = xmalloc(rows * sizeof(int));
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * ldx;
        /* plant a tie for the maximum: the lower column must win */
        int a = (int)(next_u64() % cols), b = (int)(next_u64() % cols);
        row[a] = row[b] = 20.0f;
        ref[r] = a < b ? a : b;
    }
    void *dx = up(x, (size_t)rows * ldx, LG_KDT_F32);
    int *di = dpoison(rows * sizeof(int)), *g = xmalloc(rows * sizeof(int));
    KK(lg_k_argmax(di, dx, ldx, rows, cols, NULL));
    CK(cudaMemcpy(g, di, rows * sizeof(int), cudaMemcpyDeviceToHost));
    int ok = 1;
    for (int r = 0; r < rows; r++)
        ok &= g[r] == ref[r];
    char shape[96];
    snprintf(shape, sizeof shape, "rows %d cols %d, planted tie", rows, cols);
    report_exact("argmax", shape, ok);
    free(x), free(ref), free(g);
    cudaFree(dx), cudaFree(di);
}

/* ---------------------------------------------------------------- matrix products */

/* y[t][m] = sum_k W[m][k] x[t][k] for W [M, K] (rows ldw apart) through the CPU engine's own
 * float32 product (lg_matmul). */
static void cpu_matmul(float *y, int ldy, const float *x, int ldx, int n, const float *w, int M,
                       int K, int ldw)
{
    lg_pmat pm;
    lg_err err;
    if (lg_pmat_init(&pm, M, K, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    for (int m = 0; m < M; m++)
        lg_pmat_set_row(&pm, m, w + (size_t)m * ldw);
    lg_matmul(NULL, y, ldy, x, ldx, n, &pm);
    lg_pmat_free(&pm);
}

static void check_gemm(lg_blas *blas, lg_kdtype idt, lg_kdtype ydt, int n, int M, int K, float beta)
{
    int ldx = K + 8, ldy = M + 8;
    float *x = rnd((size_t)n * ldx, 1.0f, 0.0f, idt), *w = rnd((size_t)M * K, 1.0f, 0.0f, idt);
    float *y0 = rnd((size_t)n * ldy, 8.0f, 0.0f, ydt);
    float *ref = xmalloc((size_t)n * ldy * sizeof(float));
    cpu_matmul(ref, ldy, x, ldx, n, w, M, K, K);
    if (beta != 0.0f)
        for (size_t i = 0; i < (size_t)n * ldy; i++)
            ref[i] += y0[i];
    void *dx = up(x, (size_t)n * ldx, idt), *dw = up(w, (size_t)M * K, idt);
    void *dy = beta != 0.0f ? up(y0, (size_t)n * ldy, ydt) : dpoison((size_t)n * ldy * lg_kdtype_size(ydt));
    KK(lg_k_gemm(blas, dy, ydt, ldy, dx, ldx, dw, K, idt, n, M, K, beta, NULL));
    float *g = down(dy, (size_t)n * ldy, ydt);
    char shape[96];
    snprintf(shape, sizeof shape, "%s -> %s n %d M %d K %d%s", dname(idt), dname(ydt), n, M, K,
             beta != 0.0f ? " y+=" : "");
    report("gemm (cuBLAS)", shape, g, ref, n, M, ldy, ydt, bound_of(idt, ydt));
    free(x), free(w), free(y0), free(ref), free(g);
    cudaFree(dx), cudaFree(dw), cudaFree(dy);
}

static void check_gemv(lg_kdtype idt, lg_kdtype ydt, int n, int M, int K, int ldw, float beta)
{
    int ldx = ldw, ldy = M + 3;
    float *x = rnd((size_t)n * ldx, 1.0f, 0.0f, idt), *w = rnd((size_t)M * ldw, 1.0f, 0.0f, idt);
    float *y0 = rnd((size_t)n * ldy, 8.0f, 0.0f, ydt);
    float *ref = xmalloc((size_t)n * ldy * sizeof(float));
    memcpy(ref, y0, (size_t)n * ldy * sizeof(float)); /* keeps the padding defined */
    if (idt == LG_KDT_F32) {
        /* the product the CPU engine computes for a float32 checkpoint */
        cpu_matmul(ref, ldy, x, ldx, n, w, M, K, ldw);
    } else {
        uint16_t *w16 = xmalloc((size_t)M * ldw * 2);
        lg_convert_floats(w16, hdt(idt), w, LG_DT_F32, (size_t)M * ldw);
        lg_ops_gemv16(ref, ldy, w16, hdt(idt), ldw, x, ldx, n, M, K);
        free(w16);
    }
    if (beta != 0.0f)
        for (int t = 0; t < n; t++)
            for (int m = 0; m < M; m++)
                ref[(size_t)t * ldy + m] += y0[(size_t)t * ldy + m];
    void *dx = up(x, (size_t)n * ldx, idt), *dw = up(w, (size_t)M * ldw, idt);
    void *dy = beta != 0.0f ? up(y0, (size_t)n * ldy, ydt) : dpoison((size_t)n * ldy * lg_kdtype_size(ydt));
    KK(lg_k_gemv(dy, ydt, ldy, dw, ldw, dx, ldx, idt, n, M, K, beta, NULL));
    float *g = down(dy, (size_t)n * ldy, ydt);
    char shape[96];
    snprintf(shape, sizeof shape, "%s -> %s n %d M %d K %d ldw %d%s", dname(idt), dname(ydt), n, M,
             K, ldw, beta != 0.0f ? " y+=" : "");
    report("gemv", shape, g, ref, n, M, ldy, ydt, bound_of(idt, ydt));
    free(x), free(w), free(y0), free(ref), free(g);
    cudaFree(dx), cudaFree(dw), cudaFree(dy);
}

/* lg_k_read_sum against the words summed here (mod 2^32, so exact), on random bytes; a sum that
 * starts non-zero, as the kernel adds to it */
static void check_read_sum(size_t bytes)
{
    uint32_t *h = xmalloc(bytes > 0 ? bytes : 4);
    uint32_t want = 0x9e3779b9u;
    for (size_t i = 0; i < bytes / 4; i++) {
        h[i] = (uint32_t)rand() * 2654435761u ^ (uint32_t)rand();
        want += h[i];
    }
    void *d = dpoison(bytes > 0 ? bytes : 16);
    unsigned *dsum = dpoison(sizeof *dsum), start = 0x9e3779b9u, got = 0;
    CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dsum, &start, sizeof start, cudaMemcpyHostToDevice));
    KK(lg_k_read_sum(dsum, d, bytes, NULL));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(&got, dsum, sizeof got, cudaMemcpyDeviceToHost));
    char shape[64];
    snprintf(shape, sizeof shape, "%zu bytes", bytes);
    report_exact("read_sum", shape, got == want);
    free(h);
    cudaFree(d), cudaFree(dsum);
}

/* ---------------------------------------------------------------- quantized weights */

/* A random quantized [rows, cols] matrix in the checkpoint's layout, on the host (for the CPU
 * twins) and the same bytes on the device. Codes are random bytes (fp8: no NaN code, which no
 * checkpoint holds), scales random and never zero, of either sign (the symmetric q4 encoder writes
 * negative ones), mins random: values no encoder would pick, but every decoder must take them. */
typedef struct qmat_pair {
    lg_quant_tensor t;
    lg_kqmat d;
} qmat_pair;

static void *up_bytes(const void *h, size_t n)
{
    void *d = dpoison(n);
    CK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
    return d;
}

/* |v| in [0.5, 1) * mag, random sign */
static float nonzero(float mag)
{
    float v = (0.5f + 0.5f * fabsf(uni())) * mag;
    return next_u64() & 1 ? -v : v;
}

static void qmat_make(qmat_pair *m, const lg_quant_scheme *s, int rows, int cols)
{
    size_t nc = (size_t)rows * lg_quant_row_bytes(s, cols);
    size_t side = (size_t)rows * lg_quant_n_groups(s, cols);
    uint8_t *codes = xmalloc(nc);
    for (size_t i = 0; i < nc; i++) {
        codes[i] = (uint8_t)next_u64();
        if (s->method == LG_QUANT_FP8 && (codes[i] & 0x7f) == 0x7f)
            codes[i] ^= 1; /* 0x7e, the largest finite code */
    }
    void *scales;
    size_t scale_size = lg_dtype_size(lg_quant_part_dtype(s, LG_QPART_SCALES));
    if (s->method == LG_QUANT_FP8) {
        float *f = xmalloc(side * sizeof(float));
        for (size_t i = 0; i < side; i++)
            f[i] = nonzero(1e-4f); /* amax / 448: float32, as it may be below float16's normals */
        scales = f;
    } else {
        uint16_t *h = xmalloc(side * 2);
        for (size_t i = 0; i < side; i++)
            h[i] = lg_f32_to_f16(nonzero(s->method == LG_QUANT_Q8 ? 1e-3f : 8e-3f));
        scales = h;
    }
    uint16_t *mins = NULL;
    if (s->has_mins) {
        mins = xmalloc(side * 2);
        for (size_t i = 0; i < side; i++)
            mins[i] = lg_f32_to_f16(-0.06f + 0.03f * uni());
    }
    m->t = (lg_quant_tensor){*s, rows, cols, codes, scales, mins};
    m->d = (lg_kqmat){(lg_kquant)s->method, s->group, rows, cols, up_bytes(codes, nc),
                      up_bytes(scales, side * scale_size), mins ? up_bytes(mins, side * 2) : NULL,
                      0};
}

/* The device codes rewritten tile-major (lg_k_qmat_tile) where the matrix has that layout: 1 if
 * they were. */
static int qmat_tile(qmat_pair *m)
{
    if (lg_k_qmat_tile_bytes(&m->d) == 0)
        return 0;
    size_t bytes = (size_t)m->d.rows * lg_kqmat_row_bytes(&m->d);
    void *scratch = dpoison(bytes);
    KK(lg_k_qmat_tile(&m->d, scratch, bytes, NULL));
    CK(cudaDeviceSynchronize());
    cudaFree(scratch);
    return 1;
}

static void qmat_free(qmat_pair *m)
{
    free((void *)m->t.qweight), free((void *)m->t.scales), free((void *)m->t.mins);
    cudaFree((void *)m->d.codes), cudaFree((void *)m->d.scales), cudaFree((void *)m->d.mins);
}

/* The CPU runtime's quantized matrix (the oracle) on m's host bytes. */
static void qmat_cpu(lg_qmat *q, const qmat_pair *m)
{
    lg_err err;
    if (lg_qmat_init(q, &m->t.scheme, (int)m->t.rows, (int)m->t.cols, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    lg_qmat_set_rows(q, 0, &m->t, (int)m->t.rows);
}

/* "q4 g64 min", "q8 row", ... */
static const char *scheme_name(const lg_quant_scheme *s, char *buf, size_t cap)
{
    if (s->group)
        snprintf(buf, cap, "%s g%d%s", lg_quant_method_name(s->method), s->group,
                 s->method == LG_QUANT_Q4 ? (s->has_mins ? " min" : " sym") : "");
    else
        snprintf(buf, cap, "%s row", lg_quant_method_name(s->method));
    return buf;
}

/* A variant of the quantized GEMV: warps a block, blocks an SM (lg_k_gemv_quant_set_variant). */
typedef struct {
    int warps, minb;
} qvar;
#define QV(w, b) ((qvar){(w), (b)})
#define QV_DEFAULT QV(-1, 0)

/* The kernel's path for these arguments and n rows of x: "ld16 w8" (load bytes, warps per block,
 * and "b3" for 3 blocks an SM), "ld8 row w4" (the one-row kernel) or "scalar". */
static const char *qpath(const lg_kqmat *w, const void *x, int ldx, int n, qvar v, char *buf,
                         size_t cap)
{
    int lb = lg_k_gemv_quant_load_bytes(w, x, ldx), warps = lg_k_gemv_quant_warps(w, x, ldx);
    int row = n == 1 ? lg_k_gemv_quant_one_row_warps(w, x, ldx) : 0;
    const char *t = w->tiled ? " tiled" : "";
    if (row)
        snprintf(buf, cap, "ld%d row w%d%s", lb, row, t);
    else if (!lb)
        snprintf(buf, cap, "scalar%s", t);
    else if (v.minb > 0)
        snprintf(buf, cap, "ld%d w%db%d%s", lb, warps, v.minb, t);
    else
        snprintf(buf, cap, "ld%d w%d%s", lb, warps, t);
    return buf;
}

/* lg_k_gemv_quant against lg_qmat_matmul, the CPU runtime's quantized product, on the same bytes.
 * v: the kernel variant (0 warps = its scalar path). */
static void check_gemv_quant(lg_kdtype idt, lg_kdtype ydt, int n, int M, int K,
                             lg_quant_method method, int group, int mins, float beta, qvar v)
{
    lg_quant_scheme s = {method, group, mins};
    qmat_pair w;
    qmat_make(&w, &s, M, K);
    int ldx = K + 8, ldy = M + 3;
    float *x = rnd((size_t)n * ldx, 1.0f, 0.0f, idt), *y0 = rnd((size_t)n * ldy, 8.0f, 0.0f, ydt);
    lg_qmat q;
    qmat_cpu(&q, &w);
    float *ref = xmalloc((size_t)n * ldy * sizeof(float));
    memcpy(ref, y0, (size_t)n * ldy * sizeof(float)); /* keeps the padding defined */
    lg_qmat_matmul(NULL, ref, ldy, x, ldx, n, &q);
    if (beta != 0.0f)
        for (int t = 0; t < n; t++)
            for (int m = 0; m < M; m++)
                ref[(size_t)t * ldy + m] += y0[(size_t)t * ldy + m];
    void *dx = up(x, (size_t)n * ldx, idt);
    size_t y_bytes = (size_t)n * ldy * lg_kdtype_size(ydt);
    /* the codes as stored, then tile-major where the matrix has that layout */
    for (int layout = 0; layout < 2 && (layout == 0 || qmat_tile(&w)); layout++) {
        void *dy = beta != 0.0f ? up(y0, (size_t)n * ldy, ydt) : dpoison(y_bytes);
        KK(lg_k_gemv_quant_set_variant(v.warps, v.minb));
        KK(lg_k_gemv_quant(dy, ydt, ldy, &w.d, dx, ldx, idt, n, beta, NULL));
        float *g = down(dy, (size_t)n * ldy, ydt);
        char shape[112], sn[32], pn[32];
        snprintf(shape, sizeof shape, "%s %s->%s n %d M %d K %d %s%s",
                 scheme_name(&s, sn, sizeof sn), dname(idt), dname(ydt), n, M, K,
                 qpath(&w.d, dx, ldx, n, v, pn, sizeof pn), beta != 0.0f ? " y+=" : "");
        KK(lg_k_gemv_quant_set_variant(QV_DEFAULT.warps, QV_DEFAULT.minb));
        report("gemv_quant", shape, g, ref, n, M, ldy, ydt, bound_of(idt, ydt));
        free(g);
        cudaFree(dy);
    }
    lg_qmat_free(&q);
    qmat_free(&w);
    free(x), free(y0), free(ref);
    cudaFree(dx);
}

/* Device bytes equal. */
static int same_bytes(const void *a, const void *b, size_t bytes)
{
    unsigned char *ha = xmalloc(bytes), *hb = xmalloc(bytes);
    CK(cudaMemcpy(ha, a, bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hb, b, bytes, cudaMemcpyDeviceToHost));
    int same = memcmp(ha, hb, bytes) == 0;
    free(ha), free(hb);
    return same;
}

/* A fused one-row kernel's n values (dt, on the device) against the unfused path's: bit for bit
 * when both get the same warps a block (exact), else within the kernels' bound (the float32 sums
 * are added in another order). */
static void report_vs_unfused(const char *kernel, const char *shape, const void *fused,
                              const void *plain, int n, lg_kdtype dt, int exact)
{
    char what[160];
    if (exact) {
        snprintf(what, sizeof what, "%s = unfused", shape);
        report_exact(kernel, what, same_bytes(fused, plain, (size_t)n * lg_kdtype_size(dt)));
        return;
    }
    snprintf(what, sizeof what, "%s ~ unfused, other warps", shape);
    float *a = down(fused, (size_t)n, dt), *b = down(plain, (size_t)n, dt);
    report(kernel, what, a, b, 1, n, n, dt, bound_of(dt, dt));
    free(a), free(b);
}

/* lg_k_gemv_quant_glu (decode's gate|up product with SwiGLU, F rows each) against the CPU's
 * quantized product rounded to dt then lg_ops_swiglu, within the kernels' bound; and against the
 * unfused device path (lg_k_gemv_quant into dt, then lg_k_swiglu): report_vs_unfused. */
static void check_gemv_quant_glu(lg_kdtype dt, int F, int K, lg_quant_method method, int group,
                                 int mins)
{
    lg_quant_scheme s = {method, group, mins};
    qmat_pair w;
    qmat_make(&w, &s, 2 * F, K);
    char shape[112], sn[32];
    snprintf(shape, sizeof shape, "%s %s F %d K %d", scheme_name(&s, sn, sizeof sn), dname(dt), F,
             K);
    float *x = rnd((size_t)K, 1.0f, 0.0f, dt);
    void *dx = up(x, (size_t)K, dt);
    if (!qmat_tile(&w) || !lg_k_gemv_quant_glu_warps(&w.d, dx)) {
        report_exact("gemv_quant_glu", shape, 0); /* every shape here is one the kernel takes */
        qmat_free(&w), free(x), cudaFree(dx);
        return;
    }
    lg_qmat q;
    qmat_cpu(&q, &w);
    float *ab = xmalloc((size_t)2 * F * sizeof(float)), *ref = xmalloc((size_t)F * sizeof(float));
    lg_qmat_matmul(NULL, ab, 2 * F, x, K, 1, &q);
    round_to(ab, (size_t)2 * F, dt);
    lg_ops_swiglu(ref, F, ab, 2 * F, ab + F, 2 * F, 1, F);
    size_t es = (size_t)lg_kdtype_size(dt);
    void *dy = dpoison((size_t)F * es), *dab = dpoison((size_t)2 * F * es);
    void *dref = dpoison((size_t)F * es);
    KK(lg_k_gemv_quant_glu(dy, dt, &w.d, dx, dt, NULL));
    KK(lg_k_gemv_quant(dab, dt, 2 * F, &w.d, dx, K, dt, 1, 0.0f, NULL));
    KK(lg_k_swiglu(dref, dt, F, dab, 2 * F, (char *)dab + (size_t)F * es, 2 * F, dt, 1, F, NULL));
    float *g = down(dy, (size_t)F, dt);
    report("gemv_quant_glu", shape, g, ref, 1, F, F, dt, bound_of(dt, dt));
    int exact = lg_k_gemv_quant_glu_warps(&w.d, dx) == lg_k_gemv_quant_one_row_warps(&w.d, dx, K);
    report_vs_unfused("gemv_quant_glu", shape, dy, dref, F, dt, exact);
    lg_qmat_free(&q);
    qmat_free(&w);
    free(x), free(ab), free(ref), free(g);
    cudaFree(dx), cudaFree(dy), cudaFree(dab), cudaFree(dref);
}

/* lg_k_gemv_quant_rope_kv (decode's q|k|v product with RoPE and the cache writes) against the
 * CPU's quantized product rounded to dt then lg_ops_rope on q and k, within the kernels' bound;
 * its cache slot (of random caches) must hold its own k and v rows bit for bit, every other slot
 * keep its bytes, slot_pos get the position; and q|k|v against the unfused device path
 * (lg_k_gemv_quant into dt, then lg_k_rope_kv): report_vs_unfused. */
static void check_gemv_quant_rope_kv(lg_kdtype dt, int nh, int nkv, int hd, int K,
                                     lg_quant_method method, int group, int mins, int with_pos)
{
    lg_quant_scheme s = {method, group, mins};
    const int qd = nh * hd, kvd = nkv * hd, R = qd + 2 * kvd, half = hd / 2;
    const int n_slots = 5, slot = 3, ldc = kvd + 4, pos0 = 900;
    qmat_pair w;
    qmat_make(&w, &s, R, K);
    char shape[112], sn[32];
    snprintf(shape, sizeof shape, "%s %s heads %d/%d hd %d K %d%s", scheme_name(&s, sn, sizeof sn),
             dname(dt), nh, nkv, hd, K, with_pos ? " pos[]" : "");
    float *x = rnd((size_t)K, 1.0f, 0.0f, dt);
    void *dx = up(x, (size_t)K, dt);
    if (!qmat_tile(&w) || !lg_k_gemv_quant_rope_kv_warps(&w.d, dx, nh, nkv, hd)) {
        report_exact("gemv_quant_rope_kv", shape, 0); /* every shape here is one it takes */
        qmat_free(&w), free(x), cudaFree(dx);
        return;
    }
    /* YaRN: its attention factor scales q and k, and it must be the same factor in both paths */
    lg_rope rope = {LG_ROPE_YARN, 10000.0, 4.0, 4096, 0, 32.0, 1.0, 0, 0};
    float *inv = xmalloc(half * sizeof(float)), attn_scale = 1.0f;
    lg_rope_inv_freq(&rope, hd, 4096, 4096, inv, &attn_scale);
    int pos = with_pos ? (int)(next_u64() % 131072) : pos0;
    lg_qmat q;
    qmat_cpu(&q, &w);
    float *ref = xmalloc((size_t)R * sizeof(float));
    lg_qmat_matmul(NULL, ref, R, x, K, 1, &q);
    round_to(ref, (size_t)R, dt);
    lg_ops_rope(ref, R, 1, nh, hd, &pos, inv, attn_scale);
    lg_ops_rope(ref + qd, R, 1, nkv, hd, &pos, inv, attn_scale);
    /* both paths start from the same random caches and slot positions */
    float *kc = rnd((size_t)n_slots * ldc, 1.0f, 0.0f, dt);
    float *vc = rnd((size_t)n_slots * ldc, 1.0f, 0.0f, dt);
    int spos[5] = {-1, -1, -1, -1, -1}, slots[1] = {slot};
    size_t es = (size_t)lg_kdtype_size(dt);
    void *dkc[2], *dvc[2], *dqkv[2];
    int *dspos[2], *dslots = up_int(slots, 1), *dpos = up_int(&pos, 1);
    for (int i = 0; i < 2; i++) {
        dkc[i] = up(kc, (size_t)n_slots * ldc, dt), dvc[i] = up(vc, (size_t)n_slots * ldc, dt);
        dspos[i] = up_int(spos, n_slots), dqkv[i] = dpoison((size_t)R * es);
    }
    float *dinv;
    CK(cudaMalloc((void **)&dinv, half * sizeof(float)));
    CK(cudaMemcpy(dinv, inv, half * sizeof(float), cudaMemcpyHostToDevice));
    const int *dp = with_pos ? dpos : NULL;
    lg_kcache_dst fused = {dkc[0], dvc[0], ldc, dspos[0], dslots, NULL, 0};
    KK(lg_k_gemv_quant_rope_kv(dqkv[0], dt, &w.d, dx, nh, nkv, hd, dp, pos0, dinv, attn_scale,
                               &fused, NULL));
    char *v1 = (char *)dqkv[1] + (size_t)(qd + kvd) * es;
    lg_kcache_dst plain = {dkc[1], dvc[1], ldc, dspos[1], dslots, v1, R};
    KK(lg_k_gemv_quant(dqkv[1], dt, R, &w.d, dx, K, dt, 1, 0.0f, NULL));
    KK(lg_k_rope_kv(dqkv[1], R, nh, (char *)dqkv[1] + (size_t)qd * es, R, nkv, dt, 1, hd, dp,
                    pos0, dinv, attn_scale, &plain, NULL));
    float *g = down(dqkv[0], (size_t)R, dt);
    report("gemv_quant_rope_kv", shape, g, ref, 1, R, R, dt, bound_of(dt, dt));
    float *gkc = down(dkc[0], (size_t)n_slots * ldc, dt);
    float *gvc = down(dvc[0], (size_t)n_slots * ldc, dt);
    int sp[5];
    CK(cudaMemcpy(sp, dspos[0], sizeof sp, cudaMemcpyDeviceToHost));
    memcpy(kc + (size_t)slot * ldc, g + qd, (size_t)kvd * sizeof(float));
    memcpy(vc + (size_t)slot * ldc, g + qd + kvd, (size_t)kvd * sizeof(float));
    spos[slot] = pos;
    int ok = memcmp(sp, spos, sizeof sp) == 0;
    for (size_t i = 0; i < (size_t)n_slots * ldc; i++)
        ok &= gkc[i] == kc[i] && gvc[i] == vc[i];
    char what[160];
    snprintf(what, sizeof what, "%s cache", shape);
    report_exact("gemv_quant_rope_kv", what, ok);
    int exact = lg_k_gemv_quant_rope_kv_warps(&w.d, dx, nh, nkv, hd) ==
                lg_k_gemv_quant_one_row_warps(&w.d, dx, K);
    report_vs_unfused("gemv_quant_rope_kv", shape, dqkv[0], dqkv[1], R, dt, exact);
    free(gkc), free(gvc);
    lg_qmat_free(&q);
    qmat_free(&w);
    free(x), free(inv), free(ref), free(kc), free(vc), free(g);
    for (int i = 0; i < 2; i++)
        cudaFree(dkc[i]), cudaFree(dvc[i]), cudaFree(dspos[i]), cudaFree(dqkv[i]);
    cudaFree(dx), cudaFree(dslots), cudaFree(dpos), cudaFree(dinv);
}

/* lg_k_dequant against lg_quant_dequant_rows rounded once to the output type: equal bit for bit. */
static void check_dequant(lg_kdtype odt, int M, int K, lg_quant_method method, int group, int mins,
                          int row0, int n_rows, int ldo)
{
    lg_quant_scheme s = {method, group, mins};
    qmat_pair w;
    qmat_make(&w, &s, M, K);
    float *row = xmalloc((size_t)K * sizeof(float));
    float *ref = xmalloc((size_t)n_rows * ldo * sizeof(float));
    for (int r = 0; r < n_rows; r++) {
        lg_quant_dequant_rows(&w.t, row0 + r, 1, row);
        memcpy(ref + (size_t)r * ldo, row, (size_t)K * sizeof(float));
    }
    round_to(ref, (size_t)n_rows * ldo, odt);
    for (int layout = 0; layout < 2 && (layout == 0 || qmat_tile(&w)); layout++) {
        void *d = dpoison((size_t)n_rows * ldo * lg_kdtype_size(odt));
        KK(lg_k_dequant(d, odt, ldo, &w.d, row0, n_rows, NULL));
        float *g = down(d, (size_t)n_rows * ldo, odt);
        int ok = 1;
        for (int r = 0; r < n_rows; r++)
            for (int c = 0; c < K; c++)
                ok &= g[(size_t)r * ldo + c] == ref[(size_t)r * ldo + c];
        char shape[112], sn[32];
        snprintf(shape, sizeof shape, "%s -> %s rows %d+%d of %d K %d ldo %d%s",
                 scheme_name(&s, sn, sizeof sn), dname(odt), row0, n_rows, M, K, ldo,
                 w.d.tiled ? " tiled" : "");
        report_exact("dequant", shape, ok);
        free(g);
        cudaFree(d);
    }
    qmat_free(&w);
    free(row), free(ref);
}

/* ---------------------------------------------------------------- attention */

static const char *mask_name(const lg_kmask *m, char *buf, size_t cap)
{
    if (m->kind == LG_KMASK_SINK_WINDOW)
        snprintf(buf, cap, "sw(%d,%d)", m->sink, m->window);
    else if (m->kind == LG_KMASK_BLOCK_STRIDED)
        snprintf(buf, cap, "bs(%d,%d,%d)", m->block, m->local, m->stride);
    else
        snprintf(buf, cap, "full");
    return buf;
}

/* The CPU oracle: keys/values of positions 0..P (rows of kv, ld floats apart) appended to a
 * layer cache in chunks of at most n, the last chunk being the n queries' own positions
 * P-n+1..P, then lg_attention_cpu for those queries. out: n rows ldo apart. */
static void attention_ref(const lg_kmask *mask, int P, int n, const float *k, const float *v,
                          int ldkv, const float *q, int ldq, int nh, int nkv, int hd, float *out,
                          int ldo)
{
    lg_layer_attn attn = {(lg_attn_kind)mask->kind, mask->sink, mask->window, mask->block,
                          mask->local, mask->stride};
    int kvd = nkv * hd;
    lg_kvcache c;
    lg_attn_scratch s;
    lg_err err;
    if (lg_kvcache_init(&c, &attn, kvd, n, P + 1, &err) || lg_attn_scratch_init(&s, 1, hd, &err)) {
        fprintf(stderr, "attention_ref: %s\n", err.msg);
        exit(2);
    }
    float *kb = xmalloc((size_t)n * kvd * sizeof(float)), *vb = xmalloc((size_t)n * kvd * sizeof(float));
    int first_q = P - n + 1;
    for (int p0 = 0; p0 <= P;) {
        int len = p0 < first_q ? (first_q - p0 < n ? first_q - p0 : n) : n;
        for (int t = 0; t < len; t++) {
            memcpy(kb + (size_t)t * kvd, k + (size_t)(p0 + t) * ldkv, kvd * sizeof(float));
            memcpy(vb + (size_t)t * kvd, v + (size_t)(p0 + t) * ldkv, kvd * sizeof(float));
        }
        if (lg_kvcache_append(&c, kb, vb, kvd, len, &err)) {
            fprintf(stderr, "attention_ref: %s\n", err.msg);
            exit(2);
        }
        p0 += len;
    }
    lg_attn_shape shape = {nh, nkv, hd};
    if (lg_attention_cpu(NULL, &s, &c, &shape, q, ldq, n, first_q, out, ldo, &err)) {
        fprintf(stderr, "attention_ref: %s\n", err.msg);
        exit(2);
    }
    free(kb), free(vb);
    lg_kvcache_free(&c);
    lg_attn_scratch_free(&s);
}

/* V's values, beyond uniform in [-1, 1): bfloat16 values outside float16's range, and under its
 * normal range, which a bfloat16 path that went through float16 anywhere (as a faster P V would:
 * docs/BENCHMARKS.md, 2026-11-26) would turn to infinity or cut to a few bits */
enum v_range {
    V_PLAIN,
    V_HUGE_TILE, /* keys 128..255 times 2^17: past float16's range, in a tile among plain ones */
    V_TINY,      /* everything times 2^-20: float16 would keep about 4 of bfloat16's 8 bits */
};

static const char *v_range_name(enum v_range r)
{
    return r == V_HUGE_TILE ? " V*2^17@128" : r == V_TINY ? " V*2^-20" : "";
}

/* scales by powers of two: the values stay exact in every type */
static void apply_v_range(float *v, int T, int ldkv, enum v_range r)
{
    for (int t = 0; t < T; t++) {
        float f = r == V_TINY ? 0x1p-20f : r == V_HUGE_TILE && t >= 128 && t < 256 ? 0x1p17f : 1.0f;
        for (int c = 0; c < ldkv; c++)
            v[(size_t)t * ldkv + c] *= f;
    }
}

/* n queries at positions T-n..T-1 over keys 0..T-1 (prefill of the last n of T tokens), V's
 * values as r says; with_ws: the workspace lg_k_attn_prefill_ws_bytes asks for (poisoned), else
 * none (bfloat16 on the wgmma kernel: V float16 where it fits, or P split for every tile). */
static void check_prefill_v(lg_kdtype dt, int T, int n, int nh, int nkv, int hd,
                            const lg_kmask *mask, lg_kprefill_kernel which, enum v_range r,
                            int with_ws)
{
    /* the wgmma kernel where it takes the shape; the cases it does not take are the others' */
    if (which == LG_KPREFILL_WGMMA && !lg_k_attn_prefill_wgmma_takes(hd, dt))
        return;
    int ldq = nh * hd + (hd % 8 ? 2 : 8), ldkv = nkv * hd + (hd % 8 ? 2 : 8), ldo = ldq;
    /* q scaled by 3: scores of std ~1, so the softmax is neither flat nor one-hot */
    float *q = rnd((size_t)n * ldq, 3.0f, 0.0f, dt);
    float *k = rnd((size_t)T * ldkv, 1.0f, 0.0f, dt), *v = rnd((size_t)T * ldkv, 1.0f, 0.0f, dt);
    apply_v_range(v, T, ldkv, r);
    float *ref = xmalloc((size_t)n * ldo * sizeof(float));
    attention_ref(mask, T - 1, n, k, v, ldkv, q, ldq, nh, nkv, hd, ref, ldo);
    void *dq = up(q, (size_t)n * ldq, dt), *dk = up(k, (size_t)T * ldkv, dt);
    void *dv = up(v, (size_t)T * ldkv, dt);
    void *dout = dpoison((size_t)n * ldo * lg_kdtype_size(dt));
    lg_kattn_shape shape = {nh, nkv, hd, 1.0f / sqrtf((float)hd)};
    size_t ws_bytes = lg_k_attn_prefill_ws_bytes(dt, T, &shape);
    void *ws = with_ws && ws_bytes ? dpoison(ws_bytes) : NULL;
    lg_k_attn_prefill_force(which);
    KK(lg_k_attn_prefill(dout, ldo, dq, ldq, dk, ldkv, dv, ldkv, dt, n, T - n, T, 0, &shape, mask,
                         ws, ws ? ws_bytes : 0, NULL));
    lg_k_attn_prefill_force(LG_KPREFILL_AUTO);
    float *g = down(dout, (size_t)n * ldo, dt);
    char shape_s[96], mb[32];
    snprintf(shape_s, sizeof shape_s, "%s T %d n %d heads %d/%d hd %d %s%s%s", dname(dt), T, n, nh,
             nkv, hd, mask_name(mask, mb, sizeof mb), v_range_name(r),
             ws_bytes && !with_ws ? " no ws" : "");
    /* float32 always takes the row kernel */
    const char *kname = which == LG_KPREFILL_ROWS || dt == LG_KDT_F32 ? "prefill (rows)"
                      : which == LG_KPREFILL_WGMMA                   ? "prefill (wgmma)"
                      : which == LG_KPREFILL_MMA                     ? "prefill (mma)"
                                                                     : "prefill";
    report(kname, shape_s, g, ref, n, nh * hd,
           ldo, dt, bound_of(dt, dt));
    free(q), free(k), free(v), free(ref), free(g);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(ws);
}

static void check_prefill(lg_kdtype dt, int T, int n, int nh, int nkv, int hd, const lg_kmask *mask,
                          lg_kprefill_kernel which)
{
    check_prefill_v(dt, T, n, nh, nkv, hd, mask, which, V_PLAIN, 1);
}

/* n queries at positions P-n+1..P over a cache whose slots hold positions 0..P in a random order,
 * plus `extra` slots that must be ignored: empty (-1), or positions past P (not yet visible), or,
 * with use_live, anything at all past *n_live. Empty slots and those past *n_live hold NaN keys
 * and values, as slots never written may: none of it may reach the output. As in the engine's
 * step, the queries' own slots are written by the kernel launched just before (lg_k_kv_write, PDL)
 * over stale contents (NaN rows and a stale position): decode loads its first keys before its
 * wait, so a slot read too early would show. */
static void check_cache(lg_kdtype dt, int P, int n, int nh, int nkv, int hd, const lg_kmask *mask,
                        int extra, int use_live)
{
    int kvd = nkv * hd, ldkv = kvd + 8, ldq = nh * hd, ldo = ldq;
    int live = P + 1 + extra, n_slots = live + (use_live ? 37 : 0);
    float *k = rnd((size_t)n_slots * ldkv, 1.0f, 0.0f, dt);
    float *v = rnd((size_t)n_slots * ldkv, 1.0f, 0.0f, dt);
    float *q = rnd((size_t)n * ldq, 3.0f, 0.0f, dt);
    int *slot_pos = xmalloc(n_slots * sizeof(int)), *slot_of = xmalloc((P + 1) * sizeof(int));
    int *perm = xmalloc(live * sizeof(int));
    for (int i = 0; i < live; i++)
        perm[i] = i;
    for (int i = live - 1; i > 0; i--) {
        int j = (int)(next_u64() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < live; i++) {
        slot_pos[perm[i]] = i <= P ? i : (i % 2 ? -1 : P + 1 + i);
        if (i <= P)
            slot_of[i] = perm[i];
    }
    for (int s = live; s < n_slots; s++)
        slot_pos[s] = (int)(next_u64() % (uint64_t)(P + 1)); /* would change the result if read */
    for (int s = 0; s < n_slots; s++)
        if (s >= live || slot_pos[s] < 0)
            for (int c = 0; c < kvd; c++)
                k[(size_t)s * ldkv + c] = v[(size_t)s * ldkv + c] = NAN;
    /* the oracle's keys by position */
    float *kp = xmalloc((size_t)(P + 1) * ldkv * sizeof(float)), *vp = xmalloc((size_t)(P + 1) * ldkv * sizeof(float));
    for (int p = 0; p <= P; p++) {
        memcpy(kp + (size_t)p * ldkv, k + (size_t)slot_of[p] * ldkv, kvd * sizeof(float));
        memcpy(vp + (size_t)p * ldkv, v + (size_t)slot_of[p] * ldkv, kvd * sizeof(float));
    }
    float *ref = xmalloc((size_t)n * ldo * sizeof(float));
    attention_ref(mask, P, n, kp, vp, ldkv, q, ldq, nh, nkv, hd, ref, ldo);

    /* the queries' own rows, written by lg_k_kv_write before each call into their slots qslot */
    float *kn = xmalloc((size_t)n * ldkv * sizeof(float)), *vn = xmalloc((size_t)n * ldkv * sizeof(float));
    float *nanrow = xmalloc((size_t)ldkv * sizeof(float));
    int *qpos = xmalloc(n * sizeof(int)), *qslot = xmalloc(n * sizeof(int));
    for (int c = 0; c < ldkv; c++)
        nanrow[c] = NAN;
    for (int t = 0; t < n; t++) {
        qpos[t] = P - n + 1 + t;
        qslot[t] = slot_of[qpos[t]];
        memcpy(kn + (size_t)t * ldkv, k + (size_t)qslot[t] * ldkv, ldkv * sizeof(float));
        memcpy(vn + (size_t)t * ldkv, v + (size_t)qslot[t] * ldkv, ldkv * sizeof(float));
    }
    void *dq = up(q, (size_t)n * ldq, dt), *dk = up(k, (size_t)n_slots * ldkv, dt);
    void *dv = up(v, (size_t)n_slots * ldkv, dt);
    void *dkn = up(kn, (size_t)n * ldkv, dt), *dvn = up(vn, (size_t)n * ldkv, dt);
    void *dnan = up(nanrow, ldkv, dt);
    void *dout = dpoison((size_t)n * ldo * lg_kdtype_size(dt));
    int *dpos = up_int(slot_pos, n_slots), *dlive = up_int(&live, 1);
    int *dqpos = up_int(qpos, n), *dqslot = up_int(qslot, n);
    size_t row_bytes = (size_t)ldkv * lg_kdtype_size(dt);
    lg_kattn_shape shape = {nh, nkv, hd, 1.0f / sqrtf((float)hd)};
    size_t wsb = lg_k_attn_cache_ws_bytes(n, &shape, n_slots);
    void *ws = wsb ? dpoison(wsb) : NULL;
    KK(lg_k_attn_cache_ws_init(ws, wsb, NULL));
    /* twice on one workspace, the output poisoned between: the second call's result is checked,
     * so a split counter the first left behind would show */
    for (int call = 0; call < 2; call++) {
        CK(cudaMemset(dout, 0xff, (size_t)n * ldo * lg_kdtype_size(dt)));
        for (int t = 0; t < n; t++) { /* stale: NaN rows, every other one with position 0 */
            int stale = t % 2 ? -1 : 0;
            CK(cudaMemcpy((char *)dk + qslot[t] * row_bytes, dnan, row_bytes, cudaMemcpyDeviceToDevice));
            CK(cudaMemcpy((char *)dv + qslot[t] * row_bytes, dnan, row_bytes, cudaMemcpyDeviceToDevice));
            CK(cudaMemcpy(dpos + qslot[t], &stale, sizeof(int), cudaMemcpyHostToDevice));
        }
        KK(lg_k_kv_write(dk, dv, ldkv, dpos, dkn, ldkv, dvn, ldkv, dt, kvd, dqslot, dqpos, 0, n,
                         NULL));
        KK(lg_k_attn_cache(dout, ldo, dq, ldq, dk, ldkv, dv, ldkv, dt, dpos, n_slots,
                           use_live ? dlive : NULL, n, dqpos, 0, &shape, mask, ws, wsb, NULL));
    }
    float *g = down(dout, (size_t)n * ldo, dt);
    char shape_s[96], mb[32];
    snprintf(shape_s, sizeof shape_s, "%s P %d n %d slots %d%s heads %d/%d hd %d %s", dname(dt), P,
             n, n_slots, use_live ? " live" : "", nh, nkv, hd, mask_name(mask, mb, sizeof mb));
    report("cache (decode)", shape_s, g, ref, n, nh * hd, ldo, dt, bound_of(dt, dt));
    free(k), free(v), free(q), free(slot_pos), free(slot_of), free(perm), free(kp), free(vp);
    free(ref), free(qpos), free(qslot), free(kn), free(vn), free(nanrow), free(g);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dpos), cudaFree(dlive);
    cudaFree(dqpos), cudaFree(dqslot), cudaFree(dkn), cudaFree(dvn), cudaFree(dnan), cudaFree(ws);
}

/* lg_k_attn_cache_slot_bound: a power of two, at least 128 and the live slots, under twice them */
static void check_slot_bound(void)
{
    static const long live[] = {0, 1, 127, 128, 129, 511, 512, 513, 1000, 4097, 131072, 131073};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        long b = lg_k_attn_cache_slot_bound(live[i]);
        int ok = b >= 128 && b >= live[i] && (b & (b - 1)) == 0 && (b == 128 || b < 2 * live[i]);
        char shape[64];
        snprintf(shape, sizeof shape, "live %ld -> %ld", live[i], b);
        report_exact("attn_cache_slot_bound", shape, ok);
    }
}

/* pad: extra elements per row of k and v (0 or 8 keeps 16-byte rows when kvd fills whole 16-byte
 * units: the 16-byte copy; 2 does not: the copy by element, 2 or 4 bytes). */
static void check_kv_write(lg_kdtype dt, int n, int kvd, int n_slots, int pad)
{
    int ld = kvd + 8, ldkv = kvd + pad;
    float *kc = rnd((size_t)n_slots * ld, 1.0f, 0.0f, dt), *vc = rnd((size_t)n_slots * ld, 1.0f, 0.0f, dt);
    float *k = rnd((size_t)n * ldkv, 1.0f, 0.0f, dt), *v = rnd((size_t)n * ldkv, 1.0f, 0.0f, dt);
    int *slots = xmalloc(n * sizeof(int)), *pos = xmalloc(n_slots * sizeof(int));
    for (int s = 0; s < n_slots; s++)
        pos[s] = -1;
    for (int t = 0; t < n; t++)
        slots[t] = (t * 7 + 3) % n_slots; /* distinct while n <= n_slots and 7 coprime to it */
    void *dkc = up(kc, (size_t)n_slots * ld, dt), *dvc = up(vc, (size_t)n_slots * ld, dt);
    void *dk = up(k, (size_t)n * ldkv, dt), *dv = up(v, (size_t)n * ldkv, dt);
    int *dslots = up_int(slots, n), *dpos = up_int(pos, n_slots);
    KK(lg_k_kv_write(dkc, dvc, ld, dpos, dk, ldkv, dv, ldkv, dt, kvd, dslots, NULL, 500, n, NULL));
    for (int t = 0; t < n; t++) {
        memcpy(kc + (size_t)slots[t] * ld, k + (size_t)t * ldkv, kvd * sizeof(float));
        memcpy(vc + (size_t)slots[t] * ld, v + (size_t)t * ldkv, kvd * sizeof(float));
        pos[slots[t]] = 500 + t;
    }
    float *gk = down(dkc, (size_t)n_slots * ld, dt), *gv = down(dvc, (size_t)n_slots * ld, dt);
    int *gp = xmalloc(n_slots * sizeof(int));
    CK(cudaMemcpy(gp, dpos, n_slots * sizeof(int), cudaMemcpyDeviceToHost));
    int ok = memcmp(gp, pos, n_slots * sizeof(int)) == 0;
    for (size_t i = 0; i < (size_t)n_slots * ld; i++)
        ok &= gk[i] == kc[i] && gv[i] == vc[i];
    char shape[96];
    snprintf(shape, sizeof shape, "%s n %d kv_dim %d slots %d ld %d", dname(dt), n, kvd, n_slots,
             ldkv);
    report_exact("kv_write", shape, ok);
    free(kc), free(vc), free(k), free(v), free(slots), free(pos), free(gk), free(gv), free(gp);
    cudaFree(dkc), cudaFree(dvc), cudaFree(dk), cudaFree(dv), cudaFree(dslots), cudaFree(dpos);
}

/* A sparse layer's cache filled from the keys and values of positions 0..n-1 laid out by position
 * (after a prefill), against the layout's own CPU side: slot s gets the rows and slot_pos of
 * position lg_kv_pos_of_slot(s), an empty slot keeps its bytes, and so does each row's padding. */
static void check_kv_fill(lg_kdtype dt, const lg_kmask *mask, int ring, int kept, int n, int kvd,
                          int pad)
{
    lg_kv_layout lay = {*mask, ring, kept};
    int n_slots = (int)lg_kv_slots(&lay, n), ldc = kvd + pad, ldkv = kvd + 2 * pad;
    float *kc = rnd((size_t)n_slots * ldc, 1.0f, 0.0f, dt);
    float *vc = rnd((size_t)n_slots * ldc, 1.0f, 0.0f, dt);
    float *k = rnd((size_t)n * ldkv, 1.0f, 0.0f, dt), *v = rnd((size_t)n * ldkv, 1.0f, 0.0f, dt);
    void *dkc = up(kc, (size_t)n_slots * ldc, dt), *dvc = up(vc, (size_t)n_slots * ldc, dt);
    void *dk = up(k, (size_t)n * ldkv, dt), *dv = up(v, (size_t)n * ldkv, dt);
    int *dpos = dpoison(n_slots * sizeof(int));
    KK(lg_k_kv_fill_from_rows(dkc, dvc, ldc, dpos, n_slots, &lay, dk, ldkv, dv, ldkv, dt, kvd, n,
                              NULL));
    int *pos = xmalloc(n_slots * sizeof(int));
    for (int s = 0; s < n_slots; s++) {
        long p = lg_kv_pos_of_slot(&lay, s, n);
        pos[s] = (int)p;
        if (p < 0)
            continue;
        memcpy(kc + (size_t)s * ldc, k + (size_t)p * ldkv, kvd * sizeof(float));
        memcpy(vc + (size_t)s * ldc, v + (size_t)p * ldkv, kvd * sizeof(float));
    }
    float *gk = down(dkc, (size_t)n_slots * ldc, dt), *gv = down(dvc, (size_t)n_slots * ldc, dt);
    int *gp = xmalloc(n_slots * sizeof(int));
    CK(cudaMemcpy(gp, dpos, n_slots * sizeof(int), cudaMemcpyDeviceToHost));
    int ok = memcmp(gp, pos, n_slots * sizeof(int)) == 0;
    for (size_t i = 0; i < (size_t)n_slots * ldc; i++)
        ok &= gk[i] == kc[i] && gv[i] == vc[i];
    char shape[96], mb[32];
    snprintf(shape, sizeof shape, "%s %s ring %d kept %d n %d kv_dim %d ld %d", dname(dt),
             mask_name(mask, mb, sizeof mb), ring, kept, n, kvd, ldkv);
    report_exact("kv_fill", shape, ok);
    free(kc), free(vc), free(k), free(v), free(pos), free(gk), free(gv), free(gp);
    cudaFree(dkc), cudaFree(dvc), cudaFree(dk), cudaFree(dv), cudaFree(dpos);
}

/* Bad arguments are refused with a message, before anything is launched. */
static void check_rejects(lg_blas *blas)
{
    lg_kattn_shape bad_gqa = {6, 4, 64, 0.125f}, ok_shape = {8, 2, 64, 0.125f};
    lg_kmask bad_mask = {LG_KMASK_SINK_WINDOW, 4, 0, 0, 0, 0};
    const void *p16 = (const void *)16; /* never dereferenced: the arguments are refused first */
    lg_kqmat q8 = {LG_KQ_Q8, 0, 8, 8, p16, p16, NULL, 0};
    lg_kqmat q8_mins = {LG_KQ_Q8, 0, 8, 8, p16, p16, p16, 0};
    lg_kqmat q4_nogroup = {LG_KQ_Q4, 0, 8, 8, p16, p16, NULL, 0};
    lg_kqmat q8_odd = {LG_KQ_Q8, 3, 8, 8, p16, p16, NULL, 0};
    lg_kqmat q4_nocodes = {LG_KQ_Q4, 64, 8, 8, NULL, p16, NULL, 0};
    lg_kv_layout sw_lay = {{LG_KMASK_SINK_WINDOW, 4, 8, 0, 0, 0}, 8, 0};
    struct {
        const char *what;
        int rc;
    } cases[] = {
        {"gemv beta 0.5", lg_k_gemv(NULL, LG_KDT_F32, 8, NULL, 8, NULL, 8, LG_KDT_F16, 1, 8, 8, 0.5f, NULL)},
        {"gemv f32 x, f16 y", lg_k_gemv(NULL, LG_KDT_F16, 8, NULL, 8, NULL, 8, LG_KDT_F32, 1, 8, 8, 0.0f, NULL)},
        {"gemv dtype 7", lg_k_gemv(NULL, LG_KDT_F32, 8, NULL, 8, NULL, 8, (lg_kdtype)7, 1, 8, 8, 0.0f, NULL)},
        {"gemm ldw < K", lg_k_gemm(blas, NULL, LG_KDT_F32, 8, NULL, 8, NULL, 4, LG_KDT_F16, 1, 8, 8, 0.0f, NULL)},
        {"gemm f32 x, bf16 y", lg_k_gemm(blas, NULL, LG_KDT_BF16, 8, NULL, 8, NULL, 8, LG_KDT_F32, 1, 8, 8, 0.0f, NULL)},
        {"prefill f32 odd ld", lg_k_attn_prefill(NULL, 513, NULL, 513, NULL, 129, NULL, 129, LG_KDT_F32, 1, 0, 1, 0, &ok_shape, NULL, NULL, 0, NULL)},
        {"kv_write dtype 7", lg_k_kv_write(NULL, NULL, 8, NULL, NULL, 8, NULL, 8, (lg_kdtype)7, 8, NULL, NULL, 0, 1, NULL)},
        {"kv_fill f16 odd kv_dim", lg_k_kv_fill_from_rows(NULL, NULL, 8, NULL, 4, &sw_lay, NULL, 8, NULL, 8, LG_KDT_F16, 7, 10, NULL)},
        {"prefill heads 6/4", lg_k_attn_prefill(NULL, 384, NULL, 384, NULL, 256, NULL, 256, LG_KDT_F16, 1, 0, 1, 0, &bad_gqa, NULL, NULL, 0, NULL)},
        {"prefill q past keys", lg_k_attn_prefill(NULL, 512, NULL, 512, NULL, 128, NULL, 128, LG_KDT_F16, 4, 10, 12, 0, &ok_shape, NULL, NULL, 0, NULL)},
        {"prefill window 0", lg_k_attn_prefill(NULL, 512, NULL, 512, NULL, 128, NULL, 128, LG_KDT_F16, 1, 0, 1, 0, &ok_shape, &bad_mask, NULL, 0, NULL)},
        {"cache ws too small", lg_k_attn_cache(NULL, 512, NULL, 512, NULL, 128, NULL, 128, LG_KDT_F16, (const int *)16, 100000, NULL, 1, NULL, 0, &ok_shape, NULL, NULL, 0, NULL)},
        {"rope odd head_dim", lg_k_rope(NULL, 64, 1, NULL, 64, 1, LG_KDT_F16, 1, 7, NULL, 0, NULL, 1.0f, NULL)},
        {"gemv_quant q4 group 0", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q4_nogroup, NULL, 8, LG_KDT_F16, 1, 0.0f, NULL)},
        {"gemv_quant q8 with mins", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q8_mins, NULL, 8, LG_KDT_F16, 1, 0.0f, NULL)},
        {"gemv_quant odd group", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q8_odd, NULL, 8, LG_KDT_F16, 1, 0.0f, NULL)},
        {"gemv_quant no codes", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q4_nocodes, NULL, 8, LG_KDT_F16, 1, 0.0f, NULL)},
        {"gemv_quant beta 0.5", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q8, NULL, 8, LG_KDT_F16, 1, 0.5f, NULL)},
        {"gemv_quant f32 x", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q8, NULL, 8, LG_KDT_F32, 1, 0.0f, NULL)},
        {"gemv_quant ldx < cols", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, &q8, NULL, 4, LG_KDT_F16, 1, 0.0f, NULL)},
        {"gemv_quant no matrix", lg_k_gemv_quant(NULL, LG_KDT_F32, 8, NULL, NULL, 8, LG_KDT_F16, 1, 0.0f, NULL)},
        {"gemv_quant_glu untiled", lg_k_gemv_quant_glu(NULL, LG_KDT_F16, &q8, p16, LG_KDT_F16, NULL)},
        {"gemv_quant_glu f32 y", lg_k_gemv_quant_glu(NULL, LG_KDT_F32, &q8, p16, LG_KDT_F16, NULL)},
        {"gemv_quant_rope_kv untiled", lg_k_gemv_quant_rope_kv(NULL, LG_KDT_F16, &q8, p16, 1, 1, 4, NULL, 0, NULL, 1.0f, NULL, NULL)},
        {"dequant rows past end", lg_k_dequant(NULL, LG_KDT_F16, 8, &q8, 4, 5, NULL)},
        {"dequant dtype 7", lg_k_dequant(NULL, (lg_kdtype)7, 8, &q8, 0, 8, NULL)},
        {"read_sum 24 bytes", lg_k_read_sum((unsigned *)p16, p16, 24, NULL)},
        {"read_sum misaligned", lg_k_read_sum((unsigned *)p16, (const char *)p16 + 4, 32, NULL)},
        {"gemv_quant variant 3", lg_k_gemv_quant_set_variant(3, 1)},
        {"gemv_quant 16 warps, 3 blocks", lg_k_gemv_quant_set_variant(16, 3)},
        {"gemv_quant 8 warps, 4 blocks", lg_k_gemv_quant_set_variant(8, 4)},
        {"gemv_quant 8 warps, 6 blocks", lg_k_gemv_quant_set_variant(8, 6)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int ok = cases[i].rc == -1 && lg_k_last_error()[0] != 0;
        report_exact("rejects", cases[i].what, ok);
    }
    printf("%-20s last message: %s\n", "", lg_k_last_error());
    /* the tensor-core walk keeps 32-bit offsets: 4 GiB of codes or more go to the scalar path,
     * just under it to the fast one (only the descriptor is read) */
    const void *p256 = (const void *)256;
    lg_kqmat big = {LG_KQ_Q8, 0, 1 << 20, 4096, p256, p256, NULL, 0};
    report_exact("gemv_quant path", "q8 1Mi x 4096 (4 GiB): scalar",
                 lg_k_gemv_quant_load_bytes(&big, p256, 4096) == 0);
    big.rows = (1 << 20) - 16;
    report_exact("gemv_quant path", "q8 (1Mi - 16) x 4096: 16-byte loads",
                 lg_k_gemv_quant_load_bytes(&big, p256, 4096) == 16);
}

/* ---------------------------------------------------------------- timings */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#define REPS 41

static float median(float *t, int n)
{
    qsort(t, n, sizeof *t, cmp_float);
    return t[n / 2];
}

static double copy_bandwidth(void)
{
    size_t bytes = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 1, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[11];
    for (int r = -2; r < 11; r++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        if (r >= 0)
            CK(cudaEventElapsedTime(&t[r], e0, e1));
    }
    cudaFree(a), cudaFree(b);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return 2.0 * bytes / (median(t, 11) * 1e-3) / 1e9; /* read + write */
}

static void bench_gemv(lg_blas *blas, lg_kdtype dt, int M, int K, double copy_gbs)
{
    enum { COPIES = 3 }; /* 3 x 90 MB rotate through the 50 MB L2 */
    size_t wn = (size_t)M * K;
    void *w[COPIES], *x, *y;
    for (int c = 0; c < COPIES; c++) {
        float *h = rnd(wn, 1.0f, 0.0f, dt);
        w[c] = up(h, wn, dt);
        free(h);
    }
    float *hx = rnd(K, 1.0f, 0.0f, dt);
    x = up(hx, K, dt);
    free(hx);
    y = dpoison((size_t)M * 4);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    static const int variants[][2] = {{2, 4}, {1, 8}, {4, 4}, {2, 8}};
    int nvar = (int)(sizeof variants / sizeof variants[0]);
    for (int which = 0; which < nvar + 1; which++) {
        if (which < nvar)
            KK(lg_k_gemv_set_variant(variants[which][0], variants[which][1]));
        /* 12 launches back to back between the events, so the host's launch latency is hidden
         * as it is in a decode step (a CUDA graph) */
        enum { BURST = 12 };
        float t[REPS];
        for (int r = -3; r < REPS; r++) {
            CK(cudaEventRecord(e0, 0));
            for (int b = 0; b < BURST; b++) {
                void *wc = w[b % COPIES];
                if (which < nvar)
                    KK(lg_k_gemv(y, LG_KDT_F32, M, wc, K, x, K, dt, 1, M, K, 0.0f, NULL));
                else
                    KK(lg_k_gemm(blas, y, LG_KDT_F32, M, x, K, wc, K, dt, 1, M, K, 0.0f, NULL));
            }
            CK(cudaEventRecord(e1, 0));
            CK(cudaEventSynchronize(e1));
            if (r >= 0) {
                CK(cudaEventElapsedTime(&t[r], e0, e1));
                t[r] /= BURST;
            }
        }
        float ms = median(t, REPS);
        double gbs = (double)wn * 2 / (ms * 1e-3) / 1e9;
        char name[32];
        if (which < nvar)
            snprintf(name, sizeof name, "lg_k_gemv %dx%d", variants[which][0], variants[which][1]);
        else
            snprintf(name, sizeof name, "cuBLAS GemmEx");
        printf("BENCH gemv %-15s %-4s M %5d K %5d: %8.1f us  %7.1f GB/s  %5.1f%% of copy\n", name,
               dname(dt), M, K, ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
    }
    KK(lg_k_gemv_set_variant(2, 4));
    for (int c = 0; c < COPIES; c++)
        cudaFree(w[c]);
    cudaFree(x), cudaFree(y);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* Copies of a weight that rotate through more than the L2 cache (3 times its size), at least 2. */
static int rotation_copies(size_t bytes, size_t l2)
{
    size_t c = (3 * l2 + bytes - 1) / bytes;
    return c < 2 ? 2 : c > 16 ? 16 : (int)c;
}

/* Median time of one launch in us: BURST launches back to back between the events, so the host's
 * launch latency is hidden as it is in a decode step (a CUDA graph). */
typedef void (*launch_fn)(void *ctx, int copy);

static float time_launches(launch_fn fn, void *ctx, int copies)
{
    enum { BURST = 12 };
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[REPS];
    for (int r = -3; r < REPS; r++) {
        CK(cudaEventRecord(e0, 0));
        for (int b = 0; b < BURST; b++)
            fn(ctx, (r * BURST + b + 3 * BURST) % copies);
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        if (r >= 0) {
            CK(cudaEventElapsedTime(&t[r], e0, e1));
            t[r] /= BURST;
        }
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return median(t, REPS) * 1e3f;
}

typedef struct gemv_ctx {
    void *y;
    const void *x;
    lg_kdtype dt;
    int n, M, K;
    void *w16[16];   /* float16 copies */
    lg_kqmat wq[16]; /* quantized copies */
} gemv_ctx;

static void launch_gemv16(void *ctx, int copy)
{
    gemv_ctx *c = ctx;
    KK(lg_k_gemv(c->y, LG_KDT_F32, c->M, c->w16[copy], c->K, c->x, c->K, c->dt, c->n, c->M, c->K,
                 0.0f, NULL));
}

static void launch_gemv_quant(void *ctx, int copy)
{
    gemv_ctx *c = ctx;
    KK(lg_k_gemv_quant(c->y, LG_KDT_F32, c->M, &c->wq[copy], c->x, c->K, c->dt, c->n, 0.0f, NULL));
}

static void launch_dequant(void *ctx, int copy)
{
    gemv_ctx *c = ctx;
    KK(lg_k_dequant(c->y, c->dt, c->K, &c->wq[copy], 0, c->M, NULL));
}

/* Llama-2-7B's decode products: q|k|v, o, gate|up (as two), down, the vocabulary */
static void bench_gemv_all(lg_blas *blas, double copy_gbs)
{
    bench_gemv(blas, LG_KDT_F16, 12288, 4096, copy_gbs);
    bench_gemv(blas, LG_KDT_F16, 4096, 4096, copy_gbs);
    bench_gemv(blas, LG_KDT_F16, 11008, 4096, copy_gbs);
    bench_gemv(blas, LG_KDT_F16, 4096, 11008, copy_gbs);
    bench_gemv(blas, LG_KDT_BF16, 11008, 4096, copy_gbs);
    bench_gemv(blas, LG_KDT_F16, 32000, 4096, copy_gbs);
}

/* lg_k_gemv on a float16 [M, K] weight, n rows of x: us per product. */
static float bench_gemv16_us(int n, int M, int K, size_t l2)
{
    size_t wn = (size_t)M * K;
    gemv_ctx c = {.dt = LG_KDT_F16, .n = n, .M = M, .K = K};
    int copies = rotation_copies(wn * 2, l2);
    float *h = rnd(wn, 1.0f, 0.0f, LG_KDT_F16);
    c.w16[0] = up(h, wn, LG_KDT_F16);
    free(h);
    for (int i = 1; i < copies; i++) {
        CK(cudaMalloc(&c.w16[i], wn * 2));
        CK(cudaMemcpy(c.w16[i], c.w16[0], wn * 2, cudaMemcpyDeviceToDevice));
    }
    float *hx = rnd((size_t)n * K, 1.0f, 0.0f, LG_KDT_F16);
    void *x = up(hx, (size_t)n * K, LG_KDT_F16);
    free(hx);
    c.x = x;
    c.y = dpoison((size_t)n * M * 4);
    float us = time_launches(launch_gemv16, &c, copies);
    for (int i = 0; i < copies; i++)
        cudaFree(c.w16[i]);
    cudaFree(x), cudaFree(c.y);
    return us;
}

typedef struct read_ctx {
    unsigned *sum;
    void *buf[16];
    size_t bytes;
} read_ctx;

static void launch_read_sum(void *ctx, int copy)
{
    read_ctx *c = ctx;
    KK(lg_k_read_sum(c->sum, c->buf[copy], c->bytes, NULL));
}

/* lg_k_read_sum of `bytes` (rounded up to 16) in the GEMVs' conditions: the same bursts, as many
 * copies rotating through L2, random bytes as the weights are. us per read; the variant rows of a
 * shape ask for the same bytes again, and get the time measured first (the last 8 sizes kept). */
static float bench_read_us(size_t bytes, size_t l2)
{
    enum { SEEN = 8 };
    static size_t seen_bytes[SEEN];
    static float seen_us[SEEN];
    static int n_seen;
    for (int i = 0; i < n_seen && i < SEEN; i++)
        if (seen_bytes[i] == bytes)
            return seen_us[i];
    read_ctx c = {.bytes = (bytes + 15) / 16 * 16};
    int copies = rotation_copies(c.bytes, l2);
    uint64_t *h = xmalloc(c.bytes), r = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < c.bytes / 8; i++) { /* xorshift64 */
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        h[i] = r;
    }
    for (int i = 0; i < copies; i++) {
        CK(cudaMalloc(&c.buf[i], c.bytes));
        CK(cudaMemcpy(c.buf[i], h, c.bytes, cudaMemcpyHostToDevice));
    }
    free(h);
    c.sum = dpoison(sizeof *c.sum);
    float us = time_launches(launch_read_sum, &c, copies);
    for (int i = 0; i < copies; i++)
        cudaFree(c.buf[i]);
    cudaFree(c.sum);
    seen_bytes[n_seen % SEEN] = bytes, seen_us[n_seen % SEEN] = us;
    n_seen++;
    return us;
}

/* c->wq[0] = w's matrix, and copies - 1 more copies of its parts (freed by qmat_copies_free), so that
 * a burst of products rotates through more bytes than L2 holds. */
static void qmat_copies(gemv_ctx *c, const qmat_pair *w, int copies)
{
    const lg_kqmat *d = &w->d;
    size_t side = (size_t)d->rows * lg_kqmat_n_groups(d);
    size_t parts[3] = {(size_t)d->rows * lg_kqmat_row_bytes(d),
                       side * (d->method == LG_KQ_FP8 ? 4 : 2), d->mins ? side * 2 : 0};
    c->wq[0] = *d;
    for (int i = 1; i < copies; i++) {
        const void *src[3] = {d->codes, d->scales, d->mins};
        void *dst[3] = {NULL, NULL, NULL};
        for (int p = 0; p < 3; p++)
            if (parts[p]) {
                CK(cudaMalloc(&dst[p], parts[p]));
                CK(cudaMemcpy(dst[p], src[p], parts[p], cudaMemcpyDeviceToDevice));
            }
        c->wq[i] = *d;
        c->wq[i].codes = dst[0], c->wq[i].scales = dst[1], c->wq[i].mins = dst[2];
    }
}

static void qmat_copies_free(gemv_ctx *c, int copies)
{
    for (int i = 1; i < copies; i++)
        cudaFree((void *)c->wq[i].codes), cudaFree((void *)c->wq[i].scales),
            cudaFree((void *)c->wq[i].mins);
}

/* Decode GEMV with quantized weights: the time, the rate at which it reads what it must (codes,
 * scales, mins and x), the fraction of the measured copy bandwidth and the speedup over lg_k_gemv
 * on the same shape in float16 (us16). With dequant set, lg_k_dequant of the whole matrix to
 * float16 instead (its rate counts the float16 written too). */
static void bench_quant(const lg_quant_scheme *s, int n, int M, int K, qvar v, int dequant,
                        double copy_gbs, float us16, size_t l2)
{
    qmat_pair w;
    qmat_make(&w, s, M, K);
    qmat_tile(&w); /* as the engine holds it */
    size_t qbytes = lg_kqmat_bytes(&w.d);
    int copies = rotation_copies(qbytes, l2);
    gemv_ctx c = {.dt = LG_KDT_F16, .n = n, .M = M, .K = K};
    qmat_copies(&c, &w, copies);
    float *hx = rnd((size_t)n * K, 1.0f, 0.0f, LG_KDT_F16);
    void *x = up(hx, (size_t)n * K, LG_KDT_F16);
    free(hx);
    c.x = x;
    c.y = dpoison(dequant ? (size_t)M * K * 2 : (size_t)n * M * 4);
    char sn[32], pn[32];
    scheme_name(s, sn, sizeof sn);
    if (dequant) {
        float us = time_launches(launch_dequant, &c, copies);
        double gbs = (qbytes + (double)M * K * 2) / (us * 1e-6) / 1e9;
        printf("BENCH dequant    %-11s -> f16 M %5d K %5d:         %8.1f us  %7.1f GB/s  %5.1f%% "
               "of copy\n", sn, M, K, us, gbs, 100.0 * gbs / copy_gbs);
    } else {
        KK(lg_k_gemv_quant_set_variant(v.warps, v.minb));
        float us = time_launches(launch_gemv_quant, &c, copies);
        qpath(&w.d, x, K, n, v, pn, sizeof pn);
        KK(lg_k_gemv_quant_set_variant(QV_DEFAULT.warps, QV_DEFAULT.minb));
        double bytes = qbytes + (double)n * K * 2, gbs = bytes / (us * 1e-6) / 1e9;
        float read_us = bench_read_us((size_t)bytes, l2);
        printf("BENCH gemv_quant %-11s f16 M %5d K %5d n %d %-8s: %8.1f us  %7.1f GB/s  %5.1f%% "
               "of copy  %4.2fx fp16 gemv  %5.1f%% of a read (%.1f us, %.1f%% of copy)\n", sn, M,
               K, n, pn, us, gbs, 100.0 * gbs / copy_gbs,
               us16 / us, 100.0 * read_us / us, read_us,
               100.0 * bytes / (read_us * 1e-6) / 1e9 / copy_gbs);
    }
    qmat_copies_free(&c, copies);
    qmat_free(&w);
    cudaFree(x), cudaFree(c.y);
}

/* Decode's fused products on the one-row kernel, in the GEMVs' conditions: gate|up with SwiGLU
 * (heads 0) or q|k|v with RoPE and the cache writes (heads of hd, as many kv heads). */
typedef struct fused_ctx {
    gemv_ctx g;
    int heads, hd;
    const float *inv_freq;
    lg_kcache_dst dst;
} fused_ctx;

static void launch_fused(void *ctx, int copy)
{
    fused_ctx *c = ctx;
    if (c->heads)
        KK(lg_k_gemv_quant_rope_kv(c->g.y, LG_KDT_F16, &c->g.wq[copy], c->g.x, c->heads, c->heads,
                                   c->hd, NULL, 100, c->inv_freq, 1.0f, &c->dst, NULL));
    else
        KK(lg_k_gemv_quant_glu(c->g.y, LG_KDT_F16, &c->g.wq[copy], c->g.x, LG_KDT_F16, NULL));
}

/* us, the rate of what the product reads (codes, scales, mins, x) and its fraction of copy, with
 * the block's warps. rows: 2F for gate|up, 3 heads hd for q|k|v. */
static void bench_fused(const lg_quant_scheme *s, int rows, int K, int heads, int hd,
                        double copy_gbs, size_t l2)
{
    qmat_pair w;
    qmat_make(&w, s, rows, K);
    qmat_tile(&w);
    size_t qbytes = lg_kqmat_bytes(&w.d);
    int copies = rotation_copies(qbytes, l2);
    fused_ctx c = {.g = {.dt = LG_KDT_F16, .n = 1, .M = rows, .K = K}, .heads = heads, .hd = hd};
    qmat_copies(&c.g, &w, copies);
    float *hx = rnd((size_t)K, 1.0f, 0.0f, LG_KDT_F16);
    c.g.x = up(hx, (size_t)K, LG_KDT_F16);
    c.g.y = dpoison((size_t)rows * 2);
    int kvd = heads * hd, warps;
    float *inv = NULL;
    if (heads) {
        inv = xmalloc((size_t)hd / 2 * sizeof(float));
        for (int i = 0; i < hd / 2; i++)
            inv[i] = powf(10000.0f, -2.0f * i / hd);
        c.inv_freq = up(inv, (size_t)hd / 2, LG_KDT_F32);
        int zero = 0;
        c.dst = (lg_kcache_dst){dpoison((size_t)kvd * 2), dpoison((size_t)kvd * 2), kvd,
                                up_int(&zero, 1), up_int(&zero, 1), NULL, 0};
        warps = lg_k_gemv_quant_rope_kv_warps(&w.d, c.g.x, heads, heads, hd);
    } else {
        warps = lg_k_gemv_quant_glu_warps(&w.d, c.g.x);
    }
    char sn[32];
    scheme_name(s, sn, sizeof sn);
    if (!warps) {
        printf("BENCH fused      %-11s %-4s M %5d K %5d: not taken\n", sn, heads ? "rope" : "glu",
               rows, K);
    } else {
        float us = time_launches(launch_fused, &c, copies);
        double bytes = qbytes + (double)K * 2, gbs = bytes / (us * 1e-6) / 1e9;
        printf("BENCH fused      %-11s %-4s M %5d K %5d w%-2d: %8.1f us  %7.1f GB/s  %5.1f%% of "
               "copy\n", sn, heads ? "rope" : "glu", rows, K, warps, us, gbs,
               100.0 * gbs / copy_gbs);
    }
    qmat_copies_free(&c.g, copies);
    qmat_free(&w);
    free(hx), free(inv);
    cudaFree((void *)c.g.x), cudaFree(c.g.y), cudaFree((void *)c.inv_freq);
    cudaFree(c.dst.k_cache), cudaFree(c.dst.v_cache), cudaFree(c.dst.slot_pos);
    cudaFree((void *)c.dst.slots);
}

/* The fused products on 7B's shapes and on their shards for 2 and 4 GPUs (tensor parallel), q4
 * with mins at every load width (groups of 64, 32, 128) and q8. */
static void bench_fused_all(size_t l2, double copy)
{
    const lg_quant_scheme schemes[] = {{LG_QUANT_Q4, 64, 1}, {LG_QUANT_Q4, 32, 1},
                                       {LG_QUANT_Q4, 128, 1}, {LG_QUANT_Q8, 0, 0}};
    for (int j = 0; j < 4; j++)
        for (int tp = 1; tp <= 4; tp *= 2) {
            bench_fused(&schemes[j], 2 * 11008 / tp, 4096, 0, 0, copy, l2);
            bench_fused(&schemes[j], 3 * 4096 / tp, 4096, 32 / tp, 128, copy, l2);
        }
}

static void print_gemv16(int n, int M, int K, float us, double copy_gbs, size_t l2)
{
    double bytes = ((double)M * K + (double)n * K) * 2, gbs = bytes / (us * 1e-6) / 1e9;
    float read_us = bench_read_us((size_t)bytes, l2);
    printf("BENCH gemv_quant %-11s f16 M %5d K %5d n %d %-8s: %8.1f us  %7.1f GB/s  %5.1f%% "
           "of copy                   %5.1f%% of a read (%.1f us, %.1f%% of copy)\n",
           "(float16)", M, K, n, "gemv", us, gbs, 100.0 * gbs / copy_gbs, 100.0 * read_us / us,
           read_us, 100.0 * bytes / (read_us * 1e-6) / 1e9 / copy_gbs);
}

/* The quantized GEMV on Llama-2-7B's matrices (MLP gate or up, down, q|k|v stacked, lm_head, o,
 * gate|up stacked as the engine runs them), each scheme against the float16 GEMV of the shape; the
 * one-row products on the tensor-core kernel; then 4 rows of x, the warps variants, and
 * the dequantization. */
static void bench_quant_all(size_t l2, double copy)
{
    enum { SHAPES = 6 };
    static const int shapes[SHAPES][2] = {{11008, 4096}, {4096, 11008}, {12288, 4096},
                                          {32000, 4096}, {4096, 4096},  {22016, 4096}};
    const lg_quant_scheme schemes[] = {{LG_QUANT_Q8, 0, 0}, {LG_QUANT_Q4, 64, 1},
                                       {LG_QUANT_Q4, 64, 0}, {LG_QUANT_Q4, 128, 1},
                                       {LG_QUANT_FP8, 0, 0}};
    const int ns = (int)(sizeof schemes / sizeof schemes[0]);
    float us16s[SHAPES];
    for (int i = 0; i < SHAPES; i++) {
        int M = shapes[i][0], K = shapes[i][1];
        float us16 = us16s[i] = bench_gemv16_us(1, M, K, l2);
        print_gemv16(1, M, K, us16, copy, l2);
        for (int j = 0; j < ns; j++)
            bench_quant(&schemes[j], 1, M, K, QV_DEFAULT, 0, copy, us16, l2);
    }
    /* the products of one row on the tensor-core kernel, against the one-row kernel above */
    lg_k_gemv_quant_set_one_row(0);
    for (int i = 0; i < SHAPES; i++)
        for (int j = 0; j < ns; j++)
            bench_quant(&schemes[j], 1, shapes[i][0], shapes[i][1], QV_DEFAULT, 0, copy, us16s[i],
                        l2);
    lg_k_gemv_quant_set_one_row(1);
    float us16_4 = bench_gemv16_us(4, 11008, 4096, l2);
    print_gemv16(4, 11008, 4096, us16_4, copy, l2);
    for (int j = 0; j < 2; j++)
        bench_quant(&schemes[j], 4, 11008, 4096, QV_DEFAULT, 0, copy, us16_4, l2);
    /* the variants (warps a block, blocks an SM) on every shape, for q8, q4 g64 with mins, fp8 */
    static const qvar variants[] = {{8, 0}, {8, 1}, {8, 3}, {4, 1}, {4, 6}, {16, 1}};
    static const int vs[] = {0, 1, 4};
    for (int i = 0; i < SHAPES; i++)
        for (int v = 0; v < 6; v++)
            for (int j = 0; j < 3; j++)
                bench_quant(&schemes[vs[j]], 1, shapes[i][0], shapes[i][1], variants[v], 0, copy,
                            us16s[i], l2);
    for (int j = 0; j < ns; j++)
        bench_quant(&schemes[j], 1, 11008, 4096, QV_DEFAULT, 1, copy, 0, l2);
    bench_fused_all(l2, copy);
}

/* visible (query, key) pairs of a full-sequence prefill of T tokens under mask */
static double visible_pairs(const lg_kmask *m, int T)
{
    double pairs = 0;
    lg_layer_attn a = {(lg_attn_kind)m->kind, m->sink, m->window, m->block, m->local, m->stride};
    if (m->kind == LG_KMASK_FULL)
        return (double)T * (T + 1) / 2;
    for (long i = 0; i < T; i++) {
        if (m->kind == LG_KMASK_SINK_WINDOW) {
            long win = i + 1 < m->window ? i + 1 : m->window;
            long sinks = m->sink < i + 1 - win ? m->sink : i + 1 - win;
            pairs += (double)win + (sinks > 0 ? sinks : 0);
        } else {
            for (long j = 0; j <= i; j++)
                pairs += lg_attn_visible(&a, i, j);
        }
    }
    return pairs;
}

/* with_ws: the workspace lg_k_attn_prefill_ws_bytes asks for, its use timed with the rest; else
 * none ("wgmma_split" for bfloat16 on the wgmma kernel, which then splits P for every tile) */
static void bench_prefill(lg_kdtype dt, int T, int nh, int hd, const lg_kmask *mask,
                          lg_kprefill_kernel which, int with_ws)
{
    lg_k_attn_prefill_force(which);
    size_t n = (size_t)T * nh * hd;
    float *h = rnd(n, 1.0f, 0.0f, dt);
    void *q = up(h, n, dt), *k = up(h, n, dt), *v = up(h, n, dt), *o = dpoison(n * 2);
    free(h);
    lg_kattn_shape shape = {nh, nh, hd, 1.0f / sqrtf((float)hd)};
    size_t ws_bytes = with_ws ? lg_k_attn_prefill_ws_bytes(dt, T, &shape) : 0;
    void *ws = ws_bytes ? dpoison(ws_bytes) : NULL;
    int ld = nh * hd;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    int reps = T >= 16384 ? 7 : 15;
    float t[15];
    for (int r = -2; r < reps; r++) {
        CK(cudaEventRecord(e0, 0));
        KK(lg_k_attn_prefill(o, ld, q, ld, k, ld, v, ld, dt, T, 0, T, 0, &shape, mask, ws,
                             ws_bytes, NULL));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        if (r >= 0)
            CK(cudaEventElapsedTime(&t[r], e0, e1));
    }
    CK(cudaGetLastError());
    lg_k_attn_prefill_force(LG_KPREFILL_AUTO);
    float ms = median(t, reps);
    double flops = 4.0 * hd * nh * visible_pairs(mask, T);
    char mb[32];
    const int wg = which == LG_KPREFILL_WGMMA && lg_k_attn_prefill_wgmma_takes(hd, dt);
    const char *kname = !wg ? "mma" : !with_ws && dt == LG_KDT_BF16 ? "wgmma_split" : "wgmma";
    printf("BENCH prefill %-5s %s T %6d heads %d hd %d %-12s: %9.3f ms  %6.1f TFLOP/s\n", kname,
           dname(dt), T, nh, hd, mask_name(mask, mb, sizeof mb), ms, flops / (ms * 1e-3) / 1e12);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(ws);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* Llama-2-7B's prefill attention (32 heads of 128) at 4K and 16K, full and the two sparse masks,
 * through the wgmma kernel (where the device has it) and through the mma.sync kernel. */
static void bench_prefill_all(void)
{
    lg_kmask full = {LG_KMASK_FULL, 0, 0, 0, 0, 0};
    lg_kmask sw_llm = {LG_KMASK_SINK_WINDOW, 64, 4096, 0, 0, 0};
    lg_kmask bs_llm = {LG_KMASK_BLOCK_STRIDED, 0, 0, 64, 16, 16};
    const lg_kdtype H[2] = {LG_KDT_F16, LG_KDT_BF16};
    for (int w = 0; w < 2; w++) {
        lg_kprefill_kernel which = w ? LG_KPREFILL_MMA : LG_KPREFILL_WGMMA;
        for (int i = 0; i < 2; i++) {
            bench_prefill(H[i], 4096, 32, 128, &full, which, 1);
            bench_prefill(H[i], 16384, 32, 128, &full, which, 1);
        }
        bench_prefill(LG_KDT_F16, 16384, 32, 128, &sw_llm, which, 1);
        bench_prefill(LG_KDT_F16, 16384, 32, 128, &bs_llm, which, 1);
    }
    /* bfloat16 on the wgmma kernel without its workspace: P split on every tile */
    bench_prefill(LG_KDT_BF16, 4096, 32, 128, &full, LG_KPREFILL_WGMMA, 0);
    bench_prefill(LG_KDT_BF16, 16384, 32, 128, &full, LG_KPREFILL_WGMMA, 0);
    /* the wgmma kernel's schedules: persistent blocks, and a block per work item */
    for (int sched = 1; sched <= 2; sched++) {
        lg_k_attn_prefill_set_schedule(sched);
        printf("schedule: %s\n", sched == 1 ? "persistent" : "a block per item");
        for (int T = 4096; T <= 32768; T *= 2)
            bench_prefill(LG_KDT_F16, T, 32, 128, &full, LG_KPREFILL_WGMMA, 1);
        bench_prefill(LG_KDT_F16, 16384, 32, 128, &sw_llm, LG_KPREFILL_WGMMA, 1);
    }
    lg_k_attn_prefill_set_schedule(0);
}

/* Decode attention (one query) over n_slots cached positions, slots in position order: the time and
 * the rate at which it reads the cache (keys + values, n_slots * kv_dim * 2 * 2 bytes). */
static void bench_decode(lg_kdtype dt, int n_slots, int nh, int nkv, int hd, const lg_kmask *mask,
                         int P, double copy_gbs)
{
    int kvd = nkv * hd;
    size_t kv_n = (size_t)n_slots * kvd;
    void *k = dpoison(kv_n * 2), *v = dpoison(kv_n * 2);
    CK(cudaMemset(k, 0x3c, kv_n * 2)); /* finite values; the time does not depend on them */
    CK(cudaMemset(v, 0x3c, kv_n * 2));
    float *hq = rnd((size_t)nh * hd, 1.0f, 0.0f, dt);
    void *q = up(hq, (size_t)nh * hd, dt), *o = dpoison((size_t)nh * hd * 2);
    free(hq);
    int *pos = xmalloc(n_slots * sizeof(int));
    for (int s = 0; s < n_slots; s++) /* sink_window ring: the sinks, then the latest positions */
        pos[s] = mask->kind == LG_KMASK_SINK_WINDOW && s >= mask->sink
                     ? P - (n_slots - 1 - s) : s;
    int *dpos = up_int(pos, n_slots), *dq = up_int(&P, 1);
    free(pos);
    lg_kattn_shape shape = {nh, nkv, hd, 1.0f / sqrtf((float)hd)};
    size_t wsb = lg_k_attn_cache_ws_bytes(1, &shape, n_slots);
    void *ws = wsb ? dpoison(wsb) : NULL;
    KK(lg_k_attn_cache_ws_init(ws, wsb, NULL));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    enum { BURST = 10 };
    float t[REPS];
    for (int r = -3; r < REPS; r++) {
        CK(cudaEventRecord(e0, 0));
        for (int b = 0; b < BURST; b++)
            KK(lg_k_attn_cache(o, nh * hd, q, nh * hd, k, kvd, v, kvd, dt, dpos, n_slots, NULL, 1,
                               dq, 0, &shape, mask, ws, wsb, NULL));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        if (r >= 0) {
            CK(cudaEventElapsedTime(&t[r], e0, e1));
            t[r] /= BURST;
        }
    }
    float ms = median(t, REPS);
    double gbs = (double)kv_n * 2 * 2 / (ms * 1e-3) / 1e9;
    char mb[32];
    printf("BENCH decode  %s pos %6d slots %6d heads %d/%d hd %d %-12s: %8.1f us  %7.1f GB/s  "
           "%5.1f%% of copy\n", dname(dt), P, n_slots, nh, nkv, hd, mask_name(mask, mb, sizeof mb),
           ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
    cudaFree(k), cudaFree(v), cudaFree(q), cudaFree(o), cudaFree(dpos), cudaFree(dq), cudaFree(ws);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* ---------------------------------------------------------------- main */

/* Decode attention on Llama-2-7B's layer at 4K and 32K and its sink_window twin, for each target
 * number of blocks of the slot splits (lg_k_attn_cache_set_split_target). */
static void bench_decode_splits(double copy)
{
    static const int targets[] = {256, 512, 1024, 2048};
    lg_kmask full = {LG_KMASK_FULL, 0, 0, 0, 0, 0};
    lg_kmask sw_llm = {LG_KMASK_SINK_WINDOW, 64, 4096, 0, 0, 0};
    /* short caches (decode at short context): one whole-cache block a head up to 512 slots, splits
     * past it */
    static const int short_slots[] = {128, 192, 256, 384, 512, 513, 1024};
    for (int i = 0; i < 7; i++)
        bench_decode(LG_KDT_F16, short_slots[i], 32, 32, 128, &full, short_slots[i] - 1, copy);
    for (int i = 0; i < 4; i++) {
        KK(lg_k_attn_cache_set_split_target(targets[i]));
        printf("BENCH decode split target %d blocks\n", targets[i]);
        bench_decode(LG_KDT_F16, 4096, 32, 32, 128, &full, 4095, copy);
        bench_decode(LG_KDT_F16, 32768, 32, 32, 128, &full, 32767, copy);
        bench_decode(LG_KDT_F16, 64 + 4096, 32, 32, 128, &sw_llm, 131071, copy);
    }
    KK(lg_k_attn_cache_set_split_target(0));
}

/* The quantized GEMV and the dequantization (lg-kernel-check --checks-quant runs these alone). */
static void check_quant_all(void)
{
    /* quantized weights: every method and load width of the tensor-core kernel (ld16/8/4 in the
     * shape column), 1 to 9 rows of x (9: two passes), the warps variants; then the scalar path on
     * shapes and groups no window divides, and forced (warps 0) on one the fast path takes */
    const lg_quant_method Q8 = LG_QUANT_Q8, Q4 = LG_QUANT_Q4, F8 = LG_QUANT_FP8;
    const lg_kdtype H[2] = {LG_KDT_F16, LG_KDT_BF16}, F32 = LG_KDT_F32;
    for (int i = 0; i < 2; i++) {
        lg_kdtype h = H[i];
        check_gemv_quant(h, F32, 1, 11008, 4096, Q8, 0, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 4, 4096, 11008, Q8, 0, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 3, 33, 4096, Q8, 32, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 2, 7, 4096 + 48, Q8, 48, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 11008, 4096, Q4, 64, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 4, 4096, 11008, Q4, 64, 1, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 2, 12288, 4096, Q4, 128, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 9, 33, 4096, Q4, 64, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 8, 7, 4096 + 64, Q4, 128, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 5, 40, 4096, Q4, 32, 1, 0.0f, QV_DEFAULT);
        /* one row of x on tiled q4 with a group a window (the one-row kernel): every load width,
         * with and without mins, an odd number of steps, uneven warps' shares, its three block
         * shapes (on 132 SMs: 4096 rows, 16 warps; 5120, 8; 12288, 4), float16 out, y += */
        check_gemv_quant(h, F32, 1, 4096, 4096 + 64, Q4, 64, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 4096, 11008, Q4, 64, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 12288, 4096, Q4, 128, 1, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 5120, 4096, Q4, 64, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 32, 4096 + 128, Q4, 128, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 48, 4096, Q4, 32, 1, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 64, 4096 + 32, Q4, 32, 0, 0.0f, QV_DEFAULT);
        /* and on tiled q8 with a scale per row: its three block shapes (on 132 SMs: 4096 rows,
         * 16 warps; 5120, 8; 22016, 4), an odd number of steps (65), y += into float16 and
         * float32; 11008 x 4096 above (3 to 6 tiles an SM) and a q8 matrix with a group stay on
         * the tensor-core kernel */
        check_gemv_quant(h, F32, 1, 4096, 11008, Q8, 0, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 5120, 4096 + 64, Q8, 0, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 22016, 4096, Q8, 0, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 48, 4096 + 192, Q8, 0, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 1008, 4096, Q8, 64, 0, 0.0f, QV_DEFAULT);
        /* fp8 with a scale per row takes the same walk (4096 x 4096 below) */
        check_gemv_quant(h, F32, 1, 4096, 11008, F8, 0, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 5120, 4096 + 64, F8, 0, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 22016, 4096, F8, 0, 0, 1.0f, QV_DEFAULT);
        /* gate|up with SwiGLU on the one-row kernel: 7B's (4 warps, as the plain product: equal
         * bit for bit), a shard of it for two GPUs (8 warps against 4: within the bound), a few
         * tiles with odd steps (16), every load width, with and without mins; the same on q8 and
         * fp8 */
        check_gemv_quant_glu(h, 11008, 4096, Q4, 64, 1);
        check_gemv_quant_glu(h, 5504, 4096, Q4, 128, 0);
        check_gemv_quant_glu(h, 112, 4096 + 64, Q4, 64, 0);
        check_gemv_quant_glu(h, 48, 4096 + 32, Q4, 32, 1);
        check_gemv_quant_glu(h, 11008, 4096, Q8, 0, 0);
        check_gemv_quant_glu(h, 5504, 4096, Q8, 0, 0);
        check_gemv_quant_glu(h, 112, 4096 + 64, Q8, 0, 0);
        check_gemv_quant_glu(h, 11008, 4096, F8, 0, 0);
        check_gemv_quant_glu(h, 112, 4096 + 64, F8, 0, 0);
        /* q|k|v with RoPE and the cache writes: 7B's (8 warps against the plain product's 4),
         * grouped-query heads of 64 with an odd number of steps (16, as the plain product's), 32
         * (the smallest head it takes), positions from the device and from pos0; q8 and fp8
         * likewise */
        check_gemv_quant_rope_kv(h, 32, 32, 128, 4096, Q4, 64, 1, 1);
        check_gemv_quant_rope_kv(h, 8, 2, 64, 4096 + 64, Q4, 64, 0, 0);
        check_gemv_quant_rope_kv(h, 4, 4, 32, 4096, Q4, 128, 1, 1);
        check_gemv_quant_rope_kv(h, 32, 32, 128, 4096, Q8, 0, 0, 1);
        check_gemv_quant_rope_kv(h, 8, 2, 64, 4096 + 64, Q8, 0, 0, 0);
        check_gemv_quant_rope_kv(h, 32, 32, 128, 4096, F8, 0, 0, 0);
        check_gemv_quant_rope_kv(h, 8, 2, 64, 4096 + 64, F8, 0, 0, 1);
        lg_k_gemv_quant_set_one_row(0); /* decode's product on the tensor-core kernel */
        check_gemv_quant(h, F32, 1, 11008, 4096, Q4, 64, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 4096, 4096, Q4, 128, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 12288, 4096, Q8, 0, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 1, 4096, 11008, F8, 0, 0, 0.0f, QV_DEFAULT);
        lg_k_gemv_quant_set_one_row(1);
        check_gemv_quant(h, F32, 1, 4096, 4096, F8, 0, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 4, 33, 4096, F8, 32, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 1000, 4096, Q4, 64, 1, 0.0f, QV(4, 1));
        check_gemv_quant(h, F32, 3, 1000, 11008, Q8, 0, 0, 0.0f, QV(16, 1));
        check_gemv_quant(h, F32, 2, 7, 4097, Q4, 64, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 3, 33, 4097, Q8, 0, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 1, 17, 4096 + 48, Q4, 48, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 2, 5, 4099, F8, 0, 0, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 4, 1000, 4096, Q4, 64, 1, 1.0f, QV(0, 1));
        /* the register-capped variant (3 blocks of 8 warps an SM) on every method and width, and
         * without the cap on a shape where the default takes it */
        check_gemv_quant(h, F32, 1, 11008, 4096, Q4, 64, 1, 0.0f, QV(8, 3));
        check_gemv_quant(h, F32, 1, 11008, 4096, Q4, 64, 1, 0.0f, QV(8, 1));
        check_gemv_quant(h, F32, 1, 11008, 4096, Q4, 64, 1, 0.0f, QV(4, 6));
        check_gemv_quant(h, h, 3, 12288, 4096, Q4, 128, 1, 1.0f, QV(4, 6));
        check_gemv_quant(h, F32, 1, 1000, 4096, Q8, 0, 0, 0.0f, QV(4, 6));
        check_gemv_quant(h, h, 3, 4096, 11008, Q8, 0, 0, 1.0f, QV(8, 3));
        check_gemv_quant(h, F32, 2, 1000, 4096, F8, 0, 0, 0.0f, QV(8, 3));
        check_gemv_quant(h, F32, 1, 33, 4096 + 64, Q4, 128, 0, 0.0f, QV(8, 3));
        check_gemv_quant(h, F32, 9, 40, 4096, Q4, 32, 1, 1.0f, QV(8, 3));
        check_gemv_quant(h, F32, 2, 40, 4096 + 16, Q4, 16, 1, 0.0f, QV(8, 3));
        check_gemv_quant(h, F32, 1, 1000, 4096, Q8, 64, 0, 0.0f, QV(0, 1));
        /* tile-major codes: 4-byte chunks (q4 g32, q8 g16), and read by the scalar path */
        check_gemv_quant(h, F32, 3, 48, 4096, Q4, 32, 1, 0.0f, QV_DEFAULT);
        check_gemv_quant(h, h, 2, 32, 4096 + 16, Q8, 16, 0, 1.0f, QV_DEFAULT);
        check_gemv_quant(h, F32, 2, 256, 4096, Q4, 64, 1, 0.0f, QV(0, 1));
        check_dequant(h, 32, 4096 + 16, Q8, 16, 0, 3, 20, 4096 + 16);
        check_dequant(h, 48, 4096, Q4, 32, 0, 0, 48, 4096);
        check_dequant(h, 256, 4096, Q4, 64, 1, 0, 256, 4096 + 8);
        check_dequant(h, 4096, 4096, Q8, 0, 0, 0, 4096, 4096);
        check_dequant(h, 11008, 4096, Q4, 64, 1, 1000, 2000, 4096 + 8);
        check_dequant(h, 300, 4096, Q4, 128, 0, 0, 300, 4096);
        check_dequant(h, 64, 4096 + 32, F8, 32, 0, 13, 40, 4096 + 32);
        check_dequant(h, 33, 4097, Q4, 64, 1, 0, 33, 4097);
        check_dequant(h, 33, 4096, Q8, 64, 0, 1, 31, 4099);
    }
    check_dequant(F32, 100, 4096, Q4, 64, 1, 0, 100, 4096);
    check_dequant(F32, 100, 1000, F8, 0, 0, 50, 50, 1003);
    check_dequant(F32, 64, 4096, Q4, 128, 0, 16, 32, 4096);
}

static const char *usage =
    "usage: lg-kernel-check [OPTION]\n"
    "Runs every CUDA kernel against its CPU twin on random data (prints kernel, shape, rel, max abs,\n"
    "rel32, pass/FAIL; exits 1 if any check fails), then timings.\n"
    "  (none)                 every check, then every benchmark\n"
    "  --no-bench             every check, no benchmark\n"
    "  --checks-quant         the quantized GEMV and dequantization checks only\n"
    "  --bench-gemv           the 16-bit GEMV table only\n"
    "  --bench-quant          the quantized GEMV and dequantization table only\n"
    "  --bench-fused          decode's fused quantized products (SwiGLU, RoPE) only\n"
    "  --bench-prefill        the prefill attention table only\n"
    "  --bench-decode-splits  decode attention under several split targets\n"
    "  --help                 this text\n";

int main(int argc, char **argv)
{
    static const char *known[] = {"--no-bench", "--checks-quant", "--bench-gemv", "--bench-quant",
                                  "--bench-fused", "--bench-prefill", "--bench-decode-splits"};
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    int ok = argc == 1;
    for (size_t i = 0; argc == 2 && i < sizeof known / sizeof known[0]; i++)
        ok |= strcmp(argv[1], known[i]) == 0;
    if (!ok) {
        if (argc > 2)
            fprintf(stderr, "lg-kernel-check: one option at most, %d given\n%s", argc - 1, usage);
        else
            fprintf(stderr, "lg-kernel-check: unknown option '%s'\n%s", argv[1], usage);
        return 2;
    }
    int bench = !(argc > 1 && strcmp(argv[1], "--no-bench") == 0);
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        fprintf(stderr, "lg-kernel-check: no CUDA device\n");
        return 2;
    }
    if (argc > 1 && strcmp(argv[1], "--bench-decode-splits") == 0) {
        bench_decode_splits(copy_bandwidth());
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--bench-prefill") == 0) {
        bench_prefill_all();
        return 0;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize / 1e6);
    if (argc > 1 && strcmp(argv[1], "--bench-gemv") == 0) { /* the 16-bit GEMV table alone */
        double copy = copy_bandwidth();
        printf("BENCH device-to-device copy: %.1f GB/s (read + write)\n", copy);
        lg_blas *blas = NULL;
        KK(lg_blas_create(&blas));
        bench_gemv_all(blas, copy);
        lg_blas_destroy(blas);
        return 0;
    }
    if (argc > 1 && (strcmp(argv[1], "--bench-quant") == 0 ||
                     strcmp(argv[1], "--bench-fused") == 0)) { /* the quantized tables alone */
        double copy = copy_bandwidth();
        printf("BENCH device-to-device copy: %.1f GB/s (read + write)\n", copy);
        if (strcmp(argv[1], "--bench-quant") == 0)
            bench_quant_all((size_t)prop.l2CacheSize, copy);
        else
            bench_fused_all((size_t)prop.l2CacheSize, copy);
        return 0;
    }
    printf("%-20s %-52s %9s %9s %9s  %s\n", "kernel", "shape", "rel", "max abs", "rel32", "");
    if (argc > 1 && strcmp(argv[1], "--checks-quant") == 0) {
        check_quant_all();
        printf("checks: %d passed, %d failed\n", n_pass, n_fail);
        return n_fail ? 1 : 0;
    }
    lg_blas *blas = NULL;
    KK(lg_blas_create(&blas));

    const lg_kdtype H[2] = {LG_KDT_F16, LG_KDT_BF16}, F32 = LG_KDT_F32;
    for (int i = 0; i < 2; i++) {
        check_embed(H[i], LG_KDT_F32, 1000, 7, 4096);
        check_embed(H[i], H[i], 32000, 1, 33);
        check_rmsnorm(LG_KDT_F32, H[i], H[i], 1, 4096, 0, H[i]);
        check_rmsnorm(LG_KDT_F32, H[i], H[i], 33, 4096, 0, H[i]);
        check_rmsnorm(H[i], H[i], LG_KDT_F32, 7, 33, 0, H[i]);
        check_rmsnorm(LG_KDT_F32, H[i], H[i], 7, 11008, 1, H[i]);
        check_rmsnorm(H[i], H[i], H[i], 33, 4097, 1, LG_KDT_F32);
        check_add_convert(LG_KDT_F32, H[i], 7, 4096, 0);
        check_add_convert(H[i], LG_KDT_F32, 33, 33, 1);
        check_swiglu(H[i], H[i], 7, 11008, 1);
        check_swiglu(H[i], LG_KDT_F32, 33, 33, 0);
    }
    lg_rope def = {LG_ROPE_DEFAULT, 10000.0, 0, 0, 0, 0, 0, 0, 0};
    lg_rope l3 = {LG_ROPE_LLAMA3, 500000.0, 8.0, 8192, 0, 0, 0, 1.0, 4.0};
    lg_rope yarn = {LG_ROPE_YARN, 10000.0, 4.0, 4096, 0, 32.0, 1.0, 0, 0};
    lg_rope lin = {LG_ROPE_LINEAR, 10000.0, 2.0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 2; i++) {
        check_rope(H[i], 7, 32, 32, 128, &def, "default", 1);
        check_rope(H[i], 1, 32, 8, 128, &def, "default", 1);
        check_rope(H[i], 33, 8, 2, 64, &l3, "llama3", 1);
        check_rope(H[i], 1, 4, 4, 8, &yarn, "yarn", 0);
        check_rope(H[i], 17, 4, 1, 32, &lin, "linear", 1);
        check_rope_kv(H[i], 1, 32, 32, 128, &def, 1);
        check_rope_kv(H[i], 9, 8, 2, 64, &l3, 0);
        check_rope_kv(H[i], 3, 4, 1, 6, &yarn, 1);
    }
    /* float32 throughout, as a float32 checkpoint runs (stories260K's shapes among them) */
    check_embed(F32, F32, 512, 7, 64);
    check_rmsnorm(F32, F32, F32, 7, 64, 0, F32);
    check_rmsnorm(F32, F32, F32, 33, 4097, 1, F32);
    check_swiglu(F32, F32, 7, 172, 1);
    check_rope(F32, 5, 8, 4, 8, &def, "default", 1);
    check_rope_kv(F32, 5, 8, 4, 8, &def, 1);
    check_rope(F32, 7, 8, 4, 8, &def, "default", 1);
    check_rope(F32, 33, 8, 2, 64, &l3, "llama3", 1);
    check_argmax(3, 32000);
    check_argmax(1, 33);

    for (int i = 0; i < 2; i++) {
        check_gemm(blas, H[i], LG_KDT_F32, 7, 4096, 4096, 0.0f);
        check_gemm(blas, H[i], H[i], 33, 11008, 4096, 0.0f);
        check_gemm(blas, H[i], LG_KDT_F32, 256, 4096, 11008, 1.0f);
        check_gemm(blas, H[i], LG_KDT_F32, 1, 33, 4097, 1.0f);
        check_gemv(H[i], LG_KDT_F32, 1, 11008, 4096, 4096, 0.0f);
        check_gemv(H[i], LG_KDT_F32, 1, 4096, 11008, 11008, 1.0f);
        check_gemv(H[i], H[i], 3, 33, 4096, 4096, 0.0f);
        check_gemv(H[i], LG_KDT_F32, 5, 7, 4096, 4096, 1.0f);
        check_gemv(H[i], LG_KDT_F32, 1, 1, 8, 8, 0.0f);
        check_gemv(H[i], LG_KDT_F32, 2, 33, 4097, 4097, 0.0f);
        check_gemv(H[i], LG_KDT_F32, 1, 7, 4097, 4104, 1.0f);
        check_gemv(H[i], H[i], 1, 32000, 4096, 4096, 0.0f);
    }
    /* float32: cuBLAS without TF32; the GEMV's 4-float loads (K % 4 == 0: 172, 4100, 4) and its
     * scalar path (K 4097, 4098, or ldw 4098 not a multiple of 4) */
    check_gemm(blas, F32, F32, 7, 4096, 4096, 0.0f);
    check_gemm(blas, F32, F32, 33, 512, 64, 0.0f);
    check_gemm(blas, F32, F32, 256, 4096, 11008, 1.0f);
    check_gemm(blas, F32, F32, 1, 33, 4097, 1.0f);
    check_gemv(F32, F32, 1, 11008, 4096, 4096, 0.0f);
    check_gemv(F32, F32, 1, 4096, 11008, 11008, 1.0f);
    check_gemv(F32, F32, 1, 64, 4096, 4096, 0.0f);
    check_gemv(F32, F32, 5, 7, 4096, 4096, 1.0f);
    check_gemv(F32, F32, 4, 344, 64, 64, 0.0f);
    check_gemv(F32, F32, 1, 64, 172, 172, 1.0f);
    check_gemv(F32, F32, 1, 1, 4, 4, 0.0f);
    check_gemv(F32, F32, 3, 9, 4096, 4100, 0.0f);
    check_gemv(F32, F32, 2, 33, 4097, 4097, 0.0f);
    check_gemv(F32, F32, 1, 7, 4098, 4098, 1.0f);
    check_gemv(F32, F32, 1, 5, 4096, 4098, 0.0f);
    check_gemv(F32, F32, 1, 32000, 4096, 4096, 0.0f);
    /* a few loads, an odd number of 16-byte pieces, a 7B q4 product's bytes, and more than one
     * pass of the grid (about 35 MB on an H100) */
    check_read_sum(16);
    check_read_sum(16 * 1001);
    check_read_sum((size_t)11008 * 2048 + (size_t)11008 * 64 * 4 + 4096 * 2);
    check_read_sum((size_t)80 << 20);

    check_quant_all();

    lg_kmask full = {LG_KMASK_FULL, 0, 0, 0, 0, 0};
    lg_kmask sw = {LG_KMASK_SINK_WINDOW, 4, 100, 0, 0, 0};
    lg_kmask bs = {LG_KMASK_BLOCK_STRIDED, 0, 0, 16, 2, 3};
    lg_kmask sw_big = {LG_KMASK_SINK_WINDOW, 64, 300, 0, 0, 0};
    lg_kmask bs_big = {LG_KMASK_BLOCK_STRIDED, 0, 0, 64, 2, 4};
    const lg_kmask *masks[3] = {&full, &sw, &bs};
    for (int i = 0; i < 2; i++) {
        lg_kdtype dt = H[i];
        /* the tensor-core kernels (mma.sync: hd 32/64/128; wgmma: hd 128 on Hopper) and the row
         * kernel on the same cases */
        const lg_kprefill_kernel kernels[3] = {LG_KPREFILL_MMA, LG_KPREFILL_WGMMA, LG_KPREFILL_ROWS};
        for (int kn = 0; kn < 3; kn++) {
            lg_kprefill_kernel kern = kernels[kn];
            for (int m = 0; m < 3; m++) {
                check_prefill(dt, 1, 1, 4, 4, 128, masks[m], kern);
                check_prefill(dt, 17, 17, 8, 4, 64, masks[m], kern);
                check_prefill(dt, 256, 256, 8, 2, 128, masks[m], kern);
                check_prefill(dt, 1000, 1000, 4, 1, 32, masks[m], kern);
                check_prefill(dt, 1000, 77, 8, 2, 128, masks[m], kern);
                check_prefill(dt, 1537, 1537, 4, 2, 128, masks[m], kern);
            }
            check_prefill(dt, 3000, 129, 8, 8, 128, &sw_big, kern);
            check_prefill(dt, 1000, 1000, 4, 4, 64, &sw_big, kern);
            check_prefill(dt, 1000, 1000, 4, 2, 128, &bs_big, kern);
        }
        /* more work items (query tiles x heads) than an H100 has SMs: each persistent block of the
         * wgmma kernel takes two or three, its buffers carrying over from one to the next */
        check_prefill(dt, 3000, 3000, 8, 2, 128, &full, LG_KPREFILL_WGMMA);
        check_prefill(dt, 3000, 3000, 12, 4, 128, &sw_big, LG_KPREFILL_WGMMA);
        /* bfloat16 V past float16's range in one tile of several (that tile split, the others
         * float16), and under it everywhere (every tile split) */
        for (int kn = 0; kn < 2 && dt == LG_KDT_BF16; kn++) {
            lg_kprefill_kernel kern = kn ? LG_KPREFILL_WGMMA : LG_KPREFILL_MMA;
            check_prefill_v(dt, 1000, 1000, 4, 2, 128, &full, kern, V_HUGE_TILE, 1);
            check_prefill_v(dt, 1000, 1000, 4, 2, 128, &sw_big, kern, V_HUGE_TILE, 1);
            check_prefill_v(dt, 1000, 1000, 4, 2, 128, &full, kern, V_TINY, 1);
            check_prefill_v(dt, 3000, 129, 8, 8, 128, &full, kern, V_TINY, 1);
        }
        /* bfloat16 on the wgmma kernel without a workspace: P split for every tile */
        if (dt == LG_KDT_BF16) {
            check_prefill_v(dt, 256, 256, 8, 2, 128, &full, LG_KPREFILL_WGMMA, V_PLAIN, 0);
            check_prefill_v(dt, 1000, 77, 8, 2, 128, &sw, LG_KPREFILL_WGMMA, V_PLAIN, 0);
            check_prefill_v(dt, 1000, 1000, 4, 2, 128, &full, LG_KPREFILL_WGMMA, V_HUGE_TILE, 0);
            check_prefill_v(dt, 3000, 3000, 8, 2, 128, &full, LG_KPREFILL_WGMMA, V_PLAIN, 0);
        }
        /* head sizes only the row kernel takes */
        for (int m = 0; m < 3; m++) {
            check_prefill(dt, 17, 17, 4, 2, 8, masks[m], LG_KPREFILL_AUTO);
            check_prefill(dt, 300, 300, 4, 4, 8, masks[m], LG_KPREFILL_AUTO);
            check_prefill(dt, 100, 100, 2, 1, 96, masks[m], LG_KPREFILL_AUTO);
            check_prefill(dt, 50, 50, 2, 2, 6, masks[m], LG_KPREFILL_AUTO);
        }
        for (int m = 0; m < 3; m++) {
            check_cache(dt, 0, 1, 4, 4, 128, masks[m], 0, 0);
            check_cache(dt, 16, 1, 8, 2, 64, masks[m], 3, 0);
            check_cache(dt, 999, 1, 8, 4, 128, masks[m], 20, 1);
            check_cache(dt, 4999, 1, 4, 1, 128, masks[m], 5, 0);
            check_cache(dt, 4999, 3, 4, 2, 64, masks[m], 0, 1);
            check_cache(dt, 300, 2, 4, 4, 32, masks[m], 7, 0);
            check_cache(dt, 300, 1, 4, 2, 8, masks[m], 7, 1);
            /* caches of at most 512 slots: one whole-cache block a query and head, no split */
            check_cache(dt, 200, 1, 8, 4, 128, masks[m], 20, 1);
            check_cache(dt, 250, 2, 4, 2, 64, masks[m], 5, 0);
            check_cache(dt, 131, 1, 4, 1, 96, masks[m], 0, 1);
            check_cache(dt, 100, 1, 4, 2, 8, masks[m], 7, 1);
            check_cache(dt, 440, 1, 8, 2, 128, masks[m], 34, 1); /* 512 slots: 4 steps */
            check_cache(dt, 511, 1, 4, 4, 128, masks[m], 1, 0);  /* 513 slots: split again */
        }
        check_cache(dt, 20000, 1, 8, 8, 128, &sw_big, 0, 0);
        /* two heads: 157 splits, more than the merge weighs in one round (MERGE_CHUNK, 128) */
        check_cache(dt, 20000, 1, 2, 1, 64, &full, 11, 1);
        check_kv_write(dt, 7, 1024, 33, 2);
        check_kv_write(dt, 5, 1024, 9, 8);
        check_kv_write(dt, 3, 40, 5, 0);
        check_kv_write(dt, 1, 8, 1, 2);
    }
    /* float32: lg_k_attn_prefill takes the row kernel for every head size, 32/64/128 included,
     * which 16-bit types take to the tensor cores: 16-byte loads of 4 floats where head_dim % 4 ==
     * 0, head_dim <= 128 and rows are 16-byte aligned, else 8-byte loads of 2 (head_dim 6, 100 and
     * 250 with ld % 4 == 2; 256); head_dim 8 with 8/4 heads is stories260K's */
    for (int m = 0; m < 3; m++) {
        check_prefill(F32, 1, 1, 4, 4, 128, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 17, 17, 8, 4, 64, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 256, 256, 8, 2, 128, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 1000, 77, 8, 2, 32, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 200, 200, 8, 4, 8, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 100, 100, 2, 1, 96, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 50, 50, 2, 2, 6, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 100, 100, 2, 1, 100, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 40, 40, 2, 1, 250, masks[m], LG_KPREFILL_AUTO);
        check_prefill(F32, 64, 64, 2, 2, 256, masks[m], LG_KPREFILL_AUTO);
    }
    check_prefill(F32, 1000, 1000, 4, 4, 64, &sw_big, LG_KPREFILL_AUTO);
    check_prefill(F32, 1000, 1000, 4, 2, 128, &bs_big, LG_KPREFILL_AUTO);
    /* the cache: one split and several (merged by the last split to finish), n_live, GQA, and head_dim 6 (8-byte
     * loads: its rows are 8- but not 16-byte multiples) */
    for (int m = 0; m < 3; m++) {
        check_cache(F32, 0, 1, 4, 4, 128, masks[m], 0, 0);
        check_cache(F32, 16, 1, 8, 2, 64, masks[m], 3, 0);
        check_cache(F32, 999, 1, 8, 4, 128, masks[m], 20, 1);
        check_cache(F32, 4999, 1, 4, 1, 128, masks[m], 5, 0);
        check_cache(F32, 4999, 3, 4, 2, 64, masks[m], 0, 1);
        check_cache(F32, 300, 2, 4, 4, 32, masks[m], 7, 0);
        check_cache(F32, 300, 1, 8, 4, 8, masks[m], 7, 1);
        check_cache(F32, 300, 1, 4, 2, 6, masks[m], 7, 1);
        check_cache(F32, 200, 1, 8, 4, 128, masks[m], 20, 1);
        check_cache(F32, 440, 1, 8, 2, 128, masks[m], 34, 1);
        check_cache(F32, 131, 1, 4, 1, 96, masks[m], 0, 1);
        check_cache(F32, 100, 1, 4, 2, 6, masks[m], 7, 1);
    }
    check_cache(F32, 20000, 1, 8, 8, 128, &sw_big, 0, 0);
    check_slot_bound();
    /* kv_write: the 16-byte copy (pad 0 or 8 with kv_dim % 4 == 0) and the 4-byte one */
    check_kv_write(F32, 7, 1024, 33, 2);
    check_kv_write(F32, 5, 1024, 9, 8);
    check_kv_write(F32, 3, 40, 5, 0);
    check_kv_write(F32, 1, 8, 1, 2);
    check_kv_write(F32, 2, 33, 3, 0);
    /* kv_fill: a sink_window ring (some slots left empty when n is short) and block_strided ring +
     * kept blocks; odd kv_dim only in float32 (16-bit rows are copied as pairs) */
    lg_kmask sw_fill = {LG_KMASK_SINK_WINDOW, 4, 10, 0, 0, 0};
    lg_kmask bs_fill = {LG_KMASK_BLOCK_STRIDED, 0, 0, 16, 2, 3};
    const lg_kdtype FILL[3] = {LG_KDT_F16, LG_KDT_BF16, LG_KDT_F32};
    for (int i = 0; i < 3; i++) {
        check_kv_fill(FILL[i], &sw_fill, 17, 0, 100, 40, 2);
        check_kv_fill(FILL[i], &sw_fill, 17, 0, 12, 8, 0);
        check_kv_fill(FILL[i], &bs_fill, 39, 48, 100, 40, 4);
    }
    check_kv_fill(F32, &sw_fill, 17, 0, 100, 33, 1);
    check_kv_fill(F32, &bs_fill, 39, 48, 150, 33, 3);
    check_rejects(blas);
    printf("checks: %d passed, %d failed\n", n_pass, n_fail);

    if (bench) {
        double copy = copy_bandwidth();
        printf("BENCH device-to-device copy: %.1f GB/s (read + write)\n", copy);
        bench_gemv_all(blas, copy);
        bench_quant_all((size_t)prop.l2CacheSize, copy);
        lg_kmask sw_llm = {LG_KMASK_SINK_WINDOW, 64, 4096, 0, 0, 0};
        bench_prefill_all();
        /* Llama-2-7B's attention layer at 192 slots (one whole-cache block a head), 4K, 32K and
         * 128K, and its sink_window twin */
        bench_decode(LG_KDT_F16, 192, 32, 32, 128, &full, 191, copy);
        bench_decode(LG_KDT_F16, 4096, 32, 32, 128, &full, 4095, copy);
        bench_decode(LG_KDT_F16, 32768, 32, 32, 128, &full, 32767, copy);
        bench_decode(LG_KDT_F16, 131072, 32, 32, 128, &full, 131071, copy);
        bench_decode(LG_KDT_F16, 64 + 4096, 32, 32, 128, &sw_llm, 131071, copy);
    }
    lg_blas_destroy(blas);
    printf("checks: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
