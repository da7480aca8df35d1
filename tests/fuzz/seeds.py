#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in tests/fuzz: small valid inputs of every format
(plus a few near-misses), written with numpy, gguf, tokenizers and sentencepiece (no qat code).

    seeds.py TARGET OUT_DIR     seeds of one target (fuzz_TARGET) into OUT_DIR
    seeds.py all ROOT           ROOT/<target>/ for every target, and ROOT/tokdir (the
                                tokenizers fuzz_tokenize_text loads through $QAT_FUZZ_TOKDIR)

Multi-file inputs join their parts with SEP (tests/fuzz/fuzz_util.h FZ_SEP)."""
import io
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "ref"))
SEP = b"\n@@qat@@\n"
ASSETS = os.environ.get("QAT_ASSETS") or os.path.join(HERE, "..", "..", "..", "shared", "assets")
TEXT = ("Once upon a time there was a little girl named Lily. She loved to play outside.\n\n"
        "One day, she saw a big tree: it was 123 years old! \"Don't climb it,\" said Mom.\n"
        " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : "
        "戦場のヴァルキュリア3 ) is a tactical role @-@ playing video game .\n<|endoftext|>Bye 😀\n")


def join(*parts):
    return SEP.join(p if isinstance(p, bytes) else p.encode() for p in parts)


def st_bytes(tensors, meta=None):
    """tensors: list of (name, dtype str, shape, raw bytes) -> safetensors file bytes."""
    hdr, blobs, off = {}, [], 0
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def ramp(n, np_dt):
    return (np.arange(n, dtype=np.float64) % 7 / 10 - 0.3).astype(np_dt).tobytes()


NPDT = {"F32": "<f4", "F16": "<f2"}


def bf16(n):
    """The F32 ramp truncated to BF16 (its high halves)."""
    return (np.frombuffer(ramp(n, "<f4"), np.uint32) >> 16).astype("<u2").tobytes()


# ------------------------------------------------------------------------------ model folders

def model_tensors(C=8, F=12, L=1, H=2, Hkv=1, V=5, tied=True, arch="llama", head_dim=None):
    D = head_dim or C // H
    t = [("model.embed_tokens.weight", (V, C))]
    for l in range(L):
        p = f"model.layers.{l}."
        t += [(p + "input_layernorm.weight", (C,)), (p + "self_attn.q_proj.weight", (H * D, C)),
              (p + "self_attn.k_proj.weight", (Hkv * D, C)), (p + "self_attn.v_proj.weight", (Hkv * D, C))]
        if arch == "qwen2":
            t += [(p + "self_attn.q_proj.bias", (H * D,)), (p + "self_attn.k_proj.bias", (Hkv * D,)),
                  (p + "self_attn.v_proj.bias", (Hkv * D,))]
        t += [(p + "self_attn.o_proj.weight", (C, H * D)), (p + "post_attention_layernorm.weight", (C,)),
              (p + "mlp.gate_proj.weight", (F, C)), (p + "mlp.up_proj.weight", (F, C)),
              (p + "mlp.down_proj.weight", (C, F))]
    t.append(("model.norm.weight", (C,)))
    if not tied:
        t.append(("lm_head.weight", (V, C)))
    cfg = {"model_type": arch, "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": Hkv, "vocab_size": V,
           "tie_word_embeddings": tied}
    if head_dim:
        cfg["head_dim"] = head_dim
    return cfg, t


def model_folder(dtype="F16", **kw):
    cfg, t = model_tensors(**kw)
    cfg["torch_dtype"] = {"F16": "float16", "F32": "float32", "BF16": "bfloat16"}[dtype]
    raw = [(n, dtype, s, bf16(int(np.prod(s))) if dtype == "BF16" else ramp(int(np.prod(s)), NPDT[dtype]))
           for n, s in t]
    return json.dumps(cfg).encode(), raw


def seeds_model_config():
    out = {}
    for name, kw in {"tied_f16": {}, "untied_f32": dict(tied=False, dtype="F32", L=2),
                     "qwen2": dict(arch="qwen2"), "headdim": dict(head_dim=6),
                     "mistral": dict(arch="mistral", H=4, Hkv=2), "bf16": dict(dtype="BF16")}.items():
        c, raw = model_folder(**kw)
        out[name] = struct.pack("<H", len(c)) + c + st_bytes(raw)
    return out


def seeds_safetensors():
    out = {}
    _c, raw = model_folder(dtype="F32", tied=False)
    out["model_f32"] = st_bytes(raw)
    out["mixed"] = st_bytes([("a", "F32", (2, 3), ramp(6, "<f4")), ("b", "F16", (3,), ramp(3, "<f2")),
                             ("c", "BF16", (2, 2), bf16(4)), ("d", "I32", (2,), b"\1\0\0\0\2\0\0\0"),
                             ("e", "U8", (4,), b"\1\2\3\4"), ("s", "F32", (), ramp(1, "<f4")),
                             ("z", "F32", (0, 4), b""), ("g", "I64", (1,), b"\7" + b"\0" * 7)],
                            meta={"format": "pt", "note": "x"})
    out["empty"] = st_bytes([])
    return out


def seeds_st_index():
    _c, raw = model_folder(dtype="F16", L=2)
    half = len(raw) // 2
    s1, s2 = raw[:half], raw[half:]
    wm = {n: "model-00001-of-00002.safetensors" for n, *_ in s1}
    wm.update({n: "model-00002-of-00002.safetensors" for n, *_ in s2})
    idx = json.dumps({"metadata": {"total_size": sum(len(r) for *_, r in raw)}, "weight_map": wm})
    return {"two_shards": join(idx, st_bytes(s1), st_bytes(s2)),
            "single": join("", st_bytes(raw))}


def seeds_npy():
    out = {}
    for name, a in {"u2": np.arange(50, dtype="<u2"), "u4": np.arange(70000, 70040, dtype="<u4"),
                    "i4": np.arange(30, dtype="<i4"), "i8": np.arange(20, dtype="<i8"),
                    "empty": np.zeros(0, dtype="<u2")}.items():
        b = io.BytesIO()
        np.save(b, a)
        out[name] = b.getvalue()
    b = io.BytesIO()
    np.lib.format.write_array(b, np.arange(9, dtype="<u2"), version=(2, 0))
    out["v2"] = b.getvalue()
    return out


# ---------------------------------------------------------------------------------- tokenizers

def hf_tokenizers():
    """Small tokenizer.json files of the kinds qat reads (tokenizers' own serialization)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    text = [TEXT] * 3
    out = {}

    def bytelevel(pre, name, specials):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre
        tok.decoder = decoders.ByteLevel()
        tr = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(text, tr)
        out[name] = tok

    bytelevel(pre_tokenizers.ByteLevel(add_prefix_space=False), "gpt2", ["<|endoftext|>"])
    bytelevel(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False)]),
              "smollm2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    from tokenizers import Regex
    bytelevel(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(llama3), "isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
              "llama3", ["<|begin_of_text|>", "<|end_of_text|>"])
    out["llama3"].post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", out["llama3"].token_to_id("<|begin_of_text|>"))])
    spm = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    spm.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    spm.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] +
                             ["<0x%02X>" % b for b in range(256)], limit_alphabet=40, show_progress=False)
    spm.train_from_iterator(text, tr)
    spm.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    out["spm"] = spm
    return {k: v.to_str().encode() for k, v in out.items()}


