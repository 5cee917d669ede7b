/* Quantized GEMV for decode and dequantization for prefill (gemv_quant.h).
 *
 * GEMV on the tensor cores. A q4 weight is half a byte, so at the memory's pace an SM must turn
 * 20-40 weights per clock into products: with one float32 FMA per weight and row of x, plus the
 * decode of each code to a float, a lane-per-column kernel like gemv.cu runs out of instruction
 * issue before it runs out of bandwidth (and more so for 2-4 rows of x). Here the codes are
 * decoded to exact small integers (q8, q4) or e4m3 values (fp8) in float16 / bfloat16 pairs, a few
 * integer instructions per pair, and mma.sync m16n8k16 multiplies 16 rows of W by up to 8 rows of
 * x with float32 accumulation; the scale (and q4's min) is applied to each group's partial sum:
 *   sum_k (min + s c_k) x_k = s * sum_k c_k x_k + min * sum_k x_k
 * where the second sum comes from the same mma with a matrix of ones. Every product is exact, so
 * the sums differ from the CPU twin only in the order of float32 additions; except that q4 with
 * mins feeds OFF + c_k (the magic-exponent value, OFF = 1024 in float16, 128 in bfloat16) and
 * uses min - OFF s for the second sum, which saves a subtraction per pair of codes and costs the
 * float32 sum of a group about log2(OFF / 8) bits (the checks' worst rel with float32 outputs
 * went from 1.5e-6 to 1.2e-5, against a bound of 2e-3).
 *
 * A block owns 16 rows of W (for q8 and fp8, one such tile after another: persistent blocks, see
 * qgemv_mma_kernel) and its warps split the columns. Per step a warp reads a window of 4
 * chunks of each of its 16 rows: lane (g, q) loads chunk q of rows g and g + 8 (one 16, 8 or
 * 4-byte load each, L1::no_allocate: streamed once) and the matching columns of x for row g of x
 * (read through L1, where every block finds it). With the codes as stored, a warp's load is 8
 * pieces of 32 or 64 bytes, one a row; tiled (lg_k_qmat_tile, gemv_quant.h), it is 256 or 512
 * contiguous bytes, which the memory serves faster (on an H100, q4 g64 at 55-66% of copy instead of
 * 48-58%, q8 at 77-90% instead of 74-81%: docs/BENCHMARKS.md). The mma sums over the four
 * lanes q of a row, so the window must lie inside one group: the load width is the widest whose
 * window divides the group. Codes are loaded a round of several steps at a time, two rounds in
 * flight: the next round's loads go out before this round's products, and x is read from L1 at
 * its step (holding it for a round would take the registers the second round needs). Per group
 * the four partial sums of a lane are scaled into float32 totals; the warps' totals meet in shared
 * memory.
 *
 * The k order inside an mma is free as long as A and B agree: lane (g, q) gives, for mma m of a
 * chunk, columns 4m, 4m+1 (first register pair) and 4m+2, 4m+3 (second) of its chunk, both in A
 * (rows g, g + 8) and in B (x's row g), so the natural order of codes and of x is kept and x needs
 * no shuffling.
 *
 * Products of one row of x (decode's) on tiled q4 codes, and on tiled q8 and fp8 codes with a scale
 * per row, take a kernel of their own, qrow_kernel: the same walk with x (and q4's scales) staged in
 * shared memory and fewer instructions a step; it also fuses SwiGLU and RoPE into decode's
 * products.
 *
 * The scalar kernel (any shape, any alignment) and the dequantization decode each element as
 * lg_quant_dequant_rows does, in float32, from either layout (code_offset). CPU twins:
 * lg_qmat_matmul (runtime/matmul_quant_cpu.c) and lg_quant_dequant_rows (formats/quant_format.c),
 * in kernels/check/check_kernels.c. */
#include <stdint.h>
#include <type_traits>

#include "gemv_quant.h"
#include "kernel_common.cuh"

#define QG_ROWS 16      /* rows of W per block: M of the mma */
#define QG_TOKENS 8     /* rows of x per pass: N of the mma */
#define QG_MAX_WARPS 16
#define QG_SCALAR_WARPS 4

/* warps per block of the tensor-core kernel; 0 = scalar path only, -1 = chosen per call
 * (qg_warps_for; set_variant) */
static int qg_warps = -1;
/* blocks an SM must hold (__launch_bounds__'s second argument, which caps the registers): 1 (no
 * cap), 3 (of 8 warps) or 6 (of 4); 0 = chosen per call (qgemv_mma) */
static int qg_min_blocks = 0;

/* Kernel-side methods: q4 with mins adds a term, so it gets its own instantiation; q4 codes in the
 * tiled layout (QM_PAIRED) keep a word's nibbles in another order (q4_tiled_nibble). */
enum { QM_Q8, QM_Q4, QM_Q4_MINS, QM_FP8, QM_PAIRED = 8 };

static constexpr __host__ __device__ int qm_base(int m)
{
    return m & (QM_PAIRED - 1);
}

static constexpr __host__ __device__ bool qm_q4(int m)
{
    return qm_base(m) == QM_Q4 || qm_base(m) == QM_Q4_MINS;
}

/* Tiled q4 codes keep the two columns 2p, 2p + 1 (p < 4) of each 4-byte word 16 bits apart, in
 * nibbles b and b + 4 with b = 0, 2, 1, 3 for p = 0..3, where the checkpoint has column k in nibble
 * k: a pair then decodes with a shift (tiled_shift) and one lop3 (qcodec) instead of a byte permute
 * and one lop3, and the one-row kernel masks pairs 0 and 2 out of w, 1 and 3 out of w >> 8
 * (q4row_codec). The nibble of the word's column k: */
__host__ __device__ __forceinline__ int q4_tiled_nibble(int k)
{
    const int p = k >> 1;
    return (((p & 1) << 1) | (p >> 1)) + 4 * (k & 1);
}

struct qparams {
    const uint8_t *codes;
    const void *scales, *mins;
    size_t row_bytes;
    int method; /* lg_kquant */
    int group;  /* columns per group: cols when per row */
    int n_groups;
    int rows, cols;
    int tiled;
};

/* ---------------------------------------------------------------- host helpers */

static bool is_q4(const lg_kqmat *w)
{
    return w->method == LG_KQ_Q4;
}

static const char *method_name(const lg_kqmat *w)
{
    return w->method == LG_KQ_Q8 ? "q8" : w->method == LG_KQ_Q4 ? "q4" : "fp8";
}

extern "C" size_t lg_kqmat_row_bytes(const lg_kqmat *w)
{
    return is_q4(w) ? (size_t)(w->cols + 1) / 2 : (size_t)w->cols;
}

extern "C" int lg_kqmat_n_groups(const lg_kqmat *w)
{
    return w->group ? (w->cols + w->group - 1) / w->group : 1;
}

extern "C" size_t lg_kqmat_bytes(const lg_kqmat *w)
{
    size_t side = (size_t)w->rows * lg_kqmat_n_groups(w);
    size_t scale_bytes = side * (w->method == LG_KQ_FP8 ? 4 : 2);
    return (size_t)w->rows * lg_kqmat_row_bytes(w) + scale_bytes + (w->mins ? side * 2 : 0);
}

/* The same checks as formats' lg_quant_scheme_check, plus the pointers. */
static int check_qmat(const lg_kqmat *w, const char *who)
{
    if (!w)
        return lg_k_fail("%s: no matrix", who);
    if (w->method != LG_KQ_Q8 && w->method != LG_KQ_Q4 && w->method != LG_KQ_FP8)
        return lg_k_fail("%s: unknown quantization method %d", who, (int)w->method);
    if (w->group < 0 || w->group % 2 != 0 || w->group > 65536)
        return lg_k_fail("%s: group %d: expected 0 (per row) or an even number up to 65536", who,
                         w->group);
    if (is_q4(w) && w->group == 0)
        return lg_k_fail("%s: q4 needs a group", who);
    if (w->mins && !is_q4(w))
        return lg_k_fail("%s: mins are only defined for q4", who);
    if (w->rows <= 0 || w->cols <= 0)
        return lg_k_fail("%s: bad matrix sizes rows=%d cols=%d", who, w->rows, w->cols);
    if (!w->codes || !w->scales)
        return lg_k_fail("%s: codes and scales are required", who);
    return 0;
}

static qparams params_of(const lg_kqmat *w)
{
    qparams p;
    p.codes = (const uint8_t *)w->codes;
    p.scales = w->scales;
    p.mins = w->mins;
    p.row_bytes = lg_kqmat_row_bytes(w);
    p.method = (int)w->method;
    p.group = w->group ? w->group : w->cols;
    p.n_groups = lg_kqmat_n_groups(w);
    p.rows = w->rows;
    p.cols = w->cols;
    p.tiled = w->tiled;
    return p;
}

/* ---------------------------------------------------------------- element decoding (float32) */

/* e4m3fn, as lg_e4m3_to_f32: for exponent e >= 1 the code shifted into place with the bias moved
 * from 7 to 127; e = 0 is m 2^-9. */
__device__ __forceinline__ float e4m3_to_f32(unsigned c)
{
    unsigned mag = c & 0x7fu;
    float v;
    if (mag == 0x7fu)
        v = __int_as_float(0x7fc00000);
    else if (mag < 8u)
        v = (float)mag * (1.0f / 512.0f);
    else
        v = __uint_as_float((mag << 20) + (120u << 23));
    return (c & 0x80u) ? -v : v;
}

__device__ __forceinline__ float scale_at(const qparams &p, size_t gi)
{
    if (p.method == LG_KQ_FP8)
        return __ldg((const float *)p.scales + gi);
    return __half2float(__ldg((const __half *)p.scales + gi));
}

/* q4's min: the stored one, or -8 scale (symmetric codes). */
__device__ __forceinline__ float min_at(const qparams &p, size_t gi, float scale)
{
    return p.mins ? __half2float(__ldg((const __half *)p.mins + gi)) : -8.0f * scale;
}

/* Columns of a chunk of codes in the tile-major layout (gemv_quant.h): tiled bytes of codes. */
__host__ __device__ __forceinline__ int tile_chunk_cols(int method, int tiled)
{
    return method == LG_KQ_Q4 ? 2 * tiled : tiled;
}

/* The byte of codes holding W[r][c] (both nibbles of it for q4), in either layout. */
__device__ __forceinline__ size_t code_offset(const qparams &p, int r, int c)
{
    const int q4 = p.method == LG_KQ_Q4;
    if (!p.tiled)
        return (size_t)r * p.row_bytes + (q4 ? c / 2 : c);
    const int kc = tile_chunk_cols(p.method, p.tiled), win = 4 * kc, windows = p.cols / win;
    const int rr = r % QG_ROWS, within = c % kc;
    const size_t unit = ((size_t)(r / QG_ROWS) * windows + c / win) * 2 + rr / 8;
    return unit * 32 * p.tiled + (size_t)(4 * (rr % 8) + (c % win) / kc) * p.tiled +
           (q4 ? within / 2 : within);
}

/* deq(W)[r][c], the float32 value lg_quant_dequant_rows gives (scale * nibble is exact, so an
 * FMA there rounds like the CPU's multiply then add). */
