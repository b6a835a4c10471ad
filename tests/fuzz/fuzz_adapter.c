/* libFuzzer target for the adapter file parser and payload decoder: any
 * byte string must either be refused with a message or give a directory
 * whose payloads lie inside the buffer, and decoding each payload must
 * either fail cleanly or produce exactly the declared tensor.
 *
 * Each input is tried twice: as a whole file, and as header JSON up to its
 * first NUL byte (the rest being the payload area) behind a prefix built
 * here with the header's checksum, so that mutated JSON is not refused at
 * once for a stale length or checksum and the fuzzer reaches the field
 * checks.
 *
 * Seeds (tests/fuzz/corpus/adapter): tiny adapters written by
 * mxl_adapter_write (F32 and BF16, zero and random B) in both forms, as
 * format version 2 files and as version-1 files (seed-v1-*, no header
 * checksum). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter_file.h"
#include "tests/fuzz/fuzz_container.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_DECODE_BYTES = 16 << 20 };

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void parse_and_check(const uint8_t *data, size_t size) {
  mxl_adapter_header *h = NULL;
  if (mxl_adapter_header_parse(data, size, "fuzz", &h) != MXL_OK) {
    check(h == NULL && mxl_last_error()[0] != '\0');
    return;
  }
  const mxl_lora_layout *lay = h->layout;
  check(h->data_start <= size && h->data_start % MXL_CONTAINER_ALIGN == 0);
  check(h->header_start + h->header_bytes <= h->data_start);
  uint64_t end = h->data_start;
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_adapter_entry *e = &h->entries[i];
    check(h->data_start + e->offset == end);
    end += e->compressed_size;
    check(end <= size);
  }
  check(end == size);
  /* Decode when the declared sizes are modest (zstd can expand a tiny frame
   * enormously; the parser is what is under test, not the allocator). */
  size_t max_count = 0;
  for (int i = 0; i < lay->n_tensors; i++)
    if (lay->tensors[i].count > max_count) max_count = lay->tensors[i].count;
  if (h->raw_total <= MAX_DECODE_BYTES && max_count * sizeof(float) <= MAX_DECODE_BYTES) {
    float *buf = malloc(max_count * sizeof *buf + 1);
    for (int i = 0; buf && i < lay->n_tensors; i++)
      (void)mxl_adapter_decode(h, data, i, buf, "fuzz");
    free(buf);
  }
  mxl_adapter_header_destroy(h);
}

static void parse_as_header_text(const uint8_t *data, size_t size) {
  size_t n = 0;
  uint8_t *file = fuzz_sealed_file(&mxl_adapter_container, data, size, &n);
  if (file) parse_and_check(file, n);
  free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  parse_and_check(data, size);
  parse_as_header_text(data, size);
  return 0;
}
