#!/usr/bin/env python3
"""Checks `mxlora serve` with the official `openai` Python client.

On a tiny model with three adapters trained here (or --model and
--adapter NAME=FILE given), it starts the server and, through the client:
  1. models.list() shows the base and every adapter (vLLM's listing);
  2. chat.completions and completions, whole and streamed, with the model
     set to an adapter and with several adapters and scales in the
     "adapters" extension (extra_body): every greedy answer equals what
     `mxlora generate` prints for the same adapters and scales, streamed
     answers equal whole ones, usage counts add up, the streamed usage
     chunk arrives with stream_options.include_usage, a repeated prompt
     comes from the prefix cache (usage.prompt_tokens_details.cached_tokens),
     and so does a conversation's next turn,
     reasoning_content is where the client exposes extra fields;
  3. adapters loaded, reloaded and unloaded at runtime (vLLM's endpoints)
     are served at once;
  4. errors surface as the client's exception classes (NotFoundError,
     BadRequestError, AuthenticationError with --api-key), and the server
     keeps serving;
  5. function tools: an adapter trained here to call get_weather returns
     the call as the client's tool_calls (finish_reason "tool_calls",
     arguments that parse to the trained ones), the same through the
     client's streaming helper, which assembles the call from its chunks,
     the same with tool_choice "required" or naming the function, and the
     next turn with the tool's result is accepted.
Exit status 0 when all hold.

With --record DIR it instead records the request bodies (and the
Authorization header) the client sends for those calls into DIR, against a
stand-in server: tests/fixtures/openai_client/ was made so, and
test_server_api checks that mxlora parses every one as intended.

Usage:
  python3 -m venv .venv && .venv/bin/pip install openai
  .venv/bin/python tools/openai_client_check.py [--mxlora build/mxlora] [--work DIR]
  .venv/bin/python tools/openai_client_check.py --record tests/fixtures/openai_client
"""
import argparse
import http.server
import json
import os
import shutil
import sys
import threading

import openai

import serve_common as sc

FAILURES = []


