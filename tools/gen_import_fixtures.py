#!/usr/bin/env python3
"""Writes tests/fixtures/import/: adapters trained by transformers + PEFT in
the three gpt-oss expert layouts, and PEFT's logits with each, for
tests/test_import_parity.c (mxlora import must reproduce them).

The base is the tiny checkpoint of tools/gen_peft_fixtures.py (`mxlora tiny`
test preset, seed 21, hidden 64, intermediate 96, 6 query heads on 2 KV
heads, 5 experts, top-2; the C test writes it again and checks its sha256),
loaded by transformers in fp32 (MXFP4 experts dequantized). Three models:

  fused       GptOssForCausalLM as it is; LoraConfig(target_modules q/k/v/o,
              target_parameters gate_up_proj and down_proj): PEFT's own
              layout for gpt-oss (one fused pair per layer and projection)
  unsloth     the experts replaced by Unsloth's module: per-expert nn.Linear
              in gate_up_projs.N (interleaved gate/up rows, as the base) and
              down_projs.N; LoRA on those modules and on q/k/v/o; rsLoRA
  per_expert  the experts replaced by one module per expert with gate_proj,
              up_proj and down_proj (gate = the even HF rows, up = the odd);
              rank_pattern {"down_proj": 2} and alpha_pattern
              {"gate_proj": 6} on top of r 4, alpha 8

Each replacement is checked first: without LoRA its logits equal the stock
model's (max |diff| below 1e-5). Then each model is trained for 4 AdamW steps
(lr 0.02) on a random batch, so that A and B are both non-zero, and saved
with save_pretrained; its logits on one sequence of 12 tokens (longer than
the window of 8) are the expected values.

Output:
  tests/fixtures/import/<variant>/adapter_config.json, adapter_model.safetensors
  tests/fixtures/import/logits.safetensors: input_ids [T] (int32),
    logits.<variant> [T, V] (float32); metadata preset, seed, sets, sha256,
    router_gap and the package versions.

Usage: python3 tools/gen_import_fixtures.py BUILD/mxlora [output dir]
"""
import json
import os
import sys
import tempfile

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_forward_fixtures import RouterGaps, load, save_fixture, sha256_file, write_checkpoint  # noqa: E402

SEED = 21
SETS = ["hidden=64", "intermediate=96", "heads=6", "kv_heads=2", "experts=5",
        "experts_per_token=2"]
T = 12
STEPS, LR = 4, 0.02
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]


def apply_gate(gate, up, alpha, limit):
    gate = gate.clamp(min=None, max=limit)
    up = up.clamp(min=-limit, max=limit)
    return (up + 1) * (gate * torch.sigmoid(gate * alpha))


def route(hidden, router_indices, routing_weights, n_experts, expert_fn):
    """The stock experts' loop: each hit expert on its tokens, weighted, summed."""
    out = torch.zeros_like(hidden)
    for e in range(n_experts):
        token_idx, top_k_pos = torch.where(router_indices == e)
        if token_idx.numel() == 0:
            continue
        y = expert_fn(e, hidden[token_idx])
        out.index_add_(0, token_idx, y * routing_weights[token_idx, top_k_pos, None])
    return out


