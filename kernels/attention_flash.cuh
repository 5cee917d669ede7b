/* Between the two flash prefill kernels (attention_prefill.cu: mma.sync, any tensor-core GPU;
 * attention_prefill_sm90.cu: wgmma, Hopper): their parameters, cp.async, and the walk over the key
 * tiles a mask shows. Not part of the C API. */
#ifndef LG_ATTENTION_FLASH_CUH
#define LG_ATTENTION_FLASH_CUH

#include "attention_internal.cuh"

struct fa_params {
    void *out;
    int ldo;
    const void *q;
    int ldq;
    const void *k;
    int ldk;
    const void *v;
    int ldv;
    int n, q_pos0, T, k_pos0;
    int group;
    float scale_log2;
    lg_dmask mask;
    /* the wgmma kernel's workspace (lg_k_attn_prefill_ws_bytes), NULL where none was given */
    void *ws;
    size_t ws_bytes;
};

/* ---------------------------------------------------------------- PTX wrappers */

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0; /* 0: the 16 bytes are zero-filled */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

static __device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N> static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void ldsm_x4(unsigned *r, const void *smem)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void ldsm_x4_trans(unsigned *r, const void *smem)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}


template <typename T> static __device__ __forceinline__ unsigned pack2(float lo, float hi)
{
    typename lg_elem<T>::pair v = lg_elem<T>::f2_to_pair(lo, hi);
    return *reinterpret_cast<unsigned *>(&v);
}

/* What pack2 stored, back in float (for the bf16 hi/lo split). */
template <typename T> static __device__ __forceinline__ float2 unpack2(unsigned u)
{
    return lg_elem<T>::pair_to_f2(*reinterpret_cast<typename lg_elem<T>::pair *>(&u));
}

/* ---------------------------------------------------------------- tile walk */

/* The first key tile >= j that some query position in [qp0, qp1] sees, or jend. Jumps over the gap
 * between the sinks and the window (sink_window) or to the next strided / local block
 * (block_strided), so skipped tiles cost nothing. */
template <int BN>
static __device__ int fa_next_tile(const fa_params &p, int j, int jend, int qp0, int qp1)
{
    while (j < jend) {
        int k0 = p.k_pos0 + j * BN, k1 = p.k_pos0 + min(j * BN + BN, p.T) - 1;
        if (k0 > qp1)
            return jend;
        if (lg_dmask_any(p.mask, qp0, qp1, k0, k1))
            return j;
        int next = j + 1, pos = -1;
        if (p.mask.kind == LG_KMASK_SINK_WINDOW && k0 >= p.mask.sink) {
            pos = qp0 - p.mask.window + 1; /* the oldest key the window shows */
        } else if (p.mask.kind == LG_KMASK_BLOCK_STRIDED) {
            int B = p.mask.block, S = p.mask.stride;
            int kb1 = k1 / B;
            int strided = (kb1 + 2 + S - 1) / S * S - 1; /* smallest kb > kb1, (kb + 1) % S == 0 */
            int local = max(qp0 / B - p.mask.local + 1, kb1 + 1);
            pos = min(strided, local) * B;
        }
        if (pos > p.k_pos0) {
            int jj = (pos - p.k_pos0) / BN;
            if (jj > next)
                next = jj;
        }
        j = next;
    }
    return jend;
}

/* ---------------------------------------------------------------- the epilogue */

/* This thread's two rows of O (row0 and row0 + 8 of the work item's m0..), held in the mma C
 * layout (o[4 nt + e]: column 8 nt + 2 tq + (e & 1), row + 8 (e >> 1)), divided by the rows' softmax
 * sums (lrow: this thread's part, the rest is in its quad) and stored as T; rows >= rows are not
 * stored. A row that saw no key gets zeros. */
template <typename T, int HD>
static __device__ __forceinline__ void fa_store_o(const float *o, const float *lrow,
                                                  const fa_params &p, int m0, int row0, int rows,
                                                  int h, int tq)
{
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        int row = row0 + r * 8;
        if (row < rows) {
            T *orow = (T *)p.out + (size_t)(m0 + row) * p.ldo + (size_t)h * HD;
#pragma unroll
            for (int nt = 0; nt < HD / 8; nt++) {
                typename lg_elem<T>::pair v = lg_elem<T>::f2_to_pair(o[nt * 4 + 2 * r] * inv,
                                                                     o[nt * 4 + 2 * r + 1] * inv);
                *reinterpret_cast<typename lg_elem<T>::pair *>(orow + nt * 8 + tq * 2) = v;
            }
        }
    }
}

/* The wgmma kernel (attention_prefill_sm90.cu): whether it takes head_dim hd in dt on the current
 * device, and its launch (p as for the mma.sync kernel). */
bool lg_fa_sm90_takes(int hd, lg_kdtype dt);
bool lg_fa_sm90_prefers(const lg_dmask &m); /* whether AUTO takes it for this mask */
int lg_fa_sm90_launch(const fa_params &p, lg_kdtype dt, int n_heads, cudaStream_t s, const char *who);
/* Bytes of workspace the wgmma kernel uses for T keys in dt (0: none), in kv_dim-wide rows. */
size_t lg_fa_sm90_ws_bytes(lg_kdtype dt, int T, int n_kv_heads, int hd);

#endif
