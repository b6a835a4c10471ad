#!/usr/bin/env python3
"""Writes tests/fixtures/parity/forward_*.safetensors: Hugging Face
transformers' GptOssForCausalLM as the outside oracle for mxl_forward (read
by tests/test_hf_parity.c).

For each configuration below, `mxlora tiny` writes the checkpoint (HF root
only; the C test regenerates it with mxl_tiny_write and checks the sha256 of
model.safetensors recorded here). transformers loads it on the CPU in fp32,
eager attention, MXFP4 experts dequantized by transformers itself
(Mxfp4Config(dequantize=True)), and runs one sequence of fixed token ids,
longer than the sliding window, with output_hidden_states=True.

What transformers returns in `hidden_states` (checked here, not assumed):
L+1 tensors; entry 0 is the embedding output, entry l (1 <= l < L) the
output of decoder layer l-1, and the LAST entry is `last_hidden_state`, i.e.
the output of the final RMSNorm (transformers' capture_outputs replaces the
last layer's output by it). mxl_forward's `hidden` holds the residual stream
before the final norm in its last slot, so the fixture also records the last
decoder layer's raw output (a forward hook on it) and the final norm's
weight; the script asserts that hidden_states[-1] equals model.norm(that raw
output) and records the finding in the metadata ("last_hidden": "normed").

Fixture tensors (float32 unless said):
  tokens       int32 [N]
  logits       [N, V]           every position
  hidden       [L+1, N, H]      transformers' hidden_states, as returned
  last_layer   [N, H]           decoder layer L-1's output (before the norm)
  norm_weight  [H]              model.norm.weight
Metadata: preset, seed, sets (";"-joined --set items), sha256 (of the
checkpoint's model.safetensors), last_hidden ("normed" or "raw"), router_gap
(the smallest gap between the k-th and (k+1)-th router logit of any token in
any layer: no top-k choice can flip between implementations), the attention
and experts implementations transformers used, versions.

Usage:
  python3 tools/gen_forward_fixtures.py BUILD/mxlora [output dir]
(output dir defaults to tests/fixtures/parity). Needs torch, transformers,
safetensors; CPU only.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from transformers import GptOssForCausalLM, Mxfp4Config

# name, seed, --set items, number of tokens. Tokens are drawn below the
# smallest vocabulary the metal layout keeps (ordinary tokens + specials),
# so the C test can feed the same ids to all three layouts.
CONFIGS = [
    # the test preset: 3 layers, H 128, I 128, 4 experts top-2, 4:2 heads,
    # head_dim 32, window 8
    ("test", 11, [], 20),
    # other shapes: 4 layers (the last one full attention), 6 query heads on
    # 3 KV heads (h/2 and h%3 differ), 6 experts top-3, window 5, H 96, I 64
    ("shapes", 12, ["layers=4", "heads=6", "kv_heads=3", "experts=6", "experts_per_token=3",
                    "window=5", "hidden=96", "intermediate=64"], 16),
    # head_dim 64, multi-query (2 heads on 1 KV head), one expert per token,
    # window 3, another rope_theta and a low swiglu_limit so the clamps bite
    ("mqa", 13, ["layers=2", "heads=2", "kv_heads=1", "head_dim=64", "experts=5",
                 "experts_per_token=1", "window=3", "hidden=64", "intermediate=96",
                 "rope_theta=10000", "swiglu_limit=3"], 12),
    # edges: head_dim 16, a window of 1 (sliding layers see only themselves),
    # every expert used by every token (k = E = 3), swiglu_limit 0.5 (most
    # units clamped), rope_theta 5e5
    ("edge", 14, ["hidden=64", "intermediate=64", "head_dim=16", "window=1", "experts=3",
                  "experts_per_token=3", "swiglu_limit=0.5", "rope_theta=500000"], 10),
]
MAX_TOKEN = 800  # < 866 ordinary tokens of the built-in tiny vocabulary


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_fixture(path, tensors, metadata):
    """A safetensors file with a sorted, compact header, so that rerunning the
    script gives identical bytes (safetensors' own writer orders the metadata
    by hash). The file is then read back with safetensors' reader and every
    tensor compared, so the format is checked by the library itself."""
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    back = load_file(path)
    assert sorted(back) == sorted(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and np.array_equal(back[name], a), name


class RouterGaps:
    """Forward hooks on every router: the smallest gap between the k-th and
    the (k+1)-th largest router logit over all tokens and layers. A gap far
    above fp32 rounding means no top-k choice can flip between transformers
    and mxlora, so the comparison is about the math, not a coin toss."""

    def __init__(self, model):
        self.k = model.config.num_experts_per_tok
        self.gap = float("inf")
        self.hooks = [layer.mlp.router.register_forward_hook(self.record)
                      for layer in model.model.layers]

    def record(self, module, args, out):
        logits = (out[0] if isinstance(out, tuple) else out).detach()
        if self.k < logits.shape[-1]:
            top = torch.topk(logits, self.k + 1, dim=-1).values
            self.gap = min(self.gap, float((top[..., self.k - 1] - top[..., self.k]).min()))

    def remove(self):
        for h in self.hooks:
            h.remove()


def make_tokens(seed, n):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randint(0, MAX_TOKEN, (n,), generator=g, dtype=torch.int64)


def write_checkpoint(mxlora, folder, seed, sets):
    cmd = [mxlora, "tiny", folder, "--preset", "test", "--seed", str(seed), "--layout", "hf"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")


def load(folder):
    model = GptOssForCausalLM.from_pretrained(
        folder, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True),
        attn_implementation="eager")
    model.eval()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, f"{name} is {p.dtype}"
    return model


def run(model, tokens):
    captured = {}
    gaps = RouterGaps(model)
    last = model.model.layers[-1]
    hook = last.register_forward_hook(
        lambda mod, args, out: captured.__setitem__("x", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        out = model(tokens[None], output_hidden_states=True, use_cache=False)
    hook.remove()
    gaps.remove()
    # 1e-2: also far above the bf16 rounding of the C test's CPU backend.
    assert gaps.gap > 1e-2, f"a router top-k choice is within {gaps.gap:.2g}: pick another seed"
    L = model.config.num_hidden_layers
    hs = out.hidden_states
    assert len(hs) == L + 1, f"{len(hs)} hidden states for {L} layers"
    raw = captured["x"][0]
    with torch.no_grad():
        normed = model.model.norm(raw)
    if torch.equal(hs[-1][0], normed):
        last_hidden = "normed"
    elif torch.equal(hs[-1][0], raw):
        last_hidden = "raw"
    else:
        raise SystemExit("hidden_states[-1] is neither the last layer's output nor its norm")
    f32 = lambda t: t.detach().float().numpy()
    return {
        "tokens": tokens.to(torch.int32).numpy(),
        "logits": f32(out.logits[0]),
        "hidden": f32(torch.stack([h[0] for h in hs])),
        "last_layer": f32(raw),
        "norm_weight": f32(model.model.norm.weight),
    }, last_hidden, gaps.gap


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    mxlora = os.path.abspath(sys.argv[1])
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "parity")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)  # deterministic reductions
    for name, seed, sets, n in CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(mxlora, tmp, seed, sets)
            digest = sha256_file(os.path.join(tmp, "model.safetensors"))
            model = load(tmp)
            cfg = model.config
            assert n > cfg.sliding_window, "the sequence must be longer than the window"
            tensors, last_hidden, gap = run(model, make_tokens(seed, n))
        meta = {
            "preset": "test", "seed": str(seed), "sets": ";".join(sets), "sha256": digest,
            "last_hidden": last_hidden, "router_gap": f"{gap:.3g}",
            "layers": str(cfg.num_hidden_layers), "hidden_size": str(cfg.hidden_size),
            "vocab_size": str(cfg.vocab_size), "tokens": str(n),
            "attention": cfg._attn_implementation,
            "experts": str(getattr(cfg, "_experts_implementation", "eager")),
            "transformers": transformers.__version__, "torch": torch.__version__,
            "generator": "tools/gen_forward_fixtures.py",
        }
        path = os.path.join(out_dir, f"forward_{name}.safetensors")
        save_fixture(path, tensors, meta)
        print(f"{path}: {n} tokens, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
              f"vocab {cfg.vocab_size}, last hidden state {last_hidden}, smallest router "
              f"top-k gap {gap:.3g}, "
              f"{os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
