/* train/metrics: jsonl records, resume truncation, the SVG curve. */
#include <unistd.h>

#include "core/fileio.h"
#include "train/metrics.h"
#include "test.h"

static int count_lines(const char *path) {
  char *text = NULL;
  size_t n = 0;
  if (mxl_read_file(path, 1 << 20, &text, &n) != MXL_OK) return -1;
  int lines = 0;
  for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
  free(text);
  return lines;
}

static void test_jsonl_and_resume(void) {
  char path[] = "/tmp/mxl_metrics_XXXXXX";
  close(mkstemp(path));
  mxl_metrics m;
  MXL_CHECK_OK(mxl_metrics_open(&m, path, 0));
  for (int s = 1; s <= 6; s++) {
    mxl_step_record r = {s, 2.0 / s, 1e-3, 0.5, 100, 1000, s * 0.1, 0};
    MXL_CHECK_OK(mxl_metrics_step(&m, &r));
  }
  MXL_CHECK_OK(mxl_metrics_eval(&m, 4, 1.5, 300));
  mxl_metrics_close(&m);
  MXL_CHECK(count_lines(path) == 7);
  /* Resuming from step 4 drops steps 5 and 6 (logged after that checkpoint). */
  MXL_CHECK_OK(mxl_metrics_open(&m, path, 4));
  mxl_step_record r = {5, 0.3, 1e-3, 0.5, 100, 1000, 0.5, 0};
  MXL_CHECK_OK(mxl_metrics_step(&m, &r));
  mxl_metrics_close(&m);
  MXL_CHECK(count_lines(path) == 6);
  char *text = NULL;
  size_t n;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &text, &n));
  MXL_CHECK(text && strstr(text, "\"step\":5,\"loss\":0.3,") && !strstr(text, "\"step\":6"));
  free(text);
  unlink(path);
}

static void test_svg(void) {
  double x[] = {1, 2, 3, 4}, y[] = {3.0, 2.0, 1.5, 1.2}, ey[] = {2.5, 1.4};
  double ex[] = {2, 4};
  mxl_curve c[2] = {{x, y, 4, "train loss", "#1f77b4"}, {ex, ey, 2, "eval loss", "#d62728"}};
  char path[] = "/tmp/mxl_curve_XXXXXX";
  close(mkstemp(path));
  MXL_CHECK_OK(mxl_curve_svg_write(path, "loss", c, 2));
  char *text = NULL;
  size_t n;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &text, &n));
  MXL_CHECK(text && strstr(text, "<svg") && strstr(text, "</svg>"));
  int polylines = 0;
  for (const char *p = text; (p = strstr(p, "<polyline")); p++) polylines++;
  MXL_CHECK(polylines == 2);
  MXL_CHECK(strstr(text, "eval loss") != NULL);
  free(text);
  unlink(path);
}

int main(void) {
  MXL_RUN(test_jsonl_and_resume);
  MXL_RUN(test_svg);
  return mxl_test_summary("metrics");
}
