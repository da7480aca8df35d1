#!/usr/bin/env python3
"""Independent GGUF -> Hugging Face folder converter (the reference for qat convert --from gguf).

Built only on llama.cpp's own Python package `gguf` (GGUFReader, gguf.quants.dequantize), numpy
and the `tokenizers` library; shares no code with qat. REFERENCE.md section 9:
- tensors dequantized to float32 by gguf.quants.dequantize; attn_q / attn_k rows un-permuted per
  head (W.reshape(n, R/n/2, 2, C).swapaxes(1, 2)) back to the Hugging Face rotate-half layout;
- no output.weight: tied lm_head (tie_word_embeddings true, no lm_head.weight written);
- tokenizer.ggml.model "gpt2": a byte-level BPE tokenizer.json assembled here from
  tokenizer.ggml.{tokens,merges,token_type} with the pre-tokenizer tokenizer.ggml.pre names
  (as the original Hugging Face files of those families have it), validated by loading it with
  `tokenizers`; control / user-defined tokens become added tokens;
- tokenizer_config.json: bos / eos token, add_bos_token, add_eos_token, chat_template.

  gguf_ref.py convert FILE.gguf OUTDIR          # config.json, model.safetensors (F32), tokenizer
  gguf_ref.py tokenize DIR TEXT OUT.npy [--wikitext]   # ids with `tokenizers` (one stream)
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_np  # noqa: E402

# The pre-tokenizers of the original tokenizer.json files of each family (tokenizer.ggml.pre).
_GPT2_RE = None  # ByteLevel's own regex (use_regex true)
_LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?"
              "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?"
             "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def _byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def _split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
            "invert": False}


def pre_tokenizer(pre):
    if pre in ("default", "gpt2"):
        return _byte_level(True), None, False
    if pre == "smollm":
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, _byte_level(True)]}, None, False
    if pre == "llama-bpe":
        return {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_RE), _byte_level(False)]}, \
            None, True
    if pre == "qwen2":
        return {"type": "Sequence", "pretokenizers": [_split(_QWEN2_RE), _byte_level(False)]}, \
            {"type": "NFC"}, False
    raise SystemExit(f"gguf_ref: tokenizer.ggml.pre {pre!r} not supported")


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


def unpermute(w, n):
    R, C = w.shape
    return w.reshape(n, R // n // 2, 2, C).swapaxes(1, 2).reshape(R, C)


_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(name):
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    p = name.split(".")
    if p[0] == "blk" and len(p) == 4 and p[2] in _NAMES:
        return f"model.layers.{p[1]}.{_NAMES[p[2]]}.{p[3]}"
    raise SystemExit(f"gguf_ref: tensor {name}: no Hugging Face name")


def convert(path, out):
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    if arch not in ("llama", "mistral", "qwen2"):
        raise SystemExit(f"gguf_ref: architecture {arch!r} not supported")
    a = lambda k, d=None: field(r, f"{arch}.{k}", d)  # noqa: E731
    H, Hkv = int(a("attention.head_count")), int(a("attention.head_count_kv", a("attention.head_count")))
    C = int(a("embedding_length"))
    tensors = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":  # llama3 rope scaling baked in by llama.cpp, no weight
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(list(t.shape))]
        w = w.reshape(shape)
        if arch != "qwen2" and t.name.endswith("attn_q.weight"):
            w = unpermute(w, H)
        elif arch != "qwen2" and t.name.endswith("attn_k.weight"):
            w = unpermute(w, Hkv)
        tensors[hf_name(t.name)] = w
    tied = "lm_head.weight" not in tensors
    os.makedirs(out, exist_ok=True)
    st_np.write(os.path.join(out, "model.safetensors"), tensors, "F32")
    tokens = list(field(r, "tokenizer.ggml.tokens", []))
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else
                          "MistralForCausalLM" if arch == "mistral" else "LlamaForCausalLM"],
        "model_type": arch, "hidden_act": "silu",
        "hidden_size": C, "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")), "num_attention_heads": H,
        "num_key_value_heads": Hkv, "head_dim": int(a("rope.dimension_count", C // H)),
        "rms_norm_eps": float(a("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(a("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(a("context_length")),
        "vocab_size": int(a("vocab_size", len(tokens))),
        "tie_word_embeddings": tied, "torch_dtype": "float32",
    }
    bos, eos = field(r, "tokenizer.ggml.bos_token_id"), field(r, "tokenizer.ggml.eos_token_id")
    if bos is not None:
        cfg["bos_token_id"] = int(bos)
    if eos is not None:
        cfg["eos_token_id"] = int(eos)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if field(r, "tokenizer.ggml.model") == "gpt2":
        write_bpe_tokenizer(r, out, tokens, bos, eos)


def write_bpe_tokenizer(r, out, tokens, bos, eos):
    import tokenizers
    pre, norm, ignore_merges = pre_tokenizer(field(r, "tokenizer.ggml.pre", "default"))
    types = list(field(r, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = list(field(r, "tokenizer.ggml.merges", []))
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": types[i] != 3, "special": types[i] == 3}
             for i, s in enumerate(tokens) if types[i] in (3, 4)]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
          "normalizer": norm, "pre_tokenizer": pre,
          "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                             "trim_offsets": False, "use_regex": True},
          "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                      "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                    "vocab": {s: i for i, s in enumerate(tokens)},
                    "merges": [m.split(" ", 1) for m in merges]}}
    p = os.path.join(out, "tokenizer.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    tokenizers.Tokenizer.from_file(p)  # the library must accept what we wrote
    tc = {"add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token", False)),
          "add_eos_token": bool(field(r, "tokenizer.ggml.add_eos_token", False)),
          "bos_token": tokens[int(bos)] if bos is not None else None,
          "eos_token": tokens[int(eos)] if eos is not None else None,
          "tokenizer_class": "GPT2Tokenizer"}
    tmpl = field(r, "tokenizer.chat_template")
    if tmpl is not None:
        tc["chat_template"] = tmpl
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2, ensure_ascii=False)


def tokenize(d, text_path, out, wikitext):
    """One stream (REFERENCE.md section 5): WikiText-2 CRLF -> LF; BOS only when
    tokenizer_config.json says add_bos_token."""
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with open(text_path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    if wikitext:
        text = text.replace("\r\n", "\n")
    ids = tok.encode(text, add_special_tokens=False).ids
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        tc = json.load(f)
    if tc.get("add_bos_token") and tc.get("bos_token") is not None:
        ids = [tok.token_to_id(tc["bos_token"])] + ids
    np.save(out, np.asarray(ids, dtype=np.uint32 if max(ids) >= 65536 else np.uint16))
    print(json.dumps({"tokens": len(ids)}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("gguf")
    c.add_argument("out")
    t = sub.add_parser("tokenize")
    t.add_argument("dir")
    t.add_argument("text")
    t.add_argument("out")
    t.add_argument("--wikitext", action="store_true")
    args = ap.parse_args()
    if args.cmd == "convert":
        convert(args.gguf, args.out)
    else:
        tokenize(args.dir, args.text, args.out, args.wikitext)


if __name__ == "__main__":
    main()
