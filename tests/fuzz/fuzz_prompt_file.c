/* libFuzzer target for prompt caches on disk (infer/prompt_file.c,
 * `generate --prompt-cache`): any file must either be refused with a
 * message, leaving the KV cache empty, or fill it with a prefix of the
 * prompt no longer than the prompt allows, whose window the file held.
 * The model is a tiny gpt-oss ("test" preset, ref backend) written once per
 * process into /dev/shm (else /tmp); the key is 32 zero bytes.
 *
 * Each input is tried twice, as fuzz_state_file does: as a whole file, and
 * as header JSON up to its first NUL byte (the rest being the payload
 * area) sealed here with the header's checksum.
 *
 * Seeds (tests/fuzz/corpus/prompt_file): caches of 9, 30 and 100
 * positions of the prompt below (the last keeps sliding rows from 28 on), written by this target when MXL_FUZZ_WRITE_SEEDS=DIR
 * is set (it writes them, in both forms, and exits). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer/prompt_file.h"
#include "tests/fuzz/fuzz_container.h"
#include "tests/model_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_PROMPT = 120 };

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static model_fixture fx;
static mxl_kv_cache *cache;
static int32_t prompt[N_PROMPT];
static const uint8_t key[MXL_SHA256_SIZE];
static char path[96];

static void close_all(void) {
  mxl_kv_cache_destroy(fx.engine, cache);
  fixture_close(&fx);
  unlink(path);
}

static void write_seeds(const char *dir);

static void open_once(void) {
  if (fx.engine) return;
  check(fixture_open(&fx, "test", "hf", 3, "", 1) == MXL_OK);
  check(mxl_kv_cache_create(fx.engine, 128, 8, &cache) == MXL_OK);
  for (int i = 0; i < N_PROMPT; i++) prompt[i] = (int32_t)((i * 7 + 3) % fx.engine->w.vocab_rows);
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(path, sizeof path, "%s/mxl_fuzz_prompt_%ld", base, (long)getpid());
  atexit(close_all);
  const char *seeds = getenv("MXL_FUZZ_WRITE_SEEDS");
  if (seeds) { /* _exit: libFuzzer counts an exit() inside a run as a crash */
    write_seeds(seeds);
    close_all();
    _exit(0);
  }
}

/* Loads the file for the prompt, and for prompts that leave it at
 * positions 20, 33 and 50 (inside and past a seed's first sliding row). */
static void load_and_check(const uint8_t *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  check(f != NULL);
  check(fwrite(bytes, 1, n, f) == n);
  check(fclose(f) == 0);
  const int leave[4] = {N_PROMPT, 20, 33, 50};
  for (int i = 0; i < 4; i++) {
    int32_t mine[N_PROMPT];
    memcpy(mine, prompt, sizeof mine);
    if (leave[i] < N_PROMPT) mine[leave[i]] ^= 1;
    mxl_kv_cache_reset(fx.engine, cache);
    int reused = -1;
    mxl_status st = mxl_prompt_file_load(fx.engine, path, key, mine, N_PROMPT, cache, &reused);
    if (st != MXL_OK) {
      check(cache->n_past == 0 && reused == 0 && mxl_last_error()[0] != '\0');
      continue;
    }
    check(reused >= 0 && reused <= leave[i] && reused <= N_PROMPT - 1 && cache->n_past == reused);
    if (reused) check(mxl_kv_cache_resumable(&fx.model->config, cache, NULL, reused));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  open_once();
  load_and_check(data, size);
  size_t n = 0;
  uint8_t *file = fuzz_sealed_file(&mxl_prompt_container, data, size, &n);
  if (file) load_and_check(file, n);
  free(file);
  return 0;
}

/* A cache of the prompt's first n positions, as a file and as text: its
 * header up to the payload, a NUL, then the payload. */
static void write_seeds(const char *dir) {
  const int lengths[3] = {9, 30, 100}; /* 100: sliding rows from 28 (window 8 + slack 64) */
  for (int i = 0; i < 3; i++) {
    mxl_kv_cache *c = NULL;
    mxl_forward_state st = {0};
    check(mxl_kv_cache_create(fx.engine, 128, 8, &c) == MXL_OK);
    for (int done = 0; done < lengths[i]; done += 8) {
      int n = lengths[i] - done < 8 ? lengths[i] - done : 8;
      mxl_fwd_seq seq = {c, prompt + done, n};
      mxl_forward_out out = {NULL, 1, NULL};
      check(mxl_forward(fx.engine, &st, &seq, 1, NULL, &out) == MXL_OK);
    }
    char file[512], text[512];
    snprintf(file, sizeof file, "%s/seed-%d", dir, lengths[i]);
    snprintf(text, sizeof text, "%s/text-%d", dir, lengths[i]);
    check(mxl_prompt_file_save(fx.engine, c, prompt, key, file) == MXL_OK);
    mxl_kv_cache_destroy(fx.engine, c);
    mxl_forward_state_release(fx.engine, &st);
    /* the text form: the header JSON, a NUL, the payload after the header */
    FILE *in = fopen(file, "rb");
    check(in != NULL);
    static uint8_t buf[1 << 20];
    size_t size = fread(buf, 1, sizeof buf, in);
    fclose(in);
    check(size > MXL_CONTAINER_PREFIX);
    const uint8_t *json = buf + MXL_CONTAINER_PREFIX;
    size_t len = strnlen((const char *)json, size - MXL_CONTAINER_PREFIX);
    size_t start = (MXL_CONTAINER_PREFIX + len + MXL_CONTAINER_ALIGN - 1) / MXL_CONTAINER_ALIGN *
                   MXL_CONTAINER_ALIGN;
    FILE *out = fopen(text, "wb");
    check(out != NULL);
    check(fwrite(json, 1, len, out) == len && fputc(0, out) == 0);
    check(fwrite(buf + start, 1, size - start, out) == size - start);
    check(fclose(out) == 0);
  }
}