__device__ float q_decode(const qparams &p, int r, int c)
{
    size_t gi = (size_t)r * p.n_groups + c / p.group;
    float s = scale_at(p, gi);
    const uint8_t *code = p.codes + code_offset(p, r, c);
    if (p.method == LG_KQ_Q8)
        return s * (float)(int8_t)__ldg(code);
    if (p.method == LG_KQ_FP8)
        return s * e4m3_to_f32(__ldg(code));
    int nibble;
    if (p.tiled) { /* in the word of columns c & ~7 */
        const uint8_t *word = p.codes + code_offset(p, r, c & ~7);
        nibble = (int)(__ldg(reinterpret_cast<const uint32_t *>(word)) >>
                       (4 * q4_tiled_nibble(c & 7))) & 15;
    } else {
        nibble = (__ldg(code) >> (4 * (c & 1))) & 15;
    }
    return min_at(p, gi, s) + s * (float)nibble;
}

/* ---------------------------------------------------------------- codes to mma operands */

template <typename T> struct qtype;
/* 0x6400 is 1024 in float16, whose mantissa step is 1 there: 0x64XX = 1024 + XX (XX < 1024) */
template <> struct qtype<__half> {
    static constexpr uint32_t ONES = 0x3c003c00u;
    static constexpr uint32_t NIB = 0x64006400u;
    static constexpr float OFF = 1024.0f; /* NIB's value */
};
/* 0x4300 is 128 in bfloat16, mantissa step 1: 0x43XX = 128 + XX (XX < 128) */
template <> struct qtype<__nv_bfloat16> {
    static constexpr uint32_t ONES = 0x3f803f80u;
    static constexpr uint32_t NIB = 0x43004300u;
    static constexpr float OFF = 128.0f;
};

/* (a & m) | c in one instruction (the compiler splits two constants into two) */
__device__ __forceinline__ uint32_t mask_or(uint32_t a, uint32_t m, uint32_t c)
{
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(m), "r"(c));
    return d;
}

/* a - b on a pair of T given as bits (exact for the small integers it is used on) */
template <typename T> __device__ __forceinline__ uint32_t sub_pair(uint32_t a, uint32_t b)
{
    typedef typename lg_elem<T>::pair P;
    P r = __hsub2(*reinterpret_cast<P *>(&a), *reinterpret_cast<P *>(&b));
    return *reinterpret_cast<uint32_t *>(&r);
}

template <typename T> __device__ __forceinline__ uint32_t pack_pair(float lo, float hi)
{
    typename lg_elem<T>::pair v = lg_elem<T>::f2_to_pair(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* Two e4m3fn codes (low 16 bits) to a float16 pair, exactly. Before sm_89 (no conversion
 * instruction): the code's bits shifted into a float16 (exponent bias 15 instead of 7, subnormals
 * included) times 2^8; NaN codes, which no checkpoint holds, decode to 480 there. */
__device__ __forceinline__ uint32_t e4m3x2_to_half2(uint32_t two)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t r;
    unsigned short s = (unsigned short)two;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(s));
    return r;
#else
    uint32_t v = __byte_perm(two, 0u, 0x4140); /* bytes [c0, 0, c1, 0] */
    uint32_t h = ((v & 0x007f007fu) << 7) | ((v & 0x00800080u) << 8);
    __half2 r = __hmul2(*reinterpret_cast<__half2 *>(&h), __half2half2(__ushort_as_half(0x5c00)));
    return *reinterpret_cast<uint32_t *>(&r);
#endif
}

/* One 32-bit word of codes to operand pairs in column order: q8 and fp8 4 codes -> 2 pairs, q4 8
 * codes -> 4 pairs. The values: q8 q itself, q4 nibble - 8 without mins and OFF + nibble with
 * them, fp8 e4m3(q). */
template <typename T, int M> struct qcodec {
    static constexpr int PAIRS = qm_q4(M) ? 4 : 2;

    static __device__ __forceinline__ void decode(uint32_t w, uint32_t *pr)
    {
        if constexpr (M == QM_Q8) {
            uint32_t u = w ^ 0x80808080u; /* q + 128, 0..255 */
            if constexpr (std::is_same<T, __half>::value) {
                pr[0] = sub_pair<T>(__byte_perm(u, 0x64646464u, 0x4140), 0x64806480u); /* - 1152 */
                pr[1] = sub_pair<T>(__byte_perm(u, 0x64646464u, 0x4342), 0x64806480u);
            } else {
                /* a byte does not fit bfloat16's mantissa: 2^23 + q + 128 in float32 */
                float f[4];
#pragma unroll
                for (int j = 0; j < 4; j++)
                    f[j] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7540 + j)) - 8388736.0f;
                pr[0] = pack_pair<T>(f[0], f[1]);
                pr[1] = pack_pair<T>(f[2], f[3]);
            }
        } else if constexpr (M == QM_FP8) {
            uint32_t h[2] = {e4m3x2_to_half2(w & 0xffffu), e4m3x2_to_half2(w >> 16)};
#pragma unroll
            for (int j = 0; j < 2; j++) {
                if constexpr (std::is_same<T, __half>::value) {
                    pr[j] = h[j];
                } else {
                    float2 f = __half22float2(*reinterpret_cast<__half2 *>(&h[j]));
                    pr[j] = pack_pair<T>(f.x, f.y);
                }
            }
        } else {
            /* as stored, byte j holds columns 2j (low nibble) and 2j + 1 (high): w's byte j and
             * (w >> 4)'s byte j; tiled, nibbles b and b + 4 (q4_tiled_nibble): w >> 4b. Each pair
             * is masked to 4 bits under the magic exponent in one lop3; without mins it is then the
             * signed code nibble - 8, with mins it stays OFF + nibble (the caller takes OFF back
             * with the min, which saves the subtraction) */
            const uint32_t w4 = w >> 4;
            const uint32_t sel[4] = {0x4400, 0x5511, 0x6622, 0x7733};
            const int tiled_shift[4] = {0, 8, 4, 12}; /* 4b for pair j */
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const uint32_t two =
                    (M & QM_PAIRED) ? w >> tiled_shift[j] : __byte_perm(w, w4, sel[j]);
                uint32_t v = mask_or(two, 0x000f000fu, qtype<T>::NIB);
                pr[j] = qm_base(M) == QM_Q4 ? sub_pair<T>(v, qtype<T>::NIB | 0x00080008u) : v;
            }
        }
    }
};


/* ---------------------------------------------------------------- GEMV, tensor cores */

/* Geometry of the tensor-core kernel for method M and CB bytes of codes per lane and row; R words
 * of codes a lane and row in a round (8, or 4 where registers are capped for more blocks an SM). */
template <typename T, int M, int CB, int R = 8> struct qgeom {
    static constexpr int PAIRS = qcodec<T, M>::PAIRS;
    static constexpr int KC = PAIRS * CB / 2; /* columns per chunk */
    static constexpr int WIN = 4 * KC;        /* columns per step: the quad's four chunks */
    static constexpr int WORDS = CB / 4;      /* code words per chunk */
    static constexpr int XW = KC / 2;         /* words of x per chunk */
    /* steps a round: R words of codes a lane and row, 2 rounds in registers (R = 8: 32 registers,
     * 64 bytes a round a lane); x is read from L1 at its step, not held */
    static constexpr int U0 = R / WORDS > 0 ? R / WORDS : 1;
    static constexpr int U = U0 > 4 ? 4 : U0;
    /* raw scale bits, converted where used: no instruction waits early on the load */
    typedef typename std::conditional<M == QM_FP8, float, unsigned short>::type raw;
};


template <int CB> __device__ __forceinline__ void ld_codes(const uint8_t *p, uint32_t *w)
{
    if constexpr (CB == 16) {
        uint4 v = lg_ld_stream16(p);
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if constexpr (CB == 8) {
        asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];"
            : "=r"(w[0]), "=r"(w[1])
            : "l"(p));
    } else {
        asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(w[0]) : "l"(p));
    }
}

template <int XW> __device__ __forceinline__ void ld_x(const void *p, uint32_t *w)
{
    if constexpr (XW % 4 == 0) {
#pragma unroll
        for (int i = 0; i < XW / 4; i++) {
            uint4 v = __ldg(reinterpret_cast<const uint4 *>(p) + i);
            w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
        }
    } else {
        static_assert(XW == 2, "x chunk of 2 or 4k words");
        uint2 v = __ldg(reinterpret_cast<const uint2 *>(p));
        w[0] = v.x, w[1] = v.y;
    }
}

template <typename R> __device__ __forceinline__ R ld_raw(const void *base, uint32_t i)
{
    return __ldg(reinterpret_cast<const R *>(base) + i);
}

