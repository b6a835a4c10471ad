#!/usr/bin/env python3
"""On-demand interop check of mxlora export and merge against tools we did
not write (transformers, PEFT, the gguf package). Run it on a model and an
adapter made by mxlora (tools/demo.sh makes models/tiny-demo and
runs/demo/adapter.mxla; any gpt-oss-shaped checkpoint with MXFP4 experts
works). Every mxlora number comes from the CLI (`generate --dump-logits`
on the ref backend, fp32), every oracle number from the packages:

  1. PEFT: `mxlora export --format peft`; PeftModel.from_pretrained on the
     base (transformers, fp32, MXFP4 dequantized) takes every tensor (no
     missing or unexpected keys) and its logits equal mxlora's logits with
     the adapter overlaid.
  2. merged bf16: `mxlora merge --dtype bf16`; GptOssForCausalLM loads the
     folder (no quantization_config, dense experts). Its logits equal
     transformers' own merge of the exported adapter (PEFT merge_and_unload,
     weights rounded to bf16 as the merge stores them) to fp32 rounding, and
     mxlora's unmerged logits to the bf16 rounding of the weights.
  3. merged MXFP4: `mxlora merge --dtype mxfp4 --layout all`; transformers
     loads the root (Mxfp4Config(dequantize=True)) and mxlora runs the root
     and original/: the three logits agree to fp32 rounding; against the
     unmerged adapter they differ by what 4-bit rounding of the merged
     experts costs (printed next to the report's delta error).
  4. GGUF: `mxlora export --format gguf` (split and fused gate/up) read back
     by gguf.GGUFReader: metadata (types and values) and every tensor against
     the PEFT export of step 1, with llama.cpp's orientation (A [E, r, in],
     B [E, out, r]) and the HF gate/up rows de-interleaved.

Exit status 0 when every check holds.
Usage: python3 tools/check_export.py BUILD/mxlora MODEL_DIR ADAPTER.mxla [WORK_DIR]
Needs: torch, transformers, peft, safetensors, gguf, numpy (pip install).
"""
import json
import os
import subprocess
import sys
import tempfile

import gguf
import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import GptOssForCausalLM, Mxfp4Config

PROMPT = "What is the mxlora mascot? Tell me about mxlora."
FAILED = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILED.append(what)


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def mxlora_logits(mx, model, adapter, work, name):
    out = os.path.join(work, name + ".npy")
    args = [mx, "generate", "--model", model, "--prompt", PROMPT, "--max-tokens", "1",
            "--temperature", "0", "--backend", "ref", "--dump-logits", out]
    if adapter:
        args += ["--adapter", adapter]
    run(*args)
    return torch.from_numpy(np.load(out))


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids[None], use_cache=False).logits[0].float()


def load_hf(folder, mxfp4=True):
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if mxfp4:
        kw["quantization_config"] = Mxfp4Config(dequantize=True)
    m = GptOssForCausalLM.from_pretrained(folder, **kw)
    m.eval()
    return m


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def check_peft(mx, model_dir, adapter, work, ids, ours):
    peft_dir = os.path.join(work, "peft")
    run(mx, "export", adapter, "--format", "peft", "--out", peft_dir)
    base = load_hf(model_dir)
    pm = PeftModel.from_pretrained(base, peft_dir)
    pm.eval()
    saved = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    loaded = {k: v for k, v in pm.state_dict().items() if "lora_" in k}
    check(len(saved) == len(loaded), f"PEFT loads all {len(saved)} tensors of the export "
                                      f"({len(loaded)} LoRA tensors in the model)")
    r = rel(hf_logits(pm, ids), ours)
    check(r < 1e-5, f"PEFT on the exported adapter: logits {r:.2e} relative to mxlora's")
    return pm, peft_dir


def check_merged_bf16(mx, model_dir, adapter, work, ids, ours, pm):
    out = os.path.join(work, "merged-bf16")
    run(mx, "merge", "--model", model_dir, "--adapter", adapter, "--out", out, "--dtype", "bf16")
    with open(os.path.join(out, "config.json")) as f:
        check("quantization_config" not in json.load(f), "merged bf16 config.json has no "
                                                          "quantization_config")
    merged = load_hf(out, mxfp4=False)
    got = hf_logits(merged, ids)
    unmerged = hf_logits(pm, ids)
    # transformers' own merge, stored in bf16 as ours is
    ref = pm.merge_and_unload()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    want = hf_logits(ref, ids)
    r = rel(got, want)
    check(r < 1e-4, f"transformers on the merged bf16 folder vs PEFT merge_and_unload "
                    f"(bf16 weights): {r:.2e}")
    # Storing W + dW in bf16 moves the logits by itself (and can flip a router's
    # top-k choice on a tiny random model): transformers' bf16 merge moves them
    # by the same amount against PEFT unmerged as ours does against mxlora.
    r, r_peft = rel(got, ours), rel(want, unmerged)
    check(abs(r - r_peft) <= 0.1 * r_peft + 1e-4,
          f"merged bf16 vs mxlora's unmerged logits: {r:.2e}, the bf16 storage's own effect "
          f"(PEFT merged in bf16 vs PEFT unmerged: {r_peft:.2e})")


