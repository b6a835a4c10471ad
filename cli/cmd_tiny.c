/* mxlora tiny: writes a small (or full-size random) gpt-oss checkpoint in
 * the published layouts, for tests, benchmarks and trying the tool without
 * downloading 13 GB. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(tiny);

const char mxl_cmd_tiny_help[] = "write a small random gpt-oss checkpoint (HF, original/, metal/)";

static const char usage_line[] =
    "OUT [--preset test|bench] [--shape gpt-oss-20b|gpt-oss-120b] [--layout hf|original|metal|all]\n"
    "        [--seed N] [--set key=value]... [--vocab-corpus FILE | --vocab FILE.tiktoken]\n\n"
    "Writes a deterministic model with gpt-oss's architecture under OUT, laid out like\n"
    "the Hugging Face repository: the HF layout at OUT, OpenAI's reference layout in\n"
    "OUT/original, the Metal runtime's model.bin in OUT/metal, generation_config.json and\n"
    "the tokenizer files at OUT. Presets: test (~1M parameters), bench (~70M);\n"
    "--shape writes the full-size shape with random MXFP4 codes (gpt-oss-20b: ~13 GB per\n"
    "layout). --set changes a config field: layers, experts, experts_per_token, heads,\n"
    "kv_heads, head_dim, hidden, intermediate, window, vocab, text_tokens,\n"
    "initial_context, rope_theta, rope_factor, beta_fast, beta_slow, swiglu_limit, rms_eps.";

typedef struct progress_state {
  double last;
} progress_state;

static void on_progress(void *user, const char *what, double done, double total) {
  progress_state *p = user;
  /* Redraw at most every 0.5% (and at the end). */
  if (done > total) total = done; /* metal's total is an estimate */
  if (done < total && done - p->last < total * 0.005) return;
  p->last = done;
  char suffix[96];
  snprintf(suffix, sizeof suffix, "%.1f / %.1f MB", done / 1e6, total / 1e6);
  (void)what;
  mxl_progress_line("writing", done, total, suffix, done >= total);
}

static void print_result(const char *out, const mxl_tiny_result *r, double seconds) {
  printf("wrote %s: %lld parameters, vocabulary %d rows (%d ordinary tokens + specials), "
         "%.1f MB of weights in %.1f s\n",
         out, (long long)r->parameters, r->vocab_size, r->n_text_tokens, r->bytes_written / 1e6,
         seconds);
  if (r->mxfp4_encoded)
    printf("experts: %lld weights encoded to MXFP4, relative RMS error %.4f, max abs error "
           "%.3g, %lld saturated\n",
           (long long)r->mxfp4_encoded, r->mxfp4_rel_rms_error, r->mxfp4_max_abs_error,
           (long long)r->mxfp4_saturated);
  else
    printf("experts: MXFP4 codes and scales drawn directly (no encoding)\n");
}

int mxl_cmd_tiny(int argc, char **argv) {
  const char *preset = NULL, *shape = NULL, *layout = "all", *corpus = NULL, *vocab = NULL;
  uint64_t seed = 0, shard = 0;
  mxl_opt_list set = {0};
  const mxl_opt opts[] = {
      {"--preset", MXL_OPT_STRING, &preset, "NAME: test (default, ~1M params) or bench (~70M)"},
      {"--shape", MXL_OPT_STRING, &shape, "NAME: gpt-oss-20b or gpt-oss-120b (full size)"},
      {"--layout", MXL_OPT_STRING, &layout, "NAME: hf, original, metal or all (default)"},
      {"--seed", MXL_OPT_UINT64, &seed, "N: the weights' seed (default 0)"},
      {"--set", MXL_OPT_LIST, &set, "KEY=VALUE: change a config field (repeatable)"},
      {"--vocab-corpus", MXL_OPT_STRING, &corpus, "FILE: text to learn the small vocabulary from"},
      {"--vocab", MXL_OPT_STRING, &vocab, "FILE: an o200k .tiktoken file (the real vocabulary)"},
      {"--shard-bytes", MXL_OPT_UINT64, &shard, "N: split the safetensors files at N bytes"},
  };
  const char *pos[1];
  int npos = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, sizeof opts / sizeof opts[0], pos, 1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (npos != 1) {
    fprintf(stderr, "mxlora tiny: give the output folder (see mxlora tiny --help)\n");
    return 2;
  }
  if (preset && shape) {
    fprintf(stderr, "mxlora tiny: --preset and --shape exclude each other\n");
    return 2;
  }
  if (corpus && vocab) {
    fprintf(stderr, "mxlora tiny: --vocab-corpus and --vocab exclude each other\n");
    return 2;
  }
  mxl_tiny_result result;
  mxl_tiny_options opt = {0};
  opt.preset = shape ? shape : preset;
  opt.layout = layout;
  opt.seed = seed;
  opt.vocab = vocab;
  opt.vocab_corpus = corpus;
  opt.set = set.items;
  opt.n_set = set.n;
  opt.shard_bytes = shard;
  opt.result = &result;
  progress_state ps = {0.0};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  mxl_status st = mxl_tiny_write(pos[0], &opt, on_progress, &ps);
  mxl_progress_end();
  if (st != MXL_OK) return mxl_cli_fail("tiny", st);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  print_result(pos[0], &result, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
  return 0;
}
