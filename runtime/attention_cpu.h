/* Attention of a chunk of queries over one layer's KV cache, in float32 on the CPU: for each query
 * head, softmax(q k^T / sqrt(head_dim)) v over the keys the layer's mask shows the query (GQA: query
 * head h reads kv head h / (n_heads / n_kv_heads)). The queries are already rotated (RoPE) and the
 * chunk's own keys already appended to the cache.
 *
 * Queries are handled 16 at a time per head, so that each cached key and value row is read once for
 * 16 queries. Every query's result is formed in the same order whatever the chunking (keys by
 * ascending position, a fixed tree for each dot product), so decoding token by token gives bitwise
 * the numbers of a prefill. */
#ifndef LG_ATTENTION_CPU_H
#define LG_ATTENTION_CPU_H

#include "error.h"
#include "kvcache.h"
#include "thread_pool.h"

#define LG_ATTN_QUERY_BLOCK 16

/* Per-thread working memory, grown with the longest cache seen. */
typedef struct lg_attn_scratch {
    int n_threads, head_dim;
    int cap;       /* keys the buffers hold */
    float *scores; /* [n_threads][cap][16] probabilities, key-major */
    int *keys;     /* [n_threads][cap] the keys a query block sees (indices into the cache order) */
    float *block;  /* [n_threads][2][16][head_dim] output sums, then the block's queries transposed */
} lg_attn_scratch;

int lg_attn_scratch_init(lg_attn_scratch *s, int n_threads, int head_dim, lg_err *err);
void lg_attn_scratch_free(lg_attn_scratch *s);

typedef struct lg_attn_shape {
    int n_heads, n_kv_heads, head_dim;
} lg_attn_shape;

/* Queries of rows t < n at positions pos0 + t: head h of row t at q + t * ldq + h * head_dim; the
 * result goes to out + t * ldo + h * head_dim. pool may be NULL; it must have at most
 * scratch->n_threads threads. Fails only when the scratch cannot grow. */
int lg_attention_cpu(lg_pool *pool, lg_attn_scratch *scratch, const lg_kvcache *c,
                     const lg_attn_shape *shape, const float *q, int ldq, int n, long pos0,
                     float *out, int ldo, lg_err *err);

#endif
