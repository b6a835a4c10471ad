/* libFuzzer target for the safetensors header parser: any byte string must
 * either be refused with a message or give tensors that lie inside the
 * buffer, are found by name, and can be read end to end.
 *
 * Each input is tried twice: as a whole file, and as header text up to its
 * first NUL byte (the rest being the data area) behind a length prefix
 * computed here. The second form keeps mutated JSON from being refused at
 * once for a stale length, so the fuzzer reaches the field checks. */
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void check_tensor(const mxl_safetensors *st, const mxl_st_tensor *t,
                         const uint8_t *data, size_t size) {
  check(t->data >= data && t->nbytes <= size && t->data <= data + size - t->nbytes);
  check(t->ndim >= 0 && t->ndim <= MXL_ST_MAX_DIMS);
  size_t n = mxl_dtype_size(t->dtype);
  for (int d = 0; d < t->ndim; d++) {
    check(t->shape[d] >= 0);
    n *= (size_t)t->shape[d];
  }
  check(n == t->nbytes);
  check(mxl_safetensors_find(st, t->name) == t);
  /* Reading every byte lets ASan catch a span outside the buffer. */
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < t->nbytes; i++) sink ^= t->data[i];
  (void)sink;
}

static void parse_and_check(const uint8_t *data, size_t size) {
  mxl_safetensors *st = NULL;
  if (mxl_safetensors_parse_buffer(data, size, "fuzz.safetensors", &st) != MXL_OK) {
    check(st == NULL && strstr(mxl_last_error(), "fuzz.safetensors") != NULL);
    return;
  }
  for (int i = 0; i < st->n_tensors; i++) {
    check_tensor(st, &st->tensors[i], data, size);
    if (i > 0) check(strcmp(st->tensors[i - 1].name, st->tensors[i].name) < 0);
  }
  for (int i = 0; i < mxl_safetensors_metadata_count(st); i++) {
    const char *key, *value;
    mxl_safetensors_metadata_at(st, i, &key, &value);
    check(key && value && mxl_safetensors_metadata(st, key) != NULL);
  }
  mxl_safetensors_close(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  parse_and_check(data, size);
  const uint8_t *nul = memchr(data, 0, size);
  size_t header_len = nul ? (size_t)(nul - data) : size;
  uint8_t *file = malloc(8 + size);
  if (!file) return 0;
  for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
  memcpy(file + 8, data, header_len);
  if (nul) memcpy(file + 8 + header_len, nul + 1, size - header_len - 1);
  parse_and_check(file, 8 + size - (nul ? 1 : 0));
  free(file);
  return 0;
}