def seeds_tokenizer_json():
    out = {}
    for name, tj in hf_tokenizers().items():
        tc = {"gpt2": "", "smollm2": json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                                "add_bos_token": False}),
              "llama3": json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}),
              "spm": json.dumps({"add_bos_token": True, "add_eos_token": False})}[name]
        cfg = json.dumps({"bos_token_id": 0, "eos_token_id": 0}) if name == "gpt2" else ""
        out[name] = join(tj, tc, cfg, TEXT)
    return out


def spm_model():
    import sentencepiece as spm
    m = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter((TEXT * 4).splitlines()), model_writer=m,
                                   vocab_size=80, model_type="bpe", byte_fallback=False,
                                   character_coverage=1.0, minloglevel=2)
    m2 = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter((TEXT * 4).splitlines()), model_writer=m2,
                                   vocab_size=400, hard_vocab_limit=False, model_type="unigram", byte_fallback=True,
                                   character_coverage=0.98, minloglevel=2)
    return {"bpe": m.getvalue(), "unigram_bytes": m2.getvalue()}


def seeds_tokenizer_spm():
    return {k: join(v, TEXT) for k, v in spm_model().items()}


def tokenizer_bin(pieces, max_len=None):
    """llama2.c tokenizer.bin: int32 max_token_length, per token float32 score, int32 len, bytes."""
    b = [struct.pack("<i", max_len or max(len(p) for p, _ in pieces))]
    for p, s in pieces:
        b.append(struct.pack("<fi", s, len(p)) + p)
    return b"".join(b)


