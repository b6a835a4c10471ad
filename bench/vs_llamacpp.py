#!/usr/bin/env python3
"""Inference speed against llama.cpp on the same weights, in the same run:
llama-bench's pp512 / tg128 and mxlora's bench_forward, interleaved
(A B A B ...), medians and ratios.

    python3 bench/vs_llamacpp.py --llama-bench PATH/llama-bench --gguf MODEL.gguf \\
        --model CHECKPOINT_DIR [--build build-bench] [--threads 2] [--rounds 3]
        [--prompt 512] [--decode 128] [--load mmap|no-mmap|both]
        [--mxlora-load mmap|no-mmap] [--no-compact] [--json FILE]

Nothing is downloaded: you give a llama.cpp build (its llama-bench) and a
GGUF converted from the checkpoint that mxlora reads (for example
convert_hf_to_gguf.py on the Hugging Face folder of
`mxlora tiny DIR --shape gpt-oss-20b --layout hf`, MXFP4 experts kept).

Each round runs, in turn (the order reverses every other round):
  llama.cpp  `llama-bench -m GGUF -p PROMPT -n DECODE -t THREADS -r 1 -o json`:
             a warm-up of each test, then prompt processing of PROMPT tokens
             (pp) and generation of DECODE tokens from an empty context (tg);
  mxlora     `bench_forward --model DIR --threads THREADS --prompt PROMPT
             --chunk PROMPT --decode DECODE --reps 1 --no-limits`: a warm-up
             prefill, then a prefill of PROMPT tokens and DECODE greedy tokens
             after it (its KV cache then holds PROMPT tokens; on gpt-oss-20b
             that adds <1 % to the bytes a token reads).
How the weights are loaded, the same for both programs (--load):
  mmap     both map the file (each program's default): llama.cpp's page
           cache pages (4 KB) in place, mxlora's likewise;
  no-mmap  llama.cpp reads the file into memory (`-lm none`, or `-mmp 0` on
           older builds: ordinary 4 KB pages), mxlora copies the weights into
           2 MB pages (`--no-mmap`);
  both     all four runs every round, and the ratios of each pair;
--mxlora-load overrides mxlora's alone (with one --load): llama.cpp repacks
its experts into memory at load, so its mapped run compares with mxlora's
copy (`--mxlora-load no-mmap`) without llama.cpp's read copy of the file.
Before each run the kernel is asked to compact memory
(/proc/sys/vm/compact_memory, where writable; --no-compact skips it), so
that each program's large allocations get 2 MB pages whatever ran before.
Reported: per run tokens/s, the load average when it started and the cores
the whole process used (its CPU time over its wall time, loading included;
bench_forward's own cores for its timed prefill and decode beside it); then
median (min-max) over rounds and mxlora / llama.cpp for prefill and decode,
against the issue's goals for the 20b shape at 2 threads (prefill >= 3x,
decode >= 1.5x), and llama.cpp's version as llama-bench prints it. Name the
CPU (printed) with the figures; on a shared machine compare within one run.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

from bench_host import cpu_name, run_child


def llama_load_flags(llama_bench):
    """llama-bench's option for reading the file instead of mapping it: newer
    builds have `-lm/--load-mode`, older ones `-mmp/--mmap 0|1`."""
    p = subprocess.run([llama_bench, "--help"], capture_output=True, text=True)
    text = p.stdout + p.stderr
    if "--load-mode" in text:
        return ["-lm", "none"]
    if "--mmap" in text:
        return ["-mmp", "0"]
    sys.exit("vs_llamacpp: %s --help names neither --load-mode nor --mmap" % llama_bench)


def llama_round(a, load):
    cmd = [a.llama_bench, "-m", a.gguf, "-p", str(a.prompt), "-n", str(a.decode),
           "-t", str(a.threads), "-r", "1", "-o", "json"]
    if load == "no-mmap":
        cmd += a.llama_no_mmap
    out, _, wall, cpu, rss = run_child(cmd)
    try:
        tests = json.loads(out[out.index("["):])  # llama-bench may log before the JSON
    except ValueError as e:
        sys.exit("vs_llamacpp: llama-bench's output is not JSON (%s):\n%s" % (e, out[-2000:]))
    pp = [t for t in tests if t.get("n_prompt") == a.prompt and t.get("n_gen") == 0]
    tg = [t for t in tests if t.get("n_gen") == a.decode and t.get("n_prompt") == 0]
    if not pp or not tg:
        sys.exit("vs_llamacpp: no pp%d/tg%d results in llama-bench's output:\n%s"
                 % (a.prompt, a.decode, out[-2000:]))
    return {"prefill": pp[0]["avg_ts"], "decode": tg[0]["avg_ts"], "wall_s": wall, "cpu_s": cpu,
            "rss_bytes": rss, "info": pp[0]}


COMPACT = "/proc/sys/vm/compact_memory"


def compact_memory():
    """Defragments free memory so that the next run gets 2 MB pages as the
    previous one did (llama.cpp's repacked experts and mxlora's --no-mmap copy
    are large anonymous allocations)."""
    with open(COMPACT, "w") as f:
        f.write("1")


def mxlora_round(a, load):
    cmd = [os.path.join(a.build, "bench_forward"), "--model", a.model, "--threads",
           str(a.threads), "--prompt", str(a.prompt), "--decode", str(a.decode),
           "--chunk", str(a.prompt), "--reps", "1", "--no-limits"]
    if load == "no-mmap":
        cmd.append("--no-mmap")
    out, _, wall, cpu, rss = run_child(cmd)
    m = re.search(r"prefill ([0-9.]+) tok/s \(([0-9.]+) cores\), decode ([0-9.]+) tok/s "
                  r"\(([0-9.]+) cores\)", out)
    if not m:
        sys.exit("vs_llamacpp: no figures in bench_forward's output:\n" + out[-2000:])
    return {"prefill": float(m.group(1)), "decode": float(m.group(3)), "wall_s": wall,
            "cpu_s": cpu, "rss_bytes": rss,
            "phase_cores": (float(m.group(2)), float(m.group(4)))}


def summary(xs):
    return "%.2f (%.2f-%.2f)" % (statistics.median(xs), min(xs), max(xs))


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def describe_llama(info):
    """What llama-bench says about itself and the run, from its JSON."""
    keys = ("model_type", "model_size", "backends", "n_batch", "n_ubatch", "type_k", "type_v",
            "flash_attn", "load_mode", "use_mmap", "lazy_mode", "repack", "poll", "cpu_info")
    fields = ", ".join("%s %s" % (k, info[k]) for k in keys if k in info)
    return "llama.cpp build %s (%s): %s" % (info.get("build_commit", "?"),
                                           info.get("build_number", "?"), fields)


def print_run(r, name, x):
    extra = ""
    if "phase_cores" in x:
        extra = " (timed prefill %.2f, decode %.2f)" % x["phase_cores"]
    print("round %d %-19s prefill %8.2f tok/s  decode %7.2f tok/s | load %5.2f, %.2f cores%s, "
          "%.0f s, peak RSS %.1f GB" % (r + 1, name, x["prefill"], x["decode"], x["loadavg"],
                                        x["cpu_s"] / x["wall_s"], extra, x["wall_s"],
                                        x["rss_bytes"] / 1e9), flush=True)


def print_results(a, res, loads, mx_loads):
    print("\nmedian (min-max) over %d rounds, tokens/s; load average, cores per process" % a.rounds)
    for name, runs in res.items():
        print("  %-19s prefill %-26s decode %-24s load %-20s cores %s" % (
            name, summary([x["prefill"] for x in runs]), summary([x["decode"] for x in runs]),
            summary([x["loadavg"] for x in runs]),
            summary([x["cpu_s"] / x["wall_s"] for x in runs])))
    pairs = [(("mxlora " + m), ("llama.cpp " + l)) for m in mx_loads for l in loads
             if m == l or l == "mmap"]
    print("mxlora / llama.cpp (goals for the gpt-oss-20b shape at 2 threads: prefill >= 3x, "
          "decode >= 1.5x)")
    for m, l in pairs:
        print("  %-19s / %-19s prefill %.2fx, decode %.2fx" % (
            m, l, median_of(res[m], "prefill") / median_of(res[l], "prefill"),
            median_of(res[m], "decode") / median_of(res[l], "decode")))


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
    ap.add_argument("--load", choices=("mmap", "no-mmap", "both"), default="mmap",
                    help="how both programs load the weights (default: map the file)")
    ap.add_argument("--mxlora-load", choices=("mmap", "no-mmap"),
                    help="load mxlora's weights this way instead (with one --load): llama.cpp "
                         "repacks its experts into memory at load, so its mapped run compares "
                         "with mxlora --no-mmap without the copy of the file llama.cpp "
                         "--no-mmap makes")
    ap.add_argument("--no-compact", action="store_true",
                    help="do not ask the kernel to compact memory before each run (by default "
                         "it does where /proc/sys/vm/compact_memory is writable: after "
                         "llama.cpp's 24 GB run, mxlora's copy got few 2 MB pages and its "
                         "prefill read 51 instead of 60 tok/s)")
    ap.add_argument("--json", help="also write every run's figures to this file")
    a = ap.parse_args()
    for path in (a.llama_bench, a.gguf, a.model, os.path.join(a.build, "bench_forward")):
        if not os.path.exists(path):
            sys.exit("vs_llamacpp: %s does not exist" % path)
    a.compact = not a.no_compact and os.access(COMPACT, os.W_OK)
    loads = ["mmap", "no-mmap"] if a.load == "both" else [a.load]
    if a.mxlora_load and a.load == "both":
        sys.exit("vs_llamacpp: --mxlora-load needs one --load")
    if "no-mmap" in loads:
        a.llama_no_mmap = llama_load_flags(a.llama_bench)
    mx_loads = [a.mxlora_load] if a.mxlora_load else loads
    print("vs_llamacpp: %s, %d threads, pp%d / tg%d, %d rounds, load %s%s" % (
        cpu_name(), a.threads, a.prompt, a.decode, a.rounds, " and ".join(loads),
        " (mxlora %s)" % a.mxlora_load if a.mxlora_load else ""))
    print("llama.cpp: %s on %s\nmxlora:    %s on %s" % (a.llama_bench, a.gguf, a.build, a.model))
    print("memory compacted before each run: %s" % ("yes" if a.compact else "no"))
    sides = []
    for load, mx_load in zip(loads, mx_loads):
        sides += [("llama.cpp " + load, llama_round, load),
                  ("mxlora " + mx_load, mxlora_round, mx_load)]
    res = {name: [] for name, _, _ in sides}
    for r in range(a.rounds):
        for name, fn, load in (sides if r % 2 == 0 else sides[::-1]):
            if a.compact:
                compact_memory()
            loadavg = os.getloadavg()[0]
            x = fn(a, load)
            x["loadavg"] = loadavg
            if r == 0 and "info" in x:
                print(describe_llama(x["info"]))
            res[name].append(x)
            print_run(r, name, x)
    print_results(a, res, loads, mx_loads)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu_name(), "args": {k: v for k, v in vars(a).items()},
                       "runs": res}, f, indent=1)


if __name__ == "__main__":
    main()
