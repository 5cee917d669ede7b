#include "attention_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One rounding per multiply and per add, as the comments on summation order assume: clang would
 * otherwise fuse a * b + c into an FMA where the instruction set has one (GCC does not in ISO C). */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

/* Built for AVX-512 and AVX2 beside the baseline, chosen at load time by the CPU; the arithmetic is
 * the same in each (no reassociation without -ffast-math), so are the results. */
#if defined(__GNUC__) && defined(__x86_64__)
#define LG_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LG_CPU_CLONES
#endif
/* helpers of a cloned function must be inlined into each clone to get its instruction set */
#if defined(__GNUC__)
#define LG_ALWAYS_INLINE __attribute__((always_inline))
#else
#define LG_ALWAYS_INLINE
#endif

/* ---------------------------------------------------------------- kernels */

/* Does the query at position i see the key at order index a? (A full layer's entry a holds
 * position a.) */
LG_ALWAYS_INLINE static inline int sees(const lg_kvcache *c, int full, long i, int a)
{
    return full ? a <= i : lg_attn_visible(&c->attn, i, c->order_pos[a]);
}

/* Scores of one key for the (up to) 16 queries of a block, qt holding the block transposed
 * ([head_dim][16]). The canonical score of query q and key k is
 *   ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)),
 * a_u = the sum over d = u mod 8 (ascending) of q[d] k[d], then + q[d] k[d] for the last
 * head_dim % 8 dimensions. It is formed the same way for every block size, so
 * decode (blocks of one query) and prefill agree to the bit; the 16 lanes vectorize without
 * reassociating anything. */
#if defined(__GNUC__)
/* 16 floats (a query block's lanes) as one value: 4 SSE, 2 AVX or 1 AVX-512 register */
typedef float lg_v16 __attribute__((vector_size(64)));

LG_ALWAYS_INLINE static inline void block_scores(const float *qt, const float *k, int hd,
                                                 float *out)
{
    const lg_v16 *qv = (const lg_v16 *)qt; /* 64-byte aligned rows of 16 */
    lg_v16 acc[8] = {{0}};
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int u = 0; u < 8; u++)
            acc[u] += qv[d + u] * k[d + u];
    lg_v16 r = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; d < hd; d++)
        r += qv[d] * k[d];
    memcpy(out, &r, sizeof r);
}
#else
LG_ALWAYS_INLINE static inline void block_scores(const float *qt, const float *k, int hd,
                                                 float *out)
{
    float acc[8][LG_ATTN_QUERY_BLOCK] = {{0}};
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int u = 0; u < 8; u++)
            for (int q = 0; q < LG_ATTN_QUERY_BLOCK; q++)
                acc[u][q] += qt[(size_t)(d + u) * LG_ATTN_QUERY_BLOCK + q] * k[d + u];
    for (int q = 0; q < LG_ATTN_QUERY_BLOCK; q++)
        out[q] = ((acc[0][q] + acc[1][q]) + (acc[2][q] + acc[3][q])) +
                 ((acc[4][q] + acc[5][q]) + (acc[6][q] + acc[7][q]));
    for (; d < hd; d++)
        for (int q = 0; q < LG_ATTN_QUERY_BLOCK; q++)
            out[q] += qt[(size_t)d * LG_ATTN_QUERY_BLOCK + q] * k[d];
}
#endif

/* The canonical score of one query (decode): the same sums as one lane of block_scores. */
LG_ALWAYS_INLINE static inline float dot(const float *q, const float *k, int hd)
{
    float acc[8] = {0};
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int u = 0; u < 8; u++)
            acc[u] += q[d + u] * k[d + u];
    float r = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; d < hd; d++)
        r += q[d] * k[d];
    return r;
}

/* acc[q][d] = sum over u ascending of p[u][q] v_u[d] for the 16 queries of a block (p holds 0 where a
 * query does not see the key; adding 0 changes no sum). */
#if defined(__GNUC__)
/* Dimensions [d0, d0 + 16 vt) in tiles of 4 queries x vt vectors, kept in registers over all keys. */
LG_ALWAYS_INLINE static inline void block_outputs_tile(const float *p, const float **vrows,
                                                       const int *keys, int nk, int nq, int off,
                                                       int hd, float *acc, int vt)
{
    enum { QT = 4 };
    for (int q0 = 0; q0 < nq; q0 += QT) {
        lg_v16 o[QT][4] = {{{0}}};
        for (int u = 0; u < nk; u++) {
            const float *v = vrows[keys[u]] + off;
            lg_v16 vv[4];
            memcpy(vv, v, (size_t)vt * sizeof(lg_v16));
            for (int q = 0; q < QT; q++)
                for (int t = 0; t < vt; t++)
                    o[q][t] += p[(size_t)u * LG_ATTN_QUERY_BLOCK + q0 + q] * vv[t];
        }
        for (int q = 0; q < QT; q++)
            memcpy(acc + (size_t)(q0 + q) * hd, o[q], (size_t)vt * sizeof(lg_v16));
    }
}