def small_bin_pieces():
    pieces = [(b"<unk>", 0.0), (b"\n<s>\n", 0.0), (b"\n</s>\n", 0.0)]
    pieces += [(b"<0x%02X>" % i, 0.0) for i in range(256)]
    words = sorted(set(TEXT.encode().replace(b"\n", b" ").split(b" ")) - {b""})[:40]
    for i, w in enumerate([b" "] + [b" " + w[:k] for w in words for k in range(1, min(len(w), 4) + 1)]):
        pieces.append((w, -float(i)))
    seen, uniq = set(), []
    for p, s in pieces:
        if p not in seen:
            seen.add(p)
            uniq.append((p, s))
    return uniq


def seeds_tokenizer_bin():
    out = {"small": join(tokenizer_bin(small_bin_pieces()), TEXT)}
    tok512 = os.path.join(ASSETS, "stories260K", "tok512.bin")
    if os.path.exists(tok512):
        out["tok512"] = join(open(tok512, "rb").read(), TEXT)
    return out


# ------------------------------------------------------------------------------ llama2.c, yaml

def llama2c_model(dim=8, hidden=16, L=1, H=2, Hkv=1, V=16, seq=8, shared=True):
    hs = dim // H
    n = V * dim + L * dim + L * dim * dim + 2 * L * dim * Hkv * hs + L * dim * dim + L * dim + \
        3 * L * dim * hidden + dim + seq * hs
    if not shared:
        n += V * dim
    hdr = struct.pack("<7i", dim, hidden, L, H, Hkv, V if shared else -V, seq)
    return hdr + ramp(n, "<f4")


def seeds_llama2c():
    tok = tokenizer_bin([(b"<unk>", 0.0), (b"\n<s>\n", 0.0), (b"\n</s>\n", 0.0)] +
                        [(bytes([c]), -float(i)) for i, c in enumerate(b" abcdefghijklm")])
    return {"tiny_shared": join(llama2c_model(), tok), "tiny_untied_gqa": join(llama2c_model(H=4, Hkv=2, shared=False, L=2), ""),
            "no_tok": join(llama2c_model(dim=16, hidden=24, H=4, Hkv=4), "")}


def seeds_config_yaml():
    out = {}
    for d in [os.path.join(HERE, "..", "..", "configs"), os.path.join(HERE, "..", "data", "configs")]:
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if f.endswith(".yaml"):
                out[os.path.splitext(f)[0]] = join(open(os.path.join(d, f), "rb").read(),
                                                   "train.lr=0.001\ntrain.steps=40")
    out["minimal"] = join("method: qat\nmodel: m\ndata:\n  train: t.npy\n", "quant.bits=2\nquant.group=32")
    return out


# ------------------------------------------------------------------------- checkpoint, packed

def seeds_checkpoint():
    raw = [("w", "F32", (2, 3), ramp(6, "<f4")), ("optim.m.w", "F16", (2, 3), ramp(6, "<f2")),
           ("codes", "U8", (4,), b"\0\1\2\3"), ("bf", "BF16", (2,), bf16(2))]
    fields = {"step": {"int": "7"}, "optim_t": {"int": "7"}, "sampler_seed": {"int": "-9223372036854775807"},
              "lr": {"float": 0.5}, "loss": {"float": "nan"}, "method": {"str": "qat"},
              "world": {"int": "1"}}
    sj = json.dumps({"format_version": 1, "step": 7, "tensors": "state.safetensors", "fields": fields})
    return {"ckpt": join(sj, st_bytes(raw)), "bad_step": join(sj.replace('"step": 7', '"step": 8'), st_bytes(raw))}


