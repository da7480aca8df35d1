#!/usr/bin/env python3
"""Hugging Face `tokenizers` as the independent reference for qat's tokenizer.json support
(tests/test_tokenizer_hf.sh). No real Llama-3 / Qwen2 tokenizer.json is available offline, so
`build` trains small byte-level BPEs (vocab 2000, on TinyStories + WikiText-2 + the stress
text) configured exactly as those files are:

  llama3/  Split(Llama-3 regex, Isolated) + ByteLevel(use_regex=false), ignore_merges, special
           <|begin_of_text|> (BOS through a TemplateProcessing post-processor), <|end_of_text|>,
           <|eot|> and <|eot_id|> (one a prefix of the other), merges saved as [a, b] pairs;
           tokenizer_config.json names BOS / EOS.
  qwen2/   NFC normalizer, Split(Qwen2 regex) + ByteLevel(use_regex=false), specials
           <|endoftext|>, <|im_start|>, <|im_end|>, a non-special added token and a
           normalized one written decomposed; merges saved as "a b" strings;
           tokenizer_config.json has bos_token null (config.json's bos_token_id must lose).
  gpt2/    ByteLevel(use_regex=true) alone, <|endoftext|> inside model.vocab; "a b" merges;
           only a config.json (bos_token_id = eos_token_id = <|endoftext|>).
  smollm2/ Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)] as SmolLM2 ships
           it; <|endoftext|>, <|im_start|>, <|im_end|> trained into model.vocab (ids 0-2);
           tokenizer_config.json names bos_token <|im_start|> but says add_bos_token: false.
  mixed/   Sequence[Digits(individual_digits=false), Punctuation(contiguous),
           Split("\n", merged_with_previous), Split(" ", merged_with_next),
           ByteLevel(add_prefix_space=true, use_regex=true)]; a template "$A <|endoftext|>"
           (every document ends with EOS, none starts with BOS). add_prefix_space gives every
           piece a space, so its decode is not the text.
  spm/     SentencePiece-style BPE: Metaspace(prepend_scheme always, split true), byte_fallback
           with <0x00>..<0xFF> in model.vocab (limit_alphabet forces rare characters onto them),
           <unk> with fuse_unk, decoder ByteFallback + Metaspace, template "<s> $A </s>" but
           tokenizer_config.json add_eos_token: false (BOS only).
  llama2/  the real Llama-2 tokenizer.model converted by transformers' LlamaConverter (legacy:
           normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, decoder
           Replace/ByteFallback/Fuse/Strip, byte_fallback, template "<s> $A"), as the Llama-2 HF
           file; `check --spm` also compares with sentencepiece on tokenizer.model.
  llama2m/ the same converted non-legacy (Metaspace prepend_scheme first, split false), as newer
           Llama-2 / Mistral files; SentencePiece differs from it by design on text that starts
           with a space, so only tokenizers is the reference.
The two Llama-2 folders need `transformers` and `protobuf` (test references only); without
them they are not built and `build` says so.
Each folder gets expect.json: the BOS id qat must prepend to every document and the EOS id it
must append (null: none).

  hf_tokenizer_ref.py stress OUT.txt                   # the hand-written stress text
  hf_tokenizer_ref.py build OUTDIR --assets DIR --stress STRESS.txt
  hf_tokenizer_ref.py check --tok DIR --in TEXT --docs blank-line|none --npy QAT.npy [--no-bos]
                      [--spm tokenizer.model]
  hf_tokenizer_ref.py decode --tok DIR --in TEXT --out EXPECTED   # what the pieces must give
  hf_tokenizer_ref.py variants DIR     # after build: DIR/var-*/ for `check` (prints the folders)
  hf_tokenizer_ref.py many JOBS        # check / decode jobs, one argument line each, one process
  hf_tokenizer_ref.py gguf-vocab VOCAB.gguf OUTDIR   # a llama.cpp ggml-vocab-*.gguf -> a folder
  hf_tokenizer_ref.py check-cases --tok DIR --inp X.inp --want X.out --got QAT.out
gguf-vocab rebuilds the tokenizer.json of a real vocabulary that llama.cpp ships for its tokenizer
tests (models/ggml-vocab-{llama-bpe,qwen2,starcoder,gpt-2}.gguf: Llama-3, Qwen2, StarCoder = the
SmolLM2 layout, GPT-2) from its tokenizer.ggml.* keys with the pre-tokenizer the original
tokenizer.json has; its .inp / .out files hold 46 hard cases and the ids Hugging Face's own
tokenizer gave for them. check-cases asserts tokenizers on the rebuilt file gives those ids (the
rebuild is faithful) and that qat's do too.
variants re-configures the built spm/ and smollm2/ files through tokenizers' own objects (so the
JSON is what tokenizers writes): every Metaspace prepend_scheme x split with an added token in
the text, the Llama-2 legacy normalizer and a Regex Replace on the spm vocab, Metaspace "first"
after a Split; every Split behavior x invert, a String pattern, Digits runs, WhitespaceSplit,
Punctuation and ByteLevel before other steps on the byte-level vocab. The vocabularies were not
trained for these configurations; the ids are still well defined, and tokenizers gives them.
check: documents are split as tests/ref/llama2c_tokenizer.py does (an independent reading of
REFERENCE.md section 5), each decoded bytes -> str with errors="replace" (the only way to hand
tokenizers invalid UTF-8), encoded without special tokens, with BOS prepended when the folder
has one. Exit status 0 when every token matches.
"""
import argparse
import json
import os
import sys
import unicodedata

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama2c_tokenizer import split_docs  # noqa: E402

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus(files, extra):
    """The training text: the asset files line by line, then the stress text 50 times, so that
    merges cross its scripts, emoji, runs of spaces, CRLFs and the like: a pre-tokenizer that
    splits differently from tokenizers' then gives different tokens, not just other pieces."""
    for path in files:
        with open(path, encoding="utf-8", newline="") as f:
            yield from f
    for _ in range(50):
        yield extra


