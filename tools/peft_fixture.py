#!/usr/bin/env python3
"""Writes tests/fixtures/adapter/peft_tiny/: a LoRA adapter saved by PEFT
itself (the oracle for mxlora's PEFT export/import, read by
tests/test_peft.c), plus what PEFT computes from it.

The base is a tiny GptOssForCausalLM built from a config only (no weights
are loaded): 3 layers, 4 experts, hidden 24, intermediate 20, head_dim 8,
4 query heads, 2 KV heads, the shape of tests/adapter_fixture.h. PEFT
(get_peft_model) adapts, with r=4, lora_alpha=8:
  q_proj, v_proj   on every layer         (short names)
  k_proj           on layers 0 and 2      (full module names)
  o_proj           on layer 1
  experts.gate_up_proj + down_proj on layer 1 (two nested ParamWrappers)
  experts.gate_up_proj alone on layer 0, experts.down_proj alone on layer 2
Every LoRA weight is then set to N(0, 0.1²) from torch.manual_seed(0), so
nothing is zero, and the adapter is saved with save_pretrained.

Files:
  adapter_config.json, adapter_model.safetensors  PEFT's own output
  delta.safetensors   ΔW = get_delta_weight("default") of every adapted
                      module, float32, named layers.<l>.<attn|experts>.<t>;
                      attention [out, in], experts [E, in, out] (PEFT's own
                      orientation for the transposed GptOss experts)
  expect.json         the keys and shapes in file order, the init bounds
                      measured on PEFT's kaiming_uniform_ for several fan-ins,
                      and the keys, shapes and parameter count PEFT gives the
                      OpenAI cookbook recipe on the real gpt-oss-20b config
                      (model built on the meta device: shapes only)

Usage: python3 tools/peft_fixture.py [output dir]
"""
import json
import math
import os
import sys

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file, load_file
from transformers import GptOssConfig, GptOssForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "adapter", "peft_tiny")
N_LAYERS, E, H, I, D, NH, NKV, R, ALPHA = 3, 4, 24, 20, 8, 4, 2, 4, 8


def tiny_model():
    cfg = GptOssConfig(
        num_hidden_layers=N_LAYERS, num_local_experts=E, num_experts_per_tok=2,
        hidden_size=H, intermediate_size=I, head_dim=D, num_attention_heads=NH,
        num_key_value_heads=NKV, vocab_size=64,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    torch.manual_seed(1)
    return GptOssForCausalLM(cfg)


def lora_config():
    return LoraConfig(
        r=R, lora_alpha=ALPHA, task_type="CAUSAL_LM",
        target_modules=["q_proj", "v_proj", "model.layers.0.self_attn.k_proj",
                        "model.layers.2.self_attn.k_proj", "model.layers.1.self_attn.o_proj"],
        target_parameters=["1.mlp.experts.gate_up_proj", "1.mlp.experts.down_proj",
                           "0.mlp.experts.gate_up_proj", "2.mlp.experts.down_proj"])


def init_bounds():
    """PEFT's default A init (kaiming_uniform_(a=√5) on lora_A.weight):
    the largest |value| over many draws, per fan-in; the theory says
    1/√fan_in. ParamWrapper's A is nn.Linear(in, r·E): fan-in is `in` too."""
    out = {}
    for fan_in in (20, 24, 32, 2880, 4096):
        w = torch.empty(20000, fan_in)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        out[str(fan_in)] = {"max_abs": float(w.abs().max()), "theory": 1 / math.sqrt(fan_in)}
    # And on the real modules of a fresh get_peft_model.
    pm = get_peft_model(tiny_model(), lora_config())
    for name, p in pm.named_parameters():
        if "lora_A" in name:
            bound = 1 / math.sqrt(p.shape[1])
            assert float(p.abs().max()) <= bound + 1e-7, (name, float(p.abs().max()), bound)
        if "lora_B" in name:
            assert float(p.abs().max()) == 0.0, name
    return out


def cookbook_20b():
    """The cookbook recipe (docs/gpt-oss.md §8) on gpt-oss-20b's shape."""
    cfg = GptOssConfig(
        num_hidden_layers=24, num_local_experts=32, num_experts_per_tok=4, hidden_size=2880,
        intermediate_size=2880, head_dim=64, num_attention_heads=64, num_key_value_heads=8,
        vocab_size=201088)
    with torch.device("meta"):
        model = GptOssForCausalLM(cfg)
    layers = (7, 15, 23)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear",
        target_parameters=[f"{l}.mlp.experts.{p}" for l in layers
                           for p in ("gate_up_proj", "down_proj")])
    sd = get_peft_model_state_dict(get_peft_model(model, config))
    return {"keys": {k: list(v.shape) for k, v in sorted(sd.items())},
            "params": sum(v.numel() for v in sd.values())}


def delta_name(module_name, module):
    layer = module_name.split(".layers.")[1].split(".")[0]
    if "self_attn" in module_name:
        return f"layers.{layer}.attn.{module_name.rsplit('.', 1)[1][0]}"
    target = {"gate_up_proj": "gate_up", "down_proj": "down"}[module.parameter_name]
    return f"layers.{layer}.experts.{target}"


def main():
    os.makedirs(OUT, exist_ok=True)
    bounds = init_bounds()
    pm = get_peft_model(tiny_model(), lora_config())
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    pm.save_pretrained(OUT)
    deltas = {}
    for name, module in pm.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            with torch.no_grad():
                deltas[delta_name(name, module)] = module.get_delta_weight("default").float()
    save_file({k: v.contiguous() for k, v in sorted(deltas.items())},
              os.path.join(OUT, "delta.safetensors"))
    tensors = load_file(os.path.join(OUT, "adapter_model.safetensors"))
    expect = {
        "keys": {k: list(v.shape) for k, v in sorted(tensors.items())},
        "dtype": str(next(iter(tensors.values())).dtype),
        "scaling": ALPHA / R,
        "init_bounds": bounds,
        "cookbook_20b": cookbook_20b(),
        "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(OUT, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)
        f.write("\n")
    # save_pretrained writes a README.md model card; the fixture does not need it.
    readme = os.path.join(OUT, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    print(f"wrote {OUT}: {len(tensors)} adapter tensors, {len(deltas)} deltas")


if __name__ == "__main__":
    main()
