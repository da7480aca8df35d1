"""Independent check of a `qat export --format gguf` file with llama.cpp's own `gguf` package
(gguf.GGUFReader + gguf.quants.dequantize) and numpy, written from REFERENCE.md section 9:

    python3 gguf_export_check.py FILE.gguf FAKEQUANT_DIR EXPORT_LOG [--exact] [--qtype Q4_0]
                                 [--f16-floats] [--tok-ref ORIGINAL.gguf]

- metadata: general.architecture llama, general.alignment 32, llama.* equal to config.json
  (block_count, embedding_length, feed_forward_length, head counts, context_length, vocab_size,
  rope.dimension_count; freq_base and rms epsilon as float32); no output.weight iff tied;
- every tensor dequantized by gguf.quants.dequantize, attn_q / attn_k rows un-permuted per head
  (W.reshape(n, R/n/2, 2, C).swapaxes(1, 2).reshape(R, C)), compared with the fake-quant folder's
  weight of the Hugging Face name: the largest |difference| must equal the "max weight change"
  the export printed for that tensor (to its 3 printed digits), so the report is neither low nor
  high; with --exact every difference must be 0 (scales on the F16 grid); 1-D tensors are F32
  and bit-equal; other float tensors bit-equal (F32) or equal to the weight rounded to float16
  (--f16-floats);
- --qtype: the type every quantized decoder Linear (in features a multiple of 32) must have;
- --tok-ref: tokenizer.ggml.{model, pre, tokens, token_type, merges, bos/eos ids, add_bos_token}
  and tokenizer.chat_template equal to those of ORIGINAL.gguf;
- --ref-gguf ORIGINAL.gguf (an F32 export of the folder `qat convert --from gguf` made of it):
  instead of the folder comparison, every tensor equals the original's, dequantized by
  gguf.quants.dequantize, bit for bit in llama.cpp's own layout (q / k permutation included),
  and every metadata key both files have is equal (the keys the export lacks are listed: the
  descriptive general.* ones and the tokenizer ids a Hugging Face folder does not carry).
Prints one line per check; exits 1 on the first failure."""
import json
import os
import re
import sys

import numpy as np
import gguf

import st_np

HF = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
      "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
      "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj"}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def hf_name(n):
    if n == "token_embd.weight":
        return "model.embed_tokens.weight"
    if n == "output_norm.weight":
        return "model.norm.weight"
    if n == "output.weight":
        return "lm_head.weight"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", n)
    return f"model.layers.{m[1]}.{HF[m[2]]}.{m[3]}"


def field(r, k):
    f = r.fields.get(k)
    return None if f is None else f.contents()


