#!/usr/bin/env python3
"""An independent reader of mxlora adapter files, written from
docs/adapter-format.md alone (not from the C code), to show the page is
enough to read the format, and to check files mxlora writes.

It validates the prefix, the header, the payload tiling, every zstd frame
and SHA-256, undoes the byte shuffle, and prints a summary. With --model
DIR (a Hugging Face gpt-oss checkpoint folder: config.json and
*.safetensors) it also computes the base-model fingerprint of §4 and
compares it with the file's. With --dump OUT.npz it writes every tensor as
float32.

Usage: python3 tools/adapter_read.py ADAPTER.mxla [--model DIR] [--dump OUT.npz]
Needs: numpy, zstandard (pip install zstandard), safetensors for --model.
"""
import argparse
import glob
import hashlib
import json
import os
import struct
import sys

import numpy as np
import zstandard

TARGETS = ["q", "k", "v", "o", "gate_up", "down"]


class FormatError(Exception):
    pass


def expected_tensors(cfg, lora):
    """Names and shapes in directory order (§3)."""
    H, I, E, R = cfg["hidden"], cfg["intermediate"], cfg["n_experts"], lora["rank"]
    q, kv = cfg["n_heads"] * cfg["head_dim"], cfg["n_kv_heads"] * cfg["head_dim"]
    dims = {"q": (H, q), "k": (H, kv), "v": (H, kv), "o": (q, H), "gate_up": (H, 2 * I),
            "down": (I, H)}
    out = []
    for layer in range(cfg["n_layers"]):
        for t in TARGETS:
            if layer not in lora["layers"].get(t, []):
                continue
            n_in, n_out = dims[t]
            if t in ("gate_up", "down"):
                out.append((f"layers.{layer}.experts.{t}.lora_A", [E, R, n_in]))
                out.append((f"layers.{layer}.experts.{t}.lora_B", [E, n_out, R]))
            else:
                out.append((f"layers.{layer}.attn.{t}.lora_A", [R, n_in]))
                out.append((f"layers.{layer}.attn.{t}.lora_B", [n_out, R]))
    return out


def read_adapter(path):
    data = open(path, "rb").read()
    if len(data) < 24:
        raise FormatError("shorter than the 24-byte prefix")
    magic, version, reserved, n = struct.unpack_from("<8sIIQ", data, 0)
    if magic != b"MXLADAPT":
        raise FormatError("bad magic")
    if version not in (1, 2):
        raise FormatError(f"format version {version}, this reader knows 1 and 2")
    prefix = 56 if version == 2 else 24
    if reserved != 0 or not 2 <= n <= 64 << 20 or prefix + n > len(data):
        raise FormatError("bad reserved field or header length")
    header_bytes = data[prefix:prefix + n]
    if version == 2 and hashlib.sha256(header_bytes).digest() != data[24:56]:
        raise FormatError("header SHA-256 mismatch")
    header = json.loads(header_bytes.decode("utf-8"))
    start = (prefix + n + 63) // 64 * 64
    if header["format"] != "mxlora-adapter" or header["format_version"] != version:
        raise FormatError("format / format_version")
    cfg, lora, dtype = header["base_model"]["config"], header["lora"], header["dtype"]
    if set(lora["layers"]) != set(lora["targets"]):
        raise FormatError("lora.layers keys differ from lora.targets")
    width = {"F32": 4, "BF16": 2}[dtype]
    want = expected_tensors(cfg, lora)
    if [(t["name"], t["shape"]) for t in header["tensors"]] != want:
        raise FormatError("tensor directory does not match the lora settings")
    tensors, at = {}, 0
    dctx = zstandard.ZstdDecompressor()
    for t in header["tensors"]:
        offset, csize, raw = int(t["offset"]), int(t["compressed_size"]), int(t["raw_size"])
        count = int(np.prod(t["shape"]))
        if offset != at or raw != count * width or t["dtype"] != dtype:
            raise FormatError(f"{t['name']}: offset/size/dtype")
        at += csize
        frame = data[start + offset:start + offset + csize]
        if len(frame) != csize:
            raise FormatError(f"{t['name']}: payload past the end of the file")
        params = zstandard.get_frame_parameters(frame)
        if params.content_size != raw:
            raise FormatError(f"{t['name']}: frame content size")
        body = dctx.decompress(frame, max_output_size=raw)
        if t["encoding"] == "shuffle+zstd":
            body = np.frombuffer(body, np.uint8).reshape(width, count).T.tobytes()
        elif t["encoding"] != "zstd":
            raise FormatError(f"{t['name']}: encoding {t['encoding']}")
        if hashlib.sha256(body).hexdigest() != t["sha256"]:
            raise FormatError(f"{t['name']}: SHA-256 mismatch")
        if dtype == "F32":
            values = np.frombuffer(body, "<f4")
        else:
            values = (np.frombuffer(body, "<u2").astype(np.uint32) << 16).view(np.float32)
        tensors[t["name"]] = values.reshape(t["shape"])
    if start + at != len(data):
        raise FormatError("payloads do not end the file")
    return header, tensors, len(data)


