/* `mxlora train` and `mxlora eval` at the command line: flags typed by the
 * recipe schema (strings stay strings, numbers parsed strictly, ranges
 * named), --opt=value, steps/epochs, honest exit codes for a diverged run
 * and a NaN evaluation, SIGTERM and SIGHUP saving like Ctrl-C, a file size
 * limit refused before training, and the resume messages. */
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "adapters/adapter_file.h"
#include "core/fileio.h"
#include "test.h"

static char root[64], model[128], data[128], log_path[160];

static char *read_text(const char *path) {
  char *text = NULL;
  return mxl_read_file(path, 1 << 24, &text, NULL) == MXL_OK ? text : strdup("");
}

/* Runs a shell command line in `root`; captures stdout+stderr. */
__attribute__((format(printf, 2, 3))) static int sh(char **out, const char *fmt, ...) {
  char line[3072], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && %s > '%s' 2>&1", root, line, log_path);
  int rc = system(cmd);
  rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  *out = read_text(log_path);
  return rc;
}

/* `mxlora train` on the tiny model and data, plus `args`. */
#define TRAIN "'" MXL_CLI_PATH "' train --model model --data data.jsonl --seq-len 192 " \
              "--batch-size 2 --rank 4 --threads 1 --set eval_count=4"

#define EXPECT(rc_expected, needle, ...)                                                     \
  do {                                                                                       \
    char *out_ = NULL;                                                                       \
    int rc_ = sh(&out_, __VA_ARGS__);                                                        \
    MXL_CHECK_MSG(rc_ == (rc_expected), "exit %d, expected %d: %s", rc_, rc_expected, out_); \
    MXL_CHECK_MSG(strstr(out_, needle) != NULL, "output lacks \"%s\": %s", needle, out_);    \
    free(out_);                                                                              \
  } while (0)

static void test_flags_typed_by_schema(void) {
  /* strings stay strings, even when they read as numbers */
  EXPECT(0, "adapter: 2025-01-run/adapter.mxla", TRAIN " --steps 1 --out 2025-01-run");
  EXPECT(1, "2024.jsonl", TRAIN " --steps 1 --out r --data 2024.jsonl");
  /* numbers are whole and decimal */
  EXPECT(2, "--steps '5abc': expected an integer", TRAIN " --steps 5abc --out r");
  EXPECT(2, "--lr '0x10': expected a number", TRAIN " --steps 1 --lr 0x10 --out r");
  EXPECT(2, "--lr 'nan': expected a number", TRAIN " --steps 1 --lr nan --out r");
  EXPECT(2, "--steps '2.5': expected an integer", TRAIN " --steps 2.5 --out r");
  /* ranges are named with the flag */
  EXPECT(2, "--alpha: -16 is out of range: expected a number in (0, 1e+06]",
         TRAIN " --steps 1 --alpha -16 --out r");
  EXPECT(2, "--steps: 0 is out of range: expected an integer >= 1", TRAIN " --steps 0 --out r");
  EXPECT(2, "--threads: -3 is out of range", TRAIN " --steps 1 --threads -3 --out r");
  EXPECT(2, "--set lora.rank 'abc': expected an integer", TRAIN " --steps 1 --set lora.rank=abc "
         "--out r");
  EXPECT(2, "--layers '[0,x]': expected \"all\" or a list", TRAIN " --steps 1 --layers '[0,x]' "
         "--out r");
  /* --opt=value, and both layer list spellings */
  EXPECT(0, "trained 1 steps", TRAIN " --steps=1 --layers=0,1 --out=eq");
  EXPECT(0, "trained 1 steps", TRAIN " --steps 1 --layers '[0]' --out brackets");
  EXPECT(0, "usage: mxlora train", "'" MXL_CLI_PATH "' train --help");
  EXPECT(0, "\"[0,2]\"", "'" MXL_CLI_PATH "' train --help");
}

static void test_steps_and_epochs(void) {
  char recipe[200];
  snprintf(recipe, sizeof recipe, "%s/both.json", root);
  FILE *fp = fopen(recipe, "w");
  fputs("{\"model\": \"model\", \"data\": \"data.jsonl\", \"out\": \"both\", \"steps\": 3, "
        "\"epochs\": 1, \"seq_len\": 192, \"threads\": 1}\n", fp);
  fclose(fp);
  EXPECT(1, "both \"steps\" and \"epochs\" are set", "'" MXL_CLI_PATH "' train both.json");
  /* a flag replaces the other one */
  EXPECT(0, "trained 2 steps", "'" MXL_CLI_PATH "' train both.json --steps 2 --rank 4");
}

