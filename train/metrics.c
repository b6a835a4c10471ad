#include "train/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fileio.h"
#include "core/status.h"
#include "core/strbuf.h"

static mxl_status write_line(mxl_metrics *m, const char *line) {
  if (fputs(line, m->fp) < 0 || fputc('\n', m->fp) < 0 || fflush(m->fp) != 0)
    return mxl_errorf(MXL_ERR_IO, "%s: write failed: %s", m->path, strerror(errno));
  return MXL_OK;
}

mxl_status mxl_metrics_open(mxl_metrics *m, const char *path, int append, int resume_step,
                            int world_size) {
  memset(m, 0, sizeof *m);
  m->fp = fopen(path, append ? "a" : "w");
  if (!m->fp) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  m->path = strdup(path);
  if (!m->path) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (!append) return MXL_OK;
  char when[32] = "";
  time_t now = time(NULL);
  struct tm tm;
  if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  char line[160];
  snprintf(line, sizeof line, "{\"resume_from_step\":%d,\"world_size\":%d,\"time\":\"%s\"}",
           resume_step, world_size, when);
  return write_line(m, line);
}

/* ,"key":value — or null, with the reason added to `why`. */
static void put_number(mxl_strbuf *b, mxl_strbuf *why, const char *key, double v) {
  if (isfinite(v)) {
    mxl_strbuf_printf(b, ",\"%s\":%.7g", key, v);
    return;
  }
  mxl_strbuf_printf(b, ",\"%s\":null", key);
  mxl_strbuf_printf(why, "%s\"%s\":\"%s\"", why->len ? "," : "", key,
                    isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf");
}

static mxl_status finish_line(mxl_metrics *m, mxl_strbuf *b, mxl_strbuf *why) {
  if (why->len) mxl_strbuf_printf(b, ",\"nonfinite\":{%.*s}", (int)why->len, why->data);
  mxl_strbuf_puts(b, "}");
  mxl_status st = b->failed || why->failed ? mxl_errorf(MXL_ERR_MEMORY, "out of memory")
                                           : write_line(m, b->data);
  free(b->data);
  free(why->data);
  return st;
}

mxl_status mxl_metrics_step(mxl_metrics *m, const mxl_step_record *r) {
  mxl_strbuf b = {0}, why = {0};
  mxl_strbuf_printf(&b, "{\"step\":%d", r->step);
  put_number(&b, &why, "loss", r->loss);
  put_number(&b, &why, "lr", r->lr);
  put_number(&b, &why, "grad_norm", r->grad_norm);
  mxl_strbuf_printf(&b, ",\"tokens\":%lld", r->tokens);
  put_number(&b, &why, "tokens_per_s", r->tokens_per_s);
  put_number(&b, &why, "elapsed_s", r->elapsed_s);
  mxl_strbuf_printf(&b, ",\"skipped\":%s", r->skipped ? "true" : "false");
  return finish_line(m, &b, &why);
}

mxl_status mxl_metrics_eval(mxl_metrics *m, int step, double eval_loss, long long tokens) {
  mxl_strbuf b = {0}, why = {0};
  mxl_strbuf_printf(&b, "{\"step\":%d", step);
  put_number(&b, &why, "eval_loss", eval_loss);
  mxl_strbuf_printf(&b, ",\"eval_tokens\":%lld", tokens);
  return finish_line(m, &b, &why);
}

void mxl_metrics_close(mxl_metrics *m) {
  if (m->fp) fclose(m->fp);
  free(m->path);
  memset(m, 0, sizeof *m);
}

double mxl_rate_add(mxl_rate *r, double tokens, double seconds) {
  int i = r->n++ % MXL_RATE_WINDOW;
  r->tokens[i] = tokens;
  r->seconds[i] = seconds;
  int n = r->n < MXL_RATE_WINDOW ? r->n : MXL_RATE_WINDOW;
  double tok = 0, sec = 0;
  for (int k = 0; k < n; k++) tok += r->tokens[k], sec += r->seconds[k];
  return tok / fmax(sec, 1e-9);
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
  /* Zero is the loss of a perfect fit: show it when the data come within
   * one data span of it, so the picture does not exaggerate small gains. */
  if (*y0 > 0 && *y0 <= *y1 - *y0) *y0 = 0;
}

/* A centred moving average over about 4 % of the points (none below 50):
 * the trend of a noisy per-step loss without lag. */
static double smoothed(const mxl_curve *c, int j) {
  int h = c->n / 50;
  double sum = 0;
  int n = 0;
  for (int k = j - h; k <= j + h; k++)
    if (k >= 0 && k < c->n && isfinite(c->y[k])) sum += c->y[k], n++;
  return n ? sum / n : NAN;
}

typedef struct frame {
  double left, top, pw, ph, x0, x1, y0, y1;
} frame;

static double px(const frame *f, double x) {
  return f->left + (x - f->x0) / (f->x1 - f->x0) * f->pw;
}

static double py(const frame *f, double y) {
  return f->top + (1 - (y - f->y0) / (f->y1 - f->y0)) * f->ph;
}

static void polyline(mxl_strbuf *b, const frame *f, const mxl_curve *c, int smooth,
                     const char *style) {
  mxl_strbuf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" %s points=\"", c->color, style);
  for (int j = 0; j < c->n; j++) {
    double y = smooth ? smoothed(c, j) : c->y[j];
    if (isfinite(y)) mxl_strbuf_printf(b, "%.1f,%.1f ", px(f, c->x[j]), py(f, y));
  }
  mxl_strbuf_puts(b, "\"/>\n");
}

