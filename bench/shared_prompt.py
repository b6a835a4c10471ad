#!/usr/bin/env python3
"""Time to first token for conversations that share a long system prompt.

Starts `mxlora serve` once per setting, sends two chat requests with the
same system prompt (SYSTEM_WORDS random words) and different user messages
(USER_WORDS words each, longer than a prefill pass, so the kept cache's
sliding-window rings no longer hold the shared part), max_tokens 1, and
prints each request's prompt tokens, the cached tokens the server reports
(usage.prompt_tokens_details.cached_tokens) and its wall time. Settings:
the default (automatic: a head over the whole prompt while the KV budget
has room) and `--shared-prefix N` (default 256: one prefill pass, the
default before the automatic one).

    python3 bench/shared_prompt.py --model DIR [--build build] [--shared-prefix 256]
                                   [--system-words 350] [--user-words 150] [--port 8765]

Only the standard library; the model is any checkpoint folder (a
`mxlora tiny --shape gpt-oss-20b` one for the 20b figures)."""
import argparse
import json
import random
import signal
import subprocess
import sys
import time
import urllib.request


def words(seed, vocab, n):
    rng = random.Random(seed)
    return " ".join(rng.choice(vocab) for _ in range(n))


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=3600) as r:
        out = json.loads(r.read())
    return out, time.time() - t0


def wait_ready(port, proc):
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"mxlora serve exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).read()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit("mxlora serve did not start")


def run(args, extra):
    cmd = [f"{args.build}/mxlora", "serve", "--model", args.model, "--port", str(args.port),
           "--max-batch", "4", "--no-mmap", "--served-model-name", "m"] + extra
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_ready(args.port, proc)
        system = words(5, "the of model expert weights adapter training data token system prompt "
                       "user reply answer memory speed quality".split(), args.system_words)
        users = [words(7, "alpha beta gamma delta river mountain cloud stone paper light".split(),
                       args.user_words),
                 words(8, "red green blue yellow house garden window door table chair".split(),
                       args.user_words)]
        rows = []
        for user in users:
            body = {"model": "m", "max_tokens": 1, "temperature": 0,
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": user}]}
            out, secs = post(args.port, body)
            u = out["usage"]
            rows.append((u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"], secs))
        return rows
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--build", default="build")
    ap.add_argument("--shared-prefix", type=int, default=256)
    ap.add_argument("--system-words", type=int, default=350)
    ap.add_argument("--user-words", type=int, default=150)
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    for name, extra in (("automatic (default)", []),
                        (f"--shared-prefix {args.shared_prefix}",
                         ["--shared-prefix", str(args.shared_prefix)])):
        for i, (prompt, cached, secs) in enumerate(run(args, extra)):
            print(f"{name:24s} request {i + 1}: {prompt} prompt tokens, {cached} cached, "
                  f"{secs:.2f} s")


if __name__ == "__main__":
    main()
