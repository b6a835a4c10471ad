#!/usr/bin/env python3
"""Writes tests/fixtures/parity/peft_train.safetensors: transformers + PEFT
as the outside oracle for mxl_train_step's loss and LoRA gradients and for
the AdamW step (read by tests/test_peft_parity.c).

The base is a tiny checkpoint written by `mxlora tiny` (the C test writes it
again with mxl_tiny_write and checks the sha256 of model.safetensors): the
test preset with hidden 64, intermediate 96, 6 query heads on 2 KV heads and
5 experts (top-2), so that no two LoRA targets share a shape (q out 192,
k/v out 64, o in 192, gate_up in 64 out 192, down in 96) and the rank
differs from the expert count (the expert B re-indexing is visible).
transformers loads it on the CPU in fp32 (eager attention, MXFP4 experts
dequantized by transformers) and PEFT adapts every layer:

    LoraConfig(r=2, lora_alpha=3, lora_dropout=0,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
               target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])

Every LoRA A and B is then set to seeded uniform values (A in ±2/√in, B in
±0.5: B non-zero too, so that A gets a gradient). The first seed from
INIT_SEED whose smallest router top-k gap (k-th minus (k+1)-th logit, any
token, any layer) is at least MIN_GAP = 0.02 is used, so that the C test's
CPU backend, which rounds GEMM inputs to bf16, routes every token the same
way (with a gap of 0.002 it flipped one and its gradients moved by 25%).
A batch of 2 sequences of 12 tokens (longer than
the window of 8) with labels = the tokens, some set to -100; the loss is
the mean cross-entropy over the unmasked next-token labels, computed here
from the logits (logits[:, t] predicts labels[:, t+1]). backward(), then one
torch.optim.AdamW step (lr, betas, eps, weight_decay all non-default).

Everything is saved in mxlora's layout and naming (adapters/lora.h):
  layers.<l>.attn.<q|k|v|o>.lora_A [R, in], .lora_B [out, R]
  layers.<l>.experts.<gate_up|down>.lora_A [E, R, in], .lora_B [E, out, R]
PEFT's expert A [E·R, in] is the same bytes; its expert B [out, R·E] holds
expert e's rank-k column at k·E + e. The mapping is verified here: for every
expert e, PEFT's own get_delta_weight()[e] (its [in, out] orientation for
the transposed GptOss experts) must equal scaling · (B_e A_e)ᵀ computed from
the mapped tensors.

Fixture tensors (float32; int32 for ids):
  input_ids [2, 12], labels [2, 12] (-100 = masked)
  init.<name>     the LoRA values before the step
  grad.<name>     d loss / d parameter
  updated.<name>  the values after the AdamW step
  loss [1]        (also in the metadata, full precision)
  logits [2, 12, V]  the adapted model's logits (for mxl_forward's LoRA overlay)
Metadata: preset, seed, sets, sha256, rank, alpha, scaling, lr, beta1, beta2,
eps, weight_decay, loss, router_gap, init_seed, versions.

Usage:
  python3 tools/gen_peft_fixtures.py BUILD/mxlora [output dir]
"""
import os
import sys
import tempfile

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_forward_fixtures import (RouterGaps, load, save_fixture, sha256_file,  # noqa: E402
                                  write_checkpoint)

SEED = 21
SETS = ["hidden=64", "intermediate=96", "heads=6", "kv_heads=2", "experts=5",
        "experts_per_token=2"]
RANK, ALPHA = 2, 3.0
B, T = 2, 12
LR, BETA1, BETA2, EPS, WD = 0.01, 0.8, 0.95, 1e-3, 0.1
INIT_SEED = 5
MIN_GAP = 0.02  # smallest router top-k gap accepted (see main)
MAX_TOKEN = 800
ATTN = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o"}


def our_name(peft_name):
    """PEFT parameter name -> (our tensor name, kind): kind 'attn', 'expert_A'
    or 'expert_B'. Nested wrappers: the one targeting gate_up_proj (listed
    first) is the inner `base_layer`; the parameter_name is checked below."""
    parts = peft_name.split(".")
    layer = int(parts[parts.index("layers") + 1])
    ab = "A" if ".lora_A." in peft_name else "B"
    if ".self_attn." in peft_name:
        proj = parts[parts.index("self_attn") + 1]
        return f"layers.{layer}.attn.{ATTN[proj]}.lora_{ab}", "attn"
    target = "gate_up" if ".experts.base_layer.lora_" in peft_name else "down"
    return f"layers.{layer}.experts.{target}.lora_{ab}", "expert_" + ab


def to_ours(p, kind, E, R):
    """A copy (never a view: the optimizer later updates p in place)."""
    p = p.detach().float().clone()
    if kind == "expert_A":  # [E·R, in] -> [E, R, in]
        return p.reshape(E, R, p.shape[-1])
    if kind == "expert_B":  # [out, R·E], column k·E + e -> [E, out, R]
        return p.reshape(p.shape[0], R, E).permute(2, 0, 1)
    return p


