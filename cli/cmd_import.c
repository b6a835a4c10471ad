/* mxlora import: a PEFT adapter trained elsewhere (transformers + PEFT, TRL,
 * Unsloth) as an mxlora adapter file, checked against the base model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(import);

const char mxl_cmd_import_help[] = "turn a PEFT adapter folder into an mxlora adapter file";

static const char usage_line[] =
    "PEFT_DIR --model BASE --out ADAPTER.mxla [--dtype f32|bf16]\n\n"
    "PEFT_DIR holds adapter_config.json and adapter_model.safetensors. Expert LoRA is read\n"
    "in the three layouts in use: PEFT's target_parameters (one fused pair per layer and\n"
    "projection), per-expert modules (experts.N.gate_proj/up_proj/down_proj or\n"
    "experts.N.gate_up_proj) and Unsloth's experts.gate_up_projs.N / down_projs.N;\n"
    "attention-only adapters too. Rank, lora_alpha, use_rslora, rank_pattern and\n"
    "alpha_pattern come from adapter_config.json; every tensor is checked against the\n"
    "base's shapes. The result works with generate, eval, serve, merge, export and\n"
    "train --init-adapter like any mxlora adapter.";

int mxl_cmd_import(int argc, char **argv) {
  const char *model_path = NULL, *out = NULL, *dtype = "f32";
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &model_path, "DIR: the base gpt-oss checkpoint"},
      {"--out", MXL_OPT_STRING, &out, "FILE: the mxlora adapter to write (.mxla)"},
      {"--dtype", MXL_OPT_STRING, &dtype, "f32|bf16: payload precision (default f32)"},
  };
  const char *pos[1];
  int npos = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, sizeof opts / sizeof opts[0], pos, 1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (npos != 1 || !model_path || !out) {
    fprintf(stderr, "mxlora import: give PEFT_DIR, --model and --out (see mxlora import --help)\n");
    return 2;
  }
  if (strcmp(dtype, "f32") && strcmp(dtype, "bf16")) {
    fprintf(stderr, "mxlora import: --dtype %s: expected f32 or bf16\n", dtype);
    return 2;
  }
  mxl_model *model = NULL;
  mxl_lora *lora = NULL;
  char *report = NULL;
  mxl_status st = mxl_model_open(model_path, &model);
  if (st == MXL_OK) st = mxl_adapter_import_peft_report(pos[0], model, &lora, &report);
  if (st == MXL_OK) {
    mxl_adapter_save_options o;
    mxl_adapter_save_options_default(&o);
    o.dtype = strcmp(dtype, "bf16") ? MXL_ADAPTER_F32 : MXL_ADAPTER_BF16;
    char recipe[256];
    snprintf(recipe, sizeof recipe, "imported from PEFT");
    o.provenance.recipe = recipe;
    st = mxl_adapter_save(out, lora, model, &o);
  }
  mxl_lora_destroy(lora);
  mxl_model_close(model);
  if (st != MXL_OK) {
    free(report);
    return mxl_cli_fail("import", st);
  }
  printf("%s", report ? report : "");
  printf("wrote %s\n", out);
  free(report);
  return 0;
}
