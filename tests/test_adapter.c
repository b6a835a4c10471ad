/* Adapter files: fingerprint, save/open/verify/load round trips, and every
 * way a file can be wrong (truncated, corrupted, unknown version, malformed
 * header fields, another base model). */
#include <inttypes.h>
#include <unistd.h>

#include <zstd.h>

#include "adapters/adapter_file.h"
#include "adapters/fingerprint.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "test.h"
#include "tests/adapter_fixture.h"
#include "tests/container_edit.h"

/* ------------------------------------------------------------ helpers */

static char tmp_dir[64];

static void make_tmp_dir(void) {
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mxl_adapter_XXXXXX");
  if (!mkdtemp(tmp_dir)) tmp_dir[0] = '\0';
}

static const char *tmp_path(const char *name) {
  static char path[4][128];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, 128, "%s/%s", tmp_dir, name);
  return p;
}

/* q,k,v,o on every layer, experts on layer 1: the cookbook's shape. */
static void cookbook_like(const mxl_config *c, mxl_lora_config *lc, int rank) {
  mxl_lora_config_init(lc, rank, 2.0f * rank);
  mxl_lora_config_add(lc, MXL_LORA_ATTN_BITS, NULL, 0, c->n_layers);
  const int l1[] = {1};
  mxl_lora_config_add(lc, MXL_LORA_EXPERT_BITS, l1, 1, c->n_layers);
}

static mxl_adapter_save_options provenance_options(mxl_adapter_dtype dt) {
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  opt.dtype = dt;
  opt.provenance.recipe = "cookbook-multilingual";
  opt.provenance.dataset_sha256 =
      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  opt.provenance.steps = 1234;
  opt.provenance.final_loss = 0.8125;
  opt.provenance.created_at = "2026-01-02T03:04:05Z";
  return opt;
}

/* Saves a filled set for `model` and returns the file's bytes. */
static uint8_t *saved_bytes(const fake_model *fm, mxl_adapter_dtype dt, size_t *size) {
  mxl_lora_config lc;
  cookbook_like(&fm->m.config, &lc, 4);
  mxl_lora *lora = NULL;
  uint8_t *data = NULL;
  *size = 0;
  if (mxl_lora_create(&fm->m.config, &lc, NULL, &lora) != MXL_OK) return NULL;
  fixture_fill(lora, 5, 0.01f);
  mxl_adapter_save_options opt = provenance_options(dt);
  const char *path = tmp_path("bytes.mxla");
  if (mxl_adapter_save(path, lora, &fm->m, &opt) == MXL_OK)
    mxl_read_file(path, 1 << 26, (char **)&data, size);
  mxl_lora_destroy(lora);
  return data;
}

static mxl_status parse_bytes(const uint8_t *data, size_t size) {
  mxl_adapter_header *h = NULL;
  mxl_status st = mxl_adapter_header_parse(data, size, "mem.mxla", &h);
  mxl_adapter_header_destroy(h);
  return st;
}

/* The file with its JSON header edited and re-sealed (the checksum
 * recomputed, so that the field checks behind it are reached): the first
 * `from` becomes `to`; the prefix's length and the payload area move
 * accordingly. NULL when `from` is not in the header. */
static uint8_t *edit_header(const uint8_t *data, size_t size, const char *from, const char *to,
                            size_t *out_size) {
  return container_edit(&mxl_adapter_container, data, size, from, to, 1, out_size);
}

/* ------------------------------------------------------------ fingerprint */

static void test_fingerprint_text(void) {
  mxl_config c;
  mxl_config_gpt_oss_20b(&c);
  char text[MXL_FINGERPRINT_TEXT_SIZE];
  mxl_fingerprint_config_text(&c, text);
  const char *expect =
      "mxlora-fingerprint-v1\nn_layers=24\nn_experts=32\nexperts_per_token=4\nhidden=2880\n"
      "intermediate=2880\nhead_dim=64\nn_heads=64\nn_kv_heads=8\nsliding_window=128\n"
      "initial_context=4096\nrope_theta=1.5e+05\nrope_factor=32\nrope_beta_fast=32\n"
      "rope_beta_slow=1\nswiglu_limit=7\nswiglu_alpha=1.702\nrms_eps=1e-05\n"
      "layer_types=SFSFSFSFSFSFSFSFSFSFSFSF\n";
  MXL_CHECK_MSG(!strcmp(text, expect), "got:\n%s", text);
  /* float32 re-derivation noise does not change the text; real changes do. */
  mxl_config d = c;
  d.rope_beta_slow = 0.99999994f;
  d.vocab_size = 200014; /* metal keeps fewer rows: not fingerprinted */
  char other[MXL_FINGERPRINT_TEXT_SIZE];
  mxl_fingerprint_config_text(&d, other);
  MXL_CHECK(!strcmp(text, other));
  char diff[256];
  MXL_CHECK(mxl_fingerprint_config_diff(&c, &d, diff, sizeof diff) == 0);
  d.n_experts = 128;
  d.rope_theta = 50000.0f;
  MXL_CHECK(mxl_fingerprint_config_diff(&c, &d, diff, sizeof diff) == 2);
  MXL_CHECK_MSG(!strcmp(diff, "n_experts 32 vs 128, rope_theta 1.5e+05 vs 50000"), "%s", diff);
}

