#!/usr/bin/env python3
"""Independent reference for `qat tokenize` (tests/test_tokenizer.sh).

Written from the algorithm's description (REFERENCE.md section 6, llama2.c run.c encode()),
not from qat's C code, and with a different merge strategy: qat keeps a heap of candidate pairs,
this keeps a list of candidate scores and rescans it after every merge, as run.c does.

  tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 length, bytes.
  encode(text): [" " token if text else nothing] + one token per UTF-8 code point (a lead byte
    plus its continuation bytes, at most 4 bytes; unknown -> one token per byte, id byte + 3),
    then repeatedly merge the adjacent pair whose concatenated strings are a vocabulary entry of
    highest score (> -1e10), the leftmost on ties.
  documents ("blank-line"): split on <|endoftext|>, then on blank (whitespace-only) lines; strip
    each; drop empty ones; CRLF -> LF inside; each document -> [BOS=1] + encode(doc).
  split: train = first n*9//10 documents, heldout = the rest.

Usage:
  llama2c_tokenizer.py --tokenizer tok.bin --in text.txt [--docs blank-line|none]
                       [--vocab N] [--check SPLIT=qat.npy ...] [--out ref.npy]
  llama2c_tokenizer.py --spm tokenizer.model --in text.txt --docs none --check all=qat.npy
Exit status 0 when every --check matches token for token, 1 otherwise.
"""
import argparse
import struct
import sys

import numpy as np

WS = b" \t\r\n\v\f"
NEG_INF = float("-inf")


def load_bin(path, vocab=0):
    data = open(path, "rb").read()
    if len(data) < 4:
        raise ValueError(f"{path}: no header")
    (max_len,) = struct.unpack_from("<i", data, 0)
    pos, strs, scores = 4, [], []
    while (len(strs) < vocab) if vocab else (pos < len(data)):
        if pos + 8 > len(data):
            raise ValueError(f"{path}: truncated at token {len(strs)}")
        score, n = struct.unpack_from("<fi", data, pos)
        if n < 0 or n > max_len or pos + 8 + n > len(data):
            raise ValueError(f"{path}: bad token {len(strs)} (length {n})")
        strs.append(data[pos + 8:pos + 8 + n])
        scores.append(score if score == score else NEG_INF)  # NaN never merges
        pos += 8 + n
    return strs, scores


class Llama2cTokenizer:
    def __init__(self, path, vocab=0):
        self.strs, self.scores = load_bin(path, vocab)
        self.ids = {}
        for i, s in enumerate(self.strs):
            self.ids.setdefault(s, i)  # a repeated string means its first id

    def _pair(self, a, b):
        j = self.ids.get(self.strs[a] + self.strs[b])
        if j is None or not self.scores[j] > -1e10:
            return NEG_INF, -1
        return self.scores[j], j

    def encode(self, text: bytes):
        if not text:
            return []
        toks = []

        def emit(piece):
            j = self.ids.get(piece)
            if j is not None:
                toks.append(j)
            else:
                toks.extend(c + 3 for c in piece)

        emit(b" ")
        i, n = 0, len(text)
        while i < n:
            k = i + 1
            while k < n and k - i < 4 and (text[k] & 0xC0) == 0x80:
                k += 1
            emit(text[i:k])
            i = k
        if max(toks) >= len(self.strs):
            raise ValueError("byte fallback outside the vocabulary")
        cand = [self._pair(toks[i], toks[i + 1]) for i in range(len(toks) - 1)]
        scores = [c[0] for c in cand]
        while scores:
            best = max(scores)
            if best == NEG_INF:
                break
            k = scores.index(best)  # leftmost of the best
            toks[k] = cand[k][1]
            del toks[k + 1], cand[k], scores[k]
            for j in (k - 1, k):
                if 0 <= j < len(toks) - 1:
                    cand[j] = self._pair(toks[j], toks[j + 1])
                    scores[j] = cand[j][0]
        return toks


class SpmTokenizer:
    def __init__(self, path):
        import sentencepiece as spm  # a missing package must fail the test, not skip it
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.bos_id = self.sp.bos_id()

    def encode(self, text: bytes):
        return self.sp.encode(text.decode("utf-8"))


def split_docs(data: bytes, mode):
    if mode == "none":
        return [data]
    docs = []
    for seg in data.split(b"<|endoftext|>"):
        cur = []
        for line in seg.split(b"\n"):
            if line.strip(WS):
                cur.append(line)
            elif cur:
                docs.append(b"\n".join(cur))
                cur = []
        if cur:
            docs.append(b"\n".join(cur))
    docs = [d.strip(WS).replace(b"\r\n", b"\n") for d in docs]
    return [d for d in docs if d]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer")
    ap.add_argument("--spm")
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--docs", default="blank-line", choices=["blank-line", "none"])
    ap.add_argument("--vocab", type=int, default=0)
    ap.add_argument("--check", action="append", default=[], help="SPLIT=path.npy")
    ap.add_argument("--out", help="write the 'all' reference tokens (int32 .npy)")
    a = ap.parse_args()
    if a.spm:
        tok, bos, vocab = SpmTokenizer(a.spm), None, None
        bos = tok.bos_id
        vocab = tok.sp.get_piece_size()
    else:
        tok = Llama2cTokenizer(a.tokenizer, a.vocab)
        bos, vocab = 1, len(tok.strs)
    data = open(a.inp, "rb").read()
    docs = split_docs(data, a.docs)
    per_doc = [[bos] + tok.encode(d) for d in docs]
    ntrain = len(docs) * 9 // 10
    ranges = {"all": (0, len(docs)), "train": (0, ntrain), "heldout": (ntrain, len(docs))}
    ref = {k: np.array([t for d in per_doc[lo:hi] for t in d], dtype=np.int64)
           for k, (lo, hi) in ranges.items()}
    print(f"reference: {len(docs)} documents, {len(ref['all'])} tokens "
          f"(train {ntrain} docs / {len(ref['train'])} tokens)")
    if a.out:
        np.save(a.out, ref["all"].astype(np.int32))
    ok = True
    want_dtype = np.uint16 if vocab <= 65536 else np.uint32
    for spec in a.check:
        split, path = spec.split("=", 1)
        got = np.load(path)
        r = ref[split]
        if got.dtype != want_dtype or got.ndim != 1:
            print(f"FAIL {split}: {path} has dtype {got.dtype} shape {got.shape}, "
                  f"want 1-D {np.dtype(want_dtype)}")
            ok = False
            continue
        if len(got) != len(r) or not np.array_equal(got.astype(np.int64), r):
            m = min(len(got), len(r))
            diff = np.nonzero(got[:m].astype(np.int64) != r[:m])[0]
            at = int(diff[0]) if len(diff) else m
            print(f"FAIL {split}: {path} has {len(got)} tokens, reference {len(r)}; first "
                  f"difference at {at}: qat {got[at:at + 8].tolist()} ref {r[at:at + 8].tolist()}")
            ok = False
        else:
            print(f"ok {split}: {len(r)} tokens match")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