LG_ALWAYS_INLINE static inline void block_outputs(const float *p, const float **vrows,
                                                  const int *keys, int nk, int nq, int kv_off,
                                                  int hd, float *acc)
{
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64)
        block_outputs_tile(p, vrows, keys, nk, nq, kv_off + d0, hd, acc + d0, 4);
    for (; d0 + 16 <= hd; d0 += 16)
        block_outputs_tile(p, vrows, keys, nk, nq, kv_off + d0, hd, acc + d0, 1);
    /* head dims that are not a multiple of 16: the rest one float at a time */
    for (int q = 0; q < nq; q++)
        for (int d = d0; d < hd; d++)
            acc[(size_t)q * hd + d] = 0;
    if (d0 < hd)
        for (int u = 0; u < nk; u++) {
            const float *v = vrows[keys[u]] + kv_off;
            for (int q = 0; q < nq; q++) {
                float pq = p[(size_t)u * LG_ATTN_QUERY_BLOCK + q];
                for (int d = d0; d < hd; d++)
                    acc[(size_t)q * hd + d] += pq * v[d];
            }
        }
}
#else
static void block_outputs(const float *p, const float **vrows, const int *keys, int nk, int nq,
                          int kv_off, int hd, float *acc)
{
    for (int e = 0; e < LG_ATTN_QUERY_BLOCK * hd; e++)
        acc[e] = 0;
    for (int u = 0; u < nk; u++) {
        const float *v = vrows[keys[u]] + kv_off;
        for (int q = 0; q < nq; q++) {
            float pq = p[(size_t)u * LG_ATTN_QUERY_BLOCK + q];
            for (int d = 0; d < hd; d++)
                acc[(size_t)q * hd + d] += pq * v[d];
        }
    }
}
#endif

/* ---------------------------------------------------------------- one block of queries */

typedef struct attn_job {
    lg_attn_scratch *scratch;
    const lg_kvcache *cache;
    const lg_attn_shape *shape;
    const float *q;
    int ldq;
    float *out;
    int ldo;
    long pos0;
    int n;    /* rows in the chunk */
    int n_qb; /* query blocks per head */
} attn_job;

/* The keys some query of the block [i0, i0 + nq) sees, as indices into the cache order. */
static int block_keys(const lg_kvcache *c, long i0, int nq, int *keys)
{
    int nk = 0;
    if (c->attn.kind == LG_ATTN_FULL) {
        nk = (int)(i0 + nq);
        for (int a = 0; a < nk; a++)
            keys[a] = a;
        return nk;
    }
    for (int a = 0; a < c->n_live; a++)
        for (int q = 0; q < nq; q++)
            if (lg_attn_visible(&c->attn, i0 + q, c->order_pos[a])) {
                keys[nk++] = a;
                break;
            }
    return nk;
}

/* Softmax probabilities of the block's queries over its nk keys, key-major (p[u][q]): the scaled
 * scores, -inf where a query does not see a key, then exp and normalization per query (lane). The
 * lanes past nq end as 0. */
LG_ALWAYS_INLINE static inline void block_probabilities(const attn_job *j, const float *qt,
                                                        const float *q1, const int *keys, int nk,
                                                        long i0, int nq, int kv_off, float *p)
{
    enum { QB = LG_ATTN_QUERY_BLOCK };
    const lg_kvcache *c = j->cache;
    int hd = j->shape->head_dim, full = c->attn.kind == LG_ATTN_FULL;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int u = 0; u < nk; u++) {
        float *row = p + (size_t)u * QB;
        if (nq == 1) { /* decode: one lane's worth of work, not sixteen */
            row[0] = dot(q1, c->order_k[keys[u]] + kv_off, hd);
            for (int q = 1; q < QB; q++)
                row[q] = 0;
        } else {
            block_scores(qt, c->order_k[keys[u]] + kv_off, hd, row);
        }
        for (int q = 0; q < QB; q++)
            row[q] *= scale;
        for (int q = 0; q < nq; q++)
            if (!sees(c, full, i0 + q, keys[u]))
                row[q] = -INFINITY;
    }
    /* every query sees at least its own key, so mx is finite */
    float mx[QB], sum[QB], inv[QB];
    for (int q = 0; q < QB; q++) {
        mx[q] = -INFINITY;
        sum[q] = 0;
    }
    for (int u = 0; u < nk; u++)
        for (int q = 0; q < QB; q++)
            mx[q] = p[(size_t)u * QB + q] > mx[q] ? p[(size_t)u * QB + q] : mx[q];
    for (int u = 0; u < nk; u++)
        for (int q = 0; q < nq; q++) {
            float e = expf(p[(size_t)u * QB + q] - mx[q]);
            p[(size_t)u * QB + q] = e;
            sum[q] += e;
        }
    for (int q = 0; q < QB; q++)
        inv[q] = q < nq ? 1.0f / sum[q] : 0.0f;
    for (int u = 0; u < nk; u++)
        for (int q = 0; q < QB; q++)
            p[(size_t)u * QB + q] *= inv[q];
}

