/* libFuzzer target for the PEFT adapter import (adapters/peft_import.c:
 * adapter_config.json with its target_modules / target_parameters patterns,
 * then the tensors of adapter_model.safetensors mapped onto a LoRA set):
 * the input up to its first NUL byte is the config, the rest the
 * safetensors file; both are written to a private folder (the importer
 * reads a directory) and imported for a small gpt-oss-shaped config. The
 * import must either fail with a message or give a set whose layout fits
 * the config. The folder is in /dev/shm when writable (else /tmp) and is
 * removed at exit.
 *
 * Seeds (tests/fuzz/corpus/peft_import): adapters written by
 * mxl_peft_export for this config (attention only, experts, both). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapters/peft.h"
#include "tests/adapter_fixture.h" /* fake_config: a small gpt-oss shape */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static char dir[64];

static int write_file(const char *name, const uint8_t *bytes, size_t n) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *fp = fopen(path, "wb");
  if (!fp) return 0;
  int ok = fwrite(bytes, 1, n, fp) == n;
  return fclose(fp) == 0 && ok;
}

static void remove_dir(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  unlink(path);
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dir[0]) {
    /* tmpfs when there is one: two files are written per input */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/mxl_fuzz_peft_%ld", base, (long)getpid());
    check(mkdir(dir, 0700) == 0 || access(dir, W_OK) == 0);
    atexit(remove_dir);
  }
  const uint8_t *nul = memchr(data, 0, size);
  size_t n = nul ? (size_t)(nul - data) : size;
  if (!write_file("adapter_config.json", data, n) ||
      !write_file("adapter_model.safetensors", nul ? nul + 1 : data + size,
                  nul ? size - n - 1 : 0))
    return 0;
  mxl_config c;
  fake_config(&c);
  mxl_lora *lora = NULL;
  char *report = NULL;
  if (mxl_peft_import_report(dir, &c, &lora, &report) != MXL_OK) {
    check(lora == NULL && report == NULL && mxl_last_error()[0] != '\0');
    return 0;
  }
  check(lora && lora->layout->n_layers == c.n_layers && report != NULL);
  mxl_lora_destroy(lora);
  free(report);
  return 0;
}
