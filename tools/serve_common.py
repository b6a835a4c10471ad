"""Shared by tools/openai_client_check.py and tools/load_test.py: a tiny
model with adapters trained on the spot, `mxlora serve` started on a free
loopback port, and `mxlora generate` as the reference for greedy answers.

Only the standard library: the scripts that import this add their own
dependencies (the official `openai` client for the check).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_mxlora():
    return os.path.join(REPO, "build", "mxlora")


def run(cmd, **kw):
    """Runs a command, failing loudly with its output."""
    p = subprocess.run(cmd, capture_output=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"))
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p


def make_model_and_adapters(mxlora, work, n_adapters=3, steps=60):
    """A tiny checkpoint and `n_adapters` adapters trained on different data
    long enough (60 steps at lr 1e-2, about a CPU-minute each) that the
    model answers in harmony's final channel, so that chat answers carry
    text and each adapter's answers differ. Kept in `work` for reuse.
    Returns (model_dir, [adapter paths])."""
    model = os.path.join(work, "m")
    if not os.path.exists(os.path.join(model, "config.json")):
        run([mxlora, "tiny", model, "--layout", "hf", "--seed", "2"])
    templates = [
        ('{"prompt": "Say %d", "completion": "%d!"}', lambda i: (i, i * 7)),
        ('{"prompt": "Name %d", "completion": "Number %d is fine."}', lambda i: (i, i)),
        # reasoning on the analysis channel too (vLLM's reasoning_content)
        ('{"messages": [{"role": "user", "content": "Color %d"}, {"role": "assistant", '
         '"thinking": "Colors: %d.", "content": "Blue."}]}', lambda i: (i, i + 1)),
        ('{"prompt": "Count %d", "completion": "%d, then more."}', lambda i: (i, i * 2)),
    ]
    paths = []
    for a in range(n_adapters):
        out = os.path.join(work, f"run{a}")
        adapter = os.path.join(out, "adapter.mxla")
        if not os.path.exists(adapter):
            data = os.path.join(work, f"d{a}.jsonl")
            tmpl, args = templates[a % len(templates)]
            with open(data, "w") as f:
                for i in range(12):
                    f.write(tmpl % args(i) + "\n")
            print(f"training adapter {a} ({steps} steps) ...", flush=True)
            run([mxlora, "train", "--model", model, "--data", data, "--out", out,
                 "--steps", str(steps), "--seq-len", "192", "--batch-size", "4", "--lr", "1e-2",
                 "--set", "eval_count=2", "--rank", "8", "--seed", str(a + 3)])
        paths.append(adapter)
    return model, paths


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def train_tool_adapter(mxlora, model, work):
    """An adapter that answers "Weather in Paris?" with a call of
    get_weather (60 steps, a few seconds, on the tiny model)."""
    out = os.path.join(work, "run_tools")
    adapter = os.path.join(out, "adapter.mxla")
    if not os.path.exists(adapter):
        data = os.path.join(work, "tools.jsonl")
        sample = {"tools": [WEATHER], "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}]}
        with open(data, "w") as f:
            for _ in range(4):
                f.write(json.dumps(sample) + "\n")
        print("training the tool-calling adapter ...", flush=True)
        run([mxlora, "train", "--model", model, "--data", data, "--out", out, "--steps", "60",
                "--lr", "1e-2", "--seq-len", "384", "--rank", "8", "--warmup-steps", "3",
                "--set", "eval_fraction=0"])
    return adapter


class Server:
    """`mxlora serve ... --port 0`; the port is read from its banner."""

    def __init__(self, mxlora, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([mxlora, "serve", *args, "--port", "0"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise SystemExit("mxlora serve exited:\n" + open(log_path).read())
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(log_path).read())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.1)
        if self.port is None:
            self.stop()
            raise SystemExit("mxlora serve did not start:\n" + open(log_path).read())
        self.url = f"http://127.0.0.1:{self.port}"

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        """SIGTERM (drain), then the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def post(url, path, body, timeout=300, headers=None):
    """POST JSON; returns (status, text)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")


def get(url, path, timeout=60):
    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")


def generate(mxlora, model, adapters, prompt, max_tokens, chat, seed=0, backend="cpu",
             show_analysis=False):
    """What `mxlora generate` prints greedily for these adapters ([(path,
    scale)]), decoded as a JSON client sees text (invalid UTF-8 as U+FFFD,
    one per maximal bad sequence). A raw answer that ended at a stop token
    ends with its name (see strip_stop_name)."""
    cmd = [mxlora, "generate", "--model", model, "--prompt", prompt, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--seed", str(seed), "--backend", backend]
    if chat:
        cmd.append("--chat")
    if show_analysis:
        cmd.append("--show-analysis")
    for path, scale in adapters:
        cmd += ["--adapter", f"{path}:{scale}"]
    out = run(cmd).stdout
    if out.endswith(b"\n"):
        out = out[:-1]
    text = out.decode("utf-8", errors="replace")
    return text


def split_channels(shown):
    """(analysis, final) of `generate --chat --show-analysis` output, which
    puts "[analysis]" / "[final]" lines before each channel's text."""
    parts = {"analysis": [], "final": []}
    current = "final"
    for piece in re.split(r"(\[(?:analysis|final|commentary)\]\n)", shown):
        m = re.fullmatch(r"\[(analysis|final|commentary)\]\n", piece)
        if m:
            current = "final" if m.group(1) == "commentary" else m.group(1)
        else:
            parts[current].append(piece)
    return "".join(parts["analysis"]), "".join(parts["final"])


def strip_stop_name(text):
    """generate prints a raw answer's stop token by name ("<|return|>")."""
    m = re.search(r"<\|[a-z_0-9]+\|>$", text)
    return (text[: m.start()], True) if m else (text, False)


def workdir(path):
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    return tempfile.mkdtemp(prefix="mxl_serve_")
