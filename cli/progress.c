#include "cli/progress.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int line_open;

int mxl_stderr_is_tty(void) { return isatty(STDERR_FILENO); }

void mxl_format_duration(double s, char *buf, size_t cap) {
  if (!isfinite(s) || s < 0) {
    snprintf(buf, cap, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, cap, "%lds", t);
}

void mxl_progress_line(const char *label, double done, double total, const char *suffix,
                       int force) {
  const int width = 24;
  double frac = total > 0 ? done / total : 0;
  if (frac > 1) frac = 1;
  int filled = (int)(frac * width);
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  if (mxl_stderr_is_tty()) {
    fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %s", label, bar, frac * 100, suffix);
    line_open = 1;
  } else if (force) {
    fprintf(stderr, "%s [%s] %3.0f%% %s\n", label, bar, frac * 100, suffix);
  }
  fflush(stderr);
}

void mxl_progress_end(void) {
  if (line_open) fputc('\n', stderr);
  line_open = 0;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void weight_progress(void *user, const char *what, double done, double total) {
  (void)what;
  double *start = user;
  if (*start == 0) *start = now_seconds();
  char suffix[64];
  snprintf(suffix, sizeof suffix, "%.2f / %.2f GB, %.1f s", done / 1e9, total / 1e9,
           now_seconds() - *start);
  mxl_progress_line("copying the weights into 2 MB pages", done, total, suffix, done >= total);
  if (done >= total) mxl_progress_end();
}

mxl_weight_options mxl_cli_weight_options(int no_mmap, double *clock) {
  mxl_weight_options w = {0};
  w.no_mmap = no_mmap;
  if (no_mmap) w.progress = weight_progress, w.progress_user = clock;
  return w;
}
