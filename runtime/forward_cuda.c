/* The CUDA forward pass (forward_cuda.h): weights uploaded once, layer-major prefill, steps and a
 * captured decode graph, KV caches in the slot layout of kernels/kv_slots.h. */
#include "forward_cuda.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cuda_check.h"
#include "dtype.h"
#include "forward_cuda_rank.h"
#include "kv_slots.h"
#include "lg_kernels.h"
#include "tp_comm.h"

#define DEFAULT_CHUNK 4096 /* prefill rows per product: fills the GPU, bounds the activations */
#define MAX_STEP 256       /* rows per later step when a sparse layer is present (sizes the rings) */
#define HEAD_ROWS LG_CUDA_HEAD_ROWS
#define GEMV_ROWS 4        /* up to this many rows the products are matrix-vector kernels */
#define STAGE_BYTES ((size_t)32 << 20) /* each of the two pinned upload buffers */
#define MAX_GRAPHS 32 /* decode graphs: slot bounds 128, 256, ... (attn_hi) up to max_seq < 2^31 */

/* Every kernel launcher returns 0 or -1 with lg_k_last_error(); so do the functions below, until
 * the public operations turn the message into an lg_err. */
#define K(call)                                                                                   \
    do {                                                                                          \
        if ((call) != 0)                                                                          \
            return -1;                                                                            \
    } while (0)

/* A matrix [rows, cols] (HF [out, in] layout) on the device: activation dtype, or quantized as the
 * checkpoint stores it (q.method != 0; kernels/gemv_quant.h). */
typedef struct cuda_mat {
    const void *w;
    lg_kqmat q;
} cuda_mat;

typedef struct cuda_layer {
    lg_layer_attn attn;
    lg_kmask mask;
    lg_kv_layout lay;
    int n_slots;
    cuda_mat qkv, o, gu, down; /* q|k|v and gate|up stacked */
    const float *attn_norm, *mlp_norm;
    void *k, *v;    /* [n_slots, kv_dim] */
    int *slot_pos;  /* [n_slots]: the position each slot holds, -1 for none */
} cuda_layer;

struct cuda_fwd {
    const lg_model *m;
    /* tensor parallelism (runtime/tp_shard.h): the heads, MLP columns and vocabulary rows this rank
     * holds; with tp 1 everything. dims below are this rank's. */
    lg_tp_shard sh;
    int device;
    void *comm;     /* NCCL communicator (tp > 1) */
    int skip_comm;  /* benchmarks only: all-reduces left out */
    int (*agree)(void *ctx, int ok);
    void *agree_ctx;
    int own_logits_h;
    lg_kdtype dt;
    int esz;
    const char *dt_name;
    int dim, ffn, qd, kvd, qkv_dim, n_layers;
    int vocab;    /* the whole vocabulary (token ids, host logits rows); this rank's rows: sh.vocab */
    int P;        /* prefill rows per product */
    int S;        /* rows per step (P when every layer is full, MAX_STEP otherwise) */
    int max_seq;  /* positions the full caches hold */
    int all_full; /* no sparse layer: prefill runs in steps of P rows (no residual of every row) */
    lg_kattn_shape shape;
    cudaStream_t st;
    lg_blas *blas;

    /* weights: one allocation */
    void *wmem;
    size_t wbytes;
    cuda_mat embed, lm_head;
    void *deq;          /* a quantized matrix dequantized for a product of many rows */
    size_t deq_bytes;
    const float *final_norm;
    cuda_layer *L;

    /* RoPE */
    float *inv_freq_h, *inv_freq_d;
    float attn_scale;
    long rope_len;

    /* activations of up to max(P, S) rows, allocated once (the decode graph keeps their addresses) */
    float *x_step;  /* [S, dim] residual of a step */
    void *xb, *qkv, *att, *gu, *mlp;
    float *logits;  /* [HEAD_ROWS, sh.vocab] */
    float *logits_h; /* pinned [HEAD_ROWS, vocab], shared by the ranks (each fills its columns) */
    float *part;    /* [rows, dim]: a row-parallel product's partial sum (tp > 1, rank > 0) */
    void *attn_ws;
    size_t attn_ws_bytes;
    int *par_h, *par_d; /* step parameters: ids[n], pos[n], n_live[L], slots[L][n] */
    int par_cap;
    int *iota;          /* 0, 1, ..., max_seq - 1: slots of positions laid out in order */

    /* layer-major prefill, grown on demand */
    float *x_big;       /* [rows, dim] residual of every row */
    long x_big_rows;
    void *scr_k, *scr_v; /* [rows, kv_dim] keys and values of a sparse layer by position */
    int *scr_pos;
    long scr_rows;
    int *ids_d;
    long ids_cap;
    void *pf_ws; /* prefill attention's workspace (bfloat16 on Hopper: V as float16), bytes */
    long pf_ws_cap;

    /* decode graphs, one for each slot bound (attn_hi): a graph's attention is launched for its
     * bound's slot counts and serves while the positions held stay within the bound. state: 0 not
     * yet tried, 1 captured, -1 capture failed (eager launches) */
    struct {
        long hi;
        int state, runs;
        cudaGraphExec_t exec;
    } graphs[MAX_GRAPHS];
    int n_graphs, graphs_off, decodes;

    long n_pos; /* positions held; -1 after a failed call */

    /* memory */
    size_t dev_bytes, dev_peak, used_peak, dev_total;
    char dev_name[128];
};

/* ---------------------------------------------------------------- memory */

static void sample_mem(cuda_fwd *f)
{
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) == cudaSuccess) {
        f->dev_total = total;
        if (total - free_b > f->used_peak)
            f->used_peak = total - free_b;
    }
}

static int dalloc(cuda_fwd *f, void **p, size_t bytes, const char *what)
{
    *p = NULL;
    if (bytes == 0)
        bytes = 16;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear it: the engine stays usable after an allocation failure */
        size_t free_b = 0, total = 0;
        cudaMemGetInfo(&free_b, &total);
        *p = NULL;
        return lg_k_fail("%s: cannot allocate %.3f GiB of device memory (%s): %.3f GiB of %.3f "
                         "GiB free, %.3f GiB held by this engine", what, bytes / 1073741824.0,
                         cudaGetErrorName(e), free_b / 1073741824.0, total / 1073741824.0,
                         f->dev_bytes / 1073741824.0);
    }
    f->dev_bytes += bytes;
    if (f->dev_bytes > f->dev_peak)
        f->dev_peak = f->dev_bytes;
    sample_mem(f);
    return 0;
}

static void dfree(cuda_fwd *f, void *p, size_t bytes)
{
    if (!p)
        return;
    cudaFree(p);
    f->dev_bytes -= bytes < 16 ? 16 : bytes;
}

static void *at(const void *p, size_t elems, int esz)
{
    return (char *)p + elems * (size_t)esz;
}

/* ---------------------------------------------------------------- weights */

/* The upload: tensors converted chunk by chunk into two pinned buffers, each chunk's copy
 * overlapping the conversion of the next. */
typedef struct upload {
    cudaStream_t st;
    void *stage[2];
    cudaEvent_t done[2];
    int turn;
} upload;

/* Copies block bl of tensor t (any float dtype) to dst converted to dst_dt: only the pages of this
 * rank's part of the mapped checkpoint are read. */
static int upload_tensor(upload *u, void *dst, lg_dtype dst_dt, const lg_st_tensor *t,
                         const lg_tp_block *bl)
{
    size_t n = (size_t)lg_tp_block_elems(bl), done = 0, out_sz = lg_dtype_size(dst_dt);
    size_t in_sz = lg_dtype_size(t->dtype);
    size_t per = STAGE_BYTES / out_sz;
    while (done < n) {
        size_t c = n - done < per ? n - done : per;
        int b = u->turn;
        u->turn ^= 1;
        LG_CUDA_TRY(cudaEventSynchronize(u->done[b]));
        for (size_t k = 0; k < c;) {
            int64_t src = 0;
            size_t run = (size_t)lg_tp_block_run(bl, (int64_t)(done + k), (int64_t)(c - k), &src);
            lg_convert_floats((char *)u->stage[b] + k * out_sz, dst_dt,
                              (const char *)t->data + (size_t)src * in_sz, t->dtype, run);
            k += run;
        }
        LG_CUDA_TRY(cudaMemcpyAsync((char *)dst + done * out_sz, u->stage[b], c * out_sz,
                                    cudaMemcpyHostToDevice, u->st));
        LG_CUDA_TRY(cudaEventRecord(u->done[b], u->st));
        done += c;
    }
    return 0;
}

