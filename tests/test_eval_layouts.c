/* `mxlora eval --adapter` on metal/model.bin: an adapter is trained in the
 * Hugging Face layout's coordinates, and metal stores q/k rows permuted and
 * pre-scaled (model/lora_view.h), so eval must overlay it in the model's
 * layout (mxl_adapter_load_overlay, as generate and the registry do). Eval
 * once overlaid it as stored: on metal the q/k deltas landed on the wrong
 * rows.
 *
 * The losses of the two layouts are not comparable as such: metal's
 * unembedding keeps fewer rows (882 of this model's 1088), so its softmax
 * has another normaliser (base losses measured 7.1626 and 7.3659). What
 * the adapter does to the loss is: adapted − base is +0.1891 on metal and
 * +0.1942 on HF (overlaid as stored, metal's was −0.1271). The check: the
 * two effects agree within 10 % of the HF one. CPU backend, one thread:
 * deterministic. */
#include <unistd.h>

#include "adapter_fixture.h"
#include "model_fixture.h"
#include "test.h"

static model_fixture f; /* the root (HF) layout of a checkpoint with all three */

static void write_data(const char *path) {
  FILE *fp = fopen(path, "w");
  if (!fp) return;
  for (int i = 0; i < 6; i++)
    fprintf(fp, "{\"messages\": [{\"role\": \"user\", \"content\": \"Say %d, then more\"}, "
            "{\"role\": \"assistant\", \"content\": \"%d, and %d again!\"}]}\n", i, i * 7, i);
  fclose(fp);
}

/* Rank 4 on every attention projection (q and k are what metal stores
 * differently) and on the experts, trained-looking numbers. */
static void write_adapter(const char *path) {
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 4, 8.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                                   f.model->config.n_layers));
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_lora_create(&f.model->config, &lc, NULL, &lora));
  if (!lora) return;
  fixture_fill(lora, 5, 0.5f);
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  MXL_CHECK_OK(mxl_adapter_save(path, lora, f.model, &opt));
  mxl_lora_destroy(lora);
}

static mxl_status eval(const char *model, const char *data, const char *adapter,
                       mxl_eval_result *r) {
  const char *adapters[] = {adapter};
  mxl_eval_options o = {0};
  o.model = model;
  o.data = data;
  o.adapters = adapters;
  o.n_adapters = 1;
  o.seq_len = 384;
  o.threads = 1;
  return mxl_eval(&o, r);
}

static void test_eval_on_metal(void) {
  char data[96], adapter[96], metal[96];
  snprintf(data, sizeof data, "%s/d.jsonl", f.dir);
  snprintf(adapter, sizeof adapter, "%s/a.mxla", f.dir);
  snprintf(metal, sizeof metal, "%s/metal", f.dir);
  write_data(data);
  write_adapter(adapter);
  mxl_eval_result hf = {0}, mt = {0};
  MXL_CHECK_OK(eval(f.dir, data, adapter, &hf));
  MXL_CHECK_OK(eval(metal, data, adapter, &mt));
  printf("  base loss: hf %.7f, metal %.7f; with the adapter: hf %.7f, metal %.7f (%lld tokens)\n",
         hf.base_loss, mt.base_loss, hf.adapted_loss, mt.adapted_loss, hf.tokens);
  MXL_CHECK(hf.tokens > 0 && hf.tokens == mt.tokens);
  double effect_hf = hf.adapted_loss - hf.base_loss, effect_mt = mt.adapted_loss - mt.base_loss;
  MXL_CHECK_MSG(fabs(effect_hf) > 0.02 * hf.base_loss, "the adapter moves the loss by %.3g only",
                effect_hf);
  MXL_CHECK_MSG(fabs(effect_mt - effect_hf) < 0.1 * fabs(effect_hf),
                "the adapter changes the loss by %.4f on metal, %.4f on HF", effect_mt, effect_hf);
}

int main(void) {
  if (fixture_open(&f, "test", "all", 9, "", 1) != MXL_OK) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_eval_on_metal);
  fixture_close(&f);
  return mxl_test_summary("eval_layouts");
}
