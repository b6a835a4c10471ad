#!/usr/bin/env python3
"""LoRA training speed and memory: mxlora (build/bench_train) against
Hugging Face transformers + PEFT on the CPU, same model, same adapter, same
batch, measured in the same run.

    python3 bench/train_vs_peft.py [--build build-bench] [--model DIR]
        [--batch 1] [--seq 512] [--steps 3] [--warmup 1] [--rounds 3]
        [--threads 2] [--rank 16] [--alpha 32] [--peft fp32,bf16] [--isa avx2] [--spin]

The model: without --model, the bench preset written by
`mxlora tiny DIR --preset bench --layout hf` into a temporary folder. Both
sides read that one checkpoint: mxlora keeps the experts in MXFP4 (mapped);
transformers loads it in fp32 and dequantizes the MXFP4 experts itself
(Mxfp4Config(dequantize=True), as it does on every CPU).

The adapter: rank r, lora_alpha, no dropout, PEFT's default initialisation,
on q_proj, k_proj, v_proj, o_proj (target_modules) and every expert's
gate_up_proj and down_proj (target_parameters) of every layer; mxlora's
`--targets all` is the same set (the trainable parameter counts are
printed and must agree).

A step on both sides: zero the gradients, forward over batch x seq tokens
with next-token cross-entropy (mean over the B*(T-1) predicted tokens),
backward, AdamW (lr 1e-4, no weight decay). The tokens are the same
(SplitMix64 with seed 2, as bench_train draws them), so the first losses,
computed before any update with B = 0, must agree: a check that both sides
run the same model on the same data. PEFT runs as transformers trains by
default: eager attention (learned sinks), no gradient checkpointing.

Each round runs mxlora and each PEFT variant (--peft fp32,bf16: fp32, and
the forward under torch.autocast(bf16), transformers' CPU mixed precision)
as separate processes, rotating which goes first; each reports the median of its timed steps (after its warm-up
steps), and its peak RSS is the kernel's ru_maxrss of that process
(os.wait4). Reported: per round and the medians over rounds (min-max), and
the ratios mxlora/PEFT, from wall time and from CPU time (threads x tokens /
CPU seconds of the step: on a shared machine, what each would do on idle
cores). Target (issue): mxlora >= 5x the tokens/s at
<= 1/4 of the peak RSS against PEFT in fp32, >= 3x against PEFT with
torch.autocast(bf16) (--peft fp32,bf16: both, the default).

--isa avx2 runs both sides as on a host without AVX-512 (Intel client CPUs,
AMD Zen 2/3) on one that has it: mxlora's AVX2 kernel table
(MXL_CPU_ISA=avx2), PyTorch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2), MKL
and oneDNN capped at AVX2 (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA /
DNNL_MAX_CPU_ISA). There PyTorch has no bf16 matmul kernel worth timing
(about 1 GFLOP/s), so take --peft fp32.

--spin adds a side "mxlora spin": mxlora with OMP_WAIT_POLICY=active, its
threads spinning between parallel regions as PyTorch's do by default (the
setting for a machine of one's own; mxlora's default waits passively, see
README "Threads on a shared machine"). Ratios are printed for each mxlora
side.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_host import cpu_name

MASK64 = (1 << 64) - 1


def splitmix_tokens(n, vocab, seed=2):
    """bench_rand of bench/bench_common.h: the tokens bench_train trains on."""
    out, state = [], seed
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append((z ^ (z >> 31)) % vocab)
    return out


# ---------------------------------------------------------------- PEFT worker

def peft_worker(a):
    """Runs in its own process: trains and prints one JSON line."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssForCausalLM, Mxfp4Config

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = GptOssForCausalLM.from_pretrained(
        a.model, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True))
    load_s = time.perf_counter() - t0
    cfg = LoraConfig(
        r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    vocab = model.config.vocab_size
    ids = torch.tensor(splitmix_tokens(a.batch * a.seq, vocab), dtype=torch.long)
    ids = ids.view(a.batch, a.seq)
    times, cpus, losses = [], [], []
    for step in range(a.warmup + a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        if a.precision == "bf16":  # transformers' mixed precision on the CPU
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
        else:
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        losses.append(float(out.loss))
        if step >= a.warmup:
            times.append(dt)
            cpus.append(dc)
    med = statistics.median(times)
    print(json.dumps({
        "tokens_per_step": a.batch * a.seq, "step_s_median": med,
        "tokens_per_s": a.batch * a.seq / med, "first_loss": losses[0], "step_s": times,
        "step_cpu_s": cpus,
        "trainable": sum(p.numel() for p in params), "load_s": load_s,
        "attn": model.config._attn_implementation,
        "experts": getattr(model.config, "_experts_implementation", None),
        "torch_threads": torch.get_num_threads(),
        "torch_isa": torch.backends.cpu.get_cpu_capability(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


# ---------------------------------------------------------------- driver

def run_measured(cmd, env=None):
    """Runs cmd and returns (its JSON report, its own ru_maxrss in bytes)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        # Read stdout to the end, then reap with wait4 to get this child's rusage.
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace"))
            raise SystemExit(f"{' '.join(cmd[:2])} failed with status {p.returncode}")
    wall = time.perf_counter() - t0
    line = [l for l in out.decode().splitlines() if l.startswith("{")][-1]
    rep = json.loads(line)
    rep["ru_maxrss_bytes"] = ru.ru_maxrss * 1024
    rep["wall_s"] = wall
    return rep


def stat(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(xs, scale=1.0, d=2):
    m, lo, hi = stat([x * scale for x in xs])
    return f"{m:.{d}f} ({lo:.{d}f}-{hi:.{d}f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--peft", default="fp32,bf16",
                    help="PEFT variants: fp32 and/or bf16 (torch.autocast bf16 on the CPU)")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: both sides as on a host without AVX-512 (see above)")
    ap.add_argument("--spin", action="store_true",
                    help="also time mxlora with OMP_WAIT_POLICY=active")
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)  # worker's variant
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.alpha is None:
        a.alpha = 2.0 * a.rank
    if a.worker:
        return peft_worker(a)

    tmp = None
    if not a.model:
        tmp = tempfile.mkdtemp(prefix="mxl_peft_bench_")
        subprocess.run([os.path.join(a.build, "mxlora"), "tiny", tmp, "--preset", "bench",
                        "--layout", "hf"], check=True, stdout=subprocess.DEVNULL)
        a.model = tmp
    common = ["--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps),
              "--warmup", str(a.warmup)]
    mx_cmd = [os.path.join(a.build, "bench_train"), "--model", a.model, "--threads",
              str(a.threads), "--reps", "1", "--rank", str(a.rank), "--alpha", str(a.alpha),
              "--targets", "all", "--no-limits", "--no-prefill", "--json"] + common
    hf_cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", a.model,
              "--threads", str(a.threads), "--rank", str(a.rank), "--alpha", str(a.alpha)] + common
    variants = [v for v in a.peft.split(",") if v]
    if not variants or any(v not in ("fp32", "bf16") for v in variants):
        raise SystemExit("--peft: a list of fp32 and bf16")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), TRANSFORMERS_VERBOSITY="error")
    if a.isa == "avx2":
        env.update(MXL_CPU_ISA="avx2", ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2",
                   ONEDNN_MAX_CPU_ISA="AVX2", DNNL_MAX_CPU_ISA="AVX2")
    print(f"train_vs_peft: {cpu_name()}")
    kernels = subprocess.run([os.path.join(a.build, "mxlora"), "version"], env=env,
                             capture_output=True, text=True).stdout.splitlines()
    print("mxlora", next((l for l in kernels if l.startswith("cpu kernels")), "kernels: ?"),
          "(emulating an AVX2 host)" if a.isa == "avx2" else "")
    print(f"{a.model}, batch {a.batch} x seq {a.seq}, {a.threads} threads, "
          f"rank {a.rank} alpha {a.alpha:g}, {a.warmup} warm-up + {a.steps} timed steps per "
          f"process, {a.rounds} rounds (order rotates)")
    print("mxlora:", " ".join(mx_cmd))
    print("peft:  ", " ".join(hf_cmd), "--precision", "|".join(variants))
    spin_env = dict(env, OMP_WAIT_POLICY="active")
    mx_sides = [("mxlora", mx_cmd, [], env)] + (
        [("mxlora spin", mx_cmd, [], spin_env)] if a.spin else [])
    hf_sides = [(f"PEFT {v}", hf_cmd + ["--precision", v], [], env) for v in variants]
    sides = mx_sides + hf_sides
    try:
        for r in range(a.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for name, cmd, acc, side_env in order:
                rep = run_measured(cmd, side_env)
                acc.append(rep)
                rep["cores"] = statistics.median(
                    c / w for c, w in zip(rep["step_cpu_s"], rep["step_s"]))
                rep["tokens_per_cpu_s"] = rep["tokens_per_step"] * a.threads / statistics.median(
                    rep["step_cpu_s"])
                print(f"round {r + 1} {name:11s}: {rep['tokens_per_s']:8.2f} tokens/s "
                      f"(step {rep['step_s_median']:.3f} s, {rep['cores']:.2f} cores; by cpu time "
                      f"{rep['tokens_per_cpu_s']:.2f}), peak RSS "
                      f"{rep['ru_maxrss_bytes'] / 1e9:.3f} GB, first loss {rep['first_loss']:.5f}",
                      flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    mx = sides[0][2]
    hf = hf_sides[0][2]
    print(f"\nPEFT: attention {hf[0]['attn']}, experts {hf[0]['experts']}, torch threads "
          f"{hf[0]['torch_threads']}, torch CPU kernels {hf[0]['torch_isa']}; "
          f"trainable parameters: PEFT {hf[0]['trainable']}, "
          f"mxlora {mx[0]['trainable']}"
          f"{'' if hf[0]['trainable'] == mx[0]['trainable'] else '  MISMATCH'}")
    for name, _, acc, _ in hf_sides:
        print(f"first loss (before any update): mxlora {mx[0]['first_loss']:.5f}, "
              f"{name} {acc[0]['first_loss']:.5f}, relative difference "
              f"{abs(mx[0]['first_loss'] - acc[0]['first_loss']) / acc[0]['first_loss']:.2e}")
    print(f"\nmedian (min-max) over {a.rounds} rounds")
    print(f"{'':11s} {'tokens/s':>24s} {'step s':>24s} {'peak RSS GB':>22s} {'cores used':>18s} "
          f"{'tokens/s by cpu time':>24s}")
    for name, _, acc, _ in sides:
        print(f"{name:11s} {fmt([x['tokens_per_s'] for x in acc]):>24s} "
              f"{fmt([x['step_s_median'] for x in acc], d=3):>24s} "
              f"{fmt([x['ru_maxrss_bytes'] for x in acc], 1e-9, 3):>22s} "
              f"{fmt([x['cores'] for x in acc]):>18s} "
              f"{fmt([x['tokens_per_cpu_s'] for x in acc]):>24s}")
    targets = {"PEFT fp32": 5.0, "PEFT bf16": 3.0}
    print(f"\nratios per round (mxlora / PEFT), median (min-max):")
    for mx_name, _, mx, _ in mx_sides:
        for name, _, hf, _ in hf_sides:
            speed = [m["tokens_per_s"] / h["tokens_per_s"] for m, h in zip(mx, hf)]
            speed_cpu = [m["tokens_per_cpu_s"] / h["tokens_per_cpu_s"] for m, h in zip(mx, hf)]
            mem = [m["ru_maxrss_bytes"] / h["ru_maxrss_bytes"] for m, h in zip(mx, hf)]
            t = targets[name]
            label = name if mx_name == "mxlora" else f"{name} ({mx_name})"
            print(f"  {label}: tokens/s {fmt(speed)}x   target >= {t:g}x   "
                  f"{'MET' if statistics.median(speed) >= t else 'not met'}")
            print(f"  {label}: tokens/s by cpu time {fmt(speed_cpu)}x (threads x tokens / cpu "
                  f"seconds: what each would do on idle cores)")
            print(f"  {label}: peak RSS {fmt(mem, d=3)}x  target <= 0.25x "
                  f"{'MET' if statistics.median(mem) <= 0.25 else 'not met'}")

if __name__ == "__main__":
    main()
