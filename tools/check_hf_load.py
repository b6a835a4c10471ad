#!/usr/bin/env python3
"""Outside proof that `mxlora tiny` writes the published gpt-oss layouts.

    build/mxlora tiny /tmp/tiny --seed 1
    python3 tools/check_hf_load.py /tmp/tiny

1. Hugging Face transformers loads the root (GptOssForCausalLM, CPU, fp32,
   MXFP4 experts dequantized by transformers itself) with no missing,
   unexpected or mismatched keys, its tokenizer and generation config load,
   and a forward pass gives finite logits; the RMS of the hidden state after
   every layer is printed (the initialisation should keep it O(1)).
2. original/ is read by a small numpy reader written from docs/gpt-oss.md (§3:
   safetensors parsing, dtypes.json, fused qkv split, MXFP4 decode §2.3) and
   every tensor must equal what transformers holds.
3. metal/model.bin is read by a numpy reader written from docs/gpt-oss.md (§4:
   header, 16-byte items, 16 KiB regions, per-expert interleave, q/k pair
   permutation and 0.5/0.25 scale, scales +14) and must equal it too.
Exit status 0 only when everything agrees.
"""
import json
import math
import os
import struct
import sys

import numpy as np

FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


def bf16_to_f32(raw):
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """name -> (dtype string, numpy array of raw values: uint16 for BF16, uint8 for U8)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dt = {"BF16": np.uint16, "U8": np.uint8}[info["dtype"]]
        out[name] = (info["dtype"], np.frombuffer(body[begin:end], dtype=dt).reshape(info["shape"]))
    return out


def read_weights(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(folder, f)))
    return tensors


def mxfp4_decode(blocks, scales, bias=127):
    """blocks [..., G, 16] u8, scales [..., G] u8 -> [..., G*32] float32 (docs/gpt-oss.md §2.3)."""
    lo = FP4[blocks & 0x0F]
    hi = FP4[blocks >> 4]
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    vals = np.ldexp(vals, (scales.astype(np.int32) - bias)[..., None])
    return vals.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def original_as_hf(folder):
    """Reads original/ and returns HF-named float32 arrays (dequantized experts [E, in, out])."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    dtypes = json.load(open(os.path.join(folder, "dtypes.json")))
    raw = read_weights(folder)
    assert set(dtypes) == set(raw), "dtypes.json and the weights list different tensors"
    for name, (dt, _) in raw.items():
        want = "FP4" if name.endswith(".blocks") else "UE8" if name.endswith(".scales") else "BF16"
        assert dtypes[name] == want and dt == ("BF16" if want == "BF16" else "U8"), name
    L, d = cfg["num_hidden_layers"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    assert len(raw) == 15 * L + 3, len(raw)
    bf = lambda n: bf16_to_f32(raw[n][1])
    out = {"model.embed_tokens.weight": bf("embedding.weight"),
           "model.norm.weight": bf("norm.scale"),
           "lm_head.weight": bf("unembedding.weight")}
    for n in range(L):
        p, b = f"model.layers.{n}.", f"block.{n}."
        qkv, qkv_b = bf(b + "attn.qkv.weight"), bf(b + "attn.qkv.bias")
        out[p + "input_layernorm.weight"] = bf(b + "attn.norm.scale")
        out[p + "self_attn.q_proj.weight"], out[p + "self_attn.q_proj.bias"] = qkv[:q], qkv_b[:q]
        out[p + "self_attn.k_proj.weight"], out[p + "self_attn.k_proj.bias"] = qkv[q:q + kv], qkv_b[q:q + kv]
        out[p + "self_attn.v_proj.weight"], out[p + "self_attn.v_proj.bias"] = qkv[q + kv:], qkv_b[q + kv:]
        out[p + "self_attn.sinks"] = bf(b + "attn.sinks")
        out[p + "self_attn.o_proj.weight"] = bf(b + "attn.out.weight")
        out[p + "self_attn.o_proj.bias"] = bf(b + "attn.out.bias")
        out[p + "post_attention_layernorm.weight"] = bf(b + "mlp.norm.scale")
        out[p + "mlp.router.weight"] = bf(b + "mlp.gate.weight")
        out[p + "mlp.router.bias"] = bf(b + "mlp.gate.bias")
        w1 = mxfp4_decode(raw[b + "mlp.mlp1_weight.blocks"][1], raw[b + "mlp.mlp1_weight.scales"][1])
        w2 = mxfp4_decode(raw[b + "mlp.mlp2_weight.blocks"][1], raw[b + "mlp.mlp2_weight.scales"][1])
        out[p + "mlp.experts.gate_up_proj"] = w1.transpose(0, 2, 1)  # HF stores [E, in, out]
        out[p + "mlp.experts.gate_up_proj_bias"] = bf(b + "mlp.mlp1_bias")
        out[p + "mlp.experts.down_proj"] = w2.transpose(0, 2, 1)
        out[p + "mlp.experts.down_proj_bias"] = bf(b + "mlp.mlp2_bias")
    return out


def metal_as_hf(path):
    """Reads metal/model.bin (docs/gpt-oss.md §4) and returns HF-named float32 arrays."""
    data = open(path, "rb").read()
    assert data[:12] == b"GPT-OSS v1.0" and struct.unpack_from("<I", data, 12)[0] == 0, "magic"
    h = struct.unpack_from("<6If4I6f", data, 32)
    (ctx, L, E, k, H, I, limit, d, nh, nkv, window, theta, interp, yoff, yscale, ymult, eps) = h
    ns, nt, rs, ts = struct.unpack_from("<4I", data, 132)
    rows = nt + ns
    page = lambda x: (x + 16383) // 16384 * 16384
    a16 = lambda x: (x + 15) // 16 * 16
    # YaRN values must be what the config gives (docs/gpt-oss.md §4.1).
    ictx, factor = ctx * interp, 1 / interp
    low = -yoff / yscale
    high = low + 1 / yscale
    beta_fast = ictx / (2 * math.pi * theta ** (low / (d / 2)))
    beta_slow = ictx / (2 * math.pi * theta ** (high / (d / 2)))
    assert abs(ymult - (0.1 * math.log(factor) + 1)) < 1e-6
    pos = page(148 + 16 * ns + rs + ts)
    out = {}

    def take(count, dtype):
        nonlocal pos
        pos = a16(pos)
        size = count * np.dtype(dtype).itemsize
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
        pos += size
        return arr

    q, kv = nh * d, nkv * d
    out["model.embed_tokens.weight"] = bf16_to_f32(take(rows * H, np.uint16)).reshape(rows, H)

    def unpermute(rows_qk, scale_q, scale_k):
        """metal q/k rows (pairs interleaved, scaled) -> HF order."""
        t = rows_qk.reshape(nh + nkv, d // 2, 2, -1).transpose(0, 2, 1, 3).reshape(nh + nkv, d, -1)
        t = t.copy()
        t[:nh] /= scale_q
        t[nh:] /= scale_k
        return t.reshape((nh + nkv) * d, -1)

    for n in range(L):
        p = f"model.layers.{n}."
        out[p + "input_layernorm.weight"] = bf16_to_f32(take(H, np.uint16))
        w = bf16_to_f32(take((q + 2 * kv) * H, np.uint16)).reshape(q + 2 * kv, H)
        bias = bf16_to_f32(np.frombuffer(data, np.uint16, q + 2 * kv, pos))  # contiguous after w
        pos += (q + 2 * kv) * 2
        qk = unpermute(w[:q + kv], 0.5, 0.25)
        qk_b = unpermute(bias[:q + kv, None], 0.5, 0.25)[:, 0]
        out[p + "self_attn.q_proj.weight"], out[p + "self_attn.k_proj.weight"] = qk[:q], qk[q:]
        out[p + "self_attn.v_proj.weight"] = w[q + kv:]
        out[p + "self_attn.q_proj.bias"], out[p + "self_attn.k_proj.bias"] = qk_b[:q], qk_b[q:]
        out[p + "self_attn.v_proj.bias"] = bias[q + kv:]
        out[p + "self_attn.sinks"] = bf16_to_f32(take(nh, np.uint16))
        out[p + "self_attn.o_proj.weight"] = bf16_to_f32(take(H * q, np.uint16)).reshape(H, q)
        out[p + "self_attn.o_proj.bias"] = bf16_to_f32(np.frombuffer(data, np.uint16, H, pos))
        pos += H * 2
        out[p + "post_attention_layernorm.weight"] = bf16_to_f32(take(H, np.uint16))
        out[p + "mlp.router.weight"] = bf16_to_f32(take(E * H, np.uint16)).reshape(E, H)
        out[p + "mlp.router.bias"] = bf16_to_f32(np.frombuffer(data, np.uint16, E, pos))
        pos += E * 2
    out["model.norm.weight"] = bf16_to_f32(take(H, np.uint16))
    out["lm_head.weight"] = bf16_to_f32(take(rows * H, np.uint16)).reshape(rows, H)
    for n in range(L):
        p = f"model.layers.{n}."
        pos = page(pos)
        gu, gub, dn, dnb = [], [], [], []
        for e in range(E):
            b1 = take(2 * I * H // 2, np.uint8).reshape(2 * I, H // 32, 16)
            s1 = take(2 * I * H // 32, np.uint8).reshape(2 * I, H // 32)
            gub.append(bf16_to_f32(take(2 * I, np.uint16)))
            b2 = take(H * I // 2, np.uint8).reshape(H, I // 32, 16)
            s2 = take(H * I // 32, np.uint8).reshape(H, I // 32)
            dnb.append(bf16_to_f32(take(H, np.uint16)))
            gu.append(mxfp4_decode(b1, s1, bias=127 + 14).T)
            dn.append(mxfp4_decode(b2, s2, bias=127 + 14).T)
        out[p + "mlp.experts.gate_up_proj"] = np.stack(gu)
        out[p + "mlp.experts.gate_up_proj_bias"] = np.stack(gub)
        out[p + "mlp.experts.down_proj"] = np.stack(dn)
        out[p + "mlp.experts.down_proj_bias"] = np.stack(dnb)
    assert pos == len(data), f"model.bin has {len(data)} bytes, the layout ends at {pos}"
    info = dict(rows=rows, beta_fast=beta_fast, beta_slow=beta_slow, k=k, window=window, eps=eps,
                limit=limit)
    return out, info


def compare(label, ours, hf_state, rows=None):
    bad = 0
    for name, want in hf_state.items():
        if name not in ours:
            print(f"  {label}: {name} missing")
            bad += 1
            continue
        got = ours[name]
        w = want if rows is None or not name.endswith(("embed_tokens.weight", "lm_head.weight")) else want[:rows]
        if got.shape != w.shape or not np.array_equal(got, w):
            diff = np.abs(got - w).max() if got.shape == w.shape else "shape"
            print(f"  {label}: {name} differs ({got.shape} vs {w.shape}, max diff {diff})")
            bad += 1
    print(f"{label}: {len(hf_state) - bad} of {len(hf_state)} tensors equal to transformers'")
    return bad


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = sys.argv[1]
    import torch
    from transformers import (AutoTokenizer, GenerationConfig, GptOssForCausalLM, Mxfp4Config,
                              __version__ as tf_version)
    torch.manual_seed(0)
    model, info = GptOssForCausalLM.from_pretrained(
        root, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True),
        output_loading_info=True)
    problems = sum(len(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    print(f"transformers {tf_version}: loaded {root}: missing {sorted(info['missing_keys'])}, "
          f"unexpected {sorted(info['unexpected_keys'])}, mismatched {sorted(info['mismatched_keys'])}")
    cfg = model.config
    tok = AutoTokenizer.from_pretrained(root)
    gen = GenerationConfig.from_pretrained(root)
    text = "Hello world. Привет, мир!"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text, "tokenizer round trip"
    assert tok.convert_tokens_to_ids("<|return|>") in gen.eos_token_id
    print(f"tokenizer: {len(tok)} tokens, {text!r} -> {ids}; generation eos {gen.eos_token_id}")
    ids = ids + tok.convert_tokens_to_ids(["<|start|>", "<|message|>", "<|end|>"])
    ids = (ids * 3)[:cfg.sliding_window * 3]
    layer_rms = []
    hooks = [layer.register_forward_hook(
        lambda mod, args, res: layer_rms.append(float((res[0] if isinstance(res, tuple) else res).pow(2).mean().sqrt())))
        for layer in model.model.layers]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    for h in hooks:
        h.remove()
    logits = out.logits
    finite = bool(torch.isfinite(logits).all())
    embed_rms = float(out.hidden_states[0].pow(2).mean().sqrt())
    print(f"forward: {len(ids)} tokens -> logits {tuple(logits.shape)}, finite {finite}, "
          f"logit std {float(logits.std()):.3f}")
    print(f"hidden-state RMS: embedding {embed_rms:.3f}; after each layer " +
          " ".join(f"{r:.3f}" for r in layer_rms))
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    bad = problems + (0 if finite else 1)
    orig = os.path.join(root, "original")
    if os.path.isdir(orig):
        bad += compare("original/ (numpy reader)", original_as_hf(orig), state)
    metal = os.path.join(root, "metal", "model.bin")
    if os.path.exists(metal):
        ours, minfo = metal_as_hf(metal)
        print(f"metal/model.bin: {minfo['rows']} vocabulary rows, derived YaRN betas "
              f"{minfo['beta_fast']:.4f}/{minfo['beta_slow']:.4f}")
        bad += compare("metal/model.bin (numpy reader)", ours, state, rows=minfo["rows"])
    print("OK: transformers and the spec readers agree" if bad == 0 else f"FAILED: {bad} problems")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
