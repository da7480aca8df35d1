#!/usr/bin/env python3
"""GGUF test files, written with llama.cpp's own Python package `gguf` (GGUFWriter,
gguf.quants.quantize / dequantize); shares no code with qat.

  gguf_make.py types DIR     types.gguf (+ types_v2.gguf, types_a64.gguf): every dequantizable
                             type at odd shapes, an unsupported type, metadata of every value type
                             and nested arrays; DIR/manifest.json lists each key's type and value
                             and each tensor's type and ne; DIR/ref/K.f32 holds tensor K
                             dequantized by gguf.quants.dequantize (raw little-endian float32).
  gguf_make.py model OUT.gguf [--arch llama|mistral|qwen2] [--tied] [--tok gpt2|llama]
                             [--pre NAME] [--rope-freqs] [--seed N]
                             a tiny random model (GQA: 4 query / 2 KV heads) with its tensors in
                             many block types and a tokenizer in tokenizer.ggml.*.
  gguf_make.py bad DIR       malformed files from one valid model; DIR/bad.json maps each file to
                             a word its error must contain.
  gguf_make.py spm GGUF OUT  tokenizer.model built from the GGUF's tokenizer.ggml.* with
                             sentencepiece's own sentencepiece_model_pb2 (the reference for
                             qat's hand-written protobuf).

k-quants (Q2_K .. Q6_K) have no quantize in the package: their blocks are random bytes with
finite F16 super-block scales, which dequantize exercises just as well.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf.quants import dequantize, quantize

QK_K = 256
# byte offsets of the F16 super-block scales inside each k-quant block (quants.py layouts), and
# a scale that keeps |weights| below ~0.1 (d x the largest sub-scale x the largest code), so the
# tiny models' perplexity stays finite
_KQ_F16 = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}
_KQ_D = {T.Q2_K: 2e-3, T.Q3_K: 8e-4, T.Q4_K: 1e-4, T.Q5_K: 5e-5, T.Q6_K: 2.5e-5}


def kquant_bytes(rng, rows, cols, qtype):
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // bs
    b = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in _KQ_F16.get(qtype, ()):
        d = (rng.uniform(0.5, 1.0, size=nb) * _KQ_D[qtype]).astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, cols // bs * ts)


def encode(rng, w, qtype):
    """float32 [rows, cols] -> (array to write, raw_dtype or None)."""
    rows, cols = w.shape[0] if w.ndim > 1 else 1, w.shape[-1]
    if qtype == T.F32:
        return w.astype(np.float32), None
    if qtype == T.F16:
        return w.astype(np.float16), None
    if qtype in _KQ_F16:
        b = kquant_bytes(rng, int(np.prod(w.shape[:-1])), cols, qtype)
        return b.reshape(*w.shape[:-1], b.shape[-1]), qtype
    if qtype in (T.Q8_1, T.IQ4_NL):  # no quantize: random blocks, finite F16 scales
        bs, ts = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(w.shape[:-1]))
        b = rng.integers(0, 256, size=(n * cols // bs, ts), dtype=np.uint8)
        b[:, 0:2] = rng.uniform(0.001, 0.02, size=(b.shape[0], 1)).astype(np.float16).view(np.uint8)
        return b.reshape(*w.shape[:-1], cols // bs * ts), qtype
    return quantize(w.astype(np.float32), qtype), qtype


def add_tensor(wr, rng, name, w, qtype):
    arr, raw = encode(rng, w, qtype)
    if raw is None:
        wr.add_tensor(name, arr)
    else:
        wr.add_tensor(name, arr, raw_dtype=raw)


def finish(wr):
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


# ---------------------------------------------------------------------------------------- types

def _special_f32():
    v = np.array([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, 1e-40, -3e-39, 65504.0, 7e-8, 3.4e38,
                  1.17549435e-38], np.float32)
    return v


def types(d):
    rng = np.random.default_rng(7)
    os.makedirs(os.path.join(d, "ref"), exist_ok=True)
    cases = [  # name, qtype, shape (numpy order: ..., ne1, ne0)
        ("f32_7", T.F32, (7,)), ("f32_3x5", T.F32, (3, 5)), ("f16_3x5", T.F16, (3, 5)),
        ("bf16_4x3", T.BF16, (4, 3)), ("q8_0_5x64", T.Q8_0, (5, 64)), ("q8_0_2x3x96", T.Q8_0, (2, 3, 96)),
        ("q4_0_5x64", T.Q4_0, (5, 64)), ("q4_0_3x96", T.Q4_0, (3, 96)), ("q4_1_5x64", T.Q4_1, (5, 64)),
        ("q4_1_1x32", T.Q4_1, (1, 32)), ("q5_0_5x64", T.Q5_0, (5, 64)), ("q5_0_3x160", T.Q5_0, (3, 160)),
        ("q5_1_5x64", T.Q5_1, (5, 64)), ("q5_1_2x2x2x32", T.Q5_1, (2, 2, 2, 32)),
        ("q2_k_3x256", T.Q2_K, (3, 256)), ("q3_k_3x256", T.Q3_K, (3, 256)),
        ("q4_k_3x256", T.Q4_K, (3, 256)), ("q5_k_3x256", T.Q5_K, (3, 256)),
        ("q6_k_3x256", T.Q6_K, (3, 256)), ("q6_k_2x512", T.Q6_K, (2, 512)),
        ("q4_k_1x768", T.Q4_K, (1, 768)), ("q8_1_2x32", T.Q8_1, (2, 32)),
        ("iq4_nl_2x32", T.IQ4_NL, (2, 32)),
    ]
    kv = [  # key, type, value
        ("test.u8", V.UINT8, 250), ("test.i8", V.INT8, -100), ("test.u16", V.UINT16, 65000),
        ("test.i16", V.INT16, -32000), ("test.u32", V.UINT32, 4000000000),
        ("test.i32", V.INT32, -2000000000), ("test.f32", V.FLOAT32, 0.1),
        ("test.bool", V.BOOL, True), ("test.bool_false", V.BOOL, False),
        ("test.string", V.STRING, "h\u00e9llo \u4e16\u754c"), ("test.u64", V.UINT64, 2**64 - 3),
        ("test.i64", V.INT64, -2**62 - 5), ("test.f64", V.FLOAT64, -1.0 / 3.0),
    ]
    arrays = [  # key, elem type, items
        ("test.arr_u8", V.UINT8, [0, 7, 255]), ("test.arr_i8", V.INT8, [-128, 0, 127]),
        ("test.arr_u16", V.UINT16, [1, 65535]), ("test.arr_i16", V.INT16, [-32768, 5]),
        ("test.arr_u32", V.UINT32, [4294967295, 1]), ("test.arr_i32", V.INT32, [-7, 9, 11]),
        ("test.arr_f32", V.FLOAT32, [0.5, -1.25, 3e-5]), ("test.arr_bool", V.BOOL, [True, False, True]),
        ("test.arr_str", V.STRING, ["a", "", "\u00fcber", "x y"]),
        ("test.arr_u64", V.UINT64, [2**63 + 1, 0]), ("test.arr_i64", V.INT64, [-2**63, 2**63 - 1]),
        ("test.arr_f64", V.FLOAT64, [math.pi, -0.0]),
    ]
    nested = [("test.nested", [[1, 2], [3, 4, 5]]), ("test.nested_str", [["x"], ["y", "zz"]])]
    for fname, version, align in (("types.gguf", 3, None), ("types_v2.gguf", 2, None),
                                  ("types_a64.gguf", 3, 64)):
        rng = np.random.default_rng(7)
        path = os.path.join(d, fname)
        wr = gguf.GGUFWriter(path, "test")
        if align:
            wr.add_custom_alignment(align)
        for k, t, v in kv:
            wr.add_key_value(k, v, t)
        for k, t, items in arrays:
            wr.add_key_value(k, items, V.ARRAY, sub_type=t)
        for k, items in nested:
            wr.add_array(k, items)
        for name, qt, shape in cases:
            w = rng.standard_normal(shape).astype(np.float32)
            if qt in (T.F32, T.F16, T.BF16):
                flat = w.reshape(-1)
                sp = _special_f32()[:flat.size]
                flat[:sp.size] = sp
                w = flat.reshape(shape)
            if qt == T.BF16:
                arr = quantize(w, T.BF16)
                wr.add_tensor(name, arr, raw_dtype=T.BF16)
            else:
                add_tensor(wr, rng, name, w, qt)
        finish(wr)
        if version == 2:  # v2 and v3 share the little-endian layout
            with open(path, "r+b") as f:
                f.seek(4)
                f.write(struct.pack("<I", 2))
    # references: read back with the package's reader, dequantize with the package
    r = gguf.GGUFReader(os.path.join(d, "types.gguf"))
    man = {"kv": [], "tensors": []}
    for k, t, v in kv:
        man["kv"].append({"key": k, "type": int(t), "value": repr(float(np.float32(v))) if t == V.FLOAT32
                          else repr(float(v)) if t == V.FLOAT64 else str(v if t != V.BOOL else int(v))})
    for k, t, items in arrays:
        if t == V.STRING:
            vals = items
        elif t == V.FLOAT32:
            vals = [repr(float(np.float32(x))) for x in items]
        elif t == V.FLOAT64:
            vals = [repr(float(x)) for x in items]
        else:
            vals = [str(int(x)) for x in items]
        man["kv"].append({"key": k, "type": int(V.ARRAY), "elem": int(t), "items": vals})
    for k, items in nested:
        man["kv"].append({"key": k, "type": int(V.ARRAY), "elem": int(V.ARRAY),
                          "counts": [len(x) for x in items]})
    for t in r.tensors:
        ent = {"name": t.name, "type": int(t.tensor_type), "ne": [int(x) for x in t.shape]}
        try:
            ref = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(-1)
            ent["ref"] = "ref/%s.f32" % t.name
            ref.astype("<f4").tofile(os.path.join(d, ent["ref"]))
        except NotImplementedError:
            ent["type_name"] = t.tensor_type.name
        man["tensors"].append(ent)
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1, ensure_ascii=False)


# ---------------------------------------------------------------------------------------- model

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


SAMPLE = ("Once upon a time there was a little girl named Lily. She loved to play outside in the "
          "sunshine. One day, she saw a big tree in the garden. The tree was 123 years old, and "
          "the girl's mother said: \"Don't climb it!\" They're happy; we'll see 2024 again.\n\n")


def bpe_vocab(n_merges=80):
    """256 byte-level symbols + merges learned greedily on SAMPLE (a tiny BPE training)."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = [[b2u[b] for b in w.encode()] for w in SAMPLE.replace("\n", " ").split(" ") if w]
    words = [[b2u[ord(" ")]] + w for w in words]
    merges = []
    for _ in range(n_merges):
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), _c = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(a + " " + b)
        tokens.append(a + b)
        nw = []
        for w in words:
            o, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    o.append(a + b)
                    i += 2
                else:
                    o.append(w[i])
                    i += 1
            nw.append(o)
        words = nw
    return tokens, merges


