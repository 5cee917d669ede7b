#include "forward_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_cpu.h"
#include "kvcache.h"
#include "matmul_cpu.h"
#include "thread_pool.h"

/* One rounding per multiply and per add, as the comments on summation order assume: clang would
 * otherwise fuse a * b + c into an FMA where the instruction set has one (GCC does not in ISO C). */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#define LG_DEFAULT_CHUNK 256
#define LG_MAX_CHUNK 65536
/* rows of the vocab-wide head computed at once by lg_forward_nll / lg_forward_greedy */
#define LG_HEAD_ROWS 32

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

    lg_attn_scratch attn;
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
    if (s->opts.max_chunk > LG_MAX_CHUNK) {
        lg_err_set(err, "forward state: max_chunk %d is above %d", s->opts.max_chunk, LG_MAX_CHUNK);
        free(s);
        return NULL;
    }
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
    if (lg_attn_scratch_init(&s->attn, s->opts.n_threads, m->head_dim, err) != 0) {
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
    lg_attn_scratch_free(&s->attn);
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
        lg_attn_shape shape = {m->n_heads, m->n_kv_heads, m->head_dim};
        if (lg_attention_cpu(s->pool, &s->attn, c, &shape, s->qkv, s->qkv_dim, n, pos0, s->att, qd,
                             err) != 0)
            return -1;
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
