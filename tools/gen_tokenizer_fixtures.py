#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/o200k_corpus.txt: a seeded corpus of
strings and the ids tiktoken gives them with the o200k_harmony vocabulary.

The oracle is tiktoken itself, loaded from the project's shared copy of
o200k_base.tiktoken (nothing is downloaded):

    python3 tools/gen_tokenizer_fixtures.py [--shared ../shared]

Line format (one case per line, fields separated by one space):

    MODE BASE64(text bytes) ID ID ...

MODE "o": encode_ordinary (special-token names are plain text).
MODE "s": encode with every special token allowed (split out).

Invalid UTF-8: tiktoken only takes str. mxlora cuts a byte string into
maximal runs of valid UTF-8 and maximal runs of bytes that belong to no
valid character; valid runs go through the regex, each invalid run is one
BPE piece. The expected ids are built from tiktoken's own functions the same
way: encode_ordinary() for valid runs, _encode_single_piece() for invalid
runs (the runs come from Python's surrogateescape decoding).
"""
import argparse
import base64
import hashlib
import os
import random
import sys

import tiktoken
import tiktoken.load

# docs/gpt-oss.md §6.3 (identical to tiktoken_ext.openai_public.o200k_base's pat_str).
PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

# The 21 special tokens of the Hugging Face gpt-oss tokenizer (docs/gpt-oss.md §6.2).
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>",
            "<|return|>", "<|constrain|>", "<|reserved_200004|>", "<|channel|>", "<|start|>",
            "<|end|>", "<|message|>", "<|reserved_200009|>", "<|reserved_200010|>",
            "<|reserved_200011|>", "<|call|>", "<|reserved_200013|>", "<|reserved_200014|>",
            "<|reserved_200015|>", "<|reserved_200016|>", "<|reserved_200017|>",
            "<|endofprompt|>"]
SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def encoding(shared):
    path = os.path.join(shared, "data", "o200k_base.tiktoken")
    with open(path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != SHA256:
            sys.exit(f"{path}: SHA-256 differs from o200k_base's")
    ranks = tiktoken.load.load_tiktoken_bpe(path)
    specials = {name: len(ranks) + i for i, name in enumerate(SPECIALS)}
    return tiktoken.Encoding(name="o200k_harmony_hf", pat_str=PAT, mergeable_ranks=ranks,
                             special_tokens=specials)


def encode_bytes(enc, data):
    """Ids for arbitrary bytes, per the rule in the module docstring."""
    text = data.decode("utf-8", errors="surrogateescape")
    ids, run, bad = [], [], None

    def flush():
        if not run:
            return
        if bad:
            ids.extend(enc._encode_single_piece(bytes(ord(c) - 0xDC00 for c in run)))
        else:
            ids.extend(enc.encode_ordinary("".join(run)))
        run.clear()

    for ch in text:
        is_bad = 0xDC80 <= ord(ch) <= 0xDCFF
        if run and is_bad != bad:
            flush()
        bad = is_bad
        run.append(ch)
    flush()
    return ids


# ---------------------------------------------------------------- the corpus
# Word lists written for this file; the generator mixes them at random.
EN = ("the of and to in is was he for it with as his on be at by had are but from or have an "
      "they which one you were all her she there would their we him been has when who will no "
      "more if out so said what up its about than into them can only other time new some could "
      "these two may first then do any like my now over such our man me even most made after "
      "also did many before must through back years where much your way well down should "
      "because each just those people how too little state good very make world still see own "
      "men work long get here between both life being under never day same another know while "
      "last might us great old year off come since against go came right used take three "
      "tokenizer training adapter gradient quantization mixture experts attention checkpoint "
      "internationalization unbelievable floccinaucinihilipilification").split()
RU = ("и в не на я быть он с что а по это она этот к но они мы как из у который то за свой "
      "весь год от так о для ты же все тот мочь вы человек такой его сказать только или ещё "
      "бы себя один как уже до время если сам когда другой вот говорить наш мой знать стать "
      "при чтобы дело жизнь кто первый очень два день её новый рука даже во со раз где там "
      "обучение нейросеть токенизатор переобучение достопримечательность").split()
ZH = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴"
JA = "これはテストですひらがなカタカナ漢字日本語の文章を書きます東京大阪ありがとうございますトークナイザー"
KO = "안녕하세요 한국어 토크나이저 테스트 문장입니다 감사합니다 서울 부산 사랑해요"
AR = "مرحبا بالعالم هذه جملة عربية للاختبار شكرا جزيلا"
HI = "नमस्ते दुनिया यह एक परीक्षण वाक्य है धन्यवाद हिन्दी"
EL = "Καλημέρα κόσμε αυτή είναι μια δοκιμή ΑΒΓΔ αβγδ"
EMOJI = ["😀", "😂", "👍", "👍🏽", "❤️", "🔥", "🎉", "👨‍👩‍👧‍👦", "🇺🇸", "🇯🇵", "🏳️‍🌈", "🤖", "🧪", "✅",
         "💯", "🙏🏿", "👩🏻‍💻", "☕", "©", "™", "§"]
CODE = [
    "def f(x):\n    return x * 2\n", "int main(void) {\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; i++) a[i] += b[i];", "{\"key\": [1, 2.5, null, true], \"s\": \"x\\ny\"}",
    "if x != None and y >= 3: print(f'{x!r}')", "#include <stdio.h>\r\n", "// TODO: fix\n",
    "SELECT * FROM users WHERE id = 42;", "x = [i**2 for i in range(10)]", "$ ls -la /usr/bin | grep py",
    "<div class=\"a\">Hi</div>", "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "    \n\n    pass", "a+=1;b-=2;c*=3;d/=4;", "/* comment */", "http://example.com/a/b?c=d&e=f#g",
    "path/to/file.txt", "C:\\Users\\name\\file", "x==y&&z||!w", "\"\"\"docstring\"\"\"",
]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \r\n ", "\t\t",
          "\u00a0", "\u2000", "\u3000", "\u180e", "\u0085", "\u200b", "\u2028", "\u2029", "\u202f",
          "\u205f", "\u1680", "\x0b", "\x0c", "\ufeff", "     \n", "\n\n\n   ", "  \t \n"]
CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'Re", "'ve", "'VE", "'m", "'M",
                "'ll", "'LL", "'lL", "'d", "'D", "'ſ", "'x", "'", "''", "’s", "'st"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "\u0301", "\u0301\u0301", "o\u0338", "z\u0336",
             "\u093f", "क\u094d\u0937", "ﬁ", "Å", "Å", "\u0345", "ǅ", "ǈ", "ʰ", "ᵃ", "々", "ー"]
NUMBERS = ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "-17", "1,000,000",
           "2025-08-05", "10:30", "1e-5", "0x1F", "٣٤٥", "१२३", "²", "½", "Ⅻ", "①", "１２３"]
INVALID = [b"\xff", b"\xfe\xff", b"\x80", b"\xbf\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
           b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5\x80",
           b"\xc3\x28", b"\xe2\x28\xa1", b"\x80\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xc1\xbf"]


def rand_char(rng):
    """A random code point from a spread of blocks, surrogates excluded."""
    blocks = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff),
              (0x590, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x1e00, 0x1eff),
              (0x2000, 0x206f), (0x2100, 0x22ff), (0x2500, 0x25ff), (0x3000, 0x30ff),
              (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xff00, 0xffef), (0x1f300, 0x1faff),
              (0x10000, 0x1007f), (0x1d400, 0x1d7ff), (0x20000, 0x2a6df), (0xe000, 0xe0ff)]
    lo, hi = rng.choice(blocks)
    return chr(rng.randint(lo, hi))


def words(rng, pool, n, sep=" "):
    out = []
    for _ in range(n):
        w = rng.choice(pool)
        r = rng.random()
        if r < 0.15:
            w = w.capitalize()
        elif r < 0.2:
            w = w.upper()
        out.append(w)
    return sep.join(out)


def sentence(rng):
    kind = rng.randrange(14)
    if kind == 0:
        return words(rng, EN, rng.randint(1, 20)) + rng.choice([".", "!", "?", ",", "", ":", "..."])
    if kind == 1:
        return words(rng, RU, rng.randint(1, 15)) + rng.choice([".", "!", "?", ""])
    if kind == 2:
        return "".join(rng.choice(ZH) for _ in range(rng.randint(1, 30))) + rng.choice(["。", "，", ""])
    if kind == 3:
        return rng.choice([JA, KO, AR, HI, EL])[: rng.randint(1, 60)]
    if kind == 4:
        return rng.choice(CODE)
    if kind == 5:
        return "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 6))).join(
            [words(rng, EN, 1), words(rng, EN, 1)])
    if kind == 6:
        return words(rng, EN, 1) + rng.choice(CONTRACTIONS) + rng.choice(["", " ", " it", "?", "s"])
    if kind == 7:
        return " ".join(rng.choice(NUMBERS) for _ in range(rng.randint(1, 5)))
    if kind == 8:
        return "".join(rng.choice(EMOJI + [" ", "a", "1"]) for _ in range(rng.randint(1, 10)))
    if kind == 9:
        return "".join(rng.choice(COMBINING + [" ", "x", "Ж"]) for _ in range(rng.randint(1, 8)))
    if kind == 10:
        return "".join(rand_char(rng) for _ in range(rng.randint(1, 20)))
    if kind == 11:  # mixed scripts glued together
        parts = [words(rng, EN, 1), words(rng, RU, 1), rng.choice(ZH), rng.choice(NUMBERS),
                 rng.choice(EMOJI), rng.choice(COMBINING), rng.choice(SPACES)]
        rng.shuffle(parts)
        return "".join(parts)
    if kind == 12:  # long pieces: BPE over more than 128 bytes
        unit = rng.choice(["a", "ab", "=", "-=", " ", "\n", "!?", "я", "0", "😀", "xyz"])
        return unit * rng.randint(20, 200)
    # punctuation soup
    return "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \n\r/") for _ in range(rng.randint(1, 25)))


def corpus(rng, n):
    cases = []
    for i in range(n):
        s = sentence(rng)
        if rng.random() < 0.3:
            s = s + rng.choice(SPACES) + sentence(rng)
        cases.append(("o", s.encode("utf-8")))
    # invalid UTF-8 inside and around text
    for i in range(n // 10):
        parts = [sentence(rng).encode("utf-8") for _ in range(rng.randint(0, 2))]
        for _ in range(rng.randint(1, 3)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(INVALID))
        cases.append(("o", b"".join(parts)))
    # special tokens, both as text and split out
    for i in range(n // 10):
        parts = [sentence(rng) for _ in range(rng.randint(1, 3))]
        for _ in range(rng.randint(1, 3)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(SPECIALS + ["<|", "|>", "<|end", "<|x|>"]))
        s = "".join(parts).encode("utf-8")
        cases.append(("o", s))
        cases.append(("s", s))
    # a few long strings (over 4096 bytes: the encoder's piece cache is on)
    for i in range(3):
        parts, size = [], 0
        while size < 10000:
            parts.append(sentence(rng) + rng.choice(SPACES))
            size += len(parts[-1].encode("utf-8"))
        cases.append(("o", "".join(parts).encode("utf-8")))
    # letters, marks and digits newer than Unicode 14 (see unicode_table), and
    # Unicode 17 letters that tiktoken 0.14 does not know yet
    newer = [(0x31350, 0x323AF), (0x2EBF0, 0x2EE5D), (0x11F00, 0x11F59), (0x1E4D0, 0x1E4F9),
             (0x10D40, 0x10D8F), (0x16D40, 0x16D79), (0x105C0, 0x105F3), (0x11380, 0x113E2),
             (0xA7CB, 0xA7DC), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x10940, 0x10959)]
    for i in range(150):
        pool = [chr(rng.randint(*rng.choice(newer))) for _ in range(4)] + ["a", "B", " ", "1", "'s", "!", "\n"]
        cases.append(("o", "".join(rng.choice(pool) for _ in range(rng.randint(1, 12))).encode("utf-8")))
    return cases


UNICODE_CLASSES = ["Lu", "Ll", "Lt", "Lm", "Lo", "M", "N"]


def unicode_table(enc, out_path):
    """Writes datasets/tokenizer_unicode.c: the letters, marks and digits
    that tiktoken's regex engine knows (Unicode 16 in tiktoken 0.14) but
    Debian 12's PCRE2 10.42 does not (Unicode 14). Candidates are the code
    points unassigned in this Python's unicodedata (Unicode 14, the same as
    PCRE2's) that the `regex` module puts in a class; tiktoken itself then
    confirms each one: " X's" ends in the token "'s" (885) exactly when X is
    a letter, mark or digit to tiktoken's regex (else " X'" is one
    punctuation piece). So characters newer than tiktoken's Unicode drop
    out."""
    import unicodedata
    import regex
    assert unicodedata.unidata_version == "14.0.0", "needs Python 3.11 (Unicode 14, as PCRE2 10.42)"
    pats = {k: regex.compile(r"\p{%s}" % k) for k in UNICODE_CLASSES}
    found = {k: [] for k in UNICODE_CLASSES}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or unicodedata.category(chr(cp)) != "Cn":
            continue
        kinds = [k for k in UNICODE_CLASSES if pats[k].match(chr(cp))]
        if kinds and enc.encode_ordinary(" %s's" % chr(cp))[-1] == 885:
            found[kinds[0]].append(cp)
    body = {}
    for k, cps in found.items():
        runs = []
        for cp in cps:
            if runs and runs[-1][1] + 1 == cp:
                runs[-1][1] = cp
            else:
                runs.append([cp, cp])
        body[k] = "".join("\\\\x{%x}" % a if a == b else "\\\\x{%x}-\\\\x{%x}" % (a, b) for a, b in runs)
    body["L"] = "".join(body[k] for k in ["Lu", "Ll", "Lt", "Lm", "Lo"])
    union = []
    for cp in sorted(cp for v in found.values() for cp in v):
        if union and union[-1][1] + 1 == cp:
            union[-1][1] = cp
        else:
            union.append([cp, cp])
    with open(out_path, "w") as f:
        f.write("/* Generated by tools/gen_tokenizer_fixtures.py --unicode-table (tiktoken %s, regex %s);\n"
                " * do not edit. Letters, marks and digits added after Unicode 14 (PCRE2 10.42's\n"
                " * tables) up to the Unicode version of tiktoken's regex engine, as bodies of\n"
                " * PCRE2 character classes. See tokenizer_pretok.c. */\n"
                % (tiktoken.__version__, regex.__version__))
        f.write('#include <string.h>\n\n#include "datasets/tokenizer_impl.h"\n\n')
        f.write("static const struct {\n  const char *name, *ranges;\n} extra[] = {\n")
        for k in ["L"] + UNICODE_CLASSES:
            f.write('    {"%s",\n     "%s"},\n' % (k, body[k]))
        f.write("};\n\nconst char *mxl_unicode_extra(const char *name, size_t len) {\n"
                "  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)\n"
                "    if (strlen(extra[i].name) == len && !memcmp(extra[i].name, name, len))\n"
                "      return extra[i].ranges;\n  return NULL;\n}\n\n")
        f.write("/* All of the above, sorted: [first, last] code points. */\n"
                "static const uint32_t newer[][2] = {\n")
        for a, b in union:
            f.write("    {0x%x, 0x%x},\n" % (a, b))
        f.write("};\n\nint mxl_unicode_is_newer(uint32_t cp) {\n"
                "  size_t lo = 0, hi = sizeof newer / sizeof newer[0];\n"
                "  while (lo < hi) {\n    size_t mid = (lo + hi) / 2;\n"
                "    if (cp < newer[mid][0]) hi = mid;\n"
                "    else if (cp > newer[mid][1]) lo = mid + 1;\n    else return 1;\n  }\n"
                "  return 0;\n}\n")
    print("%s: %s" % (out_path, ", ".join("%s %d" % (k, len(v)) for k, v in found.items())))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "tokenizer",
                                                  "o200k_corpus.txt"))
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--unicode-table", metavar="PATH",
                    help="instead, write the Unicode addition table (datasets/tokenizer_unicode.c)")
    args = ap.parse_args()
    enc = encoding(args.shared)
    if args.unicode_table:
        return unicode_table(enc, args.unicode_table)
    rng = random.Random(20250805)
    cases = corpus(rng, args.count)
    n_ids = 0
    with open(args.out, "w", newline="\n") as f:
        f.write("# o200k_harmony tokenizer parity corpus; written by tools/gen_tokenizer_fixtures.py"
                " (tiktoken %s). MODE BASE64 IDS...\n" % tiktoken.__version__)
        for mode, data in cases:
            if mode == "s":
                ids = enc.encode(data.decode("utf-8"), allowed_special="all")
            else:
                ids = encode_bytes(enc, data)
            assert enc.decode_bytes(ids) == data
            n_ids += len(ids)
            f.write("%s %s %s\n" % (mode, base64.b64encode(data).decode("ascii"),
                                    " ".join(map(str, ids))))
    print("%s: %d strings, %d ids, %d bytes" % (args.out, len(cases), n_ids, os.path.getsize(args.out)))


if __name__ == "__main__":
    main()