/* The digest is SHA-256 over exactly the byte stream fingerprint.h names. */
static void test_fingerprint_stream(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t H = (size_t)c.hidden, E = (size_t)c.n_experts, nh = (size_t)c.n_heads;
  char text[MXL_FINGERPRINT_TEXT_SIZE];
  mxl_fingerprint_config_text(&c, text);
  size_t n_values = (size_t)c.n_layers * (2 * H + nh + E * H + E) + H;
  size_t len = strlen(text);
  uint8_t *stream = malloc(len + 2 * n_values), *p = stream + len;
  memcpy(stream, text, len);
  for (int l = 0; l < c.n_layers; l++) {
    const mxl_layer_weights *lw = &fm.layers[l];
    const uint16_t *parts[] = {lw->attn_norm, lw->sinks, lw->mlp_norm, lw->router.w,
                               lw->router.bias};
    size_t counts[] = {H, nh, H, E * H, E};
    for (int k = 0; k < 5; k++)
      for (size_t i = 0; i < counts[k]; i++) {
        *p++ = (uint8_t)(parts[k][i] & 0xff);
        *p++ = (uint8_t)(parts[k][i] >> 8);
      }
  }
  for (size_t i = 0; i < H; i++) {
    *p++ = (uint8_t)(fm.m.w.final_norm[i] & 0xff);
    *p++ = (uint8_t)(fm.m.w.final_norm[i] >> 8);
  }
  uint8_t expect[32], got[32];
  mxl_sha256(stream, len + 2 * n_values, expect);
  MXL_CHECK_OK(mxl_model_fingerprint(&fm.m, got));
  MXL_CHECK(!memcmp(expect, got, 32));

  /* Another layout of the same model (copied tensors, metal transforms
   * recorded in the view, fewer vocabulary rows) has the same digest. */
  fake_model metal;
  MXL_CHECK(fake_model_init(&metal, &c, 1));
  metal.m.layout = MXL_LAYOUT_METAL;
  metal.m.config.vocab_size = 0;
  metal.m.w.qk_interleaved = 1;
  metal.m.w.attn_scale = 1.0f;
  uint8_t again[32];
  MXL_CHECK_OK(mxl_model_fingerprint(&metal.m, again));
  MXL_CHECK(!memcmp(again, got, 32));
  /* One router weight differs: another digest. */
  metal.store[2 * H + nh + H + 5] ^= 1;
  MXL_CHECK_OK(mxl_model_fingerprint(&metal.m, again));
  MXL_CHECK(memcmp(again, got, 32) != 0);
  /* A missing tensor is an error naming it. */
  metal.layers[2].sinks = NULL;
  MXL_CHECK_FAILS(mxl_model_fingerprint(&metal.m, again), MXL_ERR_ARGUMENT, "sinks in layer 2");
  metal.m.w.final_norm = NULL;
  MXL_CHECK_FAILS(mxl_model_fingerprint(&metal.m, again), MXL_ERR_ARGUMENT, "final norm");
  free(stream);
  fake_model_free(&fm);
  fake_model_free(&metal);
}

/* ------------------------------------------------------------ round trips */

static void check_round_trip(mxl_adapter_dtype dt) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  mxl_lora_config lc;
  cookbook_like(&c, &lc, 4);
  lc.rslora = 1;
  mxl_lora *lora = NULL, *back = NULL;
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, NULL, &lora));
  if (!lora) return;
  fixture_fill(lora, 9, 0.02f);
  mxl_adapter_save_options opt = provenance_options(dt);
  const char *path = tmp_path("round.mxla");
  MXL_CHECK_OK(mxl_adapter_save(path, lora, &fm.m, &opt));
  mxl_adapter *a = NULL;
  MXL_CHECK_OK(mxl_adapter_open(path, &a));
  if (!a) goto done;
  const mxl_adapter_info *in = mxl_adapter_get_info(a);
  MXL_CHECK(in->format_version == 2 && in->header_checksum == 1 && in->rank == 4 && in->alpha == 8.0 && in->rslora == 1);
  MXL_CHECK_NEAR(in->scaling, 4.0, 1e-6);
  MXL_CHECK(in->dtype == dt && in->n_tensors == lora->layout->n_tensors);
  MXL_CHECK(in->n_params == lora->layout->n_params);
  MXL_CHECK(in->raw_bytes == in->n_params * (dt == MXL_ADAPTER_BF16 ? 2 : 4));
  MXL_CHECK_MSG(!strcmp(in->targets, "q:0-2 k:0-2 v:0-2 o:0-2 gate_up:1 down:1"), "%s",
                in->targets);
  MXL_CHECK(!strcmp(in->recipe, "cookbook-multilingual") && in->steps == 1234);
  MXL_CHECK(in->final_loss == 0.8125 && !strcmp(in->created_at, "2026-01-02T03:04:05Z"));
  MXL_CHECK(!strncmp(in->created_by, "mxlora ", 7));
  MXL_CHECK(!strcmp(in->dataset_sha256, opt.provenance.dataset_sha256));
  MXL_CHECK(in->base_layers == 3 && in->base_experts == 4 && in->base_hidden == 24);
  uint8_t digest[32];
  char hex[65];
  MXL_CHECK_OK(mxl_model_fingerprint(&fm.m, digest));
  mxl_sha256_hex(digest, hex);
  MXL_CHECK(!strcmp(in->fingerprint, hex));
  MXL_CHECK_OK(mxl_adapter_verify(a));
  MXL_CHECK_OK(mxl_adapter_check_model(a, &fm.m));
  MXL_CHECK_OK(mxl_adapter_load(a, &fm.m, &back));
  if (back) {
    const mxl_lora_layout *lay = lora->layout;
    MXL_CHECK(back->layout->n_floats == lay->n_floats);
    MXL_CHECK(back->layout->cfg.rslora == 1 && back->layout->scaling == lay->scaling);
    size_t mismatches = 0;
    for (int i = 0; i < lay->n_tensors; i++) {
      const mxl_lora_tensor *x = &lay->tensors[i];
      for (size_t j = 0; j < x->count; j++) {
        float want = lora->params[x->offset + j];
        if (dt == MXL_ADAPTER_BF16) want = mxl_bf16_to_f32(mxl_f32_to_bf16(want));
        uint32_t wa, ga;
        memcpy(&wa, &want, 4);
        memcpy(&ga, &back->params[x->offset + j], 4);
        mismatches += wa != ga;
      }
    }
    MXL_CHECK_MSG(mismatches == 0, "%zu values differ", mismatches);
  }
  /* Description for inspect: text and JSON. */
  char *report = NULL;
  MXL_CHECK_OK(mxl_adapter_describe(a, 0, &report));
  MXL_CHECK(report && strstr(report, "layers.1.experts.gate_up.lora_B") &&
            strstr(report, "[4, 40, 4]") && strstr(report, "rank 4, alpha 8"));
  free(report);
  MXL_CHECK_OK(mxl_adapter_describe(a, 1, &report));
  cJSON *doc = NULL;
  if (report) MXL_CHECK_OK(mxl_json_parse(report, strlen(report), "describe", &doc));
  const cJSON *file = cJSON_GetObjectItemCaseSensitive(doc, "file");
  MXL_CHECK(cJSON_IsObject(file) &&
            cJSON_GetObjectItemCaseSensitive(file, "bytes")->valuedouble ==
                (double)in->file_bytes);
  cJSON_Delete(doc);
  free(report);
