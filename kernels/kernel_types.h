/* Types shared by every kernel launcher: element types, the attention mask pattern, and the last
 * error message. Plain C: compiles with gcc without any CUDA header.
 *
 * Conventions of every launcher in kernels/ (elementwise.h, gemm.h, gemv.h, attention.h):
 *   - pointers are device pointers unless a comment says "host";
 *   - matrices are row-major; `ld*` is the distance between rows in ELEMENTS of that matrix's type;
 *   - `stream` is a cudaStream_t passed as void * (NULL = the legacy default stream);
 *   - the return value is 0 on success, -1 on failure (bad arguments, CUDA error); the message is
 *     then in lg_k_last_error(). Launchers never synchronize the stream; errors found later by the
 *     device surface at the caller's next synchronizing call. */
#ifndef LG_KERNEL_TYPES_H
#define LG_KERNEL_TYPES_H

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of activations, weights and caches. Accumulation is always float32. */
typedef enum lg_kdtype {
    LG_KDT_F32 = 0,
    LG_KDT_F16 = 1,
    LG_KDT_BF16 = 2,
} lg_kdtype;

/* Bytes per element (4 or 2; 0 for an unknown value). */
int lg_kdtype_size(lg_kdtype dt);

/* Which keys a query sees, on absolute positions (query position i, key position j, j <= i always):
 *   LG_KMASK_FULL:          every key;
 *   LG_KMASK_SINK_WINDOW:   j < sink  or  i - j < window;
 *   LG_KMASK_BLOCK_STRIDED: with qb = i / block, kb = j / block:
 *                           qb - kb < local  or  (kb + 1) % stride == 0.
 * The values equal formats/longgen.h's lg_attn_kind, so (lg_kmask_kind)layer->kind converts. */
typedef enum lg_kmask_kind {
    LG_KMASK_FULL = 0,
    LG_KMASK_SINK_WINDOW = 1,
    LG_KMASK_BLOCK_STRIDED = 2,
} lg_kmask_kind;

typedef struct lg_kmask {
    lg_kmask_kind kind;
    int sink, window;         /* sink_window (both > 0) */
    int block, local, stride; /* block_strided (all > 0) */
} lg_kmask;

/* 1 when the decode kernels on the current device start early with programmatic dependent launch
 * (compute capability 9.0 and LG_PDL is not "0"; see kernel_common.cuh), else 0. */
int lg_k_pdl_active(void);

/* The message of the last failed launcher call on this thread ("" if none). */
const char *lg_k_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
