#include "train/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/status.h"
#include "core/strbuf.h"

/* Keeps only the lines whose "step" is <= resume_step (atomic rewrite). */
static mxl_status truncate_after(const char *path, int resume_step) {
  if (!mxl_path_exists(path)) return MXL_OK;
  char *text = NULL;
  size_t len = 0;
  MXL_TRY(mxl_read_file(path, (size_t)1 << 30, &text, &len));
  char *kept = malloc(len + 1);
  if (!kept) {
    free(text);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  size_t n = 0;
  for (char *line = text; *line;) {
    char *end = strchr(line, '\n');
    size_t line_len = end ? (size_t)(end - line + 1) : strlen(line);
    cJSON *obj = cJSON_ParseWithLength(line, line_len);
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(obj, "step");
    if (cJSON_IsNumber(step) && step->valueint <= resume_step) {
      memcpy(kept + n, line, line_len);
      n += line_len;
    }
    cJSON_Delete(obj);
    line += line_len;
  }
  mxl_status st = mxl_write_file_atomic(path, kept, n);
  free(kept);
  free(text);
  return st;
}

mxl_status mxl_metrics_open(mxl_metrics *m, const char *path, int resume_step) {
  memset(m, 0, sizeof *m);
  if (resume_step > 0) {
    MXL_TRY(truncate_after(path, resume_step));
  } else if (mxl_path_exists(path) && remove(path) != 0) {
    return mxl_errorf(MXL_ERR_IO, "%s: cannot replace: %s", path, strerror(errno));
  }
  m->fp = fopen(path, "a");
  if (!m->fp) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  m->path = strdup(path);
  return MXL_OK;
}

static mxl_status write_line(mxl_metrics *m, const char *line) {
  if (fputs(line, m->fp) < 0 || fputc('\n', m->fp) < 0 || fflush(m->fp) != 0)
    return mxl_errorf(MXL_ERR_IO, "%s: write failed: %s", m->path, strerror(errno));
  return MXL_OK;
}

mxl_status mxl_metrics_step(mxl_metrics *m, const mxl_step_record *r) {
  char line[512];
  snprintf(line, sizeof line,
           "{\"step\":%d,\"loss\":%.6g,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens\":%lld,"
           "\"tokens_per_s\":%.4g,\"elapsed_s\":%.3f,\"skipped\":%s}",
           r->step, r->loss, r->lr, r->grad_norm, r->tokens, r->tokens_per_s, r->elapsed_s,
           r->skipped ? "true" : "false");
  return write_line(m, line);
}

mxl_status mxl_metrics_eval(mxl_metrics *m, int step, double eval_loss, long long tokens) {
  char line[256];
  snprintf(line, sizeof line, "{\"step\":%d,\"eval_loss\":%.6g,\"eval_tokens\":%lld}", step,
           eval_loss, tokens);
  return write_line(m, line);
}

void mxl_metrics_close(mxl_metrics *m) {
  if (m->fp) fclose(m->fp);
  free(m->path);
  memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- SVG */

/* A "nice" tick step (1, 2 or 5 × 10^k) for about `ticks` ticks over span. */
static double tick_step(double span, int ticks) {
  double raw = span / ticks, mag = pow(10, floor(log10(raw)));
  double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void data_range(const mxl_curve *c, int nc, double *x0, double *x1, double *y0,
                       double *y1) {
  *x0 = *y0 = INFINITY;
  *x1 = *y1 = -INFINITY;
  for (int i = 0; i < nc; i++)
    for (int j = 0; j < c[i].n; j++) {
      if (!isfinite(c[i].y[j])) continue;
      *x0 = fmin(*x0, c[i].x[j]), *x1 = fmax(*x1, c[i].x[j]);
      *y0 = fmin(*y0, c[i].y[j]), *y1 = fmax(*y1, c[i].y[j]);
    }
  if (!isfinite(*x0)) *x0 = 0, *x1 = 1, *y0 = 0, *y1 = 1;
  if (*x1 <= *x0) *x1 = *x0 + 1;
  if (*y1 <= *y0) *y1 = *y0 + 1;
}

mxl_status mxl_curve_svg_write(const char *path, const char *title, const mxl_curve *curves,
                               int n_curves) {
  const double W = 720, Ht = 420, left = 64, right = 20, top = 40, bottom = 48;
  double x0, x1, y0, y1;
  data_range(curves, n_curves, &x0, &x1, &y0, &y1);
  double pw = W - left - right, ph = Ht - top - bottom;
#define PX(v) (left + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (top + (1 - ((v) - y0) / (y1 - y0)) * ph)
  mxl_strbuf b = {0};
  mxl_strbuf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                        "font-family=\"sans-serif\" font-size=\"12\">\n", W, Ht);
  mxl_strbuf_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  mxl_strbuf_printf(&b, "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n", left, title);
  double ys = tick_step(y1 - y0, 6), xs = tick_step(x1 - x0, 8);
  for (double v = ceil(y0 / ys) * ys; v <= y1 + 1e-12; v += ys)
    mxl_strbuf_printf(&b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                      left, W - right, PY(v), PY(v), left - 6, PY(v) + 4, v);
  for (double v = ceil(x0 / xs) * xs; v <= x1 + 1e-12; v += xs)
    mxl_strbuf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                      PX(v), Ht - bottom + 16, v);
  mxl_strbuf_printf(&b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n",
                    left + pw / 2, Ht - 10);
  mxl_strbuf_printf(&b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
                        "stroke=\"#444\"/>\n", left, top, pw, ph);
  for (int i = 0; i < n_curves; i++) {
    mxl_strbuf_printf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                      curves[i].color);
    for (int j = 0; j < curves[i].n; j++)
      if (isfinite(curves[i].y[j]))
        mxl_strbuf_printf(&b, "%.1f,%.1f ", PX(curves[i].x[j]), PY(curves[i].y[j]));
    mxl_strbuf_printf(&b, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n",
                      W - right - 140, top + 18 + 16 * i, curves[i].color, curves[i].label);
    /* Sparse curves (evaluations) get a dot per point. */
    for (int j = 0; curves[i].n <= 64 && j < curves[i].n; j++)
      if (isfinite(curves[i].y[j]))
        mxl_strbuf_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                          PX(curves[i].x[j]), PY(curves[i].y[j]), curves[i].color);
  }
  mxl_strbuf_printf(&b, "</svg>\n");
#undef PX
#undef PY
  mxl_status st = b.failed ? mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path)
                           : mxl_write_file_atomic(path, b.data, b.len);
  free(b.data);
  return st;
}
