#!/usr/bin/env python3
"""Inference speed against llama.cpp on the same weights, in the same run:
llama-bench's pp512 / tg128 and mxlora's bench_forward, interleaved
(A B A B ...), medians and ratios.

    python3 bench/vs_llamacpp.py --llama-bench PATH/llama-bench --gguf MODEL.gguf \\
        --model CHECKPOINT_DIR [--build build-bench] [--threads 2] [--rounds 3]
        [--prompt 512] [--decode 128]

Nothing is downloaded: you give a llama.cpp build (its llama-bench) and a
GGUF converted from the checkpoint that mxlora reads (for example
convert_hf_to_gguf.py on the Hugging Face folder of
`mxlora tiny DIR --shape gpt-oss-20b --layout hf`, MXFP4 experts kept).

Each round runs, in turn (which goes first alternates):
  llama.cpp  `llama-bench -m GGUF -p PROMPT -n DECODE -t THREADS -r 1 -o json`:
             prompt processing of PROMPT tokens (pp) and generation of
             DECODE tokens (tg), each its own test;
  mxlora     `bench_forward --model DIR --threads THREADS --prompt PROMPT
             --decode DECODE --reps 1 --no-limits`: a prefill of PROMPT
             tokens and DECODE greedy tokens after it (its KV cache then
             holds PROMPT tokens; on gpt-oss-20b that adds <1 % to the bytes
             a token reads).
Reported: tokens/s per round, median (min-max) over rounds, and
mxlora / llama.cpp for prefill and decode, against the issue's goals for
the 20b shape at 2 threads (prefill >= 3x, decode >= 1.5x). Name the CPU
(printed) with the figures; on a shared machine compare within one run.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys


def cpu_name():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        return "unknown CPU"
    flags = info.get("flags", "").split()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return "%s (cpu family %s, model %s; %s)" % (info.get("model name", "?"),
                                                 info.get("cpu family", "?"),
                                                 info.get("model", "?"), " ".join(isa))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("vs_llamacpp: %s failed (%d):\n%s" % (" ".join(cmd), p.returncode,
                                                      p.stderr[-4000:]))
    return p.stdout


def llama_round(a):
    out = run([a.llama_bench, "-m", a.gguf, "-p", str(a.prompt), "-n", str(a.decode),
               "-t", str(a.threads), "-r", "1", "-o", "json"])
    tests = json.loads(out[out.index("["):])  # llama-bench may log before the JSON
    pp = [t["avg_ts"] for t in tests if t.get("n_prompt") == a.prompt and t.get("n_gen") == 0]
    tg = [t["avg_ts"] for t in tests if t.get("n_gen") == a.decode and t.get("n_prompt") == 0]
    if not pp or not tg:
        sys.exit("vs_llamacpp: no pp%d/tg%d results in llama-bench's output:\n%s"
                 % (a.prompt, a.decode, out[-2000:]))
    return pp[0], tg[0]


def mxlora_round(a):
    out = run([os.path.join(a.build, "bench_forward"), "--model", a.model, "--threads",
               str(a.threads), "--prompt", str(a.prompt), "--decode", str(a.decode),
               "--chunk", str(a.prompt), "--reps", "1", "--no-limits"])
    m = re.search(r"prefill ([0-9.]+) tok/s.*decode ([0-9.]+) tok/s", out)
    if not m:
        sys.exit("vs_llamacpp: no figures in bench_forward's output:\n" + out[-2000:])
    return float(m.group(1)), float(m.group(2))


def summary(xs):
    return "%.2f (%.2f-%.2f)" % (statistics.median(xs), min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bench", required=True, help="path of llama.cpp's llama-bench")
    ap.add_argument("--gguf", required=True, help="the GGUF of the same weights")
    ap.add_argument("--model", required=True, help="the checkpoint folder mxlora reads")
    ap.add_argument("--build", default="build-bench", help="mxlora build folder (bench_forward)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    a = ap.parse_args()
    for path in (a.llama_bench, a.gguf, a.model, os.path.join(a.build, "bench_forward")):
        if not os.path.exists(path):
            sys.exit("vs_llamacpp: %s does not exist" % path)
    print("vs_llamacpp: %s, %d threads, pp%d / tg%d, %d rounds" % (
        cpu_name(), a.threads, a.prompt, a.decode, a.rounds))
    print("llama.cpp: %s on %s\nmxlora:    %s on %s" % (a.llama_bench, a.gguf, a.build, a.model))
    res = {"llama.cpp": ([], []), "mxlora": ([], [])}
    sides = [("llama.cpp", llama_round), ("mxlora", mxlora_round)]
    for r in range(a.rounds):
        for name, fn in (sides if r % 2 == 0 else sides[::-1]):
            pre, dec = fn(a)
            res[name][0].append(pre)
            res[name][1].append(dec)
            print("round %d %-9s prefill %8.2f tok/s  decode %7.2f tok/s" % (r + 1, name, pre,
                                                                            dec), flush=True)
    print("\nmedian (min-max) over %d rounds, tokens/s" % a.rounds)
    for name in res:
        print("  %-9s prefill %-26s decode %s" % (name, summary(res[name][0]),
                                                  summary(res[name][1])))
    pre = statistics.median(res["mxlora"][0]) / statistics.median(res["llama.cpp"][0])
    dec = statistics.median(res["mxlora"][1]) / statistics.median(res["llama.cpp"][1])
    print("mxlora / llama.cpp: prefill %.2fx (goal >= 3x), decode %.2fx (goal >= 1.5x; "
          "goals for the gpt-oss-20b shape at 2 threads)" % (pre, dec))


if __name__ == "__main__":
    main()
