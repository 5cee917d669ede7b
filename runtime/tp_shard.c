#include "tp_shard.h"

#include "model.h"

lg_tp_dims lg_tp_dims_of(const lg_model *m)
{
    return (lg_tp_dims){m->dim, m->ffn_dim, m->n_heads, m->n_kv_heads, m->head_dim, m->vocab_size};
}

int lg_tp_check(const lg_tp_dims *d, int tp, lg_err *err)
{
    if (tp < 1 || tp > LG_TP_MAX)
        return lg_err_set(err, "--tp %d: between 1 and %d GPUs", tp, LG_TP_MAX);
    if (d->n_heads % tp != 0 || d->n_kv_heads % tp != 0)
        return lg_err_set(err, "--tp %d does not divide the heads (%d query heads, %d key/value "
                               "heads): each GPU holds whole heads, so --tp must divide both",
                          tp, d->n_heads, d->n_kv_heads);
    if (d->ffn < tp || d->vocab < tp)
        return lg_err_set(err, "--tp %d: more GPUs than MLP columns (%d) or vocabulary rows (%d)",
                          tp, d->ffn, d->vocab);
    return 0;
}

/* [*x0, *x0 + *n) of `width` for rank r of tp, split in units of 8 where width allows */
static void split_range(int width, int tp, int r, int *x0, int *n)
{
    int unit = width % 8 == 0 && width / 8 >= tp ? 8 : 1;
    long units = width / unit;
    long a = units * r / tp, b = units * (r + 1) / tp;
    *x0 = (int)(a * unit);
    *n = (int)((b - a) * unit);
}

void lg_tp_shard_of(const lg_tp_dims *d, int tp, int rank, lg_tp_shard *s)
{
    s->tp = tp;
    s->rank = rank;
    s->n_heads = d->n_heads / tp;
    s->head0 = rank * s->n_heads;
    s->n_kv_heads = d->n_kv_heads / tp;
    s->kv_head0 = rank * s->n_kv_heads;
    split_range(d->ffn, tp, rank, &s->ffn0, &s->ffn);
    split_range(d->vocab, tp, rank, &s->vocab0, &s->vocab);
}

static void rows_of(lg_tp_block *b, int64_t rows, int64_t cols, int64_t r0, int64_t nr)
{
    *b = (lg_tp_block){rows, cols, r0, nr, 0, cols};
}

static void cols_of(lg_tp_block *b, int64_t rows, int64_t cols, int64_t c0, int64_t nc)
{
    *b = (lg_tp_block){rows, cols, 0, rows, c0, nc};
}

void lg_tp_weight_block(const lg_tp_dims *d, const lg_tp_shard *s, lg_tp_weight w, lg_tp_block *b)
{
    int64_t hd = d->head_dim, qd = (int64_t)d->n_heads * hd, kvd = (int64_t)d->n_kv_heads * hd;
    switch (w) {
    case LG_TPW_EMBED:
    case LG_TPW_LM_HEAD:
        rows_of(b, d->vocab, d->dim, s->vocab0, s->vocab);
        break;
    case LG_TPW_Q:
        rows_of(b, qd, d->dim, s->head0 * hd, s->n_heads * hd);
        break;
    case LG_TPW_K:
    case LG_TPW_V:
        rows_of(b, kvd, d->dim, s->kv_head0 * hd, s->n_kv_heads * hd);
        break;
    case LG_TPW_O:
        cols_of(b, d->dim, qd, s->head0 * hd, s->n_heads * hd);
        break;
    case LG_TPW_GATE:
    case LG_TPW_UP:
        rows_of(b, d->ffn, d->dim, s->ffn0, s->ffn);
        break;
    case LG_TPW_DOWN:
        cols_of(b, d->dim, d->ffn, s->ffn0, s->ffn);
        break;
    case LG_TPW_NORM:
    default:
        rows_of(b, 1, d->dim, 0, 1);
        break;
    }
}

int64_t lg_tp_block_elems(const lg_tp_block *b)
{
    return b->nr * b->nc;
}

int64_t lg_tp_block_run(const lg_tp_block *b, int64_t k, int64_t max, int64_t *src)
{
    int64_t r = k / b->nc, c = k % b->nc;
    *src = (b->r0 + r) * b->cols + b->c0 + c;
    /* whole rows of the source are contiguous across rows too */
    int64_t run = b->nc == b->cols ? lg_tp_block_elems(b) - k : b->nc - c;
    return run < max ? run : max;
}