__device__ __forceinline__ float raw_to_f32(unsigned short h)
{
    return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ float raw_to_f32(float f)
{
    return f;
}

/* One step of a lane: its chunk of rows g and g + 8 times its chunk of x. */
template <typename T, int M, int CB>
__device__ __forceinline__ void qstep(const uint32_t *ka, const uint32_t *kb, const uint32_t *xv,
                                      float *acc, float *ones)
{
    typedef qcodec<T, M> D;
#pragma unroll
    for (int i = 0; i < CB / 4; i++) {
        uint32_t pa[D::PAIRS], pb[D::PAIRS];
        D::decode(ka[i], pa);
        D::decode(kb[i], pb);
#pragma unroll
        for (int j = 0; j < D::PAIRS / 2; j++) {
            const int m = i * (D::PAIRS / 2) + j;
            const uint32_t a[4] = {pa[2 * j], pb[2 * j], pa[2 * j + 1], pb[2 * j + 1]};
            lg_mma16816<T>(acc, a, xv[2 * m], xv[2 * m + 1]);
            if constexpr (qm_base(M) == QM_Q4_MINS) {
                const uint32_t o[4] = {qtype<T>::ONES, qtype<T>::ONES, qtype<T>::ONES,
                                       qtype<T>::ONES};
                lg_mma16816<T>(ones, o, xv[2 * m], xv[2 * m + 1]);
            }
        }
    }
}

/* The codes (and, at a group's last step, the scales) of one round of U steps of a lane. */
template <typename T, int M, int CB, int R> struct qround {
    typedef qgeom<T, M, CB, R> G;
    uint32_t ka[G::U][G::WORDS], kb[G::U][G::WORDS];
    typename G::raw sa[G::U], sb[G::U], ma[G::U], mb[G::U];
    bool fin[G::U];
};

/* A lane's walk over its steps [s_begin, s_end) of rows ra (codes ca) and rb (cb). G1: a group is
 * one window (q4 groups of 32, 64, 128 at 4-, 8-, 16-byte loads), so every step ends one: step s's
 * group is s, with no counting and no branch around the scaling (qgemv_mma says where it is used). */
template <typename T, int M, int CB, int R, bool G1> struct qwalk {
    typedef qgeom<T, M, CB, R> G;
    typedef typename G::raw raw;
    /* 32-bit offsets from the matrix's base (a uniform register), so that the walk's state fits the
     * capped variant's registers without rebuilding 64-bit addresses (lg_k_gemv_quant_load_bytes
     * keeps matrices of 4 GiB of codes or more off this kernel): row a's chunk (bytes) and group
     * index, how far row b is from them, and the bytes from one step's chunk to the next (4 chunks
     * as stored, a whole tile unit of 64 chunks when tiled) */
    uint32_t ca, cdb, ia, idb, cstride;
    const T *xp;
    int s_end, spg;
    int grp, left; /* the group of the next step to load, and the steps left in it */
    float acc[4], ones[4], sums[4];

    /* issues the loads of steps [s0, s0 + U) (those before s_end) into r */
    __device__ __forceinline__ void load(const qparams &p, qround<T, M, CB, R> &r, int s0)
    {
#pragma unroll
        for (int u = 0; u < G::U; u++) {
            const int s = s0 + u;
            r.fin[u] = false;
            if (s < s_end) {
                const uint32_t o = ca + (uint32_t)s * cstride;
                ld_codes<CB>(p.codes + o, r.ka[u]);
                ld_codes<CB>(p.codes + (o + cdb), r.kb[u]);
                /* a group's partial sums are scaled after its last step (or the warp's last) */
                bool end = G1 || --left == 0;
                r.fin[u] = end || s + 1 == s_end;
                const uint32_t gi = ia + (uint32_t)(G1 ? s : grp);
                if (G1 || r.fin[u]) {
                    r.sa[u] = ld_raw<raw>(p.scales, gi);
                    r.sb[u] = ld_raw<raw>(p.scales, gi + idb);
                    if constexpr (qm_base(M) == QM_Q4_MINS) {
                        r.ma[u] = ld_raw<raw>(p.mins, gi);
                        r.mb[u] = ld_raw<raw>(p.mins, gi + idb);
                    }
                }
                if (!G1 && end) {
                    grp++;
                    left = spg;
                }
            }
        }
    }

    /* the products of the steps loaded into r */
    __device__ __forceinline__ void compute(const qround<T, M, CB, R> &r, int s0)
    {
#pragma unroll
        for (int u = 0; u < G::U; u++) {
            if (s0 + u >= s_end)
                break;
            uint32_t xv[G::XW];
            ld_x<G::XW>(xp + (size_t)(s0 + u) * G::WIN, xv);
            qstep<T, M, CB>(r.ka[u], r.kb[u], xv, acc, ones);
            if (!G1 && !r.fin[u])
                continue;
            float fa = raw_to_f32(r.sa[u]), fb = raw_to_f32(r.sb[u]);
            sums[0] = fmaf(fa, acc[0], sums[0]);
            sums[1] = fmaf(fa, acc[1], sums[1]);
            sums[2] = fmaf(fb, acc[2], sums[2]);
            sums[3] = fmaf(fb, acc[3], sums[3]);
            if constexpr (qm_base(M) == QM_Q4_MINS) { /* the codes came as OFF + nibble */
                float na = fmaf(-qtype<T>::OFF, fa, raw_to_f32(r.ma[u]));
                float nb = fmaf(-qtype<T>::OFF, fb, raw_to_f32(r.mb[u]));
                sums[0] = fmaf(na, ones[0], sums[0]);
                sums[1] = fmaf(na, ones[1], sums[1]);
                sums[2] = fmaf(nb, ones[2], sums[2]);
                sums[3] = fmaf(nb, ones[3], sums[3]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[i] = ones[i] = 0.0f;
        }
    }

    /* the steps [s_begin, s_end), the first round already loaded into ra0 (and the second into ra1
     * when ahead): two rounds of codes in flight, the next round's loads issued before this one's
     * products */
    __device__ __forceinline__ void run(const qparams &p, qround<T, M, CB, R> &ra0,
                                        qround<T, M, CB, R> &ra1, int s_begin, bool ahead)
    {
        for (int s0 = s_begin; s0 < s_end; s0 += 2 * G::U) {
            if (s0 + G::U < s_end && !ahead)
                load(p, ra1, s0 + G::U);
            ahead = false;
            compute(ra0, s0);
            if (s0 + G::U >= s_end)
                break;
            if (s0 + 2 * G::U < s_end)
                load(p, ra0, s0 + 2 * G::U);
            compute(ra1, s0 + G::U);
        }
    }
};

/* The block's 16 rows from its warps' sums (sums: this lane's, accumulator layout c0, c1: row g,
 * x rows 2q, 2q + 1; c2, c3: row g + 8) through shared memory red ([warps][QG_ROWS][QG_TOKENS])
 * into y; rows past p.rows are dropped. Ends with the block synchronized, red free again. */
__device__ __forceinline__ void qreduce_store(float *red, const float *sums, int warp, int warps,
                                              int g, int q, int row0, const qparams &p, void *y,
                                              int y_dt, int ldy, int nt, int accumulate)
{
    float *rw = red + warp * (QG_ROWS * QG_TOKENS);
    rw[g * QG_TOKENS + 2 * q] = sums[0];
    rw[g * QG_TOKENS + 2 * q + 1] = sums[1];
    rw[(g + 8) * QG_TOKENS + 2 * q] = sums[2];
    rw[(g + 8) * QG_TOKENS + 2 * q + 1] = sums[3];
    __syncthreads();
    for (int i = threadIdx.x; i < QG_ROWS * nt; i += blockDim.x) {
        int r = i % QG_ROWS, t = i / QG_ROWS, row = row0 + r;
        float s = 0.0f;
        for (int w = 0; w < warps; w++)
            s += red[(w * QG_ROWS + r) * QG_TOKENS + t];
        if (row < p.rows) {
            size_t o = (size_t)t * ldy + row;
            lg_st(y, y_dt, o, accumulate ? lg_ld(y, y_dt, o) + s : s);
        }
    }
    __syncthreads();
}

/* A block owns the 16-row tile blockIdx.x. For q8 and fp8 (qg_persistent) the blocks are
 * persistent: a block walks the tiles blockIdx.x, + gridDim.x, ... (the launcher gives it as many
 * blocks as the SMs hold at once), and a warp's first round of the next tile is loaded before the
 * block sums the current one, so that only the first tile waits on memory with nothing in flight
 * (on an H100, half of the q8 kernel's stalls were on the first two rounds of a tile when each block
 * owned one). q4 keeps a block a tile: persistent, its 7B decode was 1-2% slower (4096-row
 * products 4% slower, 12288 and 32000 rows 4-5% faster). */
static constexpr __host__ __device__ bool qg_persistent(int method)
{
    return method == QM_Q8 || method == QM_FP8;
}

template <typename T, int M, int CB, int NT, int MINB, bool G1>
__global__ void __launch_bounds__(NT, MINB)
    qgemv_mma_kernel(void *y, int y_dt, int ldy, qparams p, const T *__restrict__ x, int ldx,
                     int nt, int accumulate)
{
    constexpr int R = MINB > 1 ? 4 : 8;
    typedef qgeom<T, M, CB, R> G;
    extern __shared__ float red[]; /* [warps][QG_ROWS][QG_TOKENS] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int g = lane >> 2, q = lane & 3;
    const int n_tiles = (p.rows + QG_ROWS - 1) / QG_ROWS;
    const int steps = p.cols / G::WIN;
    const int s_begin = (int)((long long)steps * warp / warps);
    qwalk<T, M, CB, R, G1> w;
    w.spg = p.group / G::WIN; /* steps per group */
    /* B column g of the mma is x's row g; lanes past nt read row 0, their columns are dropped */
    w.xp = x + (size_t)(g < nt ? g : 0) * ldx + q * G::KC;
    auto start = [&](int tile) {
        /* rows past the end read the last row and are dropped at the store */
        const int ra = min(tile * QG_ROWS + g, p.rows - 1);
        const int rb = min(tile * QG_ROWS + g + 8, p.rows - 1);
        if (p.tiled) {
            w.ca = (uint32_t)tile * (uint32_t)steps * (64 * CB) + (uint32_t)lane * CB;
            w.cdb = 32 * CB;
            w.cstride = 64 * CB;
        } else {
            w.ca = (uint32_t)ra * (uint32_t)p.row_bytes + q * CB;
            w.cdb = (uint32_t)(rb - ra) * (uint32_t)p.row_bytes;
            w.cstride = 4 * CB;
        }
        w.ia = (uint32_t)ra * (uint32_t)p.n_groups;
        w.idb = (uint32_t)(rb - ra) * (uint32_t)p.n_groups;
        w.s_end = (int)((long long)steps * (warp + 1) / warps);
        w.grp = s_begin / w.spg, w.left = w.spg - s_begin % w.spg;
#pragma unroll
        for (int i = 0; i < 4; i++)
            w.acc[i] = w.ones[i] = w.sums[i] = 0.0f;
    };

    /* two rounds of codes in flight: the next round's loads are issued before this one's products
     * (the codes are written by no kernel, so the first two rounds go out before the wait) */
    qround<T, M, CB, R> ra0, ra1;
    int tile = blockIdx.x;
    start(tile);
    w.load(p, ra0, s_begin);
    const bool ahead = s_begin + G::U < w.s_end;
    if (ahead)
        w.load(p, ra1, s_begin + G::U);
    lg_pdl_wait();
    lg_pdl_trigger();
    if constexpr (!qg_persistent(M)) {
        w.run(p, ra0, ra1, s_begin, ahead);
        qreduce_store(red, w.sums, warp, warps, g, q, tile * QG_ROWS, p, y, y_dt, ldy, nt,
                      accumulate);
    } else {
        for (bool first = true;; first = false) {
            w.run(p, ra0, ra1, s_begin, first && ahead);
            const float sums[4] = {w.sums[0], w.sums[1], w.sums[2], w.sums[3]};
            const int next = tile + (int)gridDim.x;
            if (next < n_tiles) {
                start(next);
                w.load(p, ra0, s_begin);
            }
            qreduce_store(red, sums, warp, warps, g, q, tile * QG_ROWS, p, y, y_dt, ldy, nt,
                          accumulate);
            if (next >= n_tiles)
                break;
            tile = next;
        }
    }
}

/* ---------------------------------------------------------------- GEMV of one row of x */

/* The decode's product, one row of x, on tiled q4 codes whose group is one window, or tiled q8 or
 * fp8 codes with a scale per row (scaled_row_walk): qgemv_mma_kernel with what a step costs cut where one
 * row of x allows it. On an H100 it took q4 g64 with mins from 13.0 to 10.9 us on 11008 x 4096,
 * 12.7 to 10.2 on 4096 x 11008 and 33.6 to 26.9 on 32000 x 4096, and q8 from 18.3 to 17.0 us on
 * 4096 x 11008 and 48.3 to 44.8 on 32000 x 4096 (docs/BENCHMARKS.md). For q4:
 *   - Scales and mins are staged in shared memory once per warp (q4row_stage) instead of four
 *     2-byte loads of 8 rows at every step: those were 8 sectors a load for 16 bytes, 43% of the
 *     kernel's sectors, and a warp waited on them at each step. So is the warp's part of x, after
 *     the wait (qrow_stage_x), instead of two 16-byte loads from L1 a step.
 *   - A word's four column pairs feed two mmas, "lo" (columns 0-3) and "hi" (4-7): the tiled
 *     order (q4_tiled_nibble) puts them in nibbles (0, 4), (2, 6) and (1, 5), (3, 7). In float16
 *     a hi pair is masked where it sits, 4 bits up, under the exponent of 64, whose mantissa step
 *     is 1/16 (0x54XX with XX = 16 n is 64 + n): one shift a word (w >> 8) instead of three, and
 *     the offsets differ by set, lo 1024 and hi 64. bfloat16's 7 mantissa bits leave no room for
 *     that: its hi pairs are shifted down, both offsets 128. A set's x is one register pair, so
 *     the mma's B operand needs no moves.
 *   - The offsets and the mins need x summed over each set (XL, XH: an mma of ones each, as many as
 *     before), and a row's total for a group is  s acc + (min - OFF_LO s) XL + (min - OFF_HI s) XH.
 *   - Every column of B is x, so each lane's c0 and c2 hold rows g and g + 8: no other sums are
 *     formed, and each step's first mmas start from the zero register. */
template <typename T> struct q4row_codec;
template <> struct q4row_codec<__half> {
    static constexpr float OFF_LO = 1024.0f, OFF_HI = 64.0f;
    static __device__ __forceinline__ void decode(uint32_t w, uint32_t *lo, uint32_t *hi)
    {
        const uint32_t w8 = w >> 8;
        lo[0] = mask_or(w, 0x000f000fu, 0x64006400u);
        lo[1] = mask_or(w8, 0x000f000fu, 0x64006400u);
        hi[0] = mask_or(w, 0x00f000f0u, 0x54005400u);
        hi[1] = mask_or(w8, 0x00f000f0u, 0x54005400u);
    }
};
template <> struct q4row_codec<__nv_bfloat16> {
    static constexpr float OFF_LO = 128.0f, OFF_HI = 128.0f;
    static __device__ __forceinline__ void decode(uint32_t w, uint32_t *lo, uint32_t *hi)
    {
        lo[0] = mask_or(w, 0x000f000fu, 0x43004300u);
        lo[1] = mask_or(w >> 8, 0x000f000fu, 0x43004300u);
        hi[0] = mask_or(w >> 4, 0x000f000fu, 0x43004300u);
        hi[1] = mask_or(w >> 12, 0x000f000fu, 0x43004300u);
    }
};

/* c = a b (ZERO: from the zero register) or c += a b */
template <typename T, bool ZERO>
__device__ __forceinline__ void qrow_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    if constexpr (!ZERO) {
        lg_mma16816<T>(c, a, b0, b1);
    } else if constexpr (std::is_same<T, __half>::value) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};\n"
            : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
    } else {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};\n"
            : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
    }
}

