/* libFuzzer target for the training-state file parser (train/state_file.c):
 * any byte string must either be refused with a message or give blobs that
 * lie inside the buffer with the checksums their header declares, and every
 * blob must be found again by name with its size.
 *
 * Each input is tried twice: as a whole file, and as header JSON up to its
 * first NUL byte (the rest being the payload area) behind a prefix built
 * here with the header's checksum, so that the fuzzer reaches the header's
 * field checks instead of stopping at a stale length or checksum.
 *
 * Seeds (tests/fuzz/corpus/state_file): small checkpoints written by
 * mxl_state_save (current version) and one version-1 file, in both forms. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_container.h"
#include "train/state_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void parse_and_check(const uint8_t *data, size_t size) {
  mxl_state_file f;
  if (mxl_state_parse(data, size, "fuzz", &f) != MXL_OK) {
    check(f.header == NULL && f.blobs == NULL && mxl_last_error()[0] != '\0');
    return;
  }
  check(cJSON_IsObject(f.meta));
  for (int i = 0; i < f.n_blobs; i++) {
    const mxl_blob *b = &f.blobs[i];
    const uint8_t *p = b->data;
    check(p >= data && b->size <= size && (size_t)(p - data) <= size - b->size);
    const void *again = NULL;
    check(mxl_state_blob(&f, b->name, b->size, &again) == MXL_OK && again == b->data);
    check(mxl_state_blob(&f, b->name, b->size + 1, &again) == MXL_ERR_FORMAT);
  }
  mxl_state_close(&f);
}

static void parse_as_header_text(const uint8_t *data, size_t size) {
  size_t n = 0;
  uint8_t *file = fuzz_sealed_file(&mxl_state_container, data, size, &n);
  if (file) parse_and_check(file, n);
  free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  parse_and_check(data, size);
  parse_as_header_text(data, size);
  return 0;
}
