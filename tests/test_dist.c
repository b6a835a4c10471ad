/* Data-parallel training through the command line under mpirun (OpenMPI,
 * --oversubscribe: 2 ranks on the 2-core CI machine), on a tiny model:
 *
 *  - 2 ranks × 1 row per batch equal 1 process × 2 rows: after one step
 *    within fp32 reduction-order tolerance, after six within the bounds
 *    AdamW and MoE routing allow (see below); ZeRO-1 equals plain data
 *    parallelism within fp32 tolerance;
 *  - two 2-rank runs write bitwise identical adapters;
 *  - a 2-rank checkpoint resumes in 1 process and a 1-process checkpoint in
 *    2 ranks, both ending where the uninterrupted run ends;
 *  - ranks started with other settings are refused;
 *  - a killed rank (SIGKILL) and a hung one (SIGSTOP, dist_timeout_s 3)
 *    each end the job with an error within a bounded time;
 *  - with 2 GPUs, NCCL carries the gradients (skipped otherwise).
 *
 * Skipped when the build has no MPI or mpirun is missing. */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "adapters/adapter_file.h"
#include "core/fileio.h"
#include "mpi_launcher.h"
#include "test.h"

/* How close 2 ranks × 1 row come to 1 process × 2 rows.
 *
 * After one step the two adapters differ only by fp32 summation order:
 * the same global-batch gradient is summed per rank and then across ranks
 * instead of in one pass, and the kernels take their few-row paths for
 * one row (measured here: largest difference 1.8e-6, relative L2 2.6e-7).
 * TIGHT_* bound that with a margin of about 10.
 *
 * Later steps cannot stay that close, for two reasons that have nothing to
 * do with the data split: AdamW's first update of an element is ±lr
 * whatever the gradient's size (bias correction makes m/√v = ±1), so an
 * element whose gradient is zero up to rounding (LoRA A at step 2, when B
 * has just left zero) may move by +lr in one run and -lr in the other; and
 * a router near-tie may pick another expert for a token when its logits
 * move by one ulp. An element flipped at step 2 stays apart for the steps
 * after it, AdamW's first moment carrying the opposite sign. Measured after
 * six steps: largest difference 5.7e-4 here with one rounding of the loss
 * gradient, 0.0147 (2.9·lr, the flip of one LoRA A element of layer 0's
 * k_proj) with another (the single-pass unembed_xent), up to 1.3·lr on
 * other data; relative L2 4.9e-4 and 5.4e-3; per-step losses within 2.1e-4
 * and 5.2e-4 relative. LOOSE_* bound those. */
#define LR 5e-3
#define TIGHT_ABS 2e-5
#define TIGHT_REL 2e-6
#define LOOSE_ABS (4 * LR)
#define LOOSE_REL 1e-2
#define LOOSE_LOSS 1.5e-3

static char root[64], model_dir[128], data_path[128], log_path[160];
static char launcher[512];

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(cmd + n, sizeof cmd - n, " >%s 2>&1", log_path);
  int status = system(cmd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int log_has(const char *needle) {
  char *text = NULL;
  if (mxl_read_file(log_path, 1 << 22, &text, NULL) != MXL_OK) return 0;
  int found = strstr(text, needle) != NULL;
  if (!found) fprintf(stderr, "--- log without \"%s\":\n%s---\n", needle, text);
  free(text);
  return found;
}

/* `mxlora train` on `ranks` processes (1: no launcher at all). */
static int train(int ranks, int batch, const char *out, int steps, const char *extra) {
  char prefix[640] = "";
  if (ranks > 1) snprintf(prefix, sizeof prefix, "%s -np %d ", launcher, ranks);
  return run("%s%s train --model %s --data %s --out %s/%s --steps %d --batch-size %d "
             "--seq-len 192 --lr %g --schedule constant --warmup-steps 0 --threads 1 "
             "--rank 4 --seed 3 --set eval_count=4 %s",
             prefix, MXL_CLI_PATH, model_dir, data_path, root, out, steps, batch, LR, extra);
}

static mxl_lora *params(const char *out) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s/adapter.mxla", root, out);
  mxl_adapter *a = NULL;
  mxl_lora *lora = NULL;
  mxl_status st = mxl_adapter_open(path, &a);
  if (st == MXL_OK) st = mxl_adapter_read_lora(a, &lora);
  mxl_adapter_close(a);
  MXL_CHECK_MSG(st == MXL_OK, "%s: %s", path, mxl_last_error());
  return lora;
}