/* A warp's scales and mins into shared memory, before the wait (no kernel writes them): at step s
 * lane (g, q) reads {scale | min << 16} of rows g and g + 8 as one 8-byte word, sm[g * stride + s]
 * (stride odd: the 8 rows' words fall in distinct banks). All 16 rows' loads go out before the
 * first store: a first version stored each row's before loading the next, and was slower than
 * loading them at every step (14.0 against 12.2 us for q4 g64 on 11008 x 4096, on an H100). */
template <bool MINS>
__device__ __forceinline__ void q4row_stage(uint2 *sm, int stride, const qparams &p, uint32_t si,
                                            int steps, int lane)
{
    for (int s = lane; s < steps; s += 32) {
        uint32_t v[QG_ROWS];
#pragma unroll
        for (int r = 0; r < QG_ROWS; r++) {
            const uint32_t gi = si + (uint32_t)r * (uint32_t)p.n_groups + (uint32_t)s;
            v[r] = ld_raw<unsigned short>(p.scales, gi);
            if constexpr (MINS)
                v[r] |= (uint32_t)ld_raw<unsigned short>(p.mins, gi) << 16;
        }
#pragma unroll
        for (int g = 0; g < 8; g++)
            sm[g * stride + s] = make_uint2(v[g], v[g + 8]);
    }
    __syncwarp();
}

/* A warp's steps at most, and the staged words a row of it takes: those, made odd. */
__host__ __device__ __forceinline__ int qrow_steps(int steps, int warps)
{
    return (steps + warps - 1) / warps;
}

__host__ __device__ __forceinline__ int qrow_stride(int steps, int warps)
{
    return qrow_steps(steps, warps) | 1;
}

/* A warp's n columns of x into shared memory, after the wait (an earlier kernel writes x): 16-byte
 * pieces, up to 4 a lane loaded before any is stored. Read from L1 at each step instead, x cost the
 * down projection 7% (10.9 against 10.2 us on an H100). */
template <typename T>
__device__ __forceinline__ void qrow_stage_x(T *xs, const T *x, int n, int lane)
{
    const uint4 *src = reinterpret_cast<const uint4 *>(x);
    uint4 *dst = reinterpret_cast<uint4 *>(xs);
    const int n16 = n / 8;
    for (int i0 = 0; i0 < n16; i0 += 128) {
        uint4 v[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (i0 + 32 * j + lane < n16)
                v[j] = __ldg(src + i0 + 32 * j + lane);
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (i0 + 32 * j + lane < n16)
                dst[i0 + 32 * j + lane] = v[j];
    }
    __syncwarp();
}

/* One round of U steps of a lane: codes of rows g (a) and g + 8 (b). */
template <int CB, int U> struct qrow_round {
    uint32_t ka[U][CB / 4], kb[U][CB / 4];
};

/* A lane's walk over the codes of its two rows, a round of U steps at a time: the tile-major layout
 * (gemv_quant.h) is the same in bytes for q4 and q8. */
template <int CB, int U> struct qrow_codes {
    /* row a's chunk of codes at the walk's first step: bytes from the matrix's base (a uniform
     * register), 32 bits as qwalk keeps them */
    uint32_t co;
    int steps;

    __device__ __forceinline__ void load(const qparams &p, qrow_round<CB, U> &r, int s0)
    {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int s = s0 + u;
            if (s < steps) {
                const uint32_t o = co + (uint32_t)s * (64 * CB);
                ld_codes<CB>(p.codes + o, r.ka[u]);
                ld_codes<CB>(p.codes + (o + 32 * CB), r.kb[u]);
            }
        }
    }
};

/* q4, a group one window: every step ends a group, scaled from the staged scales and mins. */
template <typename T, bool MINS, int CB, int U> struct q4row_walk : qrow_codes<CB, U> {
    static constexpr int WORDS = CB / 4, KC = 2 * CB, WIN = 4 * KC;
    static constexpr bool STAGED = true; /* scales (and mins) in shared memory, q4row_stage */
    const uint2 *sm; /* the lane's rows' staged scales, from the walk's first step */
    const T *xs;     /* the walk's columns of x, staged */
    int q;
    float sum_a, sum_b;

    /* the walk's scales (and mins) of tile rows into sm_warp, this warp's words (8 rows of stride
     * words); the walk starts at step s_begin of the row */
    __device__ __forceinline__ void stage(uint2 *sm_warp, int stride, const qparams &p,
                                          unsigned tile, int s_begin, int lane)
    {
        const uint32_t si = (uint32_t)(tile * QG_ROWS) * (uint32_t)p.n_groups + (uint32_t)s_begin;
        q4row_stage<MINS>(sm_warp, stride, p, si, this->steps, lane);
        sm = sm_warp + (lane >> 2) * stride;
        sum_a = sum_b = 0.0f;
    }

    __device__ __forceinline__ void compute(const qrow_round<CB, U> &r, int s0)
    {
        typedef q4row_codec<T> D;
        const uint32_t ones[4] = {qtype<T>::ONES, qtype<T>::ONES, qtype<T>::ONES, qtype<T>::ONES};
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int s = s0 + u;
            if (s >= this->steps)
                break;
            uint32_t xv[CB];
            const uint4 *x4 = reinterpret_cast<const uint4 *>(xs + (s * WIN + q * KC));
#pragma unroll
            for (int i = 0; i < CB / 4; i++) {
                const uint4 v = x4[i];
                xv[4 * i] = v.x, xv[4 * i + 1] = v.y, xv[4 * i + 2] = v.z, xv[4 * i + 3] = v.w;
            }
            const uint2 sv = sm[s];
            float acc[4], xl[4], xh[4];
#pragma unroll
            for (int i = 0; i < WORDS; i++) {
                uint32_t la[2], ha[2], lb[2], hb[2];
                D::decode(r.ka[u][i], la, ha);
                D::decode(r.kb[u][i], lb, hb);
                const uint32_t alo[4] = {la[0], lb[0], la[1], lb[1]};
                const uint32_t ahi[4] = {ha[0], hb[0], ha[1], hb[1]};
                const uint32_t *xw = xv + 4 * i; /* columns 0-1, 2-3 (lo), 4-5, 6-7 (hi) */
                if (i == 0) {
                    qrow_mma<T, true>(acc, alo, xw[0], xw[1]);
                    qrow_mma<T, true>(xl, ones, xw[0], xw[1]);
                    qrow_mma<T, true>(xh, ones, xw[2], xw[3]);
                } else {
                    qrow_mma<T, false>(acc, alo, xw[0], xw[1]);
                    qrow_mma<T, false>(xl, ones, xw[0], xw[1]);
                    qrow_mma<T, false>(xh, ones, xw[2], xw[3]);
                }
                qrow_mma<T, false>(acc, ahi, xw[2], xw[3]);
            }
            const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&sv.x));
            const float2 b = __half22float2(*reinterpret_cast<const __half2 *>(&sv.y));
            const float ma = MINS ? a.y : -8.0f * a.x, mb = MINS ? b.y : -8.0f * b.x;
            sum_a = fmaf(a.x, acc[0], sum_a);
            sum_a = fmaf(fmaf(-D::OFF_LO, a.x, ma), xl[0], sum_a);
            sum_a = fmaf(fmaf(-D::OFF_HI, a.x, ma), xh[0], sum_a);
            sum_b = fmaf(b.x, acc[2], sum_b);
            sum_b = fmaf(fmaf(-D::OFF_LO, b.x, mb), xl[2], sum_b);
            sum_b = fmaf(fmaf(-D::OFF_HI, b.x, mb), xh[2], sum_b);
        }
    }

    __device__ __forceinline__ void finish() {}
};

/* q8 or fp8 (M) with a scale per row: the codes decode as qgemv_mma_kernel's (qcodec: exact small
 * integers or e4m3 values), the mma's float32 sums run over the whole walk and the row's scale is
 * applied once at its end, as qgemv_mma_kernel does for a group that long. So no scale is read while
 * the walk runs, and there is nothing to stage but x. */
template <typename T, int M, int CB, int U> struct scaled_row_walk : qrow_codes<CB, U> {
    static constexpr int WORDS = CB / 4, KC = CB, WIN = 4 * KC;
    static constexpr bool STAGED = false;
    typedef typename qgeom<T, M, CB>::raw raw; /* float16 bits (q8), float32 (fp8) */
    const T *xs;
    int q;
    raw sa, sb; /* the rows' scales, as stored: converted after the walk */
    float acc[4];
    float sum_a, sum_b;

    /* the scales of the lane's rows of tile (n_groups is 1) */
    __device__ __forceinline__ void stage(uint2 *, int, const qparams &p, unsigned tile, int,
                                          int lane)
    {
        const uint32_t ra = (uint32_t)(tile * QG_ROWS) + (uint32_t)(lane >> 2);
        sa = ld_raw<raw>(p.scales, ra);
        sb = ld_raw<raw>(p.scales, ra + 8);
#pragma unroll
        for (int i = 0; i < 4; i++)
            acc[i] = 0.0f;
    }

    __device__ __forceinline__ void compute(const qrow_round<CB, U> &r, int s0)
    {
        typedef qcodec<T, M> D;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int s = s0 + u;
            if (s >= this->steps)
                break;
            uint32_t xv[CB / 2];
            const uint4 *x4 = reinterpret_cast<const uint4 *>(xs + (s * WIN + q * KC));
#pragma unroll
            for (int i = 0; i < CB / 8; i++) {
                const uint4 v = x4[i];
                xv[4 * i] = v.x, xv[4 * i + 1] = v.y, xv[4 * i + 2] = v.z, xv[4 * i + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < WORDS; i++) { /* word i: columns 4i..4i+3, x words 2i, 2i + 1 */
                uint32_t pa[2], pb[2];
                D::decode(r.ka[u][i], pa);
                D::decode(r.kb[u][i], pb);
                const uint32_t a[4] = {pa[0], pb[0], pa[1], pb[1]};
                lg_mma16816<T>(acc, a, xv[2 * i], xv[2 * i + 1]);
            }
        }
    }

    __device__ __forceinline__ void finish()
    {
        sum_a = raw_to_f32(sa) * acc[0];
        sum_b = raw_to_f32(sb) * acc[2];
    }
};