done:
  mxl_adapter_close(a);
  mxl_lora_destroy(back);
  mxl_lora_destroy(lora);
  fake_model_free(&fm);
}

static void test_round_trip_f32(void) { check_round_trip(MXL_ADAPTER_F32); }
static void test_round_trip_bf16(void) { check_round_trip(MXL_ADAPTER_BF16); }

/* The file size is the prefix, the header, alignment, and the payloads;
 * the directory accounts for every payload byte. */
static void test_layout_on_disk(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t size = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_F32, &size);
  MXL_CHECK(data != NULL);
  if (!data) return;
  MXL_CHECK(!memcmp(data, "MXLADAPT\2\0\0\0\0\0\0\0", 16));
  mxl_adapter_header *h = NULL;
  MXL_CHECK_OK(mxl_adapter_header_parse(data, size, "mem", &h));
  if (h) {
    MXL_CHECK(h->data_start % 64 == 0 && h->data_start >= 56 + h->header_bytes);
    MXL_CHECK(h->header_start == 56 && h->header_checked == 1);
    uint8_t digest[MXL_SHA256_SIZE];
    mxl_sha256(data + 56, h->header_bytes, digest);
    MXL_CHECK(!memcmp(data + 24, digest, sizeof digest));
    uint64_t sum = 0;
    for (int i = 0; i < h->layout->n_tensors; i++) sum += h->entries[i].compressed_size;
    MXL_CHECK(h->data_start + sum == size);
    MXL_CHECK(data[56] == '{');
    for (uint64_t i = 56 + h->header_bytes; i < h->data_start; i++) MXL_CHECK(data[i] == 0);
  }
  mxl_adapter_header_destroy(h);
  free(data);
  fake_model_free(&fm);
}

static void test_shuffle(void) {
  const uint8_t in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint8_t out[8], back[8];
  mxl_byte_shuffle(out, in, 2, 4);
  const uint8_t expect[8] = {1, 5, 2, 6, 3, 7, 4, 8};
  MXL_CHECK(!memcmp(out, expect, 8));
  mxl_byte_unshuffle(back, out, 2, 4);
  MXL_CHECK(!memcmp(back, in, 8));
  mxl_byte_shuffle(out, in, 4, 2);
  const uint8_t expect2[8] = {1, 3, 5, 7, 2, 4, 6, 8};
  MXL_CHECK(!memcmp(out, expect2, 8));
}

/* Compression of trained-like data: A ~ N(0, 1/in), B small; and of the
 * zero B of a fresh adapter. Prints the ratios; checks what must hold. */
static void test_compression(void) {
  mxl_config c;
  fake_config(&c);
  c.hidden = 256;
  c.intermediate = 128;
  c.head_dim = 32;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  mxl_lora_config lc;
  cookbook_like(&c, &lc, 8);
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, NULL, &lora));
  if (!lora) return;
  for (int dt = 0; dt < 2; dt++) {
    for (int zero_b = 0; zero_b < 2; zero_b++) {
      fixture_fill(lora, 3, zero_b ? 0.0f : 0.003f);
      mxl_adapter_save_options opt = provenance_options((mxl_adapter_dtype)dt);
      const char *path = tmp_path("ratio.mxla");
      MXL_CHECK_OK(mxl_adapter_save(path, lora, &fm.m, &opt));
      mxl_adapter *a = NULL;
      MXL_CHECK_OK(mxl_adapter_open(path, &a));
      if (!a) continue;
      const mxl_adapter_header *h = mxl_adapter_header_of(a);
      uint64_t a_raw = 0, a_c = 0, b_raw = 0, b_c = 0;
      int a_shuffled = 0, n_a = 0;
      for (int i = 0; i < h->layout->n_tensors; i++) {
        const mxl_adapter_entry *e = &h->entries[i];
        if (h->layout->tensors[i].is_b) {
          b_raw += e->raw_size;
          b_c += e->compressed_size;
        } else {
          a_raw += e->raw_size;
          a_c += e->compressed_size;
          a_shuffled += e->encoding == MXL_ENCODING_SHUFFLE_ZSTD;
          n_a++;
        }
      }
      double ra = (double)a_c / (double)a_raw, rb = (double)b_c / (double)b_raw;
      printf("compression %s%s: A %.3f (%d/%d shuffled), B %.4f\n", dt ? "BF16" : "F32",
             zero_b ? ", zero B" : "", ra, a_shuffled, n_a, rb);
      /* Random mantissas do not compress, exponents and signs do a little. */
      MXL_CHECK(ra < 1.0 && ra > 0.5);
      /* The exponent plane compresses better on its own: the writer picks
       * the shuffle for (nearly) every A. */
      MXL_CHECK(2 * a_shuffled > n_a);
      if (zero_b) MXL_CHECK(rb < 0.02);
      else MXL_CHECK(rb < 1.0);
      MXL_CHECK_OK(mxl_adapter_verify(a));
      mxl_adapter_close(a);
    }
  }
  mxl_lora_destroy(lora);
  fake_model_free(&fm);
}

/* ------------------------------------------------------------ refusals */

