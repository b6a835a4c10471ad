/* SHA-256 (FIPS 180-4): streaming init/update/final, a one-shot helper and
 * lowercase hex formatting. Used for adapter checksums, base-model
 * fingerprints and dataset hashes. */
#ifndef MXL_CORE_SHA256_H
#define MXL_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

enum { MXL_SHA256_SIZE = 32, MXL_SHA256_HEX_SIZE = 65 /* 64 digits + NUL */ };

typedef struct mxl_sha256_ctx {
  uint32_t state[8];
  uint64_t total_bytes;  /* message length so far */
  uint8_t block[64];     /* pending partial block */
  size_t block_used;
} mxl_sha256_ctx;

void mxl_sha256_init(mxl_sha256_ctx *ctx);
void mxl_sha256_update(mxl_sha256_ctx *ctx, const void *data, size_t n);
/* Writes the 32-byte digest. The context must be re-initialised to reuse it. */
void mxl_sha256_final(mxl_sha256_ctx *ctx, uint8_t digest[MXL_SHA256_SIZE]);

/* One shot: digest of `n` bytes at `data`. */
void mxl_sha256(const void *data, size_t n, uint8_t digest[MXL_SHA256_SIZE]);

/* Formats a digest as 64 lowercase hex digits plus a NUL. */
void mxl_sha256_hex(const uint8_t digest[MXL_SHA256_SIZE], char hex[MXL_SHA256_HEX_SIZE]);

/* Parses 64 lowercase hex digits into a digest (out may be NULL to only
 * check the text); 0 when `hex` is anything else. */
int mxl_sha256_parse_hex(const char *hex, uint8_t out[MXL_SHA256_SIZE]);

/* Digest of a whole file, read in pieces (memory stays bounded). */
mxl_status mxl_sha256_file(const char *path, uint8_t digest[MXL_SHA256_SIZE]);

#endif