def train_spm(files, extra):
    """A small SentencePiece-style BPE, as tokenizers trains one (the Llama-2 layout)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always",
                                                 split=True)
    tok.decoder = decoders.Sequence([
        decoders.ByteFallback(),
        decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)])
    byte_toks = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"] + byte_toks,
                                  limit_alphabet=150, show_progress=False)
    # no U+0000 piece (SentencePiece vocabularies have none; qat's JSON reader cannot hold one):
    # the stress text's NUL goes through <0x00>
    tok.train_from_iterator((t.replace("\0", "") for t in corpus(files, extra)), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    # the byte tokens live in model.vocab only, as in Llama-2's file
    j = json.loads(tok.to_str())
    j["added_tokens"] = [t for t in j["added_tokens"] if t["content"] not in byte_toks]
    return Tokenizer.from_str(json.dumps(j))


class _SpmOriginal:
    """What transformers' LlamaConverter reads from a slow LlamaTokenizer."""
    def __init__(self, path, legacy):
        import sentencepiece as spm
        self.vocab_file, self.legacy, self.add_prefix_space = path, legacy, True
        self.sp = spm.SentencePieceProcessor(model_file=path)

    def convert_ids_to_tokens(self, i):
        return self.sp.id_to_piece(i)


def convert_llama2(model, legacy):
    """tokenizer.model -> tokenizers.Tokenizer through transformers' slow->fast LlamaConverter.
    transformers 5.x calls SpmExtractor.extract(vocab_scores) with a changed signature, so the
    extractor is wrapped to return (vocab, merges) as 4.x did (generate_merges ranks the merges by
    piece score)."""
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import (LlamaConverter, SentencePieceExtractor,
                                                     generate_merges)

    class Extractor(SentencePieceExtractor):
        def extract(self, vocab_scores=None, **kw):
            vocab = {p.piece: i for i, p in enumerate(self.proto.pieces)}
            return vocab, generate_merges(vocab, vocab_scores)

    class Converter(LlamaConverter):
        SpmExtractor = Extractor

    tok = Converter(_SpmOriginal(model, legacy)).converted()
    # LlamaTokenizerFast installs this template (add_bos_token true) and saves it in the file
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def train(kind, files, extra):
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
    bl = pre_tokenizers.ByteLevel
    if kind == "spm":
        return train_spm(files, extra)
    if kind in ("smollm2", "mixed"):
        tok = Tokenizer(models.BPE())
        if kind == "smollm2":
            steps = [pre_tokenizers.Digits(individual_digits=True),
                     bl(add_prefix_space=False, trim_offsets=True, use_regex=True)]
        else:
            steps = [pre_tokenizers.Digits(individual_digits=False),
                     pre_tokenizers.Punctuation(behavior="contiguous"),
                     pre_tokenizers.Split("\n", behavior="merged_with_previous"),
                     pre_tokenizers.Split(" ", behavior="merged_with_next"),
                     bl(add_prefix_space=True, use_regex=True)]
        tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
        tok.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        trainer = trainers.BpeTrainer(vocab_size=2000, initial_alphabet=bl.alphabet(),
                                      special_tokens=specials, show_progress=False)
        tok.train_from_iterator(corpus(files, extra), trainer)
        if kind == "smollm2":
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
        else:
            tok.post_processor = processors.TemplateProcessing(
                single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", 0)])
        return tok
    if kind == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = bl(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>"]  # trained in: part of model.vocab, as in GPT-2
    else:
        tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
        pattern = LLAMA3 if kind == "llama3" else QWEN2
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            bl(add_prefix_space=False, trim_offsets=(kind == "llama3"), use_regex=False)])
        if kind == "qwen2":
            tok.normalizer = normalizers.NFC()
        specials = []
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, initial_alphabet=bl.alphabet(),
                                  special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus(files, extra), trainer)
    # Llama-3's and Qwen2's special tokens live after model.vocab, in added_tokens only.
    if kind == "llama3":
        tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot|>", "<|eot_id|>",
                                "<|reserved_special_token_0|>"])
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
    elif kind == "qwen2":
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok.add_tokens([AddedToken("<tool>", special=False, normalized=False),
                        AddedToken("e\u0301t\u00e9", special=False, normalized=True)])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def write_folder(tok, kind, d):
    os.makedirs(d, exist_ok=True)
    j = json.loads(tok.to_str())
    if kind in ("qwen2", "gpt2", "smollm2"):  # the old merges format: "a b" strings
        j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m)
                                for m in j["model"]["merges"]]
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)
    eot = tok.token_to_id("<|endoftext|>")
    eos = None
    if kind == "smollm2":
        cfg = {"add_bos_token": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
        bos = None
    elif kind == "mixed":
        cfg = None
        bos, eos = None, eot
        assert tok.encode("x").ids[-1] == eot, "the template does not add EOS"
    elif kind == "spm":
        cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
               "eos_token": "</s>", "unk_token": "<unk>"}
        bos = 1
        assert tok.encode("x").ids[0] == 1 and tok.encode("x").ids[-1] == 2
    elif kind in ("llama2", "llama2m"):
        cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
               "eos_token": "</s>", "unk_token": "<unk>", "legacy": kind == "llama2"}
        bos = 1
    elif kind == "llama3":
        cfg = {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>",
                                                               "special": True}}
        bos = tok.token_to_id("<|begin_of_text|>")
        assert tok.encode("x").ids[0] == bos, "the template does not add BOS"
    elif kind == "qwen2":
        cfg = {"bos_token": None, "eos_token": "<|endoftext|>"}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"bos_token_id": eot, "eos_token_id": eot}, f)
        bos = None
    else:
        cfg = None
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"bos_token_id": eot, "eos_token_id": [eot]}, f)
        bos = eot
    if cfg is not None:
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(cfg, f)
    with open(os.path.join(d, "expect.json"), "w") as f:
        json.dump({"bos": bos, "eos": eos, "spm": kind in ("spm", "llama2", "llama2m"),
                   "exact_decode": kind != "mixed",
                   "vocab": max(tok.get_vocab(with_added_tokens=True).values()) + 1}, f)