/* Items are (head, block of queries). Keys are visited in ascending position; a key a query does not
 * see gets probability exactly 0, which adds nothing to its sums, so a query's result does not depend
 * on which other queries share its block. */
LG_CPU_CLONES static void attention_items(void *arg, int begin, int end, int thread)
{
    enum { QB = LG_ATTN_QUERY_BLOCK };
    const attn_job *j = arg;
    lg_attn_scratch *s = j->scratch;
    int hd = j->shape->head_dim, group = j->shape->n_heads / j->shape->n_kv_heads;
    float *p = s->scores + (size_t)thread * QB * s->cap;
    int *keys = s->keys + (size_t)thread * s->cap;
    float *acc = s->block + (size_t)thread * 2 * QB * hd;
    float *qt = acc + (size_t)QB * hd;

    for (int it = begin; it < end; it++) {
        int h = it / j->n_qb, t0 = (it % j->n_qb) * QB;
        int nq = j->n - t0 < QB ? j->n - t0 : QB;
        long i0 = j->pos0 + t0;
        int kv_off = (h / group) * hd;
        const float *q1 = j->q + (size_t)t0 * j->ldq + (size_t)h * hd;
        int nk = block_keys(j->cache, i0, nq, keys);

        if (nq > 1) /* the block's queries transposed, padded with zeros to 16 */
            for (int d = 0; d < hd; d++)
                for (int q = 0; q < QB; q++)
                    qt[(size_t)d * QB + q] = q < nq ? q1[(size_t)q * j->ldq + d] : 0.0f;
        block_probabilities(j, qt, q1, keys, nk, i0, nq, kv_off, p);
        block_outputs(p, j->cache->order_v, keys, nk, nq, kv_off, hd, acc);
        for (int q = 0; q < nq; q++)
            memcpy(j->out + (size_t)(t0 + q) * j->ldo + (size_t)h * hd, acc + (size_t)q * hd,
                   (size_t)hd * sizeof(float));
    }
}

/* ---------------------------------------------------------------- scratch and entry point */

int lg_attn_scratch_init(lg_attn_scratch *s, int n_threads, int head_dim, lg_err *err)
{
    memset(s, 0, sizeof *s);
    s->n_threads = n_threads;
    s->head_dim = head_dim;
    /* 64-byte aligned: the transposed queries are read as vectors of 16 floats */
    size_t bytes = (size_t)n_threads * 2 * LG_ATTN_QUERY_BLOCK * head_dim * sizeof(float);
    s->block = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!s->block)
        return lg_err_set(err, "attention: out of memory");
    return 0;
}

void lg_attn_scratch_free(lg_attn_scratch *s)
{
    free(s->scores);
    free(s->keys);
    free(s->block);
    memset(s, 0, sizeof *s);
}

static int scratch_reserve(lg_attn_scratch *s, int need, lg_err *err)
{
    if (need <= s->cap)
        return 0;
    long cap = s->cap ? s->cap : 1024;
    while (cap < need)
        cap *= 2;
    size_t n = (size_t)cap * s->n_threads;
    float *sc = realloc(s->scores, n * LG_ATTN_QUERY_BLOCK * sizeof(float));
    if (sc)
        s->scores = sc;
    int *keys = realloc(s->keys, n * sizeof(int));
    if (keys)
        s->keys = keys;
    if (!sc || !keys)
        return lg_err_set(err, "attention: out of memory for %ld keys", cap);
    s->cap = (int)cap;
    return 0;
}

int lg_attention_cpu(lg_pool *pool, lg_attn_scratch *scratch, const lg_kvcache *c,
                     const lg_attn_shape *shape, const float *q, int ldq, int n, long pos0,
                     float *out, int ldo, lg_err *err)
{
    if (scratch_reserve(scratch, c->n_live, err) != 0)
        return -1;
    int n_qb = (n + LG_ATTN_QUERY_BLOCK - 1) / LG_ATTN_QUERY_BLOCK;
    attn_job job = {scratch, c, shape, q, ldq, out, ldo, pos0, n, n_qb};
    lg_pool_run(pool, shape->n_heads * n_qb, 1, attention_items, &job);
    return 0;
}