def pack_stream(codes, b):
    """[R, n] codes -> [R, ceil(n*b/32)*4] uint8, LSB-first bit streams (packed_layout.h)."""
    R, n = codes.shape
    nb = (n * b + 31) // 32 * 4
    bits = ((codes[:, :, None] >> np.arange(b)) & 1).astype(np.uint8).reshape(R, n * b)
    bits = np.pad(bits, ((0, 0), (0, nb * 8 - n * b)))
    return np.packbits(bits, axis=1, bitorder="little")


def seeds_packed():
    rng = np.random.default_rng(1)
    out = {}
    for bits, g, sym, sdt in [(4, 8, False, "F16"), (3, 8, True, "F32"), (2, 16, False, "F32"),
                              (8, -1, True, "F16"), (4, 32, True, "F16")]:
        N, K = 32, 32
        G = 1 if g == -1 else K // g
        t = []
        meta = {"qat_packed": json.dumps({"version": 1, "bits": bits, "group": g, "sym": sym,
                                          "scale_dtype": sdt, "layout": "lsb-stream-u32"})}
        for base in ["model.layers.0.mlp.up_proj", "model.layers.0.self_attn.q_proj"]:
            codes = rng.integers(0, 2 ** bits, size=(N, K))
            c = pack_stream(codes, bits)
            t.append((base + ".qcodes", "U8", c.shape, c.tobytes()))
            s = rng.uniform(0.01, 0.1, size=(N, G)).astype(NPDT[sdt])
            t.append((base + ".qscales", sdt, s.shape, s.tobytes()))
            if not sym:
                z = pack_stream(rng.integers(0, 2 ** bits, size=(N, G)), bits)
                t.append((base + ".qzeros", "U8", z.shape, z.tobytes()))
            meta[base + ".in_features"] = str(K)
        t.append(("model.embed_tokens.weight", "F32", (4, 8), ramp(32, "<f4")))
        out[f"w{bits}g{g}{'s' if sym else 'a'}{sdt}"] = st_bytes(t, meta)
    return out


# ------------------------------------------------------------------------------------- gguf

def tiny_gguf(path, tok="gpt2", arch="llama", tied=True, kquant=False):
    import gguf
    import gguf_make as gm
    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(5)
    C, F, H, Hkv = 32, 256 if kquant else 64, 2, 1
    D = C // H
    wr = gguf.GGUFWriter(path, arch)
    wr.add_block_count(1)
    wr.add_context_length(64)
    wr.add_embedding_length(C)
    wr.add_feed_forward_length(F)
    wr.add_head_count(H)
    wr.add_head_count_kv(Hkv)
    wr.add_rope_freq_base(10000.0)
    wr.add_layer_norm_rms_eps(1e-5)
    if tok == "gpt2":
        tokens, merges = gm.bpe_vocab(n_merges=12)
        tokens = tokens + ["<|endoftext|>"]
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("smollm")
        wr.add_token_list(tokens)
        wr.add_token_types([1] * (len(tokens) - 1) + [3])
        wr.add_token_merges(merges)
        wr.add_bos_token_id(len(tokens) - 1)
        wr.add_eos_token_id(len(tokens) - 1)
        wr.add_add_bos_token(False)
    else:
        pieces = gm.spm_vocab()[:300]
        tokens = [p for p, _s, _t in pieces]
        wr.add_tokenizer_model("llama")
        wr.add_token_list(tokens)
        wr.add_token_scores([s for _p, s, _t in pieces])
        wr.add_token_types([t for _p, _s, t in pieces])
        wr.add_bos_token_id(1)
        wr.add_eos_token_id(2)
    V = len(tokens)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    gm.add_tensor(wr, rng, "token_embd.weight", w(V, C), T.Q8_0)
    gm.add_tensor(wr, rng, "blk.0.attn_norm.weight", 1 + w(C), T.F32)
    gm.add_tensor(wr, rng, "blk.0.attn_q.weight", w(H * D, C), T.Q4_0)
    gm.add_tensor(wr, rng, "blk.0.attn_k.weight", w(Hkv * D, C), T.Q4_1)
    gm.add_tensor(wr, rng, "blk.0.attn_v.weight", w(Hkv * D, C), T.F16)
    if arch == "qwen2":
        for n, r in [("q", H * D), ("k", Hkv * D), ("v", Hkv * D)]:
            gm.add_tensor(wr, rng, f"blk.0.attn_{n}.bias", w(r), T.F32)
    gm.add_tensor(wr, rng, "blk.0.attn_output.weight", w(C, H * D), T.Q5_0)
    gm.add_tensor(wr, rng, "blk.0.ffn_norm.weight", 1 + w(C), T.F32)
    gm.add_tensor(wr, rng, "blk.0.ffn_gate.weight", w(F, C), T.Q5_1)
    gm.add_tensor(wr, rng, "blk.0.ffn_up.weight", w(F, C), T.Q8_0)
    gm.add_tensor(wr, rng, "blk.0.ffn_down.weight", w(C, F), T.Q4_K if kquant else T.F32)
    gm.add_tensor(wr, rng, "output_norm.weight", 1 + w(C), T.F32)
    if not tied:
        gm.add_tensor(wr, rng, "output.weight", w(V, C), T.Q8_0)
    gm.finish(wr)