def stress_text():
    parts = [
        "Mixed scripts: 我们今天去北京大学。中文分词测试，标点！ مرحبا بالعالم، هذا اختبار. "
        "Привет, мир! ЁЖИК в тумане. Ελληνικά κείμενα. हिन्दी पाठ। 한국어 텍스트 日本語のテキスト",
        "Emoji: 👩\u200d👩\u200d👧\u200d👦 family, 👍🏽 thumbs, 🏳\ufe0f\u200d🌈 flag, 🧑🏿\u200d💻 "
        "dev, ❤\ufe0f",
        "Decomposed: Cafe\u0301 re\u0301sume\u0301 nai\u0308ve A\u030angstro\u0308m "
        "e\u0301te\u0301 été \u1e9b\u0323 \uac00 \u1100\u1161",
        "Contractions: IT'S THEY'LL WE'VE I'M YOU'D DON'T 'S 'LL 'Re it's they'll x'\u017f "
        "o'\u212a",
        "Digits: 1 12 123 1234 12345 123456 1234567 0.5 3,141,592 ٣٤٥ ١٢٣٤ ①②③ ½ Ⅻ 99999999999",
        "CRLF line\r\nnext line\r\nlone CR\rafter CR\n\r\nend",
        "\tTabs\t\tand \t mixed\t \n\t\n",
        "Trailing spaces   \nmore    \n      \n   leading",
        "Specials: <|begin_of_text|>Hello<|end_of_text|> <|endoftext|>x<|eot_id|><|eot|>y "
        "<|im_start|>user\nhi<|im_end|> <tool>call</tool> <|endoftext <|reserved_special_token_0|>"
        "<|begin_of_text|><|begin_of_text|>",
        "Spaces: a\u00a0b\u3000c\u180ed\u2028e\u0085f\u200bg \u2003 h\x1c\x1di\x0b\x0cj "
        "!!\u180e?? \u180e \u180e\u180e x,\u180e\u180e y  \u180eabc  \u180e  z",  # U+180E: \s in
        # PCRE2, not in Oniguruma (tokenizers)
        "Long: " + " " * 3000 + "x " + "a" * 2000 + " " + "9" * 100 + " " + "!?" * 500,
        "Nul: before\x00after",
    ]
    text = "\n\n".join(parts).encode("utf-8")
    # invalid UTF-8: stray continuation, truncated sequences, surrogates, overlongs, 0xFF
    bad = (b"\n\nInvalid: \xff\xfe bad \xc3( \xe2\x82 x \xf0\x9f\x98 trunc \xed\xa0\x80 surrogate "
           b"\xc0\xaf overlong \xf4\x90\x80\x80 big \xe0\x80\x80 end\x80\n")
    return text + bad