def check_expert_mapping(pm, E, R):
    """PEFT's merged delta of every expert equals scaling · B_e A_e from our
    layout (transposed to PEFT's [in, out] orientation)."""
    checked = 0
    for name, module in pm.named_modules():
        if not isinstance(module, peft.tuners.lora.layer.ParamWrapper):
            continue
        target = {"gate_up_proj": "gate_up", "down_proj": "down"}[module.parameter_name]
        inner = isinstance(module.base_layer, peft.tuners.lora.layer.ParamWrapper)
        # The wrapper for gate_up is the inner one (named ...experts.base_layer).
        assert (target == "gate_up") == name.endswith("experts.base_layer"), name
        assert (target == "down") == inner, name
        with torch.no_grad():
            delta = module.get_delta_weight("default")  # [E, in, out]
            A = to_ours(module.lora_A["default"].weight, "expert_A", E, R)
            Bm = to_ours(module.lora_B["default"].weight, "expert_B", E, R)
            scale = module.scaling["default"]
            for e in range(E):
                ours = scale * (Bm[e] @ A[e])  # [out, in]
                assert torch.allclose(delta[e], ours.T, rtol=1e-6, atol=1e-7), (name, e)
                checked += 1
    assert checked == 2 * E * len(pm.base_model.model.model.layers), checked
    return checked


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    mxlora = os.path.abspath(sys.argv[1])
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "parity")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(mxlora, tmp, SEED, SETS)
        digest = sha256_file(os.path.join(tmp, "model.safetensors"))
        model = load(tmp)
    cfg = model.config
    E, L = cfg.num_local_experts, cfg.num_hidden_layers
    assert T > cfg.sliding_window
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                        target_modules=list(ATTN),
                        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    pm = get_peft_model(model, config)
    pm.eval()  # no dropout anywhere; gradients still flow

    params = dict(sorted((n, p) for n, p in pm.named_parameters() if p.requires_grad))
    assert len(params) == L * 12, sorted(params)
    gt = torch.Generator().manual_seed(1000 + SEED)
    input_ids = torch.randint(0, MAX_TOKEN, (B, T), generator=gt)
    labels = input_ids.clone()
    labels[0, 3] = labels[0, 7] = labels[0, 8] = -100
    labels[1, 1] = labels[1, 2] = labels[1, 10] = -100
    labels[:, 0] = -100  # never a target (nothing predicts it); masked for clarity

    # Seeded non-zero A and B, in a fixed (sorted-name) order. The first seed
    # from INIT_SEED on whose routing has no near tie is used: the C test's
    # CPU backend rounds GEMM inputs to bf16 (router logits move by ~1e-3),
    # and a flipped top-k choice would make its comparison meaningless.
    for init_seed in range(INIT_SEED, INIT_SEED + 100):
        g = torch.Generator().manual_seed(init_seed)
        with torch.no_grad():
            for n, p in params.items():
                bound = 0.5 if ".lora_B." in n else 2.0 / p.shape[-1] ** 0.5
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
        gaps = RouterGaps(pm.base_model.model)
        with torch.no_grad():
            pm(input_ids=input_ids, use_cache=False)
        gaps.remove()
        if gaps.gap >= MIN_GAP:
            break
    else:
        raise SystemExit(f"no LoRA seed gives router top-k gaps of {MIN_GAP}")
    mapped = check_expert_mapping(pm, E, RANK)

    gaps = RouterGaps(pm.base_model.model)
    logits = pm(input_ids=input_ids, use_cache=False).logits  # [B, T, V]
    gaps.remove()
    assert gaps.gap >= MIN_GAP
    pred = logits[:, :-1].reshape(-1, logits.shape[-1])
    tgt = labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(pred, tgt, ignore_index=-100, reduction="mean")
    loss.backward()

    tensors = {"input_ids": input_ids.to(torch.int32).numpy(),
               "labels": labels.to(torch.int32).numpy(),
               "loss": np.array([loss.item()], dtype=np.float32),
               "logits": logits.detach().float().clone().numpy()}
    kinds = {}
    for n, p in params.items():
        ours, kind = our_name(n)
        assert ours not in kinds, ours
        kinds[ours] = (n, kind)
        assert p.grad is not None and float(p.grad.abs().max()) > 0, f"{n} has no gradient"
        tensors["init." + ours] = to_ours(p, kind, E, RANK).contiguous().numpy()
        tensors["grad." + ours] = to_ours(p.grad, kind, E, RANK).contiguous().numpy()

    opt = torch.optim.AdamW(list(params.values()), lr=LR, betas=(BETA1, BETA2), eps=EPS,
                            weight_decay=WD)
    opt.step()
    for ours, (n, kind) in kinds.items():
        tensors["updated." + ours] = to_ours(params[n], kind, E, RANK).contiguous().numpy()

    meta = {
        "preset": "test", "seed": str(SEED), "sets": ";".join(SETS), "sha256": digest,
        "rank": str(RANK), "alpha": repr(ALPHA), "scaling": repr(ALPHA / RANK),
        "lr": repr(LR), "beta1": repr(BETA1), "beta2": repr(BETA2), "eps": repr(EPS),
        "weight_decay": repr(WD), "loss": repr(loss.item()), "batch": str(B), "seq_len": str(T),
        "layers": str(L), "experts": str(E), "router_gap": f"{gaps.gap:.3g}",
        "init_seed": str(init_seed),
        "mapping_checked": f"{mapped} expert deltas",
        "transformers": transformers.__version__, "peft": peft.__version__,
        "torch": torch.__version__, "generator": "tools/gen_peft_fixtures.py",
    }
    path = os.path.join(out_dir, "peft_train.safetensors")
    save_fixture(path, tensors, meta)
    print(f"{path}: loss {loss.item():.7f}, {len(kinds)} LoRA tensors, "
          f"{sum(p.numel() for p in params.values())} parameters, expert mapping checked on "
          f"{mapped} deltas, smallest router top-k gap {gaps.gap:.3g}, "
          f"{os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
