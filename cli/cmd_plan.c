/* mxlora plan: whether a LoRA training run fits a GPU, and why. */
#include <stdio.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(plan);

const char mxl_cmd_plan_help[] = "GPU memory of a training run: does it fit, longest sequence";

static const char usage_line[] =
    "--model DIR | --shape gpt-oss-20b|gpt-oss-120b --gpu SIZE [--seq N] [--batch B]\n"
    "            [--rank R] [--targets LIST] [--expert-layers LIST] [--chunk N]\n"
    "            [--keep-inputs] [--unembed-on-host] [--keep-activations auto|true|false]\n"
    "            [--recipe FILE]\n\n"
    "Adds up the device memory of LoRA training on the CUDA backend: the weights (kept\n"
    "in MXFP4), LoRA parameters, gradients and AdamW state, the activations of\n"
    "per-layer checkpointing, the backend's scratch, the cuBLASLt and cuDNN\n"
    "workspaces, and an allowance for the CUDA runtime; says whether it fits SIZE\n"
    "(16GB, 24GB, 80GB, 96GB: binary units, as GPUs are labelled) and the longest\n"
    "sequence that does.\n"
    "A recipe supplies seq_len, batch_size and lora.*; options override it.\n"
    "The experts run --chunk tokens at a time (the trainer's default, 1024), so one\n"
    "layer's routed activations and their gradients hold a chunk, not the step.\n"
    "--keep-activations: every layer's activations kept for the backward instead of\n"
    "recomputed (auto: when they fit 3/4 of the memory left, never while offloading);\n"
    "the plan shows what that adds and the mode the step gets, on the GPU and on this\n"
    "host's CPU backend.\n"
    "Defaults: --seq 4096 --batch 1 --rank 8 --targets attn,experts, every layer.";

static double gib(uint64_t bytes) { return (double)bytes / 1073741824.0; }

static void print_plan(const mxl_plan *p) {
  printf(
      "plan: %s, %d layers x %d experts; LoRA rank %d on %s (experts on %d layers): "
      "%.1fM parameters\n",
      p->model, p->n_layers, p->n_experts, p->rank, p->targets, p->expert_layers,
      (double)p->lora_params / 1e6);
  printf("step: %d tokens (%d x %d), experts %d tokens at a time\n\n", p->tokens, p->batch,
         p->seq_len, p->moe_chunk);
  const struct {
    const char *what;
    uint64_t bytes;
  } rows[] = {
      {p->host_unembed ? "weights (MXFP4 kept, (un)embedding on host)"
                       : "weights (MXFP4 kept, embedding on the host)",
       p->weights},
      {"LoRA parameters, gradients, AdamW m and v", p->lora_state},
      {p->offload ? "layer inputs: device ring of two" : "layer inputs kept for the backward",
       p->checkpoints},
      {p->keeps ? "last layer's activations" : "one layer's recomputed activations",
       p->layer_tape},
      {"other layers' kept activations", p->keeps ? p->kept_tapes : 0},
      {"activation gradients, batch", p->grad_buffers},
      {"backend scratch (largest op)", p->scratch},
      {"cuBLASLt workspace", p->workspace},
      {"cuDNN workspace (attention)", p->dnn_workspace},
      {"CUDA runtime allowance (not measured)", p->reserve},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    printf("  %-44s %8.2f GiB\n", rows[i].what, gib(rows[i].bytes));
  printf("  %-44s %8.2f GiB\n", "total", gib(p->total));
  printf("\nhost memory: embedding %.2f GiB", gib(p->host_embed));
  if (p->host_unembed) printf(", unembedding %.2f GiB", gib(p->host_unembed));
  printf(" (the mapped file)");
  if (p->offload) printf(", layer inputs %.2f GiB", gib(p->host_inputs));
  printf("; PCIe per step %.2f GiB\n", gib(p->pcie_bytes));
  printf("\nGPU %.1f GiB: %s", gib(p->gpu_bytes), p->fits ? "fits" : "does not fit");
  if (p->longest_seq)
    printf("; the longest sequence that fits (batch %d): %d tokens\n", p->batch, p->longest_seq);
  else
    printf("; no sequence of 256 tokens or more fits\n");
  printf("generation: KV cache of one %d-token sequence: %.2f GiB (fp32)\n", p->seq_len,
         gib(p->kv_cache_fp32));
  printf("\nkeep_activations %s: GPU %s (keeping adds %.2f GiB); CPU backend on this host %s "
         "(adds %.2f GiB, auto's budget %.2f GiB)\n",
         p->keep_mode, p->keeps ? "keeps them" : "recomputes", gib(p->kept_tapes),
         p->cpu_keeps ? "keeps them" : "recomputes", gib(p->cpu_kept_tapes),
         gib(p->cpu_keep_budget));
}

int mxl_cmd_plan(int argc, char **argv) {
  mxl_plan_request req = {0};
  const char *gpu = NULL;
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &req.model, "DIR: a gpt-oss checkpoint"},
      {"--shape", MXL_OPT_STRING, &req.shape, "NAME: gpt-oss-20b or gpt-oss-120b"},
      {"--gpu", MXL_OPT_STRING, &gpu, "SIZE: device memory (16GB, 24GB, 80GB, 96GB)"},
      {"--seq", MXL_OPT_INT, &req.seq_len, "N: tokens per row (4096)"},
      {"--batch", MXL_OPT_INT, &req.batch, "B: rows per micro-batch (1)"},
      {"--rank", MXL_OPT_INT, &req.rank, "R: LoRA rank (8)"},
      {"--targets", MXL_OPT_STRING, &req.targets, "LIST: q,k,v,o,gate_up,down,attn,experts,all"},
      {"--expert-layers", MXL_OPT_STRING, &req.expert_layers, "LIST: layers whose experts train"},
      {"--recipe", MXL_OPT_STRING, &req.recipe, "FILE: take seq, batch and lora.* from it"},
      {"--chunk", MXL_OPT_INT, &req.moe_chunk, "N: tokens whose experts run at a time (1024)"},
      {"--keep-inputs", MXL_OPT_FLAG, &req.keep_inputs,
       "every layer's input on the GPU (no offloading to host memory)"},
      {"--unembed-on-host", MXL_OPT_FLAG, &req.unembed_on_host,
       "the unembedding in host memory, uploaded chunk by chunk"},
      {"--keep-activations", MXL_OPT_STRING, &req.keep_activations,
       "auto|true|false: keep every layer's activations (auto)"},
  };
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
  if (rc) return rc == 1 ? 0 : 2;
  if (!gpu || (!req.model && !req.shape)) {
    fprintf(stderr,
            "mxlora plan: give --gpu SIZE and --model DIR or --shape NAME "
            "(see mxlora plan --help)\n");
    return 2;
  }
  mxl_status st = mxl_plan_parse_bytes(gpu, &req.gpu_bytes);
  mxl_plan plan;
  if (st == MXL_OK) st = mxl_plan_compute(&req, &plan);
  if (st != MXL_OK) return mxl_cli_fail("plan", st);
  print_plan(&plan);
  return 0;
}
