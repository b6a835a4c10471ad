#!/usr/bin/env python3
"""Golden fixtures for mxlora's harmony renderer, produced by openai-harmony.

Writes tests/fixtures/harmony/cases.jsonl: one conversation per line, in
mxlora's dataset JSON (the form tests/test_harmony.c feeds to the C
renderer), with the render options and what openai-harmony produced for it:
the token ids and the decoded text.

The dataset-to-harmony mapping below is written here independently of the
C code, from the rules documented in include/mxlora/data.h:
  * a leading system/developer message -> DeveloperContent instructions,
    "tools" -> DeveloperContent function tools;
  * assistant "thinking" -> analysis message; content -> final (or, next to
    tool_calls, a commentary preamble); each tool call ->
    assistant to=functions.NAME, commentary, <|constrain|>json;
  * tool message -> author functions.NAME, to=assistant, commentary;
  * explicit "channel"/"recipient"/"content_type"/"name" override.
Analysis rules: "harmony" = auto_drop_analysis=True, "keep" = False,
"earlier-turns" = analysis before the last user message dropped here, then
rendered with auto_drop_analysis=False.

openai-harmony needs o200k_base.tiktoken offline: it reads it from the
directory in TIKTOKEN_ENCODINGS_BASE, which this script sets to the shared
data directory (default: ../shared/data next to the repository).

Usage: pip install openai-harmony; python3 tools/gen_harmony_fixtures.py
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_encoding(shared):
    os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", shared)
    import openai_harmony as h

    return h, h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)


# ---------------------------------------------------------------- mapping


def content_text(c):
    if c is None:
        return None
    if isinstance(c, str):
        return c
    return "".join(p if isinstance(p, str) else p["text"] for p in c)


def to_harmony(h, sample, opts):
    """Returns the list of harmony Messages, each tagged with .role_name."""
    msgs = sample["messages"] if "messages" in sample else None
    if msgs is None and "prompt" in sample:
        p, c = sample["prompt"], sample["completion"]
        msgs = ([{"role": "user", "content": p}] if isinstance(p, str) else list(p)) + (
            [{"role": "assistant", "content": c}] if isinstance(c, str) else list(c)
        )
    instructions = None
    body = []
    for m in msgs:
        if m["role"] in ("system", "developer"):
            instructions = content_text(m["content"])
        else:
            body.append(m)

    sysc = h.SystemContent.new()
    if opts.get("identity"):
        sysc = sysc.with_model_identity(opts["identity"])
    if opts.get("cutoff"):
        sysc = sysc.with_knowledge_cutoff(opts["cutoff"])
    if opts.get("date"):
        sysc = sysc.with_conversation_start_date(opts["date"])
    effort = opts.get("effort") or sample.get("reasoning_effort") or "medium"
    efforts = {"low": h.ReasoningEffort.LOW, "medium": h.ReasoningEffort.MEDIUM,
               "high": h.ReasoningEffort.HIGH}
    sysc = sysc.with_reasoning_effort(efforts[effort])
    out = [h.Message.from_role_and_content(h.Role.SYSTEM, sysc)]

    tools = sample.get("tools") or []
    if instructions is not None or tools:
        dev = h.DeveloperContent.new()
        if instructions is not None:
            dev = dev.with_instructions(instructions)
        if tools:
            descs = []
            for t in tools:
                f = t.get("function", t)
                descs.append(h.ToolDescription.new(f["name"], f.get("description") or "",
                                                   parameters=f.get("parameters")))
            dev = dev.with_function_tools(descs)
        out.append(h.Message.from_role_and_content(h.Role.DEVELOPER, dev))

    last_call = None
    for m in body:
        role = m["role"]
        if role == "assistant":
            calls = m.get("tool_calls") or []
            content = content_text(m.get("content"))
            if m.get("thinking"):
                out.append(with_header(h, h.Message.from_role_and_content(
                    h.Role.ASSISTANT, m["thinking"]).with_channel("analysis"), name=m.get("name")))
            if content is not None and (content != "" or m.get("channel")):
                ch = m.get("channel") or ("commentary" if calls else "final")
                msg = h.Message.from_role_and_content(h.Role.ASSISTANT, content).with_channel(ch)
                out.append(with_header(h, msg, name=m.get("name"), recipient=m.get("recipient"),
                                       content_type=m.get("content_type")))
            for c in calls:
                f = c.get("function", c)
                args = f.get("arguments")
                if not isinstance(args, str):
                    args = json.dumps(args if args is not None else {}, separators=(",", ":"),
                                      ensure_ascii=False)
                name = f["name"]
                last_call = name
                rcpt = name if "." in name else "functions." + name
                out.append(h.Message.from_role_and_content(h.Role.ASSISTANT, args)
                           .with_channel("commentary").with_recipient(rcpt)
                           .with_content_type("<|constrain|>json"))
        elif role == "tool":
            name = m.get("name") or last_call
            author = name if "." in name else "functions." + name
            msg = h.Message.from_author_and_content(h.Author.new(h.Role.TOOL, author),
                                                    content_text(m.get("content")))
            msg = msg.with_recipient(m.get("recipient") or "assistant")
            msg = msg.with_channel(m.get("channel") or "commentary")
            if m.get("content_type"):
                msg = msg.with_content_type(m["content_type"])
            out.append(msg)
        else:
            msg = h.Message.from_role_and_content(h.Role.USER, content_text(m["content"]))
            out.append(with_header(h, msg, name=m.get("name"), recipient=m.get("recipient"),
                                   channel=m.get("channel"), content_type=m.get("content_type")))
    return out


def with_header(h, msg, name=None, recipient=None, channel=None, content_type=None):
    if name:
        msg.author = h.Author.new(msg.author.role, name)
    if recipient:
        msg = msg.with_recipient(recipient)
    if channel:
        msg = msg.with_channel(channel)
    if content_type:
        msg = msg.with_content_type(content_type)
    return msg


def drop_earlier_turn_analysis(h, msgs):
    last_user = max((i for i, m in enumerate(msgs) if m.author.role == h.Role.USER), default=-1)
    return [m for i, m in enumerate(msgs)
            if not (i < last_user and m.author.role == h.Role.ASSISTANT and m.channel == "analysis")]


def render(h, enc, case):
    msgs = to_harmony(h, case["conversation"], case.get("options", {}))
    rule = case.get("analysis", "earlier-turns")
    if rule == "earlier-turns":
        msgs = drop_earlier_turn_analysis(h, msgs)
    cfg = h.RenderConversationConfig(auto_drop_analysis=(rule == "harmony"))
    conv = h.Conversation.from_messages(msgs)
    mode = case.get("mode", "train")
    if mode == "train":
        ids = enc.render_conversation_for_training(conv, cfg)
    elif mode == "prompt":
        ids = enc.render_conversation_for_completion(conv, h.Role.ASSISTANT, cfg)
    else:
        ids = enc.render_conversation(conv, cfg)
    return ids


# ---------------------------------------------------------------- cases

WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Gets the current weather for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Kazan"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        }, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Current UTC time."}},
]

KITCHEN_SINK_TOOL = {"name": "kitchen_sink", "description": "Many schema features.\nSecond line.",
    "parameters": {"type": "object", "description": "params object", "properties": {
        "s": {"type": "string", "title": "STRING", "description": "A string",
              "examples": ["hello", "world"]},
        "n": {"type": "string", "description": "A nullable string", "nullable": True,
              "default": "the default"},
        "e": {"type": "string", "enum": ["a", "b", "c"]},
        "i": {"type": "integer", "default": 5},
        "f": {"type": "number", "default": 0.25},
        "b": {"type": "boolean", "default": False},
        "arr": {"type": "array", "items": {"type": "number"}},
        "any_arr": {"type": "array"},
        "multi": {"type": ["string", "integer", "null"]},
        "obj": {"type": "object", "properties": {"x": {"type": "boolean"},
                                                 "y": {"type": "array", "items": {"type": "string"}}},
                "required": ["x"]},
        "one": {"description": "a oneof", "default": 20, "oneOf": [
            {"type": "string", "default": "dflt"},
            {"type": "number", "description": "numbers can happen too"}]},
        "one_same": {"description": "same text", "oneOf": [
            {"type": "string", "description": "same text"},
            {"type": "integer", "nullable": True}]},
        "untyped": {"description": "no type"},
    }, "required": ["s", "obj"]}}

TOP_ONEOF_TOOL = {"name": "pick", "description": "",
    "parameters": {"oneOf": [{"type": "string", "description": "by name"},
                             {"type": "integer", "default": 1, "nullable": True}]}}


def cases():
    c = []

    def add(name, conversation, **kw):
        c.append(dict(name=name, conversation=conversation, **kw))

    simple = {"messages": [{"role": "user", "content": "What is 2 + 2?"},
                           {"role": "assistant", "content": "2 + 2 = 4."}]}
    add("simple_train", simple, analysis="harmony")
    add("simple_prompt", {"messages": simple["messages"][:1]}, mode="prompt", analysis="harmony")
    add("simple_plain", simple, mode="plain", analysis="keep")

    spec73 = {"messages": [{"role": "developer", "content": "X"}, {"role": "user", "content": "U"},
                           {"role": "assistant", "thinking": "T", "content": "C"}]}
    add("spec73_harmony_drops_target_cot", spec73, analysis="harmony")
    add("spec73_keep", spec73, analysis="keep")
    add("spec73_earlier_turns", spec73, analysis="earlier-turns")

    for effort in ("low", "medium", "high"):
        add("effort_" + effort, {"messages": simple["messages"]}, options={"effort": effort})
    add("sample_effort_high", dict(simple, reasoning_effort="high"))
    add("date_identity_cutoff", {"messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}]},
        options={"date": "2025-08-05", "identity": "You are a terse assistant.",
                 "cutoff": "2025-01"})

    multi = {"messages": [
        {"role": "system", "content": "You are helpful.\nBe concise."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "thinking": "Greet back.", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "thinking": "2 is the smallest prime.", "content": "2"},
        {"role": "user", "content": "Another one?"},
        {"role": "assistant", "thinking": "3 works.", "content": "3"}]}
    for rule in ("harmony", "keep", "earlier-turns"):
        add("multi_turn_" + rule, multi, analysis=rule)
    add("multi_turn_prompt_harmony", {"messages": multi["messages"][:-1]}, mode="prompt",
        analysis="harmony")
    add("multi_turn_prompt_earlier", {"messages": multi["messages"][:-1]}, mode="prompt")

    russian = {"messages": [
        {"role": "system", "content": "Отвечай по-русски."},
        {"role": "user", "content": "Как переводится слово «дерево» на английский?"},
        {"role": "assistant", "thinking": "Пользователь спрашивает перевод: дерево — tree.",
         "content": "«Дерево» по-английски — tree."},
        {"role": "user", "content": "А «ёжик»?"},
        {"role": "assistant", "thinking": "Ёжик — hedgehog.", "content": "Hedgehog."}]}
    for rule in ("harmony", "keep", "earlier-turns"):
        add("russian_" + rule, russian, analysis=rule)

    tool_chat = {"tools": WEATHER_TOOLS, "messages": [
        {"role": "system", "content": "Use tools when needed."},
        {"role": "user", "content": "What's the weather in Kazan?"},
        {"role": "assistant", "thinking": "Need the weather tool.",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Kazan"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": -5, \"sky\": \"snow\"}"},
        {"role": "assistant", "thinking": "It is snowing at -5.",
         "content": "It is -5 °C and snowing in Kazan."}]}
    for rule in ("harmony", "keep", "earlier-turns"):
        add("tools_chain_" + rule, tool_chat, analysis=rule)
    add("tools_ongoing_prompt_harmony", {"tools": WEATHER_TOOLS,
        "messages": tool_chat["messages"][:4]}, mode="prompt", analysis="harmony")
    add("tools_ongoing_prompt_earlier", {"tools": WEATHER_TOOLS,
        "messages": tool_chat["messages"][:4]}, mode="prompt")
    add("tools_no_instructions", {"tools": [KITCHEN_SINK_TOOL, TOP_ONEOF_TOOL], "messages": [
        {"role": "user", "content": "Call it."},
        {"role": "assistant", "content": "Calling now.", "tool_calls": [
            {"function": {"name": "kitchen_sink", "arguments": "{\"s\":\"x\",\"obj\":{\"x\":true}}"}},
            {"function": {"name": "pick", "arguments": "\"a\""}}]},
        {"role": "tool", "name": "kitchen_sink", "content": "ok"},
        {"role": "tool", "name": "pick", "content": "picked"},
        {"role": "assistant", "content": "Done."}]}, analysis="keep")

    add("harmony_keep_between_finals", {"messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "thinking": "think 1", "content": "answer 1"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "thinking": "think 2", "content": "answer 2"}]}, analysis="harmony")

    add("special_strings_in_text", {"messages": [
        {"role": "user", "content": "Print <|end|> and <|start|>assistant<|message|> literally."},
        {"role": "assistant", "content": "<|end|> <|return|> <|call|>"}]})
    add("unicode_whitespace", {"messages": [
        {"role": "user", "content": "Tabs\tand  spaces \n\n trailing   \r\nemoji 🦔 日本語 e\u0301 \u00a0"},
        {"role": "assistant", "thinking": "  leading spaces", "content": "\n"}]})
    add("header_fields", {"messages": [
        {"role": "user", "name": "alice", "content": "hello"},
        {"role": "assistant", "channel": "commentary", "content": "Thinking out loud."},
        {"role": "assistant", "channel": "commentary", "recipient": "functions.lookup",
         "content_type": "json", "content": "{}"},
        {"role": "tool", "name": "functions.lookup", "content": "[]"},
        {"role": "assistant", "recipient": "all", "content": "Nothing found."}]}, mode="plain",
        analysis="keep")
    add("prompt_completion", {"prompt": "Translate to Russian: cat", "completion": "кошка"})
    add("prompt_completion_lists", {
        "prompt": [{"role": "system", "content": "Translate."}, {"role": "user", "content": "dog"}],
        "completion": [{"role": "assistant", "thinking": "dog = собака", "content": "собака"}]})
    add("content_parts", {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "part one, "},
                                     {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": "ok"}]})
    add("ends_with_user_train", {"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}]})
    add("ends_with_analysis_train", {"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "thinking": "hmm"}]},
        analysis="harmony")
    add("empty_instructions", {"messages": [
        {"role": "developer", "content": ""}, {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y"}]})
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"),
                    help="directory holding o200k_base.tiktoken")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "harmony",
                                                  "cases.jsonl"))
    args = ap.parse_args()
    h, enc = load_encoding(os.path.abspath(args.shared))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    n = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for case in cases():
            ids = render(h, enc, case)
            case["text"] = enc.decode_utf8(ids)
            case["ids"] = ids
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
            n += 1
    print(f"wrote {n} cases to {os.path.relpath(args.out, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
