#include "forward_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "matmul_cpu.h"
#include "thread_pool.h"

#define LG_DEFAULT_CHUNK 256
/* rows of the vocab-wide head computed at once by lg_forward_nll / lg_forward_greedy */
#define LG_HEAD_ROWS 32
/* Queries of one head handled together: each key and value row is read once for all of them (the
 * cache is far larger than the L2 cache for long prompts, so this divides the memory traffic). */
#define LG_ATTN_QUERY_BLOCK 16

struct lg_forward_state {
    const lg_model *m;
    lg_forward_opts opts;
    lg_pool *pool;
    lg_kvcache *caches; /* one per layer */
    long n_pos;         /* positions processed; -1 after a failed call (a new sequence must start) */
    lg_hidden_fn hook;
    void *hook_user;

    /* activations of one chunk of up to max_chunk rows */
    int qkv_dim;        /* (n_heads + 2 n_kv_heads) head_dim: one row of q | k | v */
    float *x;           /* [C, dim] residual stream */
    float *xb;          /* [C, dim] normed */
    float *qkv;         /* [C, qkv_dim] */
    float *att;         /* [C, n_heads head_dim] attention output */
    float *proj;        /* [C, dim] output of o_proj / down_proj */
    float *gate_up;     /* [C, 2 ffn_dim] */
    float *mlp;         /* [C, ffn_dim] silu(gate) * up */
    float *head;        /* [LG_HEAD_ROWS, vocab_size], made on first use */

    /* RoPE */
    float *inv_freq;    /* [head_dim / 2], float32 as transformers keeps it */
    float attn_scale;   /* yarn's factor on cos and sin, 1 otherwise */
    long rope_len;      /* the seq_len inv_freq was made for (dynamic NTK) */
    float *cos, *sin;   /* [C, head_dim / 2] for the chunk's positions */

    /* attention scratch, per thread */
    int scratch_cap;
    float *scores;      /* [n_threads, query block, scratch_cap] */
    int *visible;       /* [n_threads, scratch_cap] keys a query block sees (indices into order) */
    float *att_acc;     /* [n_threads, 2, query block, head_dim]: outputs being summed, queries */
};

/* ---------------------------------------------------------------- state */

static void rope_set(lg_forward_state *s, long seq_len)
{
    const lg_model *m = s->m;
    lg_rope_inv_freq(&m->rope, m->head_dim, m->max_pos, (int)seq_len, s->inv_freq, &s->attn_scale);
    s->rope_len = seq_len;
}

lg_forward_state *lg_forward_state_new(const lg_model *m, const lg_forward_opts *opts, lg_err *err)
{
    lg_forward_state *s = calloc(1, sizeof *s);
    if (!s) {
        lg_err_set(err, "forward state: out of memory");
        return NULL;
    }
    s->m = m;
    if (opts)
        s->opts = *opts;
    if (s->opts.max_chunk <= 0)
        s->opts.max_chunk = LG_DEFAULT_CHUNK;
    if (s->opts.max_seq <= 0)
        s->opts.max_seq = m->max_pos > 0 ? m->max_pos : 2048;
    int C = s->opts.max_chunk, half = m->head_dim / 2;
    s->qkv_dim = (m->n_heads + 2 * m->n_kv_heads) * m->head_dim;
    size_t c = (size_t)C;
    s->x = malloc(c * m->dim * sizeof(float));
    s->xb = malloc(c * m->dim * sizeof(float));
    s->qkv = malloc(c * s->qkv_dim * sizeof(float));
    s->att = malloc(c * m->n_heads * m->head_dim * sizeof(float));
    s->proj = malloc(c * m->dim * sizeof(float));
    s->gate_up = malloc(c * 2 * m->ffn_dim * sizeof(float));
    s->mlp = malloc(c * m->ffn_dim * sizeof(float));
    s->inv_freq = malloc((size_t)half * sizeof(float));
    s->cos = malloc(c * half * sizeof(float));
    s->sin = malloc(c * half * sizeof(float));
    s->caches = calloc((size_t)m->n_layers, sizeof *s->caches);
    if (!s->x || !s->xb || !s->qkv || !s->att || !s->proj || !s->gate_up || !s->mlp ||
        !s->inv_freq || !s->cos || !s->sin || !s->caches) {
        lg_err_set(err, "forward state: out of memory for chunks of %d rows", C);
        lg_forward_state_free(s);
        return NULL;
    }
    for (int l = 0; l < m->n_layers; l++) {
        if (lg_kvcache_init(&s->caches[l], &m->layers[l], m->n_kv_heads * m->head_dim, C,
                            s->opts.max_seq, err) != 0) {
            lg_err_prefix(err, "layer %d", l);
            lg_forward_state_free(s);
            return NULL;
        }
    }
    s->pool = lg_pool_new(s->opts.n_threads, err);
    if (!s->pool) {
        lg_forward_state_free(s);
        return NULL;
    }
    s->opts.n_threads = lg_pool_threads(s->pool);
    s->att_acc = aligned_alloc(64, ((size_t)s->opts.n_threads * 2 * LG_ATTN_QUERY_BLOCK * m->head_dim *
                                    sizeof(float) + 63) / 64 * 64);
    if (!s->att_acc) {
        lg_err_set(err, "forward state: out of memory");
        lg_forward_state_free(s);
        return NULL;
    }
    rope_set(s, m->max_pos);
    return s;
}