/* Largest element difference and relative L2 difference of two runs. */
static void compare(const char *x, const char *y, double *max_abs, double *rel) {
  mxl_lora *a = params(x), *b = params(y);
  *max_abs = *rel = INFINITY;
  if (a && b && a->layout->n_floats == b->layout->n_floats) {
    double d2 = 0, n2 = 0, m = 0;
    for (size_t i = 0; i < a->layout->n_floats; i++) {
      double d = (double)a->params[i] - b->params[i];
      d2 += d * d, n2 += (double)a->params[i] * a->params[i];
      m = fmax(m, fabs(d));
    }
    *max_abs = m;
    *rel = sqrt(d2 / fmax(n2, 1e-30));
  }
  mxl_lora_destroy(a);
  mxl_lora_destroy(b);
}

static int identical(const char *x, const char *y) {
  mxl_lora *a = params(x), *b = params(y);
  int same = a && b && a->layout->n_floats == b->layout->n_floats &&
             !memcmp(a->params, b->params, a->layout->n_floats * sizeof(float));
  mxl_lora_destroy(a);
  mxl_lora_destroy(b);
  return same;
}

/* The training losses of a run, by step (NaN where absent). */
static void losses(const char *out, double *loss, int n) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s/metrics.jsonl", root, out);
  for (int i = 0; i < n; i++) loss[i] = NAN;
  char *text = NULL;
  if (mxl_read_file(path, 1 << 22, &text, NULL) != MXL_OK) return;
  for (char *line = text; line && *line;) {
    int step;
    double v;
    if (sscanf(line, "{\"step\":%d,\"loss\":%lf", &step, &v) == 2 && step >= 1 && step <= n)
      loss[step - 1] = v;
    line = strchr(line, '\n');
    if (line) line++;
  }
  free(text);
}

static void check_close(const char *x, const char *y, const char *what, double tol_abs,
                        double tol_rel, int steps) {
  double max_abs, rel, lx[16], ly[16], worst = 0;
  compare(x, y, &max_abs, &rel);
  losses(x, lx, steps);
  losses(y, ly, steps);
  for (int i = 0; i < steps; i++) worst = fmax(worst, fabs(lx[i] - ly[i]) / fabs(ly[i]));
  printf("  %s: largest difference %.3g, relative L2 %.3g; losses within %.3g\n", what,
         max_abs, rel, worst);
  MXL_CHECK_MSG(max_abs <= tol_abs && rel <= tol_rel, "%s: %.3g / %.3g over tolerance", what,
                max_abs, rel);
  MXL_CHECK_MSG(worst <= LOOSE_LOSS, "%s: losses differ by %.3g (or are missing)", what, worst);
}

/* ------------------------------------------------------------------ equality */

static void test_two_ranks_equal_one_process(void) {
  MXL_CHECK(train(2, 1, "two1", 1, "") == 0);
  MXL_CHECK(log_has("data parallel: MPI, 2 ranks"));
  MXL_CHECK(train(1, 2, "one1", 1, "") == 0);
  check_close("two1", "one1", "one step, 2 ranks x 1 row vs 1 process x 2 rows", TIGHT_ABS,
              TIGHT_REL, 1);
  MXL_CHECK(train(2, 1, "two", 6, "") == 0);
  MXL_CHECK(train(1, 2, "one", 6, "") == 0);
  check_close("two", "one", "six steps, 2 ranks vs 1 process", LOOSE_ABS, LOOSE_REL, 6);
  MXL_CHECK(train(2, 1, "two_again", 6, "") == 0);
  MXL_CHECK_MSG(identical("two", "two_again"), "two 2-rank runs differ");
  MXL_CHECK(train(2, 1, "zero", 6, "--set zero_stage=1") == 0);
  MXL_CHECK(log_has("ZeRO-1"));
  /* The same sums, the moments kept by their owners: as close as one step. */
  check_close("zero", "two", "ZeRO-1 vs plain data parallel, six steps", TIGHT_ABS, TIGHT_REL, 6);
}

/* ------------------------------------------------------------------ resume */

