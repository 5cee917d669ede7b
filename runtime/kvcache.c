#include "kvcache.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Is position j kept for good (not merely while it is recent)? */
static int kept_for_good(const lg_layer_attn *a, long j)
{
    switch (a->kind) {
    case LG_ATTN_SINK_WINDOW:
        return j < a->sink;
    case LG_ATTN_BLOCK_STRIDED:
        return (j / a->block + 1) % a->stride == 0;
    default:
        return 1;
    }
}

/* ---------------------------------------------------------------- stores */

static int store_resize(lg_kv_store *s, int cap, int kv_dim, lg_err *err)
{
    size_t row = (size_t)kv_dim * sizeof(float);
    float *k = realloc(s->k, (size_t)cap * row);
    if (k)
        s->k = k;
    float *v = realloc(s->v, (size_t)cap * row);
    if (v)
        s->v = v;
    int *pos = realloc(s->pos, (size_t)cap * sizeof(int));
    if (pos)
        s->pos = pos;
    if (!k || !v || !pos)
        return lg_err_set(err, "kv cache: out of memory for %d positions", cap);
    s->cap = cap;
    return 0;
}

static void store_free(lg_kv_store *s)
{
    free(s->k);
    free(s->v);
    free(s->pos);
    memset(s, 0, sizeof *s);
}

static void store_put(lg_kv_store *s, int slot, const float *k, const float *v, int kv_dim, long j)
{
    memcpy(s->k + (size_t)slot * kv_dim, k, (size_t)kv_dim * sizeof(float));
    memcpy(s->v + (size_t)slot * kv_dim, v, (size_t)kv_dim * sizeof(float));
    s->pos[slot] = (int)j;
}

/* Doubles cap toward `limit`; at least `need`. */
static int grown(int cap, int need, int limit)
{
    long c = cap > 0 ? cap : 64;
    while (c < need)
        c *= 2;
    if (c < 2L * cap)
        c = 2L * cap;
    return c > limit ? limit : (int)c;
}

/* ---------------------------------------------------------------- cache */

int lg_kvcache_init(lg_kvcache *c, const lg_layer_attn *attn, int kv_dim, int max_chunk,
                    int reserve, lg_err *err)
{
    memset(c, 0, sizeof *c);
    if (lg_layer_attn_check(attn, "kv cache", err) != 0)
        return -1;
    if (kv_dim <= 0 || max_chunk <= 0)
        return lg_err_set(err, "kv cache: kv_dim %d and max_chunk %d must be positive", kv_dim,
                          max_chunk);
    c->attn = *attn;
    c->kv_dim = kv_dim;
    c->max_chunk = max_chunk;
    long ring = 0, kept = reserve > 0 ? reserve : 1;
    switch (attn->kind) {
    case LG_ATTN_SINK_WINDOW:
        ring = (long)attn->window - 1 + max_chunk;
        kept = attn->sink;
        break;
    case LG_ATTN_BLOCK_STRIDED:
        ring = (long)attn->local * attn->block - 1 + max_chunk;
        kept = kept / attn->stride + attn->block;
        break;
    default:
        break;
    }
    if (ring > INT_MAX / 2)
        return lg_err_set(err, "kv cache: %s layer needs a ring of %ld positions, too many",
                          lg_attn_kind_name(attn->kind), ring);
    c->ring_max = (int)ring;
    /* sizes start small and grow: a huge window costs only what the sequence uses */
    int kept0 = kept > 4096 ? 4096 : (int)kept;
    int ring0 = ring > 256 ? 256 : (int)ring;
    if ((kept0 > 0 && store_resize(&c->kept, kept0, kv_dim, err) != 0) ||
        (ring0 > 0 && store_resize(&c->ring, ring0, kv_dim, err) != 0)) {
        lg_kvcache_free(c);
        return -1;
    }
    return 0;
}

void lg_kvcache_free(lg_kvcache *c)
{
    if (!c)
        return;
    store_free(&c->kept);
    store_free(&c->ring);
    free(c->order_pos);
    free(c->order_k);
    free(c->order_v);
    memset(c, 0, sizeof *c);
}

