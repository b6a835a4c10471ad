/* test_cuda_generate: `mxlora generate --adapter` on the CUDA backend,
 * emulated with device memory that host code cannot touch
 * (tests/cuda/cuda_emu_backend.h, host_memory 0).
 *
 * An adapter trained in the Hugging Face layout's coordinates is overlaid
 * by the generator on the HF root and on metal/model.bin, which stores q/k
 * rows permuted and pre-scaled (model/lora_view.h): the logits of every
 * prompt position must agree. The generator once rewrote q/k B for metal
 * on the host after the parameters had been uploaded, reading device
 * memory through a device pointer (a crash on a GPU; a fault here); now
 * the adapter is put into the model's layout while in host memory and
 * uploaded after (mxl_adapter_load_overlay, the registry's path too).
 *
 * Tolerance: HF and metal compute the same function in different orders
 * (RoPE on interleaved pairs instead of halves, q/k pre-scaled), and the
 * CUDA products take bf16 operands, so the two agree to rounding, not
 * bitwise: NMSE below 1e-4 (measured 1.4e-6, over the logits metal's cut
 * vocabulary keeps). The adapter at scale 0.75 moves the logits by over
 * 1000 times that (checked), so an overlay in the wrong coordinates cannot
 * pass. The model is test_cuda_model's (every token
 * uses all 4 experts, so no near-tied routing flips between layouts). */
#include <unistd.h>

#include "adapter_fixture.h"
#include "core/fileio.h"
#include "infer/generate.h"
#include "test.h"
#include "tests/cuda/cuda_emu_backend.h"

/* Measured 1.4e-6 (the adapter moves the logits by 0.87). */
#define LAYOUT_NMSE 1e-4

static char dir[64];

/* Σ(b − r)² / Σr² over the first `cols` of each row (metal's vocabulary
 * may be cut shorter than the HF one). */
static double nmse(const float *b, size_t b_cols, const float *r, size_t r_cols, size_t rows,
                   size_t cols) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++) {
      double x = b[i * b_cols + j], y = r[i * r_cols + j];
      err += (x - y) * (x - y);
      norm += y * y;
    }
  return norm > 0 ? err / norm : err;
}

/* A float32 [rows, cols] .npy file as mxl_npy_write_f32 writes it. */
typedef struct matrix {
  float *data;
  size_t rows, cols;
} matrix;

static int read_npy(const char *path, matrix *m) {
  char *raw = NULL;
  size_t n = 0;
  memset(m, 0, sizeof *m);
  if (mxl_read_file(path, 1 << 26, &raw, &n) != MXL_OK) return 0;
  size_t header = n >= 10 ? 10 + (unsigned char)raw[8] + 256u * (unsigned char)raw[9] : n + 1;
  const char *shape = header <= n ? strstr(raw + 10, "'shape': (") : NULL;
  int ok = shape && sscanf(shape, "'shape': (%zu, %zu)", &m->rows, &m->cols) == 2 &&
           n - header == m->rows * m->cols * sizeof(float) && (m->data = malloc(n - header));
  if (ok) memcpy(m->data, raw + header, n - header);
  free(raw);
  return ok;
}

/* Writes the adapter: rank 2 on every attention and expert projection,
 * trained-looking parameters, made for the model at the root. */
static mxl_status write_adapter(const char *path) {
  mxl_model *model = NULL;
  mxl_lora *lora = NULL;
  mxl_status st = mxl_model_open(dir, &model);
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 2, 4.0f);
  if (st == MXL_OK)
    st = mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                             model->config.n_layers);
  if (st == MXL_OK) st = mxl_lora_create(&model->config, &lc, NULL, &lora);
  if (st == MXL_OK) {
    fixture_fill(lora, 21, 0.3f);
    mxl_adapter_save_options opt;
    mxl_adapter_save_options_default(&opt);
    st = mxl_adapter_save(path, lora, model, &opt);
  }
  mxl_lora_destroy(lora);
  mxl_model_close(model);
  return st;
}

/* The prompt's logits from a generator on a fresh emulated CUDA backend,
 * with the adapter at `scale` (0: none). */
static int prompt_logits(const char *model_dir, const char *adapter, float scale, matrix *out) {
  char npy[128];
  snprintf(npy, sizeof npy, "%s/logits.npy", dir);
  mxl_backend *emu = NULL;
  mxl_generator *g = NULL;
  mxl_status st = mxl_backend_cuda_emu_create(0, &emu);
  if (st == MXL_OK) st = mxl_generator_open_on(model_dir, emu, 64, &g);
  int index = -1;
  if (st == MXL_OK && scale != 0) st = mxl_generator_add_adapter(g, adapter, scale, &index);
  mxl_gen_request req;
  mxl_gen_request_defaults(&req);
  req.prompt = "Hello world, hello again";
  req.temperature = 0;
  req.max_tokens = 1;
  req.dump_logits = npy;
  mxl_gen_result res;
  if (st == MXL_OK) st = mxl_generate(g, &req, NULL, NULL, &res);
  MXL_CHECK_OK(st);
  mxl_generator_close(g);
  return st == MXL_OK && read_npy(npy, out);
}

static void test_adapter_on_metal(void) {
  char adapter[128], metal[96];
  snprintf(adapter, sizeof adapter, "%s/a.mxla", dir);
  snprintf(metal, sizeof metal, "%s/metal", dir);
  MXL_CHECK_OK(write_adapter(adapter));
  matrix hf = {0}, mt = {0}, base = {0};
  int ok = prompt_logits(dir, adapter, 0.75f, &hf) && prompt_logits(metal, adapter, 0.75f, &mt) &&
           prompt_logits(dir, adapter, 0, &base);
  MXL_CHECK_MSG(ok, "the three runs did not all give logits");
  if (ok) {
    MXL_CHECK(hf.rows == mt.rows && hf.rows == base.rows && hf.rows >= 4);
    MXL_CHECK(mt.cols <= hf.cols && mt.cols >= 256);
    size_t rows = hf.rows < mt.rows ? hf.rows : mt.rows;
    double layouts = nmse(mt.data, mt.cols, hf.data, hf.cols, rows, mt.cols);
    double moved = nmse(base.data, base.cols, hf.data, hf.cols, rows, mt.cols);
    printf("  %zu prompt positions, %zu of %zu logits: metal vs HF nmse %.3g; the adapter moves "
           "them by %.3g\n", rows, mt.cols, hf.cols, layouts, moved);
    MXL_CHECK_MSG(layouts < LAYOUT_NMSE, "metal vs HF: nmse %.3g", layouts);
    MXL_CHECK_MSG(moved > 1000 * LAYOUT_NMSE, "the adapter moves the logits by %.3g only", moved);
  }
  free(hf.data), free(mt.data), free(base.data);
}

int main(void) {
  static const char *const set[] = {"experts_per_token=4", "head_dim=64"};
  snprintf(dir, sizeof dir, "/tmp/mxl_cuda_generate_XXXXXX");
  if (!mkdtemp(dir)) return 1;
  mxl_tiny_options opt = {0};
  opt.preset = "test";
  opt.layout = "all";
  opt.seed = 7;
  opt.set = set;
  opt.n_set = 2;
  if (mxl_tiny_write(dir, &opt, NULL, NULL) != MXL_OK) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_adapter_on_metal);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
  return mxl_test_summary("cuda_generate");
}