static void test_resume_across_world_sizes(void) {
  /* 2 ranks for 3 steps, then 1 process (the same global batch) to 6 */
  MXL_CHECK(train(2, 1, "two_one", 3, "") == 0);
  MXL_CHECK(train(1, 2, "two_one", 6, "--resume") == 0);
  MXL_CHECK(log_has("written by 2 ranks, this run has 1"));
  check_close("two_one", "two", "resumed 2 -> 1 vs 2 ranks throughout", LOOSE_ABS, LOOSE_REL, 6);
  /* 1 process for 3 steps, then 2 ranks to 6 */
  MXL_CHECK(train(1, 2, "one_two", 3, "") == 0);
  MXL_CHECK(train(2, 1, "one_two", 6, "--resume") == 0);
  MXL_CHECK(log_has("written by 1 rank, this run has 2"));
  check_close("one_two", "one", "resumed 1 -> 2 vs 1 process throughout", LOOSE_ABS, LOOSE_REL,
              6);
  /* a ZeRO-1 checkpoint holds whole moments: it resumes in one process */
  MXL_CHECK(train(2, 1, "zero_one", 3, "--set zero_stage=1") == 0);
  MXL_CHECK(train(1, 2, "zero_one", 6, "--resume") == 0);
  check_close("zero_one", "two_one", "ZeRO-1 resumed 2 -> 1 vs plain resumed 2 -> 1", TIGHT_ABS,
              TIGHT_REL, 6);
}

/* ------------------------------------------------------------------ failures */

/* The pid of the rank process of our job with the given rank: the one
 * whose environment holds both our tag and OMPI_COMM_WORLD_RANK=rank. */
static pid_t rank_pid(const char *tag, int rank) {
  DIR *d = opendir("/proc");
  char want[64];
  snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
  pid_t found = 0;
  for (struct dirent *e; d && !found && (e = readdir(d));) {
    char path[300], env[65536];
    snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
    FILE *fp = fopen(path, "rb");
    if (!fp) continue;
    size_t n = fread(env, 1, sizeof env - 1, fp);
    fclose(fp);
    int has_tag = 0, has_rank = 0;
    for (size_t i = 0; i < n; i += strlen(env + i) + 1) {
      env[n] = '\0';
      has_tag |= !strcmp(env + i, tag);
      has_rank |= !strcmp(env + i, want);
    }
    if (has_tag && has_rank) found = (pid_t)atoi(e->d_name);
  }
  if (d) closedir(d);
  return found;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Starts a long 2-rank run, waits for its first step, sends `sig` to rank
 * 1 and returns mpirun's exit status (-1 if it did not end within
 * `limit` seconds; it is then killed) and the seconds it took. */