def seeds_gguf():
    import tempfile
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, kw in {"gpt2_llama": {}, "spm_llama": dict(tok="llama", tied=False),
                         "qwen2": dict(arch="qwen2"), "kquant": dict(kquant=True)}.items():
            p = os.path.join(d, name + ".gguf")
            tiny_gguf(p, **kw)
            out[name] = open(p, "rb").read()
    out["truncated"] = out["gpt2_llama"][: len(out["gpt2_llama"]) // 3]
    return out


TARGETS = {"model_config": seeds_model_config, "safetensors": seeds_safetensors,
           "st_index": seeds_st_index, "npy": seeds_npy, "tokenizer_json": seeds_tokenizer_json,
           "tokenizer_spm": seeds_tokenizer_spm, "tokenizer_bin": seeds_tokenizer_bin,
           "llama2c": seeds_llama2c, "config_yaml": seeds_config_yaml, "checkpoint": seeds_checkpoint,
           "packed": seeds_packed, "gguf": seeds_gguf, "tokenize_text": None}


def seeds_tokenize_text():
    texts = {"stories": TEXT, "crlf": TEXT.replace("\n", "\r\n"), "nul": "a\0b\n\nc\0",
             "bad_utf8": b"\xff\xfe abc \xc3\x28 \xe2\x82 \xf0\x9f\x98\n\n\xed\xa0\x80 z",
             "long_line": "word " * 400, "eot": "<|endoftext|><|endoftext|>x\n\n\n\ny"}
    for name, f in [("tinystories", "tinystories_val.txt"), ("wikitext", "wikitext2_test.raw")]:
        p = os.path.join(ASSETS, "text", f)
        if os.path.exists(p):
            texts[name] = open(p, "rb").read(3000)
    out = {}
    for name, t in texts.items():
        t = t if isinstance(t, bytes) else t.encode()
        for sel in (0, 1, 2, 4 | 8, 16 | 32 | 1, 2 | 8 | 32):
            out[f"{name}_{sel}"] = bytes([sel]) + t
    return out


def write_tokdir(d):
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "tokenizer.json"), "wb").write(hf_tokenizers()["smollm2"])
    open(os.path.join(d, "tokenizer.bin"), "wb").write(tokenizer_bin(small_bin_pieces()))
    open(os.path.join(d, "tokenizer.model"), "wb").write(spm_model()["unigram_bytes"])


def write(target, d):
    os.makedirs(d, exist_ok=True)
    seeds = seeds_tokenize_text() if target == "tokenize_text" else TARGETS[target]()
    for k, v in seeds.items():
        open(os.path.join(d, k), "wb").write(v)
    return len(seeds)


def main():
    if len(sys.argv) != 3 or (sys.argv[1] != "all" and sys.argv[1] not in TARGETS):
        sys.exit(__doc__ + "\ntargets: " + " ".join(TARGETS))
    if sys.argv[1] == "all":
        for t in TARGETS:
            n = write(t, os.path.join(sys.argv[2], t))
            print(f"seeds: {t}: {n}")
        write_tokdir(os.path.join(sys.argv[2], "tokdir"))
    else:
        print(f"seeds: {sys.argv[1]}: {write(sys.argv[1], sys.argv[2])}")


if __name__ == "__main__":
    main()