/* Copies n bytes from host src to dst unchanged (a quantized matrix's parts). */
static int upload_bytes(upload *u, void *dst, const void *src, size_t n)
{
    for (size_t done = 0; done < n;) {
        size_t c = n - done < STAGE_BYTES ? n - done : STAGE_BYTES;
        int b = u->turn;
        u->turn ^= 1;
        LG_CUDA_TRY(cudaEventSynchronize(u->done[b]));
        memcpy(u->stage[b], (const char *)src + done, c);
        LG_CUDA_TRY(cudaMemcpyAsync((char *)dst + done, u->stage[b], c, cudaMemcpyHostToDevice,
                                    u->st));
        LG_CUDA_TRY(cudaEventRecord(u->done[b], u->st));
        done += c;
    }
    return 0;
}

/* One piece of the weights allocation: a float tensor's block converted to dt, or (t NULL) the
 * bytes of a quantized matrix's part; `stack` places it right after the previous piece (stacked
 * matrices q|k|v and gate|up, part by part), and its device address goes to *slot. */
typedef struct weight_ref {
    const lg_st_tensor *t;
    lg_dtype dt;
    lg_tp_block b;   /* the part this rank holds */
    const void *raw; /* t NULL: raw_bytes bytes from here */
    size_t raw_bytes;
    int stack;
    const void **slot;   /* a matrix's address, or */
    const float **fslot; /* a norm's */
    size_t off;
} weight_ref;

typedef struct weight_list {
    weight_ref *w;
    int n, cap;
    lg_dtype adt;    /* the activation dtype */
    lg_tp_dims dims;
} weight_list;

static weight_ref *add_ref(weight_list *l, lg_err *err)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        weight_ref *w = realloc(l->w, sizeof *w * (size_t)cap);
        if (!w) {
            lg_err_set(err, "out of memory");
            return NULL;
        }
        l->w = w;
        l->cap = cap;
    }
    weight_ref *r = &l->w[l->n++];
    memset(r, 0, sizeof *r);
    return r;
}

static size_t ref_bytes(const weight_ref *r)
{
    return r->t ? (size_t)lg_tp_block_elems(&r->b) * lg_dtype_size(r->dt) : r->raw_bytes;
}

/* A float vector (norm) in float32, on every rank. */
static int add_norm(cuda_fwd *f, weight_list *l, const lg_checkpoint *ck, const char *name,
                    const float **slot, lg_err *err)
{
    const lg_st_tensor *t = lg_model_need_tensor(ck, name, f->m->dim, "hidden_size", -1, NULL, err);
    weight_ref *r = t ? add_ref(l, err) : NULL;
    if (!r)
        return -1;
    r->t = t;
    r->dt = LG_DT_F32;
    lg_tp_weight_block(&l->dims, &f->sh, LG_TPW_NORM, &r->b);
    r->fslot = slot;
    return 0;
}

/* One matrix of a stacked group (1 to 3 matrices of the same width, one product). */
typedef struct mat_spec {
    const char *name;
    int64_t rows;
    const char *rows_what;
    lg_tp_weight part;
} mat_spec;

/* The matrices of specs[0..n) stacked into *mat: float blocks converted to the activation dtype,
 * or, in a quantized checkpoint, their parts as stored (codes of all, then scales, then mins). */
static int add_matrices(cuda_fwd *f, weight_list *l, const lg_checkpoint *ck, const mat_spec *specs,
                        int n, int64_t cols, const char *cols_what, cuda_mat *mat, lg_err *err)
{
    const lg_model *m = f->m;
    lg_quant_tensor qt[3];
    int n_quant = 0;
    for (int i = 0; i < n; i++) {
        int found = 0;
        if (m->quant.scheme.method != LG_QUANT_NONE &&
            (found = lg_quant_tensor_find(ck, specs[i].name, &m->quant.scheme, specs[i].rows, cols,
                                          &qt[i], err)) < 0)
            return -1;
        n_quant += found;
    }
    if (n_quant > 0 && (n_quant < n || f->sh.tp > 1 || specs[0].part == LG_TPW_EMBED))
        return lg_err_set(err, "'%s': the CUDA engine takes quantized matrices on one GPU, with "
                               "every matrix of a stacked product (q|k|v, gate|up) quantized alike "
                               "and the embedding in float (here: %s): convert without "
                               "--quant-embeddings or with --quant-exclude, or use --device cpu",
                          specs[0].name,
                          n_quant < n ? "a stacked product partly quantized"
                          : f->sh.tp > 1 ? "--tp > 1" : "a quantized embedding");
    if (n_quant == 0) {
        for (int i = 0; i < n; i++) {
            const lg_st_tensor *t = lg_model_need_tensor(ck, specs[i].name, specs[i].rows,
                                                         specs[i].rows_what, cols, cols_what, err);
            weight_ref *r = t ? add_ref(l, err) : NULL;
            if (!r)
                return -1;
            r->t = t;
            r->dt = l->adt;
            lg_tp_weight_block(&l->dims, &f->sh, specs[i].part, &r->b);
            r->stack = i > 0;
            r->slot = i == 0 ? &mat->w : NULL;
        }
        return 0;
    }
    const lg_quant_scheme *s = &m->quant.scheme;
    int64_t rows = 0;
    for (int i = 0; i < n; i++)
        rows += specs[i].rows;
    mat->q = (lg_kqmat){.method = (lg_kquant)s->method, .group = s->group, .rows = (int)rows,
                        .cols = (int)cols};
    const void **slots[3] = {&mat->q.codes, &mat->q.scales, &mat->q.mins};
    for (int part = 0; part < lg_quant_n_parts(s); part++)
        for (int i = 0; i < n; i++) {
            weight_ref *r = add_ref(l, err);
            if (!r)
                return -1;
            int64_t shape[2];
            lg_quant_part_shape(s, (lg_quant_part)part, specs[i].rows, cols, shape);
            r->raw = part == 0 ? qt[i].qweight : part == 1 ? qt[i].scales : qt[i].mins;
            r->raw_bytes = part == 0 ? (size_t)specs[i].rows * lg_quant_row_bytes(s, cols)
                                     : (size_t)(shape[0] * shape[1]) *
                                           lg_dtype_size(lg_quant_part_dtype(s, (lg_quant_part)part));
            r->stack = i > 0;
            r->slot = i == 0 ? slots[part] : NULL;
        }
    return 0;
}

/* The model's tensors, shapes checked: embedding, 9 per layer (the 7 matrices as 4 products), final
 * norm, lm_head unless tied; of each, the part this rank holds. */
static int list_weights(cuda_fwd *f, const lg_checkpoint *ck, weight_list *l, lg_err *err)
{
    const lg_model *m = f->m;
    int64_t qd = (int64_t)m->n_heads * m->head_dim, kvd = (int64_t)m->n_kv_heads * m->head_dim;
    char nm[9][256];
    mat_spec emb = {"model.embed_tokens.weight", m->vocab_size, "vocab_size", LG_TPW_EMBED};
    if (add_matrices(f, l, ck, &emb, 1, m->dim, "hidden_size", &f->embed, err) != 0)
        return -1;
    for (int li = 0; li < m->n_layers; li++) {
        static const char *suffix[9] = {
            "input_layernorm.weight", "post_attention_layernorm.weight",
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "mlp.down_proj.weight"};
        for (int i = 0; i < 9; i++)
            snprintf(nm[i], sizeof nm[i], "model.layers.%d.%s", li, suffix[i]);
        cuda_layer *L = &f->L[li];
        mat_spec qkv[3] = {{nm[2], qd, "num_attention_heads * head_dim", LG_TPW_Q},
                           {nm[3], kvd, "num_key_value_heads * head_dim", LG_TPW_K},
                           {nm[4], kvd, "num_key_value_heads * head_dim", LG_TPW_V}};
        mat_spec o = {nm[5], m->dim, "hidden_size", LG_TPW_O};
        mat_spec gu[2] = {{nm[6], m->ffn_dim, "intermediate_size", LG_TPW_GATE},
                          {nm[7], m->ffn_dim, "intermediate_size", LG_TPW_UP}};
        mat_spec down = {nm[8], m->dim, "hidden_size", LG_TPW_DOWN};
        if (add_norm(f, l, ck, nm[0], &L->attn_norm, err) != 0 ||
            add_norm(f, l, ck, nm[1], &L->mlp_norm, err) != 0 ||
            add_matrices(f, l, ck, qkv, 3, m->dim, "hidden_size", &L->qkv, err) != 0 ||
            add_matrices(f, l, ck, &o, 1, qd, "num_attention_heads * head_dim", &L->o, err) != 0 ||
            add_matrices(f, l, ck, gu, 2, m->dim, "hidden_size", &L->gu, err) != 0 ||
            add_matrices(f, l, ck, &down, 1, m->ffn_dim, "intermediate_size", &L->down, err) != 0)
            return -1;
    }
    if (add_norm(f, l, ck, "model.norm.weight", &f->final_norm, err) != 0)
        return -1;
    mat_spec head = {"lm_head.weight", m->vocab_size, "vocab_size", LG_TPW_LM_HEAD};
    if (!m->tied && add_matrices(f, l, ck, &head, 1, m->dim, "hidden_size", &f->lm_head, err) != 0)
        return -1;
    return 0;
}