static void draw_curve(mxl_strbuf *b, const frame *f, const mxl_curve *c) {
  if (c->smooth) {
    polyline(b, f, c, 0, "stroke-width=\"1\" stroke-opacity=\"0.3\"");
    polyline(b, f, c, 1, "stroke-width=\"2\"");
    return;
  }
  polyline(b, f, c, 0, "stroke-width=\"1.5\" stroke-dasharray=\"5,3\"");
  for (int j = 0; j < c->n; j++)
    if (isfinite(c->y[j]))
      mxl_strbuf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" "
                           "fill=\"%s\"/>\n", px(f, c->x[j]) - 3.5, py(f, c->y[j]) - 3.5,
                        c->color);
}

static void axes(mxl_strbuf *b, const frame *f, double W, double H) {
  double ys = tick_step(f->y1 - f->y0, 6), xs = tick_step(f->x1 - f->x0, 8);
  for (double v = ceil(f->y0 / ys) * ys; v <= f->y1 + 1e-12; v += ys) {
    double y = py(f, v);
    mxl_strbuf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
                         "stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" "
                         "text-anchor=\"end\">%g</text>\n",
                      f->left, f->left + f->pw, y, y, f->left - 6, y + 4,
                      fabs(v) < ys * 1e-9 ? 0 : v); /* no "-1.1e-16" for the 0 tick */
  }
  for (double v = ceil(f->x0 / xs) * xs; v <= f->x1 + 1e-12; v += xs)
    mxl_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                      px(f, v), f->top + f->ph + 16, v);
  mxl_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n",
                    f->left + f->pw / 2, H - 10);
  mxl_strbuf_printf(b, "<text x=\"16\" y=\"%.0f\" text-anchor=\"middle\" "
                       "transform=\"rotate(-90 16 %.0f)\">loss (nats per trained token)</text>\n",
                    f->top + f->ph / 2, f->top + f->ph / 2);
  mxl_strbuf_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
                       "fill=\"none\" stroke=\"#444\"/>\n", f->left, f->top, f->pw, f->ph);
  (void)W;
}

mxl_status mxl_curve_svg_write(const char *path, const char *title, const mxl_curve *curves,
                               int n_curves) {
  const double W = 720, H = 420, left = 72, right = 20, top = 40, bottom = 48;
  frame f = {left, top, W - left - right, H - top - bottom, 0, 0, 0, 0};
  data_range(curves, n_curves, &f.x0, &f.x1, &f.y0, &f.y1);
  mxl_strbuf b = {0};
  mxl_strbuf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
                        "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  mxl_strbuf_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  mxl_strbuf_printf(&b, "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n", left, title);
  axes(&b, &f, W, H);
  for (int i = 0; i < n_curves; i++) {
    draw_curve(&b, &f, &curves[i]);
    double ly = top + 18 + 16 * i, lx = W - right - 150;
    mxl_strbuf_printf(&b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" "
                          "stroke=\"%s\" stroke-width=\"2\"%s/><text x=\"%.0f\" y=\"%.0f\" "
                          "fill=\"%s\">%s%s</text>\n",
                      lx, lx + 18, ly - 4, ly - 4, curves[i].color,
                      curves[i].smooth ? "" : " stroke-dasharray=\"5,3\"", lx + 24, ly,
                      curves[i].color, curves[i].label,
                      curves[i].smooth && curves[i].n >= 50 ? " (smoothed)" : "");
  }
  mxl_strbuf_printf(&b, "</svg>\n");
  mxl_status st = b.failed ? mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path)
                           : mxl_write_file_atomic(path, b.data, b.len);
  free(b.data);
  return st;
}