static void test_wrong_base(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm, other, bigger;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  MXL_CHECK(fake_model_init(&other, &c, 2)); /* same shape, other weights */
  mxl_config c8 = c;
  c8.n_experts = 8;
  MXL_CHECK(fake_model_init(&bigger, &c8, 1));
  size_t size = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_F32, &size);
  const char *path = tmp_path("base.mxla");
  MXL_CHECK_OK(mxl_write_file_atomic(path, data, size));
  mxl_adapter *a = NULL;
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_adapter_open(path, &a));
  if (a) {
    uint8_t d_other[32];
    char hex_other[65];
    mxl_model_fingerprint(&other.m, d_other);
    mxl_sha256_hex(d_other, hex_other);
    MXL_CHECK_FAILS(mxl_adapter_load(a, &other.m, &lora), MXL_ERR_ARGUMENT,
                    "same architecture, different weights");
    MXL_CHECK(lora == NULL);
    MXL_CHECK(strstr(mxl_last_error(), hex_other) != NULL);
    MXL_CHECK(strstr(mxl_last_error(), mxl_adapter_get_info(a)->fingerprint) != NULL);
    MXL_CHECK_FAILS(mxl_adapter_check_model(a, &bigger.m), MXL_ERR_ARGUMENT,
                    "n_experts 4 vs 8");
    MXL_CHECK_OK(mxl_adapter_check_model(a, &fm.m));
  }
  mxl_adapter_close(a);
  free(data);
  fake_model_free(&fm);
  fake_model_free(&other);
  fake_model_free(&bigger);
}

static void test_prefix_errors(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t size = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_BF16, &size);
  if (!data) return;
  uint8_t *copy = malloc(size);
  MXL_CHECK_OK(parse_bytes(data, size));

  MXL_CHECK_FAILS(parse_bytes(data, 10), MXL_ERR_FORMAT, "truncated");
  memcpy(copy, data, size);
  copy[0] = 'X';
  MXL_CHECK_FAILS(parse_bytes(copy, size), MXL_ERR_FORMAT, "not an mxlora adapter");
  memcpy(copy, data, size);
  copy[8] = 7;
  MXL_CHECK_FAILS(parse_bytes(copy, size), MXL_ERR_UNSUPPORTED, "version 7");
  MXL_CHECK(strstr(mxl_last_error(), "reads versions 1 and 2") != NULL);
  memcpy(copy, data, size);
  copy[12] = 1;
  MXL_CHECK_FAILS(parse_bytes(copy, size), MXL_ERR_FORMAT, "reserved");
  memcpy(copy, data, size);
  copy[23] = 1; /* header length 2^56 */
  MXL_CHECK_FAILS(parse_bytes(copy, size), MXL_ERR_FORMAT, "header length");
  memcpy(copy, data, size);
  copy[16] = copy[17] = copy[18] = 0xff; /* ~16 MiB: inside bounds, past the end */
  MXL_CHECK_FAILS(parse_bytes(copy, size), MXL_ERR_FORMAT, "past the end");
  memcpy(copy, data, size);
  memset(copy + 16, 0, 8);
  MXL_CHECK_FAILS(parse_bytes(copy, size), MXL_ERR_FORMAT, "header length 0");

  /* Every truncation fails cleanly (and names the file). */
  int ok = 0;
  for (size_t n = 0; n < size; n++) ok += parse_bytes(data, n) == MXL_OK;
  MXL_CHECK_MSG(ok == 0, "%d truncations parsed", ok);
  MXL_CHECK_FAILS(parse_bytes(data, size - 1), MXL_ERR_FORMAT, "mem.mxla");
  MXL_CHECK(strstr(mxl_last_error(), "truncated") != NULL);
  /* A trailing byte is refused too. */
  uint8_t *longer = calloc(1, size + 1);
  memcpy(longer, data, size);
  MXL_CHECK_FAILS(parse_bytes(longer, size + 1), MXL_ERR_FORMAT, "1 bytes after the last");
  free(longer);
  free(copy);
  free(data);
  fake_model_free(&fm);
}

/* A hand edit of a saved file ("alpha":16 -> 96), which loaded silently
 * before format version 2 (eval loss 3.76 -> 7.08). The header
 * checksum refuses it, through the file API as well. */
static void test_header_edit_refused(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  mxl_lora_config lc;
  cookbook_like(&c, &lc, 8); /* alpha 16 */
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, NULL, &lora));
  if (!lora) return;
  fixture_fill(lora, 5, 0.01f);
  const char *path = tmp_path("alpha.mxla");
  MXL_CHECK_OK(mxl_adapter_save(path, lora, &fm.m, NULL));
  char *data = NULL;
  size_t size = 0, n = 0;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 26, &data, &size));
  uint8_t *edited = data ? container_edit(&mxl_adapter_container, (uint8_t *)data, size,
                                          "\"alpha\":16", "\"alpha\":96", 0, &n)
                         : NULL;
  MXL_CHECK(edited != NULL && n == size);
  mxl_adapter *a = NULL;
  if (edited && mxl_write_file_atomic(path, edited, n) == MXL_OK) {
    MXL_CHECK_FAILS(mxl_adapter_open(path, &a), MXL_ERR_FORMAT, "header was edited");
    MXL_CHECK(a == NULL && strstr(mxl_last_error(), "alpha.mxla") != NULL);
  }
  mxl_adapter_close(a);
  free(edited);
  free(data);
  mxl_lora_destroy(lora);
  fake_model_free(&fm);
}

static char warned[1024];
static void capture_warning(void *user, const char *message) {
  (void)user;
  snprintf(warned, sizeof warned, "%s", message);
}

/* A version-1 file (no header checksum) still opens and loads the same
 * tensors, with a warning; the adapter's info says so. */
