/* SHA-256 (FIPS 180-4), for the source-file checksums lg-convert records and package manifests. */
#ifndef LG_SHA256_H
#define LG_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct lg_sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
} lg_sha256;

void lg_sha256_init(lg_sha256 *s);
void lg_sha256_update(lg_sha256 *s, const void *data, size_t n);
void lg_sha256_final(lg_sha256 *s, unsigned char out[32]);
/* Lowercase hex of the digest into hex[65]. */
void lg_sha256_hex(const unsigned char digest[32], char hex[65]);
/* The hex digest of n bytes at data. */
void lg_sha256_buffer_hex(const void *data, size_t n, char hex[65]);
/* Tests: 1 makes every later call use the portable code instead of the CPU's SHA instructions. */
void lg_sha256_force_portable(int on);
/* Hashes a whole file; 0 on success. */
int lg_sha256_file(const char *path, char hex[65], lg_err *err);

#endif
