/* The trainer end to end on a tiny model: the loss falls; training 2N steps
 * in one go and N steps + interrupt + resume + N steps give bit-identical
 * adapters; the NaN/Inf guard stops a diverging run; bad recipes name the
 * field. */
#include <unistd.h>

#include "core/fileio.h"
#include "adapters/lora.h"
#include "model_fixture.h"
#include "test.h"

static char root[64];
static char model_dir[128], data_path[128];

static void write_data(void) {
  FILE *fp = fopen(data_path, "w");
  const char *q[] = {"2+3", "4+4", "1+6", "5+2", "3+3", "7+1", "2+2", "6+3"};
  const char *a[] = {"5", "8", "7", "7", "6", "8", "4", "9"};
  for (int rep = 0; rep < 3; rep++)
    for (int i = 0; i < 8; i++)
      fprintf(fp, "{\"prompt\": \"What is %s?\", \"completion\": \"%s.\"}\n", q[i], a[i]);
  fclose(fp);
}

static void setup(void) {
  snprintf(root, sizeof root, "/tmp/mxl_trainer_XXXXXX");
  if (!mkdtemp(root)) return;
  snprintf(model_dir, sizeof model_dir, "%s/model", root);
  snprintf(data_path, sizeof data_path, "%s/data.jsonl", root);
  mxl_tiny_options opt = {0};
  opt.preset = "test";
  opt.layout = "hf";
  opt.seed = 4;
  MXL_CHECK_OK(mxl_tiny_write(model_dir, &opt, NULL, NULL));
  write_data();
}

typedef struct stopper {
  int stop_at;
  volatile int flag;
} stopper;

static void on_event(void *user, const mxl_train_event *ev) {
  stopper *s = user;
  if (s && ev->kind == MXL_EVENT_STEP && ev->step == s->stop_at) s->flag = 1;
}

/* Settings from "key=value" strings. */
static mxl_status run_settings(const char *const *kv, int n, stopper *stop, mxl_train_summary *sum) {
  static char keys[32][64];
  mxl_train_setting s[32];
  for (int i = 0; i < n; i++) {
    const char *eq = strchr(kv[i], '=');
    snprintf(keys[i], sizeof keys[i], "%.*s", eq ? (int)(eq - kv[i]) : 0, kv[i]);
    s[i] = (mxl_train_setting){keys[i], eq ? eq + 1 : "", NULL};
  }
  mxl_train_options o = {NULL, s, n, on_event, stop, stop ? &stop->flag : NULL};
  return mxl_train(&o, sum);
}

static mxl_status train_more(const char *out, int steps, int resume, stopper *stop, float lr,
                             mxl_train_summary *sum, const char *const *extra, int n_extra) {
  char o[24][256];
  snprintf(o[0], 256, "model=%s", model_dir);
  snprintf(o[1], 256, "data=%s", data_path);
  snprintf(o[2], 256, "out=%s/%s", root, out);
  snprintf(o[3], 256, "steps=%d", steps);
  snprintf(o[4], 256, "lr=%g", lr);
  snprintf(o[5], 256, "resume=%s", resume ? "true" : "false");
  snprintf(o[6], 256, "seq_len=192");
  snprintf(o[7], 256, "batch_size=2");
  snprintf(o[8], 256, "eval_count=4");
  snprintf(o[9], 256, "lora.rank=4");
  snprintf(o[10], 256, "threads=2");
  snprintf(o[11], 256, "max_bad_steps=2");
  const char *ptr[24];
  int n = 12;
  for (int i = 0; i < n; i++) ptr[i] = o[i];
  for (int i = 0; i < n_extra && n < 24; i++) ptr[n++] = extra[i];
  return run_settings(ptr, n, stop, sum);
}

static mxl_status train(const char *out, int steps, int resume, stopper *stop, float lr,
                        mxl_train_summary *sum) {
  return train_more(out, steps, resume, stop, lr, sum, NULL, 0);
}

static mxl_status adapter_params(const char *out, mxl_lora **lora) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s/adapter.mxla", root, out);
  mxl_model *m = NULL;
  mxl_adapter *a = NULL;
  MXL_TRY(mxl_model_open(model_dir, &m));
  mxl_status st = mxl_adapter_open(path, &a);
  if (st == MXL_OK) st = mxl_adapter_load(a, m, lora);
  mxl_adapter_close(a);
  mxl_model_close(m);
  return st;
}

static void test_resume_is_bit_identical(void) {
  mxl_train_summary whole, part, rest;
  MXL_CHECK_OK(train("whole", 8, 0, NULL, 5e-3f, &whole));
  stopper s = {4, 0};
  MXL_CHECK_FAILS(train("split", 8, 0, &s, 5e-3f, &part), MXL_ERR_INTERRUPTED, "step 4");
  MXL_CHECK(part.interrupted && part.steps == 4);
  MXL_CHECK_OK(train("split", 8, 1, NULL, 5e-3f, &rest));
  MXL_CHECK(rest.steps == 8);
  printf("  loss %.4f -> %.4f over 8 steps; resumed run ends at %.4f\n", whole.first_loss,
         whole.final_loss, rest.final_loss);
  MXL_CHECK(whole.final_loss < whole.first_loss);
  mxl_lora *a = NULL, *b = NULL;
  MXL_CHECK_OK(adapter_params("whole", &a));
  MXL_CHECK_OK(adapter_params("split", &b));
  if (a && b) {
    size_t n = a->layout->n_floats;
    MXL_CHECK(n == b->layout->n_floats);
    MXL_CHECK_MSG(!memcmp(a->params, b->params, n * sizeof(float)),
                  "adapters differ after resume");
  }
  mxl_lora_destroy(a);
  mxl_lora_destroy(b);
  char path[256];
  snprintf(path, sizeof path, "%s/split/loss.svg", root);
  MXL_CHECK(mxl_path_exists(path));
}

static void test_nan_guard_stops(void) {
  mxl_train_summary s;
  MXL_CHECK_FAILS(train("diverge", 20, 0, NULL, 1e30f, &s), MXL_ERR_NUMERIC, "NaN/Inf");
}

static void test_bad_recipe(void) {
  const char *o[] = {"model=x", "data=y", "out=z", "steps=3", "lora.rank=0"};
  mxl_train_summary s;
  MXL_CHECK_FAILS(run_settings(o, 5, NULL, &s), MXL_ERR_ARGUMENT, "lora.rank: 0 is out of range");
  const char *o2[] = {"model=x", "data=y", "out=z"};
  MXL_CHECK_FAILS(run_settings(o2, 3, NULL, &s), MXL_ERR_FORMAT, "steps");
  const char *o4[] = {"model=x", "data=y", "out=z", "steps=3", "learning_rate=1"};
  MXL_CHECK_FAILS(run_settings(o4, 5, NULL, &s), MXL_ERR_ARGUMENT,
                  "unknown recipe key \"learning_rate\"");
  const char *o5[] = {"model=x", "data=y", "out=z", "steps=3", "lora.rnak=4"};
  MXL_CHECK_FAILS(run_settings(o5, 5, NULL, &s), MXL_ERR_ARGUMENT, "\"lora.rnak\"");
}

int main(void) {
  setup();
  MXL_RUN(test_resume_is_bit_identical);
  MXL_RUN(test_nan_guard_stops);
  MXL_RUN(test_bad_recipe);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return mxl_test_summary("trainer");
}