static void test_legacy_version(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t size = 0, n = 0, m = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_F32, &size);
  if (!data) return;
  uint8_t *v1 = NULL;
  uint8_t *said_v1 = container_edit(&mxl_adapter_container, data, size,
                                    "\"format_version\":2", "\"format_version\":1", 0, &n);
  if (said_v1) v1 = container_to_legacy(&mxl_adapter_container, said_v1, n, &m);
  MXL_CHECK(v1 != NULL);
  if (!v1) goto done;
  MXL_CHECK(!memcmp(v1, "MXLADAPT\1\0\0\0\0\0\0\0", 16) && v1[24] == '{');
  const char *path = tmp_path("v1.mxla");
  MXL_CHECK_OK(mxl_write_file_atomic(path, v1, m));
  warned[0] = '\0';
  mxl_set_warning_handler(capture_warning, NULL);
  mxl_adapter *a = NULL;
  MXL_CHECK_OK(mxl_adapter_open(path, &a));
  mxl_set_warning_handler(NULL, NULL);
  MXL_CHECK_MSG(strstr(warned, "v1.mxla") && strstr(warned, "no checksum"), "warning: %s",
                warned);
  if (a) {
    const mxl_adapter_info *in = mxl_adapter_get_info(a);
    MXL_CHECK(in->format_version == 1 && in->header_checksum == 0);
    MXL_CHECK_OK(mxl_adapter_verify(a));
    mxl_lora *lora = NULL;
    MXL_CHECK_OK(mxl_adapter_load(a, &fm.m, &lora));
    mxl_lora_destroy(lora);
    char *report = NULL;
    MXL_CHECK_OK(mxl_adapter_describe(a, 0, &report));
    MXL_CHECK(report && strstr(report, "v1 (header not checksummed)"));
    free(report);
  }
  mxl_adapter_close(a);
  /* The current version's files never warn. */
  warned[0] = '\0';
  mxl_set_warning_handler(capture_warning, NULL);
  MXL_CHECK_OK(mxl_write_file_atomic(path, data, size));
  MXL_CHECK_OK(mxl_adapter_open(path, &a));
  mxl_set_warning_handler(NULL, NULL);
  MXL_CHECK(warned[0] == '\0');
  mxl_adapter_close(a);
done:
  free(said_v1);
  free(v1);
  free(data);
  fake_model_free(&fm);
}

typedef struct edit_case {
  const char *from, *to;
  mxl_status status;
  const char *needle;
} edit_case;

/* Header fields: each broken in turn, each error names the field. */
static void test_header_errors(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t size = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_F32, &size);
  if (!data) return;
  static const edit_case cases[] = {
      {"{\"format\"", "[{\"format\"", MXL_ERR_FORMAT, "JSON syntax error"},
      {"\"mxlora-adapter\"", "\"other\"", MXL_ERR_FORMAT, "format: \"other\""},
      {"\"format_version\":2", "\"format_version\":1", MXL_ERR_FORMAT, "disagrees"},
      {"\"format_version\":2", "\"format_version\":\"2\"", MXL_ERR_FORMAT, "format_version"},
      {"\"fingerprint\":\"", "\"fingerprint\":\"x", MXL_ERR_FORMAT, "base_model: fingerprint"},
      {"\"hidden\":24", "\"hidden\":\"24\"", MXL_ERR_FORMAT, "config: hidden"},
      {"\"hidden\":24", "\"hidden\":24.5", MXL_ERR_FORMAT, "config: hidden"},
      {"\"n_layers\":3", "\"n_layers\":0", MXL_ERR_FORMAT, "config: n_layers"},
      {"\"layer_types\":\"SFS\"", "\"layer_types\":\"SF\"", MXL_ERR_FORMAT, "layer_types"},
      {"\"layer_types\":\"SFS\"", "\"layer_types\":\"SXS\"", MXL_ERR_FORMAT, "layer_types"},
      {"\"rms_eps\":", "\"rms_eps\":null,\"x\":", MXL_ERR_FORMAT, "rms_eps"},
      {"\"rank\":4", "\"rank\":0", MXL_ERR_FORMAT, "lora: rank"},
      {"\"rank\":4", "\"rank\":2", MXL_ERR_FORMAT, "shape does not match"},
      {"\"alpha\":8", "\"alpha\":\"8\"", MXL_ERR_FORMAT, "lora: alpha"},
      {"\"rslora\":false", "\"rslora\":0", MXL_ERR_FORMAT, "lora: rslora"},
      {"\"targets\":[\"q\"", "\"targets\":[\"x\"", MXL_ERR_FORMAT, "targets[0]"},
      {"\"targets\":[\"q\"", "\"targets\":[\"k\"", MXL_ERR_FORMAT, "listed twice"},
      {"\"targets\":[", "\"targets\":[\"q\",", MXL_ERR_FORMAT, "listed twice"},
      {"\"layers\":{\"q\":[0,1,2]", "\"layers\":{\"q\":[0,1,3]", MXL_ERR_FORMAT, "q[2]"},
      {"\"layers\":{\"q\":[0,1,2]", "\"layers\":{\"q\":[0,2,1]", MXL_ERR_FORMAT, "increasing"},
      {"\"layers\":{\"q\":[0,1,2]", "\"layers\":{\"q\":[]", MXL_ERR_FORMAT, "empty"},
      {"\"layers\":{\"q\":[0,1,2]", "\"layers\":{\"q\":[0,1]", MXL_ERR_FORMAT, "make 26"},
      {"\"layers\":{", "\"layers\":{\"up\":[0],", MXL_ERR_FORMAT, "\"up\" is not in"},
      {"\"dtype\":\"F32\",\"provenance\"", "\"dtype\":\"F16\",\"provenance\"", MXL_ERR_FORMAT,
       "dtype: \"F16\""},
      {"\"steps\":1234", "\"steps\":-1", MXL_ERR_FORMAT, "provenance: steps"},
      {"\"final_loss\":0.8125", "\"final_loss\":\"low\"", MXL_ERR_FORMAT, "final_loss"},
      {"\"recipe\":\"", "\"recipe\":7,\"r\":\"", MXL_ERR_FORMAT, "provenance: recipe"},
      {"\"dataset_sha256\":\"9f", "\"dataset_sha256\":\"9F", MXL_ERR_FORMAT,
       "dataset_sha256"},
      {",\"provenance\"", ",\"provenance\":1,\"p\"", MXL_ERR_FORMAT, "provenance"},
      {"\"tensors\":[", "\"tensors\":[{},", MXL_ERR_FORMAT, "tensors: 29 entries"},
      {"\"name\":\"layers.0.attn.q.lora_A\"", "\"name\":\"layers.0.attn.k.lora_A\"",
       MXL_ERR_FORMAT, "tensors[0]: name"},
      {"\"shape\":[4,24]", "\"shape\":[4,25]", MXL_ERR_FORMAT, "shape does not match"},
      {"\"shape\":[4,24]", "\"shape\":[1,4,24]", MXL_ERR_FORMAT, "shape does not match"},
      {"\"shape\":[4,24]", "\"shape\":[4,-24]", MXL_ERR_FORMAT, "shape"},
      {"\"dtype\":\"F32\",\"shape\"", "\"dtype\":\"BF16\",\"shape\"", MXL_ERR_FORMAT,
       "tensors[0] (layers.0.attn.q.lora_A): dtype"},
      {"\"raw_size\":384", "\"raw_size\":385", MXL_ERR_FORMAT, "raw_size 385"},
      {"\"raw_size\":384", "\"raw_size\":1000000000", MXL_ERR_FORMAT, "cannot come from"},
      {"\"offset\":0", "\"offset\":1", MXL_ERR_FORMAT, "gap"},
      {"\"compressed_size\":", "\"compressed_size\":1e300,\"c\":", MXL_ERR_FORMAT,
       "compressed_size"},
      {"\"encoding\":\"", "\"encoding\":\"lz4", MXL_ERR_FORMAT, "encoding"},
      {"\"sha256\":\"", "\"sha256\":\"g", MXL_ERR_FORMAT, "sha256"},
      {"\"name\":", "\"name\":1,\"n\":", MXL_ERR_FORMAT, "tensors[0]: name"},
      {"\"rank\":4", "\"rank\":4,\"rank\":4", MXL_ERR_FORMAT, "duplicate key"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    size_t n = 0;
    uint8_t *edited = edit_header(data, size, cases[k].from, cases[k].to, &n);
    MXL_CHECK_MSG(edited != NULL, "case %zu: \"%s\" not in the header", k, cases[k].from);
    if (!edited) continue;
    mxl_status st = parse_bytes(edited, n);
    MXL_CHECK_MSG(st == cases[k].status, "case %zu (%s): got %s: %s", k, cases[k].to,
                  mxl_status_name(st), mxl_last_error());
    MXL_CHECK_MSG(strstr(mxl_last_error(), cases[k].needle) != NULL,
                  "case %zu: \"%s\" does not mention \"%s\"", k, mxl_last_error(),
                  cases[k].needle);
    free(edited);
  }
  /* Overlap: the second payload starts inside the first. */
  mxl_adapter_header *h = NULL;
  MXL_CHECK_OK(mxl_adapter_header_parse(data, size, "mem", &h));
  if (h) {
    char from[64], to[64];
    size_t n = 0;
    snprintf(from, sizeof from, "\"offset\":%" PRIu64 ",", h->entries[1].offset);
    snprintf(to, sizeof to, "\"offset\":%" PRIu64 ",", h->entries[1].offset - 1);
    uint8_t *edited = edit_header(data, size, from, to, &n);
    MXL_CHECK(edited != NULL);
    if (edited) MXL_CHECK_FAILS(parse_bytes(edited, n), MXL_ERR_FORMAT, "overlaps");
    free(edited);
  }
  mxl_adapter_header_destroy(h);
  free(data);
  fake_model_free(&fm);
}