def load_folder(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(st_np.read(os.path.join(d, f))[0])
    return out


def main():
    a = sys.argv[1:]
    path, fq, log = a[:3]
    exact = "--exact" in a
    f16f = "--f16-floats" in a
    qtype = a[a.index("--qtype") + 1] if "--qtype" in a else None
    tok_ref = a[a.index("--tok-ref") + 1] if "--tok-ref" in a else None
    ref_gguf = a[a.index("--ref-gguf") + 1] if "--ref-gguf" in a else None
    cfg = json.load(open(os.path.join(fq, "config.json")))
    r = gguf.GGUFReader(path)
    if ref_gguf:
        return against_gguf(r, gguf.GGUFReader(ref_gguf), ref_gguf)

    # metadata
    heads, kvh, dim = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"]), cfg["hidden_size"]
    want = {"general.architecture": "llama", "general.alignment": 32,
            "llama.block_count": cfg["num_hidden_layers"], "llama.embedding_length": dim,
            "llama.feed_forward_length": cfg["intermediate_size"],
            "llama.attention.head_count": heads, "llama.attention.head_count_kv": kvh,
            "llama.context_length": cfg["max_position_embeddings"],
            "llama.vocab_size": cfg["vocab_size"],
            "llama.rope.dimension_count": cfg.get("head_dim", dim // heads),
            "llama.rope.freq_base": float(np.float32(cfg.get("rope_theta", 10000.0))),
            "llama.attention.layer_norm_rms_epsilon": float(np.float32(cfg["rms_norm_eps"]))}
    for k, v in want.items():
        got = field(r, k)
        if got != v:
            fail(f"{k} = {got!r}, want {v!r}")
    print(f"metadata: ok ({len(want)} keys)")

    reported = {}
    for line in open(log):
        m = re.match(r"^\s+(\S+)\s+\[.*\]\s+(\S+)\s.*max weight change (\S+)", line)
        if m:
            reported[m[1]] = (m[2], float(m[3]))
    ref = load_folder(fq)
    names = [t.name for t in r.tensors]
    tied = cfg.get("tie_word_embeddings", False)
    if ("output.weight" in names) == bool(tied):
        fail(f"output.weight {'present' if tied else 'absent'} with tie_word_embeddings {tied}")
    worst, nq = 0.0, 0
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        hf = hf_name(t.name)
        ne = [int(x) for x in t.shape]  # ne0 first
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        w = w.reshape(ne[::-1]) if len(ne) == 2 else w.reshape(-1)
        kind = t.tensor_type.name
        if ".attn_q." in t.name or ".attn_k." in t.name:
            n = heads if ".attn_q." in t.name else kvh
            R = w.shape[0]
            w2 = w.reshape(R, -1)
            w = w2.reshape(n, R // n // 2, 2, w2.shape[1]).swapaxes(1, 2).reshape(w.shape)
        e = ref[hf].astype(np.float64)
        if e.shape != w.shape:
            fail(f"{t.name}: shape {w.shape}, folder {hf} {e.shape}")
        diff = float(np.max(np.abs(w - e))) if w.size else 0.0
        if len(ne) == 1:
            if kind != "F32" or diff != 0:
                fail(f"{t.name}: {kind}, max |diff| {diff} (1-D tensors are exact F32)")
            continue
        if kind in ("F32", "F16"):
            exp16 = e.astype(np.float16).astype(np.float64) if kind == "F16" else e
            if (kind == "F16") != f16f:
                fail(f"{t.name}: {kind} {'without' if kind == 'F16' else 'with'} --f16-floats")
            if not np.array_equal(w, exp16):
                fail(f"{t.name}: {kind} differs from the folder's {hf} (max |diff| {diff})")
            continue
        nq += 1
        if qtype and kind != qtype:
            fail(f"{t.name}: {kind}, want {qtype}")
        if t.name not in reported:
            fail(f"{t.name}: no 'max weight change' line in {log}")
        rk, rv = reported[t.name]
        if rk != kind:
            fail(f"{t.name}: the log says {rk}, the file has {kind}")
        if abs(diff - rv) > 5e-3 * rv or (rv == 0 and diff != 0):
            fail(f"{t.name}: max |gguf - fake-quant| {diff:.6g}, the export reported {rv:.3g}")
        if exact and diff != 0:
            fail(f"{t.name}: max |diff| {diff:.3g}, want exact")
        worst = max(worst, diff)
    if nq == 0:
        fail("no quantized tensor in the file")
    print(f"tensors: ok ({len(names)} tensors, {nq} quantized {qtype or ''}, max |gguf - fake-quant| "
          f"{worst:.3g}{' (exact)' if exact else ''})")

    if tok_ref:
        o = gguf.GGUFReader(tok_ref)
        for k in ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"]:
            x, y = field(r, k), field(o, k)
            if x != y:
                fail(f"{k} differs from {tok_ref} ({str(x)[:60]} vs {str(y)[:60]})")
        print(f"tokenizer: ok (equal to {os.path.basename(tok_ref)}: "
              f"{len(field(r, 'tokenizer.ggml.tokens'))} tokens, "
              f"{len(field(r, 'tokenizer.ggml.merges'))} merges)")


def against_gguf(r, o, name):
    ours = {t.name: t for t in r.tensors}
    theirs = {t.name: t for t in o.tensors}
    if set(ours) != set(theirs):
        fail(f"tensor names differ from {name}: {sorted(set(ours) ^ set(theirs))[:5]}")
    for n, t in theirs.items():
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        u = ours[n]
        if u.tensor_type.name != "F32" or list(u.shape) != list(t.shape):
            fail(f"{n}: {u.tensor_type.name} {list(u.shape)}, want F32 {list(t.shape)}")
        x = np.asarray(u.data).reshape(-1)
        if n == "rope_freqs.weight":  # recomputed from the rope_scaling the importer fitted
            if np.max(np.abs(x / w.reshape(-1) - 1)) > 1e-6:
                fail(f"{n}: {x} vs {w.reshape(-1)}")
        elif not np.array_equal(x.view(np.uint32), w.reshape(-1).view(np.uint32)):
            fail(f"{n}: differs from the dequantized {name}")
    rf = " (rope_freqs.weight to 1e-6: recomputed)" if "rope_freqs.weight" in ours else ""
    print(f"tensors: ok ({len(ours)} tensors bit-identical to {os.path.basename(name)} dequantized{rf})")
    skip = {"general.name", "general.file_type", "general.quantization_version", "general.alignment"}
    # llama.cpp's own converter writes Mistral models as the llama architecture, and so does qat
    ra, oa = field(r, "general.architecture"), field(o, "general.architecture")
    if (ra, oa) not in (("llama", "llama"), ("qwen2", "qwen2"), ("llama", "mistral")):
        fail(f"general.architecture {ra} for {oa}")
    theirs = {(ra + k[len(oa):] if k.startswith(oa + ".") else k): k for k in o.fields}
    n = 0
    for k in sorted(set(r.fields) & set(theirs)):
        if k.startswith("GGUF.") or k in skip or k == "general.architecture":
            continue
        if field(r, k) != field(o, theirs[k]):
            fail(f"{k} = {str(field(r, k))[:60]}, {name} has {str(field(o, theirs[k]))[:60]}")
        n += 1
    print(f"metadata: ok ({ra} for {oa}, {n} keys equal; not in the export: "
          f"{', '.join(sorted(set(theirs) - set(r.fields))) or 'none'})")


if __name__ == "__main__":
    main()