void lg_forward_state_free(lg_forward_state *s)
{
    if (!s)
        return;
    if (s->caches)
        for (int l = 0; l < s->m->n_layers; l++)
            lg_kvcache_free(&s->caches[l]);
    free(s->caches);
    lg_pool_free(s->pool);
    free(s->x);
    free(s->xb);
    free(s->qkv);
    free(s->att);
    free(s->proj);
    free(s->gate_up);
    free(s->mlp);
    free(s->head);
    free(s->inv_freq);
    free(s->cos);
    free(s->sin);
    free(s->scores);
    free(s->visible);
    free(s->att_acc);
    free(s);
}

void lg_forward_reset(lg_forward_state *s)
{
    for (int l = 0; l < s->m->n_layers; l++)
        lg_kvcache_reset(&s->caches[l]);
    s->n_pos = 0;
}

long lg_forward_pos(const lg_forward_state *s)
{
    return s->n_pos;
}

void lg_forward_set_hidden_hook(lg_forward_state *s, lg_hidden_fn fn, void *user)
{
    s->hook = fn;
    s->hook_user = user;
}

void lg_forward_kv_bytes(const lg_forward_state *s, size_t *live, size_t *alloc)
{
    for (int k = 0; k < 3; k++) {
        if (live)
            live[k] = 0;
        if (alloc)
            alloc[k] = 0;
    }
    for (int l = 0; l < s->m->n_layers; l++) {
        const lg_kvcache *c = &s->caches[l];
        if (live)
            live[c->attn.kind] += lg_kvcache_live_bytes(c);
        if (alloc)
            alloc[c->attn.kind] += lg_kvcache_alloc_bytes(c);
    }
}

/* ---------------------------------------------------------------- elementwise operations */

/* transformers' LlamaRMSNorm in float32: w * (x * rsqrt(mean(x^2) + eps)). The mean is summed in
 * double and rounded once: torch's float32 reduction is close to exact at these sizes. */
static void rmsnorm_rows(float *out, const float *x, const float *w, int n, int dim, float eps)
{
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim;
        float *o = out + (size_t)t * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float var = (float)(ss / dim);
        float r = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < dim; i++)
            o[i] = w[i] * (xr[i] * r);
    }
}