def check(cond, what):
    print(("PASS " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def chat_stream_text(stream):
    """(content, reasoning, finish, usage chunk seen, usage) of a stream."""
    content, reasoning, finish, usage_only, usage = [], [], None, False, None
    for chunk in stream:
        if not chunk.choices:
            usage_only = chunk.usage is not None
            usage = chunk.usage
            continue
        c = chunk.choices[0]
        if c.delta.content:
            content.append(c.delta.content)
        r = getattr(c.delta, "reasoning_content", None)
        if r:
            reasoning.append(r)
        if c.finish_reason:
            finish = c.finish_reason
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    return "".join(content), "".join(reasoning), finish, usage_only, usage


def same(server_text, finish, reference):
    ref, had_stop = sc.strip_stop_name(reference)
    return server_text == reference or (finish == "stop" and had_stop and server_text == ref)


def run_checks(a):
    work = sc.workdir(a.work)
    if a.model:
        model = a.model
        adapters = [tuple(s.split("=", 1)) for s in a.adapter]
    else:
        model, paths = sc.make_model_and_adapters(a.mxlora, work, 3)
        adapters = [("sql", paths[0]), ("tone", paths[1]), ("color", paths[2])]
    adir = os.path.join(work, "adapters")
    os.makedirs(adir, exist_ok=True)
    for name, path in adapters:
        shutil.copy(path, os.path.join(adir, name + ".mxla"))
    by_name = dict(adapters)
    args = ["--model", model, "--adapter-dir", adir, "--backend", a.backend]
    for name, path in adapters[:2]:
        args += ["--adapter", f"{name}={path}"]
    server = sc.Server(a.mxlora, args, os.path.join(work, "serve.log"))
    base = os.path.basename(os.path.normpath(model))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    try:
        ids = [m.id for m in client.models.list().data]
        check(ids == [base] + [n for n, _ in adapters[:2]], f"models.list: {ids}")

        def ref(chat, prompt, adapter_scales, n):
            return sc.generate(a.mxlora, model, [(by_name[x], s) for x, s in adapter_scales],
                               prompt, n, chat, backend=a.backend)

        # chat: model = an adapter; then several adapters with scales.
        cases = [(adapters[0][0], None, [(adapters[0][0], 1.0)]),
                 (base, [{"name": adapters[0][0], "scale": 0.5},
                         {"name": adapters[1][0], "scale": 1.5}],
                  [(adapters[0][0], 0.5), (adapters[1][0], 1.5)])]
        for model_id, extra, used in cases:
            body = {"adapters": extra} if extra else None
            r = client.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": "Say 3"}],
                temperature=0, max_tokens=40, extra_body=body)
            text = r.choices[0].message.content
            expected = ref(True, "Say 3", used, 40)
            check(same(text, r.choices[0].finish_reason, expected),
                  f"chat {model_id} {extra}: equals generate ({len(text)} chars)")
            check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens and
                  r.usage.completion_tokens <= 40, f"chat usage {r.usage}")
            s = client.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": "Say 3"}],
                temperature=0, max_tokens=40, extra_body=body, stream=True,
                stream_options={"include_usage": True})
            content, reasoning, finish, usage_only, usage = chat_stream_text(s)
            check(content == text and finish == r.choices[0].finish_reason,
                  f"chat stream {model_id}: equals the whole answer")
            check(usage_only and usage.completion_tokens == r.usage.completion_tokens,
                  "chat stream: usage chunk")
            # the same prompt again: all of it but its last token comes
            # from the prefix cache, reported where OpenAI reports it
            details = getattr(usage, "prompt_tokens_details", None)
            check(details is not None and details.cached_tokens == usage.prompt_tokens - 1,
                  f"chat stream: the repeated prompt is cached ({details})")
            reasoning_whole = getattr(r.choices[0].message, "reasoning_content", None) or ""
            check(reasoning == reasoning_whole, "chat stream: reasoning_content equals the whole")
            # the conversation's next turn repeats the first prompt: at
            # least that much comes from the prefix cache
            if text:
                nxt = client.chat.completions.create(
                    model=model_id, temperature=0, max_tokens=8, extra_body=body,
                    messages=[{"role": "user", "content": "Say 3"},
                              {"role": "assistant", "content": text},
                              {"role": "user", "content": "Say 4"}])
                cached = nxt.usage.prompt_tokens_details.cached_tokens
                check(r.usage.prompt_tokens - 1 <= cached < nxt.usage.prompt_tokens,
                      f"chat turn 2: {cached} of {nxt.usage.prompt_tokens} prompt tokens "
                      f"cached (turn 1: {r.usage.prompt_tokens})")

        # the analysis channel as reasoning_content (the third adapter was
        # trained with "thinking"; it is loaded at runtime below, so ask it
        # through a second server-side name first).
        name3, path3 = adapters[2]
        st, _ = sc.post(server.url, "/v1/load_lora_adapter",
                        {"lora_name": "thinker", "lora_path": name3 + ".mxla"})
        r = client.chat.completions.create(
            model="thinker", messages=[{"role": "user", "content": "Color 2"}], temperature=0,
            max_tokens=60)
        reasoning = getattr(r.choices[0].message, "reasoning_content", None) or ""
        analysis, final = sc.split_channels(sc.generate(
            a.mxlora, model, [(path3, 1.0)], "Color 2", 60, True, backend=a.backend,
            show_analysis=True))
        check(st == 200 and reasoning == analysis and r.choices[0].message.content == final,
              f"reasoning_content {reasoning!r} and content {r.choices[0].message.content!r} "
              f"equal generate --show-analysis")
        s = client.chat.completions.create(
            model="thinker", messages=[{"role": "user", "content": "Color 2"}], temperature=0,
            max_tokens=60, stream=True)
        content, sreason, _, _, _ = chat_stream_text(s)
        check(sreason == reasoning and content == r.choices[0].message.content,
              "streamed reasoning_content and content equal the whole")
        sc.post(server.url, "/v1/unload_lora_adapter", {"lora_name": "thinker"})

        # completions, raw text.
        for model_id, extra, used in [(adapters[1][0], None, [(adapters[1][0], 1.0)]),
                                      (base, [{"name": adapters[1][0], "scale": -1},
                                              {"name": adapters[0][0], "scale": 2}],
                                       [(adapters[1][0], -1), (adapters[0][0], 2)])]:
            body = {"adapters": extra} if extra else None
            r = client.completions.create(model=model_id, prompt="Once upon", temperature=0,
                                          max_tokens=24, extra_body=body)
            text = r.choices[0].text
            check(same(text, r.choices[0].finish_reason, ref(False, "Once upon", used, 24)),
                  f"completion {model_id} {extra}: equals generate")
            s = client.completions.create(model=model_id, prompt="Once upon", temperature=0,
                                          max_tokens=24, extra_body=body, stream=True)
            streamed = "".join(c.choices[0].text for c in s if c.choices)
            check(streamed == text, f"completion stream {model_id}: equals the whole answer")

        # runtime adapters: load the third, use it, reload it from another file, unload it.
        st, _ = sc.post(server.url, "/v1/load_lora_adapter",
                        {"lora_name": name3, "lora_path": name3 + ".mxla"})
        check(st == 200, f"load_lora_adapter {name3}: {st}")
        check(name3 in [m.id for m in client.models.list().data], "listed after loading")
        r = client.completions.create(model=name3, prompt="Color 2", temperature=0, max_tokens=16)
        check(same(r.choices[0].text, r.choices[0].finish_reason,
                   ref(False, "Color 2", [(name3, 1.0)], 16)), "the loaded adapter answers")
        st, _ = sc.post(server.url, "/v1/reload_lora_adapter",
                        {"lora_name": name3, "lora_path": adapters[0][0] + ".mxla"})
        check(st == 200, f"reload_lora_adapter: {st}")
        r = client.completions.create(model=name3, prompt="Color 2", temperature=0, max_tokens=16)
        check(same(r.choices[0].text, r.choices[0].finish_reason,
                   ref(False, "Color 2", [(adapters[0][0], 1.0)], 16)),
              "the reloaded adapter answers with the new file")
        st, _ = sc.post(server.url, "/v1/unload_lora_adapter", {"lora_name": name3})
        check(st == 200, f"unload_lora_adapter: {st}")

        tool_checks(a, client, adir, server, model)

        # errors as the client's exceptions.
        def raises(cls, fn):
            try:
                fn()
            except cls:
                return True
            except Exception as e:  # noqa: BLE001 - the wrong class is the failure
                print("   got", type(e).__name__, e)
            return False

        check(raises(openai.NotFoundError, lambda: client.completions.create(
            model=name3, prompt="x", max_tokens=2)), "unloaded adapter: NotFoundError")
        check(raises(openai.BadRequestError, lambda: client.chat.completions.create(
            model=base, messages=[{"role": "user", "content": "x"}], temperature=5)),
            "temperature 5: BadRequestError")
        check(raises(openai.BadRequestError, lambda: client.chat.completions.create(
            model=base, messages=[{"role": "user", "content": "x"}], n=2)), "n=2: BadRequestError")
        check(raises(openai.APIStatusError, lambda: client.completions.create(
            model=base, prompt="x" * (2 << 20), max_tokens=2)), "a 2 MiB prompt: 413")
        check(sc.get(server.url, "/health")[0] == 200, "still serving")
    finally:
        check(server.stop() == 0, "SIGTERM: clean exit")

    # An API key.
    keyed = sc.Server(a.mxlora, ["--model", model, "--backend", a.backend, "--api-key", "k3y"],
                      os.path.join(work, "serve_key.log"))
    try:
        good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="k3y")
        bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope")
        check(len(good.models.list().data) == 1, "API key: accepted")
        try:
            bad.models.list()
            check(False, "wrong API key: AuthenticationError")
        except openai.AuthenticationError:
            check(True, "wrong API key: AuthenticationError")
    finally:
        keyed.stop()
    print(f"{len(FAILURES)} failed" if FAILURES else "all passed", f"(openai {openai.__version__})")
    return 1 if FAILURES else 0