/* The one-row kernel's walk for method M (QM_Q4, QM_Q4_MINS, QM_Q8 or QM_FP8). */
template <typename T, int M, int CB, int U> struct qrow_walk_of {
    typedef typename std::conditional<qm_q4(M), q4row_walk<T, M == QM_Q4_MINS, CB, U>,
                                      scaled_row_walk<T, M, CB, U>>::type type;
};

/* What the one-row kernel does with its sums (qrow_kernel). */
enum { ROW_PLAIN = 0, ROW_GLU = 1, ROW_ROPE = 2 };

/* ROW_ROPE's arguments: the q|k|v product of lg_k_gemv_quant_rope_kv. A unit (a block's two tiles)
 * is, for the first rope_units, tiles j and j + half_tiles of one q or k head (rows i and
 * i + head_dim / 2 for i in the tile's 16), then two consecutive tiles of v. */
struct qrow_epi {
    int rope_units, half_tiles, q_rows, kv_dim;
    const int *pos;
    int pos0;
    const float *inv_freq;
    float attn_scale;
    lg_kcache_dst dst;
};

/* The tile of part k (0 or 1) of unit u. */
template <int EPI>
__device__ __forceinline__ unsigned qrow_tile(const qrow_epi &e, unsigned u, int k)
{
    if constexpr (EPI == ROW_GLU)
        return u + (unsigned)k * gridDim.x;
    if constexpr (EPI == ROW_ROPE) {
        const unsigned ru = (unsigned)e.rope_units, ht = (unsigned)e.half_tiles;
        if (u < ru)
            return u / ht * 2 * ht + u % ht + (unsigned)k * ht;
        return 2 * ru + 2 * (u - ru) + (unsigned)k;
    }
    return u;
}

/* ROW_ROPE's end for row r of a unit: the sums a and b of its two tiles rounded to y's type, as
 * lg_k_gemv_quant would store them, then as lg_k_rope_kv treats those rows: a q or k pair rotated
 * (c, s: its cos and sin), k and v also written to the row's cache slot. */
__device__ __forceinline__ void qrow_rope_end(const qrow_epi &e, void *y, int dt, unsigned u,
                                               int r, float a, float b, float c, float s)
{
    const unsigned t0 = qrow_tile<ROW_ROPE>(e, u, 0), t1 = qrow_tile<ROW_ROPE>(e, u, 1);
    const int row0 = (int)t0 * QG_ROWS + r, row1 = (int)t1 * QG_ROWS + r;
    float y0 = lg_round_to(dt, a), y1 = lg_round_to(dt, b);
    if (u < (unsigned)e.rope_units)
        lg_rope_rotate(y0, y1, c, s, &y0, &y1);
    lg_st(y, dt, (size_t)row0, y0);
    lg_st(y, dt, (size_t)row1, y1);
    if (row0 < e.q_rows)
        return;
    const bool is_k = row0 < e.q_rows + e.kv_dim;
    const int slot = e.dst.slots[0], off = row0 - e.q_rows - (is_k ? 0 : e.kv_dim);
    void *cache = is_k ? e.dst.k_cache : e.dst.v_cache;
    const size_t co = (size_t)slot * e.dst.ld_cache;
    lg_st(cache, dt, co + (size_t)off, y0);
    lg_st(cache, dt, co + (size_t)(off + row1 - row0), y1);
    if (is_k && off == 0)
        e.dst.slot_pos[slot] = e.pos ? e.pos[0] : e.pos0;
}

/* A block owns the 16-row tile blockIdx.x (rows are a multiple of 16: the codes are tiled) and its
 * warps split the steps, as in qgemv_mma_kernel; two rounds of codes in flight. With an epilogue
 * (EPI) a block owns two tiles (qrow_tile), walks them side by side on the same staged x (rounds
 * of half the steps) and hands the 16 pairs of sums to the epilogue. Each sum is rounded to y's
 * type first, so the output is what lg_k_gemv_quant and then the kernel it replaces give, bit for
 * bit where both get the same warps a block (each warp's share of the steps, and so each sum, is
 * then the same):
 *   ROW_GLU   decode's gate|up product: gate tile u and up tile u + gridDim.x, y = silu(gate) up
 *            (lg_k_swiglu);
 *   ROW_ROPE  decode's q|k|v product: RoPE and the cache writes of lg_k_rope_kv.
 * Either saves a kernel, and the round trip of the product through memory, a layer. */
template <typename T, int M, int CB, int NT, int MINB, int U, int EPI>
__global__ void __launch_bounds__(NT, MINB)
    qrow_kernel(void *y, int y_dt, qparams p, const T *__restrict__ x, int accumulate,
                qrow_epi e)
{
    typedef typename qrow_walk_of<T, M, CB, U>::type Wk;
    constexpr int PARTS = EPI == ROW_PLAIN ? 1 : 2;
    __shared__ float red[NT / 32][PARTS * QG_ROWS];
    /* scales [parts][warps][8][stride] (q4 only), then x [warps][steps][WIN] */
    extern __shared__ uint2 staged[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = NT / 32;
    const int g = lane >> 2, q = lane & 3;
    const int steps = p.cols / Wk::WIN;
    const int s_begin = (int)((long long)steps * warp / warps);
    const int s_end = (int)((long long)steps * (warp + 1) / warps);
    const int stride = Wk::STAGED ? qrow_stride(steps, warps) : 0;
    T *xs = reinterpret_cast<T *>(staged + (size_t)PARTS * warps * 8 * stride) +
            (size_t)warp * qrow_steps(steps, warps) * Wk::WIN;
    Wk w[PARTS];
    qrow_round<CB, U> r0[PARTS], r1[PARTS];
#pragma unroll
    for (int k = 0; k < PARTS; k++) {
        const unsigned tile = qrow_tile<EPI>(e, blockIdx.x, k);
        w[k].q = q;
        w[k].xs = xs;
        w[k].steps = s_end - s_begin;
        w[k].co = (tile * (uint32_t)steps + (uint32_t)s_begin) * (64 * CB) + (uint32_t)lane * CB;
        w[k].load(p, r0[k], 0);
        w[k].load(p, r1[k], U);
    }
#pragma unroll
    for (int k = 0; k < PARTS; k++)
        w[k].stage(staged + ((size_t)k * warps + warp) * 8 * stride, stride, p,
                   qrow_tile<EPI>(e, blockIdx.x, k), s_begin, lane);
    /* RoPE's angle before the wait: positions and inv_freq come from the host */
    float rc = 0.0f, rs = 0.0f;
    if constexpr (EPI == ROW_ROPE) {
        const unsigned ht = (unsigned)e.half_tiles;
        if (threadIdx.x < QG_ROWS && blockIdx.x < (unsigned)e.rope_units)
            lg_rope_cs(e.pos ? e.pos[0] : e.pos0,
                       e.inv_freq[blockIdx.x % ht * QG_ROWS + threadIdx.x], e.attn_scale, &rc,
                       &rs);
    }
    lg_pdl_wait();
    lg_pdl_trigger();
    qrow_stage_x(xs, x + (size_t)s_begin * Wk::WIN, (s_end - s_begin) * Wk::WIN, lane);
    /* the parts' walks side by side, so that both tiles' codes are in flight at every step */
    const int n_steps = s_end - s_begin;
    for (int s0 = 0; s0 < n_steps; s0 += 2 * U) {
#pragma unroll
        for (int k = 0; k < PARTS; k++)
            w[k].compute(r0[k], s0);
        if (s0 + U >= n_steps)
            break;
#pragma unroll
        for (int k = 0; k < PARTS; k++)
            w[k].load(p, r0[k], s0 + 2 * U);
#pragma unroll
        for (int k = 0; k < PARTS; k++)
            w[k].compute(r1[k], s0 + U);
#pragma unroll
        for (int k = 0; k < PARTS; k++)
            w[k].load(p, r1[k], s0 + 3 * U);
    }
#pragma unroll
    for (int k = 0; k < PARTS; k++)
        w[k].finish();
    if (q == 0) {
#pragma unroll
        for (int k = 0; k < PARTS; k++) {
            red[warp][k * QG_ROWS + g] = w[k].sum_a;
            red[warp][k * QG_ROWS + g + 8] = w[k].sum_b;
        }
    }
    __syncthreads();
    if (threadIdx.x < QG_ROWS) {
        float sum[PARTS];
#pragma unroll
        for (int k = 0; k < PARTS; k++) {
            sum[k] = 0.0f;
#pragma unroll
            for (int i = 0; i < warps; i++)
                sum[k] += red[i][k * QG_ROWS + threadIdx.x];
        }
        if constexpr (EPI == ROW_GLU) {
            const size_t o = (size_t)blockIdx.x * QG_ROWS + threadIdx.x;
            lg_st(y, y_dt, o, lg_silu_mul(lg_round_to(y_dt, sum[0]), lg_round_to(y_dt, sum[1])));
        } else if constexpr (EPI == ROW_ROPE) {
            qrow_rope_end(e, y, y_dt, blockIdx.x, (int)threadIdx.x, sum[0], sum[1], rc, rs);
        } else {
            const size_t o = (size_t)blockIdx.x * QG_ROWS + threadIdx.x;
            lg_st(y, y_dt, o, accumulate ? lg_ld(y, y_dt, o) + sum[0] : sum[0]);
        }
    }
}

/* ---------------------------------------------------------------- GEMV, scalar */

/* Any shape and alignment: one row of W per warp, every element decoded as the CPU does. */
template <typename T>
__global__ void qgemv_scalar_kernel(void *y, int y_dt, int ldy, qparams p,
                                    const T *__restrict__ x, int ldx, int nt, int accumulate)
{
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * QG_SCALAR_WARPS + (threadIdx.x >> 5);
    if (row >= p.rows)
        return;
    lg_pdl_wait();
    lg_pdl_trigger();
    float acc[QG_TOKENS];
#pragma unroll
    for (int t = 0; t < QG_TOKENS; t++)
        acc[t] = 0.0f;
    for (int k = lane; k < p.cols; k += 32) {
        float w = q_decode(p, row, k);
#pragma unroll
        for (int t = 0; t < QG_TOKENS; t++)
            if (t < nt)
                acc[t] = fmaf(w, lg_elem<T>::to_f(x[(size_t)t * ldx + k]), acc[t]);
    }
#pragma unroll
    for (int t = 0; t < QG_TOKENS; t++) {
        if (t >= nt)
            break;
        float s = lg_warp_sum(acc[t]);
        if (lane == 0) {
            size_t o = (size_t)t * ldy + row;
            lg_st(y, y_dt, o, accumulate ? lg_ld(y, y_dt, o) + s : s);
        }
    }
}

/* ---------------------------------------------------------------- GEMV launcher */

static int kernel_method(const lg_kqmat *w)
{
    if (w->method == LG_KQ_Q8)
        return QM_Q8;
    if (w->method == LG_KQ_FP8)
        return QM_FP8;
    return (w->mins ? QM_Q4_MINS : QM_Q4) | (w->tiled ? QM_PAIRED : 0);
}

/* The widest load whose window (4 chunks) divides both the group and cols, codes aligned to it; 0:
 * none (or codes too large for qwalk's 32-bit offsets). */
static int codes_load_bytes(const lg_kqmat *w)
{
    if ((uint64_t)w->rows * lg_kqmat_row_bytes(w) > UINT32_MAX)
        return 0;
    int group = w->group ? w->group : w->cols;
    for (int cb = 16; cb >= 4; cb /= 2) {
        int win = 4 * (is_q4(w) ? 2 * cb : cb);
        if (group % win == 0 && w->cols % win == 0 && ((uintptr_t)w->codes % cb) == 0)
            return cb;
    }
    return 0;
}

/* ... given x's alignment too; tiled codes were tiled for theirs (lg_k_qmat_tile_bytes) */
extern "C" int lg_k_gemv_quant_load_bytes(const lg_kqmat *w, const void *x, int ldx)
{
    if (qg_warps == 0 || !w || ((uintptr_t)x & 15) != 0 || ldx % 8 != 0)
        return 0;
    return w->tiled ? w->tiled : codes_load_bytes(w);
}

/* The kernel's launch: a block a tile, or for the persistent kernel as many blocks as the SMs hold
 * at once (asked of the runtime once per instantiation and block size), at most one a tile. The
 * grid only sets the pace: any number of blocks covers every tile. */
template <typename T, int M, int CB, int NT, int MINB, bool G1>
static void qgemv_mma_launch(unsigned tiles, unsigned threads, size_t smem, cudaStream_t s, void *y,
                             int y_dt, int ldy, const qparams &p, const T *x, int ldx, int nt,
                             int acc)
{
    static int per_sm[QG_MAX_WARPS + 1]; /* by warps a block; 0: not yet asked */
    if (!qg_persistent(M)) {
        lg_launch_pdl(qgemv_mma_kernel<T, M, CB, NT, MINB, G1>, tiles, threads, smem, s, y, y_dt,
                      ldy, p, x, ldx, nt, acc);
        return;
    }
    int &n = per_sm[threads / 32 <= QG_MAX_WARPS ? threads / 32 : 0];
    if (n == 0) {
        int got = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &got, qgemv_mma_kernel<T, M, CB, NT, MINB, G1>, (int)threads, smem) !=
                cudaSuccess ||
            got < 1) {
            (void)cudaGetLastError(); /* not the launch's error */
            got = 1;
        }
        n = got;
    }
    unsigned resident = (unsigned)n * (unsigned)lg_sm_count();
    lg_launch_pdl(qgemv_mma_kernel<T, M, CB, NT, MINB, G1>, tiles < resident ? tiles : resident,
                  threads, smem, s, y, y_dt, ldy, p, x, ldx, nt, acc);
}

