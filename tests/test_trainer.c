/* The trainer end to end on a tiny model: the loss falls; 2N steps in one
 * go equal N steps + stop + resume + N steps bit for bit; a diverging run
 * fails and keeps its last finite save; resume checks every setting it
 * depends on; the run folder is locked and never reused silently; a save
 * commits adapter and checkpoint together, keeps numbered copies, and goes
 * to a rescue folder when the run folder refuses it; metrics survive a
 * crash and a resume; --init-adapter starts from an adapter. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "core/fileio.h"
#include "model_fixture.h"
#include "test.h"

static char root[64];
static char model_dir[128], data_path[128];

static void write_data(const char *path, int reps) {
  FILE *fp = fopen(path, "w");
  const char *q[] = {"2+3", "4+4", "1+6", "5+2", "3+3", "7+1", "2+2", "6+3"};
  const char *a[] = {"5", "8", "7", "7", "6", "8", "4", "9"};
  for (int rep = 0; rep < reps; rep++)
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
  write_data(data_path, 3);
}

/* What a test sees of a run: it may stop it at a step, run something after
 * a step, and read the info messages. */
typedef struct hooks {
  int stop_at;
  volatile int flag;
  void (*after_step)(int step, void *arg);
  void *arg;
  char info[4096];
} hooks;

static void on_event(void *user, const mxl_train_event *ev) {
  hooks *h = user;
  if (!h) return;
  if (ev->kind == MXL_EVENT_STEP && ev->step == h->stop_at) h->flag = 1;
  if (ev->kind == MXL_EVENT_STEP && h->after_step) h->after_step(ev->step, h->arg);
  if (ev->kind == MXL_EVENT_INFO)
    snprintf(h->info + strlen(h->info), sizeof h->info - strlen(h->info), "%s\n", ev->message);
}

/* Settings from "key=value" strings, after the common ones. */
static void options(const char *out, int steps, const char *const *extra, int n_extra, hooks *h,
                    mxl_train_setting *s, char (*text)[2][256], mxl_train_options *o) {
  const char *base[] = {"model",  model_dir, "data",    data_path, "out",       out,
                        "steps",  NULL,      "lr",      "5e-3",    "seq_len",   "192",
                        "batch_size", "2",   "eval_count", "4",    "lora.rank", "4",
                        "threads", "1",      "max_bad_steps", "2"};
  int n = 0;
  for (int i = 0; i < 11; i++, n++) {
    snprintf(text[n][0], 256, "%s", base[2 * i]);
    if (i == 2) snprintf(text[n][1], 256, "%s/%s", root, out);
    else if (i == 3) snprintf(text[n][1], 256, "%d", steps);
    else snprintf(text[n][1], 256, "%s", base[2 * i + 1]);
  }
  for (int i = 0; i < n_extra; i++, n++) {
    const char *eq = strchr(extra[i], '=');
    snprintf(text[n][0], 256, "%.*s", (int)(eq - extra[i]), extra[i]);
    snprintf(text[n][1], 256, "%s", eq + 1);
  }
  for (int i = 0; i < n; i++) s[i] = (mxl_train_setting){text[i][0], text[i][1], NULL};
  *o = (mxl_train_options){NULL, s, n, on_event, h, h ? &h->flag : NULL};
}

enum { MAX_SETTINGS = 24 };

static mxl_status train_with(const char *out, int steps, const char *const *extra, int n_extra,
                             hooks *h, mxl_train_summary *sum) {
  mxl_train_setting s[MAX_SETTINGS];
  static char text[MAX_SETTINGS][2][256];
  mxl_train_options o;
  options(out, steps, extra, n_extra, h, s, text, &o);
  mxl_train_summary unused;
  return mxl_train(&o, sum ? sum : &unused);
}

static mxl_status create_with(const char *out, int steps, const char *const *extra, int n_extra,
                              hooks *h, mxl_trainer **t) {
  mxl_train_setting s[MAX_SETTINGS];
  static char text[MAX_SETTINGS][2][256];
  mxl_train_options o;
  options(out, steps, extra, n_extra, h, s, text, &o);
  return mxl_trainer_create(&o, t);
}

static const char *const RESUME[] = {"resume=true"};

static char *run_path(const char *out, const char *name) {
  static char path[4][256];
  static int i;
  i = (i + 1) % 4;
  snprintf(path[i], sizeof path[i], "%s/%s/%s", root, out, name);
  return path[i];
}

