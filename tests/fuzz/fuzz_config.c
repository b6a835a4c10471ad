/* libFuzzer target for the three config parsers (config.json, original/
 * config.json, generation_config.json) and the metal model header: any
 * input must be refused with a message or give a config that validates and
 * survives a write/parse round trip.
 *
 * Seeds (tests/fuzz/corpus/config): the published 20b and tiny configs. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void round_trip(const mxl_config *c, char *(*write)(const mxl_config *),
                       mxl_status (*parse)(const char *, size_t, const char *, mxl_config *)) {
  char *text = write(c);
  if (!text) return;
  mxl_config back;
  check(parse(text, strlen(text), "round trip", &back) == MXL_OK);
  check(back.n_layers == c->n_layers && back.hidden == c->hidden &&
        back.n_experts == c->n_experts && back.head_dim == c->head_dim);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  mxl_config c;
  if (mxl_config_parse_hf(text, size, "config.json", &c) == MXL_OK) {
    check(mxl_config_validate(&c, "config.json") == MXL_OK);
    round_trip(&c, mxl_config_to_hf_json, mxl_config_parse_hf);
    mxl_config g = c;
    (void)mxl_config_parse_generation(text, size, "generation_config.json", &g);
  }
  if (mxl_config_parse_original(text, size, "original/config.json", &c) == MXL_OK) {
    check(mxl_config_validate(&c, "original/config.json") == MXL_OK);
    round_trip(&c, mxl_config_to_original_json, mxl_config_parse_original);
  }
  if (size >= MXL_METAL_MODEL_HEADER_BYTES &&
      mxl_config_parse_metal(data, "model.bin", &c) == MXL_OK) {
    c.vocab_size = 1000;
    if (mxl_config_validate(&c, "model.bin") == MXL_OK) {
      uint8_t again[MXL_METAL_MODEL_HEADER_BYTES];
      mxl_config_write_metal(&c, again);
      mxl_config back;
      check(mxl_config_parse_metal(again, "again", &back) == MXL_OK);
      check(back.n_layers == c.n_layers && back.hidden == c.hidden);
    }
  }
  return 0;
}
