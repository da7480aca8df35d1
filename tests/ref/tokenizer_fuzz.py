#!/usr/bin/env python3
"""Randomized check of `qat tokenize` against llama2c_tokenizer.py on small synthetic
tokenizer.bin files built to hit the corner cases of llama2.c's encode(): equal scores (the
leftmost pair must win), -0.0 vs 0.0, scores at or below -1e10 and NaN (never merged), repeated
strings (first id wins), no " " token (dummy prefix by byte fallback), missing code points (byte
fallback), multi-byte UTF-8, stray and over-long continuation bytes, truncated sequences; and for
--docs blank-line: CRLF, whitespace-only lines, <|endoftext|> and the train / held-out split.

usage: tokenizer_fuzz.py QAT_BIN TMPDIR [CASES]
"""
import os
import random
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c_tokenizer as ref  # noqa: E402

ALPHABET = [b"a", b"b", b"c", b"d", b" ", b"\n", "\u00e9".encode(), "\u4e16".encode(),
            "\U0001f642".encode()]
ODD_BYTES = [b"\x80", b"\xbf\xbf", b"\xff", b"\xe4\xb8", b"\xf0\x9f\x99", b"\xc3\x80\x80\x80\x80\x80",
             b"\x00"]
DOC_SEPS = [b"\n\n", b"\r\n\r\n", b"\n \t\n", b"<|endoftext|>", b"\n\n\n", b"\r\n"]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def make_vocab(rng):
    strs = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)]
    scores = [0.0] * len(strs)
    base = [p for p in ALPHABET if rng.random() < 0.85]  # some code points only by bytes
    if rng.random() < 0.2 and b" " in base:
        base.remove(b" ")  # the dummy prefix then falls back to byte 0x20
    strs += base
    scores += [0.0] * len(base)
    pool = list(base)
    score_set = [-1.0, -2.0, -3.0, 0.0, -0.0, -5.5]
    for _ in range(rng.randint(5, 60)):
        if len(pool) < 1:
            break
        s = rng.choice(pool) + rng.choice(pool)
        if len(s) > 12:
            continue
        r = rng.random()
        if r < 0.6:
            sc = rng.choice(score_set)
        elif r < 0.8:
            sc = f32(rng.uniform(-50, 5))
        elif r < 0.87:
            sc = rng.choice([-1e10, -2e10, f32(-9.9e9)])
        elif r < 0.92:
            sc = float("nan")
        else:
            sc = rng.choice(score_set)
            if pool:
                s = rng.choice(pool)  # a repeated string
        strs.append(s)
        scores.append(sc)
        pool.append(s)
    return strs, scores


def write_bin(path, strs, scores):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(s) for s in strs)))
        for s, sc in zip(strs, scores):
            f.write(struct.pack("<fi", sc, len(s)))
            f.write(s)


def make_text(rng, docs):
    parts = []
    for _ in range(rng.randint(0, 120)):
        r = rng.random()
        if docs and r < 0.1:
            parts.append(rng.choice(DOC_SEPS))
        elif r < 0.15:
            parts.append(rng.choice(ODD_BYTES))
        else:
            parts.append(rng.choice(ALPHABET))
    return b"".join(parts)


def main():
    qat, tmp = sys.argv[1], sys.argv[2]
    cases = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    rng = random.Random(1234)
    fails = 0
    for case in range(cases):
        strs, scores = make_vocab(rng)
        tb = os.path.join(tmp, "fuzz.bin")
        write_bin(tb, strs, scores)
        tok = ref.Llama2cTokenizer(tb)
        docs_mode = "blank-line" if case % 2 else "none"
        text = make_text(rng, docs_mode == "blank-line")
        tt = os.path.join(tmp, "fuzz.txt")
        with open(tt, "wb") as f:
            f.write(text)
        docs = ref.split_docs(text, docs_mode)
        per_doc = [[1] + tok.encode(d) for d in docs]
        ntrain = len(docs) * 9 // 10
        for split, (lo, hi) in (("all", (0, len(docs))), ("train", (0, ntrain)),
                                ("heldout", (ntrain, len(docs)))):
            want = [t for d in per_doc[lo:hi] for t in d]
            out = os.path.join(tmp, "fuzz.npy")
            p = subprocess.run([qat, "tokenize", "--tokenizer", tb, "--in", tt, "--out", out,
                                "--docs", docs_mode, "--split", split],
                               capture_output=True, text=True)
            got = np.load(out).tolist() if p.returncode == 0 else None
            if got != want:
                fails += 1
                print(f"FAIL case {case} ({docs_mode}, {split}): text {text!r}\n"
                      f"  qat rc {p.returncode} {p.stderr.strip()}\n  qat {got}\n  ref {want}")
            if docs_mode == "none":
                break
    print(f"fuzz: {cases} cases, {fails} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