_loaded = {}


def load(d):
    """The folder's tokenizer and expect.json, loaded once per process (check-many)."""
    from tokenizers import Tokenizer
    if d not in _loaded:
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "expect.json")) as f:
            _loaded[d] = tok, json.load(f)
    return _loaded[d]


def cmd_check(a):
    tok, exp = load(a.tok)
    bos = None if a.no_bos else exp["bos"]
    eos = None if a.no_bos else exp.get("eos")
    data = open(a.inp, "rb").read()
    docs = split_docs(data, a.docs)
    texts = [d.decode("utf-8", errors="replace") for d in docs]
    ref = []
    encs = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    if a.spm:  # the converted file must also be what SentencePiece itself gives
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=a.spm)
        for k, (t, ids) in enumerate(zip(texts, encs)):
            want = sp.encode(t)
            if want != ids:
                at = next((i for i, (x, y) in enumerate(zip(want, ids)) if x != y),
                          min(len(want), len(ids)))
                print(f"FAIL {a.tok}: tokenizers differs from sentencepiece in document {k} at "
                      f"{at}: {ids[at:at + 6]} vs {want[at:at + 6]}")
                return 1
    for ids in encs:
        if bos is not None:
            ref.append(bos)
        ref.extend(ids)
        if eos is not None:
            ref.append(eos)
    ref = np.array(ref, dtype=np.int64)
    got = np.load(a.npy)
    want_dtype = np.uint16 if exp["vocab"] <= 65536 else np.uint32
    if got.dtype != want_dtype or got.ndim != 1:
        print(f"FAIL {a.npy}: dtype {got.dtype} shape {got.shape}, want 1-D {np.dtype(want_dtype)}")
        return 1
    if len(got) != len(ref) or not np.array_equal(got.astype(np.int64), ref):
        m = min(len(got), len(ref))
        diff = np.nonzero(got[:m].astype(np.int64) != ref[:m])[0]
        at = int(diff[0]) if len(diff) else m
        print(f"FAIL {a.npy}: qat {len(got)} tokens, tokenizers {len(ref)}; first difference at "
              f"{at}: qat {got[at:at + 8].tolist()} ref {ref[at:at + 8].tolist()} "
              f"({tok.decode(ref[max(0, at - 4):at + 8].tolist())!r})")
        return 1
    print(f"ok {os.path.basename(a.tok)} {os.path.basename(a.inp)} --docs {a.docs}: "
          f"{len(ref)} tokens match over {len(docs)} documents"
          f"{' (and sentencepiece)' if a.spm else ''}")
    return 0