def spm_vocab():
    """<unk> <s> </s>, 256 byte tokens, then pieces with scores (llama-style)."""
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    pieces += [("<0x%02X>" % b, 0.0, 6) for b in range(256)]
    words = sorted(set(SAMPLE.replace("\n", " ").split(" ")) - {""})
    seen = set(p for p, _s, _t in pieces)
    normal = []
    for w in words:
        w = "\u2581" + w
        for i in range(1, len(w) + 1):
            if w[:i] not in seen:
                seen.add(w[:i])
                normal.append(w[:i])
    for c in sorted(set(SAMPLE) - {" ", "\n"}):
        if c not in seen:
            seen.add(c)
            normal.append(c)
    if "\u2581" not in seen:
        normal.append("\u2581")
    for i, p in enumerate(normal):
        pieces.append((p, -float(len(p)) - i * 1e-3, 1))
    return pieces


def model(out, arch="llama", tied=False, tok="gpt2", pre="smollm", rope_freqs=False, seed=3,
          extra=None, types_override=None):
    rng = np.random.default_rng(seed)
    C, F, L, H, Hkv = 256, 512, 2, 4, 2
    D = C // H
    wr = gguf.GGUFWriter(out, arch)
    wr.add_name("tiny-test")
    wr.add_block_count(L)
    wr.add_context_length(512)
    wr.add_embedding_length(C)
    wr.add_feed_forward_length(F)
    wr.add_head_count(H)
    wr.add_head_count_kv(Hkv)
    wr.add_rope_freq_base(50000.0)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_rope_dimension_count(D)
    if tok == "gpt2":
        tokens, merges = bpe_vocab()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        types_ = [1] * len(tokens) + [3] * len(specials) + [4]
        tokens = tokens + specials + ["<user_tok>"]
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre(pre)
        wr.add_token_list(tokens)
        wr.add_token_types(types_)
        wr.add_token_merges(merges)
        wr.add_bos_token_id(len(tokens) - 4)
        wr.add_eos_token_id(len(tokens) - 2)
        wr.add_add_bos_token(False)
        wr.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    else:
        pieces = spm_vocab()
        tokens = [p for p, _s, _t in pieces]
        wr.add_tokenizer_model("llama")
        wr.add_tokenizer_pre("default")
        wr.add_token_list(tokens)
        wr.add_token_scores([s for _p, s, _t in pieces])
        wr.add_token_types([t for _p, _s, t in pieces])
        wr.add_bos_token_id(1)
        wr.add_eos_token_id(2)
        wr.add_unk_token_id(0)
        wr.add_add_bos_token(True)
        wr.add_add_eos_token(False)
    Vn = len(tokens)
    wr.add_vocab_size(Vn)
    for k, (t, v) in (extra or {}).items():
        wr.add_key_value(k, v, t)
    ty = {"token_embd": T.Q8_0, "attn_q": T.Q4_K, "attn_k": T.Q5_K, "attn_v": T.Q6_K,
          "attn_output": T.Q4_0, "ffn_gate": T.Q4_1, "ffn_up": T.Q5_0, "ffn_down": T.Q2_K,
          "output": T.Q6_K, "norm": T.F32}
    ty1 = dict(ty, attn_q=T.Q8_0, attn_k=T.F16, attn_v=T.BF16, attn_output=T.Q5_1,
               ffn_gate=T.Q3_K, ffn_up=T.F32, ffn_down=T.Q4_K)
    if types_override:
        ty.update(types_override)
        ty1.update(types_override)

    def w(*shape, std=0.05):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def put(name, arr, qt):
        if qt == T.BF16:
            wr.add_tensor(name, quantize(arr, T.BF16), raw_dtype=T.BF16)
        else:
            add_tensor(wr, rng, name, arr, qt)

    put("token_embd.weight", w(Vn, C, std=0.5), ty["token_embd"])
    if rope_freqs:
        put("rope_freqs.weight", llama3_factors(50000.0, D, 8.0, 1.0, 4.0, 8192), T.F32)
    for l in range(L):
        t = ty if l == 0 else ty1
        p = "blk.%d." % l
        put(p + "attn_norm.weight", 1 + w(C, std=0.1), T.F32)
        put(p + "attn_q.weight", w(H * D, C), t["attn_q"])
        put(p + "attn_k.weight", w(Hkv * D, C), t["attn_k"])
        put(p + "attn_v.weight", w(Hkv * D, C), t["attn_v"])
        if arch == "qwen2":
            put(p + "attn_q.bias", w(H * D, std=0.1), T.F32)
            put(p + "attn_k.bias", w(Hkv * D, std=0.1), T.F32)
            put(p + "attn_v.bias", w(Hkv * D, std=0.1), T.F32)
        put(p + "attn_output.weight", w(C, H * D), t["attn_output"])
        put(p + "ffn_norm.weight", 1 + w(C, std=0.1), T.F32)
        put(p + "ffn_gate.weight", w(F, C), t["ffn_gate"])
        put(p + "ffn_up.weight", w(F, C), t["ffn_up"])
        put(p + "ffn_down.weight", w(C, F), t["ffn_down"])
    put("output_norm.weight", 1 + w(C, std=0.1), T.F32)
    if not tied:
        put("output.weight", w(Vn, C, std=0.2), ty["output"])
    finish(wr)