class UnslothExperts(nn.Module):
    """Unsloth's gpt-oss experts: gate_up_projs.N / down_projs.N nn.Linear."""

    def __init__(self, stock):
        super().__init__()
        E, H, I2 = stock.gate_up_proj.shape
        self.num_experts, self.alpha, self.limit = E, stock.alpha, stock.limit
        self.gate_up_projs = nn.ModuleList(nn.Linear(H, I2) for _ in range(E))
        self.down_projs = nn.ModuleList(nn.Linear(I2 // 2, H) for _ in range(E))
        with torch.no_grad():
            for e in range(E):
                self.gate_up_projs[e].weight.copy_(stock.gate_up_proj[e].T)
                self.gate_up_projs[e].bias.copy_(stock.gate_up_proj_bias[e])
                self.down_projs[e].weight.copy_(stock.down_proj[e].T)
                self.down_projs[e].bias.copy_(stock.down_proj_bias[e])

    def forward(self, hidden_states, router_indices=None, routing_weights=None):
        def expert(e, x):
            gu = self.gate_up_projs[e](x)
            return self.down_projs[e](apply_gate(gu[..., ::2], gu[..., 1::2], self.alpha, self.limit))
        return route(hidden_states, router_indices, routing_weights, self.num_experts, expert)


class Expert(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(H, I), nn.Linear(H, I), nn.Linear(I, H)


class PerExpertExperts(nn.ModuleList):
    """One module per expert, children "0", "1", ...: experts.N.gate_proj."""

    def __init__(self, stock):
        E, H, I2 = stock.gate_up_proj.shape
        super().__init__(Expert(H, I2 // 2) for _ in range(E))
        self.num_experts, self.alpha, self.limit = E, stock.alpha, stock.limit
        with torch.no_grad():
            for e in range(E):
                w, b = stock.gate_up_proj[e], stock.gate_up_proj_bias[e]
                self[e].gate_proj.weight.copy_(w[:, ::2].T)
                self[e].gate_proj.bias.copy_(b[::2])
                self[e].up_proj.weight.copy_(w[:, 1::2].T)
                self[e].up_proj.bias.copy_(b[1::2])
                self[e].down_proj.weight.copy_(stock.down_proj[e].T)
                self[e].down_proj.bias.copy_(stock.down_proj_bias[e])

    def forward(self, hidden_states, router_indices=None, routing_weights=None):
        def expert(e, x):
            m = self[e]
            return m.down_proj(apply_gate(m.gate_proj(x), m.up_proj(x), self.alpha, self.limit))
        return route(hidden_states, router_indices, routing_weights, self.num_experts, expert)


VARIANTS = {
    "fused": (None, dict(r=4, lora_alpha=8, target_modules=ATTN,
                         target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])),
    "unsloth": (UnslothExperts, dict(r=4, lora_alpha=8, use_rslora=True,
                                     target_modules=r".*\.(q_proj|k_proj|v_proj|o_proj|"
                                                    r"gate_up_projs\.\d+|down_projs\.\d+)$")),
    "per_expert": (PerExpertExperts, dict(r=4, lora_alpha=8,
                                          target_modules=ATTN + ["gate_proj", "up_proj", "down_proj"],
                                          rank_pattern={"down_proj": 2},
                                          alpha_pattern={"gate_proj": 6})),
}


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids[None], use_cache=False).logits[0].float()


def train(pm, batch):
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=LR)
    for _ in range(STEPS):
        logits = pm(input_ids=batch, use_cache=False).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                           batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    mxlora = os.path.abspath(sys.argv[1])
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "import")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    tensors, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(mxlora, tmp, SEED, SETS)
        digest = sha256_file(os.path.join(tmp, "model.safetensors"))
        g = torch.Generator().manual_seed(100 + SEED)
        ids = torch.randint(0, 800, (T,), generator=g)
        batch = torch.randint(0, 800, (2, T), generator=g)
        stock = logits_of(load(tmp), ids)
        gap = 1e9
        for name, (module, cfg) in VARIANTS.items():
            model = load(tmp)
            if module:
                for layer in model.model.layers:
                    layer.mlp.experts = module(layer.mlp.experts)
                diff = float((logits_of(model, ids) - stock).abs().max())
                assert diff < 1e-5, f"{name}: the replaced experts differ from the stock ones by {diff}"
            torch.manual_seed(SEED)
            pm = get_peft_model(model, LoraConfig(lora_dropout=0.0, **cfg))
            loss = train(pm, batch)
            pm.eval()
            gaps = RouterGaps(pm.base_model.model)
            tensors["logits." + name] = logits_of(pm, ids).numpy()
            gaps.remove()
            gap = min(gap, gaps.gap)
            vdir = os.path.join(out_dir, name)
            pm.save_pretrained(vdir)
            readme = os.path.join(vdir, "README.md")
            if os.path.exists(readme):
                os.remove(readme)
            # the temporary folder's name is no use to anyone: null, as PEFT
            # writes for a model it did not load by name
            cfg_path = os.path.join(vdir, "adapter_config.json")
            with open(cfg_path) as f:
                saved = json.load(f)
            saved["base_model_name_or_path"] = None
            with open(cfg_path, "w") as f:
                json.dump(saved, f, indent=2, sort_keys=True)
            print(f"{name}: loss after {STEPS} steps {loss:.4f}, r {saved['r']}, "
                  f"{len(os.listdir(vdir))} files")
    assert gap > 1e-3, f"a router top-k choice is within {gap:.2g}: pick another seed"
    tensors["input_ids"] = ids.to(torch.int32).numpy()
    meta.update(preset="test", seed=str(SEED), sets=";".join(SETS), sha256=digest,
                router_gap=f"{gap:.6g}", torch=torch.__version__,
                transformers=transformers.__version__, peft=peft.__version__)
    save_fixture(os.path.join(out_dir, "logits.safetensors"), tensors, meta)
    print(f"wrote {out_dir} (router gap {gap:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