def tool_checks(a, client, adir, server, model):
    shutil.copy(sc.train_tool_adapter(a.mxlora, model, sc.workdir(a.work)),
                os.path.join(adir, "tools.mxla"))
    st, _ = sc.post(server.url, "/v1/load_lora_adapter",
                    {"lora_name": "weather", "lora_path": "tools.mxla"})
    check(st == 200, f"load the tool-calling adapter: {st}")
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="weather", messages=ask, tools=[sc.WEATHER],
                                       temperature=0, max_tokens=200)
    msg, calls = r.choices[0].message, r.choices[0].message.tool_calls or []
    check(r.choices[0].finish_reason == "tool_calls" and len(calls) == 1 and
          calls[0].type == "function" and calls[0].id.startswith("call_") and
          calls[0].function.name == "get_weather" and msg.content is None,
          f"a tool call: {r.choices[0].finish_reason} {calls} content {msg.content!r}")
    args = json.loads(calls[0].function.arguments) if calls else None
    check(args == {"city": "Paris"}, f"its arguments parse: {args}")
    with client.chat.completions.stream(model="weather", messages=ask, tools=[sc.WEATHER],
                                        temperature=0, max_tokens=200) as s:
        final = s.get_final_completion()
    scalls = final.choices[0].message.tool_calls or []
    check(final.choices[0].finish_reason == "tool_calls" and len(scalls) == 1 and
          scalls[0].function.name == "get_weather" and
          scalls[0].function.arguments == (calls[0].function.arguments if calls else None),
          f"streamed, the client assembles the same call: {scalls}")
    if calls:
        nxt = client.chat.completions.create(
            model="weather", tools=[sc.WEATHER], temperature=0, max_tokens=8,
            messages=ask + [msg.model_dump(exclude_none=True),
                            {"role": "tool", "tool_call_id": calls[0].id, "content": "20 C"}])
        check(nxt.usage.prompt_tokens > r.usage.prompt_tokens,
              f"the next turn with the tool's result: {nxt.usage.prompt_tokens} prompt tokens")
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        f = client.chat.completions.create(model="weather", messages=ask, tools=[sc.WEATHER],
                                           tool_choice=choice, temperature=0, max_tokens=200)
        fcalls = f.choices[0].message.tool_calls or []
        check(len(fcalls) == 1 and fcalls[0].function.name == "get_weather" and calls and
              fcalls[0].function.arguments == calls[0].function.arguments,
              f"tool_choice {choice}: the same call ({fcalls})")
    try:
        client.chat.completions.create(
            model="weather", messages=ask, tools=[sc.WEATHER], max_tokens=8,
            tool_choice={"type": "function", "function": {"name": "get_time"}})
        check(False, "tool_choice naming a function not offered: BadRequestError")
    except openai.BadRequestError:
        check(True, "tool_choice naming a function not offered: BadRequestError")
    sc.post(server.url, "/v1/unload_lora_adapter", {"lora_name": "weather"})


