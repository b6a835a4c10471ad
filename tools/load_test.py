#!/usr/bin/env python3
"""Load test of `mxlora serve`.

N concurrent clients (default 64) send greedy chat and completion
requests for D seconds (default 120), whole and streamed, over three
adapters (model set to an adapter, and mixes with scales through the
"adapters" extension), while another client loads, reloads (switching its
file) and unloads an adapter every second and some clients ask for that
adapter. Pass criteria:
  - no failed request, except the documented 404 (the churned adapter is
    unloaded at that moment) and 429 (queue full);
  - every answer equals what `mxlora generate` prints for the same
    adapters, scales and seed (the churned adapter: either of its files),
    so no answer was made with the wrong adapter;
  - the server's RSS is flat after warm-up (the first quarter): its
    largest value later is within 5 % + 16 MiB of its value at warm-up's
    end;
  - requests offering a function tool to an adapter trained to call it
    (about one in ten; tool_choice unset, "auto", "required" or naming it)
    all return that call: tool_calls with the trained name and arguments
    and finish_reason "tool_calls", whole and streamed;
  - SIGTERM afterwards drains and exits 0.
Prints the figures and a JSON summary; exit status 0 on a pass.

Usage:
  python3 tools/load_test.py [--mxlora build/mxlora] [--clients 64] [--seconds 120]
      [--work DIR] [--backend cpu]
A shorter run under AddressSanitizer (CI runs the same mix in C:
test_server's concurrent clients under tools/sanitize.sh):
  python3 tools/load_test.py --mxlora build-asan/mxlora --clients 16 --seconds 20 --no-rss-check
(ASan's quarantine keeps freed memory, so RSS grows there by design; a leak
would make the server's exit status non-zero instead.)
"""
import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time

import serve_common as sc

PROMPTS = ["Say 3", "Name 4", "Color 5", "Say 11", "Count 2"]


def request_kinds(names):
    """(model, extension adapters, [(name, scale)] used) per request kind."""
    a, b, c = names
    return [
        (a, None, [(a, 1.0)]),
        (b, None, [(b, 1.0)]),
        (c, None, [(c, 1.0)]),
        ("BASE", [{"name": a, "scale": 0.5}, {"name": b, "scale": 1.0}], [(a, 0.5), (b, 1.0)]),
        (c, [{"name": a, "scale": -0.5}], [(c, 1.0), (a, -0.5)]),
        ("BASE", None, []),
    ]


def sse_join(raw, chat):
    text, finish = [], None
    for block in raw.split("\n\n"):
        if not block.startswith("data: ") or block == "data: [DONE]":
            continue
        obj = json.loads(block[6:])
        if "error" in obj:
            raise RuntimeError(obj["error"]["message"])
        for ch in obj.get("choices", []):
            piece = ch.get("delta", {}).get("content") if chat else ch.get("text")
            if piece:
                text.append(piece)
            finish = ch.get("finish_reason") or finish
    return "".join(text), finish


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = {}
        self.mismatch = []
        self.errors = []
        self.latency = []
        self.tokens = 0

    def add(self, status, latency=None, tokens=0):
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1
            if latency is not None:
                self.latency.append(latency)
            self.tokens += tokens


def one_request(port, kind, prompt, chat, stream, max_tokens):
    model, extra, _ = kind
    body = {"model": model, "temperature": 0, "max_tokens": max_tokens, "seed": 0}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if extra:
        body["adapters"] = extra
    if stream:
        body["stream"] = True
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions" if chat else "/v1/completions",
                 json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read().decode("utf-8")
    conn.close()
    if r.status != 200:
        return r.status, raw, None, 0
    if stream:
        text, finish = sse_join(raw, chat)
        return 200, text, finish, None
    obj = json.loads(raw)
    ch = obj["choices"][0]
    text = ch["message"]["content"] if chat else ch["text"]
    return 200, text, ch["finish_reason"], obj["usage"]["completion_tokens"]


TOOL_CHOICES = [None, "auto", "required", {"type": "function", "function": {"name": "get_weather"}}]


