#!/usr/bin/env python3
"""Interop check of mxlora's safetensors reader/writer against the Python
`safetensors` package (the reference implementation).

  tools/check_safetensors.py                  # run the interop checks
  tools/check_safetensors.py --write-fixtures # (re)write tests/fixtures/safetensors

The checks compile a small C driver (embedded below) with the C sources of
the reader/writer, then:
  1. Python -> C: random files written by safetensors.torch.save_file (every
     dtype, 0-d, zero-size, metadata) and a sharded checkpoint written by
     huggingface_hub.save_torch_state_dict are read by our reader; names,
     dtypes, shapes, metadata and a SHA-256 of every tensor's bytes must match.
  2. C -> Python: our writer writes every dtype with a byte pattern; the
     reference reads it back (safe_open), and dtypes, shapes, metadata and
     bytes must match the pattern computed here.
  3. Malformed files that the reference rejects are rejected by ours.
Needs: python3 with torch, safetensors (and huggingface_hub for sharding), gcc,
libcjson-dev.
"""
import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "safetensors")

DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I16": torch.int16, "U16": torch.uint16, "F16": torch.float16, "BF16": torch.bfloat16,
    "I32": torch.int32, "U32": torch.uint32, "F32": torch.float32,
    "I64": torch.int64, "U64": torch.uint64, "F64": torch.float64,
}
NAME_OF = {v: k for k, v in DTYPES.items()}

# The driver: "dump FILE" prints the file as JSON; "write FILE" writes every
# dtype with the byte pattern pattern_byte() below and some metadata.
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "core/sha256.h"
#include "model/safetensors.h"

static int dump(const char *path) {
  mxl_safetensors *st;
  if (mxl_safetensors_open(path, &st) != MXL_OK) {
    fprintf(stderr, "%s\n", mxl_last_error());
    return 1;
  }
  cJSON *root = cJSON_CreateObject(), *tensors = cJSON_AddArrayToObject(root, "tensors");
  cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
  for (int i = 0; i < st->n_tensors; i++) {
    const mxl_st_tensor *t = &st->tensors[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "dtype", mxl_dtype_name(t->dtype));
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    for (int d = 0; d < t->ndim; d++)
      cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
    uint8_t digest[MXL_SHA256_SIZE];
    char hex[MXL_SHA256_HEX_SIZE];
    mxl_sha256(t->data, t->nbytes, digest);
    mxl_sha256_hex(digest, hex);
    cJSON_AddStringToObject(o, "sha256", hex);
    cJSON_AddNumberToObject(o, "file", t->file);
    cJSON_AddItemToArray(tensors, o);
  }
  for (int i = 0; i < mxl_safetensors_metadata_count(st); i++) {
    const char *k, *v;
    mxl_safetensors_metadata_at(st, i, &k, &v);
    cJSON_AddStringToObject(meta, k, v);
  }
  char *text = cJSON_PrintUnformatted(root);
  printf("%s\n", text);
  free(text);
  cJSON_Delete(root);
  mxl_safetensors_close(st);
  return 0;
}

static uint8_t pattern_byte(int k, size_t i) { return (uint8_t)(k * 31 + i * 7 + (i >> 8)); }

