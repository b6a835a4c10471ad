#!/usr/bin/env python3
"""Checks a PEFT adapter directory written by mxlora against PEFT itself.

From the directory's own adapter_config.json it builds, with transformers +
PEFT, a tiny GptOssForCausalLM of the given shape (config only, no weights)
and get_peft_model; then it checks that
  1. the keys and shapes PEFT would save for that config are exactly the
     keys and shapes in the directory's adapter_model.safetensors;
  2. PeftModel.from_pretrained loads the directory with no missing or
     unexpected keys, and the loaded lora_A/lora_B equal the file;
  3. every expert delta PEFT computes (get_delta_weight) equals the
     per-expert B_e·A_e·scaling read with mxlora's layout rules
     (A rows e·r + k, B columns k·E + e).
Exit status 0 when all hold.

Usage:
  MXL_PEFT_EXPORT_DIR=/tmp/peft_export build/test_peft
  python3 tools/peft_check.py /tmp/peft_export [--layers 3 --experts 4 --hidden 24
      --intermediate 20 --head-dim 8 --heads 4 --kv-heads 2]
(the defaults are the shape of tests/adapter_fixture.h, which test_peft uses).
"""
import argparse
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import GptOssConfig, GptOssForCausalLM


def tiny_model(a):
    types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(a.layers)]
    cfg = GptOssConfig(
        num_hidden_layers=a.layers, num_local_experts=a.experts, num_experts_per_tok=2,
        hidden_size=a.hidden, intermediate_size=a.intermediate, head_dim=a.head_dim,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=64,
        layer_types=types)
    torch.manual_seed(0)
    return GptOssForCausalLM(cfg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    for name, default in [("layers", 3), ("experts", 4), ("hidden", 24), ("intermediate", 20),
                          ("head-dim", 8), ("heads", 4), ("kv-heads", 2)]:
        p.add_argument("--" + name, type=int, default=default)
    a = p.parse_args()
    ok = True
    with open(os.path.join(a.dir, "adapter_config.json")) as f:
        raw = json.load(f)
    config = LoraConfig(**{k: v for k, v in raw.items() if k in LoraConfig.__dataclass_fields__})
    ours = load_file(os.path.join(a.dir, "adapter_model.safetensors"))

    # 1. keys and shapes PEFT itself produces for this config
    fresh = get_peft_model(tiny_model(a), config)
    peft_keys = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(fresh).items()}
    our_keys = {k: tuple(v.shape) for k, v in ours.items()}
    if peft_keys != our_keys:
        ok = False
        for k in sorted(set(peft_keys) | set(our_keys)):
            if peft_keys.get(k) != our_keys.get(k):
                print(f"key mismatch: {k}: PEFT {peft_keys.get(k)}, mxlora {our_keys.get(k)}")
    else:
        print(f"keys: {len(our_keys)} keys and shapes identical to PEFT's")

    # 2. PEFT loads the directory and holds the file's values
    model = PeftModel.from_pretrained(tiny_model(a), a.dir)
    loaded = get_peft_model_state_dict(model)
    missing = set(ours) - set(loaded)
    unexpected = set(loaded) - set(ours)
    diff = [k for k in ours if k in loaded and not torch.equal(loaded[k].float(), ours[k].float())]
    if missing or unexpected or diff:
        ok = False
        print(f"load: missing {sorted(missing)}, unexpected {sorted(unexpected)}, differ {diff}")
    else:
        print("load: PeftModel.from_pretrained took every tensor unchanged")

    # 3. expert deltas by PEFT vs by mxlora's layout rules
    n_checked = 0
    for name, module in model.named_modules():
        if type(module).__name__ != "ParamWrapper" or "default" not in module.lora_A:
            continue
        A = module.lora_A["default"].weight.detach().double()  # [E*r, in]
        B = module.lora_B["default"].weight.detach().double()  # [out, r*E]
        E, r = a.experts, config.r
        ours_delta = torch.stack([
            (B[:, [k * E + e for k in range(r)]] @ A[e * r:(e + 1) * r, :]).T
            for e in range(E)]) * module.scaling["default"]  # [E, in, out]
        peft_delta = module.get_delta_weight("default").double()
        err = (ours_delta - peft_delta).abs().max().item()
        n_checked += 1
        if err > 1e-6:
            ok = False
            print(f"delta: {name} ({module.parameter_name}): max error {err}")
    print(f"deltas: {n_checked} expert deltas checked")
    print("PEFT check: OK" if ok else "PEFT check: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