def bytes_to_unicode():
    """GPT-2's table: printable Latin-1 bytes map to themselves, the rest to U+0100.. in order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def cmd_decode(a):
    """The bytes of every id of encode(text), concatenated: an added token gives its content, a
    vocab token the bytes its characters stand for. That is tokenizers' decode wherever no
    non-ASCII added token occurs (tokenizers runs added tokens through the ByteLevel decoder too,
    which turns a normalized "\u00e9t\u00e9" into U+FFFD t U+FFFD), and must be the input text
    (NFC for a normalizing tokenizer) unless a normalized added token was matched."""
    tok, exp = load(a.tok)
    with open(os.path.join(a.tok, "tokenizer.json"), encoding="utf-8") as f:
        added = {t["id"]: t for t in json.load(f)["added_tokens"]}
    inv = {c: b for b, c in bytes_to_unicode().items()}
    text = open(a.inp, "rb").read().decode("utf-8", errors="replace")
    ids = tok.encode(text, add_special_tokens=False).ids
    if exp.get("spm"):
        # SentencePiece-style: tokenizers' own decode (spaces for the replacement, <0xNN> bytes,
        # the first token's leading space stripped); it is the text for the legacy layout, and
        # the text less a leading space where Metaspace did not prepend one
        out = tok.decode(ids, skip_special_tokens=False)
        if out != text and not (text.startswith(" ") and out == text[1:]):
            print(f"FAIL {a.inp}: tokenizers' decode(encode(text)) is not the text")
            return 1
        with open(a.out, "wb") as f:
            f.write(out.encode())
        return 0
    out = b"".join(added[i]["content"].encode() if i in added else
                   bytes(inv[c] for c in tok.id_to_token(i)) for i in ids)
    odd = [i for i in set(ids) if i in added and not added[i]["content"].isascii()]
    if not odd and tok.decode(ids, skip_special_tokens=False).encode() != out:
        print(f"FAIL {a.inp}: the reference decode differs from tokenizers' decode")
        return 1
    want = unicodedata.normalize("NFC", text) if tok.normalizer is not None else text
    if out != want.encode() and exp.get("exact_decode", True):
        if not any(added[i]["normalized"] for i in odd):
            print(f"FAIL {a.inp}: decode(encode(text)) is not the text")
            return 1
        print(f"note: {a.inp}: decodes to the text except a normalized added token's content")
    with open(a.out, "wb") as f:
        f.write(out)
    return 0


def cmd_variants(a):
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers as nz, pre_tokenizers as pt
    ms = pt.Metaspace
    bl = pt.ByteLevel
    spm = [(f"ms-{sch}-{int(sp)}", None, ms(replacement="\u2581", prepend_scheme=sch, split=sp))
           for sch in ("always", "first", "never") for sp in (True, False)]
    spm += [("legacy", nz.Sequence([nz.Prepend("\u2581"), nz.Replace(" ", "\u2581")]), None),
            ("regex-replace", nz.Sequence([nz.NFC(), nz.Replace(Regex(" {2,}"), " "),
                                           nz.Replace(Regex("^\\s+"), ""),
                                           nz.Prepend("\u2581"), nz.Replace(" ", "\u2581")]), None),
            ("split-first", None, pt.Sequence([pt.Split(Regex("\\p{N}+"), "isolated"),
                                                ms(prepend_scheme="first", split=True)]))]
    regex = Regex("\\s+|\\p{P}")
    byte = [(f"split-{b}-{int(inv)}", None,
             pt.Sequence([pt.Split(regex, b, invert=inv), bl(add_prefix_space=False, use_regex=False)]))
            for b in ("isolated", "removed", "merged_with_previous", "merged_with_next", "contiguous")
            for inv in (False, True)]
    byte += [("split-string", None, pt.Sequence([pt.Split("\n", "isolated"), bl(use_regex=False)])),
             ("digit-runs", None, pt.Sequence([pt.Digits(individual_digits=False),
                                                bl(add_prefix_space=False, use_regex=True)])),
             ("wsplit", None, pt.Sequence([pt.WhitespaceSplit(), bl(add_prefix_space=True,
                                                                        use_regex=False)])),
             ("punct", None, pt.Sequence([pt.Punctuation(), pt.Digits(individual_digits=True),
                                          bl(add_prefix_space=False, use_regex=True)])),
             ("bl-first", None, pt.Sequence([bl(add_prefix_space=False, use_regex=True),
                                             pt.Digits(individual_digits=True),
                                             pt.Split("\u0120", "merged_with_next")]))]
    for base, variants, bos in (("spm", spm, 1), ("smollm2", byte, None)):
        src = open(os.path.join(a.dir, base, "tokenizer.json"), encoding="utf-8").read()
        for name, norm, pre in variants:
            tok = Tokenizer.from_str(src)
            tok.normalizer = norm
            tok.pre_tokenizer = pre
            tok.post_processor = None
            # in the stress text: "<tool>call</tool>"; the second one through the normalizer
            tok.add_tokens([AddedToken("<tool>", special=False, normalized=False),
                            AddedToken("</tool>", special=False, normalized=True)])
            d = os.path.join(a.dir, f"var-{base}-{name}")
            os.makedirs(d, exist_ok=True)
            tok.save(os.path.join(d, "tokenizer.json"))
            with open(os.path.join(d, "expect.json"), "w") as f:
                json.dump({"bos": bos, "eos": None, "spm": base == "spm", "vocab":
                           max(tok.get_vocab(with_added_tokens=True).values()) + 1}, f)
            print(d)
    return 0


GGUF_PRE = {  # tokenizer.ggml.pre -> (normalizer NFC, Split regex or None, Digits, ignore_merges)
    "llama-bpe": (False, LLAMA3, False, True),
    "qwen2": (True, QWEN2, False, False),
    "starcoder": (False, None, True, False),
    "smollm": (False, None, True, False),
    "gpt-2": (False, None, False, False),
}


def gguf_metadata(path):
    """The key/value section of a GGUF file (v2/v3, little-endian) as a dict: strings decoded,
    arrays as lists. gguf.GGUFReader builds a numpy view per array element, over a minute for
    Llama-3's 128K tokens and 280K merges on a loaded CI core; this reads the same in a second."""
    import struct
    data = open(path, "rb").read()
    fixed = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
             11: "<q", 12: "<d"}
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        pos += n
        return data[pos - n:pos].decode("utf-8")

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("<I"), take("<Q")
            return [value(et) for _ in range(n)]
        return take(fixed[t])

    magic, version = take("<4s"), take("<I")
    if magic != b"GGUF" or version not in (2, 3):
        raise ValueError(f"{path}: not a GGUF v2/v3 file")
    take("<Q")  # tensor count
    return {string(): value(take("<I")) for _ in range(take("<Q"))}