static int write_all(const char *path) {
  mxl_st_spec specs[MXL_DT_COUNT + 2];
  int n = 0;
  static char names[MXL_DT_COUNT][32];
  for (int dt = 0; dt < MXL_DT_COUNT; dt++) {
    snprintf(names[dt], sizeof names[dt], "w.%s", mxl_dtype_name(dt));
    specs[n++] = (mxl_st_spec){names[dt], (mxl_dtype)dt, 3, {3, 1, 7}};
  }
  specs[n++] = (mxl_st_spec){"scalar", MXL_DT_F32, 0, {0}};
  specs[n++] = (mxl_st_spec){"empty", MXL_DT_BF16, 2, {0, 5}};
  const char *meta[] = {"format", "pt", "quote\"s", "line\nbreak \\ \xc3\xa9"};
  mxl_st_writer *w;
  if (mxl_st_writer_begin(path, specs, n, meta, 2, &w) != MXL_OK) goto fail;
  for (int k = 0; k < n; k++) {
    size_t bytes = mxl_dtype_size(specs[k].dtype);
    for (int d = 0; d < specs[k].ndim; d++) bytes *= (size_t)specs[k].shape[d];
    for (size_t i = 0; i < bytes; i++) {
      uint8_t b = pattern_byte(k, i);
      if (specs[k].dtype == MXL_DT_BOOL) b &= 1;
      if (mxl_st_writer_write(w, &b, 1) != MXL_OK) goto fail;
    }
  }
  if (mxl_st_writer_commit(w) != MXL_OK) goto fail;
  return 0;
fail:
  fprintf(stderr, "%s\n", mxl_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "dump")) return dump(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "write")) return write_all(argv[2]);
  fprintf(stderr, "usage: driver dump|write FILE\n");
  return 2;
}
"""

C_SOURCES = ["model/safetensors.c", "core/json.c", "core/status.c", "core/fileio.c",
             "core/sha256.c"]


def pattern_byte(k, i):
    return (k * 31 + i * 7 + (i >> 8)) & 255


def build_driver(work):
    src = os.path.join(work, "driver.c")
    exe = os.path.join(work, "driver")
    with open(src, "w") as f:
        f.write(DRIVER)
    cmd = ["gcc", "-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
           "-Wno-missing-field-initializers", "-fsanitize=address,undefined",
           "-I" + os.path.join(ROOT, "include"), "-I" + ROOT, src]
    cmd += [os.path.join(ROOT, s) for s in C_SOURCES]
    cmd += ["-lcjson", "-lm", "-o", exe]
    subprocess.run(cmd, check=True)
    return exe


def tensor_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def c_dump(driver, path):
    r = subprocess.run([driver, "dump", path], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return json.loads(r.stdout), None


def random_tensor(rng, dtype):
    ndim = rng.choice([0, 1, 1, 2, 2, 3, 4, 8])
    shape = [rng.choice([0, 1, 2, 3, 5, 17]) if rng.random() < 0.1 else rng.randint(1, 6)
             for _ in range(ndim)]
    n = 1
    for d in shape:
        n *= d
    size = torch.empty((), dtype=dtype).element_size()
    raw = bytes(rng.getrandbits(8) for _ in range(n * size))
    if dtype == torch.bool:
        raw = bytes(b & 1 for b in raw)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(
        0, dtype=torch.uint8)
    return flat.view(dtype).reshape(shape) if n else torch.empty(shape, dtype=dtype)


def expect_matches(dump, tensors, metadata, what):
    problems = []
    got = {t["name"]: t for t in dump["tensors"]}
    if sorted(got) != sorted(tensors):
        problems.append(f"{what}: names differ: {sorted(got)} vs {sorted(tensors)}")
        return problems
    for name, t in tensors.items():
        g = got[name]
        if g["dtype"] != NAME_OF[t.dtype] or g["shape"] != list(t.shape):
            problems.append(f"{what}: {name}: {g['dtype']} {g['shape']} vs "
                            f"{NAME_OF[t.dtype]} {list(t.shape)}")
        elif g["sha256"] != hashlib.sha256(tensor_bytes(t)).hexdigest():
            problems.append(f"{what}: {name}: bytes differ")
    if metadata is not None and dump["metadata"] != metadata:
        problems.append(f"{what}: metadata {dump['metadata']} vs {metadata}")
    return problems


def python_to_c(driver, work, rng, count):
    problems = []
    dtypes = list(DTYPES.values())
    for k in range(count):
        tensors = {}
        for j in range(rng.randint(1, 12)):
            tensors[f"model.layers.{j}.w{rng.randint(0, 99)}"] = random_tensor(
                rng, rng.choice(dtypes))
        metadata = {"format": "pt", "k": str(k), "odd \"key\"": "tab\tnewline\n é"}
        path = os.path.join(work, f"py_{k}.safetensors")
        save_file(tensors, path, metadata=metadata if k % 2 else None)
        dump, err = c_dump(driver, path)
        if err:
            problems.append(f"py_{k}: our reader refused it: {err}")
            continue
        problems += expect_matches(dump, tensors, metadata if k % 2 else {}, f"py_{k}")
    return problems


def python_sharded_to_c(driver, work):
    try:
        from huggingface_hub import save_torch_state_dict
    except ImportError:
        print("  (huggingface_hub missing: sharded check skipped)")
        return []
    g = torch.Generator().manual_seed(3)
    state = {f"layers.{i}.{p}": torch.randn(64, 32, generator=g).to(torch.bfloat16)
             for i in range(6) for p in ("q", "k", "v")}
    state["embed"] = torch.arange(4096, dtype=torch.uint8).reshape(64, 64)
    out = os.path.join(work, "sharded")
    os.makedirs(out, exist_ok=True)
    save_torch_state_dict(state, out, max_shard_size="12KB")
    index = os.path.join(out, "model.safetensors.index.json")
    with open(index) as f:
        n_shards = len(set(json.load(f)["weight_map"].values()))
    dump, err = c_dump(driver, index)
    if err:
        return [f"sharded: our reader refused it: {err}"]
    problems = expect_matches(dump, state, None, "sharded")
    if len({t["file"] for t in dump["tensors"]}) != n_shards or n_shards < 2:
        problems.append(f"sharded: expected {n_shards} (>= 2) shards")
    print(f"  sharded: {len(state)} tensors in {n_shards} shards read through the index")
    return problems


def c_to_python(driver, work):
    path = os.path.join(work, "ours.safetensors")
    subprocess.run([driver, "write", path], check=True)
    problems = []
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    if (8 + n) % 8 or not raw[8:8 + n].decode().endswith(("}", " ")):
        problems.append("ours: header is not padded to a multiple of 8")
    names = [f"w.{d}" for d in DTYPES] + ["scalar", "empty"]
    shapes = [[3, 1, 7]] * len(DTYPES) + [[], [0, 5]]
    dtypes = list(DTYPES.values()) + [torch.float32, torch.bfloat16]
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        want_meta = {"format": "pt", "quote\"s": "line\nbreak \\ é"}
        if meta != want_meta:
            problems.append(f"ours: metadata {meta} vs {want_meta}")
        if sorted(f.keys()) != sorted(names):
            problems.append(f"ours: names {sorted(f.keys())}")
            return problems
        for k, (name, shape, dtype) in enumerate(zip(names, shapes, dtypes)):
            t = f.get_tensor(name)
            if t.dtype != dtype or list(t.shape) != shape:
                problems.append(f"ours: {name}: {t.dtype} {list(t.shape)}")
                continue
            want = bytes(pattern_byte(k, i) & (1 if dtype == torch.bool else 255)
                         for i in range(len(tensor_bytes(t))))
            if tensor_bytes(t) != want:
                problems.append(f"ours: {name}: bytes differ from the pattern")
    print(f"  C -> Python: {len(names)} tensors (every dtype, 0-d, zero-size) read back")
    return problems


def malformed_agree(driver, work):
    """Files the reference refuses must be refused by ours too."""
    def raw(header, data=b""):
        h = header.encode()
        return struct.pack("<Q", len(h)) + h + data
    cases = {
        "bad_dtype": raw('{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        "size_mismatch": raw('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"\0" * 4),
        "outside": raw('{"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}', b"\0" * 4),
        "overlap": raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                       '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}', b"\0" * 8),
        "meta_not_string": raw('{"__metadata__":{"a":1}}'),
        "not_object": raw('[1]'),
        "truncated": b"\x10\0\0",
        "header_past_end": struct.pack("<Q", 1000) + b"{}",
        "negative_dim": raw('{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}'),
    }
    problems = []
    for name, blob in cases.items():
        path = os.path.join(work, f"bad_{name}.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            with safe_open(path, framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
            ref_ok = True
        except Exception:
            ref_ok = False
        _, err = c_dump(driver, path)
        if ref_ok:
            problems.append(f"bad_{name}: the reference accepts it (case is wrong)")
        elif err is None:
            problems.append(f"bad_{name}: the reference refuses it, ours accepts it")
    print(f"  malformed: {len(cases)} files refused by both readers")
    return problems


def write_fixtures():
    os.makedirs(FIXTURES, exist_ok=True)
    mixed = {
        "layer.weight": torch.arange(12, dtype=torch.float32).mul(0.5).sub(1).reshape(3, 4),
        "layer.bias": torch.tensor([1, -2, 0.25, 65504], dtype=torch.float16),
        "ids": torch.arange(6, dtype=torch.int64).mul(1000000007).sub(3).reshape(2, 3),
        "mask": torch.arange(5).remainder(2).eq(0),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }
    save_file(mixed, os.path.join(FIXTURES, "py_mixed.safetensors"),
              metadata={"writer": "python-safetensors"})
    bf16 = {
        "experts.gate_up_proj_blocks":
            torch.arange(96, dtype=torch.int64).mul(37).remainder(256).to(torch.uint8)
            .reshape(2, 3, 16),
        "norm.weight": (torch.arange(6, dtype=torch.int16) + 0x3f80).view(torch.bfloat16),
        "empty": torch.empty(0, 3, dtype=torch.float32),
    }
    save_file(bf16, os.path.join(FIXTURES, "py_bf16_u8.safetensors"))
    for name in sorted(os.listdir(FIXTURES)):
        print(f"  {name}: {os.path.getsize(os.path.join(FIXTURES, name))} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-fixtures", action="store_true")
    ap.add_argument("--files", type=int, default=60, help="random Python-written files")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.write_fixtures:
        write_fixtures()
        return 0
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as work:
        driver = build_driver(work)
        problems = python_to_c(driver, work, rng, args.files)
        print(f"  Python -> C: {args.files} random files (every dtype, 0-d, zero-size)")
        problems += python_sharded_to_c(driver, work)
        problems += c_to_python(driver, work)
        problems += malformed_agree(driver, work)
    for p in problems:
        print("FAIL", p)
    print("check_safetensors:", "FAILED" if problems else "all interop checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
