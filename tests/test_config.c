/* model/config: the three config forms, validation messages, YaRN values,
 * the metal header and layout, parameter counts. Expected numbers are the
 * published ones (docs/gpt-oss.md §1, §4, §9) or come from transformers' own output
 * (tests/fixtures/gpt_oss/config_v5_*.json, tools/make_config_fixtures.py). */
#include <stdint.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/status.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "test.h"

/* The published gpt-oss-20b config.json (docs/gpt-oss.md §1.1). */
static const char hf_20b[] =
    "{\"architectures\": [\"GptOssForCausalLM\"], \"attention_bias\": true,"
    " \"attention_dropout\": 0.0, \"eos_token_id\": 200002, \"experts_per_token\": 4,"
    " \"head_dim\": 64, \"hidden_act\": \"silu\", \"hidden_size\": 2880,"
    " \"initial_context_length\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 2880, \"layer_types\": [\"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\"], \"max_position_embeddings\": 131072,"
    " \"model_type\": \"gpt_oss\", \"num_attention_heads\": 64, \"num_experts_per_tok\": 4,"
    " \"num_hidden_layers\": 24, \"num_key_value_heads\": 8, \"num_local_experts\": 32,"
    " \"output_router_logits\": false, \"pad_token_id\": 199999, \"quantization_config\":"
    " {\"modules_to_not_convert\": [\"model.layers.*.self_attn\", \"model.layers.*.mlp.router\","
    " \"model.embed_tokens\", \"lm_head\"], \"quant_method\": \"mxfp4\"}, \"rms_norm_eps\": 1e-05,"
    " \"rope_scaling\": {\"beta_fast\": 32.0, \"beta_slow\": 1.0, \"factor\": 32.0,"
    " \"original_max_position_embeddings\": 4096, \"rope_type\": \"yarn\", \"truncate\": false},"
    " \"rope_theta\": 150000, \"router_aux_loss_coef\": 0.9, \"sliding_window\": 128,"
    " \"swiglu_limit\": 7.0, \"tie_word_embeddings\": false, \"transformers_version\":"
    " \"4.55.0.dev0\", \"use_cache\": true, \"vocab_size\": 201088}";

/* The published original/config.json of gpt-oss-20b (docs/gpt-oss.md §1.3). */
static const char original_20b[] =
    "{\"num_hidden_layers\": 24, \"num_experts\": 32, \"experts_per_token\": 4,"
    " \"vocab_size\": 201088, \"hidden_size\": 2880, \"intermediate_size\": 2880,"
    " \"swiglu_limit\": 7.0, \"head_dim\": 64, \"num_attention_heads\": 64,"
    " \"num_key_value_heads\": 8, \"sliding_window\": 128, \"initial_context_length\": 4096,"
    " \"rope_theta\": 150000, \"rope_scaling_factor\": 32.0, \"rope_ntk_alpha\": 1,"
    " \"rope_ntk_beta\": 32}";

static const char generation[] =
    "{\"bos_token_id\": 199998, \"do_sample\": true, \"eos_token_id\": [200002, 199999, 200012],"
    " \"pad_token_id\": 199999}";

/* Shapes, RoPE, limits and layer pattern; token ids aside. */
static int same_model(const mxl_config *a, const mxl_config *b) {
  int same = a->n_layers == b->n_layers && a->n_experts == b->n_experts &&
             a->experts_per_token == b->experts_per_token && a->vocab_size == b->vocab_size &&
             a->hidden == b->hidden && a->intermediate == b->intermediate &&
             a->head_dim == b->head_dim && a->n_heads == b->n_heads &&
             a->n_kv_heads == b->n_kv_heads && a->sliding_window == b->sliding_window &&
             a->initial_context == b->initial_context && a->max_context == b->max_context &&
             a->rope_theta == b->rope_theta && a->rope_factor == b->rope_factor &&
             a->rope_beta_fast == b->rope_beta_fast && a->rope_beta_slow == b->rope_beta_slow &&
             a->swiglu_limit == b->swiglu_limit && a->swiglu_alpha == b->swiglu_alpha &&
             a->rms_eps == b->rms_eps;
  for (int i = 0; same && i < a->n_layers; i++) same = a->layer_sliding[i] == b->layer_sliding[i];
  return same;
}

