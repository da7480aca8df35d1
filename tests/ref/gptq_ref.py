#!/usr/bin/env python3
"""Independent numpy reference for `qat quantize --method gptq` (shares no code with qat).

GPTQ (Frantar et al. 2022) as the reference code (IST-DASLab/gptq, llama.py + gptq.py) runs it,
without act-order, with or without --true-sequential: blocks in order; for block l the calibration
windows enter as the outputs of the already-quantized blocks; one pass of the unquantized block
collects H = X^T X / rows of the four Linear inputs (attn_norm output for q/k/v, attention output
for o, ffn_norm output for gate/up, SwiGLU product for down); each Linear is GPTQ'd (Cholesky of
H^-1 with numpy.linalg, lazy blocks, a group's grid from its columns as they were when the block
began, as the reference code reads W there); with --true-sequential q/k/v, then o, then
gate/up, then down, each with H from a pass through the Linears already quantized; then the
quantized block carries the windows on.
Grid: REFERENCE.md section 1 min-max (rtn_ref.minmax_sz / forward, float32). Forward: llama_ref's
float64 ops. Calibration windows: qat's counter-based sampler (host/train/sampler.c, its
documented formula) so both sides see the same windows.

  gptq_ref.py --model DIR --calib TOKENS.npy --samples N --seq-len T --bits B --group G
              [--sym] [--damp 0.01] [--block 128] [--seed 0] [--true-sequential]
              [--skip-first K] [--first-weight W] --out OUT.npz
OUT.npz holds every quantized Linear weight by HF name, plus "rel_err_rtn", "rel_err_gptq".
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import rtn_ref  # noqa: E402

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def window_starts(seed, n, n_tokens, T):
    rng = n_tokens - T
    return [(mix64((mix64(seed) + (k + 1) * GOLDEN) & M64) * rng) >> 64 for k in range(n)]


def grid_params(cols, bits, sym):
    """s, z per row of cols [out, g] (float32 min-max)."""
    out = [rtn_ref.minmax_sz(np.float32(r.min()), np.float32(r.max()), bits, sym) for r in cols]
    return np.array([o[0] for o in out], np.float32), np.array([o[1] for o in out], np.float32)


def quant_col(w, s, z, bits, sym):
    """float32 grid value of each row's weight w[out] with that row's s, z."""
    return np.array([rtn_ref.forward(np.float32(w[i]), s[i], z[i], bits, sym)
                     for i in range(len(w))], np.float64)


def gptq(W, H, bits, group, sym, damp, blocksize):
    """W [out, in], H [in, in] float64 -> W^ (the reference code's fasterquant)."""
    W = W.copy()
    H = H.copy()
    n = W.shape[1]
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[np.diag_indices(n)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper U, H^-1 = U^T U
    g = group if group > 0 else n
    Q = np.zeros_like(W)
    s = z = None
    if group <= 0:
        s, z = grid_params(W.astype(np.float32), bits, sym)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        for i in range(i2 - i1):
            c = i1 + i
            if group > 0 and c % g == 0:
                s, z = grid_params(W[:, c:c + g].astype(np.float32), bits, sym)
            w = W1[:, i]
            d = Hinv[c, c]
            q = quant_col(w, s, z, bits, sym)
            Q[:, c] = q
            err = (w - q) / d
            W1[:, i:] -= np.outer(err, Hinv[c, c:i2])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q


def layer_inputs(m, lay, x):
    """x [T, C] -> (block output, [h1, att, h2, act])."""
    T = x.shape[0]
    H, Hkv, D = m.H, m.Hkv, m.D
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    h1 = llama_ref.rmsnorm(x, lay["attn_norm"], m.eps)
    q = llama_ref.rope((h1 @ lay["q"].T).reshape(T, H, D), m.theta, m.interleaved)
    k = llama_ref.rope((h1 @ lay["k"].T).reshape(T, Hkv, D), m.theta, m.interleaved)
    v = (h1 @ lay["v"].T).reshape(T, Hkv, D)
    rep = H // Hkv
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    q, k, v = q.transpose(1, 0, 2), k.transpose(1, 2, 0), v.transpose(1, 0, 2)
    sc = q @ k / np.sqrt(D) + mask
    sc -= sc.max(axis=-1, keepdims=True)
    p = np.exp(sc)
    p /= p.sum(axis=-1, keepdims=True)
    att = (p @ v).transpose(1, 0, 2).reshape(T, H * D)
    x = x + att @ lay["o"].T
    h2 = llama_ref.rmsnorm(x, lay["ffn_norm"], m.eps)
    gt, up = h2 @ lay["gate"].T, h2 @ lay["up"].T
    act = gt / (1.0 + np.exp(-gt)) * up
    return x + act @ lay["down"].T, [h1, att, h2, act]


NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
         "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
         "down": "mlp.down_proj"}
INPUT = {"q": 0, "k": 0, "v": 0, "o": 1, "gate": 2, "up": 2, "down": 3}


def rel_err(W, Q, H):
    D = Q - W
    return float(np.sum((D @ H) * D) / np.sum((W @ H) * W))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument("--sym", action="store_true")
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--true-sequential", action="store_true")
    ap.add_argument("--skip-first", type=int, default=0,
                    help="leading tokens of each window left out of H (qat's gptq.skip_first)")
    ap.add_argument("--first-weight", type=float, default=1.0,
                    help="weight of each window's first token in H (qat's gptq.first_weight)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    m = llama_ref.load_hf(a.model)
    toks = np.load(a.calib).astype(np.int64)
    T = a.seq_len
    xs = [m.embed[toks[s:s + T]] for s in window_starts(a.seed, a.samples, len(toks), T)]
    out, rr, rg = {}, [], []
    def hessians():
        Hs = None
        for x in xs:
            _, ins = layer_inputs(m, lay, x)
            ins = [i[a.skip_first:] for i in ins]
            w0 = a.first_weight if a.skip_first == 0 else 1.0
            hs = [i.T @ i + (w0 - 1.0) * np.outer(i[0], i[0]) for i in ins]
            Hs = hs if Hs is None else [h + x for h, x in zip(Hs, hs)]
        w0 = a.first_weight if a.skip_first == 0 else 1.0
        return [h / (len(xs) * (T - a.skip_first - 1 + w0)) for h in Hs]

    for li, lay in enumerate(m.layers):
        Hs = hessians()
        for key, name in NAMES.items():
            if a.true_sequential and key in ("o", "gate", "down"):
                Hs = hessians()  # through the Linears quantized so far
            W, H = lay[key], Hs[INPUT[key]]
            Q = gptq(W, H, a.bits, a.group, a.sym, a.damp, a.block)
            R = rtn_ref.fake_quant(W, a.bits, a.group, a.sym)
            rr.append(rel_err(W, R, H))
            rg.append(rel_err(W, Q, H))
            lay[key] = Q
            out[f"model.layers.{li}.{name}.weight"] = Q
        xs = [layer_inputs(m, lay, x)[0] for x in xs]
    out["rel_err_rtn"] = np.array(np.mean(rr))
    out["rel_err_gptq"] = np.array(np.mean(rg))
    np.savez(a.out, **out)
    print(f"gptq_ref: rel. output error RTN {np.mean(rr):.5g} -> GPTQ {np.mean(rg):.5g}")


if __name__ == "__main__":
    sys.exit(main())