static void add_rows(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* SwiGLU: silu(gate) * up, silu(g) = g / (1 + exp(-g)) as torch computes it in float32. */
static void swiglu_rows(float *out, const float *gate_up, int n, int ffn)
{
    for (int t = 0; t < n; t++) {
        const float *g = gate_up + (size_t)t * 2 * ffn, *u = g + ffn;
        float *o = out + (size_t)t * ffn;
        for (int i = 0; i < ffn; i++)
            o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* ---------------------------------------------------------------- RoPE */

/* cos/sin of the chunk's positions. transformers computes the angle pos * inv_freq in float32 and
 * cos/sin of it in float32, then multiplies by attention_scaling; so do we (cos of the float angle is
 * taken in double and rounded once). Dynamic NTK follows transformers' dynamic_rope_update: inv_freq
 * is remade when the sequence grows past the length it was made for, and reset below max_pos. */
static void rope_tables(lg_forward_state *s, long pos0, int n)
{
    const lg_model *m = s->m;
    if (m->rope.type == LG_ROPE_DYNAMIC) {
        long seq_len = pos0 + n;
        if (seq_len > s->rope_len)
            rope_set(s, seq_len);
        else if (seq_len < m->max_pos && s->rope_len > m->max_pos)
            rope_set(s, m->max_pos);
    }
    int half = m->head_dim / 2;
    for (int t = 0; t < n; t++) {
        float p = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            float angle = p * s->inv_freq[i];
            s->cos[(size_t)t * half + i] = (float)cos((double)angle) * s->attn_scale;
            s->sin[(size_t)t * half + i] = (float)sin((double)angle) * s->attn_scale;
        }
    }
}

/* rotate-half: element i pairs with i + hd/2 (x * cos + rotate_half(x) * sin). */
static void rope_apply(float *v, const float *c, const float *sn, int half)
{
    for (int i = 0; i < half; i++) {
        float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c[i] - x1 * sn[i];
        v[i + half] = x1 * c[i] + x0 * sn[i];
    }
}

static void rope_chunk(lg_forward_state *s, int n)
{
    const lg_model *m = s->m;
    int hd = m->head_dim, half = hd / 2;
    for (int t = 0; t < n; t++) {
        float *row = s->qkv + (size_t)t * s->qkv_dim;
        const float *c = s->cos + (size_t)t * half, *sn = s->sin + (size_t)t * half;
        for (int h = 0; h < m->n_heads + m->n_kv_heads; h++) /* q heads then k heads */
            rope_apply(row + (size_t)h * hd, c, sn, half);
    }
}

/* ---------------------------------------------------------------- attention */

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

typedef struct attn_job {
    lg_forward_state *s;
    const lg_kvcache *cache;
    long pos0;
    int n;       /* rows in the chunk */
    int n_qb;    /* query blocks per head */
} attn_job;

/* Does the query at position i see the key at order index a? (A full layer's entry a holds
 * position a.) */
LG_ALWAYS_INLINE static inline int sees(const lg_kvcache *c, int full, long i, int a)
{
    return full ? a <= i : lg_attn_visible(&c->attn, i, c->order_pos[a]);
}

/* Scores of one key for the (up to) 16 queries of a block, qt holding the block transposed
 * ([head_dim][16]). The canonical score of query q and key k is
 *   ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), a_u = sum over d = u mod 8 (ascending) of q[d] k[d],
 * then + q[d] k[d] for the head_dim % 8 last d. It is formed the same way for every block size, so
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

/* acc[q][d] = sum over u ascending of p[u][q] v_u[d] for the 16 queries of a block (p holds 0 where a
 * query does not see the key; adding 0 changes no sum). */
#if defined(__GNUC__)
/* Dimensions [d0, d0 + 16 vt) in tiles of 4 queries x vt vectors, kept in registers over all keys. */
LG_ALWAYS_INLINE static inline void block_outputs_tile(const float *p, const float *const *vrows,
                                                       const int *keys, int nk, int off, int hd,
                                                       float *acc, int vt)
{
    enum { QT = 4 };
    for (int q0 = 0; q0 < LG_ATTN_QUERY_BLOCK; q0 += QT) {
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

LG_ALWAYS_INLINE static inline void block_outputs(const float *p, const float *const *vrows,
                                                  const int *keys, int nk, int kv_off, int hd,
                                                  float *acc)
{
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64)
        block_outputs_tile(p, vrows, keys, nk, kv_off + d0, hd, acc + d0, 4);
    for (; d0 + 16 <= hd; d0 += 16)
        block_outputs_tile(p, vrows, keys, nk, kv_off + d0, hd, acc + d0, 1);
    /* head dims that are not a multiple of 16: the rest one float at a time */
    for (int q = 0; q < LG_ATTN_QUERY_BLOCK; q++)
        for (int d = d0; d < hd; d++)
            acc[(size_t)q * hd + d] = 0;
    if (d0 < hd)
        for (int u = 0; u < nk; u++) {
            const float *v = vrows[keys[u]] + kv_off;
            for (int q = 0; q < LG_ATTN_QUERY_BLOCK; q++) {
                float pq = p[(size_t)u * LG_ATTN_QUERY_BLOCK + q];
                for (int d = d0; d < hd; d++)
                    acc[(size_t)q * hd + d] += pq * v[d];
            }
        }
}
#else
static void block_outputs(const float *p, const float *const *vrows, const int *keys, int nk,
                          int kv_off, int hd, float *acc)
{
    for (int e = 0; e < LG_ATTN_QUERY_BLOCK * hd; e++)
        acc[e] = 0;
    for (int u = 0; u < nk; u++) {
        const float *v = vrows[keys[u]] + kv_off;
        for (int q = 0; q < LG_ATTN_QUERY_BLOCK; q++) {
            float pq = p[(size_t)u * LG_ATTN_QUERY_BLOCK + q];
            for (int d = 0; d < hd; d++)
                acc[(size_t)q * hd + d] += pq * v[d];
        }
    }
}
#endif

/* Built for AVX-512 and AVX2 beside the baseline, chosen at load time by the CPU; the arithmetic is
 * the same in each (no reassociation without -ffast-math), so are the results. Items are (head,
 * block of queries). Keys are visited in ascending position; a key a query does not see gets
 * probability exactly 0, which adds nothing to its sums, so a query's result does not depend on
 * which other queries share its block. */
LG_CPU_CLONES static void attention_items(void *arg, int begin, int end, int thread)
{
    enum { QB = LG_ATTN_QUERY_BLOCK };
    const attn_job *j = arg;
    lg_forward_state *s = j->s;
    const lg_model *m = s->m;
    const lg_kvcache *c = j->cache;
    int hd = m->head_dim, nh = m->n_heads, qd = nh * hd, group = m->n_heads / m->n_kv_heads;
    int full = c->attn.kind == LG_ATTN_FULL;
    float scale = (float)(1.0 / sqrt((double)hd));
    /* per-thread scratch: scores [key][QB], the keys' order indices, output sums [QB][hd] and the
     * transposed queries [hd][QB] */
    float *sc = s->scores + (size_t)thread * QB * s->scratch_cap;
    int *keys = s->visible + (size_t)thread * s->scratch_cap;
    float *acc = s->att_acc + (size_t)thread * 2 * QB * hd;
    float *qt = acc + (size_t)QB * hd;

    for (int it = begin; it < end; it++) {
        int h = it / j->n_qb, t0 = (it % j->n_qb) * QB;
        int nq = j->n - t0 < QB ? j->n - t0 : QB;
        long i0 = j->pos0 + t0, i_last = i0 + nq - 1;
        int kv_off = (h / group) * hd;

        /* the keys some query of the block sees */
        int nk = 0;
        if (full) {
            nk = (int)(i_last + 1);
            for (int a = 0; a < nk; a++)
                keys[a] = a;
        } else {
            for (int a = 0; a < c->n_live; a++)
                for (int q = 0; q < nq; q++)
                    if (lg_attn_visible(&c->attn, i0 + q, c->order_pos[a])) {
                        keys[nk++] = a;
                        break;
                    }
        }

        for (int d = 0; d < hd; d++)
            for (int q = 0; q < QB; q++)
                qt[(size_t)d * QB + q] =
                    q < nq ? s->qkv[(size_t)(t0 + q) * s->qkv_dim + (size_t)h * hd + d] : 0.0f;

        /* scaled scores; -inf where the query does not see the key */
        for (int u = 0; u < nk; u++) {
            float *row = sc + (size_t)u * QB;
            block_scores(qt, c->order_k[keys[u]] + kv_off, hd, row);
            for (int q = 0; q < QB; q++)
                row[q] *= scale;
            for (int q = 0; q < nq; q++)
                if (!sees(c, full, i0 + q, keys[u]))
                    row[q] = -INFINITY;
        }
        /* softmax per query (lane): every query sees at least its own key, so mx is finite */
        float mx[QB], sum[QB], inv[QB];
        for (int q = 0; q < QB; q++) {
            mx[q] = -INFINITY;
            sum[q] = 0;
        }
        for (int u = 0; u < nk; u++)
            for (int q = 0; q < QB; q++)
                mx[q] = sc[(size_t)u * QB + q] > mx[q] ? sc[(size_t)u * QB + q] : mx[q];
        for (int u = 0; u < nk; u++)
            for (int q = 0; q < nq; q++) {
                float e = expf(sc[(size_t)u * QB + q] - mx[q]);
                sc[(size_t)u * QB + q] = e;
                sum[q] += e;
            }
        for (int q = 0; q < QB; q++)
            inv[q] = q < nq ? 1.0f / sum[q] : 0.0f;
        for (int u = 0; u < nk; u++)
            for (int q = 0; q < QB; q++)
                sc[(size_t)u * QB + q] *= inv[q];

        /* outputs: sum of p * v over the keys in position order */
        block_outputs(sc, (const float *const *)c->order_v, keys, nk, kv_off, hd, acc);
        for (int q = 0; q < nq; q++)
            memcpy(s->att + (size_t)(t0 + q) * qd + (size_t)h * hd, acc + (size_t)q * hd,
                   (size_t)hd * sizeof(float));
    }
}

static int ensure_scratch(lg_forward_state *s, int need, lg_err *err)
{
    if (need <= s->scratch_cap)
        return 0;
    int cap = s->scratch_cap ? s->scratch_cap : 1024;
    while (cap < need)
        cap *= 2;
    size_t n = (size_t)cap * s->opts.n_threads;
    float *sc = realloc(s->scores, n * LG_ATTN_QUERY_BLOCK * sizeof(float));
    if (sc)
        s->scores = sc;
    int *keys = realloc(s->visible, n * sizeof(int));
    if (keys)
        s->visible = keys;
    if (!sc || !keys)
        return lg_err_set(err, "attention: out of memory for %d keys", cap);
    s->scratch_cap = cap;
    return 0;
}

static void attention(lg_forward_state *s, const lg_kvcache *c, long pos0, int n)
{
    int n_qb = (n + LG_ATTN_QUERY_BLOCK - 1) / LG_ATTN_QUERY_BLOCK;
    attn_job job = {s, c, pos0, n, n_qb};
    lg_pool_run(s->pool, s->m->n_heads * n_qb, 1, attention_items, &job);
}

/* ---------------------------------------------------------------- the layers */

/* Runs n <= max_chunk tokens through every layer; leaves the residual stream in s->x. */
static int forward_chunk(lg_forward_state *s, const int *tokens, int n, long pos0, lg_err *err)
{
    const lg_model *m = s->m;
    int H = m->dim, F = m->ffn_dim, qd = m->n_heads * m->head_dim;
    int kvd = m->n_kv_heads * m->head_dim;
    for (int t = 0; t < n; t++)
        memcpy(s->x + (size_t)t * H, m->embed + (size_t)tokens[t] * H, (size_t)H * sizeof(float));
    rope_tables(s, pos0, n);

    for (int l = 0; l < m->n_layers; l++) {
        const lg_layer_weights *w = &m->w[l];
        lg_kvcache *c = &s->caches[l];

        rmsnorm_rows(s->xb, s->x, w->attn_norm, n, H, m->rms_eps);
        lg_matmul(s->pool, s->qkv, s->qkv_dim, s->xb, H, n, &w->wqkv);
        rope_chunk(s, n);
        if (lg_kvcache_append(c, s->qkv + qd, s->qkv + qd + kvd, s->qkv_dim, n, err) != 0) {
            lg_err_prefix(err, "layer %d", l);
            return -1;
        }
        if (ensure_scratch(s, c->n_live, err) != 0)
            return -1;
        attention(s, c, pos0, n);
        lg_matmul(s->pool, s->proj, H, s->att, qd, n, &w->wo);
        add_rows(s->x, s->proj, (size_t)n * H);

        rmsnorm_rows(s->xb, s->x, w->mlp_norm, n, H, m->rms_eps);
        lg_matmul(s->pool, s->gate_up, 2 * F, s->xb, H, n, &w->w_gate_up);
        swiglu_rows(s->mlp, s->gate_up, n, F);
        lg_matmul(s->pool, s->proj, H, s->mlp, F, n, &w->w_down);
        add_rows(s->x, s->proj, (size_t)n * H);

        if (s->hook)
            s->hook(s->hook_user, l, pos0, n, s->x);
    }
    return 0;
}

/* Logits of rows [r0, r0 + n) of the chunk in s->x: final norm, then lm_head. */
static void head_rows(lg_forward_state *s, int r0, int n, float *logits)
{
    const lg_model *m = s->m;
    rmsnorm_rows(s->xb, s->x + (size_t)r0 * m->dim, m->final_norm, n, m->dim, m->rms_eps);
    lg_matmul(s->pool, logits, m->vocab_size, s->xb, m->dim, n, &m->lm_head);
}

/* ---------------------------------------------------------------- calls */

static int check_call(lg_forward_state *s, const int *tokens, int n, long pos0, lg_err *err)
{
    if (n <= 0)
        return lg_err_set(err, "forward: %d tokens; at least one is needed", n);
    if (pos0 != 0 && pos0 != s->n_pos) {
        if (s->n_pos < 0)
            return lg_err_set(err, "forward: pos0 %ld after a failed call; start a new sequence "
                                   "at 0", pos0);
        return lg_err_set(err, "forward: pos0 %ld, but the cache holds positions 0..%ld (continue "
                               "at %ld or start again at 0)", pos0, s->n_pos - 1, s->n_pos);
    }
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= s->m->vocab_size)
            return lg_err_set(err, "forward: token %d at index %d is outside the vocabulary "
                                   "(0..%d)", tokens[t], t, s->m->vocab_size - 1);
    if (pos0 == 0)
        lg_forward_reset(s);
    return 0;
}

int lg_forward_tokens(lg_forward_state *s, const int *tokens, int n, long pos0, lg_logits_rows rows,
                      float *logits, lg_err *err)
{
    if (check_call(s, tokens, n, pos0, err) != 0)
        return -1;
    if (rows != LG_LOGITS_NONE && !logits)
        return lg_err_set(err, "forward: logits requested without a buffer");
    int C = s->opts.max_chunk, V = s->m->vocab_size;
    for (int off = 0; off < n; off += C) {
        int cn = n - off < C ? n - off : C;
        if (forward_chunk(s, tokens + off, cn, pos0 + off, err) != 0) {
            s->n_pos = -1;
            return -1;
        }
        s->n_pos = pos0 + off + cn;
        if (rows == LG_LOGITS_ALL)
            head_rows(s, 0, cn, logits + (size_t)off * V);
        else if (rows == LG_LOGITS_LAST && off + cn == n)
            head_rows(s, cn - 1, 1, logits);
    }
    return 0;
}

static int ensure_head(lg_forward_state *s, lg_err *err)
{
    if (!s->head)
        s->head = malloc((size_t)LG_HEAD_ROWS * s->m->vocab_size * sizeof(float));
    if (!s->head)
        return lg_err_set(err, "forward: out of memory for logits");
    return 0;
}

/* -log softmax(logits)[target], in double. */
static float row_nll(const float *logits, int V, int target)
{
    float mx = logits[0];
    for (int i = 1; i < V; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((double)logits[i] - mx);
    return (float)(log(sum) + mx - logits[target]);
}

int lg_forward_nll(lg_forward_state *s, const int *tokens, int n, long pos0, float *nll,
                   lg_err *err)
{
    if (n < 2)
        return lg_err_set(err, "nll: %d tokens; at least 2 are needed", n);
    if (check_call(s, tokens, n, pos0, err) != 0 || ensure_head(s, err) != 0)
        return -1;
    int C = s->opts.max_chunk, V = s->m->vocab_size, fed = n - 1;
    for (int off = 0; off < fed; off += C) {
        int cn = fed - off < C ? fed - off : C;
        if (forward_chunk(s, tokens + off, cn, pos0 + off, err) != 0) {
            s->n_pos = -1;
            return -1;
        }
        s->n_pos = pos0 + off + cn;
        for (int r = 0; r < cn; r += LG_HEAD_ROWS) {
            int rn = cn - r < LG_HEAD_ROWS ? cn - r : LG_HEAD_ROWS;
            head_rows(s, r, rn, s->head);
            for (int i = 0; i < rn; i++)
                nll[off + r + i] = row_nll(s->head + (size_t)i * V, V, tokens[off + r + i + 1]);
        }
    }
    return 0;
}

int lg_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int lg_forward_greedy(lg_forward_state *s, const int *prompt, int n_prompt, int n_new, int *out,
                      lg_err *err)
{
    if (ensure_head(s, err) != 0)
        return -1;
    int V = s->m->vocab_size;
    if (n_new <= 0)
        return 0;
    if (lg_forward_tokens(s, prompt, n_prompt, 0, LG_LOGITS_LAST, s->head, err) != 0)
        return -1;
    for (int j = 0; j < n_new; j++) {
        out[j] = lg_argmax(s->head, V);
        if (j + 1 < n_new &&
            lg_forward_tokens(s, &out[j], 1, n_prompt + j, LG_LOGITS_LAST, s->head, err) != 0)
            return -1;
    }
    return 0;
}