static void test_published_20b(void) {
  mxl_config c, want;
  mxl_config_gpt_oss_20b(&want);
  MXL_CHECK_OK(mxl_config_parse_hf(hf_20b, strlen(hf_20b), "config.json", &c));
  MXL_CHECK(same_model(&c, &want));
  MXL_CHECK(c.layer_sliding[0] == 1 && c.layer_sliding[1] == 0 && c.layer_sliding[22] == 1);
  MXL_CHECK(c.n_stop_ids == 1 && c.stop_ids[0] == 200002 && c.pad_id == 199999);
  MXL_CHECK_OK(mxl_config_parse_generation(generation, strlen(generation),
                                           "generation_config.json", &c));
  MXL_CHECK(c.n_stop_ids == 3 && c.stop_ids[0] == 200002 && c.stop_ids[1] == 199999 &&
            c.stop_ids[2] == 200012 && c.bos_id == 199998);
  mxl_config o;
  MXL_CHECK_OK(mxl_config_parse_original(original_20b, strlen(original_20b),
                                         "original/config.json", &o));
  MXL_CHECK(same_model(&o, &want));
  MXL_CHECK(o.names == MXL_CONFIG_NAMES_ORIGINAL);
}

static void parse_fixture(const char *name, mxl_config *c) {
  char path[512];
  snprintf(path, sizeof path, "%s/tests/fixtures/gpt_oss/%s", MXL_SOURCE_DIR, name);
  MXL_CHECK_OK(mxl_config_load_hf(path, c));
}

/* transformers v5 writes rope_parameters (holding rope_theta) and null ids. */
static void test_transformers_v5_files(void) {
  mxl_config c, want;
  mxl_config_gpt_oss_20b(&want);
  parse_fixture("config_v5_20b.json", &c);
  MXL_CHECK(same_model(&c, &want));
  MXL_CHECK(c.n_stop_ids == 0 && c.bos_id == -1 && c.pad_id == -1);
  parse_fixture("config_v5_tiny.json", &c);
  MXL_CHECK(c.n_layers == 3 && c.hidden == 128 && c.head_dim == 32 && c.n_experts == 4 &&
            c.experts_per_token == 2 && c.sliding_window == 8 && c.vocab_size == 1088);
  MXL_CHECK(c.rope_theta == 150000.0f && c.rope_factor == 32.0f && c.initial_context == 4096);
  MXL_CHECK(c.layer_sliding[0] && !c.layer_sliding[1] && c.layer_sliding[2]);
}

/* Our writers' JSON parses back to the same config. */
static void test_json_round_trip(void) {
  mxl_config c, back;
  mxl_config_gpt_oss_120b(&c);
  char *text = mxl_config_to_hf_json(&c);
  MXL_CHECK(text != NULL);
  MXL_CHECK_OK(mxl_config_parse_hf(text, strlen(text), "config.json", &back));
  MXL_CHECK(same_model(&c, &back));
  free(text);
  text = mxl_config_to_original_json(&c);
  MXL_CHECK_OK(mxl_config_parse_original(text, strlen(text), "original/config.json", &back));
  MXL_CHECK(same_model(&c, &back));
  free(text);
  text = mxl_config_to_generation_json(&c);
  mxl_config g;
  mxl_config_gpt_oss_20b(&g);
  g.n_stop_ids = 0;
  MXL_CHECK_OK(mxl_config_parse_generation(text, strlen(text), "generation_config.json", &g));
  MXL_CHECK(g.n_stop_ids == 3 && g.stop_ids[2] == 200012 && g.bos_id == 199998);
  free(text);
}

