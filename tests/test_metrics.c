/* train/metrics: jsonl records (non-finite values as null with a reason),
 * history kept across resume with a mark, and the SVG curve (axis labels,
 * a tick at 0, a smoothed line over the raw points, distinct eval
 * markers). */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "core/fileio.h"
#include "train/metrics.h"
#include "test.h"

static char *read_text(const char *path) {
  char *text = NULL;
  size_t n = 0;
  if (mxl_read_file(path, 1 << 20, &text, &n) != MXL_OK) return NULL;
  return text;
}

/* Every line parses as JSON; returns the count. */
static int json_lines(const char *text) {
  int n = 0;
  for (const char *line = text; line && *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    cJSON *o = cJSON_ParseWithLength(line, len);
    MXL_CHECK_MSG(cJSON_IsObject(o), "not JSON: %.*s", (int)len, line);
    cJSON_Delete(o);
    n++;
    line = end ? end + 1 : NULL;
  }
  return n;
}

static void test_jsonl_and_resume(void) {
  char path[] = "/tmp/mxl_metrics_XXXXXX";
  close(mkstemp(path));
  mxl_metrics m;
  MXL_CHECK_OK(mxl_metrics_open(&m, path, 0, 0, 1));
  for (int s = 1; s <= 6; s++) {
    mxl_step_record r = {s, 2.0 / s, 1e-3, 0.5, 100, 1000, s * 0.1, 0};
    MXL_CHECK_OK(mxl_metrics_step(&m, &r));
  }
  MXL_CHECK_OK(mxl_metrics_eval(&m, 4, 1.5, 300));
  mxl_metrics_close(&m);
  /* Resuming from step 4 keeps steps 5 and 6 and marks the resume point. */
  MXL_CHECK_OK(mxl_metrics_open(&m, path, 1, 4, 2));
  mxl_step_record r = {5, 0.3, 1e-3, 0.5, 100, 1000, 0.5, 0};
  MXL_CHECK_OK(mxl_metrics_step(&m, &r));
  mxl_metrics_close(&m);
  char *text = read_text(path);
  MXL_CHECK(json_lines(text) == 9);
  MXL_CHECK(text && strstr(text, "\"step\":6,") && strstr(text, "\"step\":5,\"loss\":0.3,"));
  MXL_CHECK(text && strstr(text, "{\"resume_from_step\":4,\"world_size\":2,\"time\":\"20"));
  free(text);
  /* A fresh run starts a new file. */
  MXL_CHECK_OK(mxl_metrics_open(&m, path, 0, 0, 1));
  mxl_metrics_close(&m);
  text = read_text(path);
  MXL_CHECK(text && !*text);
  free(text);
  unlink(path);
}

static void test_nonfinite_is_null(void) {
  char path[] = "/tmp/mxl_metrics_XXXXXX";
  close(mkstemp(path));
  mxl_metrics m;
  MXL_CHECK_OK(mxl_metrics_open(&m, path, 0, 0, 1));
  mxl_step_record r = {3, NAN, 5e29, INFINITY, 59, 1e4, 0.1, 1};
  MXL_CHECK_OK(mxl_metrics_step(&m, &r));
  MXL_CHECK_OK(mxl_metrics_eval(&m, 3, -INFINITY, 33));
  mxl_metrics_close(&m);
  char *text = read_text(path);
  MXL_CHECK(json_lines(text) == 2);
  MXL_CHECK(text && !strstr(text, "nan") && !strstr(text, "inf"));
  MXL_CHECK(text && strstr(text, "\"loss\":null") && strstr(text, "\"grad_norm\":null"));
  MXL_CHECK(text && strstr(text, "\"nonfinite\":{\"loss\":\"NaN\",\"grad_norm\":\"Inf\"}"));
  MXL_CHECK(text && strstr(text, "\"eval_loss\":null,\"eval_tokens\":33,\"nonfinite\":"
                                 "{\"eval_loss\":\"-Inf\"}"));
  free(text);
  unlink(path);
}

static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = text; p && (p = strstr(p, what)); p++) n++;
  return n;
}

static void test_svg(void) {
  enum { N = 120 };
  double x[N], y[N], ex[] = {40, 80, 120}, ey[] = {2.5, 1.4, 1.1};
  for (int i = 0; i < N; i++) x[i] = i + 1, y[i] = 3.0 / (1 + 0.05 * i) + 0.2 * ((i * 7) % 5 - 2);
  mxl_curve c[2] = {{x, y, N, "train loss", "#1f77b4", 1}, {ex, ey, 3, "eval loss", "#d62728", 0}};
  char path[] = "/tmp/mxl_curve_XXXXXX";
  close(mkstemp(path));
  MXL_CHECK_OK(mxl_curve_svg_write(path, "loss", c, 2));
  char *text = read_text(path);
  MXL_CHECK(text && strstr(text, "<svg") && strstr(text, "</svg>"));
  /* raw points faint, the smoothed line over them, the eval line dashed */
  MXL_CHECK(count(text, "<polyline") == 3);
  MXL_CHECK(count(text, "stroke-opacity=\"0.3\"") == 1);
  MXL_CHECK(text && strstr(text, "train loss (smoothed)"));
  MXL_CHECK(count(text, "<rect x=") >= 3 + 1); /* a square per eval point, and the frame */
  MXL_CHECK(text && strstr(text, ">step</text>") && strstr(text, "loss (nats per trained token)"));
  /* losses from ~0.6 to ~3.4: the axis reaches down to a tick at 0 */
  MXL_CHECK(text && strstr(text, "text-anchor=\"end\">0</text>"));
  free(text);
  /* far from 0 (3.0 .. 3.5): no forced 0 tick */
  double fy[] = {3.5, 3.2, 3.1, 3.0};
  mxl_curve far[1] = {{x, fy, 4, "train loss", "#1f77b4", 1}};
  MXL_CHECK_OK(mxl_curve_svg_write(path, "loss", far, 1));
  text = read_text(path);
  MXL_CHECK(text && !strstr(text, "text-anchor=\"end\">0</text>"));
  free(text);
  unlink(path);
}

/* The progress bar's rate: the last 20 steps together, so one slow step
 * (an evaluation, a save, a busy machine) barely moves it. */
static void test_rate_window(void) {
  mxl_rate r = {0};
  MXL_CHECK_NEAR(mxl_rate_add(&r, 1000, 1.0), 1000, 1e-9);
  for (int i = 0; i < 19; i++) mxl_rate_add(&r, 1000, 1.0);
  MXL_CHECK_NEAR(mxl_rate_add(&r, 1000, 11.0), 20000.0 / 30.0, 1e-6); /* one slow step */
  for (int i = 0; i < 20; i++) mxl_rate_add(&r, 500, 1.0);
  MXL_CHECK_NEAR(mxl_rate_add(&r, 500, 1.0), 500, 1e-9); /* the slow step left the window */
}

int main(void) {
  MXL_RUN(test_jsonl_and_resume);
  MXL_RUN(test_nonfinite_is_null);
  MXL_RUN(test_svg);
  MXL_RUN(test_rate_window);
  return mxl_test_summary("metrics");
}
