#!/usr/bin/env python3
"""On-demand interop check of mxlora's tokenizer.json writer (not run in CI).

1. `mxlora tokenize --model o200k_base.tiktoken --export-hf DIR` writes the
   Hugging Face files for o200k_harmony.
2. transformers converts the same .tiktoken file the way the gpt-oss
   converter does (TikTokenConverter with the 21 special tokens, then
   PreTrainedTokenizerFast with bos/eos/pad).
3. The fields that matter are compared: added_tokens, normalizer,
   pre_tokenizer, post_processor, decoder, every model option, the whole
   vocab and the whole merges list, and tokenizer_config's special tokens.
4. transformers loads mxlora's files (PreTrainedTokenizerFast and
   AutoTokenizer) and encodes the parity corpus; the ids must equal the
   committed tiktoken ids, which tests/test_tokenizer.c checks against the
   C encoder.

    python3 tools/check_tokenizer_hf.py [--build build] [--shared ../shared]
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile

from gen_tokenizer_fixtures import PAT, SPECIALS

HERE = os.path.dirname(os.path.abspath(__file__))


def reference(vocab, out_dir):
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=vocab, pattern=PAT, extra_special_tokens=SPECIALS).converted()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>",
                                   eos_token="<|return|>", pad_token="<|endoftext|>",
                                   model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(out_dir)


def merges_of(model):
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def compare(ours_dir, ref_dir):
    with open(os.path.join(ours_dir, "tokenizer.json"), encoding="utf-8") as f:
        ours = json.load(f)
    with open(os.path.join(ref_dir, "tokenizer.json"), encoding="utf-8") as f:
        ref = json.load(f)
    problems = []
    for key in ["added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder",
                "truncation", "padding"]:
        if ours.get(key) != ref.get(key):
            problems.append("%s: ours %r, transformers %r" % (key, ours.get(key), ref.get(key)))
    for key in sorted(set(ours["model"]) | set(ref["model"])):
        if key in ("vocab", "merges"):
            continue
        if ours["model"].get(key) != ref["model"].get(key):
            problems.append("model.%s: ours %r, transformers %r" % (key, ours["model"].get(key),
                                                                  ref["model"].get(key)))
    if ours["model"]["vocab"] != ref["model"]["vocab"]:
        problems.append("model.vocab differs")
    om, rm = merges_of(ours["model"]), merges_of(ref["model"])
    if om != rm:
        first = next((i for i, (a, b) in enumerate(zip(om, rm)) if a != b), min(len(om), len(rm)))
        problems.append("model.merges differ (%d vs %d, first at %d)" % (len(om), len(rm), first))
    with open(os.path.join(ours_dir, "tokenizer_config.json")) as f:
        ocfg = json.load(f)
    with open(os.path.join(ref_dir, "tokenizer_config.json")) as f:
        rcfg = json.load(f)
    # tokenizer_class: the published gpt-oss file says PreTrainedTokenizerFast (docs/gpt-oss.md §6.2), as
    # mxlora writes; transformers 5 writes its new name "TokenizersBackend" and loads both.
    if ocfg.get("tokenizer_class") != "PreTrainedTokenizerFast":
        problems.append("tokenizer_config.tokenizer_class: %r" % ocfg.get("tokenizer_class"))
    print("tokenizer_class: ours %r, transformers %s writes %r" % (
        ocfg.get("tokenizer_class"), __import__("transformers").__version__, rcfg.get("tokenizer_class")))
    for key in ["bos_token", "eos_token", "pad_token", "model_input_names"]:
        if ocfg.get(key) != rcfg.get(key):
            problems.append("tokenizer_config.%s: ours %r, transformers %r" % (key, ocfg.get(key), rcfg.get(key)))
    print("compared: %d vocab entries, %d merges, %d added tokens; other keys in transformers' "
          "tokenizer_config: %s" % (len(ours["model"]["vocab"]), len(om), len(ours["added_tokens"]),
                                    sorted(set(rcfg) - set(ocfg))))
    return problems


def corpus_parity(ours_dir, corpus_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    file = os.path.join(ours_dir, "tokenizer.json")
    split = PreTrainedTokenizerFast(tokenizer_file=file)  # special strings -> special ids
    plain = PreTrainedTokenizerFast(tokenizer_file=file, split_special_tokens=True)  # as text
    auto = AutoTokenizer.from_pretrained(ours_dir)
    n = ids = bad = skipped = 0
    with open(corpus_path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            mode, b64, *want = line.split()
            data = base64.b64decode(b64)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1  # transformers takes str only
                continue
            want = [int(x) for x in want]
            tok = split if mode == "s" else plain
            got = tok.encode(text, add_special_tokens=False)
            if mode == "s" and auto.encode(text, add_special_tokens=False) != want:
                bad += 1
            n += 1
            ids += len(want)
            bad += got != want
    print("transformers on mxlora's tokenizer.json: %d strings, %d ids compared, %d differ "
          "(%d invalid-UTF-8 strings skipped)" % (n, ids, bad, skipped))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared"))
    args = ap.parse_args()
    vocab = os.path.join(args.shared, "data", "o200k_base.tiktoken")
    corpus = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer", "o200k_corpus.txt")
    with tempfile.TemporaryDirectory() as tmp:
        ours, ref = os.path.join(tmp, "ours"), os.path.join(tmp, "ref")
        subprocess.run([os.path.join(args.build, "mxlora"), "tokenize", "--model", vocab,
                        "--export-hf", ours], check=True)
        reference(vocab, ref)
        problems = compare(ours, ref)
        for p in problems:
            print("DIFFERENT:", p)
        bad = corpus_parity(ours, corpus)
    if problems or bad:
        sys.exit(1)
    print("OK: mxlora's tokenizer files match transformers' conversion")


if __name__ == "__main__":
    main()