def check_merged_mxfp4(mx, model_dir, adapter, work, ids, ours):
    out = os.path.join(work, "merged-mxfp4")
    text = run(mx, "merge", "--model", model_dir, "--adapter", adapter, "--out", out,
               "--dtype", "mxfp4", "--layout", "all")
    print("\n".join("      " + line for line in text.splitlines() if line.startswith(("overall", "WARN"))))
    with open(os.path.join(out, "config.json")) as f:
        q = json.load(f).get("quantization_config", {})
    check(q.get("quant_method") == "mxfp4", "merged MXFP4 config.json has quantization_config")
    hf = hf_logits(load_hf(out), ids)
    root = mxlora_logits(mx, out, None, work, "mx_root")
    orig = mxlora_logits(mx, os.path.join(out, "original"), None, work, "mx_original")
    check(rel(root, hf) < 1e-5, f"merged MXFP4: mxlora (root) vs transformers {rel(root, hf):.2e}")
    check(rel(orig, hf) < 1e-5, f"merged MXFP4: mxlora (original/) vs transformers "
                                f"{rel(orig, hf):.2e}")
    with open(os.path.join(out, "mxlora_merge_report.json")) as f:
        summary = json.load(f)["summary"]
    r = rel(root, ours)
    print(f"      merged MXFP4 vs unmerged adapter: logits {r:.2e} relative; the report: "
          f"{100 * summary['delta_kept']:.1f}% of the expert delta kept, delta error "
          f"{100 * summary['delta_rel_error']:.1f}%, weights' rel. RMS error "
          f"{summary['rel_rms_error']:.4f}")
    check(r < max(0.05, 2 * summary["rel_rms_error"]),
          "merged MXFP4 logits stay within the re-quantization error of the unmerged ones")


def check_gguf(mx, adapter, work, peft_dir):
    saved = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    with open(os.path.join(peft_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scaling = alpha / r ** 0.5 if cfg.get("use_rslora") else alpha / r
    experts = {p.split(".")[0] + "." + p.split(".")[-1] for p in cfg["target_parameters"] or []}
    for fused in (False, True):
        path = os.path.join(work, "fused.gguf" if fused else "split.gguf")
        run(mx, "export", adapter, "--format", "gguf", "--out", path, "--gate-up",
            "fused" if fused else "split")
        rd = gguf.GGUFReader(path)
        f = {k: v for k, v in rd.fields.items()}
        meta = {k: f[k].contents() for k in ("general.architecture", "general.type", "adapter.type",
                                            "adapter.lora.alpha")}
        check(meta["general.architecture"] == "gpt-oss" and meta["general.type"] == "adapter"
              and meta["adapter.type"] == "lora", f"GGUF metadata {meta}")
        check(f["adapter.lora.alpha"].types == [gguf.GGUFValueType.FLOAT32]
              and abs(meta["adapter.lora.alpha"] / r - scaling) < 1e-6,
              f"adapter.lora.alpha is an f32 with alpha / r = {scaling}")
        tensors = {t.name: t for t in rd.tensors}
        want = {}
        for key, v in saved.items():
            parts = key.split(".")
            layer = int(parts[parts.index("layers") + 1])
            ab = "a" if ".lora_A." in key else "b"
            if ".self_attn." in key:
                proj = parts[parts.index("self_attn") + 1]
                name = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
                        "o_proj": "attn_output"}[proj]
                want[f"blk.{layer}.{name}.weight.lora_{ab}"] = v.numpy()
                continue
            nested = ".base_layer." in key
            both = f"{layer}.gate_up_proj" in experts and f"{layer}.down_proj" in experts
            target = "gate_up" if nested or (not both and f"{layer}.gate_up_proj" in experts) else "down"
            E = v.shape[0] // r if ab == "a" else v.shape[1] // r
            if ab == "a":
                x = v.reshape(E, r, -1).numpy()  # [E, r, in]
            else:
                x = v.reshape(v.shape[0], r, E).permute(2, 0, 1).numpy()  # [E, out, r]
            if target == "down":
                want[f"blk.{layer}.ffn_down_exps.weight.lora_{ab}"] = x
            elif ab == "a":
                for n in (["ffn_gate_up_exps"] if fused else ["ffn_gate_exps", "ffn_up_exps"]):
                    want[f"blk.{layer}.{n}.weight.lora_a"] = x
            elif fused:
                want[f"blk.{layer}.ffn_gate_up_exps.weight.lora_b"] = np.concatenate(
                    [x[:, ::2], x[:, 1::2]], axis=1)
            else:
                want[f"blk.{layer}.ffn_gate_exps.weight.lora_b"] = x[:, ::2]
                want[f"blk.{layer}.ffn_up_exps.weight.lora_b"] = x[:, 1::2]
        check(sorted(want) == sorted(tensors), f"GGUF ({'fused' if fused else 'split'}): "
              f"{len(tensors)} tensors, the names llama.cpp's gpt-oss expects")
        bad = [n for n in want if n in tensors and not (
            tensors[n].data.shape == want[n].shape and np.array_equal(tensors[n].data, want[n]))]
        check(not bad, f"GGUF ({'fused' if fused else 'split'}): every tensor equals the PEFT "
                       f"export, transposes and gate/up order accounted for {bad[:3]}")


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__)
        return 2
    mx, model_dir, adapter = (os.path.abspath(a) for a in sys.argv[1:4])
    work = sys.argv[4] if len(sys.argv) == 5 else tempfile.mkdtemp(prefix="mxl_check_export_")
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(2)
    ids = torch.tensor(json.loads(run(mx, "tokenize", "--model", model_dir, PROMPT)))
    ours = mxlora_logits(mx, model_dir, adapter, work, "mx_adapter")
    assert ours.shape[0] == ids.shape[0], (ours.shape, ids.shape)
    pm, peft_dir = check_peft(mx, model_dir, adapter, work, ids, ours)
    check_merged_bf16(mx, model_dir, adapter, work, ids, ours, pm)
    check_merged_mxfp4(mx, model_dir, adapter, work, ids, ours)
    check_gguf(mx, adapter, work, peft_dir)
    print(f"\n{'all checks passed' if not FAILED else str(len(FAILED)) + ' checks failed'} "
          f"(work folder {work})")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