static mxl_status adapter_params(const char *path, mxl_lora **lora, int64_t *steps) {
  mxl_adapter *a = NULL;
  mxl_status st = mxl_adapter_open(path, &a);
  if (st == MXL_OK) st = mxl_adapter_read_lora(a, lora);
  if (st == MXL_OK && steps) *steps = mxl_adapter_header_of(a)->steps;
  mxl_adapter_close(a);
  return st;
}

static char *read_text(const char *path) {
  char *text = NULL;
  return mxl_read_file(path, 1 << 22, &text, NULL) == MXL_OK ? text : NULL;
}

static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = text; p && (p = strstr(p, what)); p++) n++;
  return n;
}

/* ------------------------------------------------------------------ resume */

/* The split run recomputes its activations before the interruption and
 * keeps them after (the whole run's auto keeps them here): the same bits. */
static void test_resume_is_bit_identical(void) {
  mxl_train_summary whole, part, rest;
  MXL_CHECK_OK(train_with("whole", 8, NULL, 0, NULL, &whole));
  hooks h = {.stop_at = 4};
  const char *const recompute[] = {"keep_activations=false"};
  MXL_CHECK_FAILS(train_with("split", 8, recompute, 1, &h, &part), MXL_ERR_INTERRUPTED,
                  "stopped at step 4 of 8");
  MXL_CHECK(part.interrupted && part.steps == 4);
  MXL_CHECK(strstr(h.info, "activations: recomputed (keep_activations false") != NULL);
  /* the tiny model beside any test machine's memory: auto keeps its pages */
  MXL_CHECK(strstr(h.info, "mapped weights: kept resident between steps") != NULL);
  const char *const resume_keeping[] = {"resume=true", "keep_activations=true"};
  hooks h2 = {.stop_at = -1};
  MXL_CHECK_OK(train_with("split", 8, resume_keeping, 2, &h2, &rest));
  MXL_CHECK(strstr(h2.info, "activations: kept for the backward (keep_activations true") != NULL);
  MXL_CHECK(rest.steps == 8);
  printf("  loss %.4f -> %.4f over 8 steps; resumed run ends at %.4f\n", whole.first_loss,
         whole.final_loss, rest.final_loss);
  MXL_CHECK(whole.final_loss < whole.first_loss);
  mxl_lora *a = NULL, *b = NULL;
  MXL_CHECK_OK(adapter_params(run_path("whole", "adapter.mxla"), &a, NULL));
  MXL_CHECK_OK(adapter_params(run_path("split", "adapter.mxla"), &b, NULL));
  if (a && b) {
    size_t n = a->layout->n_floats;
    MXL_CHECK(n == b->layout->n_floats);
    MXL_CHECK_MSG(!memcmp(a->params, b->params, n * sizeof(float)),
                  "adapters differ after resume");
  }
  mxl_lora_destroy(a);
  mxl_lora_destroy(b);
  MXL_CHECK(mxl_path_exists(run_path("split", "loss.svg")));
}

/* A resume must come from the same LoRA layout, base model and data, and
 * the error names the setting that differs. */