/* Warps a block for a matrix of `tiles` 16-row tiles of `windows` steps each. On an H100
 * (docs/BENCHMARKS.md):
 *   - q4 with 3 tiles an SM or more: 4 warps (6 blocks an SM, below), each walking twice the steps
 *     of 8 warps: 10% faster than 8 warps x 3 blocks on 11008 and 12288 x 4096, 6% on 32000 x 4096,
 *     but 1.9x slower on the down projection's 256 tiles, where 4 warps a block are too few;
 *   - q8 and fp8 with at most 2 tiles an SM and 8 steps or more for each of 16 warps: 16 warps. The
 *     down projection's 256 tiles of 172 steps ran at 80% of copy with 16 warps instead of 77%
 *     (fp8 81% instead of 78%), where the o projection's 256 tiles of 64 steps lost 9% and q8 on
 *     more tiles 8-19%;
 *   - else 8. */
static int qg_warps_for(int method, unsigned tiles, int windows)
{
    if (qg_warps >= 0)
        return qg_warps;
    const unsigned sms = (unsigned)lg_sm_count();
    if (qm_q4(method))
        return tiles >= 3u * sms ? 4 : 8;
    return tiles <= 2u * sms && windows >= 16 * 8 ? 16 : 8;
}

/* Steps (windows of 4 chunks) a row of cols columns takes at load width cb. */
static int qg_windows(bool q4, int cols, int cb)
{
    return cols / (4 * (q4 ? 2 * cb : cb));
}

/* 1: products of one row of x on matrices qrow_method takes go to qrow_kernel
 * (lg_k_gemv_quant_set_one_row) */
static int qg_one_row = 1;

/* The one-row kernel's method for w at load width cb, or -1 when it does not take w: q4 codes tiled
 * for cb with a group of one window (8 cb columns), or q8 and fp8 ones tiled for 16-byte loads with
 * a scale per row. */
static int qrow_method(const lg_kqmat *w, int cb)
{
    if (!cb || w->tiled != cb)
        return -1;
    if (is_q4(w) && w->group == 8 * cb)
        return w->mins ? QM_Q4_MINS : QM_Q4;
    if (w->group == 0 && cb == 16)
        return w->method == LG_KQ_Q8 ? QM_Q8 : QM_FP8;
    return -1;
}

/* The one-row kernel's warps a block for these arguments (blocks an SM in *minb, shared memory in
 * *smem), or 0 when qgemv_mma takes the product: a matrix qrow_method takes, no variant forced on
 * the tensor-core kernel. With 3 tiles an SM or more, blocks of 4 warps, 6 an SM, as qgemv_mma's
 * (80 registers); between 2 and 3, 8 warps, 3 an SM; with at most 2, blocks of 16 warps, 2 an SM
 * (64 registers): on an H100 the q4 down projection (256 tiles of 172 steps) took 11.0 us instead
 * of 12.7 with 8 warps a block, the o projection 6.0 instead of 6.2. A q8 or fp8 tile is as many
 * bytes a step as a q4 one (16 a lane and row), so the same rules hold; but a plain q8 or fp8
 * product of 3 to 6 tiles an SM stays on the tensor-core kernel, whose persistent capped blocks
 * were faster there (on an H100, q8 11008 x 4096 17.8 us against 18.6, 12288 x 4096 18.9 against
 * 20.3; with 2 tiles an SM or 10 and more the one-row kernel was 7-10% faster: docs/BENCHMARKS.md).
 * pairs: a block two tiles (an epilogue's: qrow_kernel), the warps chosen for the blocks: with
 * them chosen for the tiles (the plain product's warps, and its sums bit for bit), the q|k|v
 * product's 384 blocks of 4 warps left an H100 half full, and its token 4% slower than with the
 * RoPE kernel (docs/BENCHMARKS.md). Pairs take 16 warps only as q4 with 4- or 8-byte loads (groups
 * of 32 and 64): at 64 registers the walks of two tiles spill 100-240 bytes there, but 330-520 for
 * q8, fp8 and q4 with 16-byte loads (g128), and on the shards of 7B's fused products for 2 and 4
 * GPUs (H100, --bench-fused) 8 warps were 7-19% faster for those (q8 SwiGLU on 5504 rows 10.3 us
 * against 12.6, q4 g128 8.7 against 10.8), 16 warps 3-12% faster for q4 g64 and g32 (7.6 against
 * 8.0, 9.0 against 9.7). */
static int qrow_warps(const lg_kqmat *w, int cb, bool pairs, int *minb, size_t *smem)
{
    const int method = qrow_method(w, cb);
    if (!qg_one_row || qg_warps != -1 || qg_min_blocks != 0 || method < 0 ||
        (pairs && w->rows % (2 * QG_ROWS) != 0))
        return 0;
    const unsigned tiles = (unsigned)(w->rows / QG_ROWS / (pairs ? 2 : 1));
    const unsigned sms = (unsigned)lg_sm_count();
    const bool q4 = qm_q4(method);
    if (!q4 && !pairs && tiles >= 3u * sms && tiles <= 6u * sms)
        return 0;
    int warps = 4;
    *minb = 6;
    if (tiles <= 2u * sms && (!pairs || (q4 && cb <= 8)))
        warps = 16, *minb = 2;
    else if (tiles < 3u * sms)
        warps = 8, *minb = 3;
    const int win = (q4 ? 8 : 4) * cb, steps = w->cols / win;
    const size_t scale_words = q4 ? (size_t)(pairs ? 2 : 1) * 8 * qrow_stride(steps, warps) : 0;
    *smem = (size_t)warps *
            (scale_words * sizeof(uint2) + (size_t)qrow_steps(steps, warps) * win * 2);
    return *smem <= 48 * 1024 ? warps : 0;
}

template <typename T, int M, int CB, int NT, int MINB, int EPI>
static void qrow_launch(unsigned blocks, size_t smem, cudaStream_t s, void *y, int y_dt,
                        const qparams &p, const T *x, int acc, const qrow_epi &e)
{
    /* rounds of 8 words of codes a lane and row, 4 under a register cap (as qgeom's R), halved
     * for a block's two tiles: a warp holds as many bytes in flight */
    constexpr int PARTS = EPI == ROW_PLAIN ? 1 : 2, WORDS = CB / 4;
    constexpr int U0 = (MINB > 1 ? 4 : 8) / WORDS / PARTS, U = U0 < 1 ? 1 : U0;
    lg_launch_pdl(qrow_kernel<T, M, CB, NT, MINB, U, EPI>, blocks, NT, smem, s, y, y_dt, p, x,
                  acc, e);
}

/* The one-row kernel with epilogue EPI, if qrow_warps takes the product (else false, nothing
 * launched). */
template <typename T, int EPI>
static bool qrow_dispatch(const lg_kqmat *w, int cb, const qparams &p, void *y, int y_dt,
                          const T *x, int acc, const qrow_epi &e, cudaStream_t s)
{
    int minb = 0;
    size_t smem = 0;
    const int warps = qrow_warps(w, cb, EPI != ROW_PLAIN, &minb, &smem);
    if (!warps)
        return false;
    const int method = qrow_method(w, cb);
    const unsigned blocks = (unsigned)(p.rows / QG_ROWS / (EPI != ROW_PLAIN ? 2 : 1));
#define QROW_AT(M_, CB_)                                                                          \
    if (method == M_ && cb == CB_) {                                                              \
        if (warps == 16)                                                                          \
            qrow_launch<T, M_, CB_, 512, 2, EPI>(blocks, smem, s, y, y_dt, p, x, acc, e);         \
        else if (warps == 8)                                                                      \
            qrow_launch<T, M_, CB_, 256, 3, EPI>(blocks, smem, s, y, y_dt, p, x, acc, e);         \
        else                                                                                      \
            qrow_launch<T, M_, CB_, 128, 6, EPI>(blocks, smem, s, y, y_dt, p, x, acc, e);         \
        return true;                                                                              \
    }
    QROW_AT(QM_Q4_MINS, 16) QROW_AT(QM_Q4_MINS, 8) QROW_AT(QM_Q4_MINS, 4)
    QROW_AT(QM_Q4, 16) QROW_AT(QM_Q4, 8) QROW_AT(QM_Q4, 4)
    QROW_AT(QM_Q8, 16) QROW_AT(QM_FP8, 16)
#undef QROW_AT
    return false;
}