void lg_kvcache_reset(lg_kvcache *c)
{
    c->kept.len = c->ring.len = c->ring_next = c->n_live = 0;
    c->n_pos = 0;
}

/* order = kept positions and ring positions (oldest first), merged by position. */
static int rebuild_order(lg_kvcache *c, lg_err *err)
{
    int live = c->kept.len + c->ring.len;
    if (live > c->order_cap) {
        int cap = grown(c->order_cap, live, INT_MAX / 2);
        int *p = realloc(c->order_pos, (size_t)cap * sizeof(int));
        if (p)
            c->order_pos = p;
        const float **k = realloc(c->order_k, (size_t)cap * sizeof(float *));
        if (k)
            c->order_k = k;
        const float **v = realloc(c->order_v, (size_t)cap * sizeof(float *));
        if (v)
            c->order_v = v;
        if (!p || !k || !v)
            return lg_err_set(err, "kv cache: out of memory for %d positions", cap);
        c->order_cap = cap;
    }
    const lg_kv_store *kp = &c->kept, *rg = &c->ring;
    /* the ring is filled in turn: its oldest slot is ring_next once it is full, 0 before */
    int ring_start = rg->len == rg->cap ? c->ring_next % (rg->cap ? rg->cap : 1) : 0;
    int n = 0, a = 0, b = 0;
    while (a < kp->len || b < rg->len) {
        int rs = rg->cap ? (ring_start + b) % rg->cap : 0;
        const lg_kv_store *st;
        int slot;
        if (b >= rg->len || (a < kp->len && kp->pos[a] < rg->pos[rs])) {
            st = kp;
            slot = a++;
        } else {
            st = rg;
            slot = rs;
            b++;
        }
        c->order_pos[n] = st->pos[slot];
        c->order_k[n] = st->k + (size_t)slot * c->kv_dim;
        c->order_v[n] = st->v + (size_t)slot * c->kv_dim;
        n++;
    }
    c->n_live = n;
    return 0;
}

int lg_kvcache_append(lg_kvcache *c, const float *k, const float *v, int ld, int n, lg_err *err)
{
    if (n < 0 || n > c->max_chunk)
        return lg_err_set(err, "kv cache: append of %d positions, but the cache was made for "
                               "chunks of at most %d", n, c->max_chunk);
    if (c->n_pos + n > INT_MAX)
        return lg_err_set(err, "kv cache: position %ld is past the largest supported",
                          c->n_pos + n);
    for (int t = 0; t < n; t++) {
        long j = c->n_pos + t;
        const float *kr = k + (size_t)t * ld, *vr = v + (size_t)t * ld;
        if (kept_for_good(&c->attn, j)) {
            lg_kv_store *s = &c->kept;
            if (s->len == s->cap &&
                store_resize(s, grown(s->cap, s->len + 1, INT_MAX / 2), c->kv_dim, err) != 0)
                return -1;
            store_put(s, s->len++, kr, vr, c->kv_dim, j);
        } else {
            lg_kv_store *s = &c->ring;
            /* below ring_max the ring has never wrapped: it grows in place */
            if (s->len == s->cap && s->cap < c->ring_max) {
                if (store_resize(s, grown(s->cap, s->len + 1, c->ring_max), c->kv_dim, err) != 0)
                    return -1;
                c->ring_next = s->len;
            }
            store_put(s, c->ring_next, kr, vr, c->kv_dim, j);
            c->ring_next = (c->ring_next + 1) % s->cap;
            if (s->len < s->cap)
                s->len++;
        }
    }
    c->n_pos += n;
    return rebuild_order(c, err);
}

size_t lg_kvcache_live_bytes(const lg_kvcache *c)
{
    return (size_t)c->n_live * c->kv_dim * 2 * sizeof(float);
}

size_t lg_kvcache_alloc_bytes(const lg_kvcache *c)
{
    return ((size_t)c->kept.cap + c->ring.cap) * c->kv_dim * 2 * sizeof(float);
}