def tool_request(port, stream, choice):
    """(status, (name, arguments) of the single call or the body, finish) of
    the weather question with the tool offered (and tool_choice `choice`)."""
    body = {"model": "weather", "temperature": 0, "max_tokens": 200, "seed": 0,
            "tools": [sc.WEATHER], "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    if choice is not None:
        body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read().decode("utf-8")
    conn.close()
    if r.status != 200:
        return r.status, raw, None
    if not stream:
        ch = json.loads(raw)["choices"][0]
        calls = ch["message"].get("tool_calls") or []
        got = [(c["function"]["name"], c["function"]["arguments"]) for c in calls]
        return 200, got, ch["finish_reason"]
    calls, finish = {}, None
    for block in raw.split("\n\n"):
        if not block.startswith("data: {"):
            continue
        for ch in json.loads(block[6:]).get("choices", []):
            for c in ch.get("delta", {}).get("tool_calls") or []:
                name, args = calls.get(c["index"], ("", ""))
                fn = c.get("function", {})
                calls[c["index"]] = (name + fn.get("name", ""), args + fn.get("arguments", ""))
            finish = ch.get("finish_reason") or finish
    return 200, [calls[i] for i in sorted(calls)], finish


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mxlora", default=sc.default_mxlora())
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--work")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="server CPU threads (0: all)")
    p.add_argument("--no-rss-check", action="store_true",
                   help="report RSS without judging it (ASan keeps freed memory in quarantine)")
    a = p.parse_args()
    work = sc.workdir(a.work)
    model, paths = sc.make_model_and_adapters(a.mxlora, work, 3)
    names = ["sql", "tone", "color"]
    adir = os.path.join(work, "adapters")
    os.makedirs(adir, exist_ok=True)
    for n, path in zip(names, paths):
        shutil.copy(path, os.path.join(adir, n + ".mxla"))
    base = os.path.basename(os.path.normpath(model))
    by_name = dict(zip(names, paths))

    # References: `mxlora generate` for every (kind, prompt, chat).
    kinds = request_kinds(names)
    churn_kind = ("churn", None, None)
    print("computing references with mxlora generate ...", flush=True)
    expected = {}
    for ki, (_, _, used) in enumerate(kinds):
        for prompt in PROMPTS:
            for chat in (0, 1):
                ref = sc.generate(a.mxlora, model, [(by_name[n], s) for n, s in used], prompt,
                                  a.max_tokens, chat, backend=a.backend)
                expected[(ki, prompt, chat)] = ref
    for prompt in PROMPTS:
        for chat in (0, 1):
            expected[("churn", prompt, chat)] = [
                sc.generate(a.mxlora, model, [(by_name[n], 1.0)], prompt, a.max_tokens, chat,
                            backend=a.backend) for n in ("sql", "tone")]

    args = ["--model", model, "--adapter-dir", adir, "--backend", a.backend,
            "--max-batch", "64", "--threads", str(a.threads)]
    for n, path in zip(names, paths):
        args += ["--adapter", f"{n}={path}"]
    args += ["--adapter", "weather=" + sc.train_tool_adapter(a.mxlora, model, work)]
    want_call = [("get_weather", json.dumps({"city": "Paris"}))]
    tool_stats = {"ok": 0, "failed": []}
    server = sc.Server(a.mxlora, args, os.path.join(work, "serve_load.log"))
    kinds = [(base if m == "BASE" else m, e, u) for m, e, u in kinds]
    stats = Stats()
    stop_at = time.time() + a.seconds
    churn_stats = {"ok": 0, "failed": []}

    def matches(text, finish, ref):
        r, had_stop = sc.strip_stop_name(ref)
        return text == ref or (finish == "stop" and had_stop and text == r)

    def client(seed):
        rng = random.Random(seed)
        while time.time() < stop_at:
            if rng.random() < 0.1:
                try:
                    status, got, finish = tool_request(server.port, rng.randrange(2),
                                                       rng.choice(TOOL_CHOICES))
                except Exception as e:  # noqa: BLE001
                    status, got, finish = "exception", repr(e), None
                with stats.lock:
                    if status == 200 and got == want_call and finish == "tool_calls":
                        tool_stats["ok"] += 1
                    elif status != 429:
                        tool_stats["failed"].append(f"{status} {finish}: {str(got)[:200]}")
                stats.add(status if status in (200, 429) else f"{status} (failed)")
                continue
            churn = rng.random() < 0.15
            ki = None if churn else rng.randrange(len(kinds))
            prompt = rng.choice(PROMPTS)
            chat = rng.randrange(2)
            stream = rng.randrange(2)
            t0 = time.time()
            try:
                status, text, finish, tokens = one_request(
                    server.port, churn_kind if churn else kinds[ki], prompt, chat, stream,
                    a.max_tokens)
            except Exception as e:  # noqa: BLE001 - any transport failure is a failure
                with stats.lock:
                    stats.errors.append(repr(e))
                stats.add("exception")
                continue
            if status != 200:
                documented = status == 429 or (status == 404 and churn)
                stats.add(status if documented else f"{status} (failed)")
                if not documented:
                    with stats.lock:
                        stats.errors.append(f"{status}: {text[:200]}")
                continue
            refs = expected[("churn", prompt, chat)] if churn else [expected[(ki, prompt, chat)]]
            if not any(matches(text, finish, r) for r in refs):
                with stats.lock:
                    stats.mismatch.append({"kind": "churn" if churn else kinds[ki][:2],
                                           "prompt": prompt, "chat": chat, "stream": stream,
                                           "got": text, "want": refs})
            stats.add(200, time.time() - t0, tokens or 0)

    def churner():
        files = ["sql.mxla", "tone.mxla"]
        step = 0
        while time.time() < stop_at:
            if step % 4 == 0:
                path, body = "/v1/load_lora_adapter", {"lora_name": "churn", "lora_path": files[0]}
            elif step % 4 == 3:
                path, body = "/v1/unload_lora_adapter", {"lora_name": "churn"}
            else:  # reload from the other file, then back
                path, body = "/v1/reload_lora_adapter", {"lora_name": "churn",
                                                         "lora_path": files[step % 4 == 1]}
            st, text = sc.post(server.url, path, body)
            if st == 200:
                churn_stats["ok"] += 1
            else:
                churn_stats["failed"].append(f"{path}: {st} {text[:200]}")
            step += 1
            time.sleep(1.0)

    rss = []

    def sampler():
        t0 = time.time()
        while time.time() < stop_at:
            rss.append((time.time() - t0, server.rss_kib()))
            time.sleep(1.0)

    print(f"{a.clients} clients for {a.seconds:.0f} s on port {server.port} ...", flush=True)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    threads += [threading.Thread(target=churner), threading.Thread(target=sampler)]
    t_start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t_start
    _, metrics = sc.get(server.url, "/metrics")
    exit_code = server.stop()

    warm = [kib for t, kib in rss if t <= a.seconds / 4]
    later = [kib for t, kib in rss if t > a.seconds / 4]
    rss_warm = warm[-1] if warm else 0
    rss_max_later = max(later) if later else rss_warm
    rss_flat = rss_max_later <= rss_warm * 1.05 + 16 * 1024
    failed = sum(v for k, v in stats.status.items() if k not in (200, 404, 429))
    lat = sorted(stats.latency)
    gen_tokens = next((float(line.split()[1]) for line in metrics.splitlines()
                       if line.startswith("mxlora_generation_tokens_total ")), 0.0)
    summary = {
        "clients": a.clients, "seconds": round(elapsed, 1),
        "requests": sum(stats.status.values()), "by_status": {str(k): v for k, v in stats.status.items()},
        "failed": failed, "mismatches": len(stats.mismatch),
        "adapter_changes_ok": churn_stats["ok"], "adapter_changes_failed": len(churn_stats["failed"]),
        "tool_calls_ok": tool_stats["ok"], "tool_calls_failed": len(tool_stats["failed"]),
        "generated_tokens": gen_tokens, "tokens_per_second": round(gen_tokens / elapsed, 1),
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 3) if lat else None,
        "rss_mib": {"start": round(rss[0][1] / 1024, 1) if rss else None,
                    "end_of_warmup": round(rss_warm / 1024, 1),
                    "max_after_warmup": round(rss_max_later / 1024, 1),
                    "end": round(rss[-1][1] / 1024, 1) if rss else None},
        "rss_mib_by_tenth": [round(rss[min(len(rss) - 1, i * len(rss) // 10)][1] / 1024, 1)
                             for i in range(11)] if rss else [],
        "rss_flat": rss_flat, "server_exit": exit_code,
        "references": sum(len(v) if isinstance(v, list) else 1 for v in expected.values()),
        "references_with_text": sum(
            1 for v in expected.values() for r in (v if isinstance(v, list) else [v]) if r),
    }
    for m in stats.mismatch[:5]:
        print("MISMATCH", json.dumps(m, ensure_ascii=False)[:600])
    for e in (stats.errors + churn_stats["failed"] + tool_stats["failed"])[:10]:
        print("ERROR", e)
    print(json.dumps(summary, indent=1))
    ok = (failed == 0 and not stats.mismatch and not churn_stats["failed"]
          and not tool_stats["failed"] and tool_stats["ok"] > 0
          and (rss_flat or a.no_rss_check)
          and exit_code == 0 and stats.status.get(200, 0) > 0)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