static int disturb(const char *out, int sig, const char *extra, double limit, double *took) {
  char tag[128], cmd[2048], metrics[256];
  snprintf(tag, sizeof tag, "MXL_TEST_TAG=%s/%s", root, out);
  snprintf(metrics, sizeof metrics, "%s/%s/metrics.jsonl", root, out);
  snprintf(cmd, sizeof cmd,
           "%s=1 exec %s -x MXL_TEST_TAG -np 2 %s train --model %s --data %s --out %s/%s "
           "--steps 100000 --batch-size 1 --seq-len 192 --threads 1 --rank 4 %s >%s 2>&1",
           tag, launcher, MXL_CLI_PATH, model_dir, data_path, root, out, extra, log_path);
  strcat(tag, "=1");
  pid_t job = fork();
  if (job == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  pid_t victim = 0;
  for (double t0 = now(); now() - t0 < 60 && !victim;) { /* wait for step 1 */
    char *text = NULL;
    if (mxl_read_file(metrics, 1 << 22, &text, NULL) == MXL_OK && strstr(text, "\"loss\""))
      victim = rank_pid(tag, 1);
    free(text);
    usleep(50000);
  }
  MXL_CHECK_MSG(victim > 0, "rank 1 of the job was not found");
  if (victim > 0) kill(victim, sig);
  double t0 = now();
  int status = 0, ended = 0;
  while (!ended && now() - t0 < limit) {
    ended = waitpid(job, &status, WNOHANG) == job;
    if (!ended) usleep(50000);
  }
  *took = now() - t0;
  if (victim > 0) kill(victim, SIGKILL); /* a stopped rank stays behind otherwise */
  if (!ended) {
    kill(job, SIGKILL);
    waitpid(job, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Ranks started with other settings (mpirun's A : B form) are refused
 * before training. */
static void test_ranks_must_agree(void) {
  char one[1024];
  snprintf(one, sizeof one, "%s train --model %s --data %s --out %s/mixed --steps 2 "
           "--seq-len 192 --threads 1", MXL_CLI_PATH, model_dir, data_path, root);
  int rc = run("%s -np 1 %s --rank 4 : -np 1 %s --rank 8", launcher, one, one);
  MXL_CHECK_MSG(rc != 0, "ranks with other settings trained");
  MXL_CHECK(log_has("rank 1: the settings (recipe and options) differ from rank 0's"));
}

static void test_dead_rank_ends_the_job(void) {
  double took;
  int rc = disturb("killed", SIGKILL, "", 60, &took);
  printf("  rank 1 killed: the job ended in %.1f s with status %d\n", took, rc);
  MXL_CHECK_MSG(rc > 0, "the job did not fail (status %d)", rc);
  MXL_CHECK(log_has("signal 9"));
}

static void test_hung_rank_ends_the_job(void) {
  double took;
  int rc = disturb("stopped", SIGSTOP, "--set dist_timeout_s=3", 60, &took);
  printf("  rank 1 stopped: the job ended in %.1f s with status %d\n", took, rc);
  MXL_CHECK_MSG(rc > 0, "the job did not fail (status %d)", rc);
  MXL_CHECK(log_has("no answer from the other ranks"));
}

/* ------------------------------------------------------------------ NCCL */

/* On a machine with 2 GPUs (the GPU suite's ctest): the gradients go over
 * NCCL between them, and 2 GPU ranks match 1 GPU process with the same
 * global batch after one step. The CUDA products round their operands to
 * bf16, so the bound is that of bf16, not fp32. */
static void test_nccl_two_gpus(void) {
  mxl_backend *second = NULL;
  if (mxl_backend_cuda_create(1, &second) != MXL_OK) MXL_SKIP("fewer than 2 CUDA devices");
  mxl_backend_destroy(second);
  MXL_CHECK(train(2, 1, "nccl2", 1, "--backend cuda --dist nccl") == 0);
  MXL_CHECK(log_has("MPI + NCCL, 2 ranks"));
  MXL_CHECK(train(1, 2, "nccl1", 1, "--backend cuda") == 0);
  check_close("nccl2", "nccl1", "one step, 2 GPUs over NCCL vs 1 GPU", 1e-3, 1e-3, 1);
}

/* ------------------------------------------------------------------ main */

static void write_data(void) {
  FILE *fp = fopen(data_path, "w");
  const char *q[] = {"2+3", "4+4", "1+6", "5+2", "3+3", "7+1", "2+2", "6+3"};
  const char *a[] = {"5", "8", "7", "7", "6", "8", "4", "9"};
  for (int rep = 0; rep < 3; rep++)
    for (int i = 0; i < 8; i++)
      fprintf(fp, "{\"prompt\": \"What is %s?\", \"completion\": \"%s.\"}\n", q[i], a[i]);
  fclose(fp);
}

int main(void) {
#if !defined(MXL_HAVE_MPI) || !defined(MXL_MPIEXEC)
  fprintf(stderr, "SKIP: built without MPI\n");
  return mxl_test_summary("dist");
#else
  if (access(MXL_MPIEXEC, X_OK) != 0) {
    fprintf(stderr, "SKIP: %s not found\n", MXL_MPIEXEC);
    return mxl_test_summary("dist");
  }
  mpi_launcher(launcher, sizeof launcher);
  snprintf(root, sizeof root, "/tmp/mxl_dist_XXXXXX");
  if (!mkdtemp(root)) return 1;
  snprintf(model_dir, sizeof model_dir, "%s/model", root);
  snprintf(data_path, sizeof data_path, "%s/data.jsonl", root);
  snprintf(log_path, sizeof log_path, "%s/log.txt", root);
  mxl_tiny_options opt = {0};
  opt.preset = "test";
  opt.layout = "hf";
  opt.seed = 4;
  MXL_CHECK_OK(mxl_tiny_write(model_dir, &opt, NULL, NULL));
  write_data();
  MXL_RUN(test_two_ranks_equal_one_process);
  MXL_RUN(test_resume_across_world_sizes);
  MXL_RUN(test_ranks_must_agree);
  MXL_RUN(test_dead_rank_ends_the_job);
  MXL_RUN(test_hung_rank_ends_the_job);
  MXL_RUN(test_nccl_two_gpus);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return mxl_test_summary("dist");
#endif
}