static void test_resume_checks_every_setting(void) {
  MXL_CHECK_OK(train_with("layout", 2, NULL, 0, NULL, NULL));
  const char *rank[] = {"resume=true", "lora.rank=8"};
  MXL_CHECK_FAILS(train_with("layout", 2, rank, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved with lora.rank 4, this run has 8");
  const char *alpha[] = {"resume=true", "lora.alpha=3"};
  MXL_CHECK_FAILS(train_with("layout", 2, alpha, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved with lora.alpha 8, this run has 3");
  const char *layers[] = {"resume=true", "lora.layers=[0]"};
  MXL_CHECK_FAILS(train_with("layout", 2, layers, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved with lora.targets \"");
  const char *dtype[] = {"resume=true", "adapter_dtype=bf16"};
  MXL_CHECK_FAILS(train_with("layout", 2, dtype, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved with adapter_dtype \"f32\", this run has \"bf16\"");
  char other_model[160], other_data[160], set_model[200], set_data[200];
  snprintf(other_model, sizeof other_model, "%s/model5", root);
  mxl_tiny_options opt = {0};
  opt.preset = "test";
  opt.layout = "hf";
  opt.seed = 5;
  MXL_CHECK_OK(mxl_tiny_write(other_model, &opt, NULL, NULL));
  snprintf(set_model, sizeof set_model, "model=%s", other_model);
  const char *model[] = {"resume=true", set_model};
  MXL_CHECK_FAILS(train_with("layout", 2, model, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved for another base model (fingerprint)");
  snprintf(other_data, sizeof other_data, "%s/other.jsonl", root);
  write_data(other_data, 2);
  snprintf(set_data, sizeof set_data, "data=%s", other_data);
  const char *data[] = {"resume=true", set_data};
  MXL_CHECK_FAILS(train_with("layout", 2, data, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved for another training data");
  MXL_CHECK_FAILS(train_with("layout", 1, RESUME, 1, NULL, NULL), MXL_ERR_STATE,
                  "the checkpoint is at step 2, past the 1 steps this run asks for");
  MXL_CHECK_OK(train_with("layout", 3, RESUME, 1, NULL, NULL)); /* unchanged: it goes on */
}

/* ------------------------------------------------------------------ divergence */

static int all_finite(const mxl_lora *l) {
  for (size_t i = 0; i < l->layout->n_floats; i++)
    if (!isfinite(l->params[i])) return 0;
  return 1;
}

static void test_divergence_fails(void) {
  const char *huge[] = {"lr=1e30"};
  MXL_CHECK_FAILS(train_with("diverge", 3, huge, 1, NULL, NULL), MXL_ERR_NUMERIC,
                  "the run diverged");
  MXL_CHECK_MSG(!mxl_path_exists(run_path("diverge", "adapter.mxla")),
                "a diverged run wrote an adapter");
  /* metrics.jsonl stays JSON: the NaN loss is null with its reason */
  char *text = read_text(run_path("diverge", "metrics.jsonl"));
  MXL_CHECK(text && strstr(text, "\"loss\":null") &&
            strstr(text, "\"nonfinite\":{\"loss\":\"NaN\""));
  for (char *line = text; line && *line;) {
    char *end = strchr(line, '\n');
    cJSON *o = cJSON_ParseWithLength(line, end ? (size_t)(end - line) : strlen(line));
    MXL_CHECK_MSG(o != NULL, "not JSON: %.80s", line);
    cJSON_Delete(o);
    line = end ? end + 1 : NULL;
  }
  free(text);
  /* A run that saved at step 1 and then diverges keeps that adapter. */
  MXL_CHECK_OK(train_with("keep", 1, NULL, 0, NULL, NULL));
  const char *more[] = {"resume=true", "lr=1e30", "save_every=1"};
  MXL_CHECK_FAILS(train_with("keep", 4, more, 3, NULL, NULL), MXL_ERR_NUMERIC,
                  "the checkpoint it resumed from (step 1)");
  mxl_lora *kept = NULL;
  int64_t steps = -1;
  MXL_CHECK_OK(adapter_params(run_path("keep", "adapter.mxla"), &kept, &steps));
  MXL_CHECK_MSG(steps == 1 && kept && all_finite(kept), "kept adapter: step %lld",
                (long long)steps);
  mxl_lora_destroy(kept);
}

/* With a warm-up, step 1 trains too: a 1-step run changes the adapter. */
static void test_first_step_trains(void) {
  const char *warm[] = {"warmup_steps=5"};
  MXL_CHECK_OK(train_with("one_step", 1, warm, 1, NULL, NULL));
  mxl_lora *l = NULL;
  MXL_CHECK_OK(adapter_params(run_path("one_step", "adapter.mxla"), &l, NULL));
  double b2 = 0;
  for (int i = 0; l && i < l->layout->n_tensors; i++)
    if (l->layout->tensors[i].is_b)
      for (size_t k = 0; k < l->layout->tensors[i].count; k++) {
        double v = l->params[l->layout->tensors[i].offset + k];
        b2 += v * v;
      }
  MXL_CHECK_MSG(b2 > 0, "every LoRA B is still zero after one step");
  mxl_lora_destroy(l);
}

/* ------------------------------------------------------------------ run folder */

static void test_run_folder_rules(void) {
  MXL_CHECK_OK(train_with("folder", 1, NULL, 0, NULL, NULL));
  MXL_CHECK_FAILS(train_with("folder", 1, NULL, 0, NULL, NULL), MXL_ERR_STATE,
                  "already holds a run (");
  const char *over[] = {"overwrite=true"};
  MXL_CHECK_OK(train_with("folder", 1, over, 1, NULL, NULL));
  const char *both[] = {"overwrite=true", "resume=true"};
  MXL_CHECK_FAILS(train_with("folder", 1, both, 2, NULL, NULL), MXL_ERR_FORMAT,
                  "resume and overwrite exclude each other");
  /* one trainer at a time per folder */
  mxl_trainer *first = NULL, *second = NULL;
  MXL_CHECK_OK(create_with("locked", 2, NULL, 0, NULL, &first));
  MXL_CHECK_FAILS(create_with("locked", 2, RESUME, 1, NULL, &second), MXL_ERR_STATE,
                  "in use by another mxlora train (pid ");
  mxl_trainer_destroy(first);
  MXL_CHECK_OK(create_with("locked", 2, RESUME, 1, NULL, &second));
  mxl_trainer_destroy(second);
}

static void touch(const char *path) {
  FILE *fp = fopen(path, "w");
  if (fp) fclose(fp);
}

static void test_stale_temporaries_removed(void) {
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, NULL, 0); /* a pid that no longer runs */
  char dir[160], dead_tmp[256], dead_pending[256], live[256];
  snprintf(dir, sizeof dir, "%s/stale", root);
  mxl_make_dirs(dir);
  snprintf(dead_tmp, sizeof dead_tmp, "%s/adapter.mxla.tmp.%ld", dir, (long)child);
  snprintf(dead_pending, sizeof dead_pending, "%s/checkpoint.mxstate.pending.%ld", dir,
           (long)child);
  snprintf(live, sizeof live, "%s/adapter.mxla.tmp.%ld", dir, (long)getpid());
  touch(dead_tmp), touch(dead_pending), touch(live);
  hooks h = {0};
  MXL_CHECK_OK(train_with("stale", 1, NULL, 0, &h, NULL));
  MXL_CHECK(!mxl_path_exists(dead_tmp) && !mxl_path_exists(dead_pending));
  MXL_CHECK(mxl_path_exists(live)); /* its process still runs */
  MXL_CHECK(strstr(h.info, "removed 2 temporary files of interrupted saves") != NULL);
  unlink(live);
}

/* ------------------------------------------------------------------ saves */

static long file_size(const char *path) {
  struct stat s;
  return stat(path, &s) == 0 ? (long)s.st_size : -1;
}

/* A save whose checkpoint cannot be written leaves the previous adapter
 * and checkpoint both in place (the file size limit lets the adapter
 * through and stops the larger checkpoint). */
static void test_failed_save_keeps_previous(void) {
  char rescue[200];
  snprintf(rescue, sizeof rescue, "rescue_dir=%s/commit_rescue", root);
  const char *extra[] = {"save_every=1", rescue};
  mxl_trainer *t = NULL;
  MXL_CHECK_OK(create_with("commit", 2, extra, 2, NULL, &t));
  if (!t) return;
  mxl_train_progress p;
  MXL_CHECK_OK(mxl_trainer_step(t, &p)); /* saves step 1 */
  char *adapter = run_path("commit", "adapter.mxla");
  char *ck = run_path("commit", "checkpoint.mxstate");
  char *before = read_text(adapter);
  long adapter_bytes = file_size(adapter), ck_bytes = file_size(ck);
  MXL_CHECK(adapter_bytes > 0 && ck_bytes > adapter_bytes);
  MXL_CHECK_OK(mxl_trainer_step(t, &p));
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = (rlim_t)(ck_bytes - 1000);
  signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &lim);
  mxl_train_summary s;
  mxl_status st = mxl_trainer_finish(t, &s);
  setrlimit(RLIMIT_FSIZE, &old);
  MXL_CHECK_MSG(st == MXL_ERR_IO, "finish: %s", mxl_last_error());
  MXL_CHECK(strstr(mxl_last_error(), "failed too") &&
            strstr(mxl_last_error(), "the last save (step 1)"));
  mxl_trainer_destroy(t);
  char *after = read_text(adapter);
  MXL_CHECK_MSG(before && after && file_size(adapter) == adapter_bytes &&
                    !memcmp(before, after, (size_t)adapter_bytes),
                "the adapter changed although its checkpoint was not saved");
  free(before);
  free(after);
  int64_t steps = -1;
  mxl_lora *l = NULL;
  MXL_CHECK_OK(adapter_params(adapter, &l, &steps));
  MXL_CHECK(steps == 1);
  mxl_lora_destroy(l);
}

static void remove_out(int step, void *arg) {
  const char *out = arg;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
  if (step == 3 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", out);
}

/* The final save fails (the run folder is gone): the trained state goes to
 * the rescue folder, the error says where, and training goes on from it. */
static void test_rescue_folder(void) {
  char rescue[200], setting[220], out[200];
  snprintf(rescue, sizeof rescue, "%s/rescued", root);
  snprintf(setting, sizeof setting, "rescue_dir=%s", rescue);
  snprintf(out, sizeof out, "%s/vanishing", root);
  const char *extra[] = {setting};
  hooks h = {.after_step = remove_out, .arg = out};
  MXL_CHECK_FAILS(train_with("vanishing", 3, extra, 1, &h, NULL), MXL_ERR_IO,
                  "the trained state of step 3 was saved in");
  MXL_CHECK(strstr(mxl_last_error(), rescue) && strstr(mxl_last_error(), "--resume"));
  MXL_CHECK(mxl_path_exists(run_path("rescued", "adapter.mxla")));
  mxl_train_summary s;
  MXL_CHECK_OK(train_with("rescued", 4, RESUME, 1, NULL, &s));
  MXL_CHECK(s.steps == 4);
}

static void test_keep_checkpoints(void) {
  const char *extra[] = {"save_every=1", "keep_checkpoints=2"};
  MXL_CHECK_OK(train_with("keep2", 4, extra, 2, NULL, NULL));
  MXL_CHECK(mxl_path_exists(run_path("keep2", "checkpoint-000004.mxstate")));
  MXL_CHECK(mxl_path_exists(run_path("keep2", "checkpoint-000003.mxstate")));
  MXL_CHECK(mxl_path_exists(run_path("keep2", "adapter-000003.mxla")));
  MXL_CHECK(!mxl_path_exists(run_path("keep2", "checkpoint-000002.mxstate")));
  MXL_CHECK(!mxl_path_exists(run_path("keep2", "adapter-000001.mxla")));
  int64_t steps = -1;
  mxl_lora *l = NULL;
  MXL_CHECK_OK(adapter_params(run_path("keep2", "adapter-000003.mxla"), &l, &steps));
  MXL_CHECK(steps == 3);
  mxl_lora_destroy(l);
}

/* A full disk (a small tmpfs) found before training, and at the final save:
 * the state is rescued. Needs mount (root in a container that allows it). */
static void test_full_disk(void) {
  char mnt[160];
  snprintf(mnt, sizeof mnt, "%s/tmpfs", root);
  mxl_make_dirs(mnt);
  if (mount("tmpfs", mnt, "tmpfs", 0, "size=512k") != 0) MXL_SKIP("cannot mount a tmpfs");
  const char *small[] = {"lora.rank=16"};
  MXL_CHECK_FAILS(train_with("tmpfs/run", 2, small, 1, NULL, NULL), MXL_ERR_IO,
                  "not enough free space: saving needs about");
  umount(mnt);
  MXL_CHECK(mount("tmpfs", mnt, "tmpfs", 0, "size=4m") == 0);
  /* Room at the start, then the disk fills up before the final save. */
  char filler[200], setting[220];
  snprintf(filler, sizeof filler, "%s/filler", mnt);
  snprintf(setting, sizeof setting, "rescue_dir=%s/full_rescue", root);
  const char *extra[] = {setting};
  mxl_trainer *t = NULL;
  MXL_CHECK_OK(create_with("tmpfs/run", 2, extra, 1, NULL, &t));
  mxl_train_progress p = MXL_TRAIN_RUNNING;
  while (t && p == MXL_TRAIN_RUNNING && mxl_trainer_step(t, &p) == MXL_OK) {}
  FILE *fp = fopen(filler, "w");
  static char block[65536];
  while (fp && fwrite(block, 1, sizeof block, fp) == sizeof block) {}
  if (fp) fclose(fp);
  mxl_train_summary s;
  if (t) MXL_CHECK_FAILS(mxl_trainer_finish(t, &s), MXL_ERR_IO, "saved in");
  MXL_CHECK(strstr(mxl_last_error(), "No space left"));
  mxl_trainer_destroy(t);
  MXL_CHECK(mxl_path_exists(run_path("full_rescue", "checkpoint.mxstate")));
  umount(mnt);
}

/* ------------------------------------------------------------------ metrics */

/* A process killed after step 3 (its last save at step 2) leaves a line of
 * step 3 behind: the resume keeps it, marks the resume point, and trains
 * step 3 again. */
static void test_metrics_survive_a_crash(void) {
  const char *extra[] = {"save_every=2"};
  mxl_trainer *t = NULL;
  MXL_CHECK_OK(create_with("crash", 4, extra, 1, NULL, &t));
  mxl_train_progress p;
  for (int i = 0; t && i < 3; i++) MXL_CHECK_OK(mxl_trainer_step(t, &p));
  mxl_trainer_destroy(t); /* no finish: the process "died" */
  MXL_CHECK_OK(train_with("crash", 4, RESUME, 1, NULL, NULL));
  char *text = read_text(run_path("crash", "metrics.jsonl"));
  MXL_CHECK(count(text, "{\"step\":3,\"loss\"") == 2 && count(text, "{\"step\":4,\"loss\"") == 1);
  char *mark = text ? strstr(text, "{\"resume_from_step\":2,\"world_size\":1") : NULL;
  MXL_CHECK(mark && strstr(text, "{\"step\":3,\"loss\"") < mark &&
            strstr(mark, "{\"step\":3,\"loss\""));
  free(text);
}

/* ------------------------------------------------------------------ init */

static void test_init_adapter(void) {
  mxl_train_summary base, next;
  MXL_CHECK_OK(train_with("base", 3, NULL, 0, NULL, &base));
  char init[220];
  snprintf(init, sizeof init, "init_adapter=%s", run_path("base", "adapter.mxla"));
  const char *extra[] = {init};
  hooks h = {0};
  MXL_CHECK_OK(train_with("from_adapter", 1, extra, 1, &h, &next));
  /* It starts where the first run ended: the same evaluation. */
  MXL_CHECK_NEAR(next.first_eval_loss, base.final_eval_loss, 1e-6);
  MXL_CHECK(strstr(h.info, "starting from the adapter") != NULL);
  const char *other[] = {init, "lora.rank=8"};
  MXL_CHECK_FAILS(train_with("from_other", 1, other, 2, NULL, NULL), MXL_ERR_STATE,
                  "saved with lora.rank 4, this run has 8");
  char model5[200];
  snprintf(model5, sizeof model5, "model=%s/model5", root); /* test_resume_checks_every_setting */
  const char *base5[] = {init, model5};
  MXL_CHECK_FAILS(train_with("from_base5", 1, base5, 2, NULL, NULL), MXL_ERR_ARGUMENT,
                  "trained on another base model");
}

static void test_bad_recipe(void) {
  const char *o[] = {"lora.rank=0"};
  MXL_CHECK_FAILS(train_with("bad", 3, o, 1, NULL, NULL), MXL_ERR_ARGUMENT,
                  "lora.rank: 0 is out of range: expected an integer in [1, 4096]");
  const char *o2[] = {"learning_rate=1"};
  MXL_CHECK_FAILS(train_with("bad", 3, o2, 1, NULL, NULL), MXL_ERR_ARGUMENT,
                  "unknown recipe key \"learning_rate\"");
  const char *o3[] = {"lora.rnak=4"};
  MXL_CHECK_FAILS(train_with("bad", 3, o3, 1, NULL, NULL), MXL_ERR_ARGUMENT, "\"lora.rnak\"");
  const char *o4[] = {"steps=5abc"};
  MXL_CHECK_FAILS(train_with("bad", 3, o4, 1, NULL, NULL), MXL_ERR_ARGUMENT,
                  "steps '5abc': expected an integer");
  const char *o5[] = {"lr=0x10"};
  MXL_CHECK_FAILS(train_with("bad", 3, o5, 1, NULL, NULL), MXL_ERR_ARGUMENT,
                  "lr '0x10': expected a number");
  const char *o6[] = {"lora.alpha=-16"};
  MXL_CHECK_FAILS(train_with("bad", 3, o6, 1, NULL, NULL), MXL_ERR_ARGUMENT,
                  "lora.alpha: -16 is out of range: expected a number in (0, 1e+06]");
  const char *o7[] = {"keep_activations=sometimes"};
  MXL_CHECK_FAILS(train_with("bad", 3, o7, 1, NULL, NULL), MXL_ERR_ARGUMENT,
                  "keep_activations 'sometimes': expected \"auto\", true or false");
}

int main(void) {
  setup();
  MXL_RUN(test_resume_is_bit_identical);
  MXL_RUN(test_resume_checks_every_setting);
  MXL_RUN(test_divergence_fails);
  MXL_RUN(test_first_step_trains);
  MXL_RUN(test_run_folder_rules);
  MXL_RUN(test_stale_temporaries_removed);
  MXL_RUN(test_failed_save_keeps_previous);
  MXL_RUN(test_rescue_folder);
  MXL_RUN(test_keep_checkpoints);
  MXL_RUN(test_full_disk);
  MXL_RUN(test_metrics_survive_a_crash);
  MXL_RUN(test_init_adapter);
  MXL_RUN(test_bad_recipe);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return mxl_test_summary("trainer");
}
