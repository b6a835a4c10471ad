#!/usr/bin/env python3
"""Encode throughput, single thread: mxlora's tokenizer against tiktoken,
on the same text in the same run. Prints MB/s for both and the ratio, and
checks that both produce the same ids.

    python3 bench/tokenizer_vs_tiktoken.py [--build build] [--shared ../shared] [--mb 4]

The text is generated here, deterministically: English-like and Russian-like
prose from word lists written for this script, with numbers, punctuation,
code-ish lines and paragraph breaks.
"""
import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from gen_tokenizer_fixtures import EN, RU, encoding  # noqa: E402

EN_EXTRA = ("river mountain village morning evening letter window garden question answer "
            "government history remember understand beautiful different important together "
            "nothing something everything thought through although however therefore").split()
RU_EXTRA = ("река гора деревня утро вечер письмо окно сад вопрос ответ правительство история "
            "помнить понимать красивый разный важный вместе ничего что-то всё мысль через "
            "хотя однако поэтому").split()


def prose(rng, pool, size):
    out, n = [], 0
    while n < size:
        words = [rng.choice(pool) for _ in range(rng.randint(4, 18))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 100000)))
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), rng.choice(["(see p. 12)", "\"quoted\"", "e.g.", "—"]))
        s = " ".join(words) + rng.choice([".", ".", ".", "!", "?", ";", ","])
        s += rng.choice([" ", " ", " ", "\n", "\n\n"])
        out.append(s)
        n += len(s.encode("utf-8"))
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared"))
    ap.add_argument("--mb", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    enc = encoding(args.shared)
    vocab = os.path.join(args.shared, "data", "o200k_base.tiktoken")
    bench = os.path.join(args.build, "bench_tokenizer")
    rng = random.Random(1234)
    size = int(args.mb * (1 << 20))
    texts = {"english": prose(rng, EN + EN_EXTRA, size), "russian": prose(rng, RU + RU_EXTRA, size)}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in texts.items():
            path = os.path.join(tmp, name + ".txt")
            ids_path = os.path.join(tmp, name + ".ids")
            data = text.encode("utf-8")
            with open(path, "wb") as f:
                f.write(data)
            best_tk = float("inf")
            best_mx = float("inf")
            for _ in range(args.repeat):  # interleaved, best of N for each
                t0 = time.perf_counter()
                ids = enc.encode_ordinary(text)
                best_tk = min(best_tk, time.perf_counter() - t0)
                out = subprocess.run([bench, "--vocab", vocab, "--repeat", "1", "--ids-out", ids_path, path],
                                     check=True, capture_output=True, text=True).stdout
                secs = float(out.split("seconds=")[1].split()[0])
                best_mx = min(best_mx, secs)
            with open(ids_path, "rb") as f:
                raw = f.read()
            mx_ids = list(struct.unpack("<%di" % (len(raw) // 4), raw))
            same = mx_ids == ids
            mb = len(data) / 1e6
            ratio = best_tk / best_mx
            ratios.append(ratio)
            print("%-8s %6.2f MB %8d tokens  tiktoken %6.2f MB/s  mxlora %6.2f MB/s  ratio %.2fx  ids %s"
                  % (name, mb, len(ids), mb / best_tk, mb / best_mx, ratio, "identical" if same else "DIFFER"))
            if not same:
                sys.exit(1)
    print("tiktoken %s; mxlora/tiktoken throughput ratio: %s" % (
        __import__("tiktoken").__version__, ", ".join("%.2fx" % r for r in ratios)))


if __name__ == "__main__":
    main()
