#!/usr/bin/env python3
"""Thread waiting on a shared machine: mxlora's speed on an
idle machine and on one where other processes want the cores, for several
thread-waiting variants, interleaved in one run.

    python3 bench/busy_machine.py [--build build] [--rounds 3] [--load 0,2]
        [--workloads demo,train,decode] [--variant LABEL[@BUILD]:ENV,...]...

Workloads (each a fresh process, 2 threads unless a variant says otherwise):
  demo    `mxlora train recipes/demo.json --steps 20` on the demo's tiny model
          (the issue's measurement: many small ops, ~200 parallel regions per
          step); figure: wall seconds of the whole command.
  train   `bench_train` on the bench preset, seq 256, 2 timed steps after one
          warm-up; figure: training tokens/s (median of the steps).
  decode  `bench_forward --no-limits` on the bench preset, a 64-token prompt
          then 32 decoded tokens; figure: decode tokens/s.

Load conditions: `--load 0,2` runs every round once as the machine is (idle
on a quiet machine) and once with 2 extra busy-loop processes (one per core
of a 2-core machine: "anything else uses the CPU"), started before the
round's runs and killed after them. The busy loops run in this script's
session: the scheduler shares the cores between threads, so a workload
with more runnable threads gets a larger share. `--hog-session own` starts
them in a session of their own instead: where the kernel groups tasks by
session (CONFIG_SCHED_AUTOGROUP, /proc/sys/kernel/sched_autogroup_enabled),
as another user's or terminal's processes are, the cores are shared between
the two sessions whatever their thread counts.

Variants: LABEL:ENV sets environment variables for the run (ENV is
`K=V` pairs separated by `+`, or empty); LABEL@BUILD runs that build folder's
binaries instead of --build's; `threads=1` in ENV runs one thread. Defaults:
  today   GOMP_SPINCOUNT=300000: libgomp's own default when OMP_WAIT_POLICY
          is unset, i.e. what mxlora did before it chose its waiting policy;
  new     mxlora's default (no variable set);
  1-thread  one thread, the floor a shared machine should never fall below.
Every round runs all variants in turn (rotating which goes first), and the
report gives per condition and workload the median (min-max) of each
variant and its ratio to the first variant's median (speed: > 1 is faster).
Figures from one run only; name the CPU (printed first) with them.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from bench_host import cpu_name


def parse_variant(text):
    label, _, env = text.partition(":")
    label, _, build = label.partition("@")
    pairs = dict(kv.split("=", 1) for kv in env.split("+") if kv)
    threads = int(pairs.pop("threads", 2))
    return {"label": label, "build": build or None, "env": pairs, "threads": threads}


def run_workload(name, variant, args, tmp):
    build = variant["build"] or args.build
    env = dict(os.environ)
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(k, None)  # the variant alone decides
    env.update(variant["env"])
    nt = str(variant["threads"])
    if name == "demo":
        cmd = [os.path.join(build, "mxlora"), "train", os.path.join(args.repo, "recipes/demo.json"),
               "--model", os.path.join(tmp, "demo-model"), "--out", os.path.join(tmp, "demo-out"),
               "--steps", str(args.demo_steps), "--eval-every", "0", "--overwrite", "--threads", nt]
    elif name == "train":
        cmd = [os.path.join(build, "bench_train"), "--model", os.path.join(tmp, "bench"),
               "--seq", "256", "--steps", "2", "--warmup", "1", "--reps", "1", "--no-limits",
               "--no-prefill", "--threads", nt, "--json"]
    else:
        cmd = [os.path.join(build, "bench_forward"), "--model", os.path.join(tmp, "bench"),
               "--threads", nt, "--prompt", "64", "--decode", "32", "--reps", "1", "--no-limits"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=args.repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("busy_machine: %s failed (%d):\n%s" % (" ".join(cmd), p.returncode, p.stderr))
    if name == "demo":
        return args.demo_steps / wall  # steps/s of the whole command
    if name == "train":
        return json.loads(p.stdout.strip().splitlines()[-1])["tokens_per_s"]
    m = re.search(r"decode ([0-9.]+) tok/s", p.stdout)
    if not m:
        sys.exit("busy_machine: no decode figure in:\n" + p.stdout)
    return float(m.group(1))


UNITS = {"demo": "steps/s", "train": "tokens/s", "decode": "tokens/s"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", default="0,2", help="extra busy processes per condition")
    ap.add_argument("--workloads", default="demo,train,decode")
    ap.add_argument("--demo-steps", type=int, default=20)
    ap.add_argument("--hog-session", choices=("same", "own"), default="same",
                    help="the busy loops' session: this script's (default) or one of their own")
    ap.add_argument("--variant", action="append", default=[],
                    help="LABEL[@BUILD]:K=V+K=V (repeatable; default today, new, 1-thread)")
    args = ap.parse_args()
    args.repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    variants = [parse_variant(v) for v in (args.variant or [
        "today:GOMP_SPINCOUNT=300000", "new:", "1-thread:threads=1"])]
    loads = [int(x) for x in args.load.split(",")]
    workloads = args.workloads.split(",")
    print("busy_machine: %s; busy loops in %s session" % (
        cpu_name(), "this" if args.hog_session == "same" else "their own"))
    print("variants: " + "; ".join("%s = %s%s%s" % (
        v["label"], " ".join("%s=%s" % kv for kv in v["env"].items()) or "(default env)",
        ", %d thread(s)" % v["threads"], ", build " + v["build"] if v["build"] else "")
        for v in variants))
    tmp = tempfile.mkdtemp(prefix="mxl-busy-")
    results = {}  # (load, workload, label) -> [figures]
    try:
        subprocess.run([os.path.join(args.build, "mxlora"), "tiny", os.path.join(tmp, "bench"),
                        "--preset", "bench", "--layout", "hf"], check=True, capture_output=True)
        if "demo" in workloads:  # writes the demo's model: not timed
            run_workload("demo", variants[0], args, tmp)
        for r in range(args.rounds):
            for load in loads:
                hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"],
                                         start_new_session=args.hog_session == "own")
                        for _ in range(load)]
                try:
                    for w in workloads:
                        order = variants[r % len(variants):] + variants[:r % len(variants)]
                        for v in order:
                            x = run_workload(w, v, args, tmp)
                            results.setdefault((load, w, v["label"]), []).append(x)
                            print("round %d load %d %-6s %-10s %10.2f %s  (loadavg %s)" % (
                                r + 1, load, w, v["label"], x, UNITS[w],
                                open("/proc/loadavg").read().split()[0]), flush=True)
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nmedian (min-max) over %d rounds; ratio = median / %s's median (> 1: faster)"
          % (args.rounds, variants[0]["label"]))
    for load in loads:
        for w in workloads:
            base = statistics.median(results[(load, w, variants[0]["label"])])
            for v in variants:
                xs = results[(load, w, v["label"])]
                med = statistics.median(xs)
                print("load %d  %-6s %-10s %9.2f (%.2f-%.2f) %-8s  ratio %.2f" % (
                    load, w, v["label"], med, min(xs), max(xs), UNITS[w], med / base))


if __name__ == "__main__":
    # SIGTERM/SIGHUP (kill, a closed terminal) unwind through the finally
    # blocks, so that the busy-loop processes never outlive the script.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))
    main()