/* Payload damage passes open (the directory is intact) and fails verify
 * and load with the tensor's name. */
static void test_payload_corruption(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t size = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_F32, &size);
  if (!data) return;
  mxl_adapter_header *h = NULL;
  MXL_CHECK_OK(mxl_adapter_header_parse(data, size, "mem", &h));
  if (!h) return;
  const char *path = tmp_path("corrupt.mxla");
  int failures = 0, cases = 0;
  /* Flip one byte in the middle and one at the end of every payload. */
  for (int i = 0; i < h->layout->n_tensors; i++) {
    const mxl_adapter_entry *e = &h->entries[i];
    uint64_t where[2] = {h->data_start + e->offset + e->compressed_size / 2,
                         h->data_start + e->offset + e->compressed_size - 1};
    for (int k = 0; k < 2; k++) {
      data[where[k]] ^= 0x10;
      mxl_write_file_atomic(path, data, size);
      data[where[k]] ^= 0x10;
      mxl_adapter *a = NULL;
      mxl_lora *lora = NULL;
      cases++;
      if (mxl_adapter_open(path, &a) != MXL_OK) continue;
      mxl_status v = mxl_adapter_verify(a), l = mxl_adapter_load(a, &fm.m, &lora);
      int named = strstr(mxl_last_error(), h->layout->tensors[i].name) != NULL;
      failures += v == MXL_ERR_FORMAT && l == MXL_ERR_FORMAT && lora == NULL && named;
      mxl_adapter_close(a);
    }
  }
  MXL_CHECK_MSG(failures == cases, "%d of %d corruptions detected", failures, cases);
  /* The checksum itself: a directory digest that does not match. */
  char hex[65], bad[65];
  mxl_sha256_hex(h->entries[2].sha256, hex);
  memcpy(bad, hex, 65);
  bad[0] = bad[0] == '0' ? '1' : '0';
  size_t n = 0;
  uint8_t *edited = edit_header(data, size, hex, bad, &n);
  mxl_adapter *a = NULL;
  if (edited && mxl_write_file_atomic(path, edited, n) == MXL_OK) {
    MXL_CHECK_OK(mxl_adapter_open(path, &a));
    if (a) MXL_CHECK_FAILS(mxl_adapter_verify(a), MXL_ERR_FORMAT, "SHA-256");
    mxl_adapter_close(a);
  }
  free(edited);
  /* Flipping any header byte never crashes; most are refused. */
  int accepted = 0;
  for (uint64_t pos = 0; pos < h->data_start; pos++) {
    data[pos] ^= 0x41;
    accepted += parse_bytes(data, size) == MXL_OK;
    data[pos] ^= 0x41;
  }
  MXL_CHECK_MSG(accepted < (int)(h->data_start / 20), "%d header flips accepted", accepted);
  mxl_adapter_header_destroy(h);
  free(data);
  fake_model_free(&fm);
}

