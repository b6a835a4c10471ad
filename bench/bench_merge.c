/* bench_merge: mxlora merge on a checkpoint (the gpt-oss-20b shape:
 * `mxlora tiny DIR --shape gpt-oss-20b --layout hf`), to bf16 and to MXFP4:
 * seconds, bytes written and peak RSS of each merge, against copying the
 * base's weight files in the same run (the I/O floor: a merge reads the
 * base once and writes a folder of about its size, more for bf16).
 *
 * The adapter is random (A ~ N(0, 1/in), B ~ N(0, 0.02²)) with the
 * cookbook's shape by default: rank 8, alpha 16, q/k/v/o on every layer,
 * experts on layers 7, 15, 23 (--expert-layers all: every layer's experts,
 * the re-encoding's worst case). Each merge runs in a child process, so its
 * peak RSS (the kernel's maxrss of that child) is its own.
 *
 *   build/bench_merge --model /scratch/20b --scratch /scratch/bench-merge [--expert-layers all]
 *   (run 20b-shaped jobs under `flock /tmp/mxlora-20b.lock`) */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "adapters/lora.h"
#include "core/fileio.h"
#include "model/model.h"
#include "mxlora.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float normal(uint64_t *s) {
  float u1 = mxl_splitmix_uniform(s), u2 = mxl_splitmix_uniform(s);
  if (u1 < 1e-7f) u1 = 1e-7f;
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static int make_adapter(const char *model_dir, const char *path, int all_layers) {
  mxl_model *m = NULL;
  if (mxl_model_open(model_dir, &m) != MXL_OK) return 0;
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 8, 16.0f);
  int cookbook[3] = {7, 15, 23}, n = 0;
  for (int i = 0; i < 3; i++)
    if (cookbook[i] < m->config.n_layers) n++;
  mxl_lora *lora = NULL;
  int ok = mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, NULL, 0, m->config.n_layers) == MXL_OK &&
           mxl_lora_config_add(&lc, MXL_LORA_EXPERT_BITS, all_layers ? NULL : cookbook,
                               all_layers ? 0 : n, m->config.n_layers) == MXL_OK &&
           mxl_lora_create(&m->config, &lc, NULL, &lora) == MXL_OK;
  uint64_t seed = 1;
  for (int i = 0; ok && i < lora->layout->n_tensors; i++) {
    const mxl_lora_tensor *x = &lora->layout->tensors[i];
    float std = x->is_b ? 0.02f : 1.0f / sqrtf((float)x->cols);
    for (size_t j = 0; j < x->count; j++) lora->params[x->offset + j] = std * normal(&seed);
  }
  mxl_adapter_save_options o;
  mxl_adapter_save_options_default(&o);
  ok = ok && mxl_adapter_save(path, lora, m, &o) == MXL_OK;
  if (ok)
    printf("adapter: rank 8, alpha 16, attention on %d layers, experts on %s, %zu parameters\n",
           m->config.n_layers, all_layers ? "every layer" : "layers 7, 15, 23",
           lora->layout->n_params);
  mxl_lora_destroy(lora);
  mxl_model_close(m);
  return ok;
}

typedef struct run_result {
  double seconds, max_rss_mb, gb;
  int ok;
} run_result;

/* `cmd` in a child: wall time and the child's peak RSS. */
static run_result run_child(const char *what, char *const argv[]) {
  run_result r = {0};
  fflush(stdout);
  double t0 = now();
  pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], argv);
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) return r;
  r.seconds = now() - t0;
  r.max_rss_mb = (double)ru.ru_maxrss / 1024.0;
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!r.ok) fprintf(stderr, "%s failed (status %d)\n", what, status);
  return r;
}

static double folder_gb(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "du -sb '%s' | cut -f1", dir);
  FILE *p = popen(cmd, "r");
  double bytes = 0;
  if (p && fscanf(p, "%lf", &bytes) != 1) bytes = 0;
  if (p) pclose(p);
  return bytes / 1e9;
}

static void remove_dir(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void cpu_name(char *buf, size_t cap) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[256];
  snprintf(buf, cap, "unknown CPU");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10)) {
      char *c = strchr(line, ':');
      snprintf(buf, cap, "%.100s", c ? c + 2 : line);
      buf[strcspn(buf, "\n")] = 0;
      break;
    }
  if (f) fclose(f);
}

int main(int argc, char **argv) {
  const char *model = NULL, *scratch = NULL, *mxlora = "build/mxlora";
  int all_layers = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--scratch") && i + 1 < argc) scratch = argv[++i];
    else if (!strcmp(argv[i], "--mxlora") && i + 1 < argc) mxlora = argv[++i];
    else if (!strcmp(argv[i], "--expert-layers") && i + 1 < argc) all_layers = !strcmp(argv[++i], "all");
    else {
      fprintf(stderr, "usage: bench_merge --model DIR --scratch DIR [--mxlora BIN] "
                      "[--expert-layers cookbook|all]\n");
      return 2;
    }
  }
  if (!model || !scratch) {
    fprintf(stderr, "bench_merge: --model and --scratch are required\n");
    return 2;
  }
  char cpu[128], adapter[512], out[512], copy[512], spec[600];
  cpu_name(cpu, sizeof cpu);
  printf("host: %s, %ld CPUs online; model %s (%.2f GB)\n", cpu, sysconf(_SC_NPROCESSORS_ONLN),
         model, folder_gb(model));
  if (mxl_make_dirs(scratch) != MXL_OK) return 1;
  snprintf(adapter, sizeof adapter, "%s/adapter.mxla", scratch);
  if (!make_adapter(model, adapter, all_layers)) {
    fprintf(stderr, "bench_merge: %s\n", mxl_last_error());
    return 1;
  }
  /* baseline: the base's files copied (cp reads and writes every byte) */
  snprintf(copy, sizeof copy, "%s/copy", scratch);
  remove_dir(copy);
  char *cp_argv[] = {"/bin/cp", "-r", (char *)model, copy, NULL};
  run_result base = run_child("cp", cp_argv);
  base.gb = folder_gb(copy);
  remove_dir(copy);
  printf("%-22s %8.1f s %7.2f GB %7.0f MB/s  peak RSS %7.0f MB\n", "baseline: cp -r base",
         base.seconds, base.gb, 1e3 * base.gb / base.seconds, base.max_rss_mb);
  const char *dtypes[2] = {"mxfp4", "bf16"};
  for (int d = 0; d < 2; d++) {
    snprintf(out, sizeof out, "%s/merged-%s", scratch, dtypes[d]);
    remove_dir(out);
    snprintf(spec, sizeof spec, "%s", adapter);
    char *argv2[] = {(char *)mxlora, "merge", "--model", (char *)model, "--adapter", spec, "--out",
                     out, "--dtype", (char *)dtypes[d], NULL};
    run_result r = run_child(dtypes[d], argv2);
    r.gb = folder_gb(out);
    remove_dir(out);
    if (!r.ok) return 1;
    printf("merge --dtype %-8s %8.1f s %7.2f GB %7.0f MB/s  peak RSS %7.0f MB  (%.2fx the copy's "
           "time)\n",
           dtypes[d], r.seconds, r.gb, 1e3 * r.gb / r.seconds, r.max_rss_mb,
           r.seconds / base.seconds);
  }
  return 0;
}