/* Offsets in one allocation, each piece 256-byte aligned unless it is stacked on the previous. */
static size_t lay_out_weights(weight_ref *w, int nw)
{
    size_t off = 0;
    for (int i = 0; i < nw; i++) {
        if (!w[i].stack)
            off = (off + 255) & ~(size_t)255;
        w[i].off = off;
        off += ref_bytes(&w[i]);
    }
    return (off + 255) & ~(size_t)255;
}

/* Reads every weight from m->dir and uploads it once. */
static int upload_weights(cuda_fwd *f, lg_err *err)
{
    const lg_model *m = f->m;
    lg_checkpoint *ck = lg_ckpt_open(m->dir, err);
    if (!ck)
        return -1;
    upload u = {.st = f->st};
    weight_list l = {.adt = f->dt == LG_KDT_F32    ? LG_DT_F32
                            : f->dt == LG_KDT_BF16 ? LG_DT_BF16
                                                   : LG_DT_F16,
                     .dims = lg_tp_dims_of(m)};
    int rc = -1;
    if (list_weights(f, ck, &l, err) != 0) {
        lg_err_prefix(err, "%s", m->dir);
        goto done;
    }
    f->wbytes = lay_out_weights(l.w, l.n);
    if (dalloc(f, &f->wmem, f->wbytes, "weights") != 0) {
        lg_err_set(err, "%s: %s", m->dir, lg_k_last_error());
        goto done;
    }
    for (int b = 0; b < 2; b++) {
        if (cudaMallocHost(&u.stage[b], STAGE_BYTES) != cudaSuccess ||
            cudaEventCreateWithFlags(&u.done[b], cudaEventDisableTiming) != cudaSuccess ||
            cudaEventRecord(u.done[b], f->st) != cudaSuccess) {
            cudaGetLastError();
            lg_err_set(err, "cannot allocate %zu MiB of pinned host memory for the upload",
                       STAGE_BYTES >> 20);
            goto done;
        }
    }
    for (int i = 0; i < l.n; i++) {
        weight_ref *r = &l.w[i];
        char *dst = (char *)f->wmem + r->off;
        if ((r->t ? upload_tensor(&u, dst, r->dt, r->t, &r->b)
                  : upload_bytes(&u, dst, r->raw, r->raw_bytes)) != 0) {
            lg_err_set(err, "%s: tensor '%s': %s", m->dir, r->t ? r->t->name : "(quantized part)",
                       lg_k_last_error());
            goto done;
        }
        if (r->slot)
            *r->slot = dst;
        if (r->fslot)
            *r->fslot = (const float *)dst;
    }
    if (cudaStreamSynchronize(f->st) != cudaSuccess) {
        lg_err_set(err, "%s: uploading the weights: %s", m->dir,
                   cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    if (m->tied)
        f->lm_head = f->embed;
    rc = 0;
done:
    for (int b = 0; b < 2; b++) {
        if (u.done[b])
            cudaEventDestroy(u.done[b]);
        if (u.stage[b])
            cudaFreeHost(u.stage[b]);
    }
    free(l.w);
    lg_ckpt_close(ck);
    return rc;
}

/* ---------------------------------------------------------------- KV caches */

static void layer_layout(cuda_fwd *f, cuda_layer *L)
{
    const lg_layer_attn *a = &L->attn;
    L->mask = (lg_kmask){(lg_kmask_kind)a->kind, a->sink, a->window, a->block, a->local, a->stride};
    L->lay = (lg_kv_layout){.mask = L->mask};
    long ring = 0;
    if (a->kind == LG_ATTN_SINK_WINDOW)
        ring = (long)a->window - 1 + f->S;
    else if (a->kind == LG_ATTN_BLOCK_STRIDED)
        ring = (long)a->local * a->block - 1 + f->S;
    if (ring > f->max_seq)
        ring = f->max_seq; /* a ring as long as the sequence never wraps */
    L->lay.ring = (int)ring;
    if (a->kind == LG_ATTN_BLOCK_STRIDED) {
        long span = (long)a->block * a->stride;
        L->lay.kept = (int)(((long)f->max_seq + span - 1) / span * a->block);
    }
    L->n_slots = (int)lg_kv_slots(&L->lay, f->max_seq);
}

/* Slots of layer L considered by attention once positions 0 .. end-1 are written. */
static int n_live(const cuda_layer *L, long end)
{
    switch (L->attn.kind) {
    case LG_ATTN_BLOCK_STRIDED: {
        long blocks = (end + L->attn.block - 1) / L->attn.block;
        long used = (long)L->lay.ring + blocks / L->attn.stride * L->attn.block;
        return (int)(used < L->n_slots ? used : L->n_slots);
    }
    case LG_ATTN_SINK_WINDOW:
        return L->n_slots;
    default:
        return (int)(end < L->n_slots ? end : L->n_slots);
    }
}

/* The bound on positions held that attention is launched for once positions 0 .. end-1 are
 * written: each layer's launch takes the slots it will consider at the bound, n_live(L, hi), not its
 * capacity, so that a long cache holding few positions is split for what it holds (kernels/
 * attention.h). One decode graph a bound. */
static long attn_hi(const cuda_fwd *f, long end)
{
    long hi = lg_k_attn_cache_slot_bound(end);
    return hi < f->max_seq ? hi : f->max_seq;
}

/* Positions layer L holds after positions 0 .. n-1. */
static long held_positions(const cuda_layer *L, long n)
{
    const lg_layer_attn *a = &L->attn;
    if (a->kind == LG_ATTN_SINK_WINDOW) {
        long sink = n < a->sink ? n : a->sink, rest = n - sink;
        return sink + (rest < L->lay.ring ? rest : L->lay.ring);
    }
    if (a->kind == LG_ATTN_BLOCK_STRIDED) {
        long kept = 0;
        for (long kb = a->stride - 1; kb * a->block < n; kb += a->stride) {
            long left = n - kb * a->block;
            kept += left < a->block ? left : a->block;
        }
        long other = n - kept;
        return kept + (other < L->lay.ring ? other : L->lay.ring);
    }
    return n;
}

/* ---------------------------------------------------------------- products */

/* y = beta y + x · W^T for n rows of x: matrix-vector kernels for a few rows (a quantized W read
 * as stored), cuBLAS otherwise (a quantized W dequantized into f->deq first). */
static int mm(cuda_fwd *f, void *y, lg_kdtype y_dt, int ldy, const void *x, int ldx,
              const cuda_mat *w, int n, int M, int Kd, float beta)
{
    if (w->q.method) {
        if (n <= GEMV_ROWS)
            return lg_k_gemv_quant(y, y_dt, ldy, &w->q, x, ldx, f->dt, n, beta, f->st);
        K(lg_k_dequant(f->deq, f->dt, Kd, &w->q, 0, M, f->st));
        return lg_k_gemm(f->blas, y, y_dt, ldy, x, ldx, f->deq, Kd, f->dt, n, M, Kd, beta, f->st);
    }
    if (n <= GEMV_ROWS)
        return lg_k_gemv(y, y_dt, ldy, w->w, Kd, x, ldx, f->dt, n, M, Kd, beta, f->st);
    return lg_k_gemm(f->blas, y, y_dt, ldy, x, ldx, w->w, Kd, f->dt, n, M, Kd, beta, f->st);
}

/* recv = the sum of send over the ranks (nothing to do with one GPU). */
static int all_reduce(cuda_fwd *f, const float *send, float *recv, size_t count)
{
    if (f->sh.tp == 1 || f->skip_comm)
        return 0;
    return lg_tp_allreduce_f32(f->comm, send, recv, count, f->st);
}

/* x (n rows, f32) += in · w^T for a row-parallel product (o_proj, down_proj): each rank holds a
 * slice of the inner dimension, so its product is a partial sum; rank 0 adds its part to the
 * residual, the others write theirs to f->part, and the all-reduce adds them all into every rank's
 * copy of the residual. */
static int mm_residual(cuda_fwd *f, float *x, const void *in, int ldin, const cuda_mat *w, int n,
                       int Kd)
{
    if (f->sh.tp == 1)
        return mm(f, x, LG_KDT_F32, f->dim, in, ldin, w, n, f->dim, Kd, 1.0f);
    float *dst = f->sh.rank == 0 ? x : f->part;
    K(mm(f, dst, LG_KDT_F32, f->dim, in, ldin, w, n, f->dim, Kd, f->sh.rank == 0 ? 1.0f : 0.0f));
    return all_reduce(f, dst, x, (size_t)n * f->dim);
}

/* Embedding rows of ids (already shifted to this rank's vocabulary range: rows outside it are
 * zero), summed over the ranks. */
static int embed_rows(cuda_fwd *f, float *x, const int *ids, int n)
{
    K(lg_k_embed(x, LG_KDT_F32, f->dim, f->embed.w, f->dt, f->sh.vocab, ids, n, f->dim, f->st));
    return all_reduce(f, x, x, (size_t)n * f->dim);
}

/* ---------------------------------------------------------------- RoPE */

static int rope_set(cuda_fwd *f, long seq_len)
{
    const lg_model *m = f->m;
    lg_rope_inv_freq(&m->rope, m->head_dim, m->max_pos, (int)seq_len, f->inv_freq_h,
                     &f->attn_scale);
    f->rope_len = seq_len;
    LG_CUDA_TRY(cudaMemcpyAsync(f->inv_freq_d, f->inv_freq_h, sizeof(float) * (m->head_dim / 2),
                                cudaMemcpyHostToDevice, f->st));
    return 0;
}

/* Dynamic NTK remakes inv_freq as the sequence grows past max_pos (as the CPU forward does, once per
 * call or step here). */
static int rope_update(cuda_fwd *f, long seq_len)
{
    const lg_model *m = f->m;
    if (m->rope.type != LG_ROPE_DYNAMIC)
        return 0;
    if (seq_len > f->rope_len)
        return rope_set(f, seq_len);
    if (seq_len < m->max_pos && f->rope_len > m->max_pos)
        return rope_set(f, m->max_pos);
    return 0;
}

/* ---------------------------------------------------------------- one layer, two ways */

/* The feed-forward half of a layer on rows of residual x (f32, dim apart). */
static int mlp_rows(cuda_fwd *f, const cuda_layer *L, float *x, int n)
{
    const lg_model *m = f->m;
    K(lg_k_rmsnorm(f->xb, f->dt, f->dim, x, LG_KDT_F32, f->dim, L->mlp_norm, LG_KDT_F32, n, f->dim,
                   m->rms_eps, f->st));
    if (n == 1 && L->gu.q.method && lg_k_gemv_quant_glu_warps(&L->gu.q, f->xb)) {
        /* quantized decode: SwiGLU in the gate|up product's kernel, the same values */
        K(lg_k_gemv_quant_glu(f->mlp, f->dt, &L->gu.q, f->xb, f->dt, f->st));
    } else {
        K(mm(f, f->gu, f->dt, 2 * f->ffn, f->xb, f->dim, &L->gu, n, 2 * f->ffn, f->dim, 0.0f));
        K(lg_k_swiglu(f->mlp, f->dt, f->ffn, f->gu, 2 * f->ffn, at(f->gu, f->ffn, f->esz),
                      2 * f->ffn, f->dt, n, f->ffn, f->st));
    }
    K(mm_residual(f, x, f->mlp, f->ffn, &L->down, n, f->ffn));
    return 0;
}

/* Normed rows of x -> q|k|v with RoPE applied, in f->qkv, and each row's k and v written to cache
 * slot slots[t] (k_cache, v_cache, slot_pos: a layer's cache or the prefill scratch). pos: device
 * positions or NULL (pos0 + t). */
static int qkv_rows(cuda_fwd *f, const cuda_layer *L, const float *x, int n, const int *pos,
                    int pos0, void *k_cache, void *v_cache, int *slot_pos, const int *slots)
{
    const lg_model *m = f->m;
    K(lg_k_rmsnorm(f->xb, f->dt, f->dim, x, LG_KDT_F32, f->dim, L->attn_norm, LG_KDT_F32, n,
                   f->dim, m->rms_eps, f->st));
    lg_kcache_dst dst = {k_cache, v_cache, f->kvd, slot_pos, slots,
                         at(f->qkv, f->qd + f->kvd, f->esz), f->qkv_dim};
    if (n == 1 && L->qkv.q.method &&
        lg_k_gemv_quant_rope_kv_warps(&L->qkv.q, f->xb, f->sh.n_heads, f->sh.n_kv_heads,
                                      m->head_dim)) {
        /* quantized decode: RoPE and the cache writes in the product's kernel, the same values */
        K(lg_k_gemv_quant_rope_kv(f->qkv, f->dt, &L->qkv.q, f->xb, f->sh.n_heads,
                                  f->sh.n_kv_heads, m->head_dim, pos, pos0, f->inv_freq_d,
                                  f->attn_scale, &dst, f->st));
        return 0;
    }
    K(mm(f, f->qkv, f->dt, f->qkv_dim, f->xb, f->dim, &L->qkv, n, f->qkv_dim, f->dim, 0.0f));
    K(lg_k_rope_kv(f->qkv, f->qkv_dim, f->sh.n_heads, at(f->qkv, f->qd, f->esz), f->qkv_dim,
                   f->sh.n_kv_heads, f->dt, n, m->head_dim, pos, pos0, f->inv_freq_d,
                   f->attn_scale, &dst, f->st));
    return 0;
}

/* A step: n rows (ids and positions in the device parameters) through every layer into f->x_step.
 * The parameters: ids[n], pos[n], n_live[L], slots[L][n]. With graph != 0 nothing may depend on
 * host values that change between tokens: every position comes from the parameters, and attention
 * is launched for the positions held up to hi (attn_hi), which the parameters stay within. */
static int step_layers(cuda_fwd *f, int n, int pos0, int graph, long hi)
{
    const int *ids = f->par_d, *pos = f->par_d + n, *live = f->par_d + 2 * n;
    const int *slots = f->par_d + 2 * n + f->n_layers;
    K(embed_rows(f, f->x_step, ids, n));
    for (int l = 0; l < f->n_layers; l++) {
        const cuda_layer *L = &f->L[l];
        K(qkv_rows(f, L, f->x_step, n, pos, 0, L->k, L->v, L->slot_pos, slots + (size_t)l * n));
        if (L->attn.kind == LG_ATTN_FULL && n > 1 && !graph)
            K(lg_k_attn_prefill(f->att, f->qd, f->qkv, f->qkv_dim, L->k, f->kvd, L->v, f->kvd,
                                f->dt, n, pos0, pos0 + n, 0, &f->shape, NULL, f->pf_ws,
                                (size_t)f->pf_ws_cap, f->st));
        else
            K(lg_k_attn_cache(f->att, f->qd, f->qkv, f->qkv_dim, L->k, f->kvd, L->v, f->kvd,
                              f->dt, L->slot_pos, n_live(L, hi), live + l, n, pos, 0, &f->shape,
                              &L->mask, f->attn_ws, f->attn_ws_bytes, f->st));
        K(mm_residual(f, f->x_step, f->att, f->qd, &L->o, n, f->qd));
        K(mlp_rows(f, L, f->x_step, n));
    }
    return 0;
}

/* Logits (float32) of n <= HEAD_ROWS rows of residual x into f->logits, copied to this rank's
 * columns of f->logits_h. */
static int head_rows(cuda_fwd *f, const float *x, int n)
{
    const lg_model *m = f->m;
    K(lg_k_rmsnorm(f->xb, f->dt, f->dim, x, LG_KDT_F32, f->dim, f->final_norm, LG_KDT_F32, n,
                   f->dim, m->rms_eps, f->st));
    int vr = f->sh.vocab;
    K(mm(f, f->logits, LG_KDT_F32, vr, f->xb, f->dim, &f->lm_head, n, vr, f->dim, 0.0f));
    LG_CUDA_TRY(cudaMemcpy2DAsync(f->logits_h + f->sh.vocab0, sizeof(float) * f->vocab, f->logits,
                                  sizeof(float) * vr, sizeof(float) * vr, n,
                                  cudaMemcpyDeviceToHost, f->st));
    return 0;
}

/* Fills the pinned parameters of a step of n rows at pos0 and queues their copy. */
static int step_params(cuda_fwd *f, const int *tokens, int n, long pos0)
{
    int *p = f->par_h, L = f->n_layers;
    for (int t = 0; t < n; t++) {
        p[t] = tokens[t] - f->sh.vocab0;
        p[n + t] = (int)(pos0 + t);
    }
    for (int l = 0; l < L; l++) {
        p[2 * n + l] = n_live(&f->L[l], pos0 + n);
        for (int t = 0; t < n; t++)
            p[2 * n + L + l * n + t] = (int)lg_kv_slot_of(&f->L[l].lay, pos0 + t);
    }
    LG_CUDA_TRY(cudaMemcpyAsync(f->par_d, f->par_h, sizeof(int) * (size_t)(2 * n + L + L * n),
                                cudaMemcpyHostToDevice, f->st));
    return 0;
}

/* ---------------------------------------------------------------- calls */

/* Receives logits rows [r0, r0 + n) of a call (forward_cuda_rank.h). */
typedef lg_cuda_rows_fn rows_fn;

static int sync(cuda_fwd *f)
{
    LG_CUDA_TRY(cudaStreamSynchronize(f->st));
    return 0;
}

/* Logits of rows [r0, r0 + n) of the call whose residual rows are x (row 0 = call row `base`). */
static int emit_rows(cuda_fwd *f, const float *x, int base, int r0, int n, rows_fn fn, void *user,
                     lg_err *err)
{
    for (int r = r0; r < r0 + n; r += HEAD_ROWS) {
        int rn = r0 + n - r < HEAD_ROWS ? r0 + n - r : HEAD_ROWS;
        if (head_rows(f, x + (size_t)(r - base) * f->dim, rn) != 0 || sync(f) != 0)
            return lg_err_set(err, "cuda: %s", lg_k_last_error());
        if (fn(user, r, rn, f->logits_h, err) != 0)
            return -1;
    }
    return 0;
}

static int grow(cuda_fwd *f, void **p, long *cap_rows, long rows, size_t row_bytes,
                const char *what)
{
    if (rows <= *cap_rows)
        return 0;
    dfree(f, *p, (size_t)*cap_rows * row_bytes);
    *p = NULL;
    *cap_rows = 0;
    if (dalloc(f, p, (size_t)rows * row_bytes, what) != 0)
        return -1;
    *cap_rows = rows;
    return 0;
}

/* The workspace of prefill attention over T keys (bfloat16 on Hopper: V as float16, T * kv_dim * 2
 * bytes; none for other types). It only makes attention faster: where it cannot be had, attention
 * runs without it (lg_k_attn_prefill), so a failed allocation is not an error. */
static void prefill_ws(cuda_fwd *f, long T)
{
    size_t need = lg_k_attn_prefill_ws_bytes(f->dt, (int)T, &f->shape);
    (void)grow(f, &f->pf_ws, &f->pf_ws_cap, (long)need, 1, "prefill attention workspace");
}

/* A fresh sequence of n rows, one layer at a time over every row (products on chunks of P rows),
 * with attention over keys laid out by position: a full layer's own cache, or the scratch of a
 * sparse layer, whose kept positions are then gathered into its slots. */
static int prefill_buffers(cuda_fwd *f, int n)
{
    if (grow(f, (void **)&f->x_big, &f->x_big_rows, n, sizeof(float) * f->dim,
             "prefill residual") != 0 ||
        grow(f, (void **)&f->ids_d, &f->ids_cap, n, sizeof(int), "prefill ids") != 0)
        return -1;
    prefill_ws(f, n);
    if (n > f->scr_rows) {
        size_t row = (size_t)f->kvd * f->esz;
        dfree(f, f->scr_k, f->scr_rows * row);
        dfree(f, f->scr_v, f->scr_rows * row);
        dfree(f, f->scr_pos, f->scr_rows * sizeof(int));
        f->scr_k = f->scr_v = f->scr_pos = NULL;
        f->scr_rows = 0;
        if (dalloc(f, &f->scr_k, n * row, "prefill keys") != 0 ||
            dalloc(f, &f->scr_v, n * row, "prefill values") != 0 ||
            dalloc(f, (void **)&f->scr_pos, n * sizeof(int), "prefill positions") != 0)
            return -1;
        f->scr_rows = n;
    }
    return 0;
}

/* Token ids shifted into this rank's vocabulary range, copied to f->ids_d. */
static int upload_ids(cuda_fwd *f, const int *tokens, int n)
{
    int *ids = malloc(sizeof(int) * (size_t)n);
    if (!ids)
        return lg_k_fail("out of host memory for %d token ids", n);
    for (int t = 0; t < n; t++)
        ids[t] = tokens[t] - f->sh.vocab0;
    /* from pageable memory the copy is staged before it returns, so ids can go */
    cudaError_t e = cudaMemcpyAsync(f->ids_d, ids, sizeof(int) * (size_t)n,
                                    cudaMemcpyHostToDevice, f->st);
    free(ids);
    LG_CUDA_TRY(e);
    return 0;
}

static int prefill_layers(cuda_fwd *f, const int *tokens, int n)
{
    /* every rank must reach the collectives below, or none: a rank that cannot allocate stops all */
    int ok = prefill_buffers(f, n) == 0;
    if (f->agree && !f->agree(f->agree_ctx, ok))
        return ok ? lg_k_fail("another GPU of the group could not allocate its prefill buffers")
                  : -1;
    if (!ok)
        return -1;
    K(upload_ids(f, tokens, n));
    K(embed_rows(f, f->x_big, f->ids_d, n));
    for (int l = 0; l < f->n_layers; l++) {
        const cuda_layer *L = &f->L[l];
        int full = L->attn.kind == LG_ATTN_FULL;
        void *tk = full ? L->k : f->scr_k, *tv = full ? L->v : f->scr_v;
        int *tpos = full ? L->slot_pos : f->scr_pos;
        for (int c0 = 0; c0 < n; c0 += f->P) {
            int cn = n - c0 < f->P ? n - c0 : f->P;
            float *x = f->x_big + (size_t)c0 * f->dim;
            K(qkv_rows(f, L, x, cn, NULL, c0, tk, tv, tpos, f->iota + c0));
            K(lg_k_attn_prefill(f->att, f->qd, f->qkv, f->qkv_dim, tk, f->kvd, tv, f->kvd, f->dt,
                                cn, c0, c0 + cn, 0, &f->shape, full ? NULL : &L->mask, f->pf_ws,
                                (size_t)f->pf_ws_cap, f->st));
            K(mm_residual(f, x, f->att, f->qd, &L->o, cn, f->qd));
            K(mlp_rows(f, L, x, cn));
        }
        if (!full)
            K(lg_k_kv_fill_from_rows(L->k, L->v, f->kvd, L->slot_pos, L->n_slots, &L->lay,
                                     f->scr_k, f->kvd, f->scr_v, f->kvd, f->dt, f->kvd, n,
                                     f->st));
    }
    return 0;
}

static int decode_enqueue(cuda_fwd *f, long hi)
{
    LG_CUDA_TRY(cudaMemcpyAsync(f->par_d, f->par_h, sizeof(int) * (size_t)(2 + 2 * f->n_layers),
                                cudaMemcpyHostToDevice, f->st));
    K(step_layers(f, 1, 0, 1, hi));
    return head_rows(f, f->x_step, 1);
}

/* The index in f->graphs of slot bound hi's decode graph, new (state 0) the first time; -1 when the
 * table is full (eager launches then). */
static int graph_of(cuda_fwd *f, long hi)
{
    for (int i = 0; i < f->n_graphs; i++)
        if (f->graphs[i].hi == hi)
            return i;
    if (f->n_graphs == MAX_GRAPHS)
        return -1;
    int i = f->n_graphs++;
    f->graphs[i].hi = hi;
    f->graphs[i].state = 0;
    f->graphs[i].runs = 0;
    return i;
}

/* Captures the decode step of slot bound hi into graph gi (state 1), or marks it uncapturable
 * (state -1: eager launches for it from then on). */
static void capture_graph(cuda_fwd *f, int gi, long hi)
{
    cudaGraph_t g = NULL;
    int ok = cudaStreamBeginCapture(f->st, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    int rc = ok ? decode_enqueue(f, hi) : -1;
    if (ok && cudaStreamEndCapture(f->st, &g) != cudaSuccess)
        rc = -1;
    if (rc == 0 && cudaGraphInstantiate(&f->graphs[gi].exec, g, 0) == cudaSuccess) {
        f->graphs[gi].state = 1;
    } else {
        cudaGetLastError(); /* fall back to eager launches for this bound */
        f->graphs[gi].state = -1;
    }
    if (g)
        cudaGraphDestroy(g);
}

/* One token at pos0: the captured graph of its slot bound when it exists, eager launches
 * otherwise. A bound's graph is captured at its second decode, and not before the engine's third:
 * the decodes before run eagerly so that every kernel they launch is loaded first. Leaves the
 * logits in f->logits_h. */
static int decode_one(cuda_fwd *f, int token, long pos0)
{
    /* the parameters of a one-row step, filled on the host, copied by the graph's first node */
    int *p = f->par_h, L = f->n_layers;
    p[0] = token - f->sh.vocab0;
    p[1] = (int)pos0;
    for (int l = 0; l < L; l++) {
        p[2 + l] = n_live(&f->L[l], pos0 + 1);
        p[2 + L + l] = (int)lg_kv_slot_of(&f->L[l].lay, pos0);
    }
    long hi = attn_hi(f, pos0 + 1);
    int gi = f->graphs_off ? -1 : graph_of(f, hi);
    if (gi >= 0 && f->graphs[gi].state == 0 && f->graphs[gi].runs >= 1 && f->decodes >= 2)
        capture_graph(f, gi, hi);
    f->decodes++;
    if (gi >= 0)
        f->graphs[gi].runs++;
    if (gi >= 0 && f->graphs[gi].state == 1)
        LG_CUDA_TRY(cudaGraphLaunch(f->graphs[gi].exec, f->st));
    else
        K(decode_enqueue(f, hi));
    return sync(f);
}

static int check_call(cuda_fwd *f, const int *tokens, int n, long pos0, lg_err *err)
{
    if (n <= 0)
        return lg_err_set(err, "forward: %d tokens; at least one is needed", n);
    if (pos0 != 0 && pos0 != f->n_pos) {
        if (f->n_pos < 0)
            return lg_err_set(err, "forward: pos0 %ld after a failed call; start a new sequence "
                                   "at 0", pos0);
        return lg_err_set(err, "forward: pos0 %ld, but the cache holds positions 0..%ld (continue "
                               "at %ld or start again at 0)", pos0, f->n_pos - 1, f->n_pos);
    }
    if (pos0 + n > f->max_seq)
        return lg_err_set(err, "forward: positions up to %ld, but the CUDA engine was made for "
                               "max_seq %d (lg_engine_opts.max_seq)", pos0 + n, f->max_seq);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= f->vocab)
            return lg_err_set(err, "forward: token %d at index %d is outside the vocabulary "
                                   "(0..%d)", tokens[t], t, f->vocab - 1);
    return 0;
}

/* Forgets the sequence: every slot empty. */
static int reset_caches(cuda_fwd *f)
{
    for (int l = 0; l < f->n_layers; l++)
        LG_CUDA_TRY(cudaMemsetAsync(f->L[l].slot_pos, 0xff, sizeof(int) * (size_t)f->L[l].n_slots,
                                    f->st));
    f->n_pos = 0;
    return 0;
}

/* Runs tokens[0..n) at pos0 .. and hands the logits of the rows `rows` asks for to fn. */
static int run(cuda_fwd *f, const int *tokens, int n, long pos0, lg_logits_rows rows, rows_fn fn,
               void *user, lg_err *err)
{
    if (check_call(f, tokens, n, pos0, err) != 0)
        return -1;
    int rc = 0;
    if (pos0 == 0 && reset_caches(f) != 0)
        goto cuda_fail;
    if (pos0 == 0 && n > 1 && !f->all_full) {
        if (rope_update(f, n) != 0 || prefill_layers(f, tokens, n) != 0)
            goto cuda_fail;
        f->n_pos = n;
        if (rows == LG_LOGITS_ALL)
            rc = emit_rows(f, f->x_big, 0, 0, n, fn, user, err);
        else if (rows == LG_LOGITS_LAST)
            rc = emit_rows(f, f->x_big, 0, n - 1, 1, fn, user, err);
        else if (sync(f) != 0)
            goto cuda_fail;
        goto out;
    }
    for (int off = 0; off < n && rc == 0; off += f->S) {
        int cn = n - off < f->S ? n - off : f->S;
        long p0 = pos0 + off;
        if (rope_update(f, p0 + cn) != 0)
            goto cuda_fail;
        if (cn == 1) {
            if (decode_one(f, tokens[off], p0) != 0)
                goto cuda_fail;
            f->n_pos = p0 + 1;
            if (rows == LG_LOGITS_ALL || (rows == LG_LOGITS_LAST && off + 1 == n))
                rc = fn(user, off, 1, f->logits_h, err);
            continue;
        }
        if (cn > 1)
            prefill_ws(f, p0 + cn);
        if (step_params(f, tokens + off, cn, p0) != 0 ||
            step_layers(f, cn, (int)p0, 0, attn_hi(f, p0 + cn)) != 0)
            goto cuda_fail;
        f->n_pos = p0 + cn;
        if (rows == LG_LOGITS_ALL)
            rc = emit_rows(f, f->x_step, off, off, cn, fn, user, err);
        else if (rows == LG_LOGITS_LAST && off + cn == n)
            rc = emit_rows(f, f->x_step, off, off + cn - 1, 1, fn, user, err);
        else if (sync(f) != 0) /* the pinned parameters are reused by the next step */
            goto cuda_fail;
    }
out:
    sample_mem(f);
    if (rc != 0)
        f->n_pos = -1;
    return rc;
cuda_fail:
    f->n_pos = -1;
    sample_mem(f);
    return lg_err_set(err, "cuda: %s", lg_k_last_error());
}

/* ---------------------------------------------------------------- one rank's operations */

int lg_cuda_rank_run(cuda_fwd *f, const int *tokens, int n, long pos0, lg_logits_rows rows,
                     lg_cuda_rows_fn fn, void *user, lg_err *err)
{
    return run(f, tokens, n, pos0, rows, fn, user, err);
}

int lg_cuda_rank_check(const cuda_fwd *f, const int *tokens, int n, long pos0, lg_err *err)
{
    return check_call((cuda_fwd *)f, tokens, n, pos0, err);
}

void lg_cuda_rank_reset(cuda_fwd *f)
{
    if (reset_caches(f) != 0 || sync(f) != 0)
        f->n_pos = -1;
}

long lg_cuda_rank_pos(const cuda_fwd *f)
{
    return f->n_pos;
}

void lg_cuda_rank_kv_bytes(const cuda_fwd *f, size_t *live, size_t *alloc)
{
    for (int k = 0; k < 3; k++) {
        if (live)
            live[k] = 0;
        if (alloc)
            alloc[k] = 0;
    }
    size_t row = (size_t)f->kvd * f->esz * 2; /* key and value */
    long n = f->n_pos > 0 ? f->n_pos : 0;
    for (int l = 0; l < f->n_layers; l++) {
        const cuda_layer *L = &f->L[l];
        if (live)
            live[L->attn.kind] += (size_t)held_positions(L, n) * row;
        if (alloc)
            alloc[L->attn.kind] += (size_t)L->n_slots * row;
    }
}

void lg_cuda_rank_mem(const cuda_fwd *f, lg_engine_mem *out)
{
    memset(out, 0, sizeof *out);
    out->weight_dtype = f->dt_name;
    out->weight_bytes = f->wbytes;
    out->device_peak = f->used_peak;
    out->device_total = f->dev_total;
    out->alloc_peak = f->dev_peak;
    out->n_devices = 1;
    out->dev_peak[0] = f->used_peak;
    out->dev_weight_bytes[0] = f->wbytes;
    snprintf(out->device_name, sizeof out->device_name, "%s", f->dev_name);
}

void lg_cuda_rank_free(cuda_fwd *f)
{
    if (!f)
        return;
    cudaSetDevice(f->device);
    if (f->st)
        cudaStreamSynchronize(f->st);
    for (int i = 0; i < f->n_graphs; i++)
        if (f->graphs[i].state == 1)
            cudaGraphExecDestroy(f->graphs[i].exec);
    if (f->L)
        for (int l = 0; l < f->n_layers; l++) {
            cudaFree(f->L[l].k);
            cudaFree(f->L[l].v);
            cudaFree(f->L[l].slot_pos);
        }
    void *dev[] = {f->wmem, f->inv_freq_d, f->x_step, f->xb, f->qkv, f->att, f->gu, f->mlp,
                   f->logits, f->part, f->attn_ws, f->par_d, f->iota, f->x_big, f->scr_k,
                   f->scr_v, f->scr_pos, f->ids_d, f->deq, f->pf_ws};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    if (f->logits_h && f->own_logits_h)
        cudaFreeHost(f->logits_h);
    if (f->par_h)
        cudaFreeHost(f->par_h);
    lg_blas_destroy(f->blas);
    if (f->st)
        cudaStreamDestroy(f->st);
    free(f->inv_freq_h);
    free(f->L);
    free(f);
}

/* ---------------------------------------------------------------- the single-GPU engine */

int lg_cuda_rows_copy(void *user, int r0, int n, const float *logits, lg_err *err)
{
    (void)err;
    lg_cuda_copy_rows *c = user;
    size_t row = (size_t)c->vocab;
    memcpy(c->out + (c->last_only ? 0 : (size_t)r0 * row), logits, sizeof(float) * n * row);
    return 0;
}

int lg_cuda_rows_nll(void *user, int r0, int n, const float *logits, lg_err *err)
{
    (void)err;
    lg_cuda_nll_rows *c = user;
    for (int i = 0; i < n; i++) {
        const float *x = logits + (size_t)i * c->vocab;
        float mx = x[0];
        for (int j = 1; j < c->vocab; j++)
            if (x[j] > mx)
                mx = x[j];
        double sum = 0;
        for (int j = 0; j < c->vocab; j++)
            sum += exp((double)x[j] - mx);
        c->nll[r0 + i] = (float)(log(sum) + mx - x[c->tokens[r0 + i + 1]]);
    }
    return 0;
}

static int cuda_tokens(void *impl, const int *tokens, int n, long pos0, lg_logits_rows rows,
                       float *logits, lg_err *err)
{
    cuda_fwd *f = impl;
    if (rows != LG_LOGITS_NONE && !logits)
        return lg_err_set(err, "forward: logits requested without a buffer");
    lg_cuda_copy_rows c = {logits, f->vocab, rows == LG_LOGITS_LAST};
    return run(f, tokens, n, pos0, rows, lg_cuda_rows_copy, &c, err);
}

static int cuda_nll(void *impl, const int *tokens, int n, long pos0, float *nll, lg_err *err)
{
    cuda_fwd *f = impl;
    if (n < 2)
        return lg_err_set(err, "nll: %d tokens; at least 2 are needed", n);
    if (tokens[n - 1] < 0 || tokens[n - 1] >= f->vocab)
        return lg_err_set(err, "nll: token %d at index %d is outside the vocabulary (0..%d)",
                          tokens[n - 1], n - 1, f->vocab - 1);
    lg_cuda_nll_rows c = {tokens, nll, f->vocab};
    return run(f, tokens, n - 1, pos0, LG_LOGITS_ALL, lg_cuda_rows_nll, &c, err);
}

static int cuda_greedy(void *impl, const int *prompt, int n_prompt, int n_new, int *out,
                       lg_err *err)
{
    cuda_fwd *f = impl;
    if (n_new <= 0)
        return 0;
    float *logits = malloc(sizeof(float) * (size_t)f->vocab);
    if (!logits)
        return lg_err_set(err, "greedy: out of memory");
    int rc = cuda_tokens(f, prompt, n_prompt, 0, LG_LOGITS_LAST, logits, err);
    for (int j = 0; rc == 0 && j < n_new; j++) {
        out[j] = lg_argmax(logits, f->vocab);
        if (j + 1 < n_new)
            rc = cuda_tokens(f, &out[j], 1, n_prompt + j, LG_LOGITS_LAST, logits, err);
    }
    free(logits);
    return rc;
}

static void cuda_reset(void *impl)
{
    lg_cuda_rank_reset(impl);
}

static long cuda_pos(const void *impl)
{
    return lg_cuda_rank_pos(impl);
}

static void cuda_kv_bytes(const void *impl, size_t *live, size_t *alloc)
{
    lg_cuda_rank_kv_bytes(impl, live, alloc);
}

static void cuda_mem(const void *impl, lg_engine_mem *out)
{
    lg_cuda_rank_mem(impl, out);
}

static void cuda_destroy(void *impl)
{
    lg_cuda_rank_free(impl);
}

static const lg_engine_ops cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .reset = cuda_reset,
    .pos = cuda_pos,
    .tokens = cuda_tokens,
    .nll = cuda_nll,
    .greedy = cuda_greedy,
    .kv_bytes = cuda_kv_bytes,
    .mem = cuda_mem,
};

/* ---------------------------------------------------------------- construction */

/* Elements of the largest quantized matrix (0 when none is): the dequantization scratch. */
static size_t largest_quantized(const cuda_fwd *f)
{
    size_t most = 0;
    const cuda_mat *all[2] = {&f->embed, &f->lm_head};
    for (int i = 0; i < 2; i++)
        if (all[i]->q.method && (size_t)all[i]->q.rows * all[i]->q.cols > most)
            most = (size_t)all[i]->q.rows * all[i]->q.cols;
    for (int l = 0; l < f->n_layers; l++) {
        const cuda_mat *mats[4] = {&f->L[l].qkv, &f->L[l].o, &f->L[l].gu, &f->L[l].down};
        for (int i = 0; i < 4; i++)
            if (mats[i]->q.method && (size_t)mats[i]->q.rows * mats[i]->q.cols > most)
                most = (size_t)mats[i]->q.rows * mats[i]->q.cols;
    }
    return most;
}

/* A quantized matrix's codes rewritten tile-major where it has that layout (gemv_quant.h: the decode
 * GEMV reads them faster), through the dequantization scratch. */
static int tile_codes(cuda_fwd *f, cuda_mat *w)
{
    if (!w->q.method || lg_k_qmat_tile_bytes(&w->q) == 0)
        return 0;
    return lg_k_qmat_tile(&w->q, f->deq, f->deq_bytes, f->st);
}

static int tile_quantized(cuda_fwd *f)
{
    K(tile_codes(f, &f->lm_head));
    for (int l = 0; l < f->n_layers; l++) {
        cuda_layer *L = &f->L[l];
        K(tile_codes(f, &L->qkv));
        K(tile_codes(f, &L->o));
        K(tile_codes(f, &L->gu));
        K(tile_codes(f, &L->down));
    }
    return 0;
}

static int alloc_state(cuda_fwd *f)
{
    const lg_model *m = f->m;
    int rows = f->P > f->S ? f->P : f->S, half = m->head_dim / 2;
    size_t a = (size_t)f->esz;
    f->deq_bytes = largest_quantized(f) * a;
    if (f->deq_bytes && dalloc(f, &f->deq, f->deq_bytes, "dequantization scratch") != 0)
        return -1;
    if (dalloc(f, (void **)&f->inv_freq_d, sizeof(float) * half, "RoPE table") != 0 ||
        dalloc(f, (void **)&f->x_step, sizeof(float) * f->S * f->dim, "step residual") != 0 ||
        dalloc(f, &f->xb, a * rows * f->dim, "activations") != 0 ||
        dalloc(f, &f->qkv, a * rows * f->qkv_dim, "activations") != 0 ||
        dalloc(f, &f->att, a * rows * f->qd, "activations") != 0 ||
        dalloc(f, &f->gu, a * rows * 2 * f->ffn, "activations") != 0 ||
        dalloc(f, &f->mlp, a * rows * f->ffn, "activations") != 0 ||
        dalloc(f, (void **)&f->logits, sizeof(float) * HEAD_ROWS * f->sh.vocab, "logits") != 0 ||
        dalloc(f, (void **)&f->iota, sizeof(int) * f->max_seq, "positions") != 0)
        return -1;
    f->par_cap = 2 * f->S + f->n_layers + f->n_layers * f->S;
    if (dalloc(f, (void **)&f->par_d, sizeof(int) * f->par_cap, "step parameters") != 0)
        return -1;
    LG_CUDA_TRY(cudaMallocHost((void **)&f->par_h, sizeof(int) * f->par_cap));
    if (f->sh.tp > 1 && dalloc(f, (void **)&f->part, sizeof(float) * rows * f->dim,
                               "partial sums") != 0)
        return -1;
    if (!f->logits_h) {
        LG_CUDA_TRY(cudaMallocHost((void **)&f->logits_h, sizeof(float) * HEAD_ROWS * f->vocab));
        f->own_logits_h = 1;
    }
    int *iota = malloc(sizeof(int) * f->max_seq);
    if (!iota)
        return lg_k_fail("out of host memory");
    for (int i = 0; i < f->max_seq; i++)
        iota[i] = i;
    cudaError_t e = cudaMemcpy(f->iota, iota, sizeof(int) * f->max_seq, cudaMemcpyHostToDevice);
    free(iota);
    LG_CUDA_TRY(e);

    /* the KV caches, and attention's workspace for the largest call on them */
    size_t ws = 0;
    for (int l = 0; l < f->n_layers; l++) {
        cuda_layer *L = &f->L[l];
        char what[64];
        snprintf(what, sizeof what, "KV cache of layer %d (%s)", l, lg_attn_kind_name(L->attn.kind));
        size_t bytes = (size_t)L->n_slots * f->kvd * a;
        if (dalloc(f, &L->k, bytes, what) != 0 || dalloc(f, &L->v, bytes, what) != 0 ||
            dalloc(f, (void **)&L->slot_pos, sizeof(int) * L->n_slots, what) != 0)
            return -1;
        LG_CUDA_TRY(cudaMemset(L->slot_pos, 0xff, sizeof(int) * L->n_slots));
        /* full layers: attention over slots one token at a time; sparse: steps of up to S rows,
         * launched for every slot bound (attn_hi) up to max_seq (the workspace depends on the row
         * and slot counts, not monotonically: take the largest) */
        int q_max = L->attn.kind == LG_ATTN_FULL ? 1 : f->S;
        for (long end = 1;; end = attn_hi(f, end) + 1) {
            int slots = n_live(L, attn_hi(f, end));
            for (int q = 1; q <= q_max; q++) {
                size_t w = lg_k_attn_cache_ws_bytes(q, &f->shape, slots);
                if (w > ws)
                    ws = w;
            }
            if (attn_hi(f, end) >= f->max_seq)
                break;
        }
    }
    f->attn_ws_bytes = ws;
    if (dalloc(f, &f->attn_ws, ws, "attention workspace") != 0)
        return -1;
    return lg_k_attn_cache_ws_init(f->attn_ws, ws, f->st);
}

/* The float type of the weights in checkpoint dir: its embedding's, a float tensor in every
 * checkpoint this engine takes (f16 when there is none: the upload then says what is missing). */
static int checkpoint_float_type(const char *dir, lg_dtype *out, lg_err *err)
{
    lg_checkpoint *ck = lg_ckpt_open(dir, err);
    if (!ck)
        return -1;
    const lg_st_tensor *t = lg_ckpt_find(ck, "model.embed_tokens.weight");
    *out = t ? t->dtype : LG_DT_F16;
    lg_ckpt_close(ck);
    return 0;
}

/* The type of the weights, activations and KV caches: `asked` ("f32", "f16" or "bf16") when given,
 * else the checkpoint's own float type, so that a float32 checkpoint runs in float32 and gives the
 * CPU engine's results (bf16 stays bf16; f16 and anything else run in f16). A quantized checkpoint
 * runs in f16 unless bf16 is asked for, and refuses f32: its products (kernels/gemv_quant.h) take
 * 16-bit activations only. */
static int choose_dtype(const lg_model *m, const char *asked, lg_kdtype *out, lg_err *err)
{
    int quantized = m->quant.scheme.method != LG_QUANT_NONE;
    if (asked) {
        if (strcmp(asked, "f32") == 0)
            *out = LG_KDT_F32;
        else if (strcmp(asked, "f16") == 0)
            *out = LG_KDT_F16;
        else if (strcmp(asked, "bf16") == 0)
            *out = LG_KDT_BF16;
        else
            return lg_err_set(err, "cuda engine: dtype '%s' (f32, f16 or bf16)", asked);
        if (quantized && *out == LG_KDT_F32)
            return lg_err_set(err, "%s: cuda engine: dtype f32 with a %s-quantized checkpoint: "
                                   "its products take f16 or bf16 activations only (use one of "
                                   "those, or --device cpu)",
                              m->dir, lg_quant_method_name(m->quant.scheme.method));
        return 0;
    }
    if (quantized) {
        *out = LG_KDT_F16;
        return 0;
    }
    lg_dtype w;
    if (checkpoint_float_type(m->dir, &w, err) != 0)
        return -1;
    *out = w == LG_DT_F32 ? LG_KDT_F32 : w == LG_DT_BF16 ? LG_KDT_BF16 : LG_KDT_F16;
    return 0;
}

cuda_fwd *lg_cuda_rank_new(const lg_model *m, const lg_engine_opts *opts,
                           const lg_cuda_rank_opts *r, lg_err *err)
{
    static const lg_cuda_rank_opts single = {0};
    if (!r)
        r = &single;
    int dev_count = 0;
    cudaError_t ce = cudaGetDeviceCount(&dev_count);
    if (ce != cudaSuccess || dev_count == 0) {
        cudaGetLastError();
        lg_err_set(err, "--device cuda: no usable GPU (%s)",
                   ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
        return NULL;
    }
    if (r->device < 0 || r->device >= dev_count) {
        lg_err_set(err, "cuda engine: GPU %d asked for; this machine has %d", r->device, dev_count);
        return NULL;
    }
    lg_kdtype dt;
    if (choose_dtype(m, opts ? opts->dtype : NULL, &dt, err) != 0)
        return NULL;
    if (m->head_dim % 2 != 0 || m->head_dim < 8 || m->head_dim > 256) {
        lg_err_set(err, "%s: head_dim %d: the CUDA attention takes even sizes 8..256", m->dir,
                   m->head_dim);
        return NULL;
    }
    int tp = r->tp > 1 ? r->tp : 1;
    lg_tp_dims dims = lg_tp_dims_of(m);
    if (lg_tp_check(&dims, tp, err) != 0) {
        lg_err_prefix(err, "%s", m->dir);
        return NULL;
    }
    if (cudaSetDevice(r->device) != cudaSuccess) {
        lg_err_set(err, "cuda engine: cannot use GPU %d: %s", r->device,
                   cudaGetErrorString(cudaGetLastError()));
        return NULL;
    }
    cuda_fwd *f = calloc(1, sizeof *f);
    if (!f) {
        lg_err_set(err, "cuda engine: out of memory");
        return NULL;
    }
    f->m = m;
    lg_tp_shard_of(&dims, tp, tp > 1 ? r->rank : 0, &f->sh);
    f->device = r->device;
    f->comm = r->comm;
    f->skip_comm = r->skip_comm;
    f->agree = tp > 1 ? r->agree : NULL;
    f->agree_ctx = r->agree_ctx;
    f->logits_h = r->logits_h;
    f->dt = dt;
    f->dt_name = dt == LG_KDT_F32 ? "f32" : dt == LG_KDT_BF16 ? "bf16" : "f16";
    f->esz = lg_kdtype_size(dt);
    f->dim = m->dim;
    f->ffn = f->sh.ffn;
    f->qd = f->sh.n_heads * m->head_dim;
    f->kvd = f->sh.n_kv_heads * m->head_dim;
    f->qkv_dim = f->qd + 2 * f->kvd;
    f->n_layers = m->n_layers;
    f->vocab = m->vocab_size;
    f->max_seq = opts && opts->max_seq > 0 ? opts->max_seq : (m->max_pos > 0 ? m->max_pos : 2048);
    f->P = opts && opts->max_chunk > 0 ? opts->max_chunk : DEFAULT_CHUNK;
    if (f->P > f->max_seq)
        f->P = f->max_seq;
    f->all_full = 1;
    for (int l = 0; l < m->n_layers; l++)
        f->all_full &= m->layers[l].kind == LG_ATTN_FULL;
    f->S = f->all_full ? f->P : (MAX_STEP < f->P ? MAX_STEP : f->P);
    f->shape = (lg_kattn_shape){f->sh.n_heads, f->sh.n_kv_heads, m->head_dim,
                                1.0f / sqrtf((float)m->head_dim)};
    f->L = calloc((size_t)m->n_layers, sizeof *f->L);
    f->inv_freq_h = malloc(sizeof(float) * (m->head_dim / 2));
    if (!f->L || !f->inv_freq_h) {
        lg_cuda_rank_free(f);
        lg_err_set(err, "cuda engine: out of memory");
        return NULL;
    }
    for (int l = 0; l < m->n_layers; l++) {
        f->L[l].attn = m->layers[l];
        layer_layout(f, &f->L[l]);
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, f->device) == cudaSuccess)
        snprintf(f->dev_name, sizeof f->dev_name, "%s", prop.name);
    sample_mem(f);
    if (cudaStreamCreateWithFlags(&f->st, cudaStreamNonBlocking) != cudaSuccess ||
        lg_blas_create(&f->blas) != 0) {
        lg_err_set(err, "cuda engine: cannot create a stream or cuBLAS handle: %s",
                   lg_k_last_error()[0] ? lg_k_last_error()
                                        : cudaGetErrorString(cudaGetLastError()));
        lg_cuda_rank_free(f);
        return NULL;
    }
    if (upload_weights(f, err) != 0) {
        lg_cuda_rank_free(f);
        return NULL;
    }
    if (alloc_state(f) != 0 || tile_quantized(f) != 0 || rope_set(f, m->max_pos) != 0 ||
        sync(f) != 0) {
        lg_err_set(err, "%s: cuda engine (max_seq %d): %s", m->dir, f->max_seq, lg_k_last_error());
        lg_cuda_rank_free(f);
        return NULL;
    }
    if (getenv("LG_CUDA_GRAPH") && strcmp(getenv("LG_CUDA_GRAPH"), "0") == 0)
        f->graphs_off = 1;
    sample_mem(f);
    return f;
}

int lg_engine_cuda_init(lg_engine *e, const lg_model *m, const lg_engine_opts *opts, lg_err *err)
{
    cuda_fwd *f = lg_cuda_rank_new(m, opts, NULL, err);
    if (!f)
        return -1;
    e->ops = &cuda_ops;
    e->impl = f;
    return 0;
}