/* Payload 0 replaced by `frame` (the directory's compressed_size follows;
 * the later offsets shift by the size difference). */
static uint8_t *replace_payload0(const uint8_t *data, size_t size, const mxl_adapter_header *h,
                                 const uint8_t *frame, size_t frame_size, size_t *out_size) {
  char from[96], to[96];
  snprintf(from, sizeof from, "\"compressed_size\":%" PRIu64 ",", h->entries[0].compressed_size);
  snprintf(to, sizeof to, "\"compressed_size\":%zu,", frame_size);
  size_t n = 0;
  uint8_t *edited = edit_header(data, size, from, to, &n);
  if (!edited) return NULL;
  /* Shift every later offset: rewrite them one by one, last first. */
  for (int i = h->layout->n_tensors - 1; i >= 1; i--) {
    snprintf(from, sizeof from, "\"offset\":%" PRIu64 ",", h->entries[i].offset);
    snprintf(to, sizeof to, "\"offset\":%" PRIu64 ",",
             h->entries[i].offset - h->entries[0].compressed_size + frame_size);
    size_t m = 0;
    uint8_t *next = edit_header(edited, n, from, to, &m);
    free(edited);
    if (!next) return NULL;
    edited = next;
    n = m;
  }
  uint64_t len = 0;
  for (int i = 0; i < 8; i++) len |= (uint64_t)edited[16 + i] << (8 * i);
  size_t start = container_align(MXL_CONTAINER_PREFIX + len);
  size_t rest = size - h->data_start - h->entries[0].compressed_size;
  *out_size = start + frame_size + rest;
  uint8_t *out = calloc(1, *out_size);
  memcpy(out, edited, start);
  memcpy(out + start, frame, frame_size);
  memcpy(out + start + frame_size, data + h->data_start + h->entries[0].compressed_size, rest);
  free(edited);
  return out;
}

/* Frames that are not what the directory says. */
static void test_bad_frames(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  size_t size = 0;
  uint8_t *data = saved_bytes(&fm, MXL_ADAPTER_F32, &size);
  mxl_adapter_header *h = NULL;
  if (data) MXL_CHECK_OK(mxl_adapter_header_parse(data, size, "mem", &h));
  if (!h) return;
  size_t raw = h->entries[0].raw_size, n = 0;
  uint8_t *zeros = calloc(1, raw + 8), frame[256];
  float *dst = malloc(raw);
  /* A frame of the right size with a content size 4 bytes short. */
  size_t fs = ZSTD_compress(frame, sizeof frame, zeros, raw - 4, 3);
  uint8_t *bad = replace_payload0(data, size, h, frame, fs, &n);
  mxl_adapter_header *hb = NULL;
  MXL_CHECK(bad != NULL);
  if (bad) MXL_CHECK_OK(mxl_adapter_header_parse(bad, n, "short", &hb));
  if (hb) MXL_CHECK_FAILS(mxl_adapter_decode(hb, bad, 0, dst, "short"), MXL_ERR_FORMAT,
                          "zstd frame holds 380 bytes, directory says 384");
  mxl_adapter_header_destroy(hb);
  hb = NULL;
  free(bad);
  /* Not a zstd frame at all (its magic number overwritten). */
  fs = ZSTD_compress(frame, sizeof frame, zeros, raw, 3);
  memcpy(frame, "JUNK", 4);
  bad = replace_payload0(data, size, h, frame, fs, &n);
  if (bad) MXL_CHECK_OK(mxl_adapter_header_parse(bad, n, "junk", &hb));
  if (hb) MXL_CHECK_FAILS(mxl_adapter_decode(hb, bad, 0, dst, "junk"), MXL_ERR_FORMAT,
                          "not a zstd frame");
  mxl_adapter_header_destroy(hb);
  hb = NULL;
  free(bad);
  /* A right-size frame of other bytes: the checksum catches it. */
  fs = ZSTD_compress(frame, sizeof frame, zeros, raw, 3);
  bad = replace_payload0(data, size, h, frame, fs, &n);
  if (bad) MXL_CHECK_OK(mxl_adapter_header_parse(bad, n, "zeros", &hb));
  if (hb) MXL_CHECK_FAILS(mxl_adapter_decode(hb, bad, 0, dst, "zeros"), MXL_ERR_FORMAT,
                          "layers.0.attn.q.lora_A: SHA-256");
  mxl_adapter_header_destroy(hb);
  free(bad);
  free(zeros);
  free(dst);
  mxl_adapter_header_destroy(h);
  free(data);
  fake_model_free(&fm);
}