def cmd_gguf_vocab(a):
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors)
    kv = gguf_metadata(a.gguf)
    pre = kv["tokenizer.ggml.pre"]
    if pre not in GGUF_PRE:
        print(f"gguf-vocab: pre-tokenizer {pre!r} not rebuilt here")
        return 2
    nfc, split, digits, ignore = GGUF_PRE[pre]
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in kv["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               ignore_merges=ignore))
    bl = pre_tokenizers.ByteLevel
    steps = ([pre_tokenizers.Split(Regex(split), "isolated")] if split else []) + \
        ([pre_tokenizers.Digits(individual_digits=True)] if digits else []) + \
        [bl(add_prefix_space=False, use_regex=split is None)]
    tok.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])  # control tokens
    os.makedirs(a.out, exist_ok=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as fo:
        json.dump({"add_bos_token": False, "add_eos_token": False}, fo)
    with open(os.path.join(a.out, "expect.json"), "w") as fo:
        json.dump({"bos": None, "eos": None, "vocab": len(tokens)}, fo)
    print(f"gguf-vocab: {a.gguf}: {pre}, {len(tokens)} tokens, {len(merges)} merges")
    return 0


def cmd_check_cases(a):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.tok, "tokenizer.json"))
    texts = open(a.inp, encoding="utf-8", newline="").read().split("\n__ggml_vocab_test__\n")[:-1]
    want = [[int(x) for x in line.split()] for line in open(a.want).read().split("\n")[:len(texts)]]
    got = [[int(x) for x in line.split()] for line in open(a.got).read().split("\n")[:len(texts)]]
    name = os.path.basename(a.inp)
    bad_ref = [k for k, t in enumerate(texts) if tok.encode(t, add_special_tokens=False).ids != want[k]]
    if bad_ref:
        print(f"FAIL {name}: the rebuilt tokenizer.json is not Hugging Face's on cases {bad_ref}")
        return 1
    bad = [k for k in range(len(texts)) if k >= len(got) or got[k] != want[k]]
    if bad:
        k = bad[0]
        print(f"FAIL {name}: qat differs from Hugging Face's ids on cases {bad}; case {k} "
              f"{texts[k][:40]!r}: qat {got[k][:10] if k < len(got) else None} want {want[k][:10]}")
        return 1
    print(f"ok {name}: {len(texts)} cases, {sum(map(len, want))} ids equal Hugging Face's "
          f"(and tokenizers' on the rebuilt file)")
    return 0