# ---------------------------------------------------------------- recording

class Recorder(http.server.BaseHTTPRequestHandler):
    """Stands in for a server: keeps each request body, answers in shape."""
    bodies = {}

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        name = self.server.next_name
        Recorder.bodies[name] = body
        Recorder.bodies["authorization"] = self.headers.get("Authorization")
        chat = self.path.endswith("/chat/completions")
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        choice = ({"index": 0, "message": {"role": "assistant", "content": "x"},
                   "finish_reason": "stop"} if chat else
                  {"index": 0, "text": "x", "finish_reason": "stop"})
        obj = {"id": "x", "object": "chat.completion" if chat else "text_completion",
               "created": 0, "model": body["model"], "choices": [choice], "usage": usage}
        if body.get("stream"):
            delta = ({"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"} if chat
                     else {"index": 0, "text": "x", "finish_reason": "stop"})
            chunk = dict(obj, object="chat.completion.chunk" if chat else "text_completion",
                         choices=[delta])
            data = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            ctype = "text/event-stream"
        else:
            data = json.dumps(obj).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def record(out_dir):
    srv = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_port}/v1", api_key="s3cret")
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say 3"}]}]
    calls = {
        "chat": lambda: client.chat.completions.create(
            model="sql", messages=msgs, temperature=0, max_tokens=40, seed=7, stop=["END"]),
        "chat_stream": lambda: list(client.chat.completions.create(
            model="sql", messages=msgs, max_completion_tokens=40, stream=True,
            stream_options={"include_usage": True}, reasoning_effort="low")),
        "chat_adapters": lambda: client.chat.completions.create(
            model="base", messages=msgs, top_p=0.9, extra_body={"adapters": [
                {"name": "sql", "scale": 0.5}, {"name": "tone", "scale": 1.5}]}),
        "chat_tools": lambda: client.chat.completions.create(
            model="base", tools=[sc.WEATHER], tool_choice="auto", parallel_tool_calls=False,
            messages=[{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "call_1", "type": "function", "function": {
                              "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "20 C"}]),
        "completion": lambda: client.completions.create(
            model="tone", prompt="Once upon", temperature=0.7, max_tokens=24, stop="\n"),
        "completion_stream": lambda: list(client.completions.create(
            model="base", prompt="Once upon", max_tokens=24, stream=True,
            extra_body={"adapters": [{"name": "tone", "scale": -1}]})),
    }
    os.makedirs(out_dir, exist_ok=True)
    for name, call in calls.items():
        srv.next_name = name
        call()
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(Recorder.bodies[name], f, indent=1, sort_keys=True)
            f.write("\n")
    with open(os.path.join(out_dir, "authorization.txt"), "w") as f:
        f.write(Recorder.bodies["authorization"] + "\n")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(f"Request bodies sent by the official openai Python client {openai.__version__}, "
                "recorded by\n`tools/openai_client_check.py --record` (the calls are in its "
                "`record` function).\ntest_server_api parses each one.\n")
    srv.shutdown()
    print("recorded", ", ".join(calls), "into", out_dir)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mxlora", default=sc.default_mxlora())
    p.add_argument("--work", help="folder for the model, adapters and logs (default: a new temp)")
    p.add_argument("--model", help="an existing checkpoint instead of the tiny one")
    p.add_argument("--adapter", action="append", default=[], help="NAME=FILE (three needed)")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--record", metavar="DIR", help="record the client's request bodies into DIR")
    a = p.parse_args()
    if a.record:
        return record(a.record)
    if a.model and len(a.adapter) < 3:
        p.error("--model needs three --adapter NAME=FILE")
    return run_checks(a)


if __name__ == "__main__":
    sys.exit(main())
