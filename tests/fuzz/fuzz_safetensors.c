/* libFuzzer harness: the safetensors reader (header length, JSON header, dtypes, shapes, offsets
 * covering the data area). The input is a whole file image. An accepted file's tensors must lie
 * inside the image: every byte of each is read, so AddressSanitizer sees any that does not. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_err err;
    lg_st_file *f = lg_st_open_memory(data, size, "fuzz.safetensors", &err);
    if (!f) {
        /* every refusal says what is wrong about which file */
        if (strncmp(err.msg, "fuzz.safetensors: ", 18) != 0)
            __builtin_trap();
        return 0;
    }
    volatile uint8_t sink = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const lg_st_tensor *t = &f->tensors[i];
        const uint8_t *p = t->data;
        uint64_t n = lg_st_nbytes(t);
        if (n != t->nelem * lg_dtype_size(t->dtype) || p < data || n > (uint64_t)(data + size - p))
            __builtin_trap();
        for (uint64_t k = 0; k < n; k++)
            sink ^= p[k];
        if (lg_st_find(f, t->name) == NULL)
            __builtin_trap();
    }
    for (int i = 0; i < f->n_meta; i++)
        if (lg_st_meta(f, f->meta_keys[i]) == NULL)
            __builtin_trap();
    (void)sink;
    lg_st_close(f);
    return 0;
}