static void test_save_errors(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  mxl_lora_config lc;
  cookbook_like(&c, &lc, 2);
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, NULL, &lora));
  if (!lora) return;
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  MXL_CHECK_FAILS(mxl_adapter_save("/nonexistent/dir/a.mxla", lora, &fm.m, &opt), MXL_ERR_IO,
                  "/nonexistent/dir/a.mxla");
  opt.provenance.dataset_sha256 = "abc";
  MXL_CHECK_FAILS(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm.m, &opt), MXL_ERR_ARGUMENT,
                  "dataset_sha256");
  mxl_adapter_save_options_default(&opt);
  opt.zstd_level = 99;
  MXL_CHECK_FAILS(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm.m, &opt), MXL_ERR_ARGUMENT,
                  "zstd level");
  mxl_adapter_save_options_default(&opt);
  opt.provenance.steps = -3;
  MXL_CHECK_FAILS(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm.m, &opt), MXL_ERR_ARGUMENT,
                  "steps");
  mxl_adapter_save_options_default(&opt);
  lora->params[lora->layout->tensors[3].offset + 1] = NAN;
  MXL_CHECK_FAILS(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm.m, &opt), MXL_ERR_NUMERIC,
                  "layers.0.attn.k.lora_B[1]");
  MXL_CHECK(!mxl_path_exists(tmp_path("x.mxla"))); /* nothing, not even a torn file */
  /* A set built for another shape is refused. */
  mxl_config c2 = c;
  c2.hidden = 32;
  fake_model fm2;
  MXL_CHECK(fake_model_init(&fm2, &c2, 1));
  lora->params[lora->layout->tensors[3].offset + 1] = 0;
  MXL_CHECK_FAILS(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm2.m, &opt), MXL_ERR_ARGUMENT,
                  "another model shape");
  /* Replacing an existing file leaves no temporary behind. */
  MXL_CHECK_OK(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm.m, &opt));
  MXL_CHECK_OK(mxl_adapter_save(tmp_path("x.mxla"), lora, &fm.m, &opt));
  char tmp[160];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", tmp_path("x.mxla"), (long)getpid());
  MXL_CHECK(!mxl_path_exists(tmp));
  mxl_adapter *a = NULL;
  MXL_CHECK_FAILS(mxl_adapter_open(tmp_path("missing.mxla"), &a), MXL_ERR_IO, "missing.mxla");
  MXL_CHECK(a == NULL);
  mxl_lora_destroy(lora);
  fake_model_free(&fm);
  fake_model_free(&fm2);
}

/* The real thing: one tiny checkpoint in all three layouts (mxl_tiny_write),
 * opened by the model loader. The fingerprint is the same for the HF root,
 * original/ and metal/, so an adapter saved against one loads on the
 * others; a checkpoint from another seed is refused. */
static void test_three_layouts(void) {
  char dir[96], dir2[96];
  snprintf(dir, sizeof dir, "%s/tiny", tmp_dir);
  snprintf(dir2, sizeof dir2, "%s/tiny2", tmp_dir);
  mxl_tiny_options opt = {"test", "all", 1, NULL};
  MXL_CHECK_OK(mxl_tiny_write(dir, &opt, NULL, NULL));
  opt.seed = 2;
  opt.layout = "hf";
  MXL_CHECK_OK(mxl_tiny_write(dir2, &opt, NULL, NULL));
  char path[3][128];
  snprintf(path[0], sizeof path[0], "%s", dir);
  snprintf(path[1], sizeof path[1], "%s/original", dir);
  snprintf(path[2], sizeof path[2], "%s/metal", dir);
  mxl_model *m[3] = {NULL, NULL, NULL}, *other = NULL;
  uint8_t digest[3][32];
  for (int i = 0; i < 3; i++) {
    MXL_CHECK_OK(mxl_model_open(path[i], &m[i]));
    if (m[i]) MXL_CHECK_OK(mxl_model_fingerprint(m[i], digest[i]));
  }
  MXL_CHECK_OK(mxl_model_open(dir2, &other));
  if (m[0] && m[1] && m[2] && other) {
    MXL_CHECK(m[0]->layout == MXL_LAYOUT_HF && m[1]->layout == MXL_LAYOUT_ORIGINAL &&
              m[2]->layout == MXL_LAYOUT_METAL);
    MXL_CHECK(!memcmp(digest[0], digest[1], 32));
    MXL_CHECK(!memcmp(digest[0], digest[2], 32));
    mxl_lora_config lc;
    cookbook_like(&m[0]->config, &lc, 2);
    mxl_lora *lora = NULL, *back = NULL;
    MXL_CHECK_OK(mxl_lora_create(&m[0]->config, &lc, NULL, &lora));
    if (lora) {
      MXL_CHECK_OK(mxl_lora_init_peft(lora, 3));
      const char *file = tmp_path("layouts.mxla");
      MXL_CHECK_OK(mxl_adapter_save(file, lora, m[0], NULL));
      mxl_adapter *a = NULL;
      MXL_CHECK_OK(mxl_adapter_open(file, &a));
      for (int i = 1; a && i < 3; i++) {
        MXL_CHECK_OK(mxl_adapter_load(a, m[i], &back));
        MXL_CHECK(back && !memcmp(back->params, lora->params,
                                  lora->layout->n_floats * sizeof(float)));
        mxl_lora_destroy(back);
        back = NULL;
      }
      if (a) MXL_CHECK_FAILS(mxl_adapter_load(a, other, &back), MXL_ERR_ARGUMENT,
                             "same architecture, different weights");
      mxl_adapter_close(a);
      unlink(file);
    }
    mxl_lora_destroy(lora);
  }
  for (int i = 0; i < 3; i++) mxl_model_close(m[i]);
  mxl_model_close(other);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, dir2);
  MXL_CHECK(system(cmd) == 0);
}

static void cleanup_tmp(void) {
  const char *names[] = {"bytes.mxla", "round.mxla", "ratio.mxla", "base.mxla",
                         "corrupt.mxla", "x.mxla"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(tmp_path(names[i]));
  rmdir(tmp_dir);
}

int main(void) {
  make_tmp_dir();
  if (!tmp_dir[0]) {
    fprintf(stderr, "cannot create a temporary directory\n");
    return 1;
  }
  MXL_RUN(test_fingerprint_text);
  MXL_RUN(test_fingerprint_stream);
  MXL_RUN(test_shuffle);
  MXL_RUN(test_round_trip_f32);
  MXL_RUN(test_round_trip_bf16);
  MXL_RUN(test_layout_on_disk);
  MXL_RUN(test_compression);
  MXL_RUN(test_wrong_base);
  MXL_RUN(test_prefix_errors);
  MXL_RUN(test_header_errors);
  MXL_RUN(test_header_edit_refused);
  MXL_RUN(test_legacy_version);
  MXL_RUN(test_payload_corruption);
  MXL_RUN(test_bad_frames);
  MXL_RUN(test_save_errors);
  MXL_RUN(test_three_layouts);
  cleanup_tmp();
  return mxl_test_summary("adapter");
}
