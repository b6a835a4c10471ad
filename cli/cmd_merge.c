/* mxlora merge: the base model with adapters folded in, as a complete model
 * folder for tools that take plain weights (transformers, vLLM, llama.cpp's
 * converter), in bf16 or with the experts re-quantized to MXFP4. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(merge);

const char mxl_cmd_merge_help[] = "fold adapters into the base: a bf16 or MXFP4 model folder";

static const char usage_line[] =
    "--model BASE --adapter FILE[:SCALE]... --out DIR --dtype bf16|mxfp4\n"
    "        [--layout hf|original|all] [--eval FILE.jsonl]\n\n"
    "Writes DIR (which must not exist) with config.json, generation_config.json, the\n"
    "tokenizer files and the weights W + Σ scale·B·A (per expert for the experts), tensor\n"
    "by tensor in bounded memory; DIR appears only when it is complete.\n"
    "bf16: every tensor bf16, experts dense (no quantization_config), as transformers\n"
    "saves a dequantized gpt-oss. mxfp4: attention and the rest bf16, each adapted expert\n"
    "projection re-encoded to MXFP4 (error-minimising scales), unadapted ones copied as\n"
    "published; prints how much of the adapter's expert delta survives 4-bit rounding\n"
    "(DIR/mxlora_merge_report.json has it per tensor) and warns when most is lost.\n"
    "--eval FILE (mxfp4): held-out loss of the base, the unmerged adapter and the merge.";

typedef struct progress_state {
  struct timespec t0;
  double last;
} progress_state;

static double since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static void on_progress(void *user, const char *what, double done, double total) {
  progress_state *p = user;
  if (done < total && done - p->last < total * 0.005) return;
  p->last = done;
  double s = since(&p->t0);
  char eta[32], suffix[128];
  mxl_format_duration(done > 0 ? s * (total - done) / done : -1, eta, sizeof eta);
  snprintf(suffix, sizeof suffix, "%.2f / %.2f GB, %.0f MB/s, ETA %s", done / 1e9, total / 1e9,
           s > 0 ? done / 1e6 / s : 0.0, eta);
  (void)what;
  mxl_progress_line("merging", done, total, suffix, done >= total);
}

static void print_report(const mxl_merge_result *r) {
  if (!r->tensors) {
    printf("no expert projection is adapted: the experts are the published MXFP4 bytes\n");
    return;
  }
  cJSON *root = cJSON_Parse(r->report_json);
  const cJSON *t;
  printf("MXFP4 re-quantization of the adapted experts (%d tensors):\n", r->tensors);
  printf("  %-44s %10s %10s %10s\n", "tensor", "delta kept", "delta err", "rel err");
  cJSON_ArrayForEach(t, cJSON_GetObjectItem(root, "tensors")) {
    printf("  %-44s %9.1f%% %9.1f%% %10.5f\n", cJSON_GetObjectItem(t, "name")->valuestring,
           100 * cJSON_GetObjectItem(t, "delta_kept")->valuedouble,
           100 * cJSON_GetObjectItem(t, "delta_rel_error")->valuedouble,
           cJSON_GetObjectItem(t, "rel_rms_error")->valuedouble);
  }
  cJSON_Delete(root);
  printf("overall: %.1f%% of the expert delta survives (|Q(W+dW) - Q(W)| / |dW| = %.3f, "
         "error %.1f%% of |dW|); weights' relative RMS error %.5f\n",
         100 * r->delta_kept, r->delta_norm_ratio, 100 * r->delta_rel_error, r->rel_rms_error);
  if (r->tensors && r->delta_kept < 0.5)
    printf("WARNING: most of the adapters' expert delta is lost to 4-bit rounding (%d of %d "
           "tensors keep less than half); serve the adapter unmerged or merge to bf16\n",
           r->tensors_mostly_lost, r->tensors);
}

static int run_eval(const char *model, const char *out, const char *data, const char **paths,
                    const float *scales, int n) {
  mxl_eval_options o = {model, data, paths, scales, n, 0, 0, NULL, NULL, 0, NULL, NULL};
  mxl_eval_result unmerged, merged;
  mxl_status st = mxl_eval(&o, &unmerged);
  if (st == MXL_OK) {
    mxl_eval_options m = {out, data, NULL, NULL, 0, 0, 0, NULL, NULL, 0, NULL, NULL};
    st = mxl_eval(&m, &merged);
  }
  if (st != MXL_OK) return mxl_cli_fail("merge --eval", st);
  printf("held-out loss on %s (%lld trained tokens):\n", data, unmerged.tokens);
  printf("  base %.4f   adapter unmerged %.4f   merged MXFP4 %.4f (%+.4f against unmerged)\n",
         unmerged.base_loss, unmerged.adapted_loss, merged.base_loss,
         merged.base_loss - unmerged.adapted_loss);
  return 0;
}

int mxl_cmd_merge(int argc, char **argv) {
  const char *model = NULL, *out = NULL, *dtype = NULL, *layout = "hf", *eval = NULL;
  uint64_t shard = 0;
  mxl_opt_list adapters = {0};
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &model, "DIR: the base checkpoint"},
      {"--adapter", MXL_OPT_LIST, &adapters, "FILE[:SCALE]: an adapter to fold in (repeatable)"},
      {"--out", MXL_OPT_STRING, &out, "DIR: the model folder to write (must not exist)"},
      {"--dtype", MXL_OPT_STRING, &dtype, "bf16|mxfp4: the experts' format in the output"},
      {"--layout", MXL_OPT_STRING, &layout, "hf|original|all: layouts to write (default hf)"},
      {"--shard-bytes", MXL_OPT_UINT64, &shard, "N: split safetensors at N bytes (default 4.8e9)"},
      {"--eval", MXL_OPT_STRING, &eval, "FILE: held-out loss of merged vs unmerged (mxfp4)"},
  };
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
  if (rc) return rc == 1 ? 0 : 2;
  if (!model || !out || !dtype || adapters.n == 0) {
    fprintf(stderr, "mxlora merge: --model, --adapter, --out and --dtype are required\n");
    return 2;
  }
  int mxfp4 = !strcmp(dtype, "mxfp4");
  if (!mxfp4 && strcmp(dtype, "bf16")) {
    fprintf(stderr, "mxlora merge: --dtype %s: expected bf16 or mxfp4\n", dtype);
    return 2;
  }
  int hf = !strcmp(layout, "hf") || !strcmp(layout, "all");
  int original = !strcmp(layout, "original") || !strcmp(layout, "all");
  if (!hf && !original) {
    fprintf(stderr, "mxlora merge: --layout %s: expected hf, original or all\n", layout);
    return 2;
  }
  if (eval && !mxfp4) {
    fprintf(stderr, "mxlora merge: --eval needs --dtype mxfp4 (mxlora runs MXFP4 experts)\n");
    return 2;
  }
  static char bufs[MXL_OPT_LIST_MAX][4096];
  const char *paths[MXL_OPT_LIST_MAX];
  float scales[MXL_OPT_LIST_MAX];
  for (int i = 0; i < adapters.n; i++) {
    if (mxl_cli_adapter_spec("merge", adapters.items[i], bufs[i], sizeof bufs[i], &scales[i]))
      return 2;
    paths[i] = bufs[i];
  }
  progress_state ps = {.last = 0};
  clock_gettime(CLOCK_MONOTONIC, &ps.t0);
  mxl_merge_options o = {model, paths, scales, adapters.n, out, mxfp4, hf, original, shard,
                         on_progress, &ps};
  mxl_merge_result r;
  mxl_status st = mxl_merge(&o, &r);
  mxl_progress_end();
  if (st != MXL_OK) return mxl_cli_fail("merge", st);
  printf("wrote %s: %s, %.2f GB of weights in %.1f s\n", out,
         mxfp4 ? "bf16 with MXFP4 experts" : "bf16", (double)r.bytes_written / 1e9, since(&ps.t0));
  if (mxfp4) print_report(&r);
  free(r.report_json);
  if (eval) return run_eval(model, out, eval, paths, scales, adapters.n);
  return 0;
}