/* The product of one row of x on the one-row kernel, if qrow_warps takes it. */
template <typename T>
static bool qgemv_row(const lg_kqmat *w, int cb, const qparams &p, void *y, int y_dt, const T *x,
                        int acc, cudaStream_t s)
{
    return qrow_dispatch<T, ROW_PLAIN>(w, cb, p, y, y_dt, x, acc, qrow_epi(), s);
}

template <typename T>
static void qgemv_mma(int method, int cb, unsigned blocks, void *y, int y_dt, int ldy,
                      const qparams &p, const T *x, int ldx, int nt, int acc, cudaStream_t s)
{
    const bool q4 = qm_q4(method);
    const int warps = qg_warps_for(method, blocks, qg_windows(q4, p.cols, cb));
    size_t smem = (size_t)warps * QG_ROWS * QG_TOKENS * sizeof(float);
    unsigned threads = (unsigned)warps * 32;
    /* Capped at 80 registers (rounds of 2 steps for q4, 1 for q8 and fp8), 24 warps an SM: q4 with
     * tiles enough to fill 3 blocks of 8 warps an SM (on an H100 43 / 47 / 51% of copy instead of
     * 39 / 42 / 48% on 11008, 12288, 32000 x 4096; with fewer rows, 4096 x 11008, 37% instead of
     * 47%), or 6 of 4 (qg_warps_for); q8 and fp8 with 8 warps only from 3 to 6 tiles an SM (since
     * the blocks are persistent, on an H100: q8 77 / 81% instead of 74 / 79% on 11008 and 12288 x
     * 4096, but 80% instead of 84% on 32000 x 4096). */
    int minb = qg_min_blocks;
    if (minb == 0) {
        const unsigned sms = (unsigned)lg_sm_count();
        if (warps == 4 && q4 && blocks >= 3u * sms)
            minb = 6;
        else
            minb = warps == 8 && blocks >= 3u * sms && (q4 || blocks <= 6u * sms) ? 3 : 1;
    }
    /* q4 with mins whose group is one window (8 CB columns): every step ends a group (qwalk's G1;
     * on an H100 3-6% faster for g64 and g128 with mins; for symmetric q4 it was 3% slower on
     * 11008 x 4096 and 8% faster on 32000 x 4096, so it is left out there) */
    const bool g1 = qm_base(method) == QM_Q4_MINS && p.group == 8 * cb;
#define QG_LAUNCH(M_, CB_, NT_, MINB_, G1_)                                                       \
    qgemv_mma_launch<T, M_, CB_, NT_, MINB_, G1_>(blocks, threads, smem, s, y, y_dt, ldy, p, x,   \
                                                  ldx, nt, acc)
#define QG_MINB(M_, CB_, G1_)                                                                     \
    if (minb == 3)                                                                                \
        QG_LAUNCH(M_, CB_, 256, 3, G1_);                                                          \
    else if (minb == 6)                                                                           \
        QG_LAUNCH(M_, CB_, 128, 6, G1_);                                                          \
    else                                                                                          \
        QG_LAUNCH(M_, CB_, QG_MAX_WARPS * 32, 1, G1_);
#define QG_CASE(M_, CB_)                                                                          \
    if (method == (M_) && cb == CB_) {                                                            \
        QG_MINB(M_, CB_, false)                                                                   \
        return;                                                                                   \
    }
#define QG_CASE_G1(M_, CB_)                                                                       \
    if (method == (M_) && cb == CB_) {                                                            \
        if (g1) {                                                                                 \
            QG_MINB(M_, CB_, true)                                                                \
        } else {                                                                                  \
            QG_MINB(M_, CB_, false)                                                               \
        }                                                                                         \
        return;                                                                                   \
    }
#define QG_WIDTHS(C_, M_) C_(M_, 16) C_(M_, 8) C_(M_, 4)
    QG_WIDTHS(QG_CASE, QM_Q8)
    QG_WIDTHS(QG_CASE, QM_Q4)
    QG_WIDTHS(QG_CASE_G1, QM_Q4_MINS)
    QG_WIDTHS(QG_CASE, QM_Q4 | QM_PAIRED)
    QG_WIDTHS(QG_CASE_G1, QM_Q4_MINS | QM_PAIRED)
    QG_WIDTHS(QG_CASE, QM_FP8)
#undef QG_WIDTHS
#undef QG_CASE_G1
#undef QG_CASE
#undef QG_MINB
#undef QG_LAUNCH
}

template <typename T>
static void qgemv_launch(const lg_kqmat *w, int cb, void *y, int y_dt, int ldy, const void *x,
                         int ldx, int n, int acc, cudaStream_t s)
{
    qparams p = params_of(w);
    int ysz = y_dt == LG_KDT_F32 ? 4 : 2;
    for (int t0 = 0; t0 < n; t0 += QG_TOKENS) {
        int nt = n - t0 < QG_TOKENS ? n - t0 : QG_TOKENS;
        void *yt = (char *)y + (size_t)t0 * ldy * ysz;
        const T *xt = (const T *)x + (size_t)t0 * ldx;
        if (nt == 1 && qgemv_row<T>(w, cb, p, yt, y_dt, xt, acc, s))
            continue;
        if (cb) {
            unsigned blocks = (unsigned)((w->rows + QG_ROWS - 1) / QG_ROWS);
            qgemv_mma<T>(kernel_method(w), cb, blocks, yt, y_dt, ldy, p, xt, ldx, nt, acc, s);
        } else {
            unsigned blocks = (unsigned)((w->rows + QG_SCALAR_WARPS - 1) / QG_SCALAR_WARPS);
            lg_launch_pdl(qgemv_scalar_kernel<T>, blocks, QG_SCALAR_WARPS * 32, 0, s, yt, y_dt,
                          ldy, p, xt, ldx, nt, acc);
        }
    }
}

extern "C" int lg_k_gemv_quant_warps(const lg_kqmat *w, const void *x, int ldx)
{
    const int cb = lg_k_gemv_quant_load_bytes(w, x, ldx);
    if (!cb)
        return 0;
    return qg_warps_for(kernel_method(w), (unsigned)((w->rows + QG_ROWS - 1) / QG_ROWS),
                        qg_windows(is_q4(w), w->cols, cb));
}

extern "C" int lg_k_gemv_quant_one_row_warps(const lg_kqmat *w, const void *x, int ldx)
{
    int minb = 0;
    size_t smem = 0;
    return qrow_warps(w, lg_k_gemv_quant_load_bytes(w, x, ldx), false, &minb, &smem);
}

extern "C" int lg_k_gemv_quant_glu_warps(const lg_kqmat *w, const void *x)
{
    int minb = 0;
    size_t smem = 0;
    /* one row of x: only its alignment counts, not ldx */
    return qrow_warps(w, lg_k_gemv_quant_load_bytes(w, x, 8), true, &minb, &smem);
}

extern "C" void lg_k_gemv_quant_set_one_row(int on)
{
    qg_one_row = on != 0;
}

extern "C" int lg_k_gemv_quant_set_variant(int warps, int min_blocks)
{
    bool ok = (warps == -1 || warps == 0 || warps == 4 || warps == 8 || warps == 16) &&
              (min_blocks == 0 || min_blocks == 1 || (min_blocks == 3 && warps == 8) ||
               (min_blocks == 6 && warps == 4));
    if (!ok)
        return lg_k_fail("lg_k_gemv_quant_set_variant: no variant of %d warps (4, 8, 16, -1: "
                         "chosen per call, or 0: scalar) and %d blocks an SM (0: chosen per call, "
                         "1, 3 with 8 warps or 6 with 4)", warps, min_blocks);
    qg_warps = warps;
    qg_min_blocks = min_blocks;
    return 0;
}