def hf_fingerprint(model_dir):
    """§4 from a Hugging Face checkpoint folder."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    rs = c.get("rope_scaling") or c.get("rope_parameters") or {}
    fields = [
        ("n_layers", c["num_hidden_layers"]), ("n_experts", c["num_local_experts"]),
        ("experts_per_token", c["num_experts_per_tok"]), ("hidden", c["hidden_size"]),
        ("intermediate", c["intermediate_size"]), ("head_dim", c["head_dim"]),
        ("n_heads", c["num_attention_heads"]), ("n_kv_heads", c["num_key_value_heads"]),
        ("sliding_window", c["sliding_window"]),
        ("initial_context", rs.get("original_max_position_embeddings",
                                   c.get("initial_context_length"))),
        ("rope_theta", float(c.get("rope_theta", rs.get("rope_theta", 0)))),
        ("rope_factor", float(rs["factor"])), ("rope_beta_fast", float(rs["beta_fast"])),
        ("rope_beta_slow", float(rs["beta_slow"])), ("swiglu_limit", float(c["swiglu_limit"])),
        ("swiglu_alpha", float(c.get("swiglu_alpha", 1.702))),
        ("rms_eps", float(c["rms_norm_eps"])),
    ]
    text = "mxlora-fingerprint-v1\n"
    for name, v in fields:
        text += f"{name}={'%.5g' % float(np.float32(v)) if isinstance(v, float) else int(v)}\n"
    types = c.get("layer_types") or [
        "sliding_attention" if i % 2 == 0 else "full_attention"
        for i in range(c["num_hidden_layers"])]
    text += "layer_types=" + "".join("S" if t == "sliding_attention" else "F" for t in types)
    text += "\n"
    weights = {}  # name -> raw bytes, read from the safetensors files directly
    for f in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        blob = open(f, "rb").read()
        (n,) = struct.unpack_from("<Q", blob, 0)
        for name, info in json.loads(blob[8:8 + n]).items():
            if name != "__metadata__":
                if info["dtype"] != "BF16":
                    continue
                begin, end = info["data_offsets"]
                weights[name] = blob[8 + n + begin:8 + n + end]
    h = hashlib.sha256(text.encode())

    def bf16(name):
        h.update(weights[name])

    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for name in ("input_layernorm.weight", "self_attn.sinks",
                     "post_attention_layernorm.weight", "mlp.router.weight", "mlp.router.bias"):
            bf16(p + name)
    bf16("model.norm.weight")
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("adapter")
    ap.add_argument("--model")
    ap.add_argument("--dump")
    a = ap.parse_args()
    try:
        header, tensors, size = read_adapter(a.adapter)
    except (FormatError, KeyError, ValueError, zstandard.ZstdError) as e:
        print(f"{a.adapter}: invalid: {e}")
        return 1
    lora = header["lora"]
    raw = sum(int(t["raw_size"]) for t in header["tensors"])
    print(f"{a.adapter}: valid mxlora adapter v{header['format_version']}, {size} bytes, "
          f"{len(tensors)} tensors, "
          f"{sum(v.size for v in tensors.values())} parameters, {header['dtype']}, "
          f"payload {raw} raw bytes")
    print(f"rank {lora['rank']}, alpha {lora['alpha']}, rslora {lora['rslora']}, "
          f"targets {lora['targets']}")
    print(f"base fingerprint {header['base_model']['fingerprint']}")
    status = 0
    if a.model:
        fp = hf_fingerprint(a.model)
        same = fp == header["base_model"]["fingerprint"]
        print(f"model {a.model}: fingerprint {fp}: {'matches' if same else 'DIFFERS'}")
        status = 0 if same else 1
    if a.dump:
        np.savez(a.dump, **tensors)
    return status


if __name__ == "__main__":
    sys.exit(main())
