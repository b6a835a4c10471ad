/* Little-endian integers and floats in byte buffers: the one home for the
 * readers and writers every binary format of ours needs (safetensors,
 * metal/model.bin, adapter and training-state files). Byte by byte, so they
 * work at any alignment and on any host byte order. */
#ifndef MXL_CORE_BYTES_H
#define MXL_CORE_BYTES_H

#include <stdint.h>
#include <string.h>

static inline uint16_t mxl_get_le16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t mxl_get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t mxl_get_le64(const uint8_t *p) {
  return (uint64_t)mxl_get_le32(p) | (uint64_t)mxl_get_le32(p + 4) << 32;
}

static inline float mxl_get_lef32(const uint8_t *p) {
  uint32_t u = mxl_get_le32(p);
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline void mxl_put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline void mxl_put_le64(uint8_t *p, uint64_t v) {
  mxl_put_le32(p, (uint32_t)v);
  mxl_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline void mxl_put_lef32(uint8_t *p, float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  mxl_put_le32(p, u);
}

#endif
