#!/usr/bin/env python3
"""Seed corpus for fuzz_model_config: tiny model folders as one input each (u16 LE length of
config.json, config.json, model.safetensors). Usage: seeds_model_config.py OUT_DIR"""
import json, os, struct, sys
import numpy as np

def safetensors(tensors, dtype):
    np_dt = {"F32": "<f4", "F16": "<f2"}[dtype]
    hdr, blobs, off = {}, [], 0
    for name, shape in tensors:
        b = (np.arange(int(np.prod(shape)), dtype=np.float64) % 7 / 10).astype(np_dt).tobytes()
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)

def model(C=8, F=12, L=1, H=2, Hkv=1, V=5, tied=True, arch="llama", dtype="F16", head_dim=None):
    D = head_dim or C // H
    cfg = {"model_type": arch, "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": Hkv, "vocab_size": V,
           "tie_word_embeddings": tied, "torch_dtype": "float16" if dtype == "F16" else "float32"}
    if head_dim: cfg["head_dim"] = head_dim
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
    if not tied: t.append(("lm_head.weight", (V, C)))
    c = json.dumps(cfg).encode()
    return struct.pack("<H", len(c)) + c + safetensors(t, dtype)

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
seeds = {"tied_f16": model(), "untied_f32": model(tied=False, dtype="F32", L=2),
         "qwen2": model(arch="qwen2"), "headdim": model(head_dim=6), "mistral": model(arch="mistral", H=4, Hkv=2)}
for k, v in seeds.items():
    open(os.path.join(out, k), "wb").write(v)
print(f"{len(seeds)} seeds in {out}")
