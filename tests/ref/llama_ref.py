#!/usr/bin/env python3
"""Independent float64 numpy reference for the LLaMA forward and the perplexity protocol.

Reads a Hugging Face folder (config.json + model.safetensors, parsed here with struct/json/numpy,
rotate-half RoPE) or, with --llama2c, a llama2.c checkpoint directly (interleaved-pair RoPE, as
llama2.c's run.c does), so a converter's row permutation is checked against the original file.
Shares no code with qat. Eval (REFERENCE.md section 5): non-overlapping windows of S tokens (the
remainder dropped), each from position 0, S - 1 predictions per window, nll = mean.

  llama_ref.py --model DIR | --llama2c MODEL.bin  --data TOKENS.npy --seq-len S
               [--max-windows K] [--quant rtn:BITSgGROUP]
prints {"nll": ..., "ppl": ..., "tokens": ..., "windows": ...}
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = buf[base + b:base + e]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: unsupported dtype {dt}")
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out


class Model:
    """Weights in HF layout: W[out, in]; y = x @ W.T."""

    def __init__(self):
        self.layers = []


def load_hf(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    t = read_safetensors(os.path.join(d, "model.safetensors"))
    m = Model()
    m.C = cfg["hidden_size"]
    m.H = cfg["num_attention_heads"]
    m.Hkv = cfg.get("num_key_value_heads", m.H)
    m.D = cfg.get("head_dim", m.C // m.H)
    m.eps = cfg.get("rms_norm_eps", 1e-6)
    m.theta = cfg.get("rope_theta", 10000.0)
    m.interleaved = False
    m.embed = t["model.embed_tokens.weight"]
    m.lm_head = t["lm_head.weight"] if "lm_head.weight" in t else None
    if m.lm_head is None:
        if not cfg.get("tie_word_embeddings", False):
            raise SystemExit(f"{d}: no lm_head.weight and tie_word_embeddings is false")
        m.lm_head = m.embed
    m.final_norm = t["model.norm.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        m.layers.append({
            "attn_norm": t[p + "input_layernorm.weight"],
            "q": t[p + "self_attn.q_proj.weight"], "k": t[p + "self_attn.k_proj.weight"],
            "v": t[p + "self_attn.v_proj.weight"], "o": t[p + "self_attn.o_proj.weight"],
            "ffn_norm": t[p + "post_attention_layernorm.weight"],
            "gate": t[p + "mlp.gate_proj.weight"], "up": t[p + "mlp.up_proj.weight"],
            "down": t[p + "mlp.down_proj.weight"],
        })
    return m


def load_llama2c(path):
    """llama2.c legacy format: 7 int32 header, then float32 tensors (see PROVENANCE.md)."""
    with open(path, "rb") as f:
        buf = f.read()
    C, F, L, H, Hkv, V, S = struct.unpack("<7i", buf[:28])
    tied = V > 0
    V = abs(V)
    D = C // H
    a = np.frombuffer(buf[28:], dtype="<f4").astype(np.float64)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        x = a[off:off + n].reshape(shape)
        off += n
        return x

    emb = take(V, C)
    rms_att = take(L, C)
    wq = take(L, C, C)
    wk = take(L, Hkv * D, C)
    wv = take(L, Hkv * D, C)
    wo = take(L, C, C)
    rms_ffn = take(L, C)
    w1 = take(L, F, C)
    w2 = take(L, C, F)
    w3 = take(L, F, C)
    rms_final = take(C)
    take(S, D // 2)
    take(S, D // 2)
    wcls = emb if tied else take(V, C)
    if off != a.size:
        raise SystemExit(f"{path}: {a.size - off} trailing floats")
    m = Model()
    m.C, m.H, m.Hkv, m.D, m.eps, m.theta = C, H, Hkv, D, 1e-5, 10000.0
    m.interleaved = True
    m.embed, m.lm_head, m.final_norm = emb, wcls, rms_final
    for i in range(L):
        m.layers.append({"attn_norm": rms_att[i], "q": wq[i], "k": wk[i], "v": wv[i], "o": wo[i],
                         "ffn_norm": rms_ffn[i], "gate": w1[i], "up": w3[i], "down": w2[i]})
    return m


def rtn(w, bits, group):
    """REFERENCE.md section 1, asymmetric min-max RTN, in float32 like the C code (rounding
    boundaries then agree), returned as float64."""
    w32 = w.astype(np.float32)
    R, Cn = w32.shape
    g = Cn if group == -1 else group
    qmax = np.float32(2 ** bits - 1)
    out = np.empty_like(w32)
    for c0 in range(0, Cn, g):
        blk = w32[:, c0:c0 + g]
        mn = blk.min(axis=1, keepdims=True)
        mx = blk.max(axis=1, keepdims=True)
        s = np.clip((mx - mn) / qmax, np.float32(1e-4), np.float32(1e4)).astype(np.float32)
        z = np.round(-np.clip(mn / s, np.float32(-1e4), np.float32(1e4))).astype(np.float32)
        z = np.clip(np.round(z), 0, qmax)
        q = np.clip(np.round(blk / s) + z, 0, qmax)
        out[:, c0:c0 + g] = (q - z) * s
    return out.astype(np.float64)


def quantize(m, spec):
    mt = re.fullmatch(r"(?:rtn:)?w?(\d+)g(\d+|c)", spec.lower())
    if not mt:
        raise SystemExit(f"--quant {spec}: expected rtn:BITSgGROUP (asymmetric)")
    bits, group = int(mt.group(1)), (-1 if mt.group(2) == "c" else int(mt.group(2)))
    for lay in m.layers:
        for k in ("q", "k", "v", "o", "gate", "up", "down"):
            lay[k] = rtn(lay[k], bits, group)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, theta, interleaved):
    """x [T, nh, D]; angle of pair i at position t = t * theta^(-2i/D)."""
    T, _, D = x.shape
    inv = 1.0 / theta ** (np.arange(0, D, 2, dtype=np.float64) / D)  # [D/2]
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]   # [T, D/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = a * c - b * s
        y[..., 1::2] = a * s + b * c
        return y
    a, b = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def forward(m, tokens):
    """tokens [T] -> logits [T, V] (float64)."""
    T = len(tokens)
    H, Hkv, D = m.H, m.Hkv, m.D
    x = m.embed[tokens]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for lay in m.layers:
        h = rmsnorm(x, lay["attn_norm"], m.eps)
        q = rope((h @ lay["q"].T).reshape(T, H, D), m.theta, m.interleaved)
        k = rope((h @ lay["k"].T).reshape(T, Hkv, D), m.theta, m.interleaved)
        v = (h @ lay["v"].T).reshape(T, Hkv, D)
        rep = H // Hkv  # query head j reads kv head j // rep
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        q, k, v = q.transpose(1, 0, 2), k.transpose(1, 2, 0), v.transpose(1, 0, 2)
        sc = q @ k / np.sqrt(D) + mask  # [H, T, T] scores of query t for key s
        sc -= sc.max(axis=-1, keepdims=True)
        p = np.exp(sc)
        p /= p.sum(axis=-1, keepdims=True)
        att = (p @ v).transpose(1, 0, 2).reshape(T, H * D)
        x = x + att @ lay["o"].T
        h = rmsnorm(x, lay["ffn_norm"], m.eps)
        g = h @ lay["gate"].T
        u = h @ lay["up"].T
        x = x + (g / (1.0 + np.exp(-g)) * u) @ lay["down"].T
    return rmsnorm(x, m.final_norm, m.eps) @ m.lm_head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model")
    src.add_argument("--llama2c")
    ap.add_argument("--data", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--quant")
    a = ap.parse_args()
    m = load_hf(a.model) if a.model else load_llama2c(a.llama2c)
    if a.quant:
        quantize(m, a.quant)
    toks = np.load(a.data).astype(np.int64)
    S = a.seq_len
    nw = len(toks) // S
    if a.max_windows > 0:
        nw = min(nw, a.max_windows)
    if nw < 1:
        raise SystemExit(f"{a.data}: {len(toks)} tokens make no window of {S}")
    total, count = 0.0, 0
    for w in range(nw):
        x = toks[w * S:(w + 1) * S]
        lg = forward(m, x)[:-1]  # [S-1, V] predictions of x[1:]
        mx = lg.max(axis=-1)
        lse = mx + np.log(np.exp(lg - mx[:, None]).sum(axis=-1))
        total += float(np.sum(lse - lg[np.arange(S - 1), x[1:]]))
        count += S - 1
    nll = total / count
    print(json.dumps({"nll": nll, "ppl": float(np.exp(nll)), "tokens": count, "windows": nw}))


if __name__ == "__main__":
    sys.exit(main())
