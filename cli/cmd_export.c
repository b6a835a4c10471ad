/* mxlora export: an adapter for other tools, as PEFT (transformers, PEFT,
 * vLLM) or as a GGUF LoRA adapter (llama.cpp, Ollama, LM Studio). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(export);

const char mxl_cmd_export_help[] = "write an adapter as PEFT (transformers, vLLM) or GGUF (llama.cpp)";

static const char usage_line[] =
    "ADAPTER.mxla --format peft|gguf --out PATH [--gate-up split|fused] [--match BASE.gguf]\n\n"
    "peft: PATH is a folder receiving adapter_config.json and adapter_model.safetensors\n"
    "exactly as PEFT saves them for GptOssForCausalLM (attention in target_modules, experts\n"
    "in target_parameters); load it with PeftModel.from_pretrained or vLLM --lora-modules.\n"
    "gguf: PATH is a .gguf LoRA adapter for llama.cpp's gpt-oss (llama-cli --lora PATH,\n"
    "Ollama's ADAPTER). The experts' gate/up rows are de-interleaved as llama.cpp's\n"
    "converter does for the base: --gate-up split (default) writes ffn_gate_exps and\n"
    "ffn_up_exps, as convert_hf_to_gguf.py writes gpt-oss by default; fused writes one\n"
    "ffn_gate_up_exps. --match BASE.gguf takes the choice from your base GGUF and refuses\n"
    "an adapter whose tensors the base lacks.";

int mxl_cmd_export(int argc, char **argv) {
  const char *format = NULL, *out = NULL, *gate_up = "split", *match = NULL;
  const mxl_opt opts[] = {
      {"--format", MXL_OPT_STRING, &format, "peft|gguf"},
      {"--out", MXL_OPT_STRING, &out, "PATH: a folder (peft) or a .gguf file (gguf)"},
      {"--gate-up", MXL_OPT_STRING, &gate_up, "split|fused: GGUF expert gate/up tensors (default split)"},
      {"--match", MXL_OPT_STRING, &match, "BASE.gguf: check against (and follow) your base GGUF"},
  };
  const char *pos[1];
  int npos = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, sizeof opts / sizeof opts[0], pos, 1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (npos != 1 || !format || !out) {
    fprintf(stderr, "mxlora export: give ADAPTER.mxla, --format and --out (see mxlora export --help)\n");
    return 2;
  }
  int gguf = !strcmp(format, "gguf");
  if (!gguf && strcmp(format, "peft")) {
    fprintf(stderr, "mxlora export: --format %s: expected peft or gguf\n", format);
    return 2;
  }
  if (strcmp(gate_up, "split") && strcmp(gate_up, "fused")) {
    fprintf(stderr, "mxlora export: --gate-up %s: expected split or fused\n", gate_up);
    return 2;
  }
  if (!gguf && (match || strcmp(gate_up, "split"))) {
    fprintf(stderr, "mxlora export: --gate-up and --match apply to --format gguf only\n");
    return 2;
  }
  mxl_adapter *a = NULL;
  mxl_status st = mxl_adapter_open(pos[0], &a);
  if (st == MXL_OK && gguf) {
    mxl_gguf_export_options o = {!strcmp(gate_up, "fused"), match};
    st = mxl_adapter_export_gguf(a, out, &o);
  } else if (st == MXL_OK) {
    st = mxl_adapter_export_peft(a, out);
  }
  if (st != MXL_OK) {
    mxl_adapter_close(a);
    return mxl_cli_fail("export", st);
  }
  const mxl_adapter_info *in = mxl_adapter_get_info(a);
  printf("wrote %s (%s): rank %d, alpha %g%s, %d tensors, targets %s\n", out,
         gguf ? "GGUF LoRA adapter" : "PEFT adapter folder", in->rank, in->alpha,
         in->rslora ? " (rsLoRA)" : "", in->n_tensors, in->targets);
  mxl_adapter_close(a);
  return 0;
}