def cmd_many(ap, a):
    """One process for a list of check / decode jobs (a line each: that subcommand's arguments),
    so the test does not pay Python's start-up per job; the exit status is 1 if any fails."""
    import shlex
    fails = 0
    for line in open(a.jobs):
        if not line.strip():
            continue
        sub = ap.parse_args(shlex.split(line))
        try:
            rc = cmd_check(sub) if sub.cmd == "check" else cmd_decode(sub)
        except Exception as e:  # a broken job fails, the others still run
            print(f"FAIL {line.strip()}: {e!r}")
            rc = 1
        if rc:
            print(f"FAIL job: {line.strip()}")
            fails += 1
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    b.add_argument("--assets", required=True)
    b.add_argument("--stress", required=True)
    b.add_argument("--kinds", default="llama3,qwen2,gpt2,smollm2,mixed,spm,llama2,llama2m")
    s = sub.add_parser("stress")
    s.add_argument("out")
    c = sub.add_parser("check")
    c.add_argument("--tok", required=True)
    c.add_argument("--in", dest="inp", required=True)
    c.add_argument("--docs", default="blank-line", choices=["blank-line", "none"])
    c.add_argument("--npy", required=True)
    c.add_argument("--no-bos", action="store_true", help="the tokenizer.json alone: no BOS")
    c.add_argument("--spm", help="tokenizer.model that must give the same ids (sentencepiece)")
    mny = sub.add_parser("many")
    mny.add_argument("jobs", help="a file of check / decode argument lines")
    g = sub.add_parser("gguf-vocab")
    g.add_argument("gguf")
    g.add_argument("out")
    cc = sub.add_parser("check-cases")
    cc.add_argument("--tok", required=True)
    cc.add_argument("--inp", required=True)
    cc.add_argument("--want", required=True)
    cc.add_argument("--got", required=True)
    v = sub.add_parser("variants")
    v.add_argument("dir")
    d = sub.add_parser("decode")
    d.add_argument("--tok", required=True)
    d.add_argument("--in", dest="inp", required=True)
    d.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "build":
        files = [os.path.join(a.assets, "text", f)
                 for f in ("tinystories_val.txt", "wikitext2_test.raw")]
        extra = open(a.stress, "rb").read().decode("utf-8", errors="replace")
        kinds = a.kinds.split(",")
        for kind in kinds:
            if kind in ("llama2", "llama2m"):
                model = os.path.join(a.assets, "tokenizers", "llama2", "tokenizer.model")
                try:
                    tok = convert_llama2(model, legacy=(kind == "llama2"))
                except ImportError as e:
                    print(f"not built: {kind} ({e}; pip install transformers protobuf)")
                    continue
            else:
                tok = train(kind, files, extra)
            write_folder(tok, kind, os.path.join(a.out, kind))
        return 0
    if a.cmd == "stress":
        with open(a.out, "wb") as f:
            f.write(stress_text())
        return 0
    if a.cmd == "variants":
        return cmd_variants(a)
    if a.cmd == "many":
        return cmd_many(ap, a)
    if a.cmd == "gguf-vocab":
        return cmd_gguf_vocab(a)
    if a.cmd == "check-cases":
        return cmd_check_cases(a)
    return cmd_check(a) if a.cmd == "check" else cmd_decode(a)


if __name__ == "__main__":
    sys.exit(main())