def llama3_factors(base, dim, factor, lo, hi, orig):
    """llama.cpp convert_hf_to_gguf.py's rope_freqs for rope_type llama3."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    lw, hw = orig / lo, orig / hi
    out = []
    for fr in freqs:
        wl = 2 * math.pi / fr
        if wl < hw:
            out.append(1.0)
        elif wl > lw:
            out.append(factor)
        else:
            s = (orig / wl - lo) / (hi - lo)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, np.float32)


# ------------------------------------------------------------------------------------ malformed

def _kv_offsets(r, key):
    f = r.fields[key]
    return f.offset, f.offset + 8 + len(key)  # key start, value-type field


def _ti_offsets(r, name):
    """-> dict of byte offsets of one tensor info's fields."""
    t = next(t for t in r.tensors if t.name == name)
    o = t.field.offset
    nd = len(t.shape)
    n_dims = o + 8 + len(name.encode())
    return {"name": o + 8, "n_dims": n_dims, "dims": n_dims + 4, "type": n_dims + 4 + 8 * nd,
            "offset": n_dims + 4 + 8 * nd + 4}


def bad(d):
    os.makedirs(d, exist_ok=True)
    good = os.path.join(d, "good.gguf")
    model(good, extra={"general.dupkey1": (V.UINT32, 1), "general.dupkey2": (V.UINT32, 2)})
    data = bytearray(open(good, "rb").read())
    r = gguf.GGUFReader(good)
    cases = {}

    def put(name, b, word):
        with open(os.path.join(d, name), "wb") as f:
            f.write(bytes(b))
        cases[name] = word

    def patched(off, fmt, val):
        b = bytearray(data)
        struct.pack_into(fmt, b, off, val)
        return b

    put("magic.gguf", b"GGUX" + data[4:], "magic")
    put("empty.gguf", b"", "magic")
    put("version1.gguf", patched(4, "<I", 1), "version")
    put("version4.gguf", patched(4, "<I", 4), "version")
    put("big_endian.gguf", patched(4, ">I", 3), "big-endian")
    put("trunc_header.gguf", data[:13], "tensor_count")
    put("trunc_kvcount.gguf", data[:20], "kv_count")
    kstart, kvt = _kv_offsets(r, "tokenizer.ggml.tokens")
    put("trunc_kv.gguf", data[:kstart + 20], "reading key")
    put("trunc_array.gguf", data[:kvt + 4 + 12 + 100], "tokenizer.ggml.tokens")
    ti = _ti_offsets(r, "blk.1.attn_q.weight")
    put("trunc_tinfo.gguf", data[:ti["dims"] + 3], "blk.1.attn_q.weight")
    put("trunc_data.gguf", data[:len(data) - 100], "past the end")
    put("tensor_count.gguf", patched(8, "<Q", 2**62), "tensor_count")
    put("kv_count.gguf", patched(16, "<Q", 2**63 + 7), "kv_count")
    put("array_count.gguf", patched(kvt + 4 + 4, "<Q", 2**61), "array count")
    put("key_len.gguf", patched(kstart, "<Q", 2**64 - 1), "key")
    put("value_type.gguf", patched(kvt, "<I", 99), "unknown value type")
    put("elem_type.gguf", patched(kvt + 4, "<I", 77), "element type")
    put("tensor_type.gguf", patched(ti["type"], "<I", 99), "unknown tensor type")
    put("n_dims.gguf", patched(ti["n_dims"], "<I", 5), "n_dims")
    put("dims_overflow.gguf", patched(ti["dims"] + 8, "<Q", 2**62), "blk.1.attn_q.weight")
    off = struct.unpack_from("<Q", data, ti["offset"])[0]
    put("misaligned.gguf", patched(ti["offset"], "<Q", off + 4), "alignment")
    put("offset_end.gguf", patched(ti["offset"], "<Q", 2**40), "past the end")
    b = bytearray(data)
    nm = ti["name"]
    assert bytes(b[nm:nm + 19]) == b"blk.1.attn_q.weight"
    b[nm + 11] = ord("k")  # blk.1.attn_k.weight twice
    put("dup_tensor.gguf", b, "duplicate tensor name")
    ks, _ = _kv_offsets(r, "general.dupkey2")
    b = bytearray(data)
    assert bytes(b[ks + 8:ks + 8 + 15]) == b"general.dupkey2"
    b[ks + 8 + 14] = ord("1")
    put("dup_key.gguf", b, "duplicate key")
    model(os.path.join(d, "align48.gguf"), extra={"general.alignment": (V.UINT32, 48)})
    cases["align48.gguf"] = "general.alignment"
    model(os.path.join(d, "align_type.gguf"), extra={"general.alignment": (V.UINT64, 32)})
    cases["align_type.gguf"] = "general.alignment"
    b = bytearray(data)
    _ks, bt = _kv_offsets(r, "tokenizer.ggml.add_bos_token")
    assert struct.unpack_from("<I", b, bt)[0] == int(V.BOOL)
    b[bt + 4] = 2
    put("bool.gguf", b, "tokenizer.ggml.add_bos_token")
    # semantic refusals (valid GGUF files qat does not convert)
    model(os.path.join(d, "arch.gguf"), arch="falcon")
    cases["arch.gguf"] = "falcon"
    model(os.path.join(d, "pre.gguf"), pre="deepseek-llm")
    cases["pre.gguf"] = "deepseek-llm"
    model(os.path.join(d, "iq4.gguf"), types_override={"attn_output": T.IQ4_NL})
    cases["iq4.gguf"] = "IQ4_NL"
    model(os.path.join(d, "split.gguf"), extra={"split.count": (V.UINT16, 3)})
    cases["split.gguf"] = "split.count"
    model(os.path.join(d, "rotary.gguf"), extra={"llama.attention.key_length": (V.UINT32, 32)})
    cases["rotary.gguf"] = "partial rotary"
    with open(os.path.join(d, "bad.json"), "w") as f:
        json.dump(cases, f, indent=1)