static void test_divergence_and_nan_eval(void) {
  EXPECT(1, "the run diverged", TRAIN " --steps 3 --lr 1e30 --out diverged");
  char path[200];
  snprintf(path, sizeof path, "%s/diverged/adapter.mxla", root);
  MXL_CHECK_MSG(!mxl_path_exists(path), "a diverged run wrote an adapter");
  /* An adapter whose values overflow the model: eval shows the NaN and fails. */
  EXPECT(0, "trained 2 steps", TRAIN " --steps 2 --out fine");
  snprintf(path, sizeof path, "%s/fine/adapter.mxla", root);
  mxl_adapter *a = NULL;
  mxl_lora *lora = NULL;
  mxl_model *m = NULL;
  char model_path[200], broken[200];
  snprintf(model_path, sizeof model_path, "%s/model", root);
  snprintf(broken, sizeof broken, "%s/broken.mxla", root);
  MXL_CHECK_OK(mxl_model_open(model_path, &m));
  MXL_CHECK_OK(mxl_adapter_open(path, &a));
  if (a && m) MXL_CHECK_OK(mxl_adapter_load(a, m, &lora));
  if (lora) {
    for (size_t i = 0; i < lora->layout->n_floats; i++) lora->params[i] *= 1e36f;
    mxl_adapter_save_options opt;
    mxl_adapter_save_options_default(&opt);
    MXL_CHECK_OK(mxl_adapter_save(broken, lora, m, &opt));
  }
  mxl_lora_destroy(lora);
  mxl_adapter_close(a);
  mxl_model_close(m);
  EXPECT(1, "is NaN/Inf", "'" MXL_CLI_PATH "' eval --model model --data data.jsonl --adapter "
         "broken.mxla --seq-len 192 --threads 1");
  EXPECT(1, "not a number: no comparison", "'" MXL_CLI_PATH "' eval --model model --data "
         "data.jsonl --adapter broken.mxla --seq-len 192 --threads 1");
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A long run gets `sig` after its first step: it saves, says how to go on,
 * and exits 130. */
static void stop_with(int sig, const char *out, const char *name) {
  char cmd[2048], metrics[200];
  snprintf(cmd, sizeof cmd, "cd '%s' && exec " TRAIN " --steps 100000 --out %s > '%s' 2>&1",
           root, out, log_path);
  snprintf(metrics, sizeof metrics, "%s/%s/metrics.jsonl", root, out);
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  int started = 0;
  for (double t0 = now(); !started && now() - t0 < 60; usleep(20000)) {
    char *text = read_text(metrics);
    started = strstr(text, "\"loss\"") != NULL;
    free(text);
  }
  MXL_CHECK(started);
  kill(pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  char *log = read_text(log_path);
  MXL_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 130, "%s: status %d: %s", name,
                status, log);
  MXL_CHECK_MSG(strstr(log, name) && strstr(log, "--resume") && strstr(log, "saved in"),
                "%s: %s", name, log);
  free(log);
  char ck[200];
  snprintf(ck, sizeof ck, "%s/%s/checkpoint.mxstate", root, out);
  MXL_CHECK(mxl_path_exists(ck));
}

static void test_signals_save(void) {
  stop_with(SIGTERM, "term", "SIGTERM");
  stop_with(SIGHUP, "hup", "SIGHUP");
  stop_with(SIGINT, "int", "interrupted");
  /* the run goes on from there; asking for fewer steps than it has is named */
  EXPECT(0, "resumed from term/checkpoint.mxstate", TRAIN " --steps 100000 --out term --resume "
         "--steps 60");
  EXPECT(1, "past the 1 steps this run asks for", TRAIN " --out term --resume --steps 1");
}

static void test_run_folder_and_limits(void) {
  EXPECT(0, "trained 1 steps", TRAIN " --steps 1 --out kept");
  EXPECT(1, "already holds a run (", TRAIN " --steps 1 --out kept");
  EXPECT(0, "trained 1 steps", TRAIN " --steps 1 --out kept --overwrite");
  EXPECT(2, "--overwrite takes no value", TRAIN " --steps 1 --out kept --overwrite=yes");
  /* ulimit -f: refused before the first step, not at the first save */
  EXPECT(1, "the file size limit (ulimit -f)", "ulimit -f 16 && trap '' XFSZ && " TRAIN
         " --steps 1 --out limited");
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/mxl_train_cli_XXXXXX");
  if (!mkdtemp(root)) return 1;
  snprintf(model, sizeof model, "%s/model", root);
  snprintf(data, sizeof data, "%s/data.jsonl", root);
  snprintf(log_path, sizeof log_path, "%s/log.txt", root);
  mxl_tiny_options opt = {0};
  opt.preset = "test";
  opt.layout = "hf";
  opt.seed = 2;
  MXL_CHECK_OK(mxl_tiny_write(model, &opt, NULL, NULL));
  FILE *fp = fopen(data, "w");
  for (int i = 0; i < 16; i++)
    fprintf(fp, "{\"prompt\": \"Say %d\", \"completion\": \"%d!\"}\n", i, i * 7);
  fclose(fp);
  MXL_RUN(test_flags_typed_by_schema);
  MXL_RUN(test_steps_and_epochs);
  MXL_RUN(test_divergence_and_nan_eval);
  MXL_RUN(test_signals_save);
  MXL_RUN(test_run_folder_and_limits);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return mxl_test_summary("train_cli");
}