extern "C" int lg_k_gemv_quant(void *y, lg_kdtype y_dt, int ldy, const lg_kqmat *w, const void *x,
                               int ldx, lg_kdtype x_dt, int n, float beta, void *stream)
{
    const char *who = "lg_k_gemv_quant";
    if (check_qmat(w, who) != 0)
        return -1;
    if (x_dt != LG_KDT_F16 && x_dt != LG_KDT_BF16)
        return lg_k_fail("%s: x must be float16 or bfloat16 (dtype %d)", who, (int)x_dt);
    if (y_dt != LG_KDT_F32 && y_dt != x_dt)
        return lg_k_fail("%s: output must be float32 or x's type (dtype %d)", who, (int)y_dt);
    if (beta != 0.0f && beta != 1.0f)
        return lg_k_fail("%s: beta must be 0 or 1 (got %g)", who, beta);
    if (n < 0 || ldx < w->cols || ldy < w->rows)
        return lg_k_fail("%s: bad sizes n=%d rows=%d cols=%d ldx=%d ldy=%d", who, n, w->rows,
                         w->cols, ldx, ldy);
    if (n == 0)
        return 0;
    int cb = lg_k_gemv_quant_load_bytes(w, x, ldx);
    int acc = beta != 0.0f;
    cudaStream_t s = LG_CUDA_STREAM(stream);
    if (x_dt == LG_KDT_F16)
        qgemv_launch<__half>(w, cb, y, y_dt, ldy, x, ldx, n, acc, s);
    else
        qgemv_launch<__nv_bfloat16>(w, cb, y, y_dt, ldy, x, ldx, n, acc, s);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

extern "C" int lg_k_gemv_quant_glu(void *y, lg_kdtype y_dt, const lg_kqmat *w, const void *x,
                                   lg_kdtype x_dt, void *stream)
{
    const char *who = "lg_k_gemv_quant_glu";
    if (check_qmat(w, who) != 0)
        return -1;
    if ((x_dt != LG_KDT_F16 && x_dt != LG_KDT_BF16) || y_dt != x_dt)
        return lg_k_fail("%s: x and y must both be float16 or both bfloat16 (dtypes %d, %d)", who,
                         (int)x_dt, (int)y_dt);
    if (!lg_k_gemv_quant_glu_warps(w, x))
        return lg_k_fail("%s: the fused kernel does not take this matrix (%s, %d x %d, group %d, "
                         "tiled %d)", who, method_name(w), w->rows, w->cols, w->group,
                         w->tiled);
    const int cb = w->tiled;
    const qparams p = params_of(w);
    cudaStream_t s = LG_CUDA_STREAM(stream);
    if (x_dt == LG_KDT_F16)
        qrow_dispatch<__half, ROW_GLU>(w, cb, p, y, y_dt, (const __half *)x, 0, qrow_epi(), s);
    else
        qrow_dispatch<__nv_bfloat16, ROW_GLU>(w, cb, p, y, y_dt, (const __nv_bfloat16 *)x, 0,
                                              qrow_epi(), s);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

extern "C" int lg_k_gemv_quant_rope_kv_warps(const lg_kqmat *w, const void *x, int n_heads,
                                             int n_kv_heads, int head_dim)
{
    int minb = 0;
    size_t smem = 0;
    if (!w || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || head_dim % (2 * QG_ROWS) != 0 ||
        (long long)w->rows != (long long)(n_heads + 2 * n_kv_heads) * head_dim)
        return 0;
    return qrow_warps(w, lg_k_gemv_quant_load_bytes(w, x, 8), true, &minb, &smem);
}

extern "C" int lg_k_gemv_quant_rope_kv(void *qkv, lg_kdtype dt, const lg_kqmat *w, const void *x,
                                       int n_heads, int n_kv_heads, int head_dim, const int *pos,
                                       int pos0, const float *inv_freq, float attn_scale,
                                       const lg_kcache_dst *dst, void *stream)
{
    const char *who = "lg_k_gemv_quant_rope_kv";
    if (check_qmat(w, who) != 0)
        return -1;
    if (dt != LG_KDT_F16 && dt != LG_KDT_BF16)
        return lg_k_fail("%s: x and q|k|v must be float16 or bfloat16 (dtype %d)", who, (int)dt);
    if (!lg_k_gemv_quant_rope_kv_warps(w, x, n_heads, n_kv_heads, head_dim))
        return lg_k_fail("%s: the fused kernel does not take this matrix (%s, %d x %d, group %d, "
                         "tiled %d) with %d + 2 x %d heads of %d", who, method_name(w),
                         w->rows, w->cols, w->group, w->tiled, n_heads, n_kv_heads, head_dim);
    const int kvd = n_kv_heads * head_dim;
    if (!dst || !dst->k_cache || !dst->v_cache || !dst->slots || !dst->slot_pos || !inv_freq ||
        dst->ld_cache < kvd)
        return lg_k_fail("%s: the caches (rows of at least %d), slots, slot_pos and inv_freq are "
                         "required", who, kvd);
    qrow_epi e;
    e.rope_units = (n_heads + n_kv_heads) * head_dim / (2 * QG_ROWS);
    e.half_tiles = head_dim / (2 * QG_ROWS);
    e.q_rows = n_heads * head_dim;
    e.kv_dim = kvd;
    e.pos = pos;
    e.pos0 = pos0;
    e.inv_freq = inv_freq;
    e.attn_scale = attn_scale;
    e.dst = *dst;
    const qparams p = params_of(w);
    cudaStream_t s = LG_CUDA_STREAM(stream);
    if (dt == LG_KDT_F16)
        qrow_dispatch<__half, ROW_ROPE>(w, w->tiled, p, qkv, dt, (const __half *)x, 0, e, s);
    else
        qrow_dispatch<__nv_bfloat16, ROW_ROPE>(w, w->tiled, p, qkv, dt,
                                               (const __nv_bfloat16 *)x, 0, e, s);
    LG_CUDA_LAUNCHED(who);
    return 0;
}

/* ---------------------------------------------------------------- dequantization */

template <typename T> __device__ __forceinline__ void store8(T *dst, const float *v)
{
    if constexpr (std::is_same<T, float>::value) {
        reinterpret_cast<float4 *>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4 *>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        uint4 o = make_uint4(pack_pair<T>(v[0], v[1]), pack_pair<T>(v[2], v[3]),
                             pack_pair<T>(v[4], v[5]), pack_pair<T>(v[6], v[7]));
        *reinterpret_cast<uint4 *>(dst) = o;
    }
}

/* Eight columns of one group per thread: one load of codes, one of the group's parameters, one
 * 16-byte (float32: two) store. Rows by blockIdx.y, strided past 65535. */
template <typename T>
__global__ void dequant_vec_kernel(T *out, int ldo, qparams p, int row0, int n_rows)
{
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (c >= p.cols)
        return;
    for (int r = blockIdx.y; r < n_rows; r += gridDim.y) {
        int row = row0 + r;
        size_t gi = (size_t)row * p.n_groups + c / p.group;
        float s = scale_at(p, gi), v[8];
        const uint8_t *src = p.codes + code_offset(p, row, c); /* columns c..c+7 */
        if (p.method == LG_KQ_Q4) {
            uint32_t raw = __ldg(reinterpret_cast<const unsigned *>(src));
            float mn = min_at(p, gi, s);
#pragma unroll
            for (int j = 0; j < 8; j++) /* column c + j: nibble j of the word, tiled its pair's */
                v[j] = mn + s * (float)((raw >> (4 * (p.tiled ? q4_tiled_nibble(j) : j))) & 15u);
        } else {
            uint2 raw = __ldg(reinterpret_cast<const uint2 *>(src));
#pragma unroll
            for (int j = 0; j < 8; j++) {
                unsigned b = ((j < 4 ? raw.x : raw.y) >> (8 * (j & 3))) & 0xffu;
                v[j] = s * (p.method == LG_KQ_Q8 ? (float)(int8_t)b : e4m3_to_f32(b));
            }
        }
        store8<T>(out + (size_t)r * ldo + c, v);
    }
}

__global__ void dequant_scalar_kernel(void *out, int out_dt, int ldo, qparams p, int row0,
                                      int n_rows)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.cols)
        return;
    for (int r = blockIdx.y; r < n_rows; r += gridDim.y)
        lg_st(out, out_dt, (size_t)r * ldo + c, q_decode(p, row0 + r, c));
}

extern "C" int lg_k_dequant(void *out, lg_kdtype out_dt, int ldo, const lg_kqmat *w, int row0,
                            int n_rows, void *stream)
{
    const char *who = "lg_k_dequant";
    if (check_qmat(w, who) != 0)
        return -1;
    if (lg_kdtype_size(out_dt) == 0)
        return lg_k_fail("%s: unknown output dtype %d", who, (int)out_dt);
    if (row0 < 0 || n_rows < 0 || n_rows > w->rows - row0 || ldo < w->cols)
        return lg_k_fail("%s: bad sizes row0=%d n_rows=%d rows=%d cols=%d ldo=%d", who, row0,
                         n_rows, w->rows, w->cols, ldo);
    if (n_rows == 0)
        return 0;
    qparams p = params_of(w);
    cudaStream_t s = LG_CUDA_STREAM(stream);
    unsigned gy = (unsigned)(n_rows < 65535 ? n_rows : 65535);
    size_t code_align = is_q4(w) ? 4 : 8;
    /* tiled: eight columns are contiguous when a chunk holds a multiple of 8 */
    bool vec = p.group % 8 == 0 && w->cols % 8 == 0 && ldo % 8 == 0 &&
               ((uintptr_t)out & 15) == 0 && ((uintptr_t)w->codes % code_align) == 0 &&
               (!w->tiled || tile_chunk_cols(w->method, w->tiled) % 8 == 0);
    if (vec) {
        dim3 grid((unsigned)((w->cols / 8 + 127) / 128), gy);
        if (out_dt == LG_KDT_F16)
            dequant_vec_kernel<__half><<<grid, 128, 0, s>>>((__half *)out, ldo, p, row0, n_rows);
        else if (out_dt == LG_KDT_BF16)
            dequant_vec_kernel<__nv_bfloat16>
                <<<grid, 128, 0, s>>>((__nv_bfloat16 *)out, ldo, p, row0, n_rows);
        else
            dequant_vec_kernel<float><<<grid, 128, 0, s>>>((float *)out, ldo, p, row0, n_rows);
    } else {
        dim3 grid((unsigned)((w->cols + 255) / 256), gy);
        dequant_scalar_kernel<<<grid, 256, 0, s>>>(out, (int)out_dt, ldo, p, row0, n_rows);
    }
    LG_CUDA_LAUNCHED(who);
    return 0;
}

/* ---------------------------------------------------------------- tile-major codes */

/* A word of q4 codes from the stored nibble order to the tiled one (q4_tiled_nibble). */
__device__ __forceinline__ uint32_t q4_pair_nibbles(uint32_t w)
{
    uint32_t o = 0;
#pragma unroll
    for (int k = 0; k < 8; k++)
        o |= ((w >> (4 * k)) & 15u) << (4 * q4_tiled_nibble(k));
    return o;
}

/* One chunk (CB bytes of one row) a thread, from the stored layout (src) to the tiled one. */
template <int CB> __global__ void tile_kernel(uint8_t *dst, const uint8_t *src, qparams p)
{
    const int chunks = (int)(p.row_bytes / CB);
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * chunks)
        return;
    const int r = (int)(i / chunks), k = (int)(i % chunks);
    const int c = k * tile_chunk_cols(p.method, CB); /* the chunk's first column */
    const uint8_t *from = src + (size_t)r * p.row_bytes + (size_t)k * CB;
    uint8_t *to = dst + code_offset(p, r, c);
    uint32_t w[CB / 4];
#pragma unroll
    for (int i = 0; i < CB / 4; i++) {
        w[i] = reinterpret_cast<const uint32_t *>(from)[i];
        if (p.method == LG_KQ_Q4)
            w[i] = q4_pair_nibbles(w[i]);
    }
    if constexpr (CB == 16)
        *reinterpret_cast<uint4 *>(to) = make_uint4(w[0], w[1], w[2], w[3]);
    else if constexpr (CB == 8)
        *reinterpret_cast<uint2 *>(to) = make_uint2(w[0], w[1]);
    else
        *reinterpret_cast<uint32_t *>(to) = w[0];
}

extern "C" int lg_k_qmat_tile_bytes(const lg_kqmat *w)
{
    if (!w || w->tiled || w->rows % QG_ROWS != 0)
        return 0;
    return codes_load_bytes(w);
}

extern "C" int lg_k_qmat_tile(lg_kqmat *w, void *scratch, size_t scratch_bytes, void *stream)
{
    const char *who = "lg_k_qmat_tile";
    if (check_qmat(w, who) != 0)
        return -1;
    const int cb = lg_k_qmat_tile_bytes(w);
    if (cb == 0)
        return lg_k_fail("%s: a %d x %d matrix (%s) has no tiled layout", who, w->rows, w->cols,
                         w->tiled ? "already tiled" : "rows not a multiple of 16, or no fast path");
    const size_t bytes = (size_t)w->rows * lg_kqmat_row_bytes(w);
    if (!scratch || scratch_bytes < bytes)
        return lg_k_fail("%s: scratch of %zu bytes, %zu needed", who, scratch_bytes, bytes);
    cudaStream_t s = LG_CUDA_STREAM(stream);
    if (cudaMemcpyAsync(scratch, w->codes, bytes, cudaMemcpyDeviceToDevice, s) != cudaSuccess)
        return lg_k_fail("%s: copying the codes: %s", who, cudaGetErrorString(cudaGetLastError()));
    qparams p = params_of(w);
    p.tiled = cb;
    const size_t n = bytes / (size_t)cb;
    const unsigned blocks = (unsigned)((n + 255) / 256);
    uint8_t *dst = (uint8_t *)w->codes;
    const uint8_t *src = (const uint8_t *)scratch;
    if (cb == 16)
        tile_kernel<16><<<blocks, 256, 0, s>>>(dst, src, p);
    else if (cb == 8)
        tile_kernel<8><<<blocks, 256, 0, s>>>(dst, src, p);
    else
        tile_kernel<4><<<blocks, 256, 0, s>>>(dst, src, p);
    LG_CUDA_LAUNCHED(who);
    w->tiled = cb;
    return 0;
}