/* A copy of the published config with one substring replaced. */
static char *edited(const char *base, const char *from, const char *to) {
  const char *at = strstr(base, from);
  if (!at) return NULL;
  size_t n = strlen(base) + strlen(to) + 1;
  char *out = malloc(n);
  snprintf(out, n, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
  return out;
}

static void expect_hf_error(const char *from, const char *to, mxl_status status,
                            const char *needle) {
  char *text = edited(hf_20b, from, to);
  MXL_CHECK_MSG(text != NULL, "edit %s not found", from);
  if (!text) return;
  mxl_config c;
  MXL_CHECK_FAILS(mxl_config_parse_hf(text, strlen(text), "repo/config.json", &c), status, needle);
  MXL_CHECK_MSG(strstr(mxl_last_error(), "repo/config.json") != NULL, "no file in \"%s\"",
                mxl_last_error());
  free(text);
}

static void test_hf_errors(void) {
  expect_hf_error("\"hidden_size\": 2880", "\"hidden_size\": 2890", MXL_ERR_FORMAT,
                  "hidden_size is 2890, must be a multiple of 32");
  expect_hf_error("\"intermediate_size\": 2880", "\"intermediate_size\": 100", MXL_ERR_FORMAT,
                  "intermediate_size");
  expect_hf_error("\"num_experts_per_tok\": 4", "\"num_experts_per_tok\": 33", MXL_ERR_FORMAT,
                  "num_experts_per_tok is 33, more than num_local_experts (32)");
  expect_hf_error("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 7", MXL_ERR_FORMAT,
                  "num_attention_heads (64) is not a multiple of num_key_value_heads (7)");
  expect_hf_error("\"head_dim\": 64", "\"head_dim\": 63", MXL_ERR_FORMAT, "head_dim is 63");
  expect_hf_error("\"num_hidden_layers\": 24", "\"num_hidden_layers\": 0", MXL_ERR_FORMAT,
                  "num_hidden_layers is 0");
  expect_hf_error("\"swiglu_limit\": 7.0", "\"swiglu_limit\": -1", MXL_ERR_FORMAT,
                  "swiglu_limit");
  expect_hf_error("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0", MXL_ERR_FORMAT,
                  "rms_norm_eps");
  expect_hf_error("\"beta_fast\": 32.0", "\"beta_fast\": 0.5", MXL_ERR_FORMAT,
                  "rope_scaling.beta_fast (0.5) must be greater than rope_scaling.beta_slow");
  expect_hf_error("\"beta_fast\": 32.0", "\"beta_fast\": 3000.0", MXL_ERR_FORMAT,
                  "YaRN bounds");
  expect_hf_error("\"hidden_size\": 2880,", "", MXL_ERR_FORMAT, "hidden_size is missing");
  expect_hf_error("\"vocab_size\": 201088", "\"vocab_size\": \"big\"", MXL_ERR_FORMAT,
                  "vocab_size must be an integer");
  expect_hf_error("\"head_dim\": 64", "\"head_dim\": 64.5", MXL_ERR_FORMAT, "head_dim");
  expect_hf_error("\"rope_type\": \"yarn\"", "\"rope_type\": \"linear\"", MXL_ERR_UNSUPPORTED,
                  "rope_scaling.rope_type is \"linear\"");
  expect_hf_error("\"truncate\": false", "\"truncate\": true", MXL_ERR_UNSUPPORTED,
                  "rope_scaling.truncate");
  expect_hf_error("\"model_type\": \"gpt_oss\"", "\"model_type\": \"llama\"",
                  MXL_ERR_UNSUPPORTED, "model_type is \"llama\"");
  expect_hf_error("\"quant_method\": \"mxfp4\"", "\"quant_method\": \"bnb\"",
                  MXL_ERR_UNSUPPORTED, "quantization_config.quant_method is \"bnb\"");
  expect_hf_error("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true",
                  MXL_ERR_UNSUPPORTED, "tie_word_embeddings");
  expect_hf_error("\"initial_context_length\": 4096", "\"initial_context_length\": 8192",
                  MXL_ERR_FORMAT, "initial_context_length (8192) disagrees");
  expect_hf_error("[\"sliding_attention\", \"full_attention\",", "[\"full_attention\",",
                  MXL_ERR_FORMAT, "layer_types has 23 entries, num_hidden_layers is 24");
  expect_hf_error("[\"sliding_attention\",", "[\"local\",", MXL_ERR_FORMAT, "layer_types[0]");
  expect_hf_error("\"eos_token_id\": 200002", "\"eos_token_id\": 300000", MXL_ERR_FORMAT,
                  "eos_token_id 300000 is outside the vocabulary");
  expect_hf_error("\"num_hidden_layers\": 24", "\"num_hidden_layers\": 300",
                  MXL_ERR_UNSUPPORTED, "num_hidden_layers is 300");
  expect_hf_error("\"rope_scaling\": {", "\"rope_scalin\": {", MXL_ERR_FORMAT,
                  "rope_scaling is missing");
  expect_hf_error("\"use_cache\": true", "\"use_cache\": tru", MXL_ERR_FORMAT, "line 1");
  expect_hf_error("\"vocab_size\": 201088}", "\"vocab_size\": 201088, \"vocab_size\": 5}",
                  MXL_ERR_FORMAT, "vocab_size");
}

/* Honoured as given: a layer pattern other than even/odd. */
static void test_layer_types_as_given(void) {
  char *text = edited(hf_20b, "[\"sliding_attention\", \"full_attention\",",
                      "[\"full_attention\", \"full_attention\",");
  mxl_config c;
  MXL_CHECK_OK(mxl_config_parse_hf(text, strlen(text), "config.json", &c));
  MXL_CHECK(c.layer_sliding[0] == 0 && c.layer_sliding[1] == 0 && c.layer_sliding[2] == 1);
  free(text);
}

static void test_original_and_generation_errors(void) {
  char *text = edited(original_20b, "\"num_experts\": 32,", "");
  mxl_config c;
  MXL_CHECK_FAILS(mxl_config_parse_original(text, strlen(text), "original/config.json", &c),
                  MXL_ERR_FORMAT, "original/config.json: num_experts is missing");
  free(text);
  text = edited(original_20b, "\"num_experts\": 32", "\"num_experts\": 2");
  MXL_CHECK_FAILS(mxl_config_parse_original(text, strlen(text), "original/config.json", &c),
                  MXL_ERR_FORMAT, "original/config.json: experts_per_token is 4, more than num_experts (2)");
  free(text);
  text = edited(original_20b, "\"rope_ntk_beta\": 32", "\"rope_ntk_beta\": 1");
  MXL_CHECK_FAILS(mxl_config_parse_original(text, strlen(text), "original/config.json", &c),
                  MXL_ERR_FORMAT, "rope_ntk_beta (1) must be greater than rope_ntk_alpha");
  free(text);
  mxl_config_gpt_oss_20b(&c);
  const char bad[] = "{\"eos_token_id\": [200002, 999999]}";
  MXL_CHECK_FAILS(mxl_config_parse_generation(bad, strlen(bad), "generation_config.json", &c),
                  MXL_ERR_FORMAT, "generation_config.json: eos_token_id 999999 is outside");
  MXL_CHECK(c.n_stop_ids == 3); /* unchanged on failure */
  const char bad2[] = "{\"eos_token_id\": \"x\"}";
  MXL_CHECK_FAILS(mxl_config_parse_generation(bad2, strlen(bad2), "generation_config.json", &c),
                  MXL_ERR_FORMAT, "eos_token_id must be a token id");
  MXL_CHECK_FAILS(mxl_config_load_hf("/nonexistent/config.json", &c), MXL_ERR_IO,
                  "/nonexistent/config.json");
}

static uint32_t f32_bits(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* docs/gpt-oss.md §4.1 / §5.3: the published bounds and header bit patterns. */
static void test_yarn_and_metal_header(void) {
  mxl_config c;
  mxl_config_gpt_oss_20b(&c);
  mxl_yarn y;
  mxl_config_yarn(&c, &y);
  MXL_CHECK_NEAR(y.low, 8.092779115512402, 1e-12);
  MXL_CHECK_NEAR(y.high, 17.39802450158856, 1e-12);
  MXL_CHECK_NEAR(y.concentration, 1.3465735902799727, 1e-15);
  uint8_t h[MXL_METAL_MODEL_HEADER_BYTES];
  mxl_config_write_metal(&c, h);
  MXL_CHECK(f32_bits(h + 0) == 131072 && f32_bits(h + 4) == 24 && f32_bits(h + 8) == 32);
  MXL_CHECK(f32_bits(h + 12) == 4 && f32_bits(h + 16) == 2880 && f32_bits(h + 40) == 128);
  MXL_CHECK(f32_bits(h + 44) == 0x48127C00u); /* rope_theta 150000 */
  MXL_CHECK(f32_bits(h + 48) == 0x3D000000u); /* interpolation_scale 1/32 */
  MXL_CHECK(f32_bits(h + 52) == 0xBF5EA4B6u); /* yarn_offset */
  MXL_CHECK(f32_bits(h + 56) == 0x3DDC1746u); /* yarn_scale */
  MXL_CHECK(f32_bits(h + 60) == 0x3FAC5C86u); /* yarn_multiplier */
  MXL_CHECK(f32_bits(h + 64) == 0x3727C5ACu); /* rmsnorm_epsilon */
  mxl_config back;
  MXL_CHECK_OK(mxl_config_parse_metal(h, "model.bin", &back));
  back.vocab_size = c.vocab_size;
  MXL_CHECK(same_model(&c, &back));
  MXL_CHECK(back.names == MXL_CONFIG_NAMES_METAL);
  /* Inconsistent YaRN values are caught and named. */
  uint8_t bad[MXL_METAL_MODEL_HEADER_BYTES];
  memcpy(bad, h, sizeof bad);
  bad[52] ^= 0x40;
  MXL_CHECK_FAILS(mxl_config_parse_metal(bad, "metal/model.bin", &back), MXL_ERR_FORMAT,
                  "metal/model.bin: yarn_offset");
  memcpy(bad, h, sizeof bad);
  bad[62] ^= 0x10;
  MXL_CHECK_FAILS(mxl_config_parse_metal(bad, "metal/model.bin", &back), MXL_ERR_FORMAT,
                  "yarn_multiplier");
  memcpy(bad, h, sizeof bad);
  memset(bad + 48, 0, 4);
  MXL_CHECK_FAILS(mxl_config_parse_metal(bad, "metal/model.bin", &back), MXL_ERR_FORMAT,
                  "interpolation_scale");
  /* The metal field names appear in validation messages. */
  memcpy(bad, h, sizeof bad);
  bad[16] = 0x41, bad[17] = 0x0b; /* embedding_dim 2881 */
  MXL_CHECK_OK(mxl_config_parse_metal(bad, "metal/model.bin", &back));
  back.vocab_size = 200014;
  MXL_CHECK_FAILS(mxl_config_validate(&back, "metal/model.bin"), MXL_ERR_FORMAT,
                  "metal/model.bin: embedding_dim is 2881");
}

/* docs/gpt-oss.md §4.1-§4.4: offsets that reproduce the published file sizes. */
static void test_metal_layout_sizes(void) {
  mxl_config c;
  mxl_metal_layout m;
  mxl_config_gpt_oss_20b(&c);
  MXL_CHECK_OK(mxl_metal_layout_compute(&c, 16, 199998, 275, 1797666, "20b", &m));
  MXL_CHECK(m.tokenizer_end == 1798345 && m.embedding == 1802240);
  MXL_CHECK(m.block_stride == 53296192 && m.expert_stride == 13236480);
  MXL_CHECK(m.unembedding + 1152080640 - m.embedding == 3583275648ull);
  MXL_CHECK(m.moe0 == 3585081344ull && m.moe_block_stride == 423575552ull);
  MXL_CHECK(m.file_size == 13750886400ull);
  mxl_config_gpt_oss_120b(&c);
  MXL_CHECK_OK(mxl_metal_layout_compute(&c, 16, 199998, 275, 1797666, "120b", &m));
  MXL_CHECK(m.block_stride == 53849344 && m.moe0 == 4244553728ull);
  MXL_CHECK(m.moe_block_stride == 1694269440ull && m.file_size == 65238253568ull);
}

/* docs/gpt-oss.md §9.1 (and §9.2: MXFP4 bytes = 4.25 bits per weight). */
static void test_param_counts(void) {
  mxl_config c;
  mxl_param_counts p;
  mxl_config_gpt_oss_20b(&c);
  mxl_config_param_counts(&c, &p);
  MXL_CHECK(p.total == 20914757184ll && p.mxfp4 == 19110297600ll && p.bf16 == 1804459584ll);
  MXL_CHECK(p.embedding == 579133440ll && p.attention_per_layer == 26550144ll);
  MXL_CHECK(p.router_per_layer == 92192 && p.expert == 24891840ll);
  MXL_CHECK(p.active == 3608307264ll && p.active_with_embedding == 4187440704ll);
  MXL_CHECK(p.mxfp4 / 32 * 17 == 9555148800ll + 597196800ll);
  mxl_config_gpt_oss_120b(&c);
  mxl_config_param_counts(&c, &p);
  MXL_CHECK(p.total == 116829156672ll && p.mxfp4 == 114661785600ll && p.bf16 == 2167371072ll);
  MXL_CHECK(p.router_per_layer == 368768 && p.active == 5132849472ll);
  MXL_CHECK(p.active_with_embedding == 5711982912ll);
  /* The HF tensor catalogue's bytes give the published index total_size. */
  int n = mxl_checkpoint_tensors(&c, MXL_LAYOUT_HF, NULL);
  MXL_CHECK(n == 36 * 19 + 3);
  mxl_tensor_desc *d = calloc((size_t)n, sizeof *d);
  mxl_checkpoint_tensors(&c, MXL_LAYOUT_HF, d);
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += mxl_tensor_desc_bytes(&d[i]);
  MXL_CHECK(total == 65248815744ll);
  free(d);
  mxl_config_gpt_oss_20b(&c);
  n = mxl_checkpoint_tensors(&c, MXL_LAYOUT_ORIGINAL, NULL);
  MXL_CHECK(n == 24 * 15 + 3);
  d = calloc((size_t)n, sizeof *d);
  mxl_checkpoint_tensors(&c, MXL_LAYOUT_ORIGINAL, d);
  total = 0;
  for (int i = 0; i < n; i++) total += mxl_tensor_desc_bytes(&d[i]);
  MXL_CHECK(total == 13761264768ll);
  MXL_CHECK(!strcmp(d[2].name, "block.0.attn.qkv.weight") && d[2].shape[0] == 5120);
  free(d);
}

static void test_load_from_file(void) {
  char path[] = "/tmp/mxl_config_XXXXXX";
  int fd = mkstemp(path);
  MXL_CHECK(fd >= 0);
  close(fd);
  MXL_CHECK_OK(mxl_write_file_atomic(path, original_20b, strlen(original_20b)));
  mxl_config c;
  MXL_CHECK_OK(mxl_config_load_original(path, &c));
  MXL_CHECK(c.n_layers == 24 && c.max_context == 131072);
  /* Errors name the file that was read. */
  MXL_CHECK_FAILS(mxl_config_load_hf(path, &c), MXL_ERR_FORMAT, path);
  unlink(path);
}

int main(void) {
  MXL_RUN(test_published_20b);
  MXL_RUN(test_transformers_v5_files);
  MXL_RUN(test_json_round_trip);
  MXL_RUN(test_hf_errors);
  MXL_RUN(test_layer_types_as_given);
  MXL_RUN(test_original_and_generation_errors);
  MXL_RUN(test_yarn_and_metal_header);
  MXL_RUN(test_metal_layout_sizes);
  MXL_RUN(test_param_counts);
  MXL_RUN(test_load_from_file);
  return mxl_test_summary("config");
}