# ------------------------------------------------------------------------------------------- spm

def spm(gguf_path, out):
    """A SentencePiece ModelProto from tokenizer.ggml.* with sentencepiece's generated classes."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    r = gguf.GGUFReader(gguf_path)
    f = lambda k: r.fields[k].contents()  # noqa: E731
    m = pb.ModelProto()
    for s, sc, t in zip(f("tokenizer.ggml.tokens"), f("tokenizer.ggml.scores"),
                        f("tokenizer.ggml.token_type")):
        p = m.pieces.add()
        p.piece, p.score, p.type = s, sc, t
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(m.pieces)
    ts.byte_fallback = True
    g = lambda k, d: int(r.fields[k].contents()) if k in r.fields else d  # noqa: E731
    ts.unk_id = g("tokenizer.ggml.unknown_token_id", 0)
    ts.bos_id = g("tokenizer.ggml.bos_token_id", -1)
    ts.eos_id = g("tokenizer.ggml.eos_token_id", -1)
    ts.pad_id = g("tokenizer.ggml.padding_token_id", -1)
    b = lambda k, d: bool(r.fields[k].contents()) if k in r.fields else d  # noqa: E731
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = b("tokenizer.ggml.add_space_prefix", True)
    ns.remove_extra_whitespaces = b("tokenizer.ggml.remove_extra_whitespaces", False)
    ns.escape_whitespaces = True
    with open(out, "wb") as fo:
        fo.write(m.SerializeToString())


def main():
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    if a[0] == "types":
        types(a[1])
    elif a[0] == "bad":
        bad(a[1])
    elif a[0] == "spm":
        spm(a[1], a[2])
    elif a[0] == "model":
        kw, i = {}, 2
        while i < len(a):
            k = a[i]
            if k == "--tied":
                kw["tied"] = True
            elif k == "--rope-freqs":
                kw["rope_freqs"] = True
            elif k in ("--arch", "--tok", "--pre", "--seed"):
                kw[k[2:]] = int(a[i + 1]) if k == "--seed" else a[i + 1]
                i += 1
            else:
                raise SystemExit("gguf_make: unknown flag " + k)
            i += 1
        model(a[1], **kw)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
